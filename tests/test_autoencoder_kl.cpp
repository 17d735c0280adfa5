#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/autoencoder_kl.h"
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/safetensors.h"
#include "streamgen/tensor_compare.h"
#include "bf16_bound.h"
#include "test_util.h"

namespace streamgen {
namespace {

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
      EXPECT_TRUE(d.within(test::kFp32Tol)) << name << " rel " << d.rel;
    }
    EXPECT_TRUE(compare_tensors(dist.sample(golden.tensor(c + ".noise")), golden.tensor(c + ".latent_sample")).within(test::kFp32Tol));
    const auto d = compare_tensors(vae->decode(golden.tensor(c + ".latent_mean")), golden.tensor(c + ".decoded_mean"));
    EXPECT_TRUE(d.within(test::kFp32Tol)) << "decoded rel " << d.rel;
  }
  // Pipeline convention: latents are stored scaled by scaling_factor.
  const auto scaled = golden.tensor("rand.latents_scaled");
  const auto dec = vae->decode(scaled / vae->config.scaling_factor);
  EXPECT_TRUE(compare_tensors(dec, golden.tensor("rand.decoded")).within(test::kFp32Tol));

  // bf16 request: this config says force_upcast, so the VAE computes in fp32 (as diffusers'
  // pipelines do) and hands back bf16.
  ComputeOptions bf16;
  bf16.dtype = torch::kBFloat16;
  auto vae16 = load_autoencoder_kl(test::data_path(variant + "/vae"), bf16);
  EXPECT_TRUE(vae16->config.force_upcast);
  EXPECT_EQ(vae16->conv_in_dtype(), torch::kFloat32);
  // Its bound: the fp32 VAE on the bf16-rounded input, and the final rounding of its output.
  const auto upcast_bound = [](const torch::Tensor& fp32_on_rounded_input, const torch::Tensor& ref) {
    return test::Bf16Bound{compare_tensors(fp32_on_rounded_input, ref).rel,
                           compare_tensors(test::round_to(fp32_on_rounded_input), fp32_on_rounded_input).rel};
  };
  const auto x = image_u8_to_unit_range(golden.tensor("img64.image_u8"));
  const auto mean16 = vae16->encode(x.to(torch::kBFloat16)).mean;
  EXPECT_EQ(mean16.scalar_type(), torch::kBFloat16);
  const auto encode_bound = upcast_bound(vae->encode(test::round_to(x)).mean, golden.tensor("img64.latent_mean"));
  const auto e16 = compare_tensors(mean16, golden.tensor("img64.latent_mean"));
  EXPECT_TRUE(e16.within(encode_bound.tol())) << "bf16 rel " << e16.rel << ", " << encode_bound.describe();
  const auto latent = golden.tensor("img64.latent_mean");
  const auto decode_bound = upcast_bound(vae->decode(test::round_to(latent)), golden.tensor("img64.decoded_mean"));
  const auto d16 = compare_tensors(vae16->decode(latent.to(torch::kBFloat16)), golden.tensor("img64.decoded_mean"));
  EXPECT_TRUE(d16.within(decode_bound.tol())) << "bf16 rel " << d16.rel << ", " << decode_bound.describe();
}

TEST(Vae, Bf16WithoutUpcastComputesInBf16) {
  // Every conv in bf16: the tiny random VAEs' fp16 weights lose 3 mantissa bits, which is why the
  // reference upcasts such VAEs; the bound below includes that rounding.
  const auto golden = SafetensorsFile::open(test::data_path("tiny-sd15_vae.safetensors"));
  torch::NoGradGuard no_grad;
  auto rounded = load_autoencoder_kl(test::data_path("tiny-sd15/vae"));  // fp32 on bf16 weights
  test::round_parameters_to(*rounded);
  auto vae = load_autoencoder_kl(test::data_path("tiny-sd15/vae"));
  vae->config.force_upcast = false;
  vae->to(torch::kBFloat16);
  vae->io_dtype = torch::kBFloat16;
  EXPECT_EQ(vae->conv_in_dtype(), torch::kBFloat16);
  const auto latent = golden.tensor("img64.latent_mean"), ref = golden.tensor("img64.decoded_mean");
  const test::Bf16Bound bound{compare_tensors(rounded->decode(test::round_to(latent)), ref).rel,
                              test::reduction_error(test::widest_reduction(*rounded))};
  const auto d = compare_tensors(vae->decode(latent.to(torch::kBFloat16)), ref);
  EXPECT_TRUE(d.within(bound.tol())) << "rel " << d.rel << ", " << bound.describe();
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
