#!/usr/bin/env bash
# Runs browser.mjs, or exits 77 (CTest: skipped) naming what is missing.
#   run.sh NODE sd|dit STREAMGEN MODEL TAESD|- SCREENSHOT
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
node=$1
shift
if [ -z "$node" ] || [ "$node" = "STREAMGEN_NODE-NOTFOUND" ] || ! command -v "$node" >/dev/null; then
  echo "e2e.browser skipped: node is not installed (scripts/setup.sh installs it)"; exit 77
fi
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "e2e.browser skipped: chromium is not installed (scripts/setup.sh installs it)"; exit 77
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
  echo "e2e.browser skipped: playwright-core is not in tests/e2e/node_modules (scripts/setup.sh runs npm ci there)"; exit 77
fi
exec "$node" "$here/browser.mjs" "$@"
