#!/usr/bin/env bash
# One call on the lent GPU machine: GPU tests (plain and under compute-sanitizer), the CPU tests
# on that host's disk, and the benchmarks. Logs go to $OUT (or ./gpu-out). Usage:
#   bench/gpu_session.sh BUILD_DIR tests|io|swap|model|offload
# BUILD_DIR is a build made elsewhere with -DZINF_STATIC_DEPS=ON -DZINF_BUNDLE_LIBS=ON.
set -uo pipefail
B=$(cd "${1:?build dir}" && pwd)
what=${2:-tests}
out=${OUT:-$PWD/gpu-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
work=${ZINF_WORK_DIR:-/var/tmp/zinf-gpu}
mkdir -p "$work"
status=0
step() { echo; echo "=== $*"; }
run() { # run NAME CMD...: prints PASS/SKIP/FAIL from the exit code
	local name=$1; shift
	( cd "$work" && "$@" ) >"$out/$name.log" 2>&1
	local rc=$?
	case $rc in 0) echo "PASS $name" ;; 77) echo "SKIP $name" ;; *) echo "FAIL $name (rc $rc)"; tail -20 "$out/$name.log"; status=1 ;; esac
}

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv
nproc; free -g | head -2; df -h "$work" | tail -1; uname -r; date -u

case $what in
tests)
	step "tests"
	for s in common io_uring libaio psync enospc; do run "iosched_$s" "$B/tests/test_iosched" "$s"; done
	run kernels_cpu "$B/tests/test_kernels_cpu"
	run kernels_gpu "$B/tests/test_kernels_gpu"
	run offload_cpu "$B/tests/test_offload"
	run offload_gpu "$B/tests/test_offload_gpu"
	step "compute-sanitizer"
	for t in kernels_gpu offload_gpu; do
		for tool in memcheck racecheck; do
			run "sanitizer_${tool}_$t" compute-sanitizer --tool "$tool" --error-exitcode 99 "$B/tests/test_$t"
		done
	done
	grep -h "ERROR SUMMARY" "$out"/sanitizer_*.log
	step "zinf bench io --gpu"
	for buf in pinned pageable; do
		"$B/bin/zinf" bench io --path "$work" --size 8G --queue-depth 32 --rw read --gpu --buffer "$buf"
	done
	step "zinf bench swap"
	"$B/bin/zinf" bench swap --nvme-path "$work" --size 8G --buffer-size 64M --buffer-count 4 --pin-memory true
	"$B/bin/zinf" bench swap --nvme-path "$work" --size 8G --buffer-size 64M --buffer-count 4 --pin-memory false
	;;
swap)
	# NVMe -> GPU through the swapper vs fio's sequential read of the same disk, alternating.
	fio=${FIO:-.tools/fio/fio}
	for i in 1 2 3; do
		step "fio read $i"
		"$fio" --name=seqread --directory="$work" --rw=read --bs=1M --iodepth=32 --size=8G \
			--direct=1 --ioengine=io_uring --numjobs=1 --group_reporting 2>&1 | grep -E "READ:|cpu"
		rm -f "$work"/seqread.*
		step "zinf bench swap $i (pinned)"
		"$B/bin/zinf" bench swap --nvme-path "$work" --size 8G --buffer-size 64M --buffer-count 4 --pin-memory true
	done
	step "zinf bench swap (pageable)"
	"$B/bin/zinf" bench swap --nvme-path "$work" --size 8G --buffer-size 64M --buffer-count 4 --pin-memory false
	;;
