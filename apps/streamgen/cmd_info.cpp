// streamgen info: what this build and machine offer, and a matmul probe that catches a slow BLAS.
#include <fmt/core.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>

#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "streamgen/bench.h"
#include "streamgen/build_info.h"
#include "streamgen/system_info.h"

namespace streamgen::cli {
namespace {

struct InfoArgs {
  ComputeArgs compute;
  double probe_seconds = 0.5;
  std::int64_t probe_size = 1024;
  bool no_probe = false;
  bool json = false;
};

const char* yes_no(bool b) { return b ? "yes" : "no"; }

// Why fp32 matmul is slow, from what is loaded: the reference BLAS, OpenBLAS forced onto kernels
// older than the CPU, or (none of these) cores busy with other work.
std::string slow_fp32_warning(double gflops, const std::string& blas, const BlasKernels& kernels) {
  const auto rate = fmt::format("fp32 matmul reaches only {:.1f} GFLOP/s (a healthy build exceeds {:.0f})", gflops, kHealthyFp32Gflops);
  if (kernels.loaded.empty())
    return fmt::format("{}: the BLAS loaded is not OpenBLAS ({}), probably the reference one; install libopenblas0-pthread "
                       "(scripts/setup.sh does)",
                       rate, blas.empty() ? "none found" : blas);
  if (kernels.behind_cpu() && kernels.chosen_by == "OPENBLAS_CORETYPE")
    return fmt::format("{}: OPENBLAS_CORETYPE={} puts OpenBLAS on its {} kernels on a CPU that runs {}; unset it or set "
                       "OPENBLAS_CORETYPE={}",
                       rate, std::getenv("OPENBLAS_CORETYPE"), kernels.loaded, kernels.for_cpu, kernels.for_cpu);
  if (kernels.behind_cpu())
    return fmt::format("{}: OpenBLAS runs its {} kernels on a CPU that runs {} (it does not know this CPU); run with "
                       "OPENBLAS_CORETYPE={}",
                       rate, kernels.loaded, kernels.for_cpu, kernels.for_cpu);
  return fmt::format("{} with OpenBLAS's {} kernels: other processes are using the cores, or the machine is throttled; "
                     "measure again when it is idle",
                     rate, kernels.loaded);
}

std::string describe_blas(const std::string& blas, const BlasKernels& kernels) {
  if (blas.empty()) return "none loaded";
  if (kernels.loaded.empty()) return blas;
  if (kernels.chosen_by == "streamgen")
    return fmt::format("{} ({} kernels; OpenBLAS took this CPU for {})", blas, kernels.loaded, kernels.replaced);
  return fmt::format("{} ({} kernels, chosen by {})", blas, kernels.loaded, kernels.chosen_by);
}

void run_info(const InfoArgs& args) {
  const auto opts = args.compute.resolve();
  const auto cpu = detect_cpu_features();
  nlohmann::ordered_json info;
  info["streamgen"] = STREAMGEN_VERSION_STRING;
  info["build"] = std::string(STREAMGEN_BUILD_TYPE) + ", " + STREAMGEN_COMPILER;
  info["libtorch"] = torch_version_string();
  info["libtorch_cuda_build"] = torch_has_cuda_build();
  info["cuda_devices"] = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  info["cpu"] = cpu.model;
  info["isa"] = {{"avx2", cpu.avx2}, {"fma", cpu.fma}, {"avx512f", cpu.avx512f}, {"avx512_bf16", cpu.avx512_bf16},
                 {"avx512_fp16", cpu.avx512_fp16}, {"amx_tile", cpu.amx_tile}, {"amx_bf16", cpu.amx_bf16},
                 {"amx_int8", cpu.amx_int8}};
  info["threads"] = opts.threads;
  info["hardware_threads"] = cpu.hardware_threads;
  info["blas"] = loaded_blas_library();
  const auto kernels = blas_kernels();
  if (!kernels.loaded.empty())
    info["blas_kernels"] = {{"loaded", kernels.loaded}, {"for_cpu", kernels.for_cpu}, {"chosen_by", kernels.chosen_by},
                            {"replaced", kernels.replaced}};
  info["malloc"] = malloc_library();
  info["onednn"] = torch_has_onednn();

  std::vector<std::string> warnings;
  if (opts.device.is_cpu() && malloc_is_glibc())
    warnings.push_back(fmt::format(
        "malloc is glibc's ({}): LibTorch's CPU ops then spend much of their time in page faults (the StreamDiT "
        "student streams ~2x slower); build with libtcmalloc-minimal4 installed (scripts/setup.sh does) or run with "
        "LD_PRELOAD=libtcmalloc_minimal.so.4",
        info["malloc"].get<std::string>()));
  if (!args.no_probe) {
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      const auto t = time_matmul(args.probe_size, dtype, opts.device, args.probe_seconds);
      const double gflops = matmul_gflops(args.probe_size, t.median_ms);
      info["matmul_" + dtype_label(dtype) + "_gflops"] = gflops;
      if (dtype == torch::kFloat32 && opts.device.is_cpu() && gflops < kHealthyFp32Gflops)
        warnings.push_back(slow_fp32_warning(gflops, info["blas"].get<std::string>(), kernels));
    }
    info["matmul_device"] = opts.device.str();
    info["matmul_n"] = args.probe_size;
  }
  // What --dtype auto runs a large model in (the rule in device.h; small models take fp32 without AMX).
  info["fast_cpu_dtype"] = dtype_label(fastest_cpu_dtype(cpu, kLargeModelParameters));
  info["warnings"] = warnings;

