#!/usr/bin/env bash
# fio vs `zinf bench io` on the same folder, same size, block size, queue depth and engine.
#
# For every backend (io_uring, libaio), rw (read, write) and queue depth (8, 32, 128) it runs fio
# and zinf alternately (fio first in odd runs, zinf first in even ones), --runs times each
# (default 3), and reports the medians: GB/s (decimal),
# the ratio zinf/fio, and CPU seconds per GB for both. zinf's psync pool is run at the same
# settings (no fio peer). Needs only bash, python3, fio and zinf.
#
#   bench/fio_vs_zinf.sh [options] DIR
#     --size S        file size per run (default 2G; fio and zinf read K/M/G as binary)
#     --bs B          block size (default 1M)
#     --qd "8 32 128" queue depths
#     --rw "read write"
#     --backends "io_uring libaio"
#     --runs N        runs of each tool per setting, median reported (default 3, minimum 3)
#     --no-psync      skip the zinf psync rows
#     --md FILE       also write the table (with machine, date and command) as markdown
#   FIO   fio binary (default: fio on PATH, else .tools/fio/fio in the repository)
#   ZINF  zinf binary (default: build/bin/zinf in the repository)
#   ZINF_ARGS  extra flags for every `zinf bench io` run (e.g. --small-pages)
#
# Each fio run uses a fresh file (removed afterwards), as each zinf run does: fio lays out the
# file for reads before its clock starts, zinf writes its pattern before its clock starts.
# fio's CPU time is (usr_cpu + sys_cpu)% x job_runtime; zinf's is getrusage user+sys of the
# process over its timed phase. "in flight" is the average number of requests in the kernel
# (Little's law: IOPS x mean latency); below QD means the tool leaves slots idle. "per-run
# ratios" is the range of zinf/fio within each fio+zinf pair: how noisy the disk is.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cmdline="$0 $*"

size=2G bs=1M qds="8 32 128" rws="read write" backends="io_uring libaio" runs=3 psync=1 md=""
usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "fio_vs_zinf: $*" >&2; exit 1; }
dir=""
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=${2:?--size needs a value}; shift 2 ;;
	--bs) bs=${2:?--bs needs a value}; shift 2 ;;
	--qd) qds=${2:?--qd needs a value}; shift 2 ;;
	--rw) rws=${2:?--rw needs a value}; shift 2 ;;
	--backends) backends=${2:?--backends needs a value}; shift 2 ;;
	--runs) runs=${2:?--runs needs a value}; shift 2 ;;
	--no-psync) psync=0; shift ;;
	--md) md=${2:?--md needs a file}; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	-*) echo "fio_vs_zinf: unknown option $1" >&2; usage >&2; exit 2 ;;
	*) [ -z "$dir" ] || { echo "fio_vs_zinf: one DIR only (got $dir and $1)" >&2; exit 2; }
	   dir=$1; shift ;;
	esac
done
[ -n "$dir" ] || { usage >&2; exit 2; }
[ -d "$dir" ] && [ -w "$dir" ] || die "$dir is not a writable folder"
case $runs in ''|*[!0-9]*) echo "fio_vs_zinf: --runs $runs is not a number" >&2; exit 2 ;; esac
[ "$runs" -ge 3 ] || { echo "fio_vs_zinf: --runs $runs: at least 3 runs are needed for a median" >&2; exit 2; }
for r in $rws; do case $r in read|write) ;; *) echo "fio_vs_zinf: --rw $r: use read and/or write" >&2; exit 2 ;; esac; done
for b in $backends; do case $b in io_uring|libaio) ;; *) echo "fio_vs_zinf: --backends $b: use io_uring and/or libaio" >&2; exit 2 ;; esac; done

if [ -z "${FIO:-}" ]; then
	if command -v fio >/dev/null; then FIO=$(command -v fio)
	elif [ -x "$repo/.tools/fio/fio" ]; then FIO=$repo/.tools/fio/fio
	else die "no fio: set FIO=/path/to/fio, install fio, or build one with shared/tools/fio-static.sh $repo/.tools/fio"
	fi
