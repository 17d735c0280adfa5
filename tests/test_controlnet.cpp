// ControlNetModel against diffusers (tests/data/controlnet/): residuals at conditioning scale 0.8, and the
// UNet output with them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/controlnet.h"
#include "streamgen/error.h"
#include "streamgen/safetensors.h"
#include "streamgen/single_file.h"
#include "streamgen/tensor_compare.h"
#include "streamgen/unet_2d_condition.h"
#include "test_util.h"

namespace streamgen {
namespace {

TEST(ControlNet, ResidualsAndTheUNetWithThemMatchDiffusers) {
  torch::NoGradGuard no_grad;
  const auto golden = SafetensorsFile::open(test::data_path("controlnet/controlnet_golden.safetensors"));
  auto unet = load_unet_2d_condition(test::data_path("tiny-sd15/unet"));
  auto controlnet = load_controlnet(test::data_path("controlnet"));
  const auto sample = golden.tensor("sample"), t = golden.tensor("timestep"), context = golden.tensor("encoder_hidden_states");
  const auto control = control_image_to_unit(golden.tensor("cond_image_u8"));
  ASSERT_EQ(control.size(0), 1);  // one control image for the batch of 2: broadcast
  const auto r = controlnet->forward(sample, t, context, control, 0.8);
  EXPECT_TRUE(compare_tensors(r.cond_embedding, golden.tensor("cond_embedding")).within(test::kFp32Tol));
  ASSERT_EQ(r.residuals.down.size(), 6u);
  for (std::size_t i = 0; i < 6; ++i) {
    const auto d = compare_tensors(r.residuals.down[i], golden.tensor("down_block_res_samples." + std::to_string(i)));
    EXPECT_TRUE(d.within(test::kFp32Tol)) << "down " << i << " rel " << d.rel;
  }
  EXPECT_TRUE(compare_tensors(r.residuals.mid, golden.tensor("mid_block_res_sample")).within(test::kFp32Tol));
  const auto out = unet->forward(sample, t, context, &r.residuals);
  const auto d = compare_tensors(out, golden.tensor("unet_out"));
  EXPECT_TRUE(d.within(test::kFp32Tol)) << "unet_out rel " << d.rel;
  // Without the residuals the UNet is far from it: the residuals are really applied.
  EXPECT_GT(compare_tensors(unet->forward(sample, t, context), golden.tensor("unet_out")).max_abs, 1.0);
}

// The golden ControlNet written in the original layout (lllyasviel's control_model.* names) loads from that
// single file with its configuration inferred, and computes exactly what the diffusers folder does.
TEST(ControlNet, SingleFilesInTheOriginalLayoutLoadWithTheirConfigInferred) {
  torch::NoGradGuard no_grad;
  const auto folder = test::data_path("controlnet");
  const auto config = nlohmann::json::parse(test::read_bytes(folder / "config.json"));
  const auto renames = ldm_controlnet_renames(config, "control_model.");
  // A few names checked by hand against ControlNet's cldm.py layout.
  auto ldm_name_of = [&](const std::string& diffusers) {
    for (const auto& r : renames)
      if (diffusers.rfind(r.to, 0) == 0) return r.from + diffusers.substr(r.to.size());
    return std::string("?") + diffusers;
  };
  EXPECT_EQ(ldm_name_of("controlnet_cond_embedding.conv_in.weight"), "control_model.input_hint_block.0.weight");
  EXPECT_EQ(ldm_name_of("controlnet_cond_embedding.blocks.5.weight"), "control_model.input_hint_block.12.weight");
  EXPECT_EQ(ldm_name_of("controlnet_cond_embedding.conv_out.bias"), "control_model.input_hint_block.14.bias");
  EXPECT_EQ(ldm_name_of("controlnet_down_blocks.5.weight"), "control_model.zero_convs.5.0.weight");
  EXPECT_EQ(ldm_name_of("controlnet_mid_block.weight"), "control_model.middle_block_out.0.weight");
  EXPECT_EQ(ldm_name_of("down_blocks.0.resnets.1.conv1.weight"), "control_model.input_blocks.2.0.in_layers.2.weight");
  EXPECT_EQ(ldm_name_of("down_blocks.0.downsamplers.0.conv.weight"), "control_model.input_blocks.3.0.op.weight");
  EXPECT_EQ(ldm_name_of("time_embedding.linear_2.weight"), "control_model.time_embed.2.weight");

  test::TempDir dir;
  NamedTensors ldm;
  for (const auto& [name, t] : SafetensorsFile::open(folder / "diffusion_pytorch_model.safetensors").tensors()) {
    const auto mapped = ldm_name_of(name);
    ASSERT_NE(mapped[0], '?') << name << " has no original-layout name";
    ldm.emplace_back(mapped, t);
  }
  save_safetensors(dir / "control_sd15_tiny.safetensors", ldm);
  auto from_file = load_controlnet(dir / "control_sd15_tiny.safetensors");
  auto from_folder = load_controlnet(folder);
  EXPECT_EQ(from_file->config.unet.block_out_channels, from_folder->config.unet.block_out_channels);
  EXPECT_EQ(from_file->config.conditioning_embedding_out_channels, from_folder->config.conditioning_embedding_out_channels);
  EXPECT_EQ(from_file->config.unet.heads, from_folder->config.unet.heads);
  const auto golden = SafetensorsFile::open(folder / "controlnet_golden.safetensors");
  const auto control = control_image_to_unit(golden.tensor("cond_image_u8"));
  const auto a = from_file->forward(golden.tensor("sample"), golden.tensor("timestep"), golden.tensor("encoder_hidden_states"), control, 0.8);
  const auto b = from_folder->forward(golden.tensor("sample"), golden.tensor("timestep"), golden.tensor("encoder_hidden_states"), control, 0.8);
  EXPECT_TRUE(torch::equal(a.residuals.mid, b.residuals.mid));
  for (std::size_t i = 0; i < b.residuals.down.size(); ++i) EXPECT_TRUE(torch::equal(a.residuals.down[i], b.residuals.down[i])) << i;
  test::expect_error_mentions([&] { load_controlnet(test::data_path("lora/tiny-sd15_kohya_r4.safetensors")); }, "not a ControlNet single file");
}

// An SDXL ControlNet (diffusers' ControlNetModel.from_unet of an SDXL UNet) has the UNet's add_embedding too. Made
// from the golden-checked tiny SDXL UNet with a zero conditioning embedding and identity zero convs, its residuals are
// exactly the UNet's own skip connections and mid-block output, SDXL's added conditioning included.
TEST(ControlNet, SdxlControlNetsCarryTheAddedConditioning) {
  torch::NoGradGuard no_grad;
  auto unet = load_unet_2d_condition(test::data_path("tiny-sdxl/unet"));
  ControlNetConfig config;
  config.unet = unet->config;
  ControlNetModel controlnet(config);
  const auto unet_params = unet->named_parameters();
  for (auto& p : controlnet->named_parameters()) {
    if (unet_params.contains(p.key())) {
      p.value().copy_(unet_params[p.key()]);
    } else if (p.key().starts_with("controlnet_down_blocks.") || p.key().starts_with("controlnet_mid_block.")) {
      if (p.value().dim() == 4) p.value().copy_(torch::eye(p.value().size(0)).view(p.value().sizes()));
      else p.value().zero_();
    } else {
      ASSERT_TRUE(p.key().starts_with("controlnet_cond_embedding.")) << p.key() << " is neither the UNet's nor the ControlNet's own";
      if (p.key().starts_with("controlnet_cond_embedding.conv_out.")) p.value().zero_();
    }
  }
  ASSERT_FALSE(controlnet->add_embedding.is_empty());
  const auto golden = SafetensorsFile::open(test::data_path("tiny-sdxl_unet.safetensors"));
  const UNetConditioning cond(golden.tensor("case0.encoder_hidden_states"), golden.tensor("case0.text_embeds"), golden.tensor("case0.time_ids"));
  const auto x = golden.tensor("case0.sample"), t = golden.tensor("case0.timestep");
  const auto r = controlnet->forward(x, t, cond, torch::rand({1, 3, 128, 128}), 1.0);

  // The UNet's down path, step by step.
  const auto emb = embed_timesteps(*unet->time_embedding, unet->add_embedding.get(), unet->config, t, cond, 2, torch::kFloat32, "test");
  auto h = unet->conv_in(x);
  std::vector<torch::Tensor> skips{h};
  for (const auto& block : *unet->down_blocks) h = block->as<UNetDownBlock>()->forward(h, emb, cond.encoder_hidden_states, skips);
  h = unet->mid_block(h, emb, cond.encoder_hidden_states);
  ASSERT_EQ(r.residuals.down.size(), skips.size());
  for (std::size_t i = 0; i < skips.size(); ++i) EXPECT_LE(compare_tensors(r.residuals.down[i], skips[i]).rel, 1e-6) << "skip " << i;
  EXPECT_LE(compare_tensors(r.residuals.mid, h).rel, 1e-6);
  // The intermediates diffusers recorded: the same down path.
  EXPECT_LE(compare_tensors(r.residuals.mid, golden.tensor("case0.intermediate.mid_block")).rel, test::kFp32Tol);
  // Without the added conditioning it refuses, as the UNet does.
  test::expect_error_mentions([&] { controlnet->forward(x, t, cond.encoder_hidden_states, torch::rand({1, 3, 128, 128}), 1.0); },
                              "controlnet: this SDXL model (addition_embed_type text_time) needs text_embeds");
}

TEST(ControlNet, MismatchesAreNamed) {
  torch::NoGradGuard no_grad;
  auto controlnet = load_controlnet(test::data_path("controlnet"));
  const auto sample = torch::zeros({1, 4, 16, 16}), t = torch::tensor({10}), context = torch::zeros({1, 77, 32});
  test::expect_error_mentions([&] { controlnet->forward(sample, t, context, torch::zeros({1, 3, 64, 64})); },
                              "the control image must be 3 x 128 x 128 (8x the latent), a batch that divides the sample's; got [1, 3, 64, 64]");
  auto unet = load_unet_2d_condition(test::data_path("tiny-sd15/unet"));
  auto r = controlnet->forward(sample, t, context, torch::zeros({1, 3, 128, 128}));
  r.residuals.down.pop_back();
  test::expect_error_mentions([&] { unet->forward(sample, t, context, &r.residuals); }, "5 ControlNet residuals for 6 skip connections");
  test::expect_error_mentions([] { load_controlnet(test::data_path("taesd")); }, "not a ControlNet folder");
  auto config = nlohmann::json::parse(test::read_bytes(test::data_path("controlnet/config.json")));
  config["global_pool_conditions"] = true;
  test::expect_error_mentions([&] { ControlNetConfig::from_json(config, "c.json"); }, "global_pool_conditions = true");
  config["global_pool_conditions"] = false;
  config["controlnet_conditioning_channel_order"] = "gbr";
  test::expect_error_mentions([&] { ControlNetConfig::from_json(config, "c.json"); }, "'gbr' must be rgb or bgr");
}

}  // namespace
}  // namespace streamgen
