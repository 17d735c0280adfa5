#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer: builds streamgen instrumented in build-asan/ and
# runs the unit tests and the short load suite under both. Slow (about an hour on 2 cores; tests
# run 2-10x slower), so it is run by hand before a release, not in CI.
#   scripts/sanitize.sh [ctest arguments, e.g. -R Server]
# Packages: run scripts/setup.sh once first.
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B build-asan "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTREAMGEN_SANITIZE=ON \
  -DSTREAMGEN_BUILD_BENCH=OFF -DSTREAMGEN_BUILD_FUZZ=OFF
cmake --build build-asan -j "$(nproc)"
# LibTorch, OpenBLAS and OpenMP keep a few allocations for the life of the process (thread pools,
# kernel caches) and free them only at exit, if ever: those are suppressed by library, never ours.
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# The browser tests start Chromium; the CUDA ones skip without a GPU; the rest runs instrumented.
(cd build-asan && ctest --output-on-failure -j "$(nproc)" -E '^e2e\.' --timeout 1800 "$@")
tests/load/run.sh short build-asan
echo "sanitize.sh: unit tests and the short load suite ran clean under ASan + UBSan"