fi
ZINF=${ZINF:-$repo/build/bin/zinf}
[ -x "$FIO" ] || die "FIO=$FIO is not executable"
[ -x "$ZINF" ] || die "ZINF=$ZINF is not executable: build zinf (cmake -S . -B build && cmake --build build) or set ZINF"
command -v python3 >/dev/null || die "python3 is needed to read the JSON results"
for b in $backends; do
	"$FIO" --enghelp 2>/dev/null | grep -qx "[[:space:]]*$b" || die "$FIO has no $b engine"
done

work=$(mktemp -d)
fiofile="$dir/fio-vs-zinf-$$.dat"
cleanup() { rm -f "$fiofile"; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
results=$work/results.tsv # tool backend rw qd run gbps cpu_s_per_gb inflight
: >"$results"

# fio JSON -> "gbps cpu_s_per_gb inflight"
fio_parse() {
	python3 - "$1" "$2" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])  # fio may print notes before the JSON
job = doc["jobs"][0]
if job.get("error"):
    sys.exit("fio job error %d" % job["error"])
side = job[sys.argv[2]]
nbytes = side["io_bytes"]
secs = side["runtime"] / 1000.0
if nbytes <= 0 or secs <= 0:
    sys.exit("fio moved no data")
cpu = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * job["job_runtime"] / 1000.0
inflight = side["iops"] * side["lat_ns"]["mean"] / 1e9  # Little's law
print("%.6f %.6f %.1f" % (nbytes / 1e9 / secs, cpu / (nbytes / 1e9), inflight))
EOF
}

# zinf JSON -> "gbps cpu_s_per_gb inflight"; checks that the backend asked for is the one that ran.
zinf_parse() {
	python3 - "$1" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
if d["backend"] != sys.argv[2]:
    sys.exit("zinf ran backend %s, not %s (%s)" % (d["backend"], sys.argv[2], d.get("backend_reason")))
if d["wrong_blocks"] or d["io_errors"]:
    sys.exit("zinf reported %d wrong blocks, %d I/O errors" % (d["wrong_blocks"], d["io_errors"]))
if not d["direct"]:
    sys.exit("zinf fell back to buffered I/O; the comparison needs O_DIRECT")
print("%.6f %.6f %.1f" % (d["gb_per_s"], d["cpu_s_per_gb"], d["inflight_avg"]))
EOF
}

run_fio() { # backend rw qd run
	local out=$work/fio.json
	rm -f "$fiofile"
	if ! "$FIO" --name=fio_vs_zinf --filename="$fiofile" --direct=1 --bs="$bs" --iodepth="$3" \
		--size="$size" --numjobs=1 --rw="$2" --ioengine="$1" --output-format=json \
		--output="$out" >"$work/fio.log" 2>&1; then
		cat "$work/fio.log" >&2; die "fio failed: $1 $2 QD $3"
	fi
	rm -f "$fiofile"
	local v; v=$(fio_parse "$out" "$2") || die "cannot read fio's result ($1 $2 QD $3)"
	echo "fio $1 $2 $3 $4 $v" >>"$results"
	echo "  fio  $1 $2 QD$3 run$4: $v" >&2
}

run_zinf() { # backend rw qd run
	local out=$work/zinf.json
	if ! "$ZINF" bench io --path "$dir" --size "$size" --block-size "$bs" --queue-depth "$3" \
		--backend "$1" --rw "$2" --direct --json ${ZINF_ARGS:-} >"$out" 2>"$work/zinf.log"; then
		cat "$work/zinf.log" >&2; die "zinf bench io failed: $1 $2 QD $3"
	fi
	local v; v=$(zinf_parse "$out" "$1") || die "zinf result rejected ($1 $2 QD $3)"
	echo "zinf $1 $2 $3 $4 $v" >>"$results"
	echo "  zinf $1 $2 QD$3 run$4: $v" >&2
}

