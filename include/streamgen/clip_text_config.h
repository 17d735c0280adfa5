#pragma once
// ClipTextConfig: the config.json fields clip_text_model.h builds from, read and checked without LibTorch
// (so that the config fuzzer builds it alone). Errors name the file and the field.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace streamgen {

struct ClipTextConfig {
  std::int64_t vocab_size = 49408;
  std::int64_t hidden_size = 768;
  std::int64_t intermediate_size = 3072;
  std::int64_t num_hidden_layers = 12;
  std::int64_t num_attention_heads = 12;
  std::int64_t max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  // or "gelu" (erf)
  double layer_norm_eps = 1e-5;
  std::int64_t eos_token_id = 49407;  // 2 in older configs: then the pooled position is argmax(ids)
  // CLIPTextModelWithProjection (SDXL's second text encoder): the pooled output's projection width; 0 for a
  // CLIPTextModel, which has none.
  std::int64_t projection_dim = 0;

  // Reads a transformers CLIPTextConfig (or the text_config inside a CLIPConfig); errors name the field.
  static ClipTextConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
};

}  // namespace streamgen
