# Tests for kernels/attention.cu (flash-style causal attention). Exits 77 without a CUDA device.
if(ZINF_HAVE_CUDA)
  zinf_add_test(test_attention_gpu SOURCES test_attention_gpu.c
                LIBS zinf_kernels CUDA::cudart_static m LABELS gpu)
endif()
