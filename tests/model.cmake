# engine/model (model.c, model_weights.c, safetensors.c): presets, layout, init, config.json and
# safetensors I/O. Malformed inputs are written by the test into a temp folder.
zinf_add_test(test_model SOURCES test_model.c LIBS zinf_engine LABELS unit)
# the conversions and init helpers in engine/model_internal.h are tested directly
target_include_directories(test_model PRIVATE ${PROJECT_SOURCE_DIR}/engine)
