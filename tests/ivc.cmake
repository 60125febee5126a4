# libivc tests (ring behaviour, API errors, migration control).
find_package(Threads REQUIRED)
vhpc_c_test(test_ivc_ring 270 test_ivc_ring.c)
target_link_libraries(test_ivc_ring PRIVATE Threads::Threads)
vhpc_c_test(test_ivc_migrate 180 test_ivc_migrate.c)
vhpc_c_test(test_ivc_api 330 test_ivc_api.c)
target_link_libraries(test_ivc_api PRIVATE Threads::Threads)
vhpc_c_test(test_ivc_guest 150 test_ivc_guest.c)
