#!/usr/bin/env bash
# Distils the shipped StreamDiT teacher (models/streamdit-shapes-32) into the shipped one-step
# student (models/streamdit-shapes-32-student) exactly as its model card records, then evaluates
# it. Resumable: run it again after an interruption and it continues from the last checkpoint.
#   scripts/distill_streamdit.sh [OUT_DIR] [extra dit-distill flags]   default: runs/streamdit-shapes-32-student
# About 12 minutes on 2 cores. The card's other students: -g 3 (CFG folded in), and -g 3 --progressive --steps 300.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/streamdit-shapes-32-student}"
shift || true
BIN=build/bin/streamgen
[ -x "$BIN" ] || scripts/setup.sh

resume=()
[ -f "$OUT/training/state.json" ] && resume=(--resume)
"$BIN" dit distill --teacher models/streamdit-shapes-32 --out "$OUT" "${resume[@]}" --teacher-steps 4 -g 1 --steps 600 --lr 2e-4 \
  --bf16-autocast --eval-batches 4 "$@"

"$BIN" dit eval --model "$OUT" --batches 0 --streams 16 --stream-frames 64 -c 2 -s 1 -g 1 --dtype bf16
