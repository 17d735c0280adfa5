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

namespace streamgen {
namespace {

// SDXL's two text encoders (CLIPTextModel + CLIPTextModelWithProjection) and tokenizers against transformers /
// diffusers' encode_prompt (tests/data/tiny-sdxl_text_encoders.safetensors).
TEST(SdxlTextEncoders, PromptEmbedsAndPooledProjectionMatchDiffusers) {
  torch::NoGradGuard no_grad;
  const auto golden = SafetensorsFile::open(test::data_path("tiny-sdxl_text_encoders.safetensors"));
  const auto prompts = nlohmann::json::parse(golden.metadata().at("prompts")).get<std::vector<std::string>>();
  const auto dir = test::data_path("tiny-sdxl");
  // Tokenizer 1 pads with EOS (49407), tokenizer 2 with '!' (0).
  EXPECT_TRUE(torch::equal(ClipTokenizer::from_folder(dir / "tokenizer").encode_batch(prompts), golden.tensor("input_ids")));
  EXPECT_TRUE(torch::equal(ClipTokenizer::from_folder(dir / "tokenizer_2").encode_batch(prompts), golden.tensor("input_ids_2")));
  auto te = load_clip_text_model(dir / "text_encoder");
  auto te2 = load_clip_text_model(dir / "text_encoder_2");
  EXPECT_EQ(te2->text_projection->weight.sizes(), (std::vector<std::int64_t>{36, 40}));
  EXPECT_FALSE(te->text_projection);
  const auto out2 = te2->forward(golden.tensor("input_ids_2"));
  EXPECT_TRUE(compare_tensors(out2.hidden_states[0], golden.tensor("te2.hidden_states.0")).within(test::kFp32Tol));
  EXPECT_TRUE(compare_tensors(out2.last_hidden_state, golden.tensor("te2.last_hidden_state")).within(test::kFp32Tol));
  EXPECT_TRUE(compare_tensors(out2.pooler_output, golden.tensor("te2.pooler_output")).within(test::kFp32Tol));
  const auto e = encode_sdxl_prompt(*te, *te2, golden.tensor("input_ids"), golden.tensor("input_ids_2"));
  const auto d = compare_tensors(e.prompt_embeds, golden.tensor("prompt_embeds"));
  EXPECT_TRUE(d.within(test::kFp32Tol)) << "prompt_embeds rel " << d.rel;
  const auto p = compare_tensors(e.pooled_prompt_embeds, golden.tensor("pooled_prompt_embeds"));
  EXPECT_TRUE(p.within(test::kFp32Tol)) << "pooled rel " << p.rel;
  test::expect_error_mentions([&] { encode_sdxl_prompt(*te2, *te, golden.tensor("input_ids"), golden.tensor("input_ids_2")); },
                              "text_encoder_2 must be a CLIPTextModelWithProjection");
}

}  // namespace
}  // namespace streamgen
