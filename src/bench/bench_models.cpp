// Model benchmarks at real sizes with random weights (nothing is downloaded).
#include <torch/cuda.h>
#include <torch/torch.h>

#include <fmt/core.h>

#include <algorithm>
#include <iostream>

#include "streamgen/autoencoder_tiny.h"
#include "streamgen/bench.h"
#include "streamgen/clip_text_model.h"
#include "streamgen/controlnet.h"
#include "streamgen/device.h"
#include "streamgen/error.h"
#include "streamgen/flop_counter.h"
#include "streamgen/unet_2d_condition.h"

namespace streamgen {
namespace {

}  // namespace

// diffusers' configs of the real models (only the fields that differ from our defaults).
std::string preset_or_default(const std::string& preset) { return preset.empty() ? std::string("sd21") : preset; }

nlohmann::json unet_preset(const std::string& preset) {
  if (preset == "sd15")
    return {{"block_out_channels", {320, 640, 1280, 1280}}, {"attention_head_dim", 8}, {"cross_attention_dim", 768}};
  if (preset == "sd21")  // SD 2.1 / SD-Turbo
    return {{"block_out_channels", {320, 640, 1280, 1280}},
            {"attention_head_dim", {5, 10, 20, 20}},
            {"cross_attention_dim", 1024},
            {"use_linear_projection", true}};
  if (preset == "sdxl")  // SDXL base / SDXL-Turbo: 2.6 B weights, 10 transformer blocks per attention at the lowest level
    return {{"block_out_channels", {320, 640, 1280}},
            {"down_block_types", {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"}},
            {"up_block_types", {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"}},
            {"attention_head_dim", {5, 10, 20}},
            {"transformer_layers_per_block", {1, 2, 10}},
            {"cross_attention_dim", 2048},
            {"use_linear_projection", true},
            {"addition_embed_type", "text_time"},
            {"addition_time_embed_dim", 256},
            {"projection_class_embeddings_input_dim", 2816}};
  throw Error("unknown preset '" + preset + "' (expected sd15, sd21 or sdxl)");
}

UNetConditioning random_conditioning(const UNet2DConditionConfig& config, std::int64_t batch, std::int64_t tokens, const torch::TensorOptions& options) {
  UNetConditioning c(torch::randn({batch, tokens, config.cross_attention_dim}, options));
  if (config.text_time) {
    c.text_embeds = torch::randn({batch, config.text_embeds_dim()}, options);
    c.time_ids = default_time_ids(1024, 1024).expand({batch, -1}).to(options.device());
  }
  return c;
}

namespace {

// `to` gets `from`'s weights in the other memory layout of its convolution kernels (channels-last <-> contiguous):
// the benches print both layouts side by side, the one the model's loader picks first.
void copy_in_other_layout(torch::nn::Module& from, torch::nn::Module& to) {
  auto a = from.parameters();
  auto b = to.parameters();
  const auto is_cl = [](const torch::Tensor& t) { return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(torch::MemoryFormat::ChannelsLast); };
  const bool channels_last = std::any_of(a.begin(), a.end(), is_cl);
  for (std::size_t i = 0; i < a.size(); ++i)
    b[i].set_data(a[i].dim() != 4 ? a[i] : channels_last ? a[i].contiguous() : a[i].contiguous(torch::MemoryFormat::ChannelsLast));
}

const char* layout_of(torch::nn::Module& m) {
  for (const auto& p : m.parameters())
    if (p.dim() == 4 && !p.is_contiguous()) return "channels_last";
  return "contiguous";
}

ClipTextConfig text_preset(const std::string& preset) {
  ClipTextConfig c;
  if (preset == "sd15") return c;  // CLIP ViT-L/14 text tower: the defaults
  if (preset == "sd21") {          // OpenCLIP ViT-H/14 as SD2 uses it (23 of 24 layers)
    c.hidden_size = 1024;
    c.intermediate_size = 4096;
    c.num_hidden_layers = 23;
    c.num_attention_heads = 16;
    c.hidden_act = "gelu";
    return c;
  }
  throw Error("unknown preset '" + preset + "' (expected sd15 or sd21)");
}

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

double conv_peak(torch::ScalarType dtype, const torch::Device& device) {
  return conv_probe_gflops(time_conv(dtype, device, 0.5).median_ms);
}

void print_profile(const BenchRow& row, const std::function<void()>& fn) {
  std::vector<std::pair<std::string, OpTimer::Entry>> ops;
  {
    OpTimer timer;
    fn();
    for (const auto& e : timer.entries()) ops.emplace_back(e.first, e.second);
  }
  double total = 0;
  for (const auto& [_, e] : ops) total += e.ms;
  std::sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  std::cerr << "profile of one call " << row.dump() << "\n";
  for (std::size_t i = 0; i < ops.size() && i < 15; ++i)
    std::cerr << fmt::format("  {:<32} {:>6} calls {:>9.1f} ms {:>5.1f}%\n", ops[i].first, ops[i].second.calls, ops[i].second.ms,
                             100 * ops[i].second.ms / total);
}

// Times fn() `runs` times after one warm-up; counts its FLOPs once.
BenchRow measure(BenchRow row, const std::function<void()>& fn, int runs, double peak_gflops, bool profile = false) {
  if (profile) print_profile(row, fn);
  double flops = 0;
  {
    FlopCounter counter;
    fn();
    flops = counter.flops();
  }
  const auto timing = time_runs(fn, fixed_runs(runs, /*warmup=*/0));  // the counted call above warmed up
  add_timing(row, timing);
  row["gflop"] = flops / 1e9;
  row["gflops"] = flops / 1e9 / (timing.median_ms / 1e3);
  row["ratio_to_peak"] = row["gflops"].get<double>() / peak_gflops;
  return row;
}

}  // namespace

std::vector<BenchRow> bench_unet(const ModelBenchOptions& o) {
  torch::NoGradGuard no_grad;
  const auto preset = preset_or_default(o.preset);
  const auto cfg = UNet2DConditionConfig::from_json(unet_preset(preset), preset + " preset");
  const auto sizes = o.sizes.empty() ? std::vector<std::int64_t>{32, 64} : o.sizes;
  std::vector<BenchRow> rows;
  for (auto dtype : o.dtypes) {
    UNet2DConditionModel unet(cfg);
    const auto params = parameter_count(*unet);
    prepare_for_inference(*unet, o.device, dtype);
    ControlNetModel controlnet{nullptr};
    if (o.controlnet) {
      ControlNetConfig c;
      c.unet = cfg;
      controlnet = ControlNetModel(c);
      prepare_for_inference(*controlnet, o.device, dtype);
    }
    UNet2DConditionModel other{nullptr};  // --layouts: the same weights in the other memory layout
    if (o.both_layouts) {
      other = UNet2DConditionModel(cfg);
      prepare_for_inference(*other, o.device, dtype);
      copy_in_other_layout(*unet, *other);
    }
    const double peak = conv_peak(dtype, o.device);
    for (auto b : o.batches)
      for (auto s : sizes) {
        const auto opts = torch::TensorOptions().device(o.device).dtype(dtype);
        const auto x = torch::randn({b, 4, s, s}, opts);
        const auto ctx = random_conditioning(cfg, b, 77, opts);
        const auto t = torch::full({b}, 999, torch::TensorOptions().device(o.device).dtype(torch::kInt64));
        BenchRow row;
        row["name"] = "unet";
        row["preset"] = preset;
        row["params_m"] = static_cast<double>(params) / 1e6;
        row["dtype"] = dtype_label(dtype);
        row["batch"] = b;
        row["latent"] = s;
        row["layout"] = layout_of(*unet);
        rows.push_back(measure(row, [&] { unet->forward(x, t, ctx); sync(o.device); }, o.runs, peak, o.profile));
        rows.back()["conv_peak_gflops"] = peak;
        if (other) {
          auto alt = row;
          alt["layout"] = layout_of(*other);
          rows.push_back(measure(alt, [&] { other->forward(x, t, ctx); sync(o.device); }, o.runs, peak, o.profile));
          rows.back()["conv_peak_gflops"] = peak;
        }
        if (!controlnet) continue;
        // The ControlNet's residuals go into the UNet call, as in the stream: one step of both.
        const auto control = torch::rand({b, 3, s * 8, s * 8}, opts);
        const double alone = rows.back()["median_ms"].get<double>();
        row["name"] = "unet+controlnet";
        rows.push_back(measure(
            row,
            [&] {
              const auto r = controlnet->forward(x, t, ctx, control, 1.0);
              unet->forward(x, t, ctx, &r.residuals);
              sync(o.device);
            },
            o.runs, peak, o.profile));
        rows.back()["ratio_to_unet"] = rows.back()["median_ms"].get<double>() / alone;
      }
  }
  return rows;
}

std::vector<BenchRow> bench_taesd(const ModelBenchOptions& o) {
  torch::NoGradGuard no_grad;
  const auto sizes = o.sizes.empty() ? std::vector<std::int64_t>{256, 512} : o.sizes;
  std::vector<BenchRow> rows;
  for (auto dtype : o.dtypes) {
    AutoencoderTiny taesd(AutoencoderTinyConfig{});
    prepare_autoencoder_tiny(*taesd, o.device, dtype);
    // The same weights in both memory layouts, side by side: what prepare_autoencoder_tiny picks, and the other.
    AutoencoderTiny other(AutoencoderTinyConfig{});
    prepare_for_inference(*other, o.device, dtype);
    copy_in_other_layout(*taesd, *other);
    const double peak = conv_peak(dtype, o.device);
    for (auto b : o.batches)
      for (auto s : sizes) {
        const auto opts = torch::TensorOptions().device(o.device).dtype(dtype);
        const auto img = torch::rand({b, 3, s, s}, opts) * 2 - 1;
        const auto lat = torch::randn({b, 4, s / 8, s / 8}, opts);
        for (auto* model : {&taesd, &other})
          for (const std::string op : {"encode", "decode"}) {
            auto& m = *model;
            BenchRow row;
            row["name"] = "taesd_" + op;
            row["dtype"] = dtype_label(dtype);
            row["layout"] = layout_of(*m);
            row["batch"] = b;
            row["size"] = s;
            auto fn = op == "encode" ? std::function<void()>([&] { m->encode(img); sync(o.device); })
                                     : std::function<void()>([&] { m->decode(lat); sync(o.device); });
            rows.push_back(measure(row, fn, o.runs, peak, o.profile));
            rows.back()["fps"] = 1000.0 * static_cast<double>(b) / rows.back()["median_ms"].get<double>();
          }
      }
  }
  return rows;
}

std::vector<BenchRow> bench_text_encoder(const ModelBenchOptions& o) {
  torch::NoGradGuard no_grad;
  const auto preset = preset_or_default(o.preset);
  std::vector<BenchRow> rows;
  for (auto dtype : o.dtypes) {
    ClipTextModel te(text_preset(preset));
    const auto params = parameter_count(*te);
    prepare_for_inference(*te, o.device, dtype);
    const double peak = conv_peak(dtype, o.device);
    for (auto b : o.batches) {
      const auto ids = torch::randint(0, 49406, {b, 77}, torch::TensorOptions().device(o.device).dtype(torch::kInt64));
      BenchRow row;
      row["name"] = "text_encoder";
      row["preset"] = preset;
      row["params_m"] = static_cast<double>(params) / 1e6;
      row["dtype"] = dtype_label(dtype);
      row["batch"] = b;
      row["tokens"] = 77;
      rows.push_back(measure(row, [&] { te->forward(ids); sync(o.device); }, o.runs, peak, o.profile));
    }
  }
  return rows;
}

}  // namespace streamgen
