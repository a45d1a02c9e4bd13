# engine/ tests: the ds_config.json loader (unit) and `zinf config` (CLI, config_cli.cmake).
zinf_add_test(test_config SOURCES test_config.c LIBS zinf_engine LABELS unit)
target_compile_definitions(test_config PRIVATE
                           ZINF_FIXTURES="${CMAKE_CURRENT_SOURCE_DIR}/fixtures/configs")
include(${CMAKE_CURRENT_SOURCE_DIR}/config_cli.cmake)
