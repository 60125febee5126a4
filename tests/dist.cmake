# Image distribution: vhpc image push / pull and vhpc node serve (dist.c),
# and the SHA-256 they hash every byte with.
vhpc_c_test(test_dist_sha256 60 test_dist_sha256.c)
target_link_libraries(test_dist_sha256 PRIVATE vhpc_lib)
