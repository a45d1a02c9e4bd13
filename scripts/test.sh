#!/usr/bin/env bash
# Sets up, builds and runs the tests twice: a normal build with warnings as errors, and an
# ASan+UBSan build. Tests that cannot run here (no GPU, no io_uring, no root for a tmpfs)
# show as skipped (exit 77), never as passed.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
scripts/setup.sh build-ci -DZINF_WERROR=ON
(cd build-ci && ctest --output-on-failure -j"$jobs")
scripts/setup.sh build-ci-asan -DZINF_WERROR=ON -DZINF_SANITIZE=ON
# protect_shadow_gap=0: the CUDA runtime maps memory where ASan's shadow gap would be.
(cd build-ci-asan && ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j"$jobs")
# libFuzzer harnesses (issue 6): the ds_config parser and the token-shard reader, ~20 s each,
# built with clang (only the fuzz targets: they compile the parsers' sources themselves).
CC=clang cmake -S . -B build-ci-fuzz -G Ninja -DZINF_CUDA=OFF >/dev/null
cmake --build build-ci-fuzz --target fuzz_config fuzz_shard -j"$jobs"
(cd build-ci-fuzz && ctest -R '^fuzz_' --output-on-failure)
echo "zinf: all tests passed (skipped tests are listed above)"
