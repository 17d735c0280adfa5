#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/clip_text_model.h"
#include "streamgen/clip_tokenizer.h"
#include "streamgen/error.h"
#include "streamgen/safetensors.h"
#include "streamgen/tensor_compare.h"
#include "bf16_bound.h"
#include "test_util.h"

namespace streamgen {
namespace {

const std::vector<std::string> kPrompts = {"a photo of a cat", "an astronaut riding a horse on mars, 4k, highly detailed", ""};

class ClipTextGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ClipTextGolden, MatchesTheReferenceInFp32AndBf16) {
  const std::string variant = GetParam();
  const auto golden = SafetensorsFile::open(test::data_path(variant + "_text_encoder.safetensors"));
  const auto ids = golden.tensor("input_ids");
  // The tokenizer of the same pipeline produces exactly these ids.
  const auto tok = ClipTokenizer::from_folder(test::data_path(variant + "/tokenizer"));
  EXPECT_TRUE(torch::equal(tok.encode_batch(kPrompts), ids));

  torch::NoGradGuard no_grad;
  auto model = load_clip_text_model(test::data_path(variant + "/text_encoder"));
  const auto out = model->forward(ids);
  const auto layers = static_cast<int>(out.hidden_states.size());
  for (int i = 0; i < layers; ++i) {
    const auto d = compare_tensors(out.hidden_states[static_cast<std::size_t>(i)], golden.tensor("hidden_states." + std::to_string(i)));
    EXPECT_TRUE(d.within(test::kFp32Tol)) << "hidden_states." << i << " rel " << d.rel;
  }
  EXPECT_FALSE(golden.contains("hidden_states." + std::to_string(layers)));
  for (const char* name : {"last_hidden_state", "penultimate_hidden_state", "pooler_output"}) {
    const auto& t = std::string(name) == "last_hidden_state"          ? out.last_hidden_state
                    : std::string(name) == "penultimate_hidden_state" ? out.penultimate_hidden_state
                                                                      : out.pooler_output;
    const auto d = compare_tensors(t, golden.tensor(name));
    EXPECT_TRUE(d.within(test::kFp32Tol)) << name << " rel " << d.rel;
  }
  // clip skip: final_layer_norm of the penultimate layer
  const auto skip = model->text_model->final_layer_norm(out.penultimate_hidden_state);
  EXPECT_TRUE(compare_tensors(skip, golden.tensor("penultimate_final_ln")).within(test::kFp32Tol));

  ComputeOptions bf16;
  bf16.dtype = torch::kBFloat16;
  auto model16 = load_clip_text_model(test::data_path(variant + "/text_encoder"), bf16);
  const auto out16 = model16->forward(ids);
  EXPECT_EQ(out16.last_hidden_state.scalar_type(), torch::kBFloat16);
  auto rounded = load_clip_text_model(test::data_path(variant + "/text_encoder"));  // fp32 on bf16 weights
  test::round_parameters_to(*rounded);
  const test::Bf16Bound bound{compare_tensors(rounded->forward(ids).last_hidden_state, golden.tensor("last_hidden_state")).rel,
                              test::reduction_error(test::widest_reduction(*rounded))};
  const auto d16 = compare_tensors(out16.last_hidden_state, golden.tensor("last_hidden_state"));
  EXPECT_TRUE(d16.within(bound.tol())) << "bf16 rel " << d16.rel << ", " << bound.describe();
}

INSTANTIATE_TEST_SUITE_P(Variants, ClipTextGolden, ::testing::Values("tiny-sd15", "tiny-sd21"),
                         [](const auto& info) { return info.param == "tiny-sd15" ? std::string("sd15") : std::string("sd21"); });

TEST(ClipTextModel, RejectsBadInputsAndConfigs) {
  torch::NoGradGuard no_grad;
  auto model = load_clip_text_model(test::data_path("tiny-sd15/text_encoder"));
  EXPECT_THROW(model->forward(torch::zeros({1, 78}, torch::kInt64)), Error);
  EXPECT_THROW(model->forward(torch::full({1, 77}, 49408, torch::kInt64)), Error);
  EXPECT_THROW(model->forward(torch::zeros({1, 77}, torch::kFloat32)), Error);
  nlohmann::json cfg = {{"hidden_size", 30}, {"num_attention_heads", 4}};
  EXPECT_THROW(ClipTextConfig::from_json(cfg), Error);
  cfg = {{"hidden_act", "relu"}};
  EXPECT_THROW(ClipTextConfig::from_json(cfg), Error);
  cfg = {{"hidden_size", "wide"}};
  EXPECT_THROW(ClipTextConfig::from_json(cfg), FormatError);
}

}  // namespace
}  // namespace streamgen
