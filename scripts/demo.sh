#!/usr/bin/env bash
# The main job: sets up, builds, and serves the live page on http://127.0.0.1:8080/ with the
# StreamDiT model shipped in models/ (text-to-video; type a caption and the video follows it).
# Ctrl-C stops the server.
#   scripts/demo.sh                 the live page (StreamDiT on our temporal autoencoder, models/streamdit-latent-64-student)
#   scripts/demo.sh --headless      no browser: writes dit-demo.mp4, a stream with a prompt change in it
# A Stable Diffusion pipeline instead (camera / video img2img through TAESD):
#   STREAMGEN_MODEL=/models/sd-turbo STREAMGEN_TAESD=/models/taesd STREAMGEN_SIZE=512 scripts/demo.sh
#   (STREAMGEN_MODEL=tests/data/tiny-sd21 STREAMGEN_TAESD=tests/data/taesd is the embedded random-weight test pipeline)
# Other settings: STREAMGEN_PORT (8080), STREAMGEN_DEVICE (cpu | cuda), STREAMGEN_DTYPE (auto: the faster for the model here | fp32 | bf16 | fp16).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--headless" ]; then
  exec scripts/dit_demo.sh
fi
scripts/setup.sh
model=${STREAMGEN_MODEL:-models/streamdit-latent-64-student}
common=(--port "${STREAMGEN_PORT:-8080}" --device "${STREAMGEN_DEVICE:-cpu}")
if [ -f "$model/config.json" ] && grep -q '"StreamDiT"' "$model/config.json"; then
  echo "demo: live text-to-video from $model; open the URL below and type a caption (scripts/demo.sh --headless writes a video instead)" >&2
  exec build/bin/streamgen serve --model "$model" "${common[@]}" --dtype "${STREAMGEN_DTYPE:-auto}" -W "${STREAMGEN_SIZE:-256}" -H "${STREAMGEN_SIZE:-256}"
fi
size=${STREAMGEN_SIZE:-256}
exec build/bin/streamgen serve --model "$model" --taesd "${STREAMGEN_TAESD:?set STREAMGEN_TAESD to the TAESD folder of this pipeline}" \
  "${common[@]}" --dtype "${STREAMGEN_DTYPE:-auto}" -W "$size" -H "$size"
