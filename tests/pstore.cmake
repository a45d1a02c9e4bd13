# engine/pstore (issue 9): the ZeRO-3 parameter store of offload_param, device cpu and nvme, on
# the CPU (runs in CI). pstore.h is private to the engine, hence the engine/ include folder.
add_executable(test_pstore test_pstore.c)
target_include_directories(test_pstore PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}
                                               ${PROJECT_SOURCE_DIR}/engine)
target_link_libraries(test_pstore PRIVATE zinf_engine)
target_compile_options(test_pstore PRIVATE -UNDEBUG)
foreach(_c cpu nvme refuse eio_write eio_read regress prefetch)
  add_test(NAME pstore_${_c} COMMAND test_pstore ${_c})
  set_tests_properties(pstore_${_c} PROPERTIES SKIP_RETURN_CODE 77 LABELS "unit;nvme" TIMEOUT 120)
endforeach()
