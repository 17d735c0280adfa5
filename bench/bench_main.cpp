// Google Benchmark view of the same kernels `streamgen bench` runs.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "streamgen/bench.h"
#include "streamgen/safetensors.h"
#include "streamgen/system_info.h"

namespace {

void BM_Matmul(benchmark::State& state, torch::ScalarType dtype) {
  const auto n = state.range(0);
  torch::NoGradGuard no_grad;
  auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype), c = torch::empty({n, n}, dtype);
  for (auto _ : state) {
    torch::matmul_out(c, a, b);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK_CAPTURE(BM_Matmul, fp32, torch::kFloat32)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Matmul, bf16, torch::kBFloat16)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);

void BM_SafetensorsOpen(benchmark::State& state, streamgen::LoadMode mode) {
  const auto path = std::filesystem::temp_directory_path() / "streamgen-gbench.safetensors";
  streamgen::save_safetensors(path, streamgen::NamedTensors{{"w", torch::ones({state.range(0) << 18})}});
  for (auto _ : state) {
    auto f = streamgen::SafetensorsFile::open(path, mode);
    auto t = f.tensor("w");
    benchmark::DoNotOptimize(t.sum().item<float>());
  }
  state.SetBytesProcessed(state.iterations() * (state.range(0) << 20));
  std::filesystem::remove(path);
}
BENCHMARK_CAPTURE(BM_SafetensorsOpen, mmap, streamgen::LoadMode::Mmap)->Arg(64)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SafetensorsOpen, read, streamgen::LoadMode::Read)->Arg(64)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  streamgen::upgrade_blas_kernels();  // the kernels the CLI runs (see system_info.h)
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
