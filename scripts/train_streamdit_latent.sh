#!/usr/bin/env bash
# Trains the shipped latent StreamDiT (models/streamdit-latent-64) from scratch exactly as its model
# card records: the temporal autoencoder first (scripts/train_tae.sh), then the DiT on its latents,
# then both fine-tuned on shapes that wrap round the frame edges, then the DiT given its anchor frame
# (the shipped weights), then the autoencoder's decoder taught to hide its seams, then the evaluation. Resumable: run it again after an interruption and it continues.
#   scripts/train_streamdit_latent.sh [OUT_DIR]   default: runs/streamdit-latent-64 (autoencoders in runs/tae-shapes-64[-wrap]);
#                                                 the shipped weights end up in OUT_DIR-anchor
# About 46 minutes (autoencoder) + 35 + 72 minutes (DiT, two stages) on bouncing shapes, then 9 + 57 + 47
# minutes (autoencoder, DiT in two stages) on wrapping shapes, then 35 + 60 minutes (anchor, two stages), then 7
# minutes (decoder), on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/streamdit-latent-64}"
TAE=runs/tae-shapes-64
BIN=build/bin/streamgen
[ -x "$BIN" ] || scripts/setup.sh

scripts/train_tae.sh "$TAE"
# Two stages, as the model was made: 3,000 steps of one cosine schedule, then resumed with --steps 8000
# (the schedule restarts warm from lr 2.2e-4 and decays to 3e-5 at step 8,000).
step=0
[ -f "$OUT/training/state.json" ] && step=$(grep -o '"step": *[0-9]*' "$OUT/training/state.json" | grep -o '[0-9]*$')
common=(--size 64 --frames 16 --patch 1 --window 8 8 8 --batch 8 --lr 3e-4 --warmup 100 --seed 0 --checkpoint-every 250 --bf16-autocast)
if [ "$step" -lt 3000 ]; then
  resume=()
  [ "$step" -gt 0 ] && resume=(--resume)
  "$BIN" dit train --autoencoder "$TAE" --out "$OUT" "${resume[@]}" --steps 3000 "${common[@]}"
fi
"$BIN" dit train --autoencoder "$TAE" --out "$OUT" --resume --steps 8000 "${common[@]}"
# The wrap world: the autoencoder, then the DiT, each fine-tuned from the bounce weights (--init; with
# --resume the same command continues an interrupted run).
TAE_WRAP=runs/tae-shapes-64-wrap
"$BIN" tae train --init "$TAE" --out "$TAE_WRAP" --resume --edges wrap --size 64 --frames 16 --bf16-autocast --seed 1 --batch 8 \
    --lr 3e-4 --warmup 50 --ema 0.995 --checkpoint-every 250 --steps 1000 --eval-clips 16 \
    --l1-weight 1 --mse-weight 1 --gradient-weight 0.5 --temporal-weight 0.5 --latent-noise 0
wrap_step=0
[ -f "$OUT-wrap/training/state.json" ] && wrap_step=$(grep -o '"step": *[0-9]*' "$OUT-wrap/training/state.json" | grep -o '[0-9]*$')
wrap_common=(--autoencoder "$TAE_WRAP" --edges wrap --out "$OUT-wrap" --resume --batch 8 --lr 2e-4 --warmup 100 --seed 2
             --checkpoint-every 250 --bf16-autocast)
if [ "$wrap_step" -lt 5000 ]; then
  "$BIN" dit train --init "$OUT" "${wrap_common[@]}" --steps 5000
fi
# Then trained on under a 9,000-step schedule (restarting warm at lr 9.6e-5), stopped at step 8,000.
"$BIN" dit train "${wrap_common[@]}" --steps 9000 --stop-at 8000
# The anchor frame: 2,500 steps from the wrap weights, then resumed under a 7,000-step schedule (warm restart at
# lr 1.5e-4, decaying to 2e-5): the shipped weights since 2026-11-28.
anchor_step=0
[ -f "$OUT-anchor/training/state.json" ] && anchor_step=$(grep -o '"step": *[0-9]*' "$OUT-anchor/training/state.json" | grep -o '[0-9]*$')
anchor_common=(--batch 8 --lr 2e-4 --warmup 100 --seed 3 --checkpoint-every 250 --bf16-autocast)
if [ "$anchor_step" -lt 2500 ]; then
  "$BIN" dit train --init "$OUT-wrap" --anchor --out "$OUT-anchor" --resume --steps 2500 "${anchor_common[@]}"
fi
"$BIN" dit train --out "$OUT-anchor" --resume --steps 7000 "${anchor_common[@]}"
# The decoder alone, taught to hide the jump between latent frames' groups of 4 RGB frames (seam term, and
# latent noise standing in for a DiT's small errors); the encoder and the latent scale stay, so the DiT's
# latents stay valid. It replaces the anchored model's autoencoder weights (shipped since 2026-11-28, later).
TAE_SEAMS=runs/tae-shapes-64-seams
"$BIN" tae train --init "$TAE_WRAP" --decoder-only --out "$TAE_SEAMS" --resume --edges wrap --size 64 --frames 16 --bf16-autocast \
    --seed 1 --batch 8 --lr 1e-4 --warmup 50 --ema 0.995 --checkpoint-every 250 --steps 1500 --eval-clips 16 \
    --l1-weight 1 --mse-weight 1 --gradient-weight 0.5 --temporal-weight 0.5 --seam-weight 8 --latent-noise 0.15
cp "$TAE_SEAMS/model.safetensors" "$TAE_SEAMS/config.json" "$OUT-anchor/autoencoder/"
cp models/streamdit-latent-64/sampler.json "$OUT-anchor/"
"$BIN" dit eval --model "$OUT-anchor" --batches 16 --streams 16 --stream-frames 64 -c 2 -s 2 --dtype bf16
