#!/usr/bin/env bash
# ZeRO stages 1-3 across GPUS (default 2) GPUs (NCCL) against one GPU with the same global batch: GPT-2 124M,
# bf16, 10 steps, one GPU with micro-batch 8 vs `zinf train --num_gpus G` with micro-batch 8/G
# per rank (STAGES="1 2 3" by default; a stage written with a b, e.g. 2b, reduces gradients in
# buckets of 10M elements, so the 124M model's reduction is split into ~13 overlapped buckets), no shuffling (so both read the same rows in the same order). Prints, per step, the
# single-GPU loss and global grad norm next to rank 0's (rank 0's loss is the mean over its own
# 4 rows; the grad norm is global, after the reduction, and must match). Run from the
# repository root on a 2-GPU machine with the staged build in .gpu/.
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.gpu/lib NCCL_NVLS_ENABLE=0
Z=$PWD/.gpu/bin/zinf; w=/var/tmp/zinf-zero; mkdir -p $w
$Z data corpus --out $w/c.txt >/dev/null; $Z data encode --text $w/c.txt --out $w/c.bin >/dev/null
G=${GPUS:-2}; PB=$((8 / G))
for st in ${STAGES:-1 2 3}; do
cat > $w/s$st.json <<JSON
{"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
 "steps_per_print": 1, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.1}},
 "zero_optimization": {"stage": ${st%b}$([ "${st%b}" != "$st" ] && echo ', "reduce_bucket_size": 10000000')}}
JSON
timeout 120 $Z train --config $w/s$st.json --model gpt2-124m --data $w/c.bin --steps 10 --seq_len 1024 --per_device_train_batch_size 8 --device gpu --seed 3 --no_shuffle > $w/one$st.log 2>&1 || { echo "one GPU stage $st failed"; tail -5 $w/one$st.log; }
timeout 180 $Z train --num_gpus $G --config $w/s$st.json --model gpt2-124m --data $w/c.bin --steps 10 --seq_len 1024 --per_device_train_batch_size $PB --device gpu --seed 3 --no_shuffle > $w/two$st.log 2>&1 || { echo "$G GPUs stage $st failed"; tail -15 $w/two$st.log; }
echo "== stage $st: one GPU B=8 vs $G GPUs B=$PB each (grad norm = global, after the reduction)"
grep -oE "^step +[0-9]+/10 \| loss [0-9.]+ \| lr [0-9.e+-]+ \| grad norm [0-9.]+" $w/one$st.log | awk '{print $2, "loss", $5, "gnorm", $12}' > $w/a
grep -E "^\[rank 0\] step +[0-9]+/10 \| loss" $w/two$st.log | grep -oE "step +[0-9]+/10 \| loss [0-9.]+ \| lr [0-9.e+-]+ \| grad norm [0-9.]+" | awk '{print $2, "loss(rank0 rows)", $5, "gnorm", $12}' > $w/b
paste $w/a $w/b
grep -E "tok/s" $w/one$st.log | tail -1; grep -E "rank 0.*tok/s" $w/two$st.log | tail -1
done
