# libFuzzer targets for the parsers that take untrusted bytes. They are torch-free, so clang builds
# each one directly from its sources (whatever compiler builds the rest), with ASan and UBSan.
# ctest runs each for STREAMGEN_FUZZ_SECONDS over a copy of its seed corpus (tests/fuzz/corpus/<name>);
# tests/fuzz/README.md says how to run one for a million inputs and keep what it finds.
find_program(STREAMGEN_CLANGXX NAMES clang++ clang++-14 clang++-15 clang++-16)
if(NOT STREAMGEN_BUILD_FUZZ)
  return()
endif()
if(NOT STREAMGEN_CLANGXX)
  message(STATUS "streamgen: clang++ not found; the fuzz tests are not built")
  return()
endif()

get_target_property(_json_inc nlohmann_json::nlohmann_json INTERFACE_INCLUDE_DIRECTORIES)
set(_fuzz_inc -I${PROJECT_SOURCE_DIR}/include -I${PROJECT_SOURCE_DIR}/src)
foreach(dir IN LISTS _json_inc)
  list(APPEND _fuzz_inc -I${dir})
endforeach()
file(GLOB _fuzz_headers ${PROJECT_SOURCE_DIR}/include/streamgen/*.h ${PROJECT_SOURCE_DIR}/src/text/*.h)

# streamgen_fuzzer(NAME SOURCES <streamgen sources> [FLAGS <compiler flags>] [LIBS <link flags>])
# builds bin/fuzz_NAME from tests/fuzz/NAME_fuzz.cpp and adds the ctest fuzz.NAME.
function(streamgen_fuzzer name)
  cmake_parse_arguments(F "" "" "SOURCES;FLAGS;LIBS" ${ARGN})
  set(bin ${CMAKE_BINARY_DIR}/bin/fuzz_${name})
  set(srcs ${PROJECT_SOURCE_DIR}/tests/fuzz/${name}_fuzz.cpp)
  foreach(src IN LISTS F_SOURCES)
    list(APPEND srcs ${PROJECT_SOURCE_DIR}/${src})
  endforeach()
  add_custom_command(
    OUTPUT ${bin}
    COMMAND ${STREAMGEN_CLANGXX} -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
            ${_fuzz_inc} ${F_FLAGS} ${srcs} ${F_LIBS} -o ${bin}
    DEPENDS ${srcs} ${_fuzz_headers}
    COMMENT "Building the ${name} fuzzer with clang (libFuzzer, ASan, UBSan)"
    VERBATIM)
  add_custom_target(fuzz_${name} ALL DEPENDS ${bin})
  # The seed corpus is copied so that libFuzzer can add what it finds without touching the sources.
  add_test(NAME fuzz.${name}
    COMMAND ${CMAKE_COMMAND}
      -DFUZZER=${bin}
      -DSEEDS=${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${name}
      -DWORK=${CMAKE_BINARY_DIR}/fuzz-corpus/${name}
      -DSECONDS=${STREAMGEN_FUZZ_SECONDS}
      -P ${PROJECT_SOURCE_DIR}/tests/fuzz/run_fuzzer.cmake)
  set_tests_properties(fuzz.${name} PROPERTIES TIMEOUT 600)
endfunction()

streamgen_fuzzer(safetensors_header SOURCES src/core/safetensors_header.cpp src/core/error.cpp)
streamgen_fuzzer(session_config SOURCES src/server/session_config.cpp src/core/error.cpp LIBS -lfmt)
# stb 2.27 calls memcpy(NULL, p, 0) for a zero-length PNG chunk: undefined in the letter of C, a no-op
# in every libc; that one check is off so that the fuzzer looks for real memory errors past it.
streamgen_fuzzer(image_header SOURCES src/media/image_header.cpp src/core/error.cpp FLAGS -fno-sanitize=nonnull-attribute LIBS -lturbojpeg -lpng16)
streamgen_fuzzer(clip_tokenizer
  SOURCES src/text/clip_tokenizer.cpp src/text/unicode_text.cpp src/core/json_file.cpp src/core/error.cpp
  FLAGS -DSTREAMGEN_FUZZ_TOKENIZER_DIR="${PROJECT_SOURCE_DIR}/tests/data/tiny-sd15/tokenizer"
  LIBS -licuuc)
streamgen_fuzzer(config_readers
  SOURCES src/models/unet_2d_condition_config.cpp src/models/controlnet_config.cpp src/models/autoencoder_kl_config.cpp src/models/autoencoder_tiny_config.cpp
          src/text/clip_text_config.cpp src/schedulers/lcm_scheduler_config.cpp src/core/json_file.cpp src/core/error.cpp)
message(STATUS "streamgen: each fuzz test runs ${STREAMGEN_FUZZ_SECONDS} s (STREAMGEN_FUZZ_SECONDS)")
