#include "streamgen/clip_tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <limits>
#include <sstream>

#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "unicode_text.h"

namespace streamgen {
namespace {

// CLIP keeps the first 49152 - 256 - 2 merges of its merges file (the vocabulary is 256 byte
// symbols, their </w> forms, the merges and the two special tokens).
constexpr std::size_t kMaxMerges = 49152 - 256 - 2;
constexpr std::array<std::u32string_view, 7> kContractions{U"'s", U"'t", U"'re", U"'ve", U"'m", U"'ll", U"'d"};
const std::string kEndOfWord = "</w>";

// GPT-2's reversible byte -> printable unicode character table.
const std::array<std::string, 256>& byte_encoder() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[static_cast<std::size_t>(b)] = text::encode_utf8(static_cast<char32_t>(printable ? b : 256 + n++));
    }
    return t;
  }();
  return table;
}

std::string special_from_json(const nlohmann::json& j, const char* key, const std::string& fallback) {
  if (!j.is_object() || !j.contains(key)) return fallback;
  const auto& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return fallback;
}

// Splits a word into the CLIP pattern's pieces:
// <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
void pretokenize(const std::u32string& w, std::vector<std::u32string>& pieces) {
  static const std::array<std::u32string_view, 2> specials{U"<|startoftext|>", U"<|endoftext|>"};
  std::size_t i = 0;
  auto starts_with = [&](std::u32string_view s) { return w.compare(i, s.size(), s) == 0; };
  while (i < w.size()) {
    std::size_t len = 0;
    for (auto s : specials)
      if (!len && starts_with(s)) len = s.size();
    for (auto c : kContractions)
      if (!len && starts_with(c)) len = c.size();
    if (!len && text::is_letter(w[i])) {
      while (i + len < w.size() && text::is_letter(w[i + len])) ++len;
    }
    if (!len && text::is_number(w[i])) len = 1;
    if (!len && !text::is_unicode_whitespace(w[i])) {
      while (i + len < w.size()) {
        const char32_t c = w[i + len];
        if (text::is_unicode_whitespace(c) || text::is_letter(c) || text::is_number(c)) break;
        ++len;
      }
    }
    if (!len) {  // whitespace: no piece starts here
      ++i;
      continue;
    }
    pieces.push_back(w.substr(i, len));
    i += len;
  }
}

}  // namespace

ClipTokenizer ClipTokenizer::from_folder(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw Error("tokenizer folder '" + dir.string() + "' does not exist");
  const auto vocab_path = dir / "vocab.json", merges_path = dir / "merges.txt";
  for (const auto& p : {vocab_path, merges_path})
    if (!std::filesystem::is_regular_file(p, ec)) throw Error("tokenizer folder '" + dir.string() + "' has no " + p.filename().string());

  const auto vocab_json = read_json_file(vocab_path);
  if (!vocab_json.is_object()) throw FormatError(vocab_path.string() + ": expected an object of token -> id");
  std::unordered_map<std::string, std::int64_t> vocab;
  vocab.reserve(vocab_json.size());
  for (const auto& [tok, id] : vocab_json.items()) {
    if (!id.is_number_integer()) throw FormatError(vocab_path.string() + ": id of token '" + tok + "' is not an integer");
    vocab.emplace(tok, id.get<std::int64_t>());
  }

  std::ifstream in(merges_path);
  std::vector<std::string> merges;
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (first) {  // "#version: 0.2"
      first = false;
      if (line.rfind("#version", 0) == 0) continue;
    }
    if (line.empty()) continue;
    merges.push_back(line);
  }

  ClipSpecialTokens special;
  int max_length = 77;
  nlohmann::json config, map;
  if (std::filesystem::is_regular_file(dir / "tokenizer_config.json", ec)) config = read_json_file(dir / "tokenizer_config.json");
  if (std::filesystem::is_regular_file(dir / "special_tokens_map.json", ec)) map = read_json_file(dir / "special_tokens_map.json");
  // special_tokens_map.json wins: real SD2 folders say "<|endoftext|>" in tokenizer_config.json and
  // "!" in the map, and the reference tokenizer uses "!".
  for (const auto* j : {&config, &map}) {
    special.bos = special_from_json(*j, "bos_token", special.bos);
    special.eos = special_from_json(*j, "eos_token", special.eos);
    special.unk = special_from_json(*j, "unk_token", special.unk);
    special.pad = special_from_json(*j, "pad_token", special.pad);
  }
  if (config.is_object() && config.contains("model_max_length") && config["model_max_length"].is_number_integer()) {
    const auto m = config["model_max_length"].get<std::int64_t>();
    if (m >= 2 && m <= 4096) max_length = static_cast<int>(m);
  }
  return ClipTokenizer(std::move(vocab), merges, special, max_length);
}

