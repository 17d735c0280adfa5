// ControlNetModel against diffusers (tests/data/controlnet/): residuals at conditioning scale 0.8, and the
// UNet output with them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/controlnet.h"
#include "streamgen/error.h"
#include "streamgen/safetensors.h"
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
