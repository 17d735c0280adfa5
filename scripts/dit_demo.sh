#!/usr/bin/env bash
# Sets up and builds streamgen, then streams text-to-video from the shipped latent StreamDiT student (its
# sampler.json: 1 pass per 8 RGB frames) into a video file with a prompt change in it (the headless demo).
#   scripts/dit_demo.sh [OUT.mp4]      default: dit-demo.mp4
#   STREAMGEN_DIT_MODEL=DIR            another StreamDiT folder
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-dit-demo.mp4}"
MODEL="${STREAMGEN_DIT_MODEL:-models/streamdit-latent-64-student}"
scripts/setup.sh
build/bin/streamgen dit stream --model "$MODEL" -p "red circle moving right" --prompt-at 64:"blue square moving up" \
  -n 256 --dtype auto --output-size 256x256 --fps 24 -o "$OUT"
echo "wrote $OUT (256 frames; the prompt changes to 'blue square moving up' from frame 64)"
