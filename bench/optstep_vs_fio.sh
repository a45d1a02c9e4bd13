#!/usr/bin/env bash
# Offloaded optimizer step (`zinf bench optstep --offload nvme`) against the bound set by fio on
# the same folder: a step reads and writes the fp32 master, m and v (12 B/param each way), so
#   bound = 12 N / fio_write_bw + 12 N / fio_read_bw
# with fio's sequential write and read bandwidth (1 MiB blocks, queue depth 32, O_DIRECT, the
# same backend) on a file of the state's size. fio and zinf run alternately, --runs times each;
# the medians and the ratio step / bound are printed (issue 7's goal: <= 1.15).
#
#   bench/optstep_vs_fio.sh [--params N] [--runs R] [--backend io_uring|libaio]
#                           [--step-on gpu|cpu] [--sub-group-size S] [--buffer-count K] DIR
#   FIO   fio binary (default: fio on PATH, else .tools/fio/fio)
#   ZINF  zinf binary (default: build/bin/zinf)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
params=1G runs=3 backend=io_uring on=gpu sgs=100M bc=4 dir=""
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case $1 in
	--params) params=${2:?}; shift 2 ;;
	--runs) runs=${2:?}; shift 2 ;;
	--backend) backend=${2:?}; shift 2 ;;
	--step-on) on=${2:?}; shift 2 ;;
	--sub-group-size) sgs=${2:?}; shift 2 ;;
	--buffer-count) bc=${2:?}; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	-*) echo "optstep_vs_fio: unknown option $1" >&2; usage >&2; exit 2 ;;
	*) dir=$1; shift ;;
	esac
done
[ -n "$dir" ] || { usage >&2; exit 2; }
[ -d "$dir" ] && [ -w "$dir" ] || { echo "optstep_vs_fio: $dir is not a writable folder" >&2; exit 1; }
FIO=${FIO:-$(command -v fio || echo "$repo/.tools/fio/fio")}
ZINF=${ZINF:-$repo/build/bin/zinf}
[ -x "$FIO" ] || { echo "optstep_vs_fio: no fio at $FIO (build: ../shared/tools/fio-static.sh .tools/fio)" >&2; exit 1; }
[ -x "$ZINF" ] || { echo "optstep_vs_fio: no zinf at $ZINF (set ZINF=)" >&2; exit 1; }
n=$(python3 - "$params" <<'PY'
import re, sys
m = re.fullmatch(r"(\d+)([KMGT]?)", sys.argv[1].upper())
if not m: sys.exit("optstep_vs_fio: --params %s: use a number with K/M/G" % sys.argv[1])
print(int(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " "))
PY
)
bytes=$((12 * n))
tmp=$(mktemp -d "$dir/optstep-vs-fio.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
fio_bw() { # rw -> bytes/s
	"$FIO" --name=p --filename="$tmp/fio.dat" --rw="$1" --bs=1M --iodepth=32 --direct=1 \
		--ioengine="$backend" --size="$bytes" --output-format=json 2>/dev/null |
		python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(j["read"]["bw_bytes"] + j["write"]["bw_bytes"])'
}
res=$tmp/res.txt
for r in $(seq 1 "$runs"); do
	w=$(fio_bw write); rd=$(fio_bw read); rm -f "$tmp/fio.dat"
	js=$("$ZINF" bench optstep --params "$n" --offload nvme --nvme-path "$tmp" --step-on "$on" \
		--sub-group-size "$sgs" --buffer-count "$bc" --steps 3 --json)
	step=$(printf '%s' "$js" | python3 -c 'import json,sys; print(json.load(sys.stdin)["step_s_median"])')
	echo "$w $rd $step" >> "$res"
	echo "run $r: fio write $(python3 -c "print(f'{$w/1e9:.2f}')") GB/s, read $(python3 -c "print(f'{$rd/1e9:.2f}')") GB/s, zinf step ${step}s" >&2
done
python3 - "$res" "$n" "$on" "$bc" "$sgs" "$backend" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
n = int(sys.argv[2])
w = statistics.median(r[0] for r in rows); rd = statistics.median(r[1] for r in rows)
step = statistics.median(r[2] for r in rows)
bound = 12 * n / w + 12 * n / rd
print(f"optstep nvme, {n} params ({24*n/1e9:.2f} GB moved/step), step on {sys.argv[3]}, "
      f"buffer_count {sys.argv[4]}, sub-group {sys.argv[5]}, {sys.argv[6]}, median of {len(rows)}")
print(f"fio: write {w/1e9:.2f} GB/s, read {rd/1e9:.2f} GB/s -> bound {bound:.3f} s")
print(f"zinf step {step:.3f} s -> ratio step/bound {step/bound:.3f} (goal <= 1.15)")
PY
