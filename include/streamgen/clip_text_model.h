#pragma once
// CLIPTextModel as in transformers (SD1.x: CLIP ViT-L/14 text tower, quick_gelu; SD2.x /
// SD-Turbo: OpenCLIP-H in the transformers layout, gelu). Module names equal the checkpoint keys
// (text_model.embeddings.token_embedding.weight, text_model.encoder.layers.N.self_attn.q_proj...).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "streamgen/device.h"
#include "streamgen/clip_text_config.h"

namespace streamgen {

struct ClipAttentionImpl : torch::nn::Module {
  ClipAttentionImpl(const ClipTextConfig& c);
  // x [N, L, D], mask additive [L, L] -> [N, L, D]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);
  std::int64_t heads, head_dim;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(ClipAttention);

struct ClipMlpImpl : torch::nn::Module {
  ClipMlpImpl(const ClipTextConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  bool quick_gelu;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(ClipMlp);

struct ClipEncoderLayerImpl : torch::nn::Module {
  ClipEncoderLayerImpl(const ClipTextConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);
  ClipAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  ClipMlp mlp{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

struct ClipEncoderImpl : torch::nn::Module {
  ClipEncoderImpl(const ClipTextConfig& c);
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(ClipEncoder);

struct ClipTextEmbeddingsImpl : torch::nn::Module {
  ClipTextEmbeddingsImpl(const ClipTextConfig& c);
  torch::Tensor forward(const torch::Tensor& input_ids);
  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
};
TORCH_MODULE(ClipTextEmbeddings);

struct ClipTextOutput {
  torch::Tensor last_hidden_state;         // [N, L, D] after final_layer_norm
  torch::Tensor penultimate_hidden_state;  // [N, L, D] output of layer L-1, before final_layer_norm
  torch::Tensor pooler_output;             // [N, D] last_hidden_state at the first EOS
  std::vector<torch::Tensor> hidden_states;  // embeddings, then each layer's output
  torch::Tensor text_embeds;               // [N, projection_dim]: text_projection(pooler_output), with a projection only
};

struct ClipTextTransformerImpl : torch::nn::Module {
  ClipTextTransformerImpl(const ClipTextConfig& c);
  ClipTextOutput forward(const torch::Tensor& input_ids);
  ClipTextConfig config;
  ClipTextEmbeddings embeddings{nullptr};
  ClipEncoder encoder{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(ClipTextTransformer);

// CLIPTextModel, or CLIPTextModelWithProjection when config.projection_dim > 0 (text_projection, no bias).
struct ClipTextModelImpl : torch::nn::Module {
  ClipTextModelImpl(const ClipTextConfig& c);
  // input_ids int64 [N, L] (L <= max_position_embeddings)
  ClipTextOutput forward(const torch::Tensor& input_ids);
  ClipTextTransformer text_model{nullptr};
  torch::nn::Linear text_projection{nullptr};
};
TORCH_MODULE(ClipTextModel);

// SDXL's prompt encoding from its two text encoders (diffusers' encode_prompt): prompt_embeds = the
// penultimate layers' outputs concatenated, [N, L, D1 + D2]; pooled_prompt_embeds = the second encoder's
// projected pooled output, [N, projection_dim].
struct SdxlPromptEmbeddings {
  torch::Tensor prompt_embeds, pooled_prompt_embeds;
};
SdxlPromptEmbeddings encode_sdxl_prompt(ClipTextModelImpl& text_encoder, ClipTextModelImpl& text_encoder_2, const torch::Tensor& input_ids,
                                        const torch::Tensor& input_ids_2);

struct ComponentSource;
// From a component source or a transformers text_encoder folder (config.json + model.safetensors),
// loaded strictly.
ClipTextModel load_clip_text_model(const ComponentSource& source, const ComputeOptions& compute = {});
ClipTextModel load_clip_text_model(const std::filesystem::path& dir, const ComputeOptions& compute = {});

}  // namespace streamgen
