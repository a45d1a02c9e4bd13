# ZeRO stages across ranks inside the engine (issue 9): CPU ranks forked by test_zero, compared
# with one rank on the same global batch. One ctest entry per suite.
add_executable(test_zero test_zero.c)
target_include_directories(test_zero PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_zero PRIVATE zinf_engine m)
target_compile_options(test_zero PRIVATE -UNDEBUG)
foreach(_c dp2 dp4 bucket offload fp16 zero3 memory refuse)
  add_test(NAME zero_${_c} COMMAND test_zero ${_c})
  set_tests_properties(zero_${_c} PROPERTIES SKIP_RETURN_CODE 77 LABELS "unit;multi" TIMEOUT 300)
endforeach()
add_test(NAME zero_launch COMMAND test_zero launch $<TARGET_FILE:zinf>)
set_tests_properties(zero_launch PROPERTIES SKIP_RETURN_CODE 77 LABELS "unit;multi" TIMEOUT 300)
add_dependencies(test_zero zinf)
# 2 GPUs (NCCL), else exit 77: run on the GPU machine as build-x/tests/test_zero gpu2 build-x/bin/zinf
add_test(NAME zero_gpu2 COMMAND test_zero gpu2 $<TARGET_FILE:zinf>)
set_tests_properties(zero_gpu2 PROPERTIES SKIP_RETURN_CODE 77 LABELS gpu TIMEOUT 600)

# engine/zero3_order: the block order stage 3 on the GPU records and follows (prefetch, reuse
# distance, which kept block goes first), host logic tested without a GPU.
add_executable(test_zero3_order test_zero3_order.c)
target_include_directories(test_zero3_order PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}
                                                    ${PROJECT_SOURCE_DIR}/engine)
target_link_libraries(test_zero3_order PRIVATE zinf_engine)
target_compile_options(test_zero3_order PRIVATE -UNDEBUG)
foreach(_c record mismatch overflow reuse victim)
  add_test(NAME zero3_order_${_c} COMMAND test_zero3_order ${_c})
  set_tests_properties(zero3_order_${_c} PROPERTIES LABELS unit TIMEOUT 30)
endforeach()

# engine/zero_bucket: the bucketed stage 0-2 gradient reduction's bucket cuts and collective
# counts through its grads_done hook on a one-rank comm; order violations refused.
add_executable(test_zero_bucket test_zero_bucket.c)
target_include_directories(test_zero_bucket PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}
                                                    ${PROJECT_SOURCE_DIR}/engine)
target_link_libraries(test_zero_bucket PRIVATE zinf_engine)
target_compile_options(test_zero_bucket PRIVATE -UNDEBUG)
add_test(NAME zero_bucket_cuts COMMAND test_zero_bucket)
set_tests_properties(zero_bucket_cuts PROPERTIES LABELS unit TIMEOUT 30)
