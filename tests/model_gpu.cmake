# engine/model_gpu.c (issue 5): GPU forward/backward against the CPU oracle on the tiny presets;
# exits 77 without a CUDA device.
if(ZINF_HAVE_CUDA)
  zinf_add_test(test_model_gpu SOURCES test_model_gpu.c LIBS zinf_engine m LABELS gpu)
endif()
