# engine/comm and zinf launch (issue 9). Ranks are forked processes on the shm backend; the
# launch suite runs the zinf binary (found as ../bin/zinf from the test, passed here too).
# nccl needs 2 GPUs (exit 77 otherwise): run it on the GPU machine as
#   build-x/tests/test_comm nccl
zinf_add_test(test_comm SOURCES test_comm.c LIBS zinf_engine LABELS "unit;multi"
              ARGS all $<TARGET_FILE:zinf>)
set_tests_properties(test_comm PROPERTIES TIMEOUT 120)
add_dependencies(test_comm zinf)
add_test(NAME test_comm_nccl COMMAND test_comm nccl $<TARGET_FILE:zinf>)
set_tests_properties(test_comm_nccl PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300)
