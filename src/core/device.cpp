#include "streamgen/device.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>

#include <dlfcn.h>
#include <malloc.h>
#include <sched.h>

#include <charconv>
#include <mutex>
#include <thread>
#include <vector>

#include "streamgen/error.h"

namespace streamgen {

torch::Device parse_device(std::string_view text) {
  if (text == "cpu") return torch::Device(torch::kCPU);
  if (text == "cuda") return torch::Device(torch::kCUDA, 0);
  if (text.rfind("cuda:", 0) == 0) {
    const auto num = text.substr(5);
    int index = -1;
    auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), index);
    if (ec == std::errc() && ptr == num.data() + num.size() && index >= 0 && index < 64)
      return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw Error("unknown device '" + std::string(text) + "' (expected cpu, cuda or cuda:N)");
}

torch::ScalarType parse_dtype(std::string_view text) {
  if (text == "fp32" || text == "float32" || text == "f32") return torch::kFloat32;
  if (text == "bf16" || text == "bfloat16") return torch::kBFloat16;
  if (text == "fp16" || text == "float16" || text == "f16" || text == "half") return torch::kFloat16;
  throw Error("unknown dtype '" + std::string(text) + "' (expected fp32, bf16 or fp16)");
}

std::string dtype_label(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return "fp32";
    case torch::kBFloat16: return "bf16";
    case torch::kFloat16: return "fp16";
    default: return c10::toString(dtype);
  }
}

void check_device(const torch::Device& device) {
  if (device.is_cpu()) return;
  if (!device.is_cuda()) throw Error("device '" + device.str() + "' is not supported (expected cpu or cuda)");
  if (!torch::cuda::is_available())
    throw Error("device '" + device.str() + "' requested, but this build of LibTorch has no CUDA or no GPU is visible; use --device cpu");
  const auto count = torch::cuda::device_count();
  if (device.index() >= static_cast<int>(count))
    throw Error("device '" + device.str() + "' requested, but only " + std::to_string(count) + " CUDA device(s) are visible");
}

void use_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
}

void prepare_for_inference(torch::nn::Module& module, torch::Device device, torch::ScalarType dtype) {
  module.to(device, dtype);
  use_channels_last(module);
  module.eval();
}

std::int64_t parameter_count(const torch::nn::Module& module) {
  std::int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

torch::Tensor match_memory_format(const torch::Tensor& x, const torch::Tensor& conv_weight) {
  if (x.dim() == 4 && conv_weight.dim() == 4 && conv_weight.is_contiguous(torch::MemoryFormat::ChannelsLast) && conv_weight.size(2) * conv_weight.size(3) > 1)
    return x.contiguous(torch::MemoryFormat::ChannelsLast);
  return x;
}

void tune_memory_allocator() {
  mallopt(M_MMAP_MAX, 0);                    // large blocks come from the heap...
  mallopt(M_TRIM_THRESHOLD, 64 << 30);       // ...and stay there for the next step
}

namespace {
// OpenBLAS's C API, looked up at run time: LibTorch may be linked against MKL or another BLAS.
using BlasSetThreads = void (*)(int);
using BlasGetThreads = int (*)();

BlasGetThreads blas_get() { return reinterpret_cast<BlasGetThreads>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads")); }
BlasSetThreads blas_set() { return reinterpret_cast<BlasSetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads")); }

// The pool size is one per process, but scopes live on several threads (two live streams in one
// server) and need not end in the order they began. Every active scope is listed, oldest first:
// the newest one's size holds, and when the last one ends the size from before the first returns.
struct BlasThreadScopes {
  std::mutex mutex;
  std::vector<std::pair<const ScopedBlasThreads*, int>> active;
  int before = -1;
};
BlasThreadScopes& blas_thread_scopes() {
  static BlasThreadScopes scopes;
  return scopes;
}
}  // namespace

int blas_threads() {
  const auto get = blas_get();
  return get && blas_set() ? get() : -1;
}

ScopedBlasThreads::ScopedBlasThreads(int threads) {
  const auto get = blas_get();
  const auto set = blas_set();
  if (!get || !set) return;
  auto& scopes = blas_thread_scopes();
  const std::lock_guard lock(scopes.mutex);
  if (scopes.active.empty()) scopes.before = get();
  scopes.active.emplace_back(this, threads);
  set(threads);
  active_ = true;
}

ScopedBlasThreads::~ScopedBlasThreads() {
  if (!active_) return;
  auto& scopes = blas_thread_scopes();
  const std::lock_guard lock(scopes.mutex);
  std::erase_if(scopes.active, [this](const auto& entry) { return entry.first == this; });
  blas_set()(scopes.active.empty() ? scopes.before : scopes.active.back().second);
}

ScopedCpuAutocast::ScopedCpuAutocast(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCPU, true);
#else
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  at::autocast::set_cpu_enabled(true);
#endif
}

ScopedCpuAutocast::~ScopedCpuAutocast() {
  if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCPU, false);
#else
  at::autocast::set_cpu_enabled(false);
#endif
  at::autocast::clear_cache();
}

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

torch::ScalarType fastest_cpu_dtype(const CpuFeatures& cpu, std::int64_t parameters) {
  if (cpu.amx_tile && cpu.amx_bf16) return torch::kBFloat16;
  if (cpu.avx512_bf16 && parameters >= kLargeModelParameters) return torch::kBFloat16;
  return torch::kFloat32;
}

torch::ScalarType fastest_dtype(torch::Device device, std::int64_t parameters) {
  if (device.is_cuda()) return torch::kBFloat16;
  return fastest_cpu_dtype(detect_cpu_features(), parameters);
}

ComputeOptions apply_compute_options(ComputeOptions options) {
  check_device(options.device);
  if (options.threads < 0) throw Error("--threads must be >= 0 (0 = one per core), got " + std::to_string(options.threads));
  // LibTorch's own default counts physical cores through cpuinfo, which on some VMs finds one
  // core where two are usable (measured here: bf16 matmul 480 -> 840 GFLOP/s with both).
  at::set_num_threads(options.threads > 0 ? options.threads : available_cpus());
  options.threads = at::get_num_threads();
  if (options.device.is_cpu() && options.dtype == torch::kFloat16)
    spdlog::warn("fp16 on CPU has no fast kernels here; use fp32 or bf16 (--dtype auto picks the faster for the model)");
  return options;
}

}  // namespace streamgen
