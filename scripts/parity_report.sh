#!/usr/bin/env bash
# Prints the relative error ||ours-ref||/||ref|| of every SD component against the golden tensors,
# in fp32 and bf16, using only the CLI (tensors run + tensors diff).
#   scripts/parity_report.sh [GOLDEN_DIR]     (default: tests/data, the copies shipped with the repo)
set -euo pipefail
cd "$(dirname "$0")/.."
G=${1:-tests/data}
S=build/bin/streamgen
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
comp() { # model component golden_file prefix output_name
  local model=$1 component=$2 golden=$3 prefix=$4 out=$5
  for dtype in fp32 bf16; do
    $S -q tensors run --model "$model" --component "$component" --in "$golden" --prefix "$prefix" --out "$tmp/o.safetensors" --dtype "$dtype" >/dev/null
    # re-key our output to the golden name, then compare
    rel=$($S -q tensors diff "$tmp/o.safetensors" "$golden" --only "$prefix$out" --json --tol 1 | sed -n 's/.*"rel":\([^,}]*\).*/\1/p')
    printf '%-34s %-14s %-5s %s\n' "$(basename "$golden")" "$component:$prefix$out" "$dtype" "$rel"
  done
}
echo "golden file                        output                  dtype rel"
for v in tiny-sd15 tiny-sd21; do
  for c in case0. case1. case2.; do comp "$G/$v" unet "$G/${v}_unet.safetensors" "$c" out; done
  comp "$G/$v" text_encoder "$G/${v}_text_encoder.safetensors" "" last_hidden_state
  comp "$G/$v" text_encoder "$G/${v}_text_encoder.safetensors" "" pooler_output
  comp "$G/$v" vae_encode "$G/${v}_vae.safetensors" img64. latent_mean
done
for f in taesd_128 taesd_astronaut_256 taesd_chelsea_256x192; do
  comp "$G/taesd" taesd_encode "$G/$f.safetensors" "" latents
  comp "$G/taesd" taesd_decode "$G/$f.safetensors" "" decoded
done
