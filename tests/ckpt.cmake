# Checkpoints across ranks and zinf ckpt (issue 9): CPU ranks forked by test_ckpt save, resume
# bit-exactly, consolidate and refuse bad checkpoints. One ctest entry per suite.
add_executable(test_ckpt test_ckpt.c)
target_include_directories(test_ckpt PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_ckpt PRIVATE zinf_engine m)
target_compile_options(test_ckpt PRIVATE -UNDEBUG)
foreach(_c resume2 resume4 resume3 consolidate consolidate3 refuse nvme rss)
  add_test(NAME ckpt_${_c} COMMAND test_ckpt ${_c})
  set_tests_properties(ckpt_${_c} PROPERTIES SKIP_RETURN_CODE 77 LABELS "unit;multi" TIMEOUT 300)
endforeach()