  if (args.json) {
    std::cout << info.dump() << std::endl;
  } else {
    std::cout << fmt::format("streamgen      {} ({})\n", STREAMGEN_VERSION_STRING, info["build"].get<std::string>());
    std::cout << fmt::format("LibTorch       {} ({} build)\n", torch_version_string(), torch_has_cuda_build() ? "CUDA" : "CPU");
    std::cout << fmt::format("CUDA devices   {}\n", info["cuda_devices"].get<int>());
    std::cout << fmt::format("CPU            {}\n", cpu.model);
    std::cout << fmt::format("ISA            AVX2 {}  FMA {}  AVX-512 {}  AVX512-BF16 {}  AVX512-FP16 {}  AMX-BF16 {}  AMX-INT8 {}\n",
                             yes_no(cpu.avx2), yes_no(cpu.fma), yes_no(cpu.avx512f), yes_no(cpu.avx512_bf16),
                             yes_no(cpu.avx512_fp16), yes_no(cpu.amx_bf16 && cpu.amx_tile), yes_no(cpu.amx_int8 && cpu.amx_tile));
    std::cout << fmt::format("threads        {} (of {} hardware threads)\n", opts.threads, cpu.hardware_threads);
    std::cout << fmt::format("BLAS           {}\n", describe_blas(info["blas"].get<std::string>(), kernels));
    std::cout << fmt::format("malloc         {}\n", info["malloc"].get<std::string>().empty() ? "unknown" : info["malloc"].get<std::string>());
    std::cout << fmt::format("oneDNN         {}\n", yes_no(torch_has_onednn()));
    if (!args.no_probe)
      for (auto dtype : {torch::kFloat32, torch::kBFloat16})
        std::cout << fmt::format("matmul {}    {:.1f} GFLOP/s ({}x{}, {})\n", dtype_label(dtype),
                                 info["matmul_" + dtype_label(dtype) + "_gflops"].get<double>(), args.probe_size,
                                 args.probe_size, opts.device.str());
    std::cout << fmt::format("fast CPU dtype {}\n", info["fast_cpu_dtype"].get<std::string>());
    std::cout.flush();
  }
  for (const auto& w : warnings) spdlog::warn("{}", w);
}

}  // namespace

void register_info(CLI::App& app) {
  auto args = std::make_shared<InfoArgs>();
  auto* cmd = app.add_subcommand("info", "Show the build, CPU/GPU features and a matmul speed probe");
  args->compute.add_to(*cmd, /*with_dtype=*/false);
  cmd->add_option("--probe-seconds", args->probe_seconds, "Seconds per dtype for the matmul probe")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--probe-size", args->probe_size, "Matrix size n of the probe (n x n)")->capture_default_str()->check(CLI::Range(16, 16384));
  cmd->add_flag("--no-probe", args->no_probe, "Skip the matmul probe");
  cmd->add_flag("--json", args->json, "One JSON object instead of text");
  cmd->callback([args] { run_info(*args); });
}

}  // namespace streamgen::cli
