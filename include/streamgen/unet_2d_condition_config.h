#pragma once
// UNet2DConditionConfig: the config.json fields unet_2d_condition.h builds from, read and checked without LibTorch
// (so that the config fuzzer builds it alone). Errors name the file and the field.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace streamgen {

struct UNet2DConditionConfig {
  std::int64_t in_channels = 4;
  std::int64_t out_channels = 4;
  std::vector<std::int64_t> block_out_channels{320, 640, 1280, 1280};
  std::vector<std::string> down_block_types{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"};
  std::vector<std::string> up_block_types{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";
  std::int64_t layers_per_block = 2;
  std::int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  std::int64_t cross_attention_dim = 768;
  // Heads per down block. diffusers' legacy configs store the head *count* in attention_head_dim
  // when num_attention_heads is null (SD1.x: 8; SD2.x: [5, 10, 20, 20]); the head size is then
  // channels / heads. We resolve that once, here.
  std::vector<std::int64_t> heads{8, 8, 8, 8};
  std::vector<std::int64_t> transformer_layers_per_block{1, 1, 1, 1};
  bool use_linear_projection = false;
  bool upcast_attention = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  std::int64_t downsample_padding = 1;
  // SDXL's added conditioning (addition_embed_type "text_time"): the pooled text projection and the six
  // size / crop numbers (each a sinusoid of addition_time_embed_dim channels) go through add_embedding
  // (projection_class_embeddings_input_dim -> time_embed_dim) and join the time embedding.
  bool text_time = false;
  std::int64_t addition_time_embed_dim = 0;
  std::int64_t projection_class_embeddings_input_dim = 0;
  static constexpr std::int64_t kTimeIds = 6;  // (orig_h, orig_w, crop_top, crop_left, target_h, target_w)
  // The width of the pooled text embedding text_time expects (SDXL: 1280).
  std::int64_t text_embeds_dim() const { return projection_class_embeddings_input_dim - kTimeIds * addition_time_embed_dim; }

  static UNet2DConditionConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  std::int64_t time_embed_dim() const { return block_out_channels[0] * 4; }
};

}  // namespace streamgen
