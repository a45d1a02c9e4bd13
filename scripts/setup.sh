#!/usr/bin/env bash
# Installs what zinf needs to build on Debian/Ubuntu (when missing) and builds it.
# Usage: scripts/setup.sh [BUILD_DIR] [extra cmake args...]   (default BUILD_DIR: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true

# clang: the libFuzzer harnesses (config parser, token shards) that scripts/test.sh runs.
pkgs=(build-essential cmake ninja-build pkg-config liburing-dev libaio-dev libjemalloc-dev libcjson-dev python3 clang)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "zinf setup: installing ${missing[*]}"
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null || {
			echo "zinf setup: missing packages ${missing[*]}; install them as root:" >&2
			echo "  apt-get install -y ${missing[*]}" >&2
			exit 1
		}
		sudo="sudo"
	fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# CUDA is optional: used when nvcc is on PATH or in /usr/local/cuda.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
	export PATH=/usr/local/cuda/bin:$PATH
fi
cmake -S . -B "$build" -G Ninja "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
