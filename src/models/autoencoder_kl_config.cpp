#include "streamgen/autoencoder_kl_config.h"

#include "streamgen/config_json.h"
#include "streamgen/error.h"

namespace streamgen {

AutoencoderKLConfig AutoencoderKLConfig::from_json(const nlohmann::json& j, const std::string& source) {
  AutoencoderKLConfig c;
  c.in_channels = config_value(j, "in_channels", c.in_channels, source);
  c.out_channels = config_value(j, "out_channels", c.out_channels, source);
  c.latent_channels = config_value(j, "latent_channels", c.latent_channels, source);
  c.block_out_channels = config_value(j, "block_out_channels", c.block_out_channels, source);
  c.layers_per_block = config_value(j, "layers_per_block", c.layers_per_block, source);
  c.norm_num_groups = config_value(j, "norm_num_groups", c.norm_num_groups, source);
  c.scaling_factor = config_value(j, "scaling_factor", c.scaling_factor, source);
  c.use_quant_conv = config_value(j, "use_quant_conv", c.use_quant_conv, source);
  c.use_post_quant_conv = config_value(j, "use_post_quant_conv", c.use_post_quant_conv, source);
  c.mid_block_add_attention = config_value(j, "mid_block_add_attention", c.mid_block_add_attention, source);
  c.force_upcast = config_value(j, "force_upcast", c.force_upcast, source);
  if (c.block_out_channels.empty()) throw Error(source + ": block_out_channels is empty");
  config_check_range(c.in_channels, 1, 1024, "in_channels", source);
  config_check_range(c.out_channels, 1, 1024, "out_channels", source);
  config_check_range(c.latent_channels, 1, 1024, "latent_channels", source);
  config_check_range(static_cast<std::int64_t>(c.block_out_channels.size()), 1, 8, "block_out_channels (count)", source);
  config_check_range(c.block_out_channels, 1, 16384, "block_out_channels", source);
  config_check_range(c.layers_per_block, 1, 16, "layers_per_block", source);
  config_check_groups(c.block_out_channels, c.norm_num_groups, source);
  config_check_positive(c.scaling_factor, "scaling_factor", source);
  for (const char* key : {"down_block_types", "up_block_types"}) {
    const auto types = config_value<std::vector<std::string>>(j, key, {}, source);
    for (const auto& t : types)
      if (t != "DownEncoderBlock2D" && t != "UpDecoderBlock2D")
        throw Error(source + ": unsupported VAE block type '" + t + "' (supported: DownEncoderBlock2D, UpDecoderBlock2D)");
    if (!types.empty() && types.size() != c.block_out_channels.size())
      throw Error(source + ": " + key + " has " + std::to_string(types.size()) + " entries for " +
                  std::to_string(c.block_out_channels.size()) + " block_out_channels");
  }
  const auto act = config_value<std::string>(j, "act_fn", "silu", source);
  if (act != "silu") throw Error(source + ": act_fn '" + act + "' is not supported (expected silu)");
  return c;
}

}  // namespace streamgen
