// `bench lora`: what a LoRA costs at load and on a live scale change, against loading the base UNet
// from disk, at full size with random weights (a kohya file as LCM-LoRA's: every attention and
// feed-forward projection, proj_in / proj_out, the resnets' convs, time projections and shortcuts,
// the down- and up-samplers).
#include <torch/torch.h>
#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <fstream>

#include "streamgen/bench.h"
#include "streamgen/error.h"
#include "streamgen/lora.h"
#include "streamgen/safetensors.h"
#include "streamgen/state_dict.h"
#include "streamgen/unet_2d_condition.h"

namespace streamgen {
namespace {

// The layers LCM-LoRA adapts (diffusers' train_lcm_distill_lora_sd_wds.py target list).
bool lcm_lora_target(const std::string& path) {
  static const std::vector<std::string> ends = {"to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                                                "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"};
  return std::any_of(ends.begin(), ends.end(), [&](const std::string& e) { return path == e || path.ends_with("." + e); });
}

struct Written {
  std::int64_t modules = 0;
  double gflop = 0;  // of one fusion: 2 r out rest per module
};

Written write_kohya_lora(torch::nn::Module& unet, std::int64_t rank, const std::filesystem::path& file) {
  NamedTensors tensors;
  Written w;
  torch::manual_seed(1234);
  for (const auto& p : unet.named_parameters()) {
    const auto& name = p.key();
    if (!name.ends_with(".weight") || p.value().dim() < 2) continue;
    const auto path = name.substr(0, name.size() - 7);
    if (!lcm_lora_target(path)) continue;
    const auto& weight = p.value();
    const auto out = weight.size(0);
    auto down_shape = weight.sizes().vec();
    down_shape[0] = rank;
    auto up_shape = std::vector<std::int64_t>{out, rank};
    if (weight.dim() == 4) up_shape.insert(up_shape.end(), {1, 1});
    auto key = path;
    std::replace(key.begin(), key.end(), '.', '_');
    key = "lora_unet_" + key;
    const auto rest = weight.numel() / out;
    tensors.emplace_back(key + ".lora_down.weight", (torch::randn(down_shape) / std::sqrt(static_cast<double>(rest))).to(torch::kFloat16));
    tensors.emplace_back(key + ".lora_up.weight", (torch::randn(up_shape) * 0.01).to(torch::kFloat16));
    tensors.emplace_back(key + ".alpha", torch::tensor(static_cast<float>(rank) / 2).to(torch::kFloat16));
    ++w.modules;
    w.gflop += 2.0 * static_cast<double>(rank) * static_cast<double>(weight.numel()) / 1e9;
  }
  save_safetensors(file, tensors, {{"ss_network_dim", std::to_string(rank)}, {"ss_network_module", "networks.lora"}});
  return w;
}

}  // namespace

std::vector<BenchRow> bench_lora(const LoraBenchOptions& options) {
  torch::NoGradGuard no_grad;
  if (options.rank < 1) throw Error("bench lora: --rank must be at least 1");
  const auto preset = options.preset.empty() ? std::string("sd15") : options.preset;
  const auto dir = options.dir / ("streamgen-bench-lora-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "unet");
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(p, ec);
    }
  } cleanup{dir};

  // The base model as users have it: a diffusers folder with float16 weights.
  auto config = unet_preset(preset);
  config["_class_name"] = "UNet2DConditionModel";
  Written lora;
  {
    UNet2DConditionModel unet(UNet2DConditionConfig::from_json(config, preset));
    std::ofstream(dir / "unet" / "config.json") << config.dump(2);
    save_state_dict(*unet, dir / "unet" / "diffusion_pytorch_model.safetensors", torch::kFloat16);
    lora = write_kohya_lora(*unet, options.rank, dir / "lora.safetensors");
  }
  ComputeOptions compute;
  compute.device = options.device;
  compute.dtype = options.dtype;
  const auto topt = fixed_runs(options.runs, /*warmup=*/0);
  auto load = [&] { return load_unet_2d_condition(dir / "unet", compute); };
  const std::vector<LoraSpec> specs{{dir / "lora.safetensors", 1.0}};
  auto targets = [](UNet2DConditionModel& unet) { return std::vector<LoraTarget>{{"unet", unet.get()}}; };

  std::vector<BenchRow> rows;
  auto row = [&](const std::string& what, const Timing& t) {
    BenchRow r;
    r["name"] = "lora";
    r["what"] = what;
    r["preset"] = preset;
    r["rank"] = options.rank;
    r["modules"] = lora.modules;
    r["dtype"] = dtype_label(options.dtype);
    add_timing(r, t);
    return r;
  };

  // Loading the base model (the page cache holds the file: it was just written; a cold disk is slower).
  const auto load_t = time_runs([&] { load(); }, topt);
  rows.push_back(row("load base unet", load_t));
  rows.back()["size_gb"] = static_cast<double>(std::filesystem::file_size(dir / "unet" / "diffusion_pytorch_model.safetensors")) / 1e9;

  // Fusing at load: reading the LoRA file and adding up @ down into every adapted weight.
  std::vector<double> once_ms, exact_ms;
  std::int64_t kept = 0;
  for (int i = 0; i < options.runs; ++i) {
    auto unet = load();
    const auto t0 = std::chrono::steady_clock::now();
    LoraFusion fusion(specs, targets(unet));
    once_ms.push_back(ms_since(t0));
  }
  auto fuse_row = row("fuse at load", summarize(once_ms));
  fuse_row["gflop"] = lora.gflop;
  fuse_row["gflops"] = lora.gflop / (fuse_row["median_ms"].get<double>() / 1e3);
  fuse_row["ratio_to_load"] = fuse_row["median_ms"].get<double>() / load_t.median_ms;
  rows.push_back(fuse_row);

  // Rescalable: the adapted weights as loaded are kept, then every scale change re-fuses from them.
  auto unet = load();
  {
    const auto t0 = std::chrono::steady_clock::now();
    LoraFusion fusion(specs, targets(unet), LoraRescale::Exact);
    exact_ms.push_back(ms_since(t0));
    kept = fusion.kept_bytes();
    auto exact_row = row("fuse at load, rescalable", summarize(exact_ms));
    exact_row["kept_mib"] = static_cast<double>(kept) / (1 << 20);
    exact_row["ratio_to_load"] = exact_row["median_ms"].get<double>() / load_t.median_ms;
    rows.push_back(exact_row);
    double scale = 1.0;
    const auto change_t = time_runs([&] { fusion.set_scales({scale = scale == 1.0 ? 0.5 : 1.0}); }, topt);
    auto change_row = row("scale change", change_t);
    change_row["gflop"] = lora.gflop;
    change_row["gflops"] = lora.gflop / (change_t.median_ms / 1e3);
    change_row["matmul_gflops"] = matmul_gflops(1024, time_matmul(1024, torch::kFloat32, options.device, 0.5).median_ms);
    rows.push_back(change_row);
  }
  return rows;
}

}  // namespace streamgen
