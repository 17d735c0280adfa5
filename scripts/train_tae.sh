#!/usr/bin/env bash
# Trains the temporal autoencoder of the latent StreamDiT (runs/tae-shapes-64) on 64x64 procedural
# shape clips, exactly as it was first made: three legs of one run, each resuming the last, because
# the recipe changed twice while it trained (see the model card: latent noise blurred colours away,
# then squared error was added to get the colours right). Resumable: run it again after an
# interruption and it continues from the last checkpoint. About 30 minutes on 2 cores.
#   scripts/train_tae.sh [OUT_DIR]       default: runs/tae-shapes-64
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/tae-shapes-64}"
BIN=build/bin/streamgen
[ -x "$BIN" ] || scripts/setup.sh

step() { [ -f "$OUT/training/state.json" ] && sed -n 's/.*"step": *\([0-9]*\).*/\1/p' "$OUT/training/state.json" || echo 0; }
common=(--out "$OUT" --size 64 --frames 16 --bf16-autocast --seed 0 --batch 8 --lr 1e-3 --warmup 100 --ema 0.995 --checkpoint-every 250)
resume() { [ -f "$OUT/training/state.json" ] && echo --resume || true; }
# leg 1: steps 0-1250 of a 2,500-step schedule, L1 + gradient + frame-difference terms, latent noise 5 %
[ "$(step)" -lt 1250 ] && "$BIN" tae train "${common[@]}" $(resume) --steps 2500 --stop-at 1250 --eval-clips 0 \
  --l1-weight 1 --mse-weight 0 --gradient-weight 1 --temporal-weight 1 --latent-noise 0.05
# leg 2: to 2,500 without latent noise, lighter edge terms
[ "$(step)" -lt 2500 ] && "$BIN" tae train "${common[@]}" --resume --steps 2500 --eval-clips 0 \
  --l1-weight 1 --mse-weight 0 --gradient-weight 0.5 --temporal-weight 0.5 --latent-noise 0
# leg 3: to 4,500 with squared error added (the defaults now)
"$BIN" tae train "${common[@]}" --resume --steps 4500 --eval-clips 16 \
  --l1-weight 1 --mse-weight 1 --gradient-weight 0.5 --temporal-weight 0.5 --latent-noise 0
