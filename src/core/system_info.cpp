#include "streamgen/system_info.h"

#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <dlfcn.h>
#include <fstream>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace streamgen {
namespace {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "unknown";
}

}  // namespace

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
  f.model = cpu_model_name();
  f.hardware_threads = static_cast<int>(std::thread::hardware_concurrency());
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d)) f.fma = (c >> 12) & 1;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = (b >> 5) & 1;
    f.avx512f = (b >> 16) & 1;
    f.avx512_fp16 = (d >> 23) & 1;
    f.amx_bf16 = (d >> 22) & 1;
    f.amx_tile = (d >> 24) & 1;
    f.amx_int8 = (d >> 25) & 1;
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = (a >> 5) & 1;
#endif
  return f;
}

std::string loaded_blas_library() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const auto path = line.substr(slash);
    const auto name = path.substr(path.rfind('/') + 1);
    if (name.find("blas") != std::string::npos || name.find("mkl_rt") != std::string::npos) return path;
  }
  return "";
}

std::string malloc_library() {
  // The global lookup scope is the one every library's calls to malloc bind to, so this names the
  // allocator in use whether it was linked in or preloaded.
  void* symbol = dlsym(RTLD_DEFAULT, "malloc");
  Dl_info where{};
  if (symbol == nullptr || dladdr(symbol, &where) == 0 || where.dli_fname == nullptr) return "";
  return where.dli_fname;
}

bool malloc_is_glibc() {
  const auto path = malloc_library();
  const auto name = path.substr(path.rfind('/') + 1);
  return name.rfind("libc.so", 0) == 0 || name.rfind("libc-", 0) == 0;
}

std::string torch_version_string() { return TORCH_VERSION; }
bool torch_has_cuda_build() { return at::hasCUDA(); }
bool torch_has_onednn() { return at::hasMKLDNN(); }

}  // namespace streamgen
