#include "streamgen/autoencoder_tiny_config.h"

#include "streamgen/config_json.h"
#include "streamgen/error.h"

namespace streamgen {
namespace {

void check_lengths(const AutoencoderTinyConfig& c, const std::string& source) {
  if (c.encoder_block_out_channels.size() != c.num_encoder_blocks.size() || c.num_encoder_blocks.empty())
    throw Error(source + ": encoder_block_out_channels and num_encoder_blocks must have the same, non-zero length");
  if (c.decoder_block_out_channels.size() != c.num_decoder_blocks.size() || c.num_decoder_blocks.empty())
    throw Error(source + ": decoder_block_out_channels and num_decoder_blocks must have the same, non-zero length");
}

}  // namespace

AutoencoderTinyConfig AutoencoderTinyConfig::from_json(const nlohmann::json& j, const std::string& source) {
  AutoencoderTinyConfig c;
  c.in_channels = config_value(j, "in_channels", c.in_channels, source);
  c.out_channels = config_value(j, "out_channels", c.out_channels, source);
  c.latent_channels = config_value(j, "latent_channels", c.latent_channels, source);
  c.encoder_block_out_channels = config_value(j, "encoder_block_out_channels", c.encoder_block_out_channels, source);
  c.decoder_block_out_channels = config_value(j, "decoder_block_out_channels", c.decoder_block_out_channels, source);
  c.num_encoder_blocks = config_value(j, "num_encoder_blocks", c.num_encoder_blocks, source);
  c.num_decoder_blocks = config_value(j, "num_decoder_blocks", c.num_decoder_blocks, source);
  c.upsampling_scaling_factor = config_value(j, "upsampling_scaling_factor", c.upsampling_scaling_factor, source);
  c.scaling_factor = config_value(j, "scaling_factor", c.scaling_factor, source);
  const auto act = config_value<std::string>(j, "act_fn", "relu", source);
  if (act != "relu") throw Error(source + ": act_fn '" + act + "' is not supported by AutoencoderTiny (expected relu)");
  const auto up = config_value<std::string>(j, "upsample_fn", "nearest", source);
  if (up != "nearest") throw Error(source + ": upsample_fn '" + up + "' is not supported (expected nearest)");
  config_check_range(c.in_channels, 1, 1024, "in_channels", source);
  config_check_range(c.out_channels, 1, 1024, "out_channels", source);
  config_check_range(c.latent_channels, 1, 1024, "latent_channels", source);
  config_check_range(c.encoder_block_out_channels, 1, 16384, "encoder_block_out_channels", source);
  config_check_range(c.decoder_block_out_channels, 1, 16384, "decoder_block_out_channels", source);
  config_check_range(c.num_encoder_blocks, 0, 64, "num_encoder_blocks", source);
  config_check_range(c.num_decoder_blocks, 0, 64, "num_decoder_blocks", source);
  config_check_range(static_cast<std::int64_t>(c.num_encoder_blocks.size()), 1, 8, "num_encoder_blocks (count)", source);
  config_check_range(static_cast<std::int64_t>(c.num_decoder_blocks.size()), 1, 8, "num_decoder_blocks (count)", source);
  config_check_range(c.upsampling_scaling_factor, 1, 8, "upsampling_scaling_factor", source);
  config_check_positive(c.scaling_factor, "scaling_factor", source);
  check_lengths(c, source);
  return c;
}

}  // namespace streamgen
