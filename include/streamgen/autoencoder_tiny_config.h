#pragma once
// AutoencoderTinyConfig: the config.json fields autoencoder_tiny.h builds from, read and checked without LibTorch
// (so that the config fuzzer builds it alone). Errors name the file and the field.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

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

}  // namespace streamgen
