# Runs a libFuzzer binary for SECONDS over a writable copy of the seed corpus.
file(MAKE_DIRECTORY ${WORK})
file(GLOB seeds ${SEEDS}/*)
file(COPY ${seeds} DESTINATION ${WORK})
execute_process(
  COMMAND ${FUZZER} ${WORK} -max_total_time=${SECONDS} -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fuzzer found a crash (exit ${rc}); the reproducer is in the working directory (crash-*)")
endif()
