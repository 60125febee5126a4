# The command line's input checks: strict numbers, cluster names, job files.
vhpc_c_test(test_cli_parse 60 test_cli_parse.c)
target_link_libraries(test_cli_parse PRIVATE vhpc_lib_internal)

# Driving the vhpc binary with bad input (no VM is booted).
add_test(NAME test_cli_input COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/test_cli_input.sh ${CMAKE_BINARY_DIR})
set_tests_properties(test_cli_input PROPERTIES TIMEOUT 60)

# vm cp from a guest keeps the host file on failure (one TCG VM, in its own
# network namespace).
add_test(NAME test_vm_cp_keep COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/vm/test_vm_cp_keep.sh ${CMAKE_BINARY_DIR})
set_tests_properties(test_vm_cp_keep PROPERTIES TIMEOUT 300)
