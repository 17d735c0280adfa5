#include "streamgen/tae_trainer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>

#include "streamgen/device.h"
#include "streamgen/dit_metrics.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"

namespace streamgen {

torch::Tensor tae_reconstruction_loss(const torch::Tensor& recon, const torch::Tensor& video, const TAELossWeights& w,
                                      std::int64_t group_frames) {
  // recon, video [N, T, C, H, W]
  const auto r = recon.to(torch::kFloat32);
  const auto& v = video;
  auto diff = [](const torch::Tensor& x, std::int64_t dim) { return x.narrow(dim, 1, x.size(dim) - 1) - x.narrow(dim, 0, x.size(dim) - 1); };
  auto loss = w.l1 * (r - v).abs().mean();
  if (w.mse > 0) loss = loss + w.mse * (r - v).pow(2).mean();
  if (w.gradient > 0)
    loss = loss + w.gradient * 0.5 * ((diff(r, 4) - diff(v, 4)).abs().mean() + (diff(r, 3) - diff(v, 3)).abs().mean());
  if (v.size(1) > 1 && (w.temporal > 0 || w.seam > 0)) {
    const auto frame_error = (diff(r, 1) - diff(v, 1)).abs();  // [N, T-1, C, H, W]; entry t is frame t+1 - frame t
    if (w.temporal > 0) loss = loss + w.temporal * frame_error.mean();
    if (w.seam > 0 && group_frames > 0 && v.size(1) > group_frames) {
      // entries r_t-1, 2r_t-1, …: the first frame of each group against the last of the one before
      const auto boundaries = torch::arange(group_frames - 1, v.size(1) - 1, group_frames, torch::kLong).to(v.device());
      loss = loss + w.seam * frame_error.index_select(1, boundaries).mean();
    }
  }
  return loss;
}

namespace {

TemporalAutoencoder as_tae(const ModulePtr& m) { return TemporalAutoencoder(std::static_pointer_cast<TemporalAutoencoderImpl>(m)); }

// Held-out clips, one engine per clip, independent of training's per-step seeds.
ClipBatch held_out_clip(ClipSource& data, std::uint64_t seed, std::int64_t index) {
  std::mt19937_64 rng(step_seed(seed, static_cast<std::uint64_t>(index), 91));
  return data.next(1, rng);
}

void check_clip_frames(const TemporalAutoencoderConfig& config, ClipSource& data) {
  std::mt19937_64 rng(1);
  const auto probe = data.next(1, rng).video;
  if (probe.size(1) % config.temporal_compression != 0)
    throw Error(fmt::format("temporal autoencoder training: clips of {} frames ({}) are not a multiple of the temporal compression {}",
                            probe.size(1), data.describe(), config.temporal_compression));
}

}  // namespace

TrainSummary train_temporal_autoencoder(const TemporalAutoencoderConfig& requested, ClipSource& data, const TAETrainOptions& o,
                                        const std::function<void(const TrainStepInfo&)>& on_step) {
  TemporalAutoencoderConfig config = requested;
  if (o.resume && has_training_run(o.out)) {
    const auto file = o.out / "config.json";
    config = TemporalAutoencoderConfig::from_json(read_json_file(file), file.string());
  } else if (!o.init_from.empty()) {
    const auto file = o.init_from / "config.json";
    config = TemporalAutoencoderConfig::from_json(read_json_file(file), file.string());
  }
  check_clip_frames(config, data);
  if (o.decoder_only && o.init_from.empty() && !(o.resume && has_training_run(o.out)))
    throw Error("temporal autoencoder training: --decoder-only keeps an encoder, so it needs --init FOLDER (or --resume of such a run)");
  OptimisationHooks run;
  run.create = [&config, &o]() -> ModulePtr {
    TemporalAutoencoder tae(config);
    // A frozen encoder builds no graph and gets no gradient, so AdamW and the EMA leave it be.
    if (o.decoder_only)
      for (auto& p : tae->encoder->parameters()) p.set_requires_grad(false);
    return tae.ptr();
  };
  if (!o.init_from.empty())
    run.initialise = [&](const ModulePtr& model) {
      copy_parameters(*load_temporal_autoencoder(o.init_from), *model);
      spdlog::info("starting from the weights of '{}'", o.init_from.string());
    };
  run.loss = [&](const ModulePtr& m, std::uint64_t step, std::uint64_t micro, std::int64_t first, std::int64_t count) {
    auto tae = as_tae(m);
    std::vector<torch::Tensor> clips, noise;
    for (std::int64_t e = first; e < first + count; ++e) {
      auto [rng, gen] = example_engines(o.seed, step, micro, e);
      clips.push_back(data.next(1, rng).video);
      if (o.latent_noise > 0) {
        const auto& c = tae->config;
        const auto v = clips.back();
        const auto s = c.spatial_compression();
        noise.push_back(torch::randn({1, v.size(1) / c.temporal_compression, c.latent_channels, v.size(3) / s, v.size(4) / s}, gen));
      }
    }
    const auto video = torch::cat(clips);
    const ScopedCpuAutocast autocast(o.bf16_autocast);
    auto z = tae->encoder(video);
    if (o.latent_noise > 0) {
      const auto rms = z.detach().to(torch::kFloat32).pow(2).mean().sqrt();
      z = z + (torch::cat(noise) * rms * o.latent_noise).to(z.dtype());
    }
    return tae_reconstruction_loss(tae->decoder(z), video, o.loss, tae->config.temporal_compression);
  };
  run.save = [](const ModulePtr& ema, const std::filesystem::path& folder, std::int64_t step) {
    auto tae = as_tae(ema);
    save_temporal_autoencoder(tae, folder, torch::kFloat32, {{"step", std::to_string(step)}, {"weights", "ema"}});
  };
  run.metadata = {{"l1", o.loss.l1},
                  {"mse", o.loss.mse},
                  {"gradient", o.loss.gradient},
                  {"temporal", o.loss.temporal},
                  {"seam", o.loss.seam},
                  {"latent_noise", o.latent_noise},
                  {"decoder_only", o.decoder_only},
                  {"data", data.describe()}};
  run.label = "tae train";
  const auto summary = run_optimisation(o, run, on_step);
  // A frozen encoder keeps the scaling its latents were calibrated (and a DiT trained) with.
  if (o.calibration_clips > 0 && o.distributed.rank == 0 && !o.decoder_only) {
    auto tae = load_temporal_autoencoder(o.out);
    const auto stats = measure_latent_statistics(tae, data, o.calibration_clips, o.calibration_seed);
    write_latent_calibration(o.out, stats);
    spdlog::info("latents of {} held-out clips: mean {:.4f}, std {:.4f} -> scaling_factor {:.4f}, shift_factor {:.4f}", o.calibration_clips,
                 stats.mean, stats.std, 1.0 / stats.std, stats.mean);
  }
  return summary;
}

LatentStatistics measure_latent_statistics(TemporalAutoencoder& tae, ClipSource& data, std::int64_t clips, std::uint64_t seed) {
  if (clips < 1) throw Error("latent statistics need at least one clip");
  torch::NoGradGuard no_grad;
  const ScopedBlasThreads blas_threads(1);
  double sum = 0, sum_sq = 0, count = 0;
  for (std::int64_t i = 0; i < clips; ++i) {
    const auto z = tae->encoder(held_out_clip(data, seed, i).video.to(tae->parameters().front().scalar_type())).to(torch::kFloat64);
    sum += z.sum().item<double>();
    sum_sq += z.pow(2).sum().item<double>();
    count += static_cast<double>(z.numel());
  }
  LatentStatistics s;
  s.mean = sum / count;
  s.std = std::sqrt(std::max(sum_sq / count - s.mean * s.mean, 1e-12));
  return s;
}

void write_latent_calibration(const std::filesystem::path& folder, const LatentStatistics& stats) {
  const auto file = folder / "config.json";
  auto config = TemporalAutoencoderConfig::from_json(read_json_file(file), file.string());
  config.scaling_factor = 1.0 / stats.std;
  config.shift_factor = stats.mean;
  config.validate(file.string());
  write_json_file(file, config.to_json());
}

namespace {
double psnr_of_mse(double mse) { return 10.0 * std::log10(4.0 / std::max(mse, 1e-12)); }  // peak-to-peak 2
}  // namespace

double psnr_unit_range(const torch::Tensor& a, const torch::Tensor& b) {
  return psnr_of_mse((a.to(torch::kFloat64) - b.to(torch::kFloat64)).pow(2).mean().item<double>());
}

TAEEvalReport evaluate_temporal_autoencoder(TemporalAutoencoder& tae, ClipSource& data, std::int64_t clips, std::int64_t chunk_latents,
                                            std::uint64_t seed) {
  if (clips < 1 || chunk_latents < 1) throw Error("tae eval: clips and the chunk size must be >= 1");
  torch::NoGradGuard no_grad;
  const ScopedBlasThreads blas_threads(1);
  using clock = std::chrono::steady_clock;
  const auto dtype = tae->parameters().front().scalar_type();
  const auto r = tae->config.temporal_compression;
  TAEEvalReport report;
  double mse = 0, mse_chunked = 0, mse_plain = 0, encode_s = 0, decode_s = 0;
  for (std::int64_t i = 0; i < clips; ++i) {
    const auto video = held_out_clip(data, seed, i).video.to(dtype);  // [1, T, 3, H, W]
    auto t0 = clock::now();
    const auto z = tae->encode(video);
    encode_s += std::chrono::duration<double>(clock::now() - t0).count();
    t0 = clock::now();
    const auto whole = tae->decode(z).to(torch::kFloat32).clamp(-1, 1);
    decode_s += std::chrono::duration<double>(clock::now() - t0).count();
    auto chunked = [&](std::int64_t overlap) {
      ChunkDecoder decoder(tae, overlap);
      std::vector<torch::Tensor> parts;
      for (std::int64_t t = 0; t < z.size(1); t += chunk_latents) parts.push_back(decoder.decode(z[0].narrow(0, t, std::min(chunk_latents, z.size(1) - t))));
      return torch::cat(parts).to(torch::kFloat32).clamp(-1, 1);
    };
    const auto with_overlap = chunked(-1), without = chunked(0);
    const auto real = video[0].to(torch::kFloat32);
    auto sq = [&](const torch::Tensor& x) { return (x - real).pow(2).mean().item<double>(); };
    mse += sq(whole[0]);
    mse_chunked += sq(with_overlap);
    mse_plain += sq(without);
    const auto chunk_frames = chunk_latents * r;
    report.seam_ratio_real += seam_ratio(real, chunk_frames);
    report.seam_ratio_chunked += seam_ratio(with_overlap, chunk_frames);
    report.seam_ratio_no_overlap += seam_ratio(without, chunk_frames);
    report.frames += video.size(1);
  }
  const double n = static_cast<double>(clips);
  report.clips = clips;
  report.psnr = psnr_of_mse(mse / n);
  report.psnr_chunked = psnr_of_mse(mse_chunked / n);
  report.psnr_chunked_no_overlap = psnr_of_mse(mse_plain / n);
  report.seam_ratio_real /= n;
  report.seam_ratio_chunked /= n;
  report.seam_ratio_no_overlap /= n;
  report.seconds_per_frame_encode = encode_s / static_cast<double>(report.frames);
  report.seconds_per_frame_decode = decode_s / static_cast<double>(report.frames);
  return report;
}

}  // namespace streamgen
