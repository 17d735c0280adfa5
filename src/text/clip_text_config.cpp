#include "streamgen/clip_text_config.h"

#include "streamgen/config_json.h"
#include "streamgen/error.h"

namespace streamgen {

ClipTextConfig ClipTextConfig::from_json(const nlohmann::json& root, const std::string& source) {
  const nlohmann::json& j = root.contains("text_config") ? root["text_config"] : root;
  ClipTextConfig c;
  c.vocab_size = config_value(j, "vocab_size", c.vocab_size, source);
  c.hidden_size = config_value(j, "hidden_size", c.hidden_size, source);
  c.intermediate_size = config_value(j, "intermediate_size", c.intermediate_size, source);
  c.num_hidden_layers = config_value(j, "num_hidden_layers", c.num_hidden_layers, source);
  c.num_attention_heads = config_value(j, "num_attention_heads", c.num_attention_heads, source);
  c.max_position_embeddings = config_value(j, "max_position_embeddings", c.max_position_embeddings, source);
  c.hidden_act = config_value(j, "hidden_act", c.hidden_act, source);
  c.layer_norm_eps = config_value(j, "layer_norm_eps", c.layer_norm_eps, source);
  c.eos_token_id = config_value(j, "eos_token_id", c.eos_token_id, source);
  // The projection belongs to the model class, which the architectures list names (transformers' default width 512).
  const auto arch = root.contains("architectures") && root["architectures"].is_array() ? root["architectures"] : nlohmann::json::array();
  for (const auto& a : arch)
    if (a.is_string() && a.get<std::string>() == "CLIPTextModelWithProjection") c.projection_dim = config_value<std::int64_t>(j, "projection_dim", 512, source);
  if (c.projection_dim != 0) config_check_range(c.projection_dim, 1, 16384, "projection_dim", source);
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
    throw Error(source + ": hidden_act '" + c.hidden_act + "' is not supported (expected quick_gelu or gelu)");
  if (c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0)
    throw Error(source + ": hidden_size " + std::to_string(c.hidden_size) + " is not divisible by num_attention_heads " +
                std::to_string(c.num_attention_heads));
  if (c.num_hidden_layers < 1) throw Error(source + ": num_hidden_layers must be at least 1");
  config_check_range(c.vocab_size, 1, 1 << 20, "vocab_size", source);
  config_check_range(c.hidden_size, 1, 16384, "hidden_size", source);
  config_check_range(c.intermediate_size, 1, 65536, "intermediate_size", source);
  config_check_range(c.num_hidden_layers, 1, 128, "num_hidden_layers", source);
  config_check_range(c.max_position_embeddings, 1, 4096, "max_position_embeddings", source);
  config_check_range(c.eos_token_id, 0, c.vocab_size - 1, "eos_token_id", source);
  config_check_positive(c.layer_norm_eps, "layer_norm_eps", source);
  return c;
}

}  // namespace streamgen
