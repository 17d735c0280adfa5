#!/usr/bin/env bash
# The main job: sets up, builds, and serves the live stream page on http://127.0.0.1:8080/ (open it,
# press "Start camera" or pick a video file; Ctrl-C stops the server).
#
# The model embedded in the repository is the tiny SD2.1/SD-Turbo-shaped pipeline from tests/data
# with random UNet and text-encoder weights and the real TAESD: every stage of the stream runs for
# real and fast on a CPU, but its pictures are abstract colour fields, not images of the prompt. For
# real pictures point it at an SD-Turbo (or SD1.5 + LCM) diffusers folder and a TAESD folder:
#   STREAMGEN_MODEL=/models/sd-turbo STREAMGEN_TAESD=/models/taesd STREAMGEN_SIZE=512 scripts/demo.sh
# (a trained model of our own arrives with the StreamDiT work.)
# Other settings: STREAMGEN_PORT (8080), STREAMGEN_DEVICE (cpu | cuda), STREAMGEN_DTYPE (fp32 | bf16 | fp16).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
model=${STREAMGEN_MODEL:-tests/data/tiny-sd21}
taesd=${STREAMGEN_TAESD:-tests/data/taesd}
size=${STREAMGEN_SIZE:-256}
if [ -z "${STREAMGEN_MODEL:-}" ]; then
  echo "demo: serving the embedded tiny test pipeline (random weights: abstract colours, real stream). See scripts/demo.sh for a real model." >&2
fi
exec build/bin/streamgen serve --model "$model" --taesd "$taesd" --port "${STREAMGEN_PORT:-8080}" -W "$size" -H "$size" \
  --device "${STREAMGEN_DEVICE:-cpu}" --dtype "${STREAMGEN_DTYPE:-fp32}"
