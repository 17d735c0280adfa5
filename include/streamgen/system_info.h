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

// OpenBLAS picks its kernel family once, as it loads, from the CPU's family and model number. A CPU
// newer than the installed OpenBLAS gets the generic Prescott (SSE3) kernels: Debian 12's 0.3.21 on
// an Emerald Rapids VM (family 6, model 207) ran fp32 matmul at 40 instead of 240 GFLOP/s.
struct BlasKernels {
  std::string loaded;      // the family in use as OpenBLAS names it ("Cooperlake"); "" when the BLAS is not OpenBLAS
  std::string for_cpu;     // the best family this CPU and its OS run ("Cooperlake", "SkylakeX", "Haswell", "Zen"); "" if none
  std::string chosen_by;   // "OpenBLAS", "OPENBLAS_CORETYPE" (set by the user) or "streamgen" (see upgrade_blas_kernels)
  std::string replaced;    // with "streamgen": the family OpenBLAS had picked itself
  // True when OpenBLAS runs an older family than this CPU could (only when the user forced one).
  bool behind_cpu() const;
};
BlasKernels blas_kernels();
// When OpenBLAS runs an older kernel family than the CPU supports and OPENBLAS_CORETYPE is unset, has
// it select again with that family named, as OPENBLAS_CORETYPE would have at load time. OpenBLAS
// reads its choice on every call, so this must run before any thread calls BLAS: the executables
// call it first thing in main. A process that embeds the library may call it at start-up too.
BlasKernels upgrade_blas_kernels();

// Below this fp32 matmul rate the reference (unoptimised) BLAS is almost certainly in use.
inline constexpr double kHealthyFp32Gflops = 50.0;

}  // namespace streamgen
