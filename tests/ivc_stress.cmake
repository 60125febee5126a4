# Stress and fault tests for libivc against a real ivcd: many processes and
# jobs at once (test_ivc_many), killed peers and a region scribbled on by a
# hostile member (test_ivc_faults).
vhpc_c_test(test_ivc_many 210 test_ivc_many.c)
vhpc_c_test(test_ivc_faults 900 test_ivc_faults.c)
