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
#include "streamgen/autoencoder_tiny_config.h"

namespace streamgen {

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

// prepare_for_inference with TAESD's own layout rule: in fp32 on a CPU its convolution kernels stay contiguous
// (NCHW), where LibTorch 1.13 runs these 64-channel full-resolution convolutions faster than channels-last
// (bench taesd, which prints both, 256²: encode 224 vs 262 ms, decode 287 vs 335; 512² decode 1057 vs 1287; AMD
// EPYC, AVX2, 2 cores); channels-last otherwise (on CPUs with native bf16 its convolutions run NHWC without
// reordering, ~3x faster; CUDA). Emulated bf16 (AVX2) is faster contiguous too (6.2 vs 20.3 s), but --dtype auto
// never picks it there.
void prepare_autoencoder_tiny(AutoencoderTinyImpl& model, torch::Device device, torch::ScalarType dtype);

// A diffusers folder (config.json + weights), or a folder / either file of the original
// <name>_encoder.safetensors + <name>_decoder.safetensors pair (config inferred from shapes).
AutoencoderTiny load_autoencoder_tiny(const std::filesystem::path& path, const ComputeOptions& compute = {});

}  // namespace streamgen
