#pragma once
// What the machine offers: CPU instruction sets, the BLAS and malloc actually in use, LibTorch build.
#include <string>

namespace streamgen {

struct CpuFeatures {
  std::string model;
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512_bf16 = false;
  bool avx512_fp16 = false;
  bool amx_tile = false;
  bool amx_bf16 = false;
  bool amx_int8 = false;
  int hardware_threads = 0;
};

CpuFeatures detect_cpu_features();
// The shared library that provides BLAS in this process (from /proc/self/maps), or "" if none.
std::string loaded_blas_library();
// The shared library whose malloc this process calls (libc, tcmalloc, jemalloc, mimalloc ...), as
// the dynamic linker resolved it, and whether it is glibc's: LibTorch's CPU kernels allocate and free
// large buffers on every op, and glibc hands those back to the kernel each time, so a small model
// spends a third or more of its time in page faults (see scripts/setup.sh).
std::string malloc_library();
bool malloc_is_glibc();
std::string torch_version_string();
bool torch_has_cuda_build();
bool torch_has_onednn();

// Below this fp32 matmul rate the reference (unoptimised) BLAS is almost certainly in use.
inline constexpr double kHealthyFp32Gflops = 50.0;

}  // namespace streamgen
