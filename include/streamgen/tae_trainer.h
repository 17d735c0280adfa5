#pragma once
// Training and evaluating the temporal autoencoder (`streamgen tae train | eval`): reconstruction
// loss on clips (L1 and squared error, plus L1 on spatial gradients — the cheap perceptual term that keeps edges
// sharp — and on frame differences, which keeps motion and stops flicker), with a little noise on
// the latents so the decoder forgives a DiT's small errors. After the last step the latents of
// held-out clips set the config's scaling/shift factors, so the DiT sees zero-mean, unit-variance
// latents.
#include <cstdint>
#include <functional>

#include "streamgen/clip_source.h"
#include "streamgen/optimisation.h"
#include "streamgen/temporal_autoencoder.h"

namespace streamgen {

struct TAELossWeights {
  double l1 = 1.0;
  // Squared error: weighs the large errors of a wrong colour over a small shape more than L1 does
  // (with L1 alone, a 64x64 run still drew yellow shapes green after 1,750 steps).
  double mse = 1.0;
  double gradient = 0.5;  // L1 on horizontal and vertical pixel differences
  double temporal = 0.5;  // L1 on differences between consecutive frames
  // L1 on the frame differences across the boundary between two latent frames' groups of r_t
  // frames, on top of `temporal`. Each group is drawn from one latent frame, so its frames agree
  // with each other more than with the next group's: the jump shows as a seam every r_t frames.
  double seam = 0.0;
};

struct TAETrainOptions : OptimisationOptions {
  TAELossWeights loss;
  // Gaussian noise added to the latents before decoding, as a share of their RMS (detached).
  double latent_noise = 0.05;
  // Held-out clips that measure the latents' mean and spread at the end (0: leave the factors).
  std::int64_t calibration_clips = 32;
  std::uint64_t calibration_seed = 777;
  // Train the decoder alone: the encoder's weights and the latent scaling stay as they were, so
  // a DiT trained on these latents stays valid (needs init_from or resume).
  bool decoder_only = false;
};

// The reconstruction loss of `recon` against `video` (both [N, T, 3, H, W]); `group_frames` is
// r_t, the frames decoded from one latent frame, where the seam term looks (0: no seam term).
torch::Tensor tae_reconstruction_loss(const torch::Tensor& recon, const torch::Tensor& video, const TAELossWeights& weights,
                                      std::int64_t group_frames = 0);

// Trains `config` into options.out from clips of `data` (their frame count must be a multiple of
// r_t) — from scratch, or from options.init_from's config and weights — or continues the run there
// with options.resume; then calibrates the latent scale.
TrainSummary train_temporal_autoencoder(const TemporalAutoencoderConfig& config, ClipSource& data, const TAETrainOptions& options,
                                        const std::function<void(const TrainStepInfo&)>& on_step = {});

struct LatentStatistics {
  double mean = 0, std = 1;  // of the raw latents over every element
};
LatentStatistics measure_latent_statistics(TemporalAutoencoder& tae, ClipSource& data, std::int64_t clips, std::uint64_t seed);
// Writes scaling_factor = 1/std and shift_factor = mean into the model folder's config.json.
void write_latent_calibration(const std::filesystem::path& folder, const LatentStatistics& stats);

// Reconstruction quality on held-out clips, whole-clip and as a stream would decode it (chunks of
// `chunk_latents` latent frames, with and without the overlap).
struct TAEEvalReport {
  std::int64_t clips = 0, frames = 0;
  double psnr = 0;                 // whole clips, dB (pixels in [-1, 1])
  double psnr_chunked = 0;         // chunk by chunk with the default overlap (the decoder's reach)
  double psnr_chunked_no_overlap = 0;
  // mean |x_t − x_{t−1}| at chunk boundaries over the same inside chunks (1: no seams)
  double seam_ratio_real = 0, seam_ratio_chunked = 0, seam_ratio_no_overlap = 0;
  double seconds_per_frame_encode = 0, seconds_per_frame_decode = 0;
};
TAEEvalReport evaluate_temporal_autoencoder(TemporalAutoencoder& tae, ClipSource& data, std::int64_t clips, std::int64_t chunk_latents,
                                            std::uint64_t seed);

// Peak signal-to-noise ratio of two videos with values in [-1, 1].
double psnr_unit_range(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace streamgen
