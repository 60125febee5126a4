# vhpc-agent, vhpc-rsh and libvhpc's agent client, without a VM: the agent
# runs as an ordinary process serving a UNIX socket (as QEMU's chardev
# would) and a TCP port on 127.0.0.1; the VM tests are the CLI's.
add_library(agent_testutil STATIC test_agent_util.c)
target_link_libraries(agent_testutil PUBLIC vhpc_testutil vhpc_lib_internal)

# ctest's TIMEOUT is above the sum of the cases' own timeouts (test.h).
foreach(t_timeout exec:420 files:120 bad:240 rsh:300 init:210 client:210)
  string(REPLACE ":" ";" t_timeout ${t_timeout})
  list(GET t_timeout 0 t)
  list(GET t_timeout 1 timeout)
  vhpc_c_test(test_agent_${t} ${timeout} test_agent_${t}.c)
  target_link_libraries(test_agent_${t} PRIVATE agent_testutil)
  add_dependencies(test_agent_${t} vhpc-agent vhpc-rsh)
  set_property(TEST test_agent_${t} APPEND PROPERTY ENVIRONMENT
    "VHPC_AGENT=$<TARGET_FILE:vhpc-agent>" "VHPC_RSH=$<TARGET_FILE:vhpc-rsh>")
endforeach()
# As PID 1 it needs namespaces (root): skipped otherwise.
set_tests_properties(test_agent_init PROPERTIES SKIP_RETURN_CODE 77)
