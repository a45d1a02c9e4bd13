#!/usr/bin/env bash
# One call on the lent GPU machine: GPU tests (plain and under compute-sanitizer), the CPU tests
# on that host's disk, and the benchmarks. Logs go to $OUT (or ./gpu-out). Usage:
#   bench/gpu_session.sh BUILD_DIR tests|io|bench
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
io)
	step "fio vs zinf"
	FIO=${FIO:-.tools/fio/fio} ZINF="$B/bin/zinf" bash bench/fio_vs_zinf.sh --size 4G --md "$out/io.md" "$work"
	;;
esac
exit $status
