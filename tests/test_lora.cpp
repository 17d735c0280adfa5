// LoRA files fused into tiny-sd15 against diffusers' own load_lora_weights + fuse_lora (tests/data/lora/).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/clip_text_model.h"
#include "streamgen/error.h"
#include "streamgen/lora.h"
#include "streamgen/prompt_encoder.h"
#include "streamgen/safetensors.h"
#include "streamgen/tensor_compare.h"
#include "streamgen/unet_2d_condition.h"
#include "bf16_bound.h"
#include "test_util.h"

namespace streamgen {
namespace {

std::filesystem::path lora_path(const std::string& name) { return test::data_path("lora/" + name + ".safetensors"); }

struct TinySd15 {
  UNet2DConditionModel unet;
  ClipTextModel text_encoder;
  explicit TinySd15(const ComputeOptions& compute = {})
      : unet(load_unet_2d_condition(test::data_path("tiny-sd15/unet"), compute)),
        text_encoder(load_clip_text_model(test::data_path("tiny-sd15/text_encoder"), compute)) {}
  std::vector<LoraTarget> targets() { return {{"unet", unet.get()}, {"text_encoder", text_encoder.get()}}; }
};

// Every UNet case and (when the golden has it) the text encoder at `scale`, against the golden outputs.
void expect_matches_golden(TinySd15& m, const SafetensorsFile& golden, double scale, double tol, torch::ScalarType dtype = torch::kFloat32) {
  torch::NoGradGuard no_grad;
  const auto s = "scale" + python_float_repr(scale) + ".";
  for (const std::string c : {"case0", "case1", "case2"}) {
    SCOPED_TRACE(s + c);
    const auto in = [&](const std::string& n) { return golden.tensor("unet." + c + "." + n); };
    const auto out = m.unet->forward(in("sample").to(dtype), in("timestep"), in("encoder_hidden_states").to(dtype));
    const auto d = compare_tensors(out.to(torch::kFloat32), golden.tensor(s + "unet." + c + ".out"));
    EXPECT_TRUE(d.within(tol)) << "rel " << d.rel;
  }
  if (golden.contains(s + "te.last_hidden_state")) {
    const auto out = m.text_encoder->forward(golden.tensor("te.input_ids")).last_hidden_state;
    const auto d = compare_tensors(out.to(torch::kFloat32), golden.tensor(s + "te.last_hidden_state"));
    EXPECT_TRUE(d.within(tol)) << "text encoder rel " << d.rel;
  }
}

struct Case {
  const char* file;
  const char* golden;
};

class LoraGolden : public ::testing::TestWithParam<Case> {};

TEST_P(LoraGolden, FusedModelsMatchDiffusersAtBothScales) {
  const auto golden = SafetensorsFile::open(lora_path(GetParam().golden));
  for (const double scale : {1.0, 0.5}) {
    TinySd15 m;
    LoraFusion fusion({{lora_path(GetParam().file), scale}}, m.targets());
    expect_matches_golden(m, golden, scale, test::kFp32Tol);
  }
}

TEST_P(LoraGolden, TheFusedDeltaIsTheGoldensDelta) {
  const auto golden = SafetensorsFile::open(lora_path(GetParam().golden));
  TinySd15 base, fused;
  LoraFusion fusion({{lora_path(GetParam().file), 1.0}}, fused.targets());
  auto params = [](TinySd15& m) {
    auto p = m.unet->named_parameters();
    std::map<std::string, torch::Tensor> out;
    for (const auto& i : p) out["unet." + i.key()] = i.value();
    for (const auto& i : m.text_encoder->named_parameters()) out["text_encoder." + i.key()] = i.value();
    return out;
  };
  const auto before = params(base), after = params(fused);
  int checked = 0;
  for (const auto& entry : golden.entries()) {
    const auto& name = entry.name;
    if (name.rfind("sanity.delta.", 0) != 0) continue;
    const auto weight = name.substr(13);
    SCOPED_TRACE(weight);
    ASSERT_TRUE(after.count(weight));
    EXPECT_TRUE(compare_tensors(after.at(weight) - before.at(weight), golden.tensor(name)).within(1e-6));
    ++checked;
  }
  EXPECT_GE(checked, 2);
  // Biases and every weight the file does not name stay bit-identical.
  std::size_t changed = 0;
  for (const auto& [name, t] : before)
    if (!torch::equal(t, after.at(name))) ++changed;
  EXPECT_EQ(changed, fusion.fused_weights());
}

INSTANTIATE_TEST_SUITE_P(Files, LoraGolden,
                         ::testing::Values(Case{"tiny-sd15_kohya_r4", "tiny-sd15_kohya_r4_golden"},
                                           Case{"tiny-sd15_diffusers_r4", "tiny-sd15_diffusers_r4_golden"},
                                           Case{"tiny-sd15_peft_r4", "tiny-sd15_diffusers_r4_golden"}),
                         [](const auto& info) { return std::string(info.param.file).substr(10, 5) == "kohya" ? "kohya"
                                                       : std::string(info.param.file).find("peft") != std::string::npos ? "peft" : "diffusers"; });

TEST(Lora, FilesAreReadWithTheirRanksAlphasAndTargets) {
  const auto kohya = LoraFile::read(lora_path("tiny-sd15_kohya_r4"));
  EXPECT_EQ(kohya.format, "kohya");
  EXPECT_EQ(kohya.modules.size(), 145u);
  EXPECT_EQ(kohya.summary(), "kohya, 145 modules (text_encoder 30, unet 115), rank 4, alpha 2");
  const auto diffusers = LoraFile::read(lora_path("tiny-sd15_diffusers_r4"));
  EXPECT_EQ(diffusers.format, "diffusers+peft");  // diffusers 0.27 writes both namings into one file
  EXPECT_EQ(diffusers.modules.size(), 117u);
  EXPECT_EQ(LoraFile::read(lora_path("tiny-sd15_peft_r4")).format, "peft");
  for (const auto& m : diffusers.modules) EXPECT_EQ(m.alpha, 4.0) << m.key;  // no alpha stored: alpha = rank
}

// Every named parameter of both models, which must be bit-identical.
void expect_same_weights(torch::nn::Module& a, torch::nn::Module& b) {
  auto pb = b.named_parameters();
  for (const auto& i : a.named_parameters()) ASSERT_TRUE(torch::equal(i.value(), pb[i.key()])) << i.key();
}

TEST(Lora, ScaleChangesGiveTheWeightsOfAFreshLoadAtThatScale) {
  const auto golden = SafetensorsFile::open(lora_path("tiny-sd15_kohya_r4_golden"));
  const auto file = lora_path("tiny-sd15_kohya_r4");
  TinySd15 m;
  LoraFusion fusion({{file, 1.0}}, m.targets(), LoraRescale::Exact);
  EXPECT_TRUE(fusion.rescalable());
  fusion.set_scale(0, 0.5);
  expect_matches_golden(m, golden, 0.5, test::kFp32Tol);
  // A slider dragged back and forth: no drift at all.
  for (int i = 0; i < 100; ++i) fusion.set_scale(0, i % 7 * 0.37 - 1.0);
  fusion.set_scale(0, 1.0);
  TinySd15 fresh;
  LoraFusion fresh_fusion({{file, 1.0}}, fresh.targets());
  expect_same_weights(*m.unet, *fresh.unet);
  expect_same_weights(*m.text_encoder, *fresh.text_encoder);
  fusion.set_scale(0, 0.0);  // scale 0 is the base model
  TinySd15 base;
  expect_same_weights(*m.unet, *base.unet);
  // What is kept beyond the factors: the adapted weights as loaded (those a fusion changes), in float16,
  // which holds them exactly (the tiny model's checkpoint is float16).
  std::int64_t adapted_bytes = 0;
  auto count = [&](torch::nn::Module& loaded, torch::nn::Module& fused) {
    auto f = fused.named_parameters();
    for (const auto& p : loaded.named_parameters())
      if (!torch::equal(p.value(), f[p.key()])) adapted_bytes += p.value().numel() * 2;
  };
  count(*base.unet, *fresh.unet);
  count(*base.text_encoder, *fresh.text_encoder);
  EXPECT_EQ(fusion.kept_bytes() - fresh_fusion.kept_bytes(), adapted_bytes);
}

TEST(Lora, HighRankLorasKeepTheirUpdateDenseOnTheCpuAndStayExact) {
  test::TempDir dir;
  torch::manual_seed(5);
  NamedTensors tensors;
  for (const std::string m : {"down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "down_blocks_0_resnets_0_conv1"}) {
    const bool conv = m.find("conv") != std::string::npos;
    tensors.emplace_back("lora_unet_" + m + ".lora_down.weight", conv ? torch::randn({64, 32, 3, 3}) * 0.05 : torch::randn({64, 32}) * 0.1);
    tensors.emplace_back("lora_unet_" + m + ".lora_up.weight", conv ? torch::randn({32, 64, 1, 1}) * 0.1 : torch::randn({32, 64}) * 0.1);
  }
  const auto file = dir / "r64.safetensors";
  save_safetensors(file, tensors);
  TinySd15 live, fresh, once;
  LoraFusion fusion({{file, 1.0}}, {{"unet", live.unet.get()}}, LoraRescale::Exact);
  for (const double s : {0.3, -0.7, 2.0, 1.0}) fusion.set_scale(0, s);
  LoraFusion fresh_fusion({{file, 1.0}}, {{"unet", fresh.unet.get()}}, LoraRescale::Exact);
  expect_same_weights(*live.unet, *fresh.unet);
  // The dense update and the matrix product agree to float32 rounding.
  LoraFusion one_shot({{file, 1.0}}, {{"unet", once.unet.get()}});
  auto a = live.unet->named_parameters();
  for (const auto& i : once.unet->named_parameters()) EXPECT_TRUE(compare_tensors(a[i.key()], i.value()).within(1e-6)) << i.key();
  // Kept: the two weights as loaded (float16 holds them exactly) and their float32 dense updates.
  const std::int64_t weights = 32 * 32 + 32 * 32 * 9;
  EXPECT_EQ(fusion.kept_bytes() - one_shot.kept_bytes(), weights * 2 + weights * 4);
}

TEST(Lora, ScalesOfAOneShotFusionAreFixed) {
  TinySd15 m;
  LoraFusion fusion({{lora_path("tiny-sd15_kohya_r4"), 1.0}}, m.targets());
  EXPECT_FALSE(fusion.rescalable());
  fusion.set_scales({1.0});  // unchanged: fine
  test::expect_error_mentions([&] { fusion.set_scale(0, 0.5); }, "LoRA scales are fixed for this model");
  test::expect_error_mentions([&] { fusion.set_scales({1.0, 2.0}); }, "2 given, 1 LoRA(s) loaded");
}

TEST(Lora, SeveralLorasAreSummed) {
  TinySd15 both, once;
  const auto kohya = lora_path("tiny-sd15_kohya_r4");
  LoraFusion halves({{kohya, 0.5}, {kohya, 0.5}}, both.targets());
  LoraFusion whole({{kohya, 1.0}}, once.targets());
  for (const auto& i : once.unet->named_parameters())
    EXPECT_TRUE(compare_tensors(both.unet->named_parameters()[i.key()], i.value()).within(1e-6)) << i.key();
  // The diffusers and PEFT files hold the same LoRA: +1 and -1 cancel.
  TinySd15 cancelled, base;
  LoraFusion opposite({{lora_path("tiny-sd15_diffusers_r4"), 1.0}, {lora_path("tiny-sd15_peft_r4"), -1.0}}, cancelled.targets());
  EXPECT_EQ(opposite.fused_weights(), 117u);
  for (const auto& i : base.unet->named_parameters())
    EXPECT_TRUE(compare_tensors(cancelled.unet->named_parameters()[i.key()], i.value()).within(1e-6)) << i.key();
  EXPECT_EQ(opposite.scales(), (std::vector<double>{1.0, -1.0}));
}

TEST(Lora, Bf16ModelsFuseInFloat32AndReFuseFromTheirLoadedWeights) {
  const auto golden = SafetensorsFile::open(lora_path("tiny-sd15_kohya_r4_golden"));
  ComputeOptions bf16;
  bf16.dtype = torch::kBFloat16;
  TinySd15 m(bf16);
  LoraFusion fusion({{lora_path("tiny-sd15_kohya_r4"), 1.0}}, m.targets(), LoraRescale::Exact);
  for (int i = 0; i < 20; ++i) fusion.set_scale(0, i * 0.1);
  fusion.set_scale(0, 0.5);
  // The fp32 model on exactly the weights the bf16 model holds: base rounded to bf16, fused in fp32, rounded.
  TinySd15 rounded;
  test::round_parameters_to(*rounded.unet);
  test::round_parameters_to(*rounded.text_encoder);
  LoraFusion same({{lora_path("tiny-sd15_kohya_r4"), 0.5}}, rounded.targets());
  test::round_parameters_to(*rounded.unet);
  test::round_parameters_to(*rounded.text_encoder);
  for (const auto& i : rounded.unet->named_parameters())
    ASSERT_TRUE(torch::equal(m.unet->named_parameters()[i.key()].to(torch::kFloat32), i.value())) << i.key();
  const double reduction = test::reduction_error(test::widest_reduction(*rounded.unet));
  torch::NoGradGuard no_grad;
  for (const std::string c : {"case0", "case1", "case2"}) {
    SCOPED_TRACE(c);
    const auto in = [&](const std::string& n) { return golden.tensor("unet." + c + "." + n); };
    const auto ref = golden.tensor("scale0.5.unet." + c + ".out");
    const test::Bf16Bound bound{
        compare_tensors(rounded.unet->forward(test::round_to(in("sample")), in("timestep"), test::round_to(in("encoder_hidden_states"))), ref).rel,
        reduction};
    const auto out = m.unet->forward(in("sample").to(torch::kBFloat16), in("timestep"), in("encoder_hidden_states").to(torch::kBFloat16));
    const auto d = compare_tensors(out.to(torch::kFloat32), ref);
    EXPECT_TRUE(d.within(bound.tol())) << "bf16 rel " << d.rel << ", " << bound.describe();
  }
}

TEST(Lora, OnlyTheLoadedTargetsAreAdapted) {
  TinySd15 m;
  LoraFusion unet_only({{lora_path("tiny-sd15_kohya_r4"), 1.0}}, {{"unet", m.unet.get()}, {"text_encoder", nullptr}});
  EXPECT_EQ(unet_only.fused_weights(), 115u);
  EXPECT_TRUE(unet_only.adapts("unet"));
  EXPECT_FALSE(unet_only.adapts("text_encoder"));
}

// A LoRA file written from `tensors` (float32).
std::filesystem::path write_lora(const test::TempDir& dir, const std::string& name, const NamedTensors& tensors) {
  const auto path = dir / (name + ".safetensors");
  save_safetensors(path, tensors);
  return path;
}

TEST(Lora, EveryProblemIsListedAndNothingIsFused) {
  test::TempDir dir;
  const std::string q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
  const std::string k2 = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
  const auto file = write_lora(dir, "bad", {{q + ".lora_down.weight", torch::ones({4, 32})},
                                            {q + ".lora_up.weight", torch::ones({32, 4})},
                                            {"lora_unet_down_blocks_9_resnets_0_conv1.lora_down.weight", torch::ones({4, 32, 3, 3})},
                                            {"lora_unet_down_blocks_9_resnets_0_conv1.lora_up.weight", torch::ones({32, 4, 1, 1})},
                                            {k2 + ".lora_down.weight", torch::ones({4, 2048})},
                                            {k2 + ".lora_up.weight", torch::ones({32, 4})},
                                            {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", torch::ones({4, 32})},
                                            {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", torch::ones({37, 4})}});
  TinySd15 m, base;
  try {
    LoraFusion fusion({{file, 1.0}}, m.targets());
    FAIL() << "fused";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("3 problem(s); nothing was fused"), std::string::npos) << what;
    EXPECT_NE(what.find("lora_unet_down_blocks_9_resnets_0_conv1 matches no layer of the unet"), std::string::npos) << what;
    EXPECT_NE(what.find(k2 + " makes a [32, 2048] update"), std::string::npos) << what;
    EXPECT_NE(what.find("attn2.to_k.weight' is [32, 32]"), std::string::npos) << what;
    EXPECT_NE(what.find("1 module(s) for a 'text_encoder_2'"), std::string::npos) << what;
    EXPECT_NE(what.find("made for SDXL"), std::string::npos) << what;
  }
  for (const auto& i : base.unet->named_parameters()) ASSERT_TRUE(torch::equal(m.unet->named_parameters()[i.key()], i.value())) << i.key();
}

// kohya's SDXL LoRAs name the UNet's layers in the original (SGM) layout and the two text encoders lora_te1_ /
// lora_te2_: the same LoRA under SGM names and under diffusers' names fuses into the same weights, each module by
// the fusion rule, and the second text encoder's change reaches the pooled embedding.
TEST(Lora, SdxlOriginalBlockNamesAndBothTextEncoders) {
  test::TempDir dir;
  torch::manual_seed(34);
  struct Module {
    std::string sgm, diffusers, weight;  // kohya names in both layouts, and the weight it adapts
    std::vector<std::int64_t> down, up;
  };
  const std::vector<Module> modules = {
      {"lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k", "lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k",
       "unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k", {4, 72}, {48, 4}},
      {"lora_unet_output_blocks_0_0_in_layers_2", "lora_unet_up_blocks_0_resnets_0_conv1", "unet.up_blocks.0.resnets.0.conv1", {4, 96, 3, 3}, {48, 4, 1, 1}},
      {"lora_unet_middle_block_1_transformer_blocks_1_ff_net_2", "lora_unet_mid_block_attentions_0_transformer_blocks_1_ff_net_2",
       "unet.mid_block.attentions.0.transformer_blocks.1.ff.net.2", {4, 192}, {48, 4}},
      {"lora_unet_output_blocks_2_2_conv", "lora_unet_up_blocks_0_upsamplers_0_conv", "unet.up_blocks.0.upsamplers.0.conv", {4, 48, 3, 3}, {48, 4, 1, 1}},
      {"lora_unet_input_blocks_3_0_op", "lora_unet_down_blocks_0_downsamplers_0_conv", "unet.down_blocks.0.downsamplers.0.conv", {4, 32, 3, 3}, {32, 4, 1, 1}},
      {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
       "text_encoder.text_model.encoder.layers.0.self_attn.q_proj", {4, 32}, {32, 4}},
      {"lora_te2_text_model_encoder_layers_2_mlp_fc1", "lora_te2_text_model_encoder_layers_2_mlp_fc1", "text_encoder_2.text_model.encoder.layers.2.mlp.fc1",
       {4, 40}, {53, 4}}};
  NamedTensors sgm, diffusers;
  std::map<std::string, torch::Tensor> expected_delta;  // weight -> scale * alpha / r * up @ down
  const double scale = 0.75, alpha = 2.0;
  for (const auto& m : modules) {
    const auto down = torch::randn(m.down) * 0.3, up = torch::randn(m.up) * 0.3;
    for (auto* file : {&sgm, &diffusers}) {
      const auto& name = file == &sgm ? m.sgm : m.diffusers;
      file->push_back({name + ".lora_down.weight", down});
      file->push_back({name + ".lora_up.weight", up});
      file->push_back({name + ".alpha", torch::tensor(alpha)});
    }
    expected_delta[m.weight] = scale * alpha / 4 * torch::mm(up.reshape({m.up[0], 4}), down.reshape({4, -1}));
  }
  const auto sgm_file = write_lora(dir, "sgm", sgm), diffusers_file = write_lora(dir, "diffusers", diffusers);
  struct TinySdxl {
    UNet2DConditionModel unet = load_unet_2d_condition(test::data_path("tiny-sdxl/unet"));
    PromptEncoder prompts = PromptEncoder::load(test::data_path("tiny-sdxl"), {});
    std::vector<LoraTarget> targets() {
      auto t = prompts.lora_targets();
      t.insert(t.begin(), {"unet", unet.get()});
      return t;
    }
    std::map<std::string, torch::Tensor> params() {
      std::map<std::string, torch::Tensor> out;
      for (const auto& i : unet->named_parameters()) out["unet." + i.key()] = i.value();
      for (const auto& i : prompts.text_encoder->named_parameters()) out["text_encoder." + i.key()] = i.value();
      for (const auto& i : prompts.text_encoder_2->named_parameters()) out["text_encoder_2." + i.key()] = i.value();
      return out;
    }
  } base, a, b;
  LoraFusion fa({{sgm_file, scale}}, a.targets()), fb({{diffusers_file, scale}}, b.targets());
  EXPECT_TRUE(fa.adapts("text_encoder_2"));
  const auto pb = b.params(), p0 = base.params();
  int changed = 0;
  for (const auto& [name, w] : a.params()) {
    ASSERT_TRUE(torch::equal(w, pb.at(name))) << name << ": SGM and diffusers names fuse differently";
    const auto it = expected_delta.find(name.substr(0, name.size() - 7));
    if (name.ends_with(".weight") && it != expected_delta.end()) {
      ++changed;
      EXPECT_LE(compare_tensors((w - p0.at(name)).reshape({w.size(0), -1}), it->second).rel, 1e-6) << name;
    } else {
      EXPECT_TRUE(torch::equal(w, p0.at(name))) << name << " changed";
    }
  }
  EXPECT_EQ(changed, static_cast<int>(modules.size()));
  const auto before = base.prompts.encode({"a red fox"}), after = a.prompts.encode({"a red fox"});
  EXPECT_GT((after.text_embeds - before.text_embeds).abs().max().item<float>(), 1e-3) << "lora_te2_ reaches the pooled embedding";

  // An SDXL LoRA on an SD1.5 pipeline: the blocks it names are not there, and the hint says why.
  TinySd15 sd15;
  test::expect_error_mentions([&] { LoraFusion({{sgm_file, 1.0}}, sd15.targets()); }, "a LoRA for another model family");
}

TEST(Lora, FilesThatAreNotPlainLorasAreRefusedByKey) {
  test::TempDir dir;
  auto expect = [&](const std::string& name, const NamedTensors& tensors, const std::string& want) {
    SCOPED_TRACE(name);
    test::expect_error_mentions([&] { LoraFile::read(write_lora(dir, name, tensors)); }, want);
  };
  const std::string stem = "lora_unet_mid_block_resnets_0_conv1";
  expect("loha", {{stem + ".hada_w1_a", torch::ones({4, 4})}, {stem + ".alpha", torch::ones({})}}, stem + ".hada_w1_a: a LyCORIS LoHa module");
  expect("dora", {{"unet.mid_block.resnets.0.conv1.lora_magnitude_vector", torch::ones({4})}}, "a DoRA magnitude vector");
  expect("unknown", {{"model.diffusion_model.input_blocks.0.0.weight", torch::ones({4})}}, "not a LoRA key");
  expect("no-up", {{stem + ".lora_down.weight", torch::ones({4, 4})}}, stem + ": has a down matrix but no up matrix");
  expect("rank", {{stem + ".lora_down.weight", torch::ones({4, 8})}, {stem + ".lora_up.weight", torch::ones({8, 3})}}, "disagree on the rank");
  expect("alpha", {{stem + ".lora_down.weight", torch::ones({4, 8})}, {stem + ".lora_up.weight", torch::ones({8, 4})}, {stem + ".alpha", torch::ones({2})}},
         "alpha [2] should be one number");
  auto nan = torch::ones({4, 8});
  nan[0][0] = NAN;
  expect("nan", {{stem + ".lora_down.weight", nan}, {stem + ".lora_up.weight", torch::ones({8, 4})}}, "holds NaN or infinite values");
  expect("ints", {{stem + ".lora_down.weight", torch::ones({4, 8}, torch::kInt32)}, {stem + ".lora_up.weight", torch::ones({8, 4})}},
         "expected a floating-point tensor");
  expect("empty", {{"unrelated", torch::ones({1})}}, "not a LoRA key");
  test::expect_error_mentions([&] { LoraFile::read(dir / "missing.safetensors"); }, "missing.safetensors' does not exist");
}

TEST(Lora, SpecsAndScaleLabels) {
  EXPECT_EQ(parse_lora_spec("a.safetensors").file, "a.safetensors");
  EXPECT_EQ(parse_lora_spec("a.safetensors").scale, 1.0);
  EXPECT_EQ(parse_lora_spec("dir/a.safetensors:0.5").scale, 0.5);
  EXPECT_EQ(parse_lora_spec("dir/a.safetensors:-1").scale, -1.0);
  EXPECT_EQ(parse_lora_spec("odd:name.safetensors").file, "odd:name.safetensors");
  test::expect_error_mentions([] { parse_lora_spec(":0.5"); }, "expected PATH or PATH:SCALE");
  test::expect_error_mentions([] { parse_lora_spec("a:inf"); }, "finite");
  EXPECT_EQ(python_float_repr(1.0), "1.0");
  EXPECT_EQ(python_float_repr(0.5), "0.5");
  EXPECT_EQ(python_float_repr(0.25), "0.25");
  EXPECT_EQ(python_float_repr(-2), "-2.0");
}

}  // namespace
}  // namespace streamgen
