#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/autoencoder_kl.h"
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/safetensors.h"
#include "streamgen/tensor_compare.h"
#include "test_util.h"

namespace streamgen {
namespace {

constexpr double kFp32Tol = 1e-4;
constexpr double kBf16Tol = 2e-2;

class VaeGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(VaeGolden, EncodeDecodeInFp32AndBf16) {
  const auto variant = GetParam();
  const auto golden = SafetensorsFile::open(test::data_path(variant + "_vae.safetensors"));
  torch::NoGradGuard no_grad;
  auto vae = load_autoencoder_kl(test::data_path(variant + "/vae"));
  EXPECT_EQ(vae->config.downsample_factor(), 2);
  for (const std::string c : {"img64", "img48x64"}) {
    SCOPED_TRACE(c);
    const auto x = image_u8_to_unit_range(golden.tensor(c + ".image_u8"));
    const auto dist = vae->encode(x);
    for (const auto& [name, t] : {std::pair{"latent_mean", dist.mean}, std::pair{"latent_logvar", dist.logvar}, std::pair{"latent_std", dist.std}}) {
      const auto d = compare_tensors(t, golden.tensor(c + "." + name));
      EXPECT_TRUE(d.within(kFp32Tol)) << name << " rel " << d.rel;
    }
    EXPECT_TRUE(compare_tensors(dist.sample(golden.tensor(c + ".noise")), golden.tensor(c + ".latent_sample")).within(kFp32Tol));
    const auto d = compare_tensors(vae->decode(golden.tensor(c + ".latent_mean")), golden.tensor(c + ".decoded_mean"));
    EXPECT_TRUE(d.within(kFp32Tol)) << "decoded rel " << d.rel;
  }
  // Pipeline convention: latents are stored scaled by scaling_factor.
  const auto scaled = golden.tensor("rand.latents_scaled");
  const auto dec = vae->decode(scaled / vae->config.scaling_factor);
  EXPECT_TRUE(compare_tensors(dec, golden.tensor("rand.decoded")).within(kFp32Tol));

  // bf16 request: this config says force_upcast, so the VAE computes in fp32 (as diffusers'
  // pipelines do) and hands back bf16.
  ComputeOptions bf16;
  bf16.dtype = torch::kBFloat16;
  auto vae16 = load_autoencoder_kl(test::data_path(variant + "/vae"), bf16);
  EXPECT_TRUE(vae16->config.force_upcast);
  EXPECT_EQ(vae16->conv_in_dtype(), torch::kFloat32);
  const auto x = image_u8_to_unit_range(golden.tensor("img64.image_u8")).to(torch::kBFloat16);
  const auto mean16 = vae16->encode(x).mean;
  EXPECT_EQ(mean16.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(compare_tensors(mean16, golden.tensor("img64.latent_mean")).within(kBf16Tol));
  const auto d16 = compare_tensors(vae16->decode(golden.tensor("img64.latent_mean").to(torch::kBFloat16)), golden.tensor("img64.decoded_mean"));
  EXPECT_TRUE(d16.within(kBf16Tol)) << "bf16 rel " << d16.rel;
}

TEST(Vae, Bf16WithoutUpcastComputesInBf16) {
  // Measured here on the tiny random VAEs: 2.3-2.8 % relative error when every conv runs in bf16
  // (their fp16 weights lose 3 mantissa bits) -- the reason the reference upcasts such VAEs.
  const auto golden = SafetensorsFile::open(test::data_path("tiny-sd15_vae.safetensors"));
  torch::NoGradGuard no_grad;
  auto vae = load_autoencoder_kl(test::data_path("tiny-sd15/vae"));
  vae->config.force_upcast = false;
  vae->to(torch::kBFloat16);
  vae->io_dtype = torch::kBFloat16;
  EXPECT_EQ(vae->conv_in_dtype(), torch::kBFloat16);
  const auto d = compare_tensors(vae->decode(golden.tensor("img64.latent_mean").to(torch::kBFloat16)), golden.tensor("img64.decoded_mean"));
  EXPECT_TRUE(d.within(5e-2)) << "rel " << d.rel;
}

INSTANTIATE_TEST_SUITE_P(Variants, VaeGolden, ::testing::Values("tiny-sd15", "tiny-sd21"),
                         [](const auto& info) { return info.param == "tiny-sd15" ? std::string("sd15") : std::string("sd21"); });

TEST(Vae, UnsupportedBlockTypeIsNamed) {
  nlohmann::json cfg = {{"block_out_channels", {32, 64}}, {"down_block_types", {"DownEncoderBlock2D", "AttnDownEncoderBlock2D"}}};
  try {
    AutoencoderKLConfig::from_json(cfg, "vae/config.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported VAE block type 'AttnDownEncoderBlock2D'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace streamgen
