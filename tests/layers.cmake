# test_layers: the build refuses an include that crosses the layers.  Each
# probe is a one-line C file that includes one header, compiled with the
# include path of one consumer (a program such as the CLI, or a layer of
# libvhpc); EXCLUDE_FROM_ALL, so only the test builds them.  Probes marked
# "fails" must not compile (the header is not on that path); the "builds"
# ones are the controls that show a probe can compile at all.
#   consumer: program  the CLI's view (vhpc_lib: the public headers)
#             util     util's own sources
#             store    store's, cluster's: their own folder and util's
#             cluster
set(VHPC_LAYER_PROBES
  "program fs.h fails"            # util's internals
  "program store_int.h fails"     # store's
  "program engine.h fails"        # dist's
  "program full.h fails"          # image's
  "program job.h fails"           # cluster's (the public one is vhpc/job.h)
  "program vm.h fails"
  "program vhpc/job.h builds"
  "program vhpc/image.h builds"
  "util store_int.h fails"        # util stands below every layer
  "util fs.h builds"
  "store image.h fails"           # store stands below image
  "store fs.h builds"
  "cluster kernel.h fails"        # cluster never includes image/
  "cluster store_int.h fails"
  "cluster fs.h builds")
set(layer_probe_targets "")
foreach(probe ${VHPC_LAYER_PROBES})
  string(REPLACE " " ";" p "${probe}")
  list(GET p 0 who)
  list(GET p 1 header)
  list(GET p 2 want)
  string(MAKE_C_IDENTIFIER "probe_${who}_${header}" t)
  file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/layers/${t}.c
    "/* ${who} includes ${header}: it ${want} */\n#include \"${header}\"\nint ${t};\n")
  add_library(${t} OBJECT EXCLUDE_FROM_ALL ${CMAKE_CURRENT_BINARY_DIR}/layers/${t}.c)
  if(who STREQUAL "program")
    target_link_libraries(${t} PRIVATE vhpc_lib)
  elseif(who STREQUAL "util")
    target_link_libraries(${t} PRIVATE vhpc_util vhpc_util_internal)
  elseif(who STREQUAL "store")
    target_link_libraries(${t} PRIVATE vhpc_util vhpc_util_internal vhpc_store_internal)
  elseif(who STREQUAL "cluster")
    target_link_libraries(${t} PRIVATE vhpc_util vhpc_common vhpc_util_internal
      vhpc_cluster_internal)
  endif()
  list(APPEND layer_probe_targets "${t}:${want}")
endforeach()
add_test(NAME test_layers COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/layers/test_layers.sh
  ${CMAKE_BINARY_DIR} ${layer_probe_targets})
# It runs the build tool in the build tree: alone.
set_tests_properties(test_layers PROPERTIES TIMEOUT 300 RUN_SERIAL TRUE)
