# engine/ tests: the ds_config.json loader (unit), `zinf config` (CLI, config_cli.cmake) and,
# with clang, a libFuzzer run over the loader seeded with the shipped configs.
zinf_add_test(test_config SOURCES test_config.c LIBS zinf_engine LABELS unit)
target_compile_definitions(test_config PRIVATE
                           ZINF_FIXTURES="${CMAKE_CURRENT_SOURCE_DIR}/fixtures/configs")
include(${CMAKE_CURRENT_SOURCE_DIR}/config_cli.cmake)

if(CMAKE_C_COMPILER_ID MATCHES "Clang")
  # The loader's sources are compiled into the harness so they carry the coverage
  # instrumentation; new inputs go to a corpus folder in the build tree, the fixtures seed it.
  set(_eng ${PROJECT_SOURCE_DIR}/engine)
  add_executable(fuzz_config fuzz_config.c ${_eng}/config.c ${_eng}/config_keys.c
                             ${_eng}/config_resolve.c)
  target_include_directories(fuzz_config PRIVATE ${_eng}/include ${_eng})
  target_link_libraries(fuzz_config PRIVATE zinf_cjson m)
  target_compile_options(fuzz_config PRIVATE -fsanitize=fuzzer,address,undefined -UNDEBUG)
  target_link_options(fuzz_config PRIVATE -fsanitize=fuzzer,address,undefined)
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz_config_corpus)
  add_test(NAME fuzz_config
           COMMAND fuzz_config -max_total_time=20 -timeout=5
                   ${CMAKE_CURRENT_BINARY_DIR}/fuzz_config_corpus
                   ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/configs
                   ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/configs/bad)
  set_tests_properties(fuzz_config PROPERTIES LABELS unit TIMEOUT 120)
endif()
