#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <torch/cuda.h>

#include "streamgen/device.h"
#include "streamgen/error.h"
#include "streamgen/system_info.h"

namespace streamgen {
namespace {

TEST(Device, ParsesTheAcceptedForms) {
  EXPECT_EQ(parse_device("cpu"), torch::Device(torch::kCPU));
  EXPECT_EQ(parse_device("cuda"), torch::Device(torch::kCUDA, 0));
  EXPECT_EQ(parse_device("cuda:3"), torch::Device(torch::kCUDA, 3));
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "CPU", ""}) {
    try {
      parse_device(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("expected cpu, cuda or cuda:N"), std::string::npos);
    }
  }
}

TEST(Device, ParsesDtypes) {
  EXPECT_EQ(parse_dtype("fp32"), torch::kFloat32);
  EXPECT_EQ(parse_dtype("bf16"), torch::kBFloat16);
  EXPECT_EQ(parse_dtype("bfloat16"), torch::kBFloat16);
  EXPECT_EQ(parse_dtype("fp16"), torch::kFloat16);
  EXPECT_EQ(parse_dtype("half"), torch::kFloat16);
  EXPECT_THROW(parse_dtype("int8"), Error);
  EXPECT_EQ(dtype_label(torch::kBFloat16), "bf16");
  EXPECT_EQ(dtype_label(torch::kFloat32), "fp32");
}

TEST(Device, CudaWithoutCudaIsAClearError) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a CUDA device is present";
  try {
    check_device(torch::Device(torch::kCUDA, 0));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("use --device cpu"), std::string::npos) << e.what();
  }
}

TEST(Device, ThreadsAreAppliedAndValidated) {
  ComputeOptions o;
  o.threads = 1;
  EXPECT_EQ(apply_compute_options(o).threads, 1);
  o.threads = -2;
  EXPECT_THROW(apply_compute_options(o), Error);
  o.threads = 0;  // default: every CPU we may run on, not LibTorch's physical-core guess
  EXPECT_EQ(apply_compute_options(o).threads, available_cpus());
  EXPECT_GE(available_cpus(), 1);
}

TEST(Device, BlasThreadScopesRestoreInAnyOrder) {
  const int before = blas_threads();
  if (before < 1) GTEST_SKIP() << "LibTorch's BLAS is not OpenBLAS";
  {
    ScopedBlasThreads outer(3);
    {
      ScopedBlasThreads inner(1);
      EXPECT_EQ(blas_threads(), 1);
    }
    EXPECT_EQ(blas_threads(), 3);
    // Two live streams on two threads: the first to start ends first. Restoring what each saw at
    // its start left the second running at the old size and, at its end, the process at 1 thread.
    auto first = std::make_unique<ScopedBlasThreads>(2);
    auto second = std::make_unique<ScopedBlasThreads>(1);
    first.reset();
    EXPECT_EQ(blas_threads(), 1);
    second.reset();
    EXPECT_EQ(blas_threads(), 3);
  }
  EXPECT_EQ(blas_threads(), before);
}

TEST(SystemInfo, DetectsCpuAndBlas) {
  const auto cpu = detect_cpu_features();
  EXPECT_FALSE(cpu.model.empty());
  EXPECT_GE(cpu.hardware_threads, 1);
  if (cpu.avx512f) {
    EXPECT_TRUE(cpu.avx2);  // every AVX-512 CPU has AVX2
  }
  EXPECT_FALSE(torch_version_string().empty());
  // Debian's LibTorch links the system BLAS; whichever it is, it is visible in the process.
  EXPECT_FALSE(loaded_blas_library().empty());
}

TEST(SystemInfo, OpenBlasRunsTheKernelsThisCpuSupports) {
  // The test main upgrades OpenBLAS's choice as the CLI's does; on a CPU the installed OpenBLAS does
  // not know (Debian 12's 0.3.21 on Emerald Rapids) it would otherwise run its SSE3 kernels.
  const auto k = blas_kernels();
  if (k.loaded.empty()) GTEST_SKIP() << "LibTorch's BLAS is not OpenBLAS: " << loaded_blas_library();
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) {
    EXPECT_EQ(k.chosen_by, "OPENBLAS_CORETYPE");  // the user's choice stands, whatever it is
    return;
  }
  EXPECT_FALSE(k.behind_cpu()) << "OpenBLAS runs " << k.loaded << " on a CPU that runs " << k.for_cpu;
  EXPECT_TRUE(k.chosen_by == "OpenBLAS" || k.chosen_by == "streamgen") << k.chosen_by;
  if (k.chosen_by == "streamgen") {
    EXPECT_FALSE(k.replaced.empty());
    const BlasKernels before{.loaded = k.replaced, .for_cpu = k.for_cpu, .chosen_by = "OpenBLAS", .replaced = ""};
    EXPECT_TRUE(before.behind_cpu()) << k.replaced;
  }
  // A second call changes nothing, and the upgraded kernels compute what the reference does.
  const auto again = upgrade_blas_kernels();
  EXPECT_EQ(again.loaded, k.loaded);
  torch::manual_seed(0);
  const auto a = torch::randn({257, 300}, torch::kFloat64), b = torch::randn({300, 190}, torch::kFloat64);
  const auto fp32 = torch::mm(a.to(torch::kFloat32), b.to(torch::kFloat32)).to(torch::kFloat64);
  const auto reference = torch::mm(a, b);
  EXPECT_LT(((fp32 - reference).norm() / reference.norm()).item<double>(), 1e-6);
}

TEST(Device, AutoDtypeFollowsTheHardwareAndTheModelSize) {
  CpuFeatures avx512_bf16;
  avx512_bf16.avx2 = avx512_bf16.avx512f = avx512_bf16.avx512_bf16 = true;
  // Without AMX, bf16 pays only for weights too large to stay in cache.
  EXPECT_EQ(fastest_cpu_dtype(avx512_bf16, 30'000'000), torch::kFloat32);
  EXPECT_EQ(fastest_cpu_dtype(avx512_bf16, 866'000'000), torch::kBFloat16);
  auto amx = avx512_bf16;
  amx.amx_tile = amx.amx_bf16 = true;
  EXPECT_EQ(fastest_cpu_dtype(amx, 30'000'000), torch::kBFloat16);
  CpuFeatures avx2;
  avx2.avx2 = true;
  EXPECT_EQ(fastest_cpu_dtype(avx2, 866'000'000), torch::kFloat32);  // bf16 would be emulated
  EXPECT_EQ(fastest_dtype(torch::Device(torch::kCUDA, 0), 1), torch::kBFloat16);
  EXPECT_EQ(fastest_dtype(torch::kCPU, 866'000'000), fastest_cpu_dtype(detect_cpu_features(), 866'000'000));
}

TEST(SystemInfo, NamesTheMallocThisProcessCalls) {
  const auto path = malloc_library();
  ASSERT_FALSE(path.empty());
#ifdef STREAMGEN_LINKED_MALLOC
  // This test binary is linked as the CLI is: if the linker dropped the allocator (--as-needed) or
  // libc came first, malloc would still be glibc's and every CPU stream would run at half speed.
  EXPECT_NE(path.find(STREAMGEN_LINKED_MALLOC), std::string::npos) << path;
  EXPECT_FALSE(malloc_is_glibc()) << path;
#else
  if (std::getenv("LD_PRELOAD") == nullptr) EXPECT_TRUE(malloc_is_glibc()) << path;
#endif
}

}  // namespace
}  // namespace streamgen
