#pragma once
// AutoencoderKL as in diffusers (the SD1.x / SD2.x VAE): Encoder -> quant_conv -> diagonal
// Gaussian (mean, logvar clamped to [-30, 20]); post_quant_conv -> Decoder.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "streamgen/device.h"
#include "streamgen/diffusers_blocks.h"
#include "streamgen/autoencoder_kl_config.h"

namespace streamgen {

// UNetMidBlock2D without time embedding: resnet, spatial attention (one head), resnet.
struct VaeMidBlockImpl : torch::nn::Module {
  VaeMidBlockImpl(std::int64_t channels, std::int64_t groups, bool attention);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(VaeMidBlock);

struct VaeEncoderImpl : torch::nn::Module {
  explicit VaeEncoderImpl(const AutoencoderKLConfig& c);
  // x [N, 3, H, W] in [-1, 1] -> moments before quant_conv [N, 2*latent, H/f, W/f]
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  VaeMidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VaeEncoder);

struct VaeDecoderImpl : torch::nn::Module {
  explicit VaeDecoderImpl(const AutoencoderKLConfig& c);
  // z [N, latent, h, w] (after post_quant_conv) -> [N, 3, h*f, w*f]
  torch::Tensor forward(const torch::Tensor& z);
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  VaeMidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VaeDecoder);

struct LatentDistribution {
  torch::Tensor mean, logvar, std;  // unscaled latents
  torch::Tensor sample(const torch::Tensor& noise) const { return mean + std * noise; }
};

struct AutoencoderKLImpl : torch::nn::Module {
  explicit AutoencoderKLImpl(const AutoencoderKLConfig& c);
  LatentDistribution encode(const torch::Tensor& x);
  // Unscaled latents -> image in [-1, 1] (not clamped).
  torch::Tensor decode(const torch::Tensor& z);
  torch::ScalarType conv_in_dtype() const;  // the dtype the weights compute in
  AutoencoderKLConfig config;
  torch::ScalarType io_dtype = torch::kFloat32;  // dtype of encode/decode results
  VaeEncoder encoder{nullptr};
  VaeDecoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};
TORCH_MODULE(AutoencoderKL);

// With config.force_upcast and a reduced-precision request, weights stay fp32 and only the
// results take compute.dtype.
struct ComponentSource;
AutoencoderKL load_autoencoder_kl(const ComponentSource& source, const ComputeOptions& compute = {});
AutoencoderKL load_autoencoder_kl(const std::filesystem::path& dir, const ComputeOptions& compute = {});

}  // namespace streamgen
