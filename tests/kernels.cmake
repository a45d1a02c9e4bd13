# Tests for kernels/ (issue 4). test_kernels_gpu exits 77 where no CUDA device is present.
zinf_add_test(test_kernels_cpu SOURCES test_kernels_cpu.c LIBS zinf_kernels m LABELS unit)
if(ZINF_HAVE_CUDA)
  zinf_add_test(test_kernels_gpu SOURCES test_kernels_gpu.c
                LIBS zinf_kernels CUDA::cudart_static m LABELS gpu)
endif()
