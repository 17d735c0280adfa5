#!/usr/bin/env bash
# Trains the shipped latent StreamDiT (models/streamdit-latent-64) from scratch exactly as its model
# card records: the temporal autoencoder first (scripts/train_tae.sh), then the DiT on its latents,
# then the evaluation. Resumable: run it again after an interruption and it continues.
#   scripts/train_streamdit_latent.sh [OUT_DIR]   default: runs/streamdit-latent-64 (autoencoder in runs/tae-shapes-64)
# About 46 + 35 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/streamdit-latent-64}"
TAE=runs/tae-shapes-64
BIN=build/bin/streamgen
[ -x "$BIN" ] || scripts/setup.sh

scripts/train_tae.sh "$TAE"
resume=()
[ -f "$OUT/training/state.json" ] && resume=(--resume)
"$BIN" dit train --autoencoder "$TAE" --out "$OUT" "${resume[@]}" --size 64 --frames 16 --patch 1 --window 8 8 8 --steps 3000 --batch 8 \
  --lr 3e-4 --warmup 100 --seed 0 --checkpoint-every 250 --bf16-autocast
cp models/streamdit-latent-64/sampler.json "$OUT/"
"$BIN" dit eval --model "$OUT" --batches 0 --streams 16 --stream-frames 64 -c 2 -s 2 --dtype bf16