echo "fio_vs_zinf: $("$FIO" --version), $("$ZINF" --version), $dir, size $size, bs $bs, $runs runs" >&2
for b in $backends; do
	for rw in $rws; do
		for qd in $qds; do
			for ((i = 1; i <= runs; i++)); do
				# ABBA order, so neither tool always runs right after the other's layout.
				if ((i % 2)); then
					run_fio "$b" "$rw" "$qd" "$i"; run_zinf "$b" "$rw" "$qd" "$i"
				else
					run_zinf "$b" "$rw" "$qd" "$i"; run_fio "$b" "$rw" "$qd" "$i"
				fi
			done
		done
	done
done
if [ "$psync" = 1 ]; then
	for rw in $rws; do
		for qd in $qds; do
			for ((i = 1; i <= runs; i++)); do run_zinf psync "$rw" "$qd" "$i"; done
		done
	done
fi

dev=$(df -P "$dir" | awk 'NR==2 {print $1}')
fstype=$(df -PT "$dir" | awk 'NR==2 {print $2}')
machine="$(uname -n), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), Linux $(uname -r)"
python3 - "$results" "$md" "$machine" "$(date)" "$cmdline" "$dir ($dev, $fstype)" \
	"$("$FIO" --version)" "$("$ZINF" --version)" "$size" "$bs" "$runs" <<'EOF'
import os, statistics, sys
res, md, machine, date, cmd, where, fiov, zinfv, size, bs, runs = sys.argv[1:12]
rows, pairs = {}, {}
for line in open(res):
    tool, b, rw, qd, run, gbps, cpu, infl = line.split()
    rows.setdefault((b, rw, int(qd)), {}).setdefault(tool, []).append((float(gbps), float(cpu), float(infl)))
    pairs.setdefault((b, rw, int(qd), int(run)), {})[tool] = float(gbps)
order = {"io_uring": 0, "libaio": 1, "psync": 2}
table = []
for (b, rw, qd) in sorted(rows, key=lambda k: (order[k[0]], k[1], k[2])):
    r = rows[(b, rw, qd)]
    def med(tool, i):
        return statistics.median(v[i] for v in r[tool]) if tool in r else None
    fg, fc, zg, zc = med("fio", 0), med("fio", 1), med("zinf", 0), med("zinf", 1)
    pr = [p["zinf"] / p["fio"] for k, p in pairs.items() if k[:3] == (b, rw, qd) and "fio" in p and "zinf" in p]
    spread = "%.2f-%.2f" % (min(pr), max(pr)) if pr else "-"
    table.append((b, rw, qd, fg, zg, zg / fg if fg else None, spread, fc, zc, med("fio", 2), med("zinf", 2)))
hdr = ("backend", "rw", "QD", "fio GB/s", "zinf GB/s", "zinf/fio", "per-run ratios", "fio CPU s/GB",
       "zinf CPU s/GB", "fio in flight", "zinf in flight")
def f(v, p=3):
    return "-" if v is None else ("%.*f" % (p, v) if isinstance(v, float) else str(v))
def cells(t):
    return [t[0], t[1], str(t[2]), f(t[3]), f(t[4]), f(t[5], 2) + ("x" if t[5] else ""), t[6], f(t[7], 4),
            f(t[8], 4), f(t[9], 1), f(t[10], 1)]
fmt = "%-9s %-6s %4s %9s %10s %9s %15s %13s %14s %14s %15s"
print(fmt % hdr)
for t in table:
    print(fmt % tuple(cells(t)))
below = [t for t in table if t[5] is not None and t[5] < 1.0]
print("\n%d of %d comparable rows have zinf below 1.0x fio" % (len(below), sum(t[5] is not None for t in table)))
if md:
    with open(md, "w") as out:
        out.write("- Machine: %s\n- Disk: %s\n- Date: %s\n- fio: %s; zinf: %s\n" % (machine, where, date, fiov, zinfv))
        out.write("- Settings: size %s, block %s, O_DIRECT, numjobs 1, median of %s alternating runs each\n" % (size, bs, runs))
        extra = os.environ.get("ZINF_ARGS", "")
        out.write("- Command: `%s%s`\n\n" % ("ZINF_ARGS='%s' " % extra if extra else "", cmd))
        out.write("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr) + "\n")
        for t in table:
            out.write("| " + " | ".join(cells(t)) + " |\n")
EOF
