#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/clip_tokenizer.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "test_util.h"

namespace streamgen {
namespace {

const ClipTokenizer& sd15() {
  static const ClipTokenizer t = ClipTokenizer::from_folder(test::data_path("tiny-sd15/tokenizer"));
  return t;
}
const ClipTokenizer& sd21() {
  static const ClipTokenizer t = ClipTokenizer::from_folder(test::data_path("tiny-sd21/tokenizer"));
  return t;
}

const nlohmann::json& tokenizer_cases() {
  static const nlohmann::json j = read_json_file(test::data_path("tokenizer/cases.json"));
  return j["cases"];
}

TEST(ClipTokenizer, PaddingConventionsComeFromTheFolder) {
  EXPECT_EQ(sd15().pad_id(), 49407);
  EXPECT_EQ(sd21().pad_id(), 0);
  EXPECT_EQ(sd15().bos_id(), 49406);
  EXPECT_EQ(sd15().eos_id(), 49407);
  EXPECT_EQ(sd15().max_length(), 77);
  EXPECT_EQ(sd15().vocab_size(), 49408u);
}

TEST(ClipTokenizer, EveryGoldenCaseBothConventions) {
  ASSERT_EQ(tokenizer_cases().size(), 64u);
  int checked = 0;
  for (const auto& c : tokenizer_cases()) {
    const auto prompt = c["prompt"].get<std::string>();
    SCOPED_TRACE("prompt: " + prompt);
    for (const auto& [label, tok] : {std::pair{"sd15", &sd15()}, std::pair{"sd21", &sd21()}}) {
      SCOPED_TRACE(label);
      const auto& want = c[label];
      const auto got = tok->encode(prompt);
      EXPECT_EQ(got.ids, want["input_ids"].get<std::vector<std::int64_t>>());
      EXPECT_EQ(got.n_untruncated, want["n_untruncated"].get<int>());
      EXPECT_EQ(got.truncated, want["truncated"].get<bool>());
      EXPECT_EQ(got.eos_index, want["eos_index"].get<int>());
      ++checked;
    }
    std::vector<std::string> tokens{"<|startoftext|>"};
    for (auto& t : sd15().bpe_tokens(prompt)) tokens.push_back(t);
    tokens.push_back("<|endoftext|>");
    EXPECT_EQ(tokens, c["bpe_tokens"].get<std::vector<std::string>>());
  }
  EXPECT_EQ(checked, 128);
}

TEST(ClipTokenizer, BatchTensorAndInvalidUtf8) {
  const auto ids = sd15().encode_batch({"a photo of a cat", ""});
  EXPECT_EQ(ids.scalar_type(), torch::kInt64);
  EXPECT_EQ(ids.sizes(), (std::vector<std::int64_t>{2, 77}));
  EXPECT_EQ(ids[0][1].item<std::int64_t>(), 320);  // "a</w>"
  EXPECT_EQ(ids[1][1].item<std::int64_t>(), 49407);
  // Invalid UTF-8 bytes are dropped like U+FFFD in the reference, never a crash.
  const auto e = sd15().encode(std::string("a\xff\xfe photo"));
  EXPECT_EQ(e.ids[1], 320);
}

TEST(ClipTokenizer, MissingFilesAreNamed) {
  test::TempDir dir;
  try {
    ClipTokenizer::from_folder(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no vocab.json"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ClipTokenizer::from_folder(dir / "absent"), Error);
}

}  // namespace
}  // namespace streamgen
