#pragma once
// The small caption encoder StreamDiT's tiny configuration trains jointly with the DiT
// (docs/streamdit.md §15): a word-level tokenizer over a fixed vocabulary, a token and
// position embedding, a few pre-norm transformer layers and a final LayerNorm. Any encoder that
// yields [batch, M, D] token states can take its place.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "streamgen/transformer_parts.h"

namespace streamgen {

struct CaptionEncoderConfig {
  std::vector<std::string> vocabulary;  // words; ids 0 = padding, 1 = unknown, 2.. = these words
  std::int64_t max_tokens = 12;
  std::int64_t num_layers = 1;
  std::int64_t num_heads = 4;
  std::int64_t vocab_size() const { return static_cast<std::int64_t>(vocabulary.size()) + 2; }
};

// Lower-cased runs of letters and digits, without the articles a / an / the: the words the
// tokenizer sees. Articles carry nothing here and shift every later word to another position. The
// procedural captions have none, so the shipped models read "a yellow square ..." with the colour
// where they had always seen it at position 0 replaced by "a", and drew magenta.
std::vector<std::string> split_caption_words(const std::string& text);

class CaptionTokenizer {
 public:
  static constexpr std::int64_t kPad = 0;
  static constexpr std::int64_t kUnknown = 1;
  CaptionTokenizer() = default;
  explicit CaptionTokenizer(const CaptionEncoderConfig& config);
  // Lower-cased words (runs of letters and digits), each mapped to its id, padded / truncated to
  // max_tokens. The empty caption is the null caption (all padding), used for CFG.
  std::vector<std::int64_t> encode(const std::string& text) const;
  // [captions.size(), max_tokens] int64
  torch::Tensor encode_batch(const std::vector<std::string>& captions) const;
  // Words of `text` outside the vocabulary and words past max_tokens, for a warning.
  std::vector<std::string> unknown_words(const std::string& text) const;
  std::int64_t max_tokens() const { return max_tokens_; }

 private:
  std::vector<std::string> vocabulary_;
  std::int64_t max_tokens_ = 0;
};

struct CaptionEncoderLayerImpl : torch::nn::Module {
  CaptionEncoderLayerImpl(std::int64_t dim, std::int64_t heads);
  torch::Tensor forward(const torch::Tensor& x);  // [N, M, D]
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  SelfAttention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(CaptionEncoderLayer);

struct CaptionEncoderImpl : torch::nn::Module {
  CaptionEncoderImpl(const CaptionEncoderConfig& config, std::int64_t dim);
  // tokens [N, M] int64 -> [N, M, D]
  torch::Tensor forward(const torch::Tensor& tokens);
  torch::nn::Embedding token_embedding{nullptr};
  torch::Tensor position_embedding;  // [max_tokens, D]
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm final_norm{nullptr};
};
TORCH_MODULE(CaptionEncoder);

}  // namespace streamgen
