#include "streamgen/caption_encoder.h"

#include <torch/torch.h>

#include <algorithm>
#include <cctype>

namespace streamgen {
std::vector<std::string> split_caption_words(const std::string& text) {
  std::vector<std::string> words;
  std::string word;
  auto finish_word = [&] {
    if (word != "a" && word != "an" && word != "the") words.push_back(word);
    word.clear();
  };
  for (char ch : text) {
    const auto u = static_cast<unsigned char>(ch);
    if (std::isalnum(u)) {
      word.push_back(static_cast<char>(std::tolower(u)));
    } else if (!word.empty()) {
      finish_word();
    }
  }
  if (!word.empty()) finish_word();
  return words;
}

CaptionTokenizer::CaptionTokenizer(const CaptionEncoderConfig& config)
    : vocabulary_(config.vocabulary), max_tokens_(config.max_tokens) {}

std::vector<std::int64_t> CaptionTokenizer::encode(const std::string& text) const {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(max_tokens_), kPad);
  const auto words = split_caption_words(text);
  for (std::size_t i = 0; i < words.size() && i < ids.size(); ++i) {
    const auto it = std::find(vocabulary_.begin(), vocabulary_.end(), words[i]);
    ids[i] = it == vocabulary_.end() ? kUnknown : 2 + static_cast<std::int64_t>(it - vocabulary_.begin());
  }
  return ids;
}

torch::Tensor CaptionTokenizer::encode_batch(const std::vector<std::string>& captions) const {
  auto out = torch::empty({static_cast<std::int64_t>(captions.size()), max_tokens_}, torch::kInt64);
  auto* p = out.data_ptr<std::int64_t>();
  for (const auto& caption : captions) {
    const auto ids = encode(caption);
    p = std::copy(ids.begin(), ids.end(), p);
  }
  return out;
}

std::vector<std::string> CaptionTokenizer::unknown_words(const std::string& text) const {
  std::vector<std::string> unknown;
  const auto words = split_caption_words(text);
  for (std::size_t i = 0; i < words.size(); ++i)
    if (static_cast<std::int64_t>(i) >= max_tokens_ || std::find(vocabulary_.begin(), vocabulary_.end(), words[i]) == vocabulary_.end())
      unknown.push_back(words[i]);
  return unknown;
}

CaptionEncoderLayerImpl::CaptionEncoderLayerImpl(std::int64_t dim, std::int64_t heads) {
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
  attn = register_module("attn", SelfAttention(dim, heads));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
  mlp = register_module("mlp", Mlp(dim, 4 * dim));
}

torch::Tensor CaptionEncoderLayerImpl::forward(const torch::Tensor& x) {
  const auto h = x + attn(norm1(x));
  return h + mlp(norm2(h));
}

CaptionEncoderImpl::CaptionEncoderImpl(const CaptionEncoderConfig& config, std::int64_t dim) {
  token_embedding = register_module("token_embedding", torch::nn::Embedding(config.vocab_size(), dim));
  position_embedding = register_parameter("position_embedding", torch::randn({config.max_tokens, dim}) * 0.02);
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < config.num_layers; ++i) layers->push_back(CaptionEncoderLayer(dim, config.num_heads));
  final_norm = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
}

torch::Tensor CaptionEncoderImpl::forward(const torch::Tensor& tokens) {
  // tokens [N, M] -> [N, M, D]
  auto x = token_embedding(tokens) + position_embedding.narrow(0, 0, tokens.size(1)).unsqueeze(0);
  for (const auto& layer : *layers) x = layer->as<CaptionEncoderLayer>()->forward(x);
  return final_norm(x);
}

}  // namespace streamgen
