#!/usr/bin/env bash
# The StreamDiT paper's ablation on our data: the same model and budget trained with mixed chunk
# sizes c in {1, 2, 4, 8, 16} (30 % on c = 16) against c = 1 only, both streamed with c = 1
# (s = 2, so 32 Euler steps per frame as in the shipped c = 2, s = 4 setting), then the held-out
# loss per c and tau of both. Resumable: run it again and each arm continues from its checkpoint.
#   scripts/ablation_streamdit.sh [OUT_DIR] [STEPS]      default: runs/ablation 2000
# The two arms train side by side (one thread each): about 45 minutes for 2,000 steps on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/ablation}"
STEPS="${2:-2000}"
BIN=build/bin/streamgen
[ -x "$BIN" ] || scripts/setup.sh

train_arm() {  # name, extra flags
  local dir="$OUT/$1" resume=()
  shift
  [ -f "$dir/training/state.json" ] && resume=(--resume)
  "$BIN" -q dit train --out "$dir" "${resume[@]}" --window 8 8 8 --steps "$STEPS" --batch 8 --lr 3e-4 --warmup 100 --seed 0 \
    --checkpoint-every 250 --threads 1 --bf16-autocast "$@"
}
train_arm mixed &
train_arm c1 --chunk-sizes 1 &
wait

for arm in mixed c1; do
  echo "== $arm (trained on $( [ $arm = mixed ] && echo 'c in 1,2,4,8,16' || echo 'c = 1 only'), streamed with c = 1) =="
  "$BIN" dit eval --model "$OUT/$arm" --batches 16 --streams 16 --stream-frames 64 -c 1 -s 2 -g 1 --dtype bf16
done
