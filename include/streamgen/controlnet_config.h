#pragma once
// ControlNetModel's config.json (diffusers): the UNet encoder's fields (read by UNet2DConditionConfig's
// reader, which also checks them) plus the conditioning embedding's. Torch-free, like the other config readers.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "streamgen/unet_2d_condition_config.h"

namespace streamgen {

struct ControlNetConfig {
  UNet2DConditionConfig unet;  // conv_in, time embedding, down blocks and mid block, as the UNet it was made from
  std::vector<std::int64_t> conditioning_embedding_out_channels{16, 32, 96, 256};
  std::int64_t conditioning_channels = 3;
  bool bgr = false;  // controlnet_conditioning_channel_order "bgr": the control image's channels are flipped first

  static ControlNetConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  // The conditioning embedding halves the control image's size once per step between its widths.
  std::int64_t downsample_factor() const { return std::int64_t{1} << (conditioning_embedding_out_channels.size() - 1); }
};

}  // namespace streamgen
