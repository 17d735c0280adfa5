// Runs only where LibTorch has CUDA and a GPU is visible; elsewhere each test skips and says why.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "streamgen/autoencoder_kl.h"
#include "streamgen/autoencoder_tiny.h"
#include "streamgen/bench.h"
#include "streamgen/clip_text_model.h"
#include "streamgen/image_tensor.h"
#include "streamgen/safetensors.h"
#include "streamgen/stream_replay.h"
#include "streamgen/tensor_compare.h"
#include "streamgen/unet_2d_condition.h"
#include "test_util.h"

namespace streamgen {
namespace {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA in this LibTorch build or no GPU visible: CUDA tests skipped";
  }
};

TEST_F(CudaTest, SafetensorsTensorsMoveToTheGpuAndBack) {
  test::TempDir dir;
  const auto ref = torch::randn({64, 64}).to(torch::kBFloat16);
  save_safetensors(dir / "g.safetensors", NamedTensors{{"w", ref}});
  const auto file = SafetensorsFile::open(dir / "g.safetensors");
  const auto gpu = file.tensor("w").to(torch::kCUDA);
  EXPECT_TRUE(gpu.is_cuda());
  EXPECT_TRUE(torch::equal(gpu.cpu(), ref));
}

TEST_F(CudaTest, MatmulAgreesWithCpu) {
  const auto a = torch::randn({256, 256}, torch::kFloat64), b = torch::randn({256, 256}, torch::kFloat64);
  const auto ref = torch::matmul(a, b);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
    const auto out = torch::matmul(a.to(torch::kCUDA, dtype), b.to(torch::kCUDA, dtype));
    const double tol = dtype == torch::kFloat32 ? 1e-3 : 2e-2;  // TF32 / half precision inputs
    EXPECT_TRUE(compare_tensors(out, ref).within(tol)) << c10::toString(dtype);
  }
  MatmulBenchOptions o;
  o.sizes = {512};
  o.device = torch::Device(torch::kCUDA, 0);
  o.seconds = 0.05;
  for (const auto& r : bench_matmul(o)) EXPECT_GT(r["gflops"].get<double>(), 0);
}

// fp32 on CUDA runs convolutions in TF32 (LibTorch's default for cuDNN, as in PyTorch), so the
// golden's 1e-4 does not hold there; half precision gets the CPU bf16 bound.
double cuda_tol(torch::ScalarType dtype) { return dtype == torch::kFloat32 ? 5e-3 : 2e-2; }

ComputeOptions on_cuda(torch::ScalarType dtype) {
  ComputeOptions o;
  o.device = torch::Device(torch::kCUDA, 0);
  o.dtype = dtype;
  return o;
}

const std::vector<torch::ScalarType> kCudaDtypes = {torch::kFloat32, torch::kFloat16, torch::kBFloat16};

TEST_F(CudaTest, UNetMatchesTheGoldenInEveryDtype) {
  torch::NoGradGuard no_grad;
  for (const std::string variant : {"tiny-sd15", "tiny-sd21"}) {
    const auto golden = SafetensorsFile::open(test::data_path(variant + "_unet.safetensors"));
    for (auto dtype : kCudaDtypes) {
      auto unet = load_unet_2d_condition(test::data_path(variant + "/unet"), on_cuda(dtype));
      for (const std::string c : {"case0", "case1", "case2"}) {
        SCOPED_TRACE(variant + " " + c + " " + dtype_label(dtype));
        const auto out = unet->forward(golden.tensor(c + ".sample").to(torch::kCUDA, dtype), golden.tensor(c + ".timestep").to(torch::kCUDA),
                                       golden.tensor(c + ".encoder_hidden_states").to(torch::kCUDA, dtype));
        EXPECT_TRUE(out.is_cuda());
        const auto d = compare_tensors(out.cpu(), golden.tensor(c + ".out"));
        EXPECT_TRUE(d.within(cuda_tol(dtype))) << "rel " << d.rel;
      }
    }
  }
}

