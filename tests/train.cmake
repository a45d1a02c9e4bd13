# engine (issue 6): LR schedules, loss scaler, ZeRO partition math, checkpoint folders, and the
# training engine on a tiny CPU model. One binary, one ctest entry per case.
add_executable(test_engine test_engine.c)
target_include_directories(test_engine PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_engine PRIVATE zinf_engine m)
target_compile_options(test_engine PRIVATE -UNDEBUG)
foreach(_c sched scaler partition ckpt_io loss_falls accum fp16_overflow resume offload eio)
  add_test(NAME engine_${_c} COMMAND test_engine ${_c})
  set_tests_properties(engine_${_c} PROPERTIES SKIP_RETURN_CODE 77 LABELS unit TIMEOUT 300)
endforeach()