model)
	# issue 5 + 6: GPU tests, HF comparison (CPU fp32 and GPU bf16), zinf bench model vs the
	# PyTorch peer, zinf train on text found on this machine, the export loaded by HF.
	step "GPU tests"
	for t in attention_gpu model_gpu kernels_gpu optstep_gpu; do run "$t" timeout 120 "$B/tests/test_$t"; done
	for dev in cpu gpu; do
		step "model_vs_hf --device $dev"
		timeout 240 python3 bench/model_vs_hf.py --zinf "$B/bin/zinf" --device "$dev" \
			--json "$out/vs_hf_$dev.jsonl" >"$out/vs_hf_$dev.log" 2>&1 || status=1
		grep -E '^(#|PASS|FAIL|[0-9]+ passed)|rule' "$out/vs_hf_$dev.log" | head -60
	done
	step "zinf bench model"
	for r in "gpt2-124m 32 1024" "gpt2-124m 16 1024" "gpt2-1.5b 16 1024 --recompute" "llama-1b 8 1024"; do
		set -- $r
		timeout 120 "$B/bin/zinf" bench model --model "$1" --batch "$2" --seq "$3" ${4:-} \
			--device gpu --steps 20 --warmup 5 --json | tr -d '\n\t' | tee -a "$out/bench_model.jsonl"
		echo | tee -a "$out/bench_model.jsonl"
	done
	step "PyTorch peer (eager, bf16 autocast)"
	timeout 240 python3 bench/model_vs_torch.py --modes eager \
		--runs gpt2-124m:32:1024,gpt2-124m:16:1024,gpt2-1.5b:16:1024:recompute | tee "$out/torch_model.jsonl"
	step "corpus from text files on this machine"
	find /usr/share/doc /usr/share/common-licenses /usr/lib/python3* /root/.pyenv/versions/*/lib/python3*/ \
		-type f \( -name '*.txt' -o -name '*.rst' -o -name '*.md' -o -name 'README*' -o -name 'copyright' \) \
		2>/dev/null | sort | head -20000 | xargs cat 2>/dev/null | head -c 40000000 > "$work/corpus.txt"
	ls -la "$work/corpus.txt"
	"$B/bin/zinf" data encode --text "$work/corpus.txt" --out "$work/train.bin" --val-fraction 0.02 --val-out "$work/val.bin"
	step "zinf train gpt2-124m"
	rm -rf "$work/gpt2run"
	timeout 200 "$B/bin/zinf" train --config bench/configs/gpt2_bf16.json --model gpt2-124m \
		--data "$work/train.bin" --val_data "$work/val.bin" --eval_steps 100 --steps 300 \
		--seq_len 1024 --per_device_train_batch_size 16 --gradient_accumulation_steps 1 \
		--warmup_steps 30 --device gpu --out "$work/gpt2run" --save_steps 300 --export 2>&1 | tee "$out/train_gpt2.log" | grep -v "^  time"
	timeout 120 python3 bench/export_check.py "$work/gpt2run/global_step300" "$work/val.bin" \
		--zinf "$B/bin/zinf" --zinf-device cpu --batches 2 --batch 2 --seq 1024 || status=1
	step "zinf train llama-1b"
	rm -rf "$work/llamarun"
	timeout 200 "$B/bin/zinf" train --config bench/configs/gpt2_bf16.json --model llama-1b \
		--data "$work/train.bin" --val_data "$work/val.bin" --eval_steps 100 --steps 100 \
		--seq_len 1024 --per_device_train_batch_size 8 --gradient_accumulation_steps 1 \
		--warmup_steps 10 --device gpu --out "$work/llamarun" --save_steps 100 --export 2>&1 | tee "$out/train_llama.log" | grep -v "^  time"
	timeout 150 python3 bench/export_check.py "$work/llamarun/global_step100" "$work/val.bin" \
		--zinf "$B/bin/zinf" --zinf-device cpu --batches 1 --batch 1 --seq 512 || status=1
	rm -rf "$work/gpt2run" "$work/llamarun"
	;;
offload)
	# issue 7: optimizer step vs fio's bound, pinned vs PCIe, GPU- vs CPU-stepped, and a model
	# larger than the host RAM it is given.
	step "optstep nvme vs fio"
	FIO=${FIO:-.tools/fio/fio} ZINF="$B/bin/zinf" timeout 200 bash bench/optstep_vs_fio.sh --params 512M --runs 3 "$work"
	step "optstep pinned (GPU-stepped) and CPU-stepped, same state"
	timeout 100 "$B/bin/zinf" bench optstep --params 1G --offload cpu --step-on gpu --steps 3
	timeout 200 "$B/bin/zinf" bench optstep --params 1G --offload cpu --step-on cpu --threads "$(nproc)" --steps 2
	step "beyond host RAM: llama-3b, memory.max 16G"
	FIO=${FIO:-.tools/fio/fio} timeout 420 bash bench/beyond_ram.sh "$B" "$work" --model llama-3b --steps 5 --mem 16G || status=1
	;;
io)
	step "fio vs zinf"
	FIO=${FIO:-.tools/fio/fio} ZINF="$B/bin/zinf" bash bench/fio_vs_zinf.sh --size 4G --md "$out/io.md" "$work"
	;;
esac
exit $status
