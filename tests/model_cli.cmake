# CLI tests for `zinf eval` and `zinf bench model`: exit codes and messages, on the fixtures in
# tests/fixtures/models/ (made by tests/ref/make_model_fixtures.py; bad/ holds the broken
# inputs). Each test runs zinf once through tests/config_cli.cmake's runner (exit code and a
# regex over stdout+stderr; @FIX@ = tests/fixtures, @TMP@ = a fresh folder, in ARGS only).
# No square brackets in a MSG: CMake's list splitting would swallow the arguments after it.
if(NOT COMMAND zinf_config_cli_test)
  include(${CMAKE_CURRENT_SOURCE_DIR}/config_cli.cmake)
endif()

set(_m @FIX@/models)
set(_small ${_m}/gpt2-small)
# PyTorch's numbers, from the fixture files (reference.safetensors "loss" and
# eval_reference.json "mean_loss"): the CPU path must print them.
zinf_config_cli_test(model_cli_eval_data_loss RC 0
                     MSG "mean loss 4\\.6578[0-9]* over 2 batches of B 2 x T 16 \\(64 tokens\\) from 1 shard"
                     ARGS eval --model ${_small} --data ${_small}/eval_shard.bin --batch 2 --seq 16
                          --device cpu --threads 2)
zinf_config_cli_test(model_cli_eval_tokens_dump RC 0
                     MSG "loss 4\\.9430[0-9]* .*wrote [^ ]*/d/outputs.safetensors"
                     ARGS eval --model ${_small} --tokens ${_small}/batch.bin --dump @TMP@/d
                          --device cpu)
zinf_config_cli_test(model_cli_eval_llama_tokens RC 0 MSG "loss 4\\.8061[0-9]* "
                     ARGS eval --model ${_m}/llama-gqa-untied
                          --tokens ${_m}/llama-gqa-untied/batch.bin --device cpu)
# Unusable models: exit 2, the file or name and the fix.
zinf_config_cli_test(model_cli_eval_unknown_preset RC 2
                     MSG "model 'gpt2-nope': not a preset.*presets: gpt2-124m"
                     ARGS eval --model gpt2-nope --data x.bin)
zinf_config_cli_test(model_cli_eval_no_folder RC 2
                     MSG "model '[^']*/none': not a folder with config.json"
                     ARGS eval --model @TMP@/none --data x.bin)
zinf_config_cli_test(model_cli_eval_bad_model_type RC 2
                     MSG "bad/bert/config.json: model_type = \"bert\" is not supported"
                     ARGS eval --model ${_m}/bad/bert --data ${_small}/eval_shard.bin)
# Unreadable weights or data: exit 1, the file, the tensor or position, the value.
zinf_config_cli_test(model_cli_eval_truncated_weights RC 1
                     MSG "truncated-weights/model.safetensors: tensor transformer\\.h\\.[0-9.a-z_]*weight: .*truncated"
                     ARGS eval --model ${_m}/bad/truncated-weights --data ${_small}/eval_shard.bin
                          --batch 2 --seq 16 --device cpu)
zinf_config_cli_test(model_cli_eval_shard_token_range RC 1
                     MSG "shard_big_token.bin: token at position 40 is 100, not below the model's vocab size 100"
                     ARGS eval --model ${_small} --data ${_m}/bad/shard_big_token.bin --batch 2
                          --seq 16 --device cpu)
zinf_config_cli_test(model_cli_eval_shard_truncated RC 1
                     MSG "shard_truncated.bin: header says 65 tokens.*1154 bytes.*1144 bytes"
                     ARGS eval --model ${_small} --data ${_m}/bad/shard_truncated.bin --batch 2
                          --seq 16 --device cpu)
zinf_config_cli_test(model_cli_eval_no_shards RC 1 MSG "/none-\\*.bin: no file matches"
                     ARGS eval --model ${_small} --data @TMP@/none-*.bin --batch 2 --seq 16
                          --device cpu)
zinf_config_cli_test(model_cli_eval_batch_token_range RC 1
                     MSG "token 150 at sequence 1 position 3 is outside the vocabulary .0, 100."
                     ARGS eval --model ${_small} --tokens ${_m}/bad/batch_big_token.bin --device cpu)
zinf_config_cli_test(model_cli_eval_batch_truncated RC 1
                     MSG "batch_truncated.bin: 100 bytes, B 2 x T 16 needs exactly 272"
                     ARGS eval --model ${_small} --tokens ${_m}/bad/batch_truncated.bin --device cpu)
# Usage errors: exit 2.
zinf_config_cli_test(model_cli_eval_too_many_batches RC 2
                     MSG "hold 2 batches of B 2 x T 16.*asked for 3: pass --batches 2 or less"
                     ARGS eval --model ${_small} --data ${_small}/eval_shard.bin --batch 2 --seq 16
                          --batches 3 --device cpu)
zinf_config_cli_test(model_cli_eval_seq_too_long RC 2
                     MSG "--seq 64 is longer than gpt2-small's max_seq 32: pass --seq 32 or less"
                     ARGS eval --model ${_small} --data ${_small}/eval_shard.bin --seq 64)
zinf_config_cli_test(model_cli_eval_no_data RC 2
                     MSG "give exactly one of --data GLOB and --tokens FILE"
                     ARGS eval --model ${_small})
zinf_config_cli_test(model_cli_eval_bad_device RC 2 MSG "--device 'tpu' is not one of auto\\|cpu\\|gpu"
                     ARGS eval --model ${_small} --data x.bin --device tpu)
# zinf bench model: runs and prints the FLOP formula (a short CPU run).
zinf_config_cli_test(model_cli_bench_cpu RC 0
                     MSG "FLOPs/token = 6\\*N \\+ 12\\*n_layer\\*T\\*n_head\\*head_dim = 6\\*458752 \\+ 12\\*2\\*32\\*2\\*64 = .*tokens/s"
                     ARGS bench model --model gpt2-tiny --batch 1 --seq 32 --steps 1 --warmup 1
                          --device cpu --threads 2)
zinf_config_cli_test(model_cli_bench_json RC 0
                     MSG "\"bench\":[ \t]*\"model\".*\"flops_per_token\":[ \t]*[0-9]"
                     ARGS bench model --model llama-tiny --batch 1 --seq 16 --steps 1 --warmup 0
                          --device cpu --threads 2 --json)
zinf_config_cli_test(model_cli_bench_no_model RC 2 MSG "--model is required" ARGS bench model)
