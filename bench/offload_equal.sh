#!/usr/bin/env bash
# Issue 7's equality check on a GPU (or CPU) engine: the same model, seed and data trained for
# --steps with the optimizer state on the GPU/in memory (offload none), in pinned host memory
# (cpu) and in NVMe swap files (nvme); the per-step losses must be bit-identical (compared as
# printed, and the exported bf16 weights after the last step compared byte for byte).
#
#   bench/offload_equal.sh ZINF NVME_DIR [--model gpt2-tiny] [--steps 20] [--device gpu|cpu]
set -euo pipefail
Z=${1:?zinf binary}; dir=${2:?nvme dir}; shift 2
model=gpt2-tiny steps=20 device=gpu
while [ $# -gt 0 ]; do
	case $1 in
	--model) model=$2; shift 2 ;; --steps) steps=$2; shift 2 ;; --device) device=$2; shift 2 ;;
	*) echo "offload_equal: unknown option $1" >&2; exit 2 ;;
	esac
done
work=$(mktemp -d "$dir/offload-equal.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$Z" data corpus --out "$work/c.txt" >/dev/null
"$Z" data encode --text "$work/c.txt" --out "$work/c.bin" >/dev/null
for dev in none cpu nvme; do
	off=""
	[ "$dev" = none ] || off=", \"offload_optimizer\": {\"device\": \"$dev\", \"buffer_count\": 4}"
	cat > "$work/$dev.json" <<JSON
{"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
 "steps_per_print": 1, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.1}},
 "zero_optimization": {"stage": 3, "sub_group_size": 100000 $off}}
JSON
	"$Z" train --config "$work/$dev.json" --nvme_path "$work" --model "$model" --data "$work/c.bin" \
		--steps "$steps" --seq_len 256 --device "$device" --seed 7 --out "$work/$dev.ckpt" \
		--save_steps "$steps" --export > "$work/$dev.log" 2>&1 ||
		{ cat "$work/$dev.log"; exit 1; }
	grep -oE "^step +[0-9]+/[0-9]+ \| loss [0-9.]+ \|.*grad norm [0-9.]+" "$work/$dev.log" > "$work/$dev.loss"
	echo "$dev: $(wc -l < "$work/$dev.loss") steps, last: $(tail -1 "$work/$dev.loss")"
done
status=0
for dev in cpu nvme; do
	if cmp -s "$work/none.loss" "$work/$dev.loss"; then
		echo "offload $dev: losses and grad norms identical to offload none over $steps steps"
		if cmp -s "$work/none.ckpt/global_step$steps/model.safetensors" \
			"$work/$dev.ckpt/global_step$steps/model.safetensors"; then
			echo "offload $dev: exported weights after step $steps bit-identical to offload none"
		else
			echo "offload $dev: exported weights DIFFER from offload none"; status=1
		fi
	else
		echo "offload $dev: DIFFERENT from offload none:"; diff "$work/none.loss" "$work/$dev.loss" | head; status=1
	fi
done
exit $status
