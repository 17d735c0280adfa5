#include "streamgen/clip_text_model.h"

#include <torch/torch.h>

#include "streamgen/attention.h"
#include "streamgen/clip_tokenizer.h"
#include "streamgen/config_json.h"
#include "streamgen/diffusers_blocks.h"
#include "streamgen/error.h"
#include "streamgen/model_folder.h"
#include "streamgen/safetensors_format.h"
#include "streamgen/state_dict.h"

namespace streamgen {

ClipAttentionImpl::ClipAttentionImpl(const ClipTextConfig& c)
    : heads(c.num_attention_heads), head_dim(c.hidden_size / c.num_attention_heads) {
  k_proj = register_module("k_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  v_proj = register_module("v_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  q_proj = register_module("q_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  out_proj = register_module("out_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
}

torch::Tensor ClipAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  // x [N, L, D], mask [L, L] (causal) -> [N, L, D]
  // transformers computes CLIP's scores and softmax in the weights' dtype.
  return out_proj(multi_head_attention(q_proj(x), k_proj(x), v_proj(x), heads, mask, /*upcast=*/false));
}

ClipMlpImpl::ClipMlpImpl(const ClipTextConfig& c) : quick_gelu(c.hidden_act == "quick_gelu") {
  fc1 = register_module("fc1", torch::nn::Linear(c.hidden_size, c.intermediate_size));
  fc2 = register_module("fc2", torch::nn::Linear(c.intermediate_size, c.hidden_size));
}

torch::Tensor ClipMlpImpl::forward(const torch::Tensor& x) {
  auto h = fc1(x);
  h = quick_gelu ? h * torch::sigmoid(1.702 * h) : torch::gelu(h);
  return fc2(h);
}

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipTextConfig& c) {
  const auto ln = torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps);
  self_attn = register_module("self_attn", ClipAttention(c));
  layer_norm1 = register_module("layer_norm1", torch::nn::LayerNorm(ln));
  mlp = register_module("mlp", ClipMlp(c));
  layer_norm2 = register_module("layer_norm2", torch::nn::LayerNorm(ln));
}

torch::Tensor ClipEncoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  auto h = x + self_attn(layer_norm_fp32(layer_norm1, x), mask);
  return h + mlp(layer_norm_fp32(layer_norm2, h));
}

ClipEncoderImpl::ClipEncoderImpl(const ClipTextConfig& c) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(ClipEncoderLayer(c));
}

ClipTextEmbeddingsImpl::ClipTextEmbeddingsImpl(const ClipTextConfig& c) {
  token_embedding = register_module("token_embedding", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  position_embedding = register_module("position_embedding", torch::nn::Embedding(c.max_position_embeddings, c.hidden_size));
}

torch::Tensor ClipTextEmbeddingsImpl::forward(const torch::Tensor& input_ids) {
  // input_ids [N, L] -> [N, L, D]
  const auto positions = torch::arange(input_ids.size(1), torch::TensorOptions().dtype(torch::kInt64).device(input_ids.device()));
  return token_embedding(input_ids) + position_embedding(positions).unsqueeze(0);
}

ClipTextTransformerImpl::ClipTextTransformerImpl(const ClipTextConfig& c) : config(c) {
  embeddings = register_module("embeddings", ClipTextEmbeddings(c));
  encoder = register_module("encoder", ClipEncoder(c));
  final_layer_norm = register_module("final_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
}

ClipTextOutput ClipTextTransformerImpl::forward(const torch::Tensor& input_ids) {
  // input_ids int64 [N, L] -> last_hidden_state [N, L, D], pooler_output [N, D]
  if (input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64)
    throw Error("text encoder: input_ids must be int64 [N, L], got " + std::string(c10::toString(input_ids.scalar_type())) + " " +
                std::to_string(input_ids.dim()) + "-d");
  const auto l = input_ids.size(1);
  if (l < 1 || l > config.max_position_embeddings)
    throw Error("text encoder: sequence length " + std::to_string(l) + " outside 1.." + std::to_string(config.max_position_embeddings));
  if (input_ids.numel() > 0 && (input_ids.min().item<std::int64_t>() < 0 || input_ids.max().item<std::int64_t>() >= config.vocab_size))
    throw Error("text encoder: input_ids outside the vocabulary 0.." + std::to_string(config.vocab_size - 1));

  ClipTextOutput out;
  auto h = embeddings(input_ids);
  const auto mask = torch::full({l, l}, -std::numeric_limits<float>::infinity(), torch::TensorOptions().device(h.device())).triu(1);
  out.hidden_states.push_back(h);
  for (const auto& layer : *encoder->layers) {
    h = layer->as<ClipEncoderLayer>()->forward(h, mask);
    out.hidden_states.push_back(h);
  }
  out.penultimate_hidden_state = out.hidden_states[out.hidden_states.size() - 2];
  out.last_hidden_state = layer_norm_fp32(final_layer_norm, h);
  // Pool at the first EOS; configs with the legacy eos_token_id 2 meant argmax(ids), which is the
  // same position because EOS has the largest id.
  const auto eos_pos = config.eos_token_id == 2 ? input_ids.argmax(-1) : (input_ids == config.eos_token_id).to(torch::kInt32).argmax(-1);
  out.pooler_output = out.last_hidden_state.index({torch::arange(input_ids.size(0), eos_pos.options()), eos_pos});
  return out;
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& c) {
  text_model = register_module("text_model", ClipTextTransformer(c));
  if (c.projection_dim > 0)
    text_projection = register_module("text_projection", torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, c.projection_dim).bias(false)));
}

