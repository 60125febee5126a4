# Trust boundaries (issue 9): who may reach a job's VMs, agents and store.
add_test(NAME test_vm_trust COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/vm/test_vm_trust.sh ${CMAKE_BINARY_DIR})
set_tests_properties(test_vm_trust PROPERTIES TIMEOUT 600)
add_test(NAME test_vm_user COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/vm/test_vm_user.sh ${CMAKE_BINARY_DIR})
set_tests_properties(test_vm_user PROPERTIES TIMEOUT 600)
