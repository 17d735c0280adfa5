// OpenBLAS's kernel family: which one runs, which one this CPU could run, and the start-up upgrade.
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "streamgen/system_info.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace streamgen {
namespace {

// OpenBLAS's x86-64 families from oldest to newest kernels, as openblas_get_corename() spells them.
// Haswell and Zen share kernels (AVX2 + FMA); families not listed count as older than Haswell.
int family_rank(std::string_view name) {
  constexpr std::array<std::pair<std::string_view, int>, 5> ranks{{
      {"haswell", 1}, {"zen", 1}, {"skylakex", 2}, {"cooperlake", 3}, {"sapphirerapids", 4}}};
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const auto& [family, rank] : ranks)
    if (lower == family) return rank;
  return 0;
}

// The family this CPU runs, by the same rules OpenBLAS applies to the CPUs it knows: vector width
// from CPUID, and the registers' state saved by the OS (XCR0), which a VM may withhold.
std::string family_for_this_cpu() {
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return "";
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  const bool amd = std::strcmp(vendor, "AuthenticAMD") == 0 || std::strcmp(vendor, "HygonGenuine") == 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return "";
  const bool fma = (c >> 12) & 1, osxsave = (c >> 27) & 1;
  if (!osxsave) return "";
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool os_avx = (xcr0_lo & 0x6) == 0x6, os_avx512 = (xcr0_lo & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return "";
  const bool avx2 = (b >> 5) & 1;
  const bool avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);  // F DQ BW VL
  bool avx512_bf16 = false;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) avx512_bf16 = (a >> 5) & 1;
  if (avx512 && os_avx512) return avx512_bf16 ? "Cooperlake" : "SkylakeX";
  if (avx2 && fma && os_avx) return amd ? "Zen" : "Haswell";
#endif
  return "";
}

using CoreName = char* (*)();
using DynamicInit = void (*)();

std::string openblas_family() {
  const auto name = reinterpret_cast<CoreName>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* core = name ? name() : nullptr;
  return core ? core : "";
}

// What upgrade_blas_kernels did, for blas_kernels() to report.
std::string& replaced_family() {
  static std::string replaced;
  return replaced;
}

}  // namespace

bool BlasKernels::behind_cpu() const { return !loaded.empty() && family_rank(loaded) < family_rank(for_cpu); }

BlasKernels blas_kernels() {
  BlasKernels k;
  k.loaded = openblas_family();
  k.for_cpu = family_for_this_cpu();
  if (k.loaded.empty()) return k;
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) {
    k.chosen_by = "OPENBLAS_CORETYPE";
  } else if (!replaced_family().empty()) {
    k.chosen_by = "streamgen";
    k.replaced = replaced_family();
  } else {
    k.chosen_by = "OpenBLAS";
  }
  return k;
}

BlasKernels upgrade_blas_kernels() {
  auto k = blas_kernels();
  if (k.chosen_by != "OpenBLAS" || !k.behind_cpu()) return k;
  // A dynamic-architecture OpenBLAS exports the pair its load-time constructor uses: quit forgets
  // the family, init selects one again, honouring OPENBLAS_CORETYPE as it does at load.
  const auto quit = reinterpret_cast<DynamicInit>(::dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  const auto init = reinterpret_cast<DynamicInit>(::dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  if (quit == nullptr || init == nullptr) return k;
  ::setenv("OPENBLAS_CORETYPE", k.for_cpu.c_str(), 1);
  quit();
  init();
  ::unsetenv("OPENBLAS_CORETYPE");  // child processes make their own choice
  replaced_family() = k.loaded;
  return blas_kernels();
}

}  // namespace streamgen
