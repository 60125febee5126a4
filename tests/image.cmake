# libvhpc: the cpio writer, the guest kernel cache, minimal images and the
# accelerator choice.
# The kernel download is shared between runs: the image test uses
# VHPC_TEST_KERNEL_CACHE (default /var/cache/vhpc-test/kernels, downloaded
# once per machine, re-checked by sha256 every run); the kernel test keeps
# its own cache in its scratch directory because it damages it on purpose.
set(VHPC_TEST_KERNEL_CACHE "/var/cache/vhpc-test/kernels" CACHE PATH
  "Guest kernel cache shared by the image tests")

vhpc_c_test(test_image_cpio 120 test_image_cpio.c)
vhpc_c_test(test_image_kernel 660 test_image_kernel.c)
vhpc_c_test(test_image_build 900 test_image_build.c)
vhpc_c_test(test_image_store 180 test_image_store.c)
foreach(t test_image_cpio test_image_kernel test_image_build test_image_store)
  target_link_libraries(${t} PRIVATE vhpc_lib_internal)
endforeach()
set_property(TEST test_image_build APPEND PROPERTY ENVIRONMENT
  "VHPC_KERNEL_CACHE=${VHPC_TEST_KERNEL_CACHE}"
  "VHPC_AGENT=$<$<TARGET_EXISTS:vhpc-agent>:$<TARGET_FILE:vhpc-agent>>")

# A program whose library the dynamic loader cannot find (no RPATH, not in a
# system directory): how the closure handles a missing library.
add_library(test_image_fixture_lib SHARED test_image_fixture_lib.c)
add_executable(test_image_fixture_prog test_image_fixture_prog.c)
target_link_libraries(test_image_fixture_prog PRIVATE test_image_fixture_lib)
set_target_properties(test_image_fixture_prog PROPERTIES SKIP_BUILD_RPATH ON)
add_dependencies(test_image_build test_image_fixture_prog)
set_property(TEST test_image_build APPEND PROPERTY ENVIRONMENT
  "FIXTURE_PROG=$<TARGET_FILE:test_image_fixture_prog>"
  "FIXTURE_LIBDIR=$<TARGET_FILE_DIR:test_image_fixture_lib>")

# Choosing KVM or TCG (runs the KVM probe guest where /dev/kvm works).
vhpc_c_test(test_vm_accel 90 test_vm_accel.c)
target_link_libraries(test_vm_accel PRIVATE vhpc_lib_internal)

# Debian version comparison (image requirements).
vhpc_c_test(test_debver 90 test_debver.c)
target_link_libraries(test_debver PRIVATE vhpc_lib_internal)

# The image manager from the command line (builds minimal images, boots one
# small VM for `vhpc run --require`).
add_test(NAME test_image_cli COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/vm/test_image_cli.sh ${CMAKE_BINARY_DIR})
set_tests_properties(test_image_cli PROPERTIES TIMEOUT 600)

# The store against damage and other users: a damaged index or manifest is
# refused and gc removes nothing, private modes, a bounded lock wait.
vhpc_c_test(test_store_trust 180 test_store_trust.c)
target_link_libraries(test_store_trust PRIVATE vhpc_lib_internal)
