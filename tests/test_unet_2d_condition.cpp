#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/error.h"
#include "streamgen/safetensors.h"
#include "streamgen/state_dict.h"
#include "streamgen/tensor_compare.h"
#include "streamgen/unet_2d_condition.h"
#include "bf16_bound.h"
#include "test_util.h"

namespace streamgen {
namespace {

class UNetGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(UNetGolden, EveryCaseInFp32AndBf16) {
  const auto variant = GetParam();
  const auto golden = SafetensorsFile::open(test::data_path(variant + "_unet.safetensors"));
  torch::NoGradGuard no_grad;
  auto unet = load_unet_2d_condition(test::data_path(variant + "/unet"));
  ComputeOptions bf16;
  bf16.dtype = torch::kBFloat16;
  auto unet16 = load_unet_2d_condition(test::data_path(variant + "/unet"), bf16);
  auto rounded = load_unet_2d_condition(test::data_path(variant + "/unet"));  // fp32 on bf16 weights
  test::round_parameters_to(*rounded);
  const double reduction = test::reduction_error(test::widest_reduction(*unet));
  for (const std::string c : {"case0", "case1", "case2"}) {
    if (!golden.contains(c + ".sample")) continue;  // SDXL's golden has two cases
    SCOPED_TRACE(c);
    const auto sample = golden.tensor(c + ".sample"), t = golden.tensor(c + ".timestep");
    // SDXL's cases add the pooled text projection and time_ids.
    UNetConditioning ctx(golden.tensor(c + ".encoder_hidden_states"));
    if (golden.contains(c + ".text_embeds")) {
      ctx.text_embeds = golden.tensor(c + ".text_embeds");
      ctx.time_ids = golden.tensor(c + ".time_ids");
    }
    const auto ref = golden.tensor(c + ".out");
    const auto d = compare_tensors(unet->forward(sample, t, ctx), ref);
    EXPECT_TRUE(d.within(test::kFp32Tol)) << "rel " << d.rel;
    auto rounded_ctx = ctx;
    rounded_ctx.encoder_hidden_states = test::round_to(ctx.encoder_hidden_states);
    if (ctx.text_embeds.defined()) rounded_ctx.text_embeds = test::round_to(ctx.text_embeds);
    const test::Bf16Bound bound{compare_tensors(rounded->forward(test::round_to(sample), t, rounded_ctx), ref).rel, reduction};
    const auto d16 = compare_tensors(unet16->forward(sample.to(torch::kBFloat16), t, ctx.to(torch::kCPU, torch::kBFloat16)), ref);
    EXPECT_TRUE(d16.within(bound.tol())) << "bf16 rel " << d16.rel << ", " << bound.describe();
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, UNetGolden, ::testing::Values("tiny-sd15", "tiny-sd21", "tiny-sdxl"),
                         [](const auto& info) { return info.param.substr(5); });

TEST(UNet, TimeEmbeddingMatchesTheIntermediates) {
  const auto golden = SafetensorsFile::open(test::data_path("tiny-sd15_unet.safetensors"));
  torch::NoGradGuard no_grad;
  auto unet = load_unet_2d_condition(test::data_path("tiny-sd15/unet"));
  const auto proj = timestep_embedding(golden.tensor("case0.timestep"), 32, true, 0);
  EXPECT_TRUE(compare_tensors(proj, golden.tensor("case0.intermediate.time_proj")).within(1e-6));
  EXPECT_TRUE(compare_tensors(unet->time_embedding(proj), golden.tensor("case0.intermediate.time_embedding")).within(test::kFp32Tol));
}

// SDXL's text_time conditioning (pooled text projection + sinusoids of time_ids through add_embedding) against
// diffusers' intermediates; its outputs (transformer_layers_per_block [1, 2], norm groups 16) are UNetGolden/sdxl's.
TEST(UNet, SdxlTextTimeMatchesDiffusers) {
  const auto golden = SafetensorsFile::open(test::data_path("tiny-sdxl_unet.safetensors"));
  torch::NoGradGuard no_grad;
  auto unet = load_unet_2d_condition(test::data_path("tiny-sdxl/unet"));
  ASSERT_TRUE(unet->config.text_time);
  EXPECT_EQ(unet->config.text_embeds_dim(), 36);
  const auto in = [&](const std::string& k) { return golden.tensor("case0." + k); };
  const auto mid = [&](const std::string& k) { return golden.tensor("case0.intermediate." + k); };
  const auto& c = unet->config;
  const auto add_time = timestep_embedding(in("time_ids").reshape({-1}), c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift).reshape({2, -1});
  EXPECT_TRUE(compare_tensors(add_time, mid("add_time_proj")).within(1e-6));
  EXPECT_TRUE(compare_tensors(torch::cat({in("text_embeds"), add_time}, -1), mid("add_embedding_input")).within(1e-6));
  EXPECT_TRUE(compare_tensors(unet->add_embedding(mid("add_embedding_input")), mid("add_embedding")).within(test::kFp32Tol));
  const UNetConditioning cond{in("encoder_hidden_states"), in("text_embeds"), in("time_ids")};
  const auto emb = embed_timesteps(*unet->time_embedding, unet->add_embedding.get(), c, in("timestep"), cond, 2, torch::kFloat32, "test");
  EXPECT_TRUE(compare_tensors(emb, mid("emb")).within(test::kFp32Tol));

}

TEST(UNet, SdxlWithoutItsAddedConditioningIsAClearError) {
  torch::NoGradGuard no_grad;
  auto unet = load_unet_2d_condition(test::data_path("tiny-sdxl/unet"));
  const auto x = torch::randn({1, 4, 8, 8});
  test::expect_error_mentions([&] { unet->forward(x, torch::tensor({1}), torch::randn({1, 77, 72})); },
                              "needs text_embeds [1, 36] and time_ids [1, 6]; got text_embeds missing");
  test::expect_error_mentions([&] { unet->forward(x, torch::tensor({1}), UNetConditioning{torch::randn({1, 77, 72}), torch::randn({1, 40}), default_time_ids(64, 64)}); },
                              "got text_embeds [1, 40], time_ids [1, 6]");
  auto sd21 = load_unet_2d_condition(test::data_path("tiny-sd21/unet"));
  test::expect_error_mentions([&] { sd21->forward(x, torch::tensor({1}), UNetConditioning{torch::randn({1, 77, 32}), torch::randn({1, 36}), default_time_ids(64, 64)}); },
                              "this model has no added conditioning");
}

TEST(UNet, ConfigErrorsAreSpecific) {
  auto expect = [](nlohmann::json cfg, const std::string& want) {
    try {
      UNet2DConditionConfig::from_json(cfg, "unet/config.json");
      ADD_FAILURE() << "accepted: " << cfg.dump();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  nlohmann::json base = {{"block_out_channels", {32, 64}},
                         {"down_block_types", {"CrossAttnDownBlock2D", "DownBlock2D"}},
                         {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D"}},
                         {"attention_head_dim", 8},
                         {"cross_attention_dim", 32}};
  EXPECT_NO_THROW(UNet2DConditionConfig::from_json(base));
  auto bad = base;
  bad["down_block_types"][1] = "SimpleCrossAttnDownBlock2D";
  expect(bad, "unsupported down block type 'SimpleCrossAttnDownBlock2D'");
  bad = base;
  bad["addition_embed_type"] = "text_time";
  expect(bad, "config has no 'addition_time_embed_dim'");
  bad["addition_time_embed_dim"] = 8;
  bad["projection_class_embeddings_input_dim"] = 48;
  expect(bad, "leaves no room for the pooled text embedding beside 6 x addition_time_embed_dim = 48");
  bad["addition_embed_type"] = "image";
  expect(bad, "addition_embed_type 'image' is not supported");
  bad = base;
  bad["attention_head_dim"] = {2, 3};
  expect(bad, "not divisible into 3 heads");
  bad = base;
  bad["mid_block_type"] = "UNetMidBlock2DSimpleCrossAttn";
  expect(bad, "unsupported mid block type");
}

TEST(UNet, WrongShapesAreClearErrors) {
  torch::NoGradGuard no_grad;
  auto unet = load_unet_2d_condition(test::data_path("tiny-sd21/unet"));
  const auto ctx = torch::randn({1, 77, 32});
  EXPECT_THROW(unet->forward(torch::randn({1, 3, 8, 8}), torch::tensor({1}), ctx), Error);
  EXPECT_THROW(unet->forward(torch::randn({1, 4, 8, 8}), torch::tensor({1}), torch::randn({1, 77, 16})), Error);
  EXPECT_THROW(unet->forward(torch::randn({2, 4, 8, 8}), torch::tensor({1, 2, 3}), torch::randn({2, 77, 32})), Error);
  // Odd latent sizes work (upsampling follows the skip connections' sizes).
  EXPECT_EQ(unet->forward(torch::randn({1, 4, 9, 7}), torch::tensor({10}), ctx).sizes(), (std::vector<std::int64_t>{1, 4, 9, 7}));
}

TEST(UNet, CheckpointOfAnotherShapeListsEveryProblem) {
  // The tiny SD1.5 weights (1x1 conv projections) into the SD2.1 config (linear projections).
  const auto cfg = UNet2DConditionConfig::from_json(nlohmann::json::parse(test::read_bytes(test::data_path("tiny-sd21/unet/config.json"))));
  UNet2DConditionModel unet(cfg);
  try {
    load_state_dict(*unet, WeightSet::open(test::data_path("tiny-sd15/unet/diffusion_pytorch_model.safetensors")));
    FAIL();
  } catch (const StateDictError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("proj_in.weight: checkpoint [32, 32, 1, 1], module [32, 32]"), std::string::npos) << msg.substr(0, 2000);
  }
}

}  // namespace
}  // namespace streamgen
