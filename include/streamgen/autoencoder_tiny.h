#pragma once
// AutoencoderTiny (TAESD) as in diffusers: encoder.layers.N / decoder.layers.N. Also loads the
// original madebyollin files (<name>_encoder.safetensors / <name>_decoder.safetensors, keys N.*),
// where decoder index 0 is the parameter-free clamp, so decoder key N maps to layers.(N-1).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "streamgen/device.h"

namespace streamgen {

struct AutoencoderTinyConfig {
  std::int64_t in_channels = 3;
  std::int64_t out_channels = 3;
  std::int64_t latent_channels = 4;  // 4 for SD/SDXL, 16 for SD3 / FLUX.1 variants
  std::vector<std::int64_t> encoder_block_out_channels{64, 64, 64, 64};
  std::vector<std::int64_t> decoder_block_out_channels{64, 64, 64, 64};
  std::vector<std::int64_t> num_encoder_blocks{1, 3, 3, 3};
  std::vector<std::int64_t> num_decoder_blocks{3, 3, 3, 1};
  std::int64_t upsampling_scaling_factor = 2;
  double scaling_factor = 1.0;

  static AutoencoderTinyConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  // Spatial factor between image and latent: 2^(number of encoder stages - 1).
  std::int64_t downsample_factor() const { return std::int64_t{1} << (num_encoder_blocks.size() - 1); }
};

struct AutoencoderTinyBlockImpl : torch::nn::Module {
  AutoencoderTinyBlockImpl(std::int64_t in, std::int64_t out);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Sequential conv{nullptr};
  torch::nn::Conv2d skip{nullptr};  // only when in != out
};
TORCH_MODULE(AutoencoderTinyBlock);

struct EncoderTinyImpl : torch::nn::Module {
  explicit EncoderTinyImpl(const AutoencoderTinyConfig& c);
  // x [N, 3, H, W] in [-1, 1] -> latents [N, C, H/8, W/8]
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(EncoderTiny);

struct DecoderTinyImpl : torch::nn::Module {
  explicit DecoderTinyImpl(const AutoencoderTinyConfig& c);
  // z [N, C, h, w] -> image [N, 3, 8h, 8w] in about [-1, 1] (not clamped)
  torch::Tensor forward(const torch::Tensor& z);
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(DecoderTiny);

struct AutoencoderTinyImpl : torch::nn::Module {
  explicit AutoencoderTinyImpl(const AutoencoderTinyConfig& c);
  torch::Tensor encode(const torch::Tensor& x) { return encoder(x); }
  torch::Tensor decode(const torch::Tensor& z) { return decoder(z); }
  AutoencoderTinyConfig config;
  EncoderTiny encoder{nullptr};
  DecoderTiny decoder{nullptr};
};
TORCH_MODULE(AutoencoderTiny);

// A diffusers folder (config.json + weights), or a folder / either file of the original
// <name>_encoder.safetensors + <name>_decoder.safetensors pair (config inferred from shapes).
AutoencoderTiny load_autoencoder_tiny(const std::filesystem::path& path, const ComputeOptions& compute = {});

}  // namespace streamgen
