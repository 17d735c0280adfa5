#!/usr/bin/env bash
# The one command that sets streamgen up from a fresh clone and runs the whole test suite.
# Extra arguments go to ctest (e.g. -R UNet). It ends with how long the set-up and build and the tests
# took, then ctest's own summary again, so that its closing line is the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh
built=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
(cd build && ctest --output-on-failure -j "$(nproc)" "$@") 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
done_at=$(date +%s)
minutes() { printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); }
echo
echo "test.sh: set-up and build $(minutes $((built - start))), tests $(minutes $((done_at - built))), $(nproc) cores"
grep -E '^[0-9]+% tests passed|^Total Test time' "$log" || true
exit "$status"
