#!/usr/bin/env bash
# Sets up and builds streamgen, then streams text-to-video from the shipped StreamDiT student (one
# model pass per 2-frame chunk) into a video file with a prompt change in it (the headless StreamDiT demo).
#   scripts/dit_demo.sh [OUT.mp4]      default: dit-demo.mp4
#   STREAMGEN_DIT_MODEL=DIR            another StreamDiT folder
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-dit-demo.mp4}"
MODEL="${STREAMGEN_DIT_MODEL:-models/streamdit-shapes-32-student}"
scripts/setup.sh
build/bin/streamgen dit stream --model "$MODEL" -p "red circle moving right" --prompt-at 64:"blue square moving up" \
  -n 160 -c 2 -s 1 -g 1 --dtype bf16 --output-size 256x256 --fps 16 -o "$OUT"
echo "wrote $OUT (160 frames; the prompt changes to 'blue square moving up' from frame 64)"
