#pragma once
// Training StreamDiT with buffered flow matching over mixed partitions
// (docs/streamdit.md §2–§5): the batch construction, the data sources and the trainer
// (AdamW, warm-up + cosine, gradient clipping, EMA, accumulation, resumable checkpoints, progress
// and a CSV loss log).
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "streamgen/clip_source.h"
#include "streamgen/dit.h"
#include "streamgen/distributed.h"
#include "streamgen/flow_matching.h"
#include "streamgen/optimisation.h"
#include "streamgen/procedural_video.h"

namespace streamgen {

// One buffered-flow-matching batch: inputs, targets and which frames count in the loss.
struct FlowMatchingBatch {
  torch::Tensor noisy;      // X_τ [batch, F, C, H, W]
  torch::Tensor tau;        // [batch, F]
  torch::Tensor target;     // V [batch, F, C, H, W]
  torch::Tensor loss_mask;  // [batch, F] 1 for denoised frames, 0 for reference frames
  torch::Tensor tokens;     // [batch, M] caption ids (null caption for dropped ones)
  std::vector<std::int64_t> chunk_sizes;  // c drawn per example
  torch::Tensor anchor;       // [batch, C, H, W] clean anchor frames (clips with an anchor only)
  torch::Tensor anchor_keep;  // [batch] 1, or 0 where the anchor was dropped
  torch::Tensor loss_weight;  // [batch, F, 1, H, W], mean 1 over each frame (recipe.foreground_weight > 0 only)
};

struct FlowMatchingRecipe {
  ChunkMix mix = ChunkMix::powers_of_two(16);
  std::int64_t reference_frames = 0;  // K
  double text_dropout = 0.1;          // share of captions replaced by the null caption
  double anchor_dropout = 0.1;        // share of examples trained without their anchor (models with config.anchor)
  double time_shift = 1.0;            // τ = shifted_time(u); training and evaluation take the model's config.time_shift
  double sigma_min = kFlowSigmaMin;
  // 0: every latent position weighs the same in the loss. λ > 0: a position weighs 1 + λ·d / mean(d),
  // d its distance from the clip's background, normalised per frame (foreground_loss_weight). Training
  // only: the held-out loss (evaluate_flow_loss) stays unweighted, comparable across runs.
  double foreground_weight = 0;
};

// A batch's anchor frames from clips with an anchor (AnchoredClipSource): anchor [batch, C, H, W]
// (float32, CPU) and keep [batch], 0 for a `dropout` share drawn from `rng`, one draw per example.
// `what` names the batch in the error for anchors that are not one model frame per clip.
struct ClipAnchors {
  torch::Tensor anchor, keep;
};
ClipAnchors draw_clip_anchors(const ClipBatch& clips, double dropout, std::mt19937_64& rng, const std::string& what);

FlowMatchingBatch make_flow_matching_batch(const ClipBatch& clips, const CaptionTokenizer& tokenizer, const FlowMatchingRecipe& recipe,
                                           std::mt19937_64& rng, at::Generator& noise);

// The batch of examples [first, first + count) of a global batch, each example's clip, chunk size,
// levels, caption dropout and noise drawn from its own engine seeded by (seed, step, micro,
// index): any split of the batch over processes sees the same examples.
FlowMatchingBatch seeded_flow_matching_batch(ClipSource& data, const CaptionTokenizer& tokenizer, const FlowMatchingRecipe& recipe,
                                             std::uint64_t seed, std::uint64_t step, std::uint64_t micro, std::int64_t first,
                                             std::int64_t count);

// Per-position loss weights of clean clips x1 [b, F, C, H, W] → [b, F, 1, H, W]: with d a position's
// distance (over channels) from its clip's background — the per-channel median of the whole clip —
// w ∝ 1 + λ·d / mean_frame(d), scaled to mean 1 over each frame. Each position's regression target is
// unchanged, so the loss's minimiser is too; what changes is how much of the gradient the few
// positions that carry the objects get instead of the flat background's irreducible noise error.
torch::Tensor foreground_loss_weight(const torch::Tensor& x1, double lambda);

// Mean squared error over the frames the mask keeps. prediction/target [b, F, ...], mask [b, F];
// weight (optional) [b, F, 1, ...] scales each position's squared error within its frame.
torch::Tensor masked_flow_loss(const torch::Tensor& prediction, const torch::Tensor& target, const torch::Tensor& mask,
                               const torch::Tensor& weight = {});

struct DiTTrainOptions : OptimisationOptions {
  FlowMatchingRecipe recipe;
};

// The StreamDiT side of run_optimisation, shared by training and distillation: the model of
// `config` (on resume, the folder's config.json), saved with save_stream_dit.
struct DiTRunHooks {
  // A fresh run's starting weights (default: the seeded initialisation of the config).
  std::function<void(StreamDiT& model)> initialise;
  // The loss of this rank's examples [first, first + count) of micro-batch `micro` of step `step`.
  std::function<torch::Tensor(StreamDiT& model, std::uint64_t step, std::uint64_t micro, std::int64_t first, std::int64_t count)> loss;
  // Recorded in training/state.json beside the loop's own fields.
  nlohmann::json metadata = nlohmann::json::object();
  std::string label = "train";  // the progress bar's name
};
TrainSummary run_dit_optimisation(const StreamDiTConfig& config, const OptimisationOptions& options, const DiTRunHooks& hooks,
                                     const std::function<void(const TrainStepInfo&)>& on_step = {});

// Trains `config` from scratch (or from `options.init_from`'s weights) into `options.out`, or continues the run found there with
// `options.resume` (the model config, step, weights, EMA and optimiser state come from the
// folder; each step's randomness depends only on (seed, step), so a resumed run follows the same
// curve). `on_step` sees every optimiser step.
TrainSummary train_stream_dit(const StreamDiTConfig& config, ClipSource& data, const DiTTrainOptions& options,
                                 const std::function<void(const TrainStepInfo&)>& on_step = {});


}  // namespace streamgen

namespace streamgen {

// Held-out flow-matching loss (spec §15 metric 1): per chunk size c and per τ bucket, each from
// `batches` batches of fresh data drawn with `seed` (different from training's per-step seeds).
//
// Caption probes: the same noisy clips and targets with the caption as given, dropped, or with one
// attribute swapped (colour, shape, direction; see swap_caption_attribute), measured on the frames
// at τ < kCaptionProbeMaxTau, where the caption still decides the content (above it the frames
// show it). A model that uses an attribute does worse when it is swapped: gap = loss / as-given − 1.
// A probe whose swap changes no held-out caption (captions without palette words) is left out.
// Models with an anchor frame get one more probe on the same frames: "anchor dropped".
inline constexpr double kCaptionProbeMaxTau = 0.5;
struct CaptionProbe {
  std::string name;  // "as given", "no caption", "colour swapped", "shape swapped", "direction swapped", "anchor dropped"
  double loss = 0, gap = 0;
};
struct FlowLossReport {
  double overall = 0;
  std::vector<std::pair<std::int64_t, double>> by_chunk_size;  // (c, loss)
  std::vector<double> by_tau_bucket;                           // bucket i covers [i/n, (i+1)/n)
  std::vector<std::int64_t> frames_per_bucket;
  std::vector<CaptionProbe> caption_probes;                    // "as given" first
};
FlowLossReport evaluate_flow_loss(StreamDiT& model, ClipSource& data, const FlowMatchingRecipe& recipe, std::int64_t batches,
                                  std::int64_t batch_size, std::uint64_t seed, std::int64_t tau_buckets = 10);

}  // namespace streamgen
