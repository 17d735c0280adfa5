// streamgen tae train | eval | reconstruct: the temporal autoencoder StreamDiT's latent models use.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <torch/torch.h>

#include <iostream>
#include <random>

#include "commands.h"
#include "streamgen/dit_codec.h"
#include "streamgen/dit_stream.h"
#include "streamgen/error.h"
#include "streamgen/media.h"
#include "streamgen/progress.h"
#include "streamgen/tae_trainer.h"

namespace streamgen::cli {
namespace {

// Training and evaluation clips: the user's video folder, or else procedural shapes of this size.
std::unique_ptr<ClipSource> tae_clip_source(const std::string& folder, std::int64_t size, std::int64_t frames, const std::string& edges) {
  if (!folder.empty()) return std::make_unique<VideoFolderClipSource>(folder, frames, size, size);
  return std::make_unique<ProceduralClipSource>(ProceduralVideoOptions::for_frame_size(size, size, parse_edge_rule(edges)), frames);
}

void print_report(const TAEEvalReport& r, std::int64_t chunk_latents, std::int64_t overlap) {
  std::cout << fmt::format(
                   "reconstruction of {} held-out clips ({} frames):\n"
                   "  PSNR whole clips        {:.2f} dB\n"
                   "  PSNR chunks of {} latent frames, {} frames of overlap  {:.2f} dB   seam ratio {:.3f} (real video {:.3f})\n"
                   "  PSNR chunks, no overlap {:.2f} dB   seam ratio {:.3f}\n"
                   "  encode {:.2f} ms/frame, decode {:.2f} ms/frame\n",
                   r.clips, r.frames, r.psnr, chunk_latents, overlap, r.psnr_chunked, r.seam_ratio_chunked, r.seam_ratio_real,
                   r.psnr_chunked_no_overlap, r.seam_ratio_no_overlap, 1e3 * r.seconds_per_frame_encode, 1e3 * r.seconds_per_frame_decode)
            << std::flush;
}

void register_tae_train(CLI::App& tae) {
  struct Args {
    std::string out, data, edges = "bounce";
    std::int64_t size = 64, frames = 16, latent_channels = 8, temporal = 4;
    std::vector<std::int64_t> channels{32, 48, 64};
    std::int64_t eval_clips = 16;
    TAETrainOptions train;
    int nproc = 0;
    ComputeArgs compute;
  };
  auto a = std::make_shared<Args>();
  a->train.steps = 1500;
  a->train.lr = 1e-3;
  a->train.ema_decay = 0.995;
  auto* cmd = tae.add_subcommand("train", "Train a temporal autoencoder (4x time, 8x space) on procedural shapes or your videos");
  cmd->add_option("--out,-o", a->out, "Model folder (config.json + model.safetensors with the EMA weights, training/, loss.csv)")->required();
  cmd->add_flag("--resume", a->train.resume, "Continue the run in --out (weights, EMA, optimiser, step)");
  add_init_option(*cmd, a->train, "temporal autoencoder");
  cmd->add_option("--data", a->data, "A folder of your own videos; default: procedural shapes")->check(CLI::ExistingDirectory);
  add_edges_option(*cmd, a->edges, "")->capture_default_str();
  cmd->add_option("--size", a->size, "Frame size in pixels (square; a multiple of the spatial compression)")->capture_default_str()->check(CLI::Range(8, 1024));
  cmd->add_option("--frames", a->frames, "Frames per training clip (a multiple of --temporal)")->capture_default_str()->check(CLI::Range(1, 256));
  cmd->add_option("--latent-channels", a->latent_channels, "Latent channels")->capture_default_str();
  cmd->add_option("--channels", a->channels, "Channels of each 2x spatial stage (3 stages = 8x)")->delimiter(',')->capture_default_str();
  cmd->add_option("--temporal", a->temporal, "RGB frames per latent frame (a power of two)")->capture_default_str();
  cmd->add_option("--l1-weight", a->train.loss.l1, "Weight of the L1 reconstruction term")->capture_default_str();
  cmd->add_option("--mse-weight", a->train.loss.mse, "Weight of the squared-error reconstruction term")->capture_default_str();
  cmd->add_option("--gradient-weight", a->train.loss.gradient, "Weight of the L1 on spatial gradients")->capture_default_str();
  cmd->add_option("--temporal-weight", a->train.loss.temporal, "Weight of the L1 on frame differences")->capture_default_str();
  cmd->add_option("--seam-weight", a->train.loss.seam,
                  "Extra weight of the L1 on the frame differences between two latent frames' groups of frames (where seams show)")
      ->capture_default_str();
  cmd->add_flag("--decoder-only", a->train.decoder_only,
                "Train the decoder alone from --init's weights: the encoder and the latent scaling stay, so a DiT trained on its latents stays valid");
  cmd->add_option("--latent-noise", a->train.latent_noise, "Noise on the latents while training, as a share of their RMS")->capture_default_str();
  cmd->add_option("--eval-clips", a->eval_clips, "Held-out clips scored at the end (0: none)")->capture_default_str();
  cmd->add_flag("--bf16-autocast", a->train.bf16_autocast, "Forward passes in bf16 autocast (weights, optimiser and EMA stay fp32)");
  add_run_options(*cmd, a->train, "Optimiser steps", "Seed of the weights and the data");
  add_distributed_options(*cmd, a->train, a->nproc);
  a->compute.add_to(*cmd, /*with_dtype=*/false);
  cmd->callback([a] {
    if (run_as_local_ranks(a->nproc, a->compute.threads, a->train.distributed.master_port)) return;
    a->compute.resolve();
    TemporalAutoencoderConfig config;
    config.latent_channels = a->latent_channels;
    config.block_out_channels = a->channels;
    config.temporal_compression = a->temporal;
    config.validate("tae train");
    if (a->size % config.spatial_compression() != 0)
      throw Error(fmt::format("tae train: --size {} is not a multiple of the spatial compression {}", a->size, config.spatial_compression()));
    a->train.out = a->out;
    resolve_init_or_resume(a->train);
    a->train.command_line = command_line();
    auto data = tae_clip_source(a->data, a->size, a->frames, a->edges);
    TemporalAutoencoder probe(config);
    std::int64_t params = 0;
    for (const auto& p : probe->parameters()) params += p.numel();
    if (a->train.distributed.rank == 0)
      spdlog::info("training a temporal autoencoder ({:.2f}M parameters, {}x space, {}x time, {} latent channels) on {}; {} steps of {}x{} clips",
                   static_cast<double>(params) / 1e6, config.spatial_compression(), config.temporal_compression, config.latent_channels,
                   data->describe(), a->train.steps, a->train.batch, a->train.accumulate);
    const auto summary = train_temporal_autoencoder(config, *data, a->train);
    if (a->train.distributed.rank != 0) return;
    std::cout << training_summary_line(summary, a->out);
    if (a->eval_clips > 0) {
      auto tae = load_temporal_autoencoder(a->out);
      auto streams = tae_clip_source(a->data, a->size, 16 * config.temporal_compression, a->edges);  // long enough for several chunk seams
      print_report(evaluate_temporal_autoencoder(tae, *streams, a->eval_clips, 2, 4242), 2, tae->decoder_history());
    }
  });
}

void register_tae_eval(CLI::App& tae) {
  struct Args {
    std::string model, data, compare, edges = "bounce";
    std::int64_t size = 64, frames = 64, clips = 16, chunk = 2;
    std::uint64_t seed = 4242;
    ComputeArgs compute;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = tae.add_subcommand("eval", "Reconstruction PSNR of held-out clips, whole and decoded chunk by chunk as a stream would");
  cmd->add_option("--model,-m", a->model, "Temporal autoencoder folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--data", a->data, "A folder of videos; default: procedural shapes")->check(CLI::ExistingDirectory);
  add_edges_option(*cmd, a->edges, "")->capture_default_str();
  cmd->add_option("--size", a->size, "Frame size of the procedural clips")->capture_default_str();
  cmd->add_option("--frames", a->frames, "Frames per clip")->capture_default_str();
  cmd->add_option("--clips", a->clips, "Held-out clips")->capture_default_str();
  cmd->add_option("--chunk", a->chunk, "Latent frames per decoded chunk (a stream's c)")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the held-out clips")->capture_default_str();
  cmd->add_option("--compare", a->compare, "Also write one clip, real | reconstructed side by side, to this video file or PNG folder");
  a->compute.add_to(*cmd);
  cmd->callback([a] {
    auto tae = load_temporal_autoencoder(a->model, a->compute.resolve());
    auto data = tae_clip_source(a->data, a->size, a->frames, a->edges);
    print_report(evaluate_temporal_autoencoder(tae, *data, a->clips, a->chunk, a->seed), a->chunk, tae->decoder_history());
    if (!a->compare.empty()) {
      torch::NoGradGuard no_grad;
      std::mt19937_64 rng(a->seed);
      const auto real = data->next(1, rng).video;
      const auto recon = tae->decode(tae->encode(real.to(tae->parameters().front().scalar_type()))).to(torch::kFloat32);
      const auto both = dit_frames_to_u8(torch::cat({real[0], recon[0]}, 3), 0, 0);  // [F, 3, H, 2W]
      SinkOptions so;
      so.fps = 16;
      auto sink = open_sink(a->compare, so);
      for (std::int64_t f = 0; f < both.size(0); ++f) sink->write(both[f]);
      sink->close();
      std::cout << fmt::format("real | reconstructed: {}\n", sink->description());
    }
  });
}

void register_tae_reconstruct(CLI::App& tae) {
  struct Args {
    std::string model, input, output;
    std::int64_t chunk = 2, overlap = -1, frames = -1;
    double fps = 0;
    ComputeArgs compute;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = tae.add_subcommand("reconstruct", "Encode a video and decode it again, chunk by chunk as a stream does (see what the latents keep)");
  cmd->add_option("--model,-m", a->model, "Temporal autoencoder folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--input,-i", a->input, "Video file, image folder or camera (FFmpeg)")->required();
  cmd->add_option("--output,-o", a->output, "Video file, folder of PNGs or '-'")->required();
  cmd->add_option("--chunk", a->chunk, "Latent frames per chunk")->capture_default_str()->check(CLI::Range(1, 64));
  cmd->add_option("--overlap", a->overlap, "Latent frames of history for each decoded chunk (-1: the decoder's whole reach)")->capture_default_str();
  cmd->add_option("--frames", a->frames, "Stop after this many frames (-1: the whole input)")->capture_default_str();
  cmd->add_option("--fps", a->fps, "Frame rate of the output (0: the input's)")->capture_default_str();
  a->compute.add_to(*cmd);
  cmd->callback([a] {
    auto tae = load_temporal_autoencoder(a->model, a->compute.resolve());
    auto source = open_source(a->input);
    const auto s = tae->config.spatial_compression();
    // the input fitted to a multiple of the spatial compression, at most 256 pixels a side
    const auto& info = source->info();
    auto fit = [&](std::int64_t v) { return std::max(s, std::min<std::int64_t>(256, v) / s * s); };
    const auto width = fit(info.width), height = fit(info.height);
    SinkOptions so;
    so.fps = a->fps > 0 ? a->fps : (info.fps > 0 ? info.fps : 16);
    auto sink = open_sink(a->output, so);
    DiTVideoCodec codec(tae, a->overlap);  // chunk encoder and decoder with history, as a latent stream uses them
    const auto chunk_frames = a->chunk * tae->config.temporal_compression;
    ProgressBar bar("tae reconstruct", a->frames > 0 ? a->frames : info.frame_count, "frame");
    std::int64_t written = 0;
    while (a->frames < 0 || written < a->frames) {
      auto frames = read_dit_frames(*source, chunk_frames, width, height);
      if (!frames.defined() || frames.size(0) < chunk_frames) {
        if (frames.defined()) spdlog::info("the last {} frames do not fill a latent chunk of {} and are left out", frames.size(0), chunk_frames);
        break;
      }
      const auto out = codec.decode(codec.encode(frames));
      const auto u8 = dit_frames_to_u8(out, width, height);
      for (std::int64_t f = 0; f < u8.size(0) && (a->frames < 0 || written < a->frames); ++f, ++written) sink->write(u8[f]);
      bar.set(written);
      if (interrupt_flag()) break;
    }
    bar.finish();
    sink->close();
    std::cout << fmt::format("{} frames of {}x{} through the autoencoder -> {}\n", written, width, height, sink->description());
  });
}

}  // namespace

void register_tae(CLI::App& app) {
  auto* tae = app.add_subcommand("tae", "Temporal autoencoder for StreamDiT latents (train, eval, reconstruct)");
  tae->require_subcommand(1);
  register_tae_train(*tae);
  register_tae_eval(*tae);
  register_tae_reconstruct(*tae);
}

}  // namespace streamgen::cli
