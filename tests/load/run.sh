#!/usr/bin/env bash
# The load and abuse suite against the real server on loopback.
#   tests/load/run.sh [short|long] [BUILD_DIR]
# short (about a minute, run by ctest): 4 clients over --max-sessions 2, idle and slow clients,
# bombs, malformed messages, 200 silent connections and 500 connects, text-to-video prompt changes.
# long (about five minutes, by hand): 8 clients over 4 for two minutes, 400 silent connections, ...
set -euo pipefail
profile=${1:-short}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${2:-$root/build}" && pwd)
logs="$build/load-logs"
mkdir -p "$logs"
exec "$build/bin/streamgen_load" --profile "$profile" --cli "$build/bin/streamgen" \
  --model "$root/tests/data/tiny-sd21" --taesd "$root/tests/data/taesd" \
  --dit-model "$root/models/streamdit-shapes-32-student" --logs "$logs"
