// Stream benchmarks with random weights at real sizes (SD-Turbo UNet, TAESD).
#include <torch/cuda.h>
#include <torch/torch.h>

#include "streamgen/autoencoder_tiny.h"
#include "streamgen/bench.h"
#include "streamgen/device.h"
#include "streamgen/image_tensor.h"
#include "streamgen/similarity_filter.h"
#include "streamgen/stream_diffusion.h"

namespace streamgen {
namespace {

constexpr std::int64_t kContextTokens = 77;
constexpr int kStaticClipFrames = 100;

Timing time_steps(StreamDiffusion& s, const torch::Tensor& z, int runs, const torch::Device& device) {
  return time_runs(
      [&] {
        s.step(z);
        if (device.is_cuda()) torch::cuda::synchronize();  // CUDA kernels return before they finish
      },
      fixed_runs(runs));
}

StreamDiffusion make_stream(UNet2DConditionModel unet, std::vector<std::int64_t> t_index, CfgType cfg, bool batched, std::int64_t latent,
                            const UNetConditioning& ctx) {
  StreamDiffusionConfig c;
  c.t_index_list = std::move(t_index);
  c.cfg = cfg;
  c.use_denoising_batch = batched;
  const auto n = static_cast<std::int64_t>(c.t_index_list.size());
  StreamDiffusion s(unet, LcmScheduler{}, c, torch::randn({n, 4, latent, latent}));
  s.set_embeddings(ctx, ctx);
  return s;
}

}  // namespace

std::vector<BenchRow> bench_stream(const ModelBenchOptions& o) {
  torch::NoGradGuard no_grad;
  const auto preset = preset_or_default(o.preset);
  const auto cfg = UNet2DConditionConfig::from_json(unet_preset(preset), preset + " preset");
  const auto sizes = o.sizes.empty() ? std::vector<std::int64_t>{256, 512} : o.sizes;
  std::vector<BenchRow> rows;

  {  // The similarity filter on a static, slightly noisy clip: how many UNet calls it saves.
    SimilarityFilter ssf({0.98, 10, false}, 7);
    const auto base = torch::rand({1, 3, 256, 256}) * 2 - 1;
    int skipped = 0;
    for (int i = 0; i < kStaticClipFrames; ++i) skipped += !ssf.check(base + 0.01 * torch::randn_like(base)).process;
    BenchRow row;
    row["name"] = "stream_ssf_static_clip";
    row["threshold"] = 0.98;
    row["frames"] = kStaticClipFrames;
    row["skipped_fraction"] = static_cast<double>(skipped) / kStaticClipFrames;
    rows.push_back(row);
  }

  for (auto dtype : o.dtypes) {
    UNet2DConditionModel unet(cfg);
    prepare_for_inference(*unet, o.device, dtype);
    AutoencoderTiny taesd(AutoencoderTinyConfig{});
    prepare_autoencoder_tiny(*taesd, o.device, dtype);
    std::vector<std::pair<AutoencoderTiny, torch::ScalarType>> taesds{{taesd, dtype}};
    if (const auto own = fastest_dtype(o.device, parameter_count(*taesd)); own != dtype) {
      AutoencoderTiny t(AutoencoderTinyConfig{});
      prepare_autoencoder_tiny(*t, o.device, own);
      taesds.emplace_back(t, own);
    }
    const auto ctx = random_conditioning(cfg, 1, kContextTokens, torch::TensorOptions());
    for (auto size : sizes) {
      const auto latent = size / 8;
      const auto z = torch::randn({1, 4, latent, latent});
      auto base_row = [&](const char* name) {
        BenchRow row;
        row["name"] = name;
        row["preset"] = preset;
        row["dtype"] = dtype_label(dtype);
        row["size"] = size;
        return row;
      };
      // Stream Batch (one 4-row call per frame) vs the sequential loop (four 1-row calls).
      {
        auto batched = make_stream(unet, {0, 16, 32, 45}, CfgType::None, true, latent, ctx);
        auto sequential = make_stream(unet, {0, 16, 32, 45}, CfgType::None, false, latent, ctx);
        const auto tb = time_steps(batched, z, o.runs, o.device), ts = time_steps(sequential, z, o.runs, o.device);
        auto row = base_row("stream_batch_vs_sequential");
        row["steps"] = 4;
        add_timing(row, tb);
        row["sequential_ms"] = ts.median_ms;
        row["ratio"] = ts.median_ms / tb.median_ms;
        rows.push_back(row);
      }
      // RCFG self (n rows) vs full CFG (2n rows), 4 steps.
      {
        auto self = make_stream(unet, {0, 16, 32, 45}, CfgType::Self, true, latent, ctx);
        auto full = make_stream(unet, {0, 16, 32, 45}, CfgType::Full, true, latent, ctx);
        const auto t_self = time_steps(self, z, o.runs, o.device), t_full = time_steps(full, z, o.runs, o.device);
        auto row = base_row("stream_rcfg_self_vs_full");
        row["steps"] = 4;
        add_timing(row, t_self);
        row["full_ms"] = t_full.median_ms;
        row["ratio"] = t_full.median_ms / t_self.median_ms;
        rows.push_back(row);
      }
      // End-to-end img2img per frame: preprocess, TAESD encode, one stream step, TAESD decode, to uint8;
      // TAESD in the UNet's dtype, and in its own (what --dtype auto runs) where that differs.
      for (auto& [decoder, decoder_dtype] : taesds)
        for (const auto& t_index : std::vector<std::vector<std::int64_t>>{{35}, {32, 45}}) {
          auto s = make_stream(unet, t_index, CfgType::Self, true, latent, ctx);
          const auto frame = torch::randint(0, 256, {1, 3, size, size}, torch::kUInt8);
          const auto total = time_runs(
              [&, &decoder = decoder, decoder_dtype = decoder_dtype] {
                const auto x = image_u8_to_unit_range(frame).to(o.device, decoder_dtype);
                const auto lat = decoder->encode(x).to(torch::kCPU, torch::kFloat32);
                const auto out = s.step(lat);
                unit_range_to_image_u8(decoder->decode(out.latents.to(o.device, decoder_dtype)).to(torch::kCPU));
              },
              fixed_runs(o.runs));
          auto row = base_row("stream_img2img_e2e");
          row["taesd_dtype"] = dtype_label(decoder_dtype);
          row["steps"] = static_cast<std::int64_t>(t_index.size());
          add_timing(row, total);
          row["fps"] = 1000.0 / total.median_ms;
          rows.push_back(row);
        }
    }
  }
  return rows;
}

}  // namespace streamgen