ClipTokenizer::ClipTokenizer(std::unordered_map<std::string, std::int64_t> vocab, const std::vector<std::string>& merges,
                             ClipSpecialTokens special, int max_length)
    : vocab_(std::move(vocab)), special_(std::move(special)), max_length_(max_length) {
  if (max_length_ < 2) throw Error("tokenizer max_length must be at least 2 (BOS and EOS)");
  for (std::size_t r = 0; r < merges.size() && r < kMaxMerges; ++r) {
    std::istringstream ss(merges[r]);
    std::string a, b;
    if (!(ss >> a >> b)) throw FormatError("merges.txt: line " + std::to_string(r + 2) + " is not a pair: '" + merges[r] + "'");
    merge_rank_.emplace(a + " " + b, static_cast<int>(r));
  }
  auto require = [&](const std::string& tok, const char* role) {
    auto it = vocab_.find(tok);
    if (it == vocab_.end()) throw FormatError("vocab.json has no id for the " + std::string(role) + " token '" + tok + "'");
    return it->second;
  };
  bos_id_ = require(special_.bos, "bos");
  eos_id_ = require(special_.eos, "eos");
  unk_id_ = require(special_.unk, "unk");
  pad_id_ = require(special_.pad, "pad");
  for (const auto& s : {special_.bos, special_.eos, special_.unk, special_.pad})
    if (!s.empty() && std::find(split_tokens_.begin(), split_tokens_.end(), s) == split_tokens_.end()) split_tokens_.push_back(s);
  std::sort(split_tokens_.begin(), split_tokens_.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  // The special strings are whole tokens, never merged.
  cache_.emplace("<|startoftext|>", std::vector<std::string>{"<|startoftext|>"});
  cache_.emplace("<|endoftext|>", std::vector<std::string>{"<|endoftext|>"});
}

ClipTokenizer::ClipTokenizer(const ClipTokenizer& other)
    : vocab_(other.vocab_),
      merge_rank_(other.merge_rank_),
      special_(other.special_),
      split_tokens_(other.split_tokens_),
      max_length_(other.max_length_),
      bos_id_(other.bos_id_),
      eos_id_(other.eos_id_),
      pad_id_(other.pad_id_),
      unk_id_(other.unk_id_) {
  std::lock_guard lock(other.cache_mutex_);
  cache_ = other.cache_;
}

std::vector<std::string> ClipTokenizer::bpe(const std::string& token) const {
  {
    std::lock_guard lock(cache_mutex_);
    if (auto it = cache_.find(token); it != cache_.end()) return it->second;
  }
  std::vector<std::string> word;
  for (char32_t c : text::decode_utf8(token)) word.push_back(text::encode_utf8(c));
  if (word.empty()) return {};
  word.back() += kEndOfWord;
  while (word.size() > 1) {
    int best = std::numeric_limits<int>::max();
    std::size_t best_i = 0;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = merge_rank_.find(word[i] + " " + word[i + 1]);
      if (it != merge_rank_.end() && it->second < best) {
        best = it->second;
        best_i = i;
      }
    }
    if (best == std::numeric_limits<int>::max()) break;
    const std::string first = word[best_i], second = word[best_i + 1];
    std::vector<std::string> merged;
    merged.reserve(word.size());
    for (std::size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(word[i++]);
      }
    }
    word = std::move(merged);
  }
  std::lock_guard lock(cache_mutex_);
  cache_.emplace(token, word);
  return word;
}

void ClipTokenizer::tokenize_plain(std::string_view text, std::vector<std::string>& out) const {
  const auto& enc = byte_encoder();
  std::vector<std::u32string> pieces;
  for (const auto& word : text::basic_clean_words(text)) pretokenize(word, pieces);
  for (const auto& piece : pieces) {
    std::string encoded;
    for (unsigned char b : text::encode_utf8(piece)) encoded += enc[b];
    for (auto& t : bpe(encoded)) out.push_back(std::move(t));
  }
}

std::vector<std::string> ClipTokenizer::bpe_tokens(std::string_view text) const {
  std::vector<std::string> out;
  std::size_t start = 0, i = 0;
  while (i < text.size()) {
    const std::string* hit = nullptr;
    for (const auto& s : split_tokens_)
      if (text.compare(i, s.size(), s) == 0) {
        hit = &s;
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    tokenize_plain(text.substr(start, i - start), out);
    out.push_back(*hit);
    i += hit->size();
    start = i;
  }
  tokenize_plain(text.substr(start), out);
  return out;
}

std::int64_t ClipTokenizer::id_of(const std::string& token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? unk_id_ : it->second;
}

std::vector<std::int64_t> ClipTokenizer::token_ids(std::string_view text) const {
  std::vector<std::int64_t> ids;
  for (const auto& t : bpe_tokens(text)) ids.push_back(id_of(t));
  return ids;
}

ClipEncoding ClipTokenizer::encode(std::string_view text) const {
  const auto tokens = token_ids(text);
  const std::size_t room = static_cast<std::size_t>(max_length_) - 2;
  ClipEncoding e;
  e.n_untruncated = static_cast<int>(tokens.size()) + 2;
  e.truncated = tokens.size() > room;
  e.ids.reserve(static_cast<std::size_t>(max_length_));
  e.ids.push_back(bos_id_);
  e.ids.insert(e.ids.end(), tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(std::min(room, tokens.size())));
  e.ids.push_back(eos_id_);
  e.ids.resize(static_cast<std::size_t>(max_length_), pad_id_);
  e.eos_index = static_cast<int>(std::find(e.ids.begin(), e.ids.end(), eos_id_) - e.ids.begin());
  return e;
}

}  // namespace streamgen
