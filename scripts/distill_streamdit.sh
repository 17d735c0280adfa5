#!/usr/bin/env bash
# Distils a shipped StreamDiT teacher into its shipped student exactly as the student's model card
# records, then evaluates it. Resumable: run it again after an interruption and it continues from the
# last checkpoint.
#   scripts/distill_streamdit.sh [OUT_DIR] [extra dit-distill flags]
#       models/streamdit-shapes-32 -> runs/streamdit-shapes-32-student (about 12 minutes on 2 cores;
#       the card's other students: -g 3 (CFG folded in), and -g 3 --progressive --steps 300)
#   scripts/distill_streamdit.sh --latent [OUT_DIR] [extra dit-distill flags]
#       models/streamdit-latent-64 -> runs/streamdit-latent-64-student (about 37 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--latent" ]; then
  shift
  teacher=models/streamdit-latent-64
  OUT="${1:-runs/streamdit-latent-64-student}"
  # The teacher's 2 micro steps with CFG 3 that leaves each frame's mean to the conditional pass;
  # EMA 0.998 so that the student's weights leave the teacher's start within the run; its stream
  # starts with 16 passes instead of 8, guided (CFG 3, mean kept) as the teacher was (sampler.json; the card has why).
  recipe=(--teacher-steps 2 -g 3 --guidance-keep-mean --steps 1500 --lr 2e-4 --ema 0.998 --student-init-steps 16 --student-init-guidance 3)
  streams=32
else
  teacher=models/streamdit-shapes-32
  OUT="${1:-runs/streamdit-shapes-32-student}"
  recipe=(--teacher-steps 4 -g 1 --steps 600 --lr 2e-4 --eval-batches 4)
  streams=16
fi
shift || true
BIN=build/bin/streamgen
[ -x "$BIN" ] || scripts/setup.sh

resume=()
[ -f "$OUT/training/state.json" ] && resume=(--resume)
"$BIN" dit distill --teacher "$teacher" --out "$OUT" "${resume[@]}" "${recipe[@]}" --bf16-autocast "$@"

"$BIN" dit eval --model "$OUT" --batches 0 --streams "$streams" --stream-frames 64 -c 2 -s 1 -g 1 --dtype bf16
