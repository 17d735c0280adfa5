#!/usr/bin/env bash
# Builds streamgen against the LibTorch inside a PyTorch 2.x (CUDA) install, runs the CUDA tests,
# prints the GPU benchmarks, then runs the rest of the suite under that LibTorch.
#   scripts/cuda_check.sh [REPORT_DIR]          (default build-cuda/report)
# Environment:
#   PYTHON=python3                 the interpreter whose torch to build against
#   STREAMGEN_DEPS_PREFIX=/prefix  where the non-torch dependencies live when they are not installed
#                                  system-wide (a copy of Debian's usr/include, usr/lib/<arch>,
#                                  usr/share/cmake for fmt, spdlog, CLI11, nlohmann-json, GTest,
#                                  ICU and stb)
#   STREAMGEN_CUDA_BENCH=0         skip the benchmarks
#   STREAMGEN_CUDA_BUILD_ONLY=1    configure and build, nothing else
#   STREAMGEN_CUDA_TARGET=T        build only target T (default: all)
# Each phase writes its log to REPORT_DIR; the script carries on after a failed phase so that one
# run reports everything, and exits non-zero if any phase failed.
set -uo pipefail
cd "$(dirname "$0")/.."
report=${1:-build-cuda/report}
mkdir -p "$report"
py=${PYTHON:-python3}
failed=()
phase() {  # phase NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$report/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc in $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

{ g++ --version | head -1; cmake --version | head -1; nvcc --version 2>/dev/null | tail -1; nvidia-smi -L 2>/dev/null
  $py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'; } 2>&1 | tee "$report/versions.log"

args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DSTREAMGEN_BUILD_FUZZ=OFF -DSTREAMGEN_BUILD_BENCH=OFF
      "-DCMAKE_PREFIX_PATH=$($py -c 'import torch;print(torch.utils.cmake_prefix_path)')")
if command -v nvcc >/dev/null; then args+=("-DCUDAToolkit_ROOT=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"); fi
if [ -n "${STREAMGEN_DEPS_PREFIX:-}" ]; then
  p=$STREAMGEN_DEPS_PREFIX/usr
  lib=$p/lib/x86_64-linux-gnu
  args+=("-Dfmt_DIR=$lib/cmake/fmt" "-Dspdlog_DIR=$lib/cmake/spdlog" "-DGTest_DIR=$lib/cmake/GTest"
         "-DCLI11_DIR=$p/share/cmake/CLI11" "-Dnlohmann_json_DIR=$p/share/cmake/nlohmann_json"
         "-DICU_ROOT=$p" "-DICU_INCLUDE_DIR=$p/include" "-DICU_UC_LIBRARY_RELEASE=$lib/libicuuc.so" "-DSTB_LIBRARY=$lib/libstb.so"
         "-DCMAKE_CXX_FLAGS=-I$p/include" "-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath,$lib -Wl,-rpath-link,$lib")
  export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

phase configure 300 cmake -S . -B build-cuda "${args[@]}"
phase build 900 cmake --build build-cuda -j "$(nproc)" --target "${STREAMGEN_CUDA_TARGET:-all}" -- -k 0
if [[ " ${failed[*]} " == *" build "* ]]; then
  grep -E "error|Error" "$report/build.log" | head -60
  exit 1
fi
[ "${STREAMGEN_CUDA_BUILD_ONLY:-0}" = 1 ] && exit 0

cli=build-cuda/bin/streamgen
phase info 60 "$cli" info
phase cuda_tests 300 ctest --test-dir build-cuda -R CudaTest --output-on-failure
if [ "${STREAMGEN_CUDA_BENCH:-1}" != 0 ]; then
  phase bench_matmul 60 "$cli" bench matmul --device cuda
  phase bench_unet 180 "$cli" bench unet --device cuda --dtypes fp16 bf16 --sizes 64 --batch 1 4 --runs 10
  phase bench_taesd 60 "$cli" bench taesd --device cuda --dtypes fp16 --sizes 512 --runs 10
  phase bench_text_encoder 60 "$cli" bench text-encoder --device cuda --dtypes fp16 --runs 10
  phase bench_stream 180 "$cli" bench stream --device cuda --dtypes fp16 --sizes 512 --runs 10
fi
phase tests 300 ctest --test-dir build-cuda -E CudaTest -j 4 --output-on-failure

if [ ${#failed[@]} -gt 0 ]; then
  echo "cuda_check: failed phases: ${failed[*]}"
  exit 1
fi
echo "cuda_check: all phases passed"
