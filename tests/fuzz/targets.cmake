# The fuzz targets and what each links; included by tests/fuzz.cmake (the
# corpus regression tests of the normal builds) and tests/fuzz/CMakeLists.txt
# (the libFuzzer build, VHPC_FUZZ=ON).
set(VHPC_FUZZ_TARGETS agent agent_client dist dist_client store select qmp cpio ivshmem ivcd debver match fi)
set(VHPC_FUZZ_DIR ${PROJECT_SOURCE_DIR}/tests/fuzz)

# vhpc_fuzz_target(EXE TARGET): the harness tests/fuzz/fuzz_TARGET.c with
# what it needs, as executable EXE (the caller adds the driver or libFuzzer).
function(vhpc_fuzz_target exe t)
  set(src ${PROJECT_SOURCE_DIR}/src)
  add_executable(${exe} ${VHPC_FUZZ_DIR}/fuzz_${t}.c ${ARGN})
  if(t STREQUAL "agent")
    target_sources(${exe} PRIVATE ${src}/agent/conn.c ${src}/agent/request.c)
    target_include_directories(${exe} PRIVATE ${src}/agent)
    target_link_libraries(${exe} PRIVATE vhpc_base)
  elseif(t STREQUAL "ivcd")
    target_sources(${exe} PRIVATE ${src}/ivcd/server.c ${src}/ivcd/region.c ${src}/ivcd/ctl.c)
    target_include_directories(${exe} PRIVATE ${src}/ivcd)
    target_link_libraries(${exe} PRIVATE vhpc_common)
  elseif(t STREQUAL "ivshmem")
    target_link_libraries(${exe} PRIVATE ivc_internal)
  elseif(t STREQUAL "fi")
    target_link_libraries(${exe} PRIVATE ivf) # the provider's objects (src/fi)
    target_link_options(${exe} PRIVATE -Wl,--wrap=connect) # it dials nobody
  elseif(t STREQUAL "select")
    target_sources(${exe} PRIVATE ${src}/vhpc/select.c)
    target_include_directories(${exe} PRIVATE ${src}/vhpc)
    target_link_libraries(${exe} PRIVATE vhpc_lib_internal)
  else()
    target_link_libraries(${exe} PRIVATE vhpc_lib_internal)
  endif()
  if(t STREQUAL "dist" OR t STREQUAL "dist_client" OR t STREQUAL "ivshmem")
    find_package(Threads REQUIRED)
    target_link_libraries(${exe} PRIVATE Threads::Threads)
  endif()
endfunction()
