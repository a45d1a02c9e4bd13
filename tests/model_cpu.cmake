# CPU forward/backward of the models (engine/model_cpu.c) and the CPU ops (kernels/ops_cpu.c):
# finite-difference gradient checks, thread-count independence, errors, and the PyTorch/HF
# reference fixtures in tests/fixtures/models/.
zinf_add_test(test_model_cpu SOURCES test_model_cpu.c LIBS zinf_engine zinf_kernels m LABELS unit)
target_compile_definitions(test_model_cpu PRIVATE ZINF_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
