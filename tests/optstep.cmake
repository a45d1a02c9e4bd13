# engine/optstep (issue 7): the offloaded optimizer step. test_optstep steps on the CPU (runs in
# CI, device cpu and nvme); test_optstep_gpu compares GPU- and CPU-stepped state (exit 77
# without a device). sink_*: the param16_sink of ZeRO-3 parameter offload (step_on cpu).
add_executable(test_optstep test_optstep.c)
target_include_directories(test_optstep PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_optstep PRIVATE zinf_engine)
target_compile_options(test_optstep PRIVATE -UNDEBUG)
foreach(_c cpu nvme fast_init eio_read eio_write bad_opts gpu_refused sink_cpu sink_nvme sink_eio
           sink_refused)
  add_test(NAME optstep_${_c} COMMAND test_optstep ${_c})
  set_tests_properties(optstep_${_c} PROPERTIES SKIP_RETURN_CODE 77 LABELS "unit;nvme"
                       TIMEOUT 300)
endforeach()
if(ZINF_HAVE_CUDA)
  zinf_add_test(test_optstep_gpu SOURCES test_optstep_gpu.c LIBS zinf_engine LABELS gpu)
endif()
