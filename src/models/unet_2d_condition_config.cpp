#include "streamgen/unet_2d_condition_config.h"

#include "streamgen/config_json.h"
#include "streamgen/error.h"

namespace streamgen {
namespace {

// An int or a per-block list, as diffusers configs allow for several fields.
std::vector<std::int64_t> per_block(const nlohmann::json& v, std::size_t blocks, const std::string& source, const char* key) {
  if (v.is_number_integer()) return std::vector<std::int64_t>(blocks, v.get<std::int64_t>());
  if (v.is_array() && v.size() == blocks) {
    std::vector<std::int64_t> out;
    for (const auto& e : v) {
      if (!e.is_number_integer()) throw FormatError(source + ": '" + key + "' must hold integers, found " + v.dump());
      out.push_back(e.get<std::int64_t>());
    }
    return out;
  }
  throw FormatError(source + ": '" + key + "' must be an integer or a list of " + std::to_string(blocks) + ", found " + v.dump());
}

void require_null(const nlohmann::json& j, const char* key, const std::string& source, const char* what) {
  if (j.contains(key) && !j[key].is_null() && !(j[key].is_boolean() && !j[key].get<bool>()))
    throw Error(source + ": " + key + " = " + j[key].dump() + " (" + what + ") is not supported yet");
}

}  // namespace

UNet2DConditionConfig UNet2DConditionConfig::from_json(const nlohmann::json& j, const std::string& source) {
  UNet2DConditionConfig c;
  c.in_channels = config_value(j, "in_channels", c.in_channels, source);
  c.out_channels = config_value(j, "out_channels", c.out_channels, source);
  c.block_out_channels = config_value(j, "block_out_channels", c.block_out_channels, source);
  c.down_block_types = config_value(j, "down_block_types", c.down_block_types, source);
  c.up_block_types = config_value(j, "up_block_types", c.up_block_types, source);
  c.mid_block_type = config_value(j, "mid_block_type", c.mid_block_type, source);
  c.layers_per_block = config_value(j, "layers_per_block", c.layers_per_block, source);
  c.norm_num_groups = config_value(j, "norm_num_groups", c.norm_num_groups, source);
  c.norm_eps = config_value(j, "norm_eps", c.norm_eps, source);
  c.cross_attention_dim = config_value(j, "cross_attention_dim", c.cross_attention_dim, source);
  c.use_linear_projection = config_value(j, "use_linear_projection", c.use_linear_projection, source);
  c.upcast_attention = config_value(j, "upcast_attention", c.upcast_attention, source);
  c.flip_sin_to_cos = config_value(j, "flip_sin_to_cos", c.flip_sin_to_cos, source);
  c.freq_shift = config_value(j, "freq_shift", c.freq_shift, source);
  c.downsample_padding = config_value(j, "downsample_padding", c.downsample_padding, source);

  const auto blocks = c.block_out_channels.size();
  if (blocks == 0 || c.down_block_types.size() != blocks || c.up_block_types.size() != blocks)
    throw Error(source + ": block_out_channels, down_block_types and up_block_types must have the same, non-zero length");
  for (const auto& t : c.down_block_types)
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D")
      throw Error(source + ": unsupported down block type '" + t + "' (supported: CrossAttnDownBlock2D, DownBlock2D)");
  for (const auto& t : c.up_block_types)
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D")
      throw Error(source + ": unsupported up block type '" + t + "' (supported: CrossAttnUpBlock2D, UpBlock2D)");
  if (c.mid_block_type != "UNetMidBlock2DCrossAttn")
    throw Error(source + ": unsupported mid block type '" + c.mid_block_type + "' (supported: UNetMidBlock2DCrossAttn)");
  if (c.cross_attention_dim <= 0 && j.contains("cross_attention_dim") && !j["cross_attention_dim"].is_number_integer())
    throw Error(source + ": per-block cross_attention_dim is not supported");

  // num_attention_heads wins when set; otherwise the legacy attention_head_dim is the head count.
  const nlohmann::json heads = j.contains("num_attention_heads") && !j["num_attention_heads"].is_null() ? j["num_attention_heads"]
                               : j.contains("attention_head_dim")                                        ? j["attention_head_dim"]
                                                                                                        : nlohmann::json(8);
  c.heads = per_block(heads, blocks, source, "num_attention_heads / attention_head_dim");
  for (std::size_t i = 0; i < blocks; ++i)
    if (c.heads[i] <= 0 || c.block_out_channels[i] % c.heads[i] != 0)
      throw Error(source + ": block " + std::to_string(i) + " has " + std::to_string(c.block_out_channels[i]) +
                  " channels, not divisible into " + std::to_string(c.heads[i]) + " heads");
  c.transformer_layers_per_block =
      per_block(j.contains("transformer_layers_per_block") ? j["transformer_layers_per_block"] : nlohmann::json(1), blocks, source,
                "transformer_layers_per_block");

  config_check_range(c.in_channels, 1, 1024, "in_channels", source);
  config_check_range(c.out_channels, 1, 1024, "out_channels", source);
  config_check_range(static_cast<std::int64_t>(blocks), 1, 8, "block_out_channels (count)", source);
  config_check_range(c.block_out_channels, 1, 16384, "block_out_channels", source);
  config_check_range(c.layers_per_block, 1, 16, "layers_per_block", source);
  config_check_groups(c.block_out_channels, c.norm_num_groups, source);
  config_check_positive(c.norm_eps, "norm_eps", source);
  config_check_range(c.cross_attention_dim, 1, 16384, "cross_attention_dim", source);
  config_check_range(c.transformer_layers_per_block, 1, 64, "transformer_layers_per_block", source);
  config_check_range(c.downsample_padding, 0, 8, "downsample_padding", source);
  const auto added = config_value<std::string>(j, "addition_embed_type", "", source);
  if (added == "text_time") {
    c.text_time = true;
    c.addition_time_embed_dim = config_required<std::int64_t>(j, "addition_time_embed_dim", source);
    c.projection_class_embeddings_input_dim = config_required<std::int64_t>(j, "projection_class_embeddings_input_dim", source);
    config_check_range(c.addition_time_embed_dim, 2, 4096, "addition_time_embed_dim", source);
    config_check_range(c.projection_class_embeddings_input_dim, 1, 65536, "projection_class_embeddings_input_dim", source);
    if (c.text_embeds_dim() <= 0)
      throw Error(source + ": projection_class_embeddings_input_dim " + std::to_string(c.projection_class_embeddings_input_dim) +
                  " leaves no room for the pooled text embedding beside 6 x addition_time_embed_dim = " +
                  std::to_string(kTimeIds * c.addition_time_embed_dim));
  } else if (!added.empty()) {
    throw Error(source + ": addition_embed_type '" + added + "' is not supported (supported: text_time, SDXL's)");
  }
  require_null(j, "class_embed_type", source, "class embeddings");
  require_null(j, "time_cond_proj_dim", source, "guidance-embedding LCM UNets");
  require_null(j, "encoder_hid_dim", source, "encoder_hid_proj");
  require_null(j, "dual_cross_attention", source, "dual cross-attention");
  require_null(j, "only_cross_attention", source, "cross-attention-only blocks");
  require_null(j, "center_input_sample", source, "input centering");
  const auto shift = config_value<std::string>(j, "resnet_time_scale_shift", "default", source);
  if (shift != "default") throw Error(source + ": resnet_time_scale_shift '" + shift + "' is not supported (expected default)");
  const auto act = config_value<std::string>(j, "act_fn", "silu", source);
  if (act != "silu") throw Error(source + ": act_fn '" + act + "' is not supported (expected silu)");
  const auto temb_type = config_value<std::string>(j, "time_embedding_type", "positional", source);
  if (temb_type != "positional") throw Error(source + ": time_embedding_type '" + temb_type + "' is not supported");
  return c;
}

}  // namespace streamgen
