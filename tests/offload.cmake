# Tests for offload/ (issue 3). test_offload needs no GPU; test_offload_gpu exits 77 without one.
foreach(_c ranges roundtrip stripe stripe_small files path_errors budgets host_pool signal fault
           prefetch_fake prefetch_swapper plan)
  list(APPEND _offload_cases ${_c})
endforeach()
add_executable(test_offload test_offload.c)
target_include_directories(test_offload PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_offload PRIVATE zinf_offload)
target_compile_options(test_offload PRIVATE -UNDEBUG)
foreach(_c ${_offload_cases})
  add_test(NAME offload_${_c} COMMAND test_offload ${_c})
  set_tests_properties(offload_${_c} PROPERTIES SKIP_RETURN_CODE 77 LABELS "unit;nvme" TIMEOUT 300)
endforeach()
if(ZINF_HAVE_CUDA AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_offload_gpu.c)
  zinf_add_test(test_offload_gpu SOURCES test_offload_gpu.c LIBS zinf_offload CUDA::cudart_static
                LABELS gpu)
endif()
