#pragma once
// Multistep distillation of a StreamDiT teacher (docs/streamdit.md §12): per buffer
// segment, the student learns to take in one conditional pass what the teacher takes in s guided
// Euler micro steps, so a stream needs one model call per emitted chunk and no CFG pair.
//
// A segment is 1/N of flow time. The student runs s_S micro steps per segment (1 for the direct
// recipe; s/2 for one stage of progressive halving), each covering s/s_S teacher micro steps:
//   start levels  τ_start: staggered, chunk k at (N−1−k)/N + j/(N·s_S), j ~ U{0..s_S−1}, references 1;
//                 or uniform, every slot at m/(N·s_S), m ~ U{0..N·s_S−1} (the stream's T2V start);
//   start state   X_start = τ_start∘X1 + (1 − (1 − σmin)τ_start)∘X0;
//   teacher       s/s_S Euler steps of 1/(N·s) with v = v_u + w(v_c − v_u) → X_end;
//   student loss  ‖v_S(X_start, P, τ_start) − N·s_S·(X_end − X_start)‖² over the slots that move,
//                 the velocity form of ‖X_start + v_S/(N·s_S) − X_end‖².
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "streamgen/dit.h"
#include "streamgen/dit_trainer.h"
#include "streamgen/flow_matching.h"
#include "streamgen/stream_dit.h"

namespace streamgen {

struct DistillRecipe {
  std::int64_t chunk_frames = 2;      // c of the stream the student will run
  std::int64_t reference_frames = 0;  // K
  std::int64_t teacher_steps = 4;     // s: the teacher's Euler micro steps per segment
  std::int64_t student_steps = 1;     // s_S: the student's micro steps per segment (must divide s)
  double guidance = 3.0;              // w of the teacher's CFG, folded into the student (1: none)
  // Above `guidance`: each example draws w ~ U[guidance, guidance_high], and the student, which is
  // not told w, learns their mean effect (a range instead of one scale: less committed to one w).
  double guidance_high = 0;
  GuidanceForm guidance_form;         // of the teacher's CFG (keep_mean, rescale), folded in with it
  // The teacher's anchor guidance (StreamDiTOptions::anchor_guidance; anchored teachers), folded in
  // too: the pull towards the stream's first frame that a guided stream pays a pass for (1: none).
  double anchor_guidance = 1.0;
  double staggered_share = 0.8;       // else the uniform layout the stream starts from
  // Share of examples whose start state is the buffer of the teacher's own stream (its T2V start
  // plus 0..rollout_max_chunks steps, same c, s and w) instead of a noised clip: on-policy states,
  // at the price of running the stream (s·N + s·chunks guided passes per such example).
  double rollout_share = 0;
  std::int64_t rollout_max_chunks = 8;
  double sigma_min = kFlowSigmaMin;
  // Teachers with an anchor (StreamDiTConfig::anchor): share of examples whose teacher and student
  // passes run without it, as the stream's first chunks and a prompt change's do.
  double anchor_dropout = 0.1;
  // The T2V start the student's sampler.json asks for (0: N·s_S passes, one per segment). A student
  // starts better with more: its uniform-level passes are the least practised.
  std::int64_t student_init_steps = 0;
  // CFG scale of that start alone, written to sampler.json with the teacher's guidance form (0: none).
  // The student learns from captioned examples only, yet its empty-caption pass (what weights that
  // began as the teacher's make of no caption) still guides: once, at the start, which settles what
  // the stream shows, while the loop stays one pass per chunk (streamdit-latent-64-student's card).
  double student_init_guidance = 0;

