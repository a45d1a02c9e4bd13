#!/usr/bin/env bash
# Sets up, builds and runs zinf's main job. Until the training engine lands (see README,
# 'Status'), that is the NVMe/file throughput benchmark on a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
dir=${ZINF_BENCH_DIR:-$(mktemp -d "${TMPDIR:-/var/tmp}/zinf-bench.XXXXXX")}
trap 'rmdir "$dir" 2>/dev/null || true' EXIT
for rw in write read; do
	build/bin/zinf bench io --path "$dir" --size 1G --block-size 1M --queue-depth 32 --rw "$rw" "$@"
done
