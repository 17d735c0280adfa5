#pragma once
// Device, dtype and thread policy shared by every subcommand (--device, --dtype, --threads).
#include <torch/nn/module.h>
#include <torch/types.h>

#include <string>
#include <string_view>

#include "streamgen/system_info.h"

namespace streamgen {

struct ComputeOptions {
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;
  int threads = 0;  // 0: every CPU this process may run on
  // --dtype auto: `dtype` is the main model's pick (fastest_dtype); a pipeline's small models (TAESD)
  // take their own.
  bool auto_dtype = false;
};

// "cpu", "cuda", "cuda:N". Throws streamgen::Error naming the accepted forms.
torch::Device parse_device(std::string_view text);
// "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16"/"half".
torch::ScalarType parse_dtype(std::string_view text);
// The short name used on the command line: fp32, bf16, fp16 (or LibTorch's name for others).
std::string dtype_label(torch::ScalarType dtype);

// Stores every 4-D parameter (conv weights) channels-last: oneDNN's bf16 convolutions run on NHWC
// without reordering (TAESD encode: ~3x faster measured by the Python peer on this machine).
void use_channels_last(torch::nn::Module& module);
// Moves a freshly built model to its device and dtype, stores its convolutions channels-last and
// switches it to eval mode: the one preparation every model loader and benchmark applies.
void prepare_for_inference(torch::nn::Module& module, torch::Device device, torch::ScalarType dtype);

// How many weights the module holds.
std::int64_t parameter_count(const torch::nn::Module& module);

// Makes a model input match the memory format of the model's convolutions.
torch::Tensor match_memory_format(const torch::Tensor& x, const torch::Tensor& conv_weight);

// Keeps freed large blocks in the process instead of returning them to the OS (glibc otherwise
// mmaps every allocation over 32 MB and unmaps it on free, and a UNet step allocates and frees
// gigabytes: measured 3.18 s -> 1.75 s for SD-Turbo's UNet at 64x64 latents). Process-wide; the
// CLI calls it at start.
void tune_memory_allocator();

// CPUs this process may run on (its affinity mask).
int available_cpus();

// OpenBLAS's thread pool size now; -1 when LibTorch's BLAS is not OpenBLAS.
int blas_threads();

// Sets OpenBLAS's own thread pool size while in scope (no-op when LibTorch's BLAS is not
// OpenBLAS). Scopes may overlap across threads and end in any order: the newest active scope's
// size holds, and the size from before the first returns when the last ends. Small fp32 models (the StreamDiT tiny configuration: [8192, 128] x [128, 384]
// GEMMs) run 2.2x slower when OpenBLAS's threads compete with LibTorch's spinning OpenMP
// workers on 2 cores (measured: 1.49 vs 0.68 s per training step); large GEMMs want the pool.
class ScopedBlasThreads {
 public:
  explicit ScopedBlasThreads(int threads);
  ~ScopedBlasThreads();
  ScopedBlasThreads(const ScopedBlasThreads&) = delete;
  ScopedBlasThreads& operator=(const ScopedBlasThreads&) = delete;

 private:
  bool active_ = false;
};

// bf16 autocast on CPU for the scope (training's forward): matmuls and convolutions run in bf16
// (oneDNN), norms and reductions stay fp32, parameters and gradients stay fp32. Not nestable.
class ScopedCpuAutocast {
 public:
  explicit ScopedCpuAutocast(bool enabled);
  ~ScopedCpuAutocast();
  ScopedCpuAutocast(const ScopedCpuAutocast&) = delete;
  ScopedCpuAutocast& operator=(const ScopedCpuAutocast&) = delete;

 private:
  bool enabled_ = false;
};

// `--dtype auto`: the dtype that runs a model of `parameters` weights fastest on `device`. CUDA:
// bf16. A CPU with AMX: bf16 (its tiles multiply bf16 several times faster than fp32). A CPU with
// AVX512-BF16 but no AMX: a bf16 dot product does as many FLOPs per cycle as an fp32 FMA, so bf16
// pays only where a step streams its weights from memory, which it halves: bf16 from
// kLargeModelParameters up (the SD-Turbo UNet, 866 M: 1.49 vs 2.41 s), fp32 below (the StreamDiT
// student streams at 100 vs 60 FPS, TAESD decodes 256² in 163 vs 255 ms; Emerald Rapids VM, 2 cores).
// Other CPUs: fp32 (bf16 is emulated).
torch::ScalarType fastest_dtype(torch::Device device, std::int64_t parameters);
torch::ScalarType fastest_cpu_dtype(const CpuFeatures& cpu, std::int64_t parameters);
inline constexpr std::int64_t kLargeModelParameters = 100'000'000;

// Checks that the device exists in this build and on this machine; throws streamgen::Error.
void check_device(const torch::Device& device);
// Validates the combination, applies the thread count and logs a warning for slow choices
// (fp16 on CPU). Returns the options as applied.
ComputeOptions apply_compute_options(ComputeOptions options);

}  // namespace streamgen
