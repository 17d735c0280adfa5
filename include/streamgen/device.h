#pragma once
// Device, dtype and thread policy shared by every subcommand (--device, --dtype, --threads).
#include <torch/types.h>

#include <string>
#include <string_view>

namespace streamgen {

struct ComputeOptions {
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;
  int threads = 0;  // 0: every CPU this process may run on
};

// "cpu", "cuda", "cuda:N". Throws streamgen::Error naming the accepted forms.
torch::Device parse_device(std::string_view text);
// "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16"/"half".
torch::ScalarType parse_dtype(std::string_view text);
// The short name used on the command line: fp32, bf16, fp16 (or LibTorch's name for others).
std::string dtype_label(torch::ScalarType dtype);

// CPUs this process may run on (its affinity mask).
int available_cpus();

// Checks that the device exists in this build and on this machine; throws streamgen::Error.
void check_device(const torch::Device& device);
// Validates the combination, applies the thread count and logs a warning for slow choices
// (fp16 on CPU). Returns the options as applied.
ComputeOptions apply_compute_options(ComputeOptions options);

}  // namespace streamgen
