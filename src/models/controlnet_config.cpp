#include "streamgen/controlnet_config.h"

#include "streamgen/config_json.h"
#include "streamgen/error.h"

namespace streamgen {

ControlNetConfig ControlNetConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw FormatError(source + ": expected a JSON object");
  // A ControlNet has the UNet's encoder and no decoder: its config names no up blocks. The UNet reader checks
  // the rest; the up blocks it wants are the mirror of the down blocks, which a ControlNet never builds.
  auto as_unet = j;
  std::vector<std::string> up;
  for (const auto& t : config_value(j, "down_block_types", UNet2DConditionConfig{}.down_block_types, source))
    up.insert(up.begin(), t == "CrossAttnDownBlock2D" ? "CrossAttnUpBlock2D" : "UpBlock2D");
  as_unet["up_block_types"] = up;
  ControlNetConfig c;
  c.unet = UNet2DConditionConfig::from_json(as_unet, source);
  c.conditioning_embedding_out_channels = config_value(j, "conditioning_embedding_out_channels", c.conditioning_embedding_out_channels, source);
  c.conditioning_channels = config_value(j, "conditioning_channels", c.conditioning_channels, source);
  const auto order = config_value<std::string>(j, "controlnet_conditioning_channel_order", "rgb", source);
  if (order != "rgb" && order != "bgr")
    throw Error(source + ": controlnet_conditioning_channel_order '" + order + "' must be rgb or bgr");
  c.bgr = order == "bgr";
  if (config_value(j, "global_pool_conditions", false, source))
    throw Error(source + ": global_pool_conditions = true (the shuffle ControlNets' pooled residuals) is not supported yet");
  if (c.conditioning_embedding_out_channels.empty() || c.conditioning_embedding_out_channels.size() > 8)
    throw Error(source + ": conditioning_embedding_out_channels must hold 1 to 8 widths");
  config_check_range(c.conditioning_embedding_out_channels, 1, 16384, "conditioning_embedding_out_channels", source);
  config_check_range(c.conditioning_channels, 1, 16, "conditioning_channels", source);
  return c;
}

}  // namespace streamgen
