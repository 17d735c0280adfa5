#pragma once
// Replays a stream case file (the format of the golden set's stream/ folder: configuration JSON in
// __metadata__.config, stored noises, embeddings and SSF draws) through our stream, call by call.
// This is the parity hook for the stream, and lets users reproduce a stream exactly.
#include <filesystem>
#include <optional>

#include "streamgen/component_run.h"
#include "streamgen/lora.h"

namespace streamgen {

struct StreamReplayOptions {
  std::filesystem::path case_file;
  std::filesystem::path model;  // diffusers pipeline folder (the case's UNet)
  std::filesystem::path taesd;  // encoder/decoder of the case (TAESD)
  std::optional<std::filesystem::path> frames;  // default: the case's frames_file beside the case
  bool decode = false;                          // also return out_images
  std::vector<LoraSpec> loras;                  // fused into the UNet (the case holds its own embeddings)
  ComputeOptions compute;
};

// out_latents [calls, F, C, h, w] squeezed to [calls, C, h, w] for F = 1, x0_batch [calls, n*F, ...],
// stock_after (self / initialize), ssf_processed (SSF cases), out_images (decode).
TensorMap replay_stream_case(const StreamReplayOptions& options);

}  // namespace streamgen