  // The stream partition over `buffer_frames` (B = K + N·c) with the student's micro steps.
  BufferPartition student_partition(std::int64_t buffer_frames) const;
  // Throws streamgen::Error naming the bad field.
  void validate(std::int64_t buffer_frames) const;
  std::string describe(std::int64_t buffer_frames) const;  // "c=2 N=8 K=0: teacher s=4 w=3 -> student s=1"
  std::string guidance_label() const;                      // "3", or "1.5..4" for a range
  // Sampler options for a stream with this recipe's c and K (the teacher's, or the student's).
  StreamDiTOptions stream_options(std::int64_t micro_steps, double stream_guidance) const;
};

// Segment-start states of a batch of clips.
struct DistillBatch {
  torch::Tensor start;   // X_start [batch, F, C, H, W]
  torch::Tensor tau;     // τ_start [batch, F]
  torch::Tensor moving;  // [batch, F] 1 where the sampler moves the slot (0: reference frames)
  torch::Tensor tokens;  // [batch, M] caption ids
  torch::Tensor guidance;  // [batch] the teacher's CFG scale per example
  std::vector<bool> staggered;  // the layout drawn per example
  std::vector<bool> rollout;    // the start came from the teacher's stream
  torch::Tensor anchor;       // [batch, C, H, W] for anchored teachers: the clip's, or the rollout stream's
  torch::Tensor anchor_keep;  // [batch] 0 where the passes run without it
};

// The teacher gives the caption tokenizer and, for rollout examples, the stream.
DistillBatch make_distill_batch(const ClipBatch& clips, StreamDiT& teacher, const DistillRecipe& recipe, std::mt19937_64& rng,
                                at::Generator& noise);
// The buffer [1, B, C, H, W] of the teacher's stream for `caption` after its start and `chunks`
// steps (CFG `guidance`, the recipe's anchor guidance): a segment start at the staggered levels of
// micro step 0. `anchor`, when given, receives
// the stream's anchor frame [1, C, H, W] (undefined while it has none).
torch::Tensor teacher_rollout_state(StreamDiT& teacher, const DistillRecipe& recipe, const std::string& caption, double guidance,
                                    std::uint64_t seed, std::int64_t chunks, torch::Tensor* anchor = nullptr);
// Examples [first, first + count) of micro-batch `micro` of step `step`, each drawn from its own
// seeded engines (example_engines), like the flow-matching trainer's.
DistillBatch seeded_distill_batch(ClipSource& data, StreamDiT& teacher, const DistillRecipe& recipe, std::uint64_t seed,
                                  std::uint64_t step, std::uint64_t micro, std::int64_t first, std::int64_t count);

// Δτ [b, F] of one student step per frame: 1/(N·s_S) along the linear schedule position, mapped
// through the model's time shift (1/(N·s_S) itself when the shift is 1); 0 for frames that stay.
torch::Tensor student_step_sizes(const DistillBatch& batch, const DistillRecipe& recipe, std::int64_t buffer_frames, double shift);
// The teacher's end of the student step: s/s_S guided Euler micro steps from X_start (no grad).
torch::Tensor teacher_segment_end(StreamDiT& teacher, const DistillBatch& batch, const DistillRecipe& recipe, std::int64_t buffer_frames);
// A model's one-step end: X_start + v·Δτ (student_step_sizes) on the moving slots (the student's, or the
// undistilled teacher's when given the teacher).
torch::Tensor one_step_segment_end(StreamDiT& model, const DistillBatch& batch, const DistillRecipe& recipe, std::int64_t buffer_frames);
// ‖a − b‖ / ‖b − X_start‖ over the moving slots: how far one step lands from the teacher's end,
// relative to how far the teacher moved.
double segment_endpoint_error(const torch::Tensor& end, const torch::Tensor& teacher_end, const DistillBatch& batch);

// Held-out endpoint errors (segment_endpoint_error) against the teacher's guided micro steps, on
// `batches` batches drawn with `seed`: the undistilled teacher taking one step, and the student.
struct DistillEndpointReport {
  double teacher_one_step = 0, student = 0;
  double improvement() const { return teacher_one_step / std::max(student, 1e-30); }
};
DistillEndpointReport evaluate_distillation(StreamDiT& teacher, StreamDiT& student, ClipSource& data, const DistillRecipe& recipe,
                                            std::int64_t batches, std::int64_t batch_size, std::uint64_t seed);

struct DiTDistillOptions : OptimisationOptions {
  DiTDistillOptions() {
    steps = 400;
    batch = 4;
    lr = 1e-4;
    warmup = 20;
  }
  DistillRecipe recipe;
  std::string teacher_description;  // recorded in the checkpoint (e.g. the teacher's folder)
};

// Distils `teacher` (kept frozen) into a student initialised from its weights, written to
// `options.out` as a model folder like the trainer's (resumable with options.resume, given the
// same teacher). Clips and captions come from `data`.
TrainSummary distill_stream_dit(StreamDiT teacher, ClipSource& data, const DiTDistillOptions& options,
                                   const std::function<void(const TrainStepInfo&)>& on_step = {});

}  // namespace streamgen
