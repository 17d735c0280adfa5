#pragma once
// One-shot text-to-image with few-step sampling: the sampler the model folder's scheduler names (Euler or Euler
// ancestral for SD-Turbo / SDXL-Turbo, LCM's for LCM models and any other scheduler): the first user-visible
// result, and the non-streaming baseline the stream is measured against. SD1.x, SD2.x and SDXL pipelines.
#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "streamgen/device.h"
#include "streamgen/lora.h"
#include "streamgen/unet_2d_condition.h"

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

// The denoising loop txt2img runs, from unit-variance noise x_T [N, C, h, w] (float32, CPU) under `cond` (rows
// matching x_T's): with the scheduler config in `scheduler_dir`. `gen` draws the fresh noise later steps need
// (LCM's re-noising, ancestral steps). What `tensors run --component txt2img` checks.
struct Txt2ImgSample {
  torch::Tensor latents;          // float32 [N, C, h, w] on the CPU
  std::vector<float> timesteps;   // the UNet's timesteps, in order
  std::string sampler;            // "LCM", "Euler", "Euler ancestral"
};
Txt2ImgSample sample_latents(UNet2DConditionModelImpl& unet, const UNetConditioning& cond, const torch::Tensor& x_T,
                             const std::filesystem::path& scheduler_dir, std::int64_t steps, at::Generator& gen, const ComputeOptions& compute);

}  // namespace streamgen
