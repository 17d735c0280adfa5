#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "streamgen/autoencoder_tiny.h"
#include "streamgen/error.h"
#include "streamgen/image_io.h"
#include "streamgen/image_tensor.h"
#include "streamgen/safetensors.h"
#include "streamgen/tensor_compare.h"
#include "bf16_bound.h"
#include "test_util.h"

namespace streamgen {
namespace {

// The golden README's tolerance for TAESD: absolute 1e-4 on latents and decoded images.
constexpr double kAbsTol = 1e-4;
constexpr double kPsnrTolDb = 0.1;

struct TaesdCase {
  std::string file;
  double psnr_db;  // round trip on [0, 1], from the golden README / summary.json
  std::string folder = "taesd";  // taesdxl: TAESD-XL, SDXL's latent space
};

class TaesdGolden : public ::testing::TestWithParam<TaesdCase> {};

AutoencoderTiny& taesd(const std::string& folder = "taesd") {
  static std::map<std::string, AutoencoderTiny> models;
  auto it = models.find(folder);
  if (it == models.end()) it = models.emplace(folder, load_autoencoder_tiny(test::data_path(folder))).first;
  return it->second;
}

TEST_P(TaesdGolden, EncodeDecodeAndRoundTripPsnr) {
  torch::NoGradGuard no_grad;
  const auto golden = SafetensorsFile::open(test::data_path(GetParam().file));
  const auto image = golden.tensor("image_u8");
  const auto x = image_u8_to_unit_range(image);
  auto& model = taesd(GetParam().folder);
  const auto latents = model->encode(x);
  const auto d_lat = compare_tensors(latents, golden.tensor("latents"));
  EXPECT_FALSE(d_lat.non_finite);
  EXPECT_LE(d_lat.max_abs, kAbsTol) << "latents rel " << d_lat.rel;
  EXPECT_LE(d_lat.rel, 1e-4);
  const auto decoded = model->decode(golden.tensor("latents"));
  const auto d_dec = compare_tensors(decoded, golden.tensor("decoded"));
  EXPECT_LE(d_dec.max_abs, kAbsTol) << "decoded rel " << d_dec.rel;
  EXPECT_NEAR(psnr_db(model->decode(latents), image), GetParam().psnr_db, kPsnrTolDb);
}

INSTANTIATE_TEST_SUITE_P(Photos, TaesdGolden,
                         ::testing::Values(TaesdCase{"taesd_128.safetensors", 22.73}, TaesdCase{"taesd_astronaut_256.safetensors", 21.867},
                                           TaesdCase{"taesd_chelsea_256x192.safetensors", 25.683},
                                           TaesdCase{"taesdxl/taesdxl_chelsea_128x96.safetensors", 25.55, "taesdxl"}),
                         [](const auto& info) {
                           // "taesd_128.safetensors" -> "taesd_128": a name of digits alone confuses CTest's discovery
                           std::string n = info.param.file.substr(0, info.param.file.find('.'));
                           for (auto& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

TEST(Taesd, RoundTripPsnrOnTheFullSizePhoto) {
  // The 512x512 astronaut PNG (same pixels as the golden tensors); reference PSNR 25.35 dB.
  torch::NoGradGuard no_grad;
  const auto image = read_image(test::data_path("astronaut_512.png"));
  ASSERT_EQ(image.sizes(), (std::vector<std::int64_t>{1, 3, 512, 512}));
  const auto decoded = taesd()->decode(taesd()->encode(image_u8_to_unit_range(image)));
  EXPECT_NEAR(psnr_db(decoded, image), 25.35, kPsnrTolDb);
}

TEST(Taesd, Bf16StaysClose) {
  torch::NoGradGuard no_grad;
  const auto golden = SafetensorsFile::open(test::data_path("taesd_128.safetensors"));
  ComputeOptions bf16;
  bf16.dtype = torch::kBFloat16;
  auto m = load_autoencoder_tiny(test::data_path("taesd"), bf16);
  // TAESD ships bf16 weights: the fp32 model already holds them exactly; only the inputs round.
  auto rounded = load_autoencoder_tiny(test::data_path("taesd"));
  test::round_parameters_to(*rounded);
  const double reduction = test::reduction_error(test::widest_reduction(*rounded));
  const auto x = image_u8_to_unit_range(golden.tensor("image_u8")), latents = golden.tensor("latents");
  const test::Bf16Bound encode_bound{compare_tensors(rounded->encode(test::round_to(x)), latents).rel, reduction};
  const auto e = compare_tensors(m->encode(x.to(torch::kBFloat16)), latents);
  EXPECT_TRUE(e.within(encode_bound.tol())) << "bf16 rel " << e.rel << ", " << encode_bound.describe();
  const test::Bf16Bound decode_bound{compare_tensors(rounded->decode(test::round_to(latents)), golden.tensor("decoded")).rel, reduction};
  const auto d = compare_tensors(m->decode(latents.to(torch::kBFloat16)), golden.tensor("decoded"));
  EXPECT_TRUE(d.within(decode_bound.tol())) << "bf16 rel " << d.rel << ", " << decode_bound.describe();
}

TEST(Taesd, OriginalMadebyollinLayoutGivesTheSameModel) {
  // Re-key the diffusers weights into taesd_encoder / taesd_decoder files as taesd.py names them.
  test::TempDir dir;
  const auto src = SafetensorsFile::open(test::data_path("taesd/diffusion_pytorch_model.safetensors"));
  NamedTensors enc, dec;
  for (const auto& e : src.entries()) {
    if (e.name.rfind("encoder.layers.", 0) == 0) {
      enc.emplace_back(e.name.substr(15), src.tensor(e.name));
    } else {
      const auto rest = e.name.substr(15);  // "decoder.layers." has the same length
      const auto n = std::stoi(rest.substr(0, rest.find('.')));
      dec.emplace_back(std::to_string(n + 1) + rest.substr(rest.find('.')), src.tensor(e.name));
    }
  }
  save_safetensors(dir / "taesd_encoder.safetensors", enc);
  save_safetensors(dir / "taesd_decoder.safetensors", dec);
  torch::NoGradGuard no_grad;
  auto m = load_autoencoder_tiny(dir.path());
  EXPECT_EQ(m->config.latent_channels, 4);
  const auto x = torch::rand({1, 3, 64, 64}) * 2 - 1;
  EXPECT_TRUE(torch::equal(m->encode(x), taesd()->encode(x)));
  const auto z = torch::randn({1, 4, 8, 8});
  EXPECT_TRUE(torch::equal(m->decode(z), taesd()->decode(z)));
}

TEST(Taesd, NotATaesdFolderIsNamed) {
  test::TempDir dir;
  try {
    load_autoencoder_tiny(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not a TAESD model"), std::string::npos) << e.what();
  }
  nlohmann::json cfg = {{"act_fn", "gelu"}};
  EXPECT_THROW(AutoencoderTinyConfig::from_json(cfg), Error);
  cfg = {{"num_encoder_blocks", {1, 3}}};
  EXPECT_THROW(AutoencoderTinyConfig::from_json(cfg), Error);
}

TEST(ImageTensor, ConversionsFollowTheReferenceOrder) {
  const auto u8 = torch::tensor({0, 128, 255}, torch::kUInt8).reshape({1, 3, 1, 1});
  const auto x = image_u8_to_unit_range(u8);
  EXPECT_FLOAT_EQ(x[0][0][0][0].item<float>(), -1.0f);
  EXPECT_FLOAT_EQ(x[0][1][0][0].item<float>(), 2.0f * (128.0f / 255.0f) - 1.0f);
  EXPECT_FLOAT_EQ(x[0][2][0][0].item<float>(), 1.0f);
  EXPECT_TRUE(torch::equal(unit_range_to_image_u8(x), u8));
  EXPECT_THROW(image_u8_to_unit_range(torch::zeros({1, 3, 2, 2})), Error);
  EXPECT_THROW(image_u8_to_unit_range(torch::zeros({3, 2, 2}, torch::kUInt8)), Error);
}

}  // namespace
}  // namespace streamgen
