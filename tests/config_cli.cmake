# CLI tests for `zinf config`: exit codes and messages for the shipped DeepSpeed configs
# (tests/fixtures/configs), the bad ones, and usage errors.
#
# Two roles, as tests/cli.cmake: included from tests/engine.cmake it registers the tests; run
# with `cmake -P` (as each test does) it runs zinf once, checks the exit code and that the
# output matches MSG, and fails with both printed. @FIX@ is the fixtures folder, @TMP@ a fresh
# folder for the test.

if(NOT CMAKE_SCRIPT_MODE_FILE)
  set(_cfg_cli ${CMAKE_CURRENT_LIST_FILE})
  set(_cfg_fix ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
  set(_cfg_tmp ${CMAKE_CURRENT_BINARY_DIR}/config_cli_tmp)
  function(zinf_config_cli_test name)
    cmake_parse_arguments(C "" "RC;MSG" "ARGS" ${ARGN})
    string(REPLACE ";" "|" _args "${C_ARGS}")
    add_test(NAME ${name}
             COMMAND ${CMAKE_COMMAND} -DZINF=$<TARGET_FILE:zinf> -DARGS=${_args} -DRC=${C_RC}
                     -DMSG=${C_MSG} -DFIX=${_cfg_fix} -DTMP=${_cfg_tmp}/${name} -P ${_cfg_cli})
    set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 60
                         SKIP_REGULAR_EXPRESSION "ZINF-SKIP:")
  endfunction()

  set(_c @FIX@/configs)
  zinf_config_cli_test(config_cli_help RC 0 MSG "usage: zinf config check FILE"
                       ARGS config --help)
  zinf_config_cli_test(config_cli_no_args RC 2 MSG "usage: zinf config check FILE" ARGS config)
  zinf_config_cli_test(config_cli_unknown_sub RC 2 MSG "unknown subcommand 'frob'"
                       ARGS config frob)
  zinf_config_cli_test(config_cli_keys RC 0
                       MSG "zero_optimization.offload_optimizer.buffer_count +4 "
                       ARGS config keys)
  # The shipped configs, with the world size their README implies.
  zinf_config_cli_test(config_cli_standalone_zero2 RC 0
                       MSG "ok for world size 4.*\ntrain_batch_size +32 +file\n.*zero_optimization.stage +2 +file"
                       ARGS config check ${_c}/standalone-zero2-adamw.json --num_gpus 4)
  zinf_config_cli_test(config_cli_zero3_cpu_7b_plan RC 0
                       MSG "reduce_bucket_size +16777216 +auto: hidden.2 of the model.*16-bit params +host +1.63 GiB.*fp32 grads +host +3.26 GiB.*Adam m \\(fp32\\) +host +3.26 GiB +3500000000.*total +GPU +0 B +0\n +total +host +14.67 GiB +15750000000"
                       ARGS config check ${_c}/zero3-offload-cpu-7b.json --num_gpus 8 --hidden 4096
                            --params 7B)
  zinf_config_cli_test(config_cli_zero3_nvme RC 0
                       MSG "offload_optimizer.nvme_path +[^ ]*config_cli_zero3_nvme +flag.*fp32 master +NVMe"
                       ARGS config check ${_c}/zero3-offload-nvme.json --num_gpus 8 --hidden 4096
                            --nvme_path @TMP@ --params 7B)
  zinf_config_cli_test(config_cli_zero3_nvme_no_path RC 2
                       MSG "zero3-offload-nvme.json: zero_optimization.offload_optimizer.nvme_path /local_nvme: No such file or directory: pass --nvme_path DIR"
                       ARGS config check ${_c}/zero3-offload-nvme.json --num_gpus 8 --hidden 4096)
  zinf_config_cli_test(config_cli_hf_auto RC 0
                       MSG "train_batch_size +16 +auto: micro x accumulation x world size\ntrain_micro_batch_size_per_gpu +4 +auto: --per_device_train_batch_size"
                       ARGS config check ${_c}/hf-zero3-auto.json --num_gpus 2 --hidden 1024
                            --per_device_train_batch_size 4 --gradient_accumulation_steps 2
                            --max_grad_norm 1.0)
  zinf_config_cli_test(config_cli_hf_auto_unresolved RC 2
                       MSG "hf-zero3-auto.json: train_micro_batch_size_per_gpu is \"auto\" and nothing fills it: pass --per_device_train_batch_size N"
                       ARGS config check ${_c}/hf-zero3-auto.json)
  zinf_config_cli_test(config_cli_fp16 RC 0 MSG "fp16.enabled +true +file"
                       ARGS config check ${_c}/fp16-dynamic-loss-scale.json)
  # bad/: refused with the key, the rule and the fix.
  zinf_config_cli_test(config_cli_bad_batch RC 2
                       MSG "batch-mismatch.json: train_batch_size 16 != train_micro_batch_size_per_gpu 1 x gradient_accumulation_steps 8 x world size 1 \\(= 8\\): set train_batch_size to 8"
                       ARGS config check ${_c}/bad/batch-mismatch.json)
  zinf_config_cli_test(config_cli_bad_fp16_bf16 RC 2
                       MSG "fp16-and-bf16.json: fp16.enabled and bf16.enabled are both true"
                       ARGS config check ${_c}/bad/fp16-and-bf16.json)
  zinf_config_cli_test(config_cli_bad_unknown_key RC 2
                       MSG "^/[^\n]*/bad/unknown-key.json: zero_optimization.offload_optimizer.bufer_count: unknown key; did you mean buffer_count\\?"
                       ARGS config check ${_c}/bad/unknown-key.json)
  zinf_config_cli_test(config_cli_malformed RC 2
                       MSG "malformed.json:3:[0-9]+: malformed JSON near"
                       ARGS config check @FIX@/config_cli/malformed.json)
  zinf_config_cli_test(config_cli_flag_contradicts_file RC 2
                       MSG "optimizer.params.lr is 3e-05 in the file but --learning_rate 0.0001 was given"
                       ARGS config check ${_c}/standalone-zero2-adamw.json --num_gpus 4
                            --learning_rate 1e-4)
  zinf_config_cli_test(config_cli_missing_file RC 1
                       MSG "/nonexistent/zinf.json: No such file or directory"
                       ARGS config check /nonexistent/zinf.json)
  zinf_config_cli_test(config_cli_unknown_option RC 2 MSG "unknown option '--frob'"
                       ARGS config check ${_c}/fp16-dynamic-loss-scale.json --frob)
  zinf_config_cli_test(config_cli_bad_num_gpus RC 2
                       MSG "--num_gpus '0' is not a whole number in \\[1, 1048576\\]"
                       ARGS config check ${_c}/fp16-dynamic-loss-scale.json --num_gpus 0)
  zinf_config_cli_test(config_cli_override_needs_value RC 2
                       MSG "--learning_rate needs a value"
                       ARGS config check ${_c}/fp16-dynamic-loss-scale.json --learning_rate)
  return()
endif()

# ---- script mode: one test ----
cmake_minimum_required(VERSION 3.24)
string(REPLACE "|" ";" ARGS "${ARGS}")
string(REPLACE "@TMP@" "${TMP}" ARGS "${ARGS}")
string(REPLACE "@FIX@" "${FIX}" ARGS "${ARGS}")
file(REMOVE_RECURSE "${TMP}")
file(MAKE_DIRECTORY "${TMP}")
if(MSG MATCHES "/local_nvme: No such file" AND EXISTS /local_nvme)
  message(STATUS "ZINF-SKIP: /local_nvme exists here, so the config resolves without --nvme_path")
  return()
endif()
execute_process(COMMAND ${ZINF} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
file(REMOVE_RECURSE "${TMP}")
if(NOT rc STREQUAL "${RC}")
  message(FATAL_ERROR "zinf ${ARGS}: exit ${rc}, expected ${RC}\nstdout: ${out}\nstderr: ${err}")
endif()
if(NOT "${out}${err}" MATCHES "${MSG}")
  message(FATAL_ERROR "zinf ${ARGS}: output does not match '${MSG}'\nstdout: ${out}\nstderr: ${err}")
endif()
message(STATUS "ok: exit ${rc}, message matches")
