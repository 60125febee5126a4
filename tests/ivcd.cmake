# ivcd's tests: the protocol byte for byte, bad input of every kind, endpoint
# reclaim and the suspend/resume handshake played against a raw region, and
# a real QEMU ivshmem-doorbell device attached to ivcd.
add_library(ivcd_testutil STATIC test_ivcd_util.c)
target_link_libraries(ivcd_testutil PUBLIC vhpc_testutil vhpc_common)

vhpc_c_test(test_ivcd_protocol 180 test_ivcd_protocol.c)
vhpc_c_test(test_ivcd_bad 240 test_ivcd_bad.c)
vhpc_c_test(test_ivcd_reclaim 210 test_ivcd_reclaim.c)
foreach(t test_ivcd_protocol test_ivcd_bad test_ivcd_reclaim)
  target_link_libraries(${t} PRIVATE ivcd_testutil)
endforeach()

# QEMU interop: QMP is JSON, parsed with jansson.  Skipped (77) when
# qemu-system-x86_64 is not installed.
find_package(PkgConfig REQUIRED)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
vhpc_c_test(test_qemu_ivshmem 150 test_ivcd_qemu.c)
target_link_libraries(test_qemu_ivshmem PRIVATE ivcd_testutil PkgConfig::JANSSON)
set_tests_properties(test_qemu_ivshmem PROPERTIES SKIP_RETURN_CODE 77)
