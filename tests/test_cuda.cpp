// Runs only where LibTorch has CUDA and a GPU is visible; elsewhere each test skips and says why.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "streamgen/bench.h"
#include "streamgen/safetensors.h"
#include "streamgen/tensor_compare.h"
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

}  // namespace
}  // namespace streamgen
