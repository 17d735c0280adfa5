#!/usr/bin/env bash
# Installs every dependency from Debian 12's packages, then configures and builds streamgen
# (Release) into build/. Idempotent: a second run only rebuilds what changed.
#   scripts/setup.sh                 install + build
#   STREAMGEN_SKIP_APT=1 ...         build only (packages already present)
#   STREAMGEN_CMAKE_ARGS="..."       extra CMake arguments (e.g. -DCMAKE_PREFIX_PATH=<LibTorch 2.x>)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential g++ cmake ninja-build ccache pkg-config git
  libtorch-dev
  libopenblas0-pthread         # without it LibTorch's fp32 matmul falls back to reference BLAS (~6 GFLOP/s)
  libtcmalloc-minimal4         # the executables' malloc: with glibc's, CPU streams spend ~40 % of their time in page faults
  nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
  libicu-dev                   # Unicode categories, NFC and case mapping for the CLIP tokenizer
  libstb-dev                   # BMP reading, PNG/JPEG writing
  libturbojpeg0-dev libpng-dev # JPEG and PNG reading: Debian 12's stb 2.27 overflows a heap buffer on crafted JPEGs
  libopencv-imgproc-dev        # Canny edges: ControlNet control images
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev libavdevice-dev   # video files and cameras
  libboost-dev                 # Beast + Asio: the HTTP/WebSocket server
  libgloo-dev                  # headers of the Gloo backend LibTorch's c10d uses for data-parallel training
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-dev pybind11-dev python3-numpy python3-pil python3-pytest   # the Python module and its tests (Debian's python3)
  clang libclang-rt-dev        # libFuzzer for the fuzz tests
  chromium                     # the real-browser end-to-end test (driven by playwright-core from npm)
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ "${STREAMGEN_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "setup: all Debian packages present"
  fi
fi

# Make sure the optimised BLAS is the one LibTorch loads (the alternatives system may point at
# the reference implementation if that was installed first).
blas=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
if [ -e "$blas" ] && command -v update-alternatives >/dev/null; then
  current=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || true)
  if [ "$current" != "$(readlink -f $blas)" ]; then
    as_root update-alternatives --set libblas.so.3-x86_64-linux-gnu "$blas" || true
  fi
fi

# playwright-core for the browser test, at the version package-lock.json pins (it drives Debian's
# chromium; no browser is downloaded). npm comes from Debian when the machine has no Node.js.
if ! command -v npm >/dev/null && [ "${STREAMGEN_SKIP_APT:-0}" != 1 ]; then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
fi
if command -v npm >/dev/null && [ ! -d tests/e2e/node_modules/playwright-core ]; then
  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error) || echo "setup: npm ci failed; the browser test will report itself skipped"
fi

generator=()
if command -v ninja >/dev/null && [ ! -f build/CMakeCache.txt ]; then generator=(-G Ninja); fi
# shellcheck disable=SC2086
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${STREAMGEN_CMAKE_ARGS:-}
cmake --build build -j "$(nproc)"
echo "setup: built build/bin/streamgen"
