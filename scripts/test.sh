#!/usr/bin/env bash
# The one command that sets streamgen up from a fresh clone and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build
ctest --output-on-failure -j "$(nproc)" "$@"
