# Every fuzzer's committed corpus and crash reproducers, run once through
# its harness by a plain driver (tests/fuzz/driver.c): a crash a fuzzer
# found stays a regression test in the normal and ASan builds.  The
# fuzzers themselves are built with clang in build-fuzz (VHPC_FUZZ=ON).
include(${CMAKE_CURRENT_SOURCE_DIR}/fuzz/targets.cmake)
foreach(t ${VHPC_FUZZ_TARGETS})
  vhpc_fuzz_target(fuzz_regress_${t} ${t} ${VHPC_FUZZ_DIR}/driver.c)
  add_test(NAME fuzz_corpus_${t}
    COMMAND ${VHPC_FUZZ_DIR}/regress.sh $<TARGET_FILE:fuzz_regress_${t}>
            ${VHPC_FUZZ_DIR}/corpus/${t} ${VHPC_FUZZ_DIR}/crashes/${t})
  set_tests_properties(fuzz_corpus_${t} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
    ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endforeach()
