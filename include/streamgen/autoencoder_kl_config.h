#pragma once
// AutoencoderKLConfig: the config.json fields autoencoder_kl.h builds from, read and checked without LibTorch
// (so that the config fuzzer builds it alone). Errors name the file and the field.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace streamgen {

struct AutoencoderKLConfig {
  std::int64_t in_channels = 3;
  std::int64_t out_channels = 3;
  std::int64_t latent_channels = 4;
  std::vector<std::int64_t> block_out_channels{128, 256, 512, 512};
  std::int64_t layers_per_block = 2;
  std::int64_t norm_num_groups = 32;
  double scaling_factor = 0.18215;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;
  // diffusers pipelines run such a VAE in fp32 even when the rest is fp16/bf16 (upcast_vae); we do
  // the same for bf16 and fp16 requests: compute in fp32, inputs and outputs in the requested dtype.
  bool force_upcast = true;

  static AutoencoderKLConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  // 2^(len(block_out_channels) - 1): 8 for SD, 2 for the tiny test VAE.
  std::int64_t downsample_factor() const { return std::int64_t{1} << (block_out_channels.size() - 1); }
};

}  // namespace streamgen
