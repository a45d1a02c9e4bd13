#!/usr/bin/env bash
# zinf tune's best against fio's best on the same folder.
#
# Runs `zinf tune --nvme_path DIR` (its own search, --seconds S), then fio over a small grid
# (engine io_uring and libaio, queue depth 8/32/128, block size 1M and tune's block size,
# direct I/O, a 1 GiB file per job) for the three patterns tune measures:
#   read   sequential reads (tune: the parameter fetch, read_GBps)
#   write  sequential writes (tune: the fill pass, write_GBps)
#   rw     one reader and one writer at once on separate files (tune: the pipelined optimizer
#          step, mixed_GBps; fio's figure is read + write bandwidth)
# and prints, for each pattern, fio's best GB/s (decimal), tune's and the ratio tune/fio.
#
#   bench/tune_vs_fio.sh [--seconds S] [--md FILE] DIR
#   FIO   fio binary (default: fio on PATH, else .tools/fio/fio; build it with
#         ../shared/tools/fio-static.sh .tools/fio)
#   ZINF  zinf binary (default: build/bin/zinf)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
secs=60 md="" dir=""
usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case $1 in
	--seconds) secs=${2:?--seconds needs a value}; shift 2 ;;
	--md) md=${2:?--md needs a file}; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	-*) echo "tune_vs_fio: unknown option $1" >&2; usage >&2; exit 2 ;;
	*) dir=$1; shift ;;
	esac
done
[ -n "$dir" ] || { usage >&2; exit 2; }
[ -d "$dir" ] && [ -w "$dir" ] || { echo "tune_vs_fio: $dir is not a writable folder" >&2; exit 2; }
FIO=${FIO:-$(command -v fio || echo "$repo/.tools/fio/fio")}
ZINF=${ZINF:-$repo/build/bin/zinf}
[ -x "$FIO" ] || { echo "tune_vs_fio: no fio ($FIO): ../shared/tools/fio-static.sh .tools/fio" >&2; exit 2; }
[ -x "$ZINF" ] || { echo "tune_vs_fio: no zinf at $ZINF (set ZINF)" >&2; exit 2; }
work=$(mktemp -d "$dir/tune_vs_fio.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$ZINF" tune --nvme_path "$dir" --seconds "$secs" --out "$work/tuned.json" >"$work/tune.txt"
tail -4 "$work/tune.txt"
tbs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["aio"]["block_size"])' "$work/tuned.json")

fio_run() { # pattern engine qd bs -> GB/s
	local pat=$1 eng=$2 qd=$3 bs=$4 args=(--direct=1 --ioengine="$eng" --iodepth="$qd" --bs="$bs"
		--size=1G --output-format=json --directory="$work" --group_reporting=1)
	case $pat in
	read) "$FIO" --name=r --rw=read "${args[@]}" ;;
	write) "$FIO" --name=w --rw=write "${args[@]}" ;;
	rw) "$FIO" "${args[@]}" --name=r --rw=read --name=w --rw=write ;;
	esac 2>/dev/null | python3 -c 'import json,sys
j=json.load(sys.stdin)["jobs"][0]
print((j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/1e9)'
	rm -f "$work"/r.* "$work"/w.*
}
declare -A best
for pat in read write rw; do
	best[$pat]=0
	for eng in io_uring libaio; do
		for qd in 8 32 128; do
			for bs in 1048576 "$tbs"; do
				g=$(fio_run "$pat" "$eng" "$qd" "$bs" || echo 0)
				best[$pat]=$(python3 -c "print(max(${best[$pat]}, $g))")
			done
		done
	done
done
python3 - "$work/tuned.report.json" "${best[read]}" "${best[write]}" "${best[rw]}" "$dir" <<'PY' | tee ${md:+"$md"}
import json, sys, platform, datetime
m = json.load(open(sys.argv[1]))["zinf_tune"]
fio = dict(read=float(sys.argv[2]), write=float(sys.argv[3]), rw=float(sys.argv[4]))
tune = dict(read=m["read_GBps"], write=m["write_GBps"], rw=m["mixed_GBps"])
print(f"| pattern | fio best GB/s | zinf tune GB/s | tune/fio |  ({platform.node()}, {datetime.date.today()}, {sys.argv[5]})")
print("|---|---|---|---|")
for k in ("read", "write", "rw"):
    r = tune[k] / fio[k] if fio[k] > 0 else 0
    print(f"| {k} | {fio[k]:.3f} | {tune[k]:.3f} | {r:.2f} |")
PY
