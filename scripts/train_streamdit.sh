#!/usr/bin/env bash
# Trains the shipped StreamDiT teacher (models/streamdit-shapes-32) from scratch on procedural
# shape videos, exactly as its model card records, then evaluates it. Resumable: run it again
# after an interruption and it continues from the last checkpoint.
#   scripts/train_streamdit.sh [OUT_DIR]       default: runs/streamdit-shapes-32
# About 60-90 minutes on 2 cores (two data-parallel processes of one thread each); add
# --bf16-autocast to the train line for ~2.2x faster steps (the shipped model was trained without it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/streamdit-shapes-32}"
BIN=build/bin/streamgen
[ -x "$BIN" ] || scripts/setup.sh

resume=()
[ -f "$OUT/training/state.json" ] && resume=(--resume)
"$BIN" dit train --out "$OUT" "${resume[@]}" --window 8 8 8 --steps 4000 --batch 8 --lr 3e-4 --warmup 100 --seed 0 \
  --checkpoint-every 250 --nproc 2 --threads 1 --master-port "${STREAMGEN_MASTER_PORT:-29730}"

"$BIN" dit eval --model "$OUT" --batches 16 --streams 16 --stream-frames 64 -c 2 -s 4 -g 3 --dtype bf16
