#!/usr/bin/env bash
# Issue 5 acceptance on the GPU machine, one call: correctness against HF transformers (CPU fp32
# and GPU bf16 paths), then zinf bench model and the PyTorch peer on the same card. Logs and
# JSON lines go to $OUT (or ./model-out). Usage:
#   bench/model_acceptance.sh BUILD_DIR [check|perf|all]
# BUILD_DIR: a CUDA build (-DZINF_CUDA=ON -DZINF_STATIC_DEPS=ON -DZINF_BUNDLE_LIBS=ON) with
# bin/zinf. Exit status: non-zero when a correctness check or a zinf run failed.
set -uo pipefail
B=$(cd "${1:?build dir}" && pwd)
what=${2:-all}
out=${OUT:-$PWD/model-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
Z=$B/bin/zinf
status=0
step() { echo; echo "=== $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
date -u

if [ "$what" = check ] || [ "$what" = all ]; then
	for dev in cpu gpu; do
		step "model_vs_hf --device $dev"
		python3 bench/model_vs_hf.py --zinf "$Z" --device "$dev" --json "$out/vs_hf_$dev.jsonl" \
			>"$out/vs_hf_$dev.log" 2>&1
		rc=$?
		grep -E '^(#|PASS|FAIL|[0-9]+ passed)' "$out/vs_hf_$dev.log"
		[ $rc -eq 0 ] || status=1
	done
fi

if [ "$what" = perf ] || [ "$what" = all ]; then
	step "zinf bench model"
	for run in "gpt2-124m 32 1024" "gpt2-124m 16 1024" "gpt2-1.5b 16 1024 --recompute"; do
		set -- $run
		"$Z" bench model --model "$1" --batch "$2" --seq "$3" ${4:-} --device gpu --steps 20 \
			--warmup 5 --json | tr -d '\n\t' | tee -a "$out/bench_model.jsonl"
		[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
		echo | tee -a "$out/bench_model.jsonl"
	done
	step "PyTorch peer (HF GPT2LMHeadModel, bf16 autocast)"
	python3 bench/model_vs_torch.py | tee "$out/torch_model.jsonl"
fi
echo
echo "status $status (logs in $out)"
exit $status