ClipTextOutput ClipTextModelImpl::forward(const torch::Tensor& input_ids) {
  auto out = text_model->forward(input_ids);
  if (text_projection) out.text_embeds = text_projection(out.pooler_output);
  return out;
}

SdxlPromptEmbeddings encode_sdxl_prompt(ClipTextModelImpl& text_encoder, ClipTextModelImpl& text_encoder_2, const torch::Tensor& input_ids,
                                        const torch::Tensor& input_ids_2) {
  // input_ids, input_ids_2 int64 [N, L] (the two tokenizers' ids) -> [N, L, D1 + D2], [N, P]
  if (!text_encoder_2.text_projection)
    throw Error("SDXL: text_encoder_2 must be a CLIPTextModelWithProjection (its config.json names that architecture and a projection_dim)");
  if (input_ids.sizes() != input_ids_2.sizes())
    throw Error("SDXL: input_ids and input_ids_2 must have the same shape, got " + safetensors::shape_string(input_ids.sizes().vec()) + " and " +
                safetensors::shape_string(input_ids_2.sizes().vec()));
  const auto a = text_encoder.forward(input_ids);
  const auto b = text_encoder_2.forward(input_ids_2);
  return {torch::cat({a.penultimate_hidden_state, b.penultimate_hidden_state}, -1), b.text_embeds};
}

ClipTextModel load_clip_text_model(const std::filesystem::path& dir, const ComputeOptions& compute) {
  return load_clip_text_model(component_source(dir), compute);
}

ClipTextModel load_clip_text_model(const ComponentSource& source, const ComputeOptions& compute) {
  ClipTextModel model(ClipTextConfig::from_json(source.config, source.config_source));
  LoadOptions opt = source.load;
  // Older transformers saved this buffer; the model computes positions itself.
  auto also = opt.ignore_unexpected;
  opt.ignore_unexpected = [also](std::string_view k) { return k == "text_model.embeddings.position_ids" || (also && also(k)); };
  load_state_dict(*model, *source.weights, opt);
  prepare_for_inference(*model, compute.device, compute.dtype);
  return model;
}

// The tokenizer itself is torch-free (so that it can be fuzzed alone); its tensor form lives with its consumer.
torch::Tensor ClipTokenizer::encode_batch(const std::vector<std::string>& prompts) const {
  auto out = torch::empty({static_cast<std::int64_t>(prompts.size()), max_length_}, torch::kInt64);
  auto acc = out.accessor<std::int64_t, 2>();
  for (std::size_t n = 0; n < prompts.size(); ++n) {
    const auto e = encode(prompts[n]);
    for (int i = 0; i < max_length_; ++i) acc[static_cast<std::int64_t>(n)][i] = e.ids[static_cast<std::size_t>(i)];
  }
  return out;
}

}  // namespace streamgen
