# The cluster layer without a VM: fake_qemu stands in for QEMU (installed
# under QEMU's name in a directory of its own, which test_cluster puts first
# in PATH), the real ivcd, namespace keeper, ip and nft, and the real
# vhpc-agent as the fake machine's guest.  Needs root (or a host root ran
# `vhpc setup` on): skipped otherwise.
add_executable(fake_qemu fake_qemu.c)
set_target_properties(fake_qemu PROPERTIES OUTPUT_NAME qemu-system-x86_64
  RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fake_qemu)

vhpc_c_test(test_cluster 600 test_cluster.c)
target_link_libraries(test_cluster PRIVATE vhpc_lib_internal)
add_dependencies(test_cluster fake_qemu vhpc-agent ivcd)
set_property(TEST test_cluster APPEND PROPERTY ENVIRONMENT
  "FAKE_QEMU_DIR=$<TARGET_FILE_DIR:fake_qemu>" "VHPC_AGENT=$<TARGET_FILE:vhpc-agent>")
