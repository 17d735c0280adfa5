#pragma once
// One-shot text-to-image with LCM-style few-step sampling (SD-Turbo, LCM-distilled SD1.5): the
// first user-visible result, and the non-streaming baseline the stream is measured against.
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "streamgen/device.h"
#include "streamgen/lora.h"

namespace streamgen {

struct Txt2ImgOptions {
  std::filesystem::path model;                // diffusers pipeline folder
  std::optional<std::filesystem::path> taesd;  // decode with TAESD instead of the VAE
  std::string prompt;
  std::vector<LoraSpec> loras;                 // fused into the UNet and text encoder at load
  std::int64_t steps = 1;
  std::uint64_t seed = 0;
  std::int64_t width = 512;
  std::int64_t height = 512;
  ComputeOptions compute;
};

struct Txt2ImgResult {
  torch::Tensor image_u8;                         // [1, 3, H, W]
  std::map<std::string, std::string> parameters;  // what produced it (goes into the PNG)
  double text_ms = 0, denoise_ms = 0, decode_ms = 0;
};

Txt2ImgResult txt2img(const Txt2ImgOptions& options);

}  // namespace streamgen
