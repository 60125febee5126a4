# The libfabric provider "ivc": libfabric's own tools and Open MPI load
# libivc-fi.so from FI_PROVIDER_PATH.  In the ASan build the provider is
# sanitized but the programs loading it are not, so the ASan runtime is
# preloaded into them (VHPC_PRELOAD) and leak checks are off (they would
# report libfabric's and Open MPI's own allocations).
set(VHPC_PRELOAD "")
if(VHPC_SANITIZE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libasan.so
    OUTPUT_VARIABLE asan_lib OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libubsan.so
    OUTPUT_VARIABLE ubsan_lib OUTPUT_STRIP_TRAILING_WHITESPACE)
  set(VHPC_PRELOAD "${asan_lib}:${ubsan_lib}")
endif()
set(fi_test_env
  "FI_PROVIDER_PATH=$<TARGET_FILE_DIR:ivc-fi>"
  "IVCD=$<TARGET_FILE:ivcd>"
  "VHPC_PRELOAD=${VHPC_PRELOAD}"
  "ASAN_OPTIONS=detect_leaks=0:abort_on_error=0"
  "UBSAN_OPTIONS=print_stacktrace=1")

add_test(NAME test_fi_pingpong COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fi/test_fi_pingpong.sh)
set_tests_properties(test_fi_pingpong PROPERTIES TIMEOUT 600 ENVIRONMENT "${fi_test_env}")

# MPI programs of ours, built with Debian's mpicc (the MPI that mpirun
# runs); without it their tests are skipped (tests/CMakeLists.txt).
function(vhpc_mpi_program name)
  set(bin ${CMAKE_CURRENT_BINARY_DIR}/${name})
  add_custom_command(OUTPUT ${bin}
    COMMAND ${VHPC_MPICC} -std=gnu11 -O2 -Wall -Wextra -o ${bin}
            ${CMAKE_CURRENT_SOURCE_DIR}/mpi/${name}.c
    DEPENDS mpi/${name}.c
    COMMENT "Building MPI program ${name} with mpicc" VERBATIM)
  add_custom_target(${name} ALL DEPENDS ${bin})
endfunction()

if(NOT VHPC_NO_MPI_REASON)
  vhpc_mpi_program(mpi_storm)
  vhpc_mpi_program(mpi_suite)
  vhpc_mpi_program(mpi_kill)
  vhpc_mpi_program(mpi_conformance)

  # Ranks in two ivcd regions (two "hosts"), a storm of numbered messages,
  # one rank suspended and re-attached again and again.
  add_test(NAME test_fi_migrate
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fi/test_fi_migrate.sh ${CMAKE_CURRENT_BINARY_DIR}/mpi_storm)
  set_tests_properties(test_fi_migrate PROPERTIES TIMEOUT 300 ENVIRONMENT "${fi_test_env}")

  # Our MPI suite over the provider (2, 4 and 8 ranks, with IVC) and a rank
  # killed mid-job.
  add_test(NAME test_fi_mpi
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fi/test_fi_mpi.sh ${CMAKE_CURRENT_BINARY_DIR})
  set_tests_properties(test_fi_mpi PROPERTIES TIMEOUT 600 ENVIRONMENT "${fi_test_env}")

  # MPI usages that once crashed or hung over the provider (intercomms,
  # MPI_BOTTOM datatypes, MPI_COMM_SELF, dynamic processes), one mpirun each.
  add_test(NAME test_fi_mpi_conformance
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fi/test_fi_mpi_conformance.sh ${CMAKE_CURRENT_BINARY_DIR})
  set_tests_properties(test_fi_mpi_conformance PROPERTIES TIMEOUT 600 ENVIRONMENT "${fi_test_env}")
else()
  vhpc_skipped_test(test_fi_migrate "${VHPC_NO_MPI_REASON}")
  vhpc_skipped_test(test_fi_mpi "${VHPC_NO_MPI_REASON}")
  vhpc_skipped_test(test_fi_mpi_conformance "${VHPC_NO_MPI_REASON}")
endif()

# The provider through libfabric's C API, two endpoints in one process,
# and raw TCP peers built with the provider's wire format (proto.c).
vhpc_c_test(test_fi_api 240 test_fi_api.c ${PROJECT_SOURCE_DIR}/src/fi/proto.c)
target_link_libraries(test_fi_api PRIVATE PkgConfig::FABRIC)
set_property(TEST test_fi_api APPEND PROPERTY ENVIRONMENT
  "FI_PROVIDER_PATH=$<TARGET_FILE_DIR:ivc-fi>")
