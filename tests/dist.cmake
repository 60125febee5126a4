# Image distribution: vhpc image push / pull and vhpc node serve (src/libvhpc/dist/),
# and the SHA-256 and CRC-32C they hash every byte with.  The shell tests build a small
# cluster of network namespaces on a bridge (tests/dist/lib.sh); dist_tool
# makes synthetic images and talks to nodes directly.
vhpc_c_test(test_dist_sha256 150 test_dist_sha256.c)
target_link_libraries(test_dist_sha256 PRIVATE vhpc_lib_internal)
vhpc_c_test(test_dist_crc32c 90 test_dist_crc32c.c)
target_link_libraries(test_dist_crc32c PRIVATE vhpc_lib_internal)

add_executable(dist_tool dist_tool.c)
target_link_libraries(dist_tool PRIVATE vhpc_lib_internal)

foreach(t push kill cache node lowat limits auth)
  add_test(NAME test_dist_${t} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/dist/test_dist_${t}.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(test_dist_${t} PROPERTIES TIMEOUT 300
    ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0;UBSAN_OPTIONS=print_stacktrace=1")
endforeach()
