#!/usr/bin/env bash
# Trains a model whose training state is larger than the host RAM it is given: zinf train on a
# LLaMA-style preset (default llama-3b, 3.2B parameters: 38.6 GB of fp32 master + Adam m + v,
# 12.9 GB of fp32 weights alone) inside a cgroup v2 with memory.max (default 16G) and no swap,
# optimizer state on NVMe (bench/configs/llama_nvme.json), fast_init, bf16 on one GPU.
# Prints the cgroup's peak memory (memory.peak: RSS + page cache + pinned), the engine's peak
# host-buffer bytes, NVMe bytes per step, the step time and its ratio to the NVMe bound
# (24 B/param over fio's write and read bandwidth on the same folder, measured here first).
#
#   bench/beyond_ram.sh BUILD_DIR NVME_DIR [--model llama-3b] [--steps 5] [--mem 16G] [--seq 1024]
# Needs root (cgroup v2 mounted at /sys/fs/cgroup with the memory controller) and fio
# (FIO=..., default .tools/fio/fio).
set -euo pipefail
B=$(cd "${1:?build dir}" && pwd); dir=${2:?nvme dir}; shift 2
model=llama-3b steps=5 mem=16G seq=1024
while [ $# -gt 0 ]; do
	case $1 in
	--model) model=$2; shift 2 ;; --steps) steps=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;; --seq) seq=$2; shift 2 ;;
	*) echo "beyond_ram: unknown option $1" >&2; exit 2 ;;
	esac
done
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
Z=$B/bin/zinf
FIO=${FIO:-$repo/.tools/fio/fio}
root=/sys/fs/cgroup
[ -f "$root/cgroup.controllers" ] || { echo "beyond_ram: no cgroup v2 at $root" >&2; exit 1; }
grep -qw memory "$root/cgroup.controllers" || { echo "beyond_ram: no memory controller" >&2; exit 1; }
grep -qw memory "$root/cgroup.subtree_control" || echo +memory > "$root/cgroup.subtree_control"
cg=$root/zinf-beyond-ram-$$
mkdir "$cg"
cleanup() { rmdir "$cg" 2>/dev/null || true; rm -rf "$dir/beyond-ram.$$"; }
trap cleanup EXIT
echo "$mem" > "$cg/memory.max"
[ -f "$cg/memory.swap.max" ] && echo 0 > "$cg/memory.swap.max"
work=$dir/beyond-ram.$$
mkdir -p "$work"
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM; cgroup memory.max $(cat "$cg/memory.max")"
df -h "$dir" | tail -1

# fio bandwidth on the same folder (sequential 1 MiB, QD 32, O_DIRECT, io_uring), 8 GiB file
bw() { "$FIO" --name=b --filename="$work/fio.dat" --rw="$1" --bs=1M --iodepth=32 --direct=1 \
	--ioengine=io_uring --size=8G --output-format=json 2>/dev/null |
	python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(j["read"]["bw_bytes"]+j["write"]["bw_bytes"])'; }
w=$(bw write); r=$(bw read); rm -f "$work/fio.dat"
echo "== fio: write $(python3 -c "print(round($w/1e9,2))") GB/s, read $(python3 -c "print(round($r/1e9,2))") GB/s"

"$Z" data corpus --out "$work/corpus.txt" >/dev/null
"$Z" data encode --text "$work/corpus.txt" --out "$work/corpus.bin" >/dev/null
log=$work/train.log
set +e
( echo $BASHPID > "$cg/cgroup.procs"; exec "$Z" train --config "$repo/bench/configs/llama_nvme.json" \
	--nvme_path "$work" --model "$model" --data "$work/corpus.bin" --steps "$steps" \
	--seq_len "$seq" --per_device_train_batch_size 1 --device gpu ) 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
peak=$(cat "$cg/memory.peak" 2>/dev/null || echo 0)
events=$(grep -E "^(oom|oom_kill) " "$cg/memory.events" | tr '\n' ' ')
python3 - "$log" "$peak" "$w" "$r" "$rc" "$model" "$mem" "$events" <<'PY'
import re, sys
log, peak, w, r, rc, model, mem, events = sys.argv[1:]
text = open(log).read()
peak, w, r = int(peak), float(w), float(r)
m = re.search(r"zinf train: \S+ \(([0-9.]+)([MB]) params\)", text)
n = float(m.group(1)) * (1e9 if m.group(2) == "B" else 1e6) if m else float("nan")
steps = [float(x) for x in re.findall(r"step (\d+\.\d) ms", text)]
nv = re.findall(r"nvme read ([0-9.]+) GB \+ written ([0-9.]+) GB per step \| host buffers peak ([0-9.]+) GiB", text)
ts = re.findall(r"step +(\d+)/\d+ \|.*?\| ([0-9]+) tok/s", text)
bound = 12 * n / w + 12 * n / r
print(f"== {model}: {n/1e9:.2f}B params, exit {rc}, cgroup memory.max {mem}; {events}")
print(f"peak cgroup memory (memory.peak) {peak/2**30:.2f} GiB")
if nv:
    rd, wr, hp = nv[-1]
    print(f"NVMe per step: read {rd} GB, written {wr} GB; peak host buffers {hp} GiB")
if steps:
    print(f"optimizer step time (cumulative mean, last print) {steps[-1]/1e3:.2f} s per step")
print(f"NVMe bound (24 B/param / fio bw): {bound:.2f} s")
if steps:
    print(f"ratio step/bound: {steps[-1]/1e3/bound:.3f} (goal <= 1.15)")
PY
exit "$rc"