TEST_F(CudaTest, TextEncoderAndVaeMatchTheGoldenInEveryDtype) {
  torch::NoGradGuard no_grad;
  for (const std::string variant : {"tiny-sd15", "tiny-sd21"}) {
    const auto text = SafetensorsFile::open(test::data_path(variant + "_text_encoder.safetensors"));
    const auto vae_golden = SafetensorsFile::open(test::data_path(variant + "_vae.safetensors"));
    for (auto dtype : kCudaDtypes) {
      SCOPED_TRACE(variant + " " + dtype_label(dtype));
      auto clip = load_clip_text_model(test::data_path(variant + "/text_encoder"), on_cuda(dtype));
      const auto hidden = clip->forward(text.tensor("input_ids").to(torch::kCUDA)).last_hidden_state;
      const auto dt = compare_tensors(hidden.cpu(), text.tensor("last_hidden_state"));
      EXPECT_TRUE(dt.within(cuda_tol(dtype))) << "text encoder rel " << dt.rel;

      auto vae = load_autoencoder_kl(test::data_path(variant + "/vae"), on_cuda(dtype));
      const auto x = image_u8_to_unit_range(vae_golden.tensor("img64.image_u8")).to(torch::kCUDA, dtype);
      const auto dm = compare_tensors(vae->encode(x).mean.cpu(), vae_golden.tensor("img64.latent_mean"));
      EXPECT_TRUE(dm.within(cuda_tol(dtype))) << "vae encode rel " << dm.rel;
      const auto dd = compare_tensors(vae->decode(vae_golden.tensor("img64.latent_mean").to(torch::kCUDA, dtype)).cpu(),
                                      vae_golden.tensor("img64.decoded_mean"));
      EXPECT_TRUE(dd.within(cuda_tol(dtype))) << "vae decode rel " << dd.rel;
    }
  }
}

TEST_F(CudaTest, TaesdMatchesTheGoldenInEveryDtype) {
  torch::NoGradGuard no_grad;
  const auto golden = SafetensorsFile::open(test::data_path("taesd_astronaut_256.safetensors"));
  for (auto dtype : kCudaDtypes) {
    SCOPED_TRACE(dtype_label(dtype));
    auto taesd = load_autoencoder_tiny(test::data_path("taesd"), on_cuda(dtype));
    const auto lat = taesd->encode(image_u8_to_unit_range(golden.tensor("image_u8")).to(torch::kCUDA, dtype));
    const auto dl = compare_tensors(lat.cpu(), golden.tensor("latents"));
    EXPECT_TRUE(dl.within(cuda_tol(dtype))) << "encode rel " << dl.rel;
    const auto dd = compare_tensors(taesd->decode(golden.tensor("latents").to(torch::kCUDA, dtype)).cpu(), golden.tensor("decoded"));
    EXPECT_TRUE(dd.within(cuda_tol(dtype))) << "decode rel " << dd.rel;
  }
}

TEST_F(CudaTest, StreamReplayMatchesTheGolden) {
  // RCFG self with a 2-step list: every call after the first two is built from real content.
  for (auto dtype : {torch::kFloat32, torch::kFloat16}) {
    SCOPED_TRACE(dtype_label(dtype));
    StreamReplayOptions o;
    o.case_file = test::data_path("stream/i2i_32-45_self_g1.2_d1.0.safetensors");
    const auto golden = SafetensorsFile::open(o.case_file);
    o.model = test::data_path(nlohmann::json::parse(golden.metadata().at("config"))["model"].get<std::string>());
    o.taesd = test::data_path("taesd");
    o.compute = on_cuda(dtype);
    const auto out = replay_stream_case(o);
    const auto calls = golden.tensor("out_latents").size(0);
    for (std::int64_t i = 2; i < calls; ++i) {
      const auto d = compare_tensors(out.at("out_latents")[i], golden.tensor("out_latents")[i]);
      EXPECT_TRUE(d.within(dtype == torch::kFloat32 ? 1e-2 : 5e-2)) << "call " << i << " rel " << d.rel;
    }
  }
}

}  // namespace
}  // namespace streamgen
