#!/usr/bin/env bash
# Multi-GPU throughput of zinf train (weak scaling: the same micro-batch per GPU): GPT-2 1.5B,
# bf16, recompute, micro-batch B x 1024 per GPU, ZeRO stage S, on 1 GPU and on N GPUs
# (`zinf train --num_gpus N`, for each N in --gpus). tokens/s is read from the progress lines after the first
# (warm-up) interval; scaling efficiency = per-GPU tokens/s at N GPUs / tokens/s on 1 GPU.
# A stage written with an x (e.g. 2x) runs with zero_optimization.overlap_comm false.
#
#   bench/zero_scaling.sh ZINF [--gpus "2 4"] [--stages "1 2"] [--model gpt2-1.5b] [--batch 16] [--steps 30]
set -uo pipefail
Z=${1:?zinf binary}; shift
gpus=2 stages="1 2" model=gpt2-1.5b batch=16 steps=30
while [ $# -gt 0 ]; do
	case $1 in
	--gpus) gpus=$2; shift 2 ;; --stages) stages=$2; shift 2 ;; --model) model=$2; shift 2 ;;
	--batch) batch=$2; shift 2 ;; --steps) steps=$2; shift 2 ;;
	*) echo "zero_scaling: unknown option $1" >&2; exit 2 ;;
	esac
done
w=$(mktemp -d /var/tmp/zinf-scaling.XXXXXX); trap 'rm -rf "$w"' EXIT
"$Z" data corpus --out "$w/c.txt" >/dev/null && "$Z" data encode --text "$w/c.txt" --out "$w/c.bin" >/dev/null
rate() { # log -> median tokens/s of rank 0's progress lines, first one dropped
	grep -E "^(\[rank 0\] )?step +[0-9]+/[0-9]+ \| loss" "$1" | grep -oE "[0-9]+ tok/s" |
		awk 'NR > 1 {print $1}' | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : 0)}'
}
for st in $stages; do
	cat > "$w/s$st.json" <<JSON
{"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
 "steps_per_print": 5, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
 "zero_optimization": {"stage": ${st%x}$([ "${st%x}" != "$st" ] && echo ', "overlap_comm": false')}}
JSON
	args=(--config "$w/s$st.json" --model "$model" --data "$w/c.bin" --steps "$steps" --seq_len 1024
	      --per_device_train_batch_size "$batch" --device gpu --no_shuffle --gradient_checkpointing)
	"$Z" train "${args[@]}" > "$w/one$st.log" 2>&1 || { echo "stage $st, 1 GPU failed:"; tail -5 "$w/one$st.log"; continue; }
	r1=$(rate "$w/one$st.log")
	grep -h "memory:" "$w/one$st.log" | sed "s/^/  stage $st, 1 GPU: /"
	for g in $gpus; do
		"$Z" train --num_gpus "$g" "${args[@]}" > "$w/n$st.$g.log" 2>&1 || { echo "stage $st, $g GPUs failed:"; tail -8 "$w/n$st.$g.log"; continue; }
		rn=$(rate "$w/n$st.$g.log")
		python3 -c "r1=$r1; rn=$rn; g=$g; print(f'stage $st, $model, B $batch x 1024 per GPU: 1 GPU {r1:.0f} tok/s; {g} GPUs {rn:.0f} tok/s per GPU = {g*rn:.0f} total; scaling efficiency {rn/r1 if r1 else 0:.3f}')"
		grep -h "memory:" "$w/n$st.$g.log" | sed "s/^/  $g GPUs: /"
	done
done
