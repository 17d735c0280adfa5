#include <torch/cuda.h>
#include <torch/torch.h>

#include "streamgen/bench.h"
#include "streamgen/device.h"

namespace streamgen {

Timing time_matmul(std::int64_t n, torch::ScalarType dtype, torch::Device device, double seconds) {
  torch::NoGradGuard no_grad;
  const auto opts = torch::TensorOptions().dtype(dtype).device(device);
  auto a = torch::randn({n, n}, torch::TensorOptions().device(device)).to(dtype);
  auto b = torch::randn({n, n}, torch::TensorOptions().device(device)).to(dtype);
  auto c = torch::empty({n, n}, opts);
  TimingOptions t;
  t.min_seconds = seconds;
  t.min_runs = 3;
  return time_runs(
      [&] {
        torch::matmul_out(c, a, b);
        if (device.is_cuda()) torch::cuda::synchronize();
      },
      t);
}

Timing time_conv(torch::ScalarType dtype, torch::Device device, double seconds) {
  torch::NoGradGuard no_grad;
  const auto fmt = torch::MemoryFormat::ChannelsLast;
  auto x = torch::randn({1, kConvProbeChannels, kConvProbeSize, kConvProbeSize}, torch::TensorOptions().device(device)).to(dtype).contiguous(fmt);
  auto w = torch::randn({kConvProbeChannels, kConvProbeChannels, 3, 3}, torch::TensorOptions().device(device)).to(dtype).contiguous(fmt);
  TimingOptions t;
  t.min_seconds = seconds;
  t.min_runs = 3;
  return time_runs(
      [&] {
        auto y = torch::conv2d(x, w, {}, 1, 1);
        if (device.is_cuda()) torch::cuda::synchronize();
      },
      t);
}

std::vector<BenchRow> bench_matmul(const MatmulBenchOptions& options) {
  std::vector<BenchRow> rows;
  for (auto n : options.sizes)
    for (auto dtype : options.dtypes) {
      const Timing t = time_matmul(n, dtype, options.device, options.seconds);
      BenchRow row;
      row["name"] = "matmul";
      row["device"] = options.device.str();
      row["dtype"] = dtype_label(dtype);
      row["n"] = n;
      add_timing(row, t);
      row["gflops"] = matmul_gflops(n, t.median_ms);
      rows.push_back(std::move(row));
    }
  return rows;
}

}  // namespace streamgen
