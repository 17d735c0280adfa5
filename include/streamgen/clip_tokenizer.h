#pragma once
// The CLIP byte-level BPE tokenizer, matching what diffusers pipelines use (transformers'
// CLIPTokenizer without ftfy): clean-up and lower-casing, the CLIP pre-tokenisation pattern,
// byte-to-unicode mapping, BPE with merge ranks, BOS/EOS, truncation and padding to 77.
//
// Special tokens (bos/eos/unk/pad from special_tokens_map.json, falling back to
// tokenizer_config.json) are split out of the raw text first and map straight to their ids.
// SD2.x / SD-Turbo folders name "!" as the pad token, so every "!" in their prompts becomes id 0:
// that is what the reference does (diffusers #4153) and what their text encoders were fed.
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace at {
class Tensor;
}  // namespace at

namespace streamgen {

struct ClipSpecialTokens {
  std::string bos = "<|startoftext|>";
  std::string eos = "<|endoftext|>";
  std::string unk = "<|endoftext|>";
  std::string pad = "<|endoftext|>";
};

struct ClipEncoding {
  std::vector<std::int64_t> ids;  // max_length ids: BOS, tokens, EOS, padding
  int n_untruncated = 0;          // BOS + every token + EOS before truncation
  bool truncated = false;
  int eos_index = 0;              // position of the first EOS id
};

class ClipTokenizer {
 public:
  // A `tokenizer/` folder: vocab.json, merges.txt, and optionally special_tokens_map.json and
  // tokenizer_config.json (model_max_length, special tokens).
  static ClipTokenizer from_folder(const std::filesystem::path& dir);
  ClipTokenizer(std::unordered_map<std::string, std::int64_t> vocab, const std::vector<std::string>& merges,
                ClipSpecialTokens special, int max_length = 77);
  ClipTokenizer(const ClipTokenizer& other);

  // BPE token strings of the text, without BOS/EOS and untruncated.
  std::vector<std::string> bpe_tokens(std::string_view text) const;
  // Ids of the text, without BOS/EOS and untruncated.
  std::vector<std::int64_t> token_ids(std::string_view text) const;
  // BOS + first (max_length-2) tokens + EOS, padded to max_length with the pad id.
  ClipEncoding encode(std::string_view text) const;
  // int64 [N, max_length] (defined in clip_text_model.cpp: everything else here is torch-free).
  at::Tensor encode_batch(const std::vector<std::string>& prompts) const;

  std::int64_t bos_id() const { return bos_id_; }
  std::int64_t eos_id() const { return eos_id_; }
  std::int64_t pad_id() const { return pad_id_; }
  int max_length() const { return max_length_; }
  std::size_t vocab_size() const { return vocab_.size(); }

 private:
  std::int64_t id_of(const std::string& token) const;
  // BPE of one pre-token (already byte-encoded): space-separated merged symbols.
  std::vector<std::string> bpe(const std::string& word) const;
  void tokenize_plain(std::string_view text, std::vector<std::string>& out) const;

  std::unordered_map<std::string, std::int64_t> vocab_;
  std::unordered_map<std::string, int> merge_rank_;  // "a b" -> rank
  ClipSpecialTokens special_;
  std::vector<std::string> split_tokens_;  // distinct special strings, longest first
  int max_length_;
  std::int64_t bos_id_, eos_id_, pad_id_, unk_id_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<std::string>> cache_;
};

}  // namespace streamgen
