# The image store between users: private builds, --public, lock files, the
# bounded lock wait, a user's own store and the system kernel cache, a
# damaged index (drives the vhpc binary; builds minimal images, boots none).
add_test(NAME test_store_perms COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/store/test_store_perms.sh ${CMAKE_BINARY_DIR})
set_tests_properties(test_store_perms PROPERTIES TIMEOUT 300)
