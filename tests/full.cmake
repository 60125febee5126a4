# Full images: debootstrap, squashfs, systemd + vhpc-agent as a service,
# copy-on-write views, --build-missing (real TCG VMs; packages cached in
# /var/cache/vhpc-test/debs between runs).
add_test(NAME test_full_image COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/vm/test_full_image.sh ${CMAKE_BINARY_DIR})
set_tests_properties(test_full_image PROPERTIES TIMEOUT 900)
set_tests_properties(test_full_image PROPERTIES ENVIRONMENT "VHPC_PRELOAD=${VHPC_PRELOAD}")
