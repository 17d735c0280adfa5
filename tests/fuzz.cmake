# libFuzzer target for the safetensors header parser. The parser has no LibTorch dependency, so
# clang builds it directly (whatever compiler builds the rest), with ASan and UBSan.
find_program(STREAMGEN_CLANGXX NAMES clang++ clang++-14 clang++-15 clang++-16)
if(NOT STREAMGEN_BUILD_FUZZ)
  return()
endif()
if(NOT STREAMGEN_CLANGXX)
  message(STATUS "streamgen: clang++ not found; the safetensors header fuzz test is not built")
  return()
endif()

get_target_property(_json_inc nlohmann_json::nlohmann_json INTERFACE_INCLUDE_DIRECTORIES)
set(_fuzz_bin ${CMAKE_BINARY_DIR}/bin/fuzz_safetensors_header)
set(_fuzz_srcs
  ${PROJECT_SOURCE_DIR}/tests/fuzz/safetensors_header_fuzz.cpp
  ${PROJECT_SOURCE_DIR}/src/core/safetensors_header.cpp
  ${PROJECT_SOURCE_DIR}/src/core/error.cpp)
set(_fuzz_inc -I${PROJECT_SOURCE_DIR}/include)
foreach(dir IN LISTS _json_inc)
  list(APPEND _fuzz_inc -I${dir})
endforeach()
add_custom_command(
  OUTPUT ${_fuzz_bin}
  COMMAND ${STREAMGEN_CLANGXX} -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
          ${_fuzz_inc} ${_fuzz_srcs} -o ${_fuzz_bin}
  DEPENDS ${_fuzz_srcs} ${PROJECT_SOURCE_DIR}/include/streamgen/safetensors_format.h ${PROJECT_SOURCE_DIR}/include/streamgen/error.h
  COMMENT "Building the safetensors header fuzzer with clang (libFuzzer, ASan, UBSan)"
  VERBATIM)
add_custom_target(fuzz_safetensors_header ALL DEPENDS ${_fuzz_bin})

# The seed corpus is copied so that libFuzzer can add what it finds without touching the sources.
add_test(NAME fuzz.safetensors_header
  COMMAND ${CMAKE_COMMAND}
    -DFUZZER=${_fuzz_bin}
    -DSEEDS=${PROJECT_SOURCE_DIR}/tests/fuzz/corpus
    -DWORK=${CMAKE_BINARY_DIR}/fuzz-corpus
    -DSECONDS=${STREAMGEN_FUZZ_SECONDS}
    -P ${PROJECT_SOURCE_DIR}/tests/fuzz/run_fuzzer.cmake)
set_tests_properties(fuzz.safetensors_header PROPERTIES TIMEOUT 600)
message(STATUS "streamgen: fuzz test runs ${STREAMGEN_FUZZ_SECONDS} s (STREAMGEN_FUZZ_SECONDS)")
