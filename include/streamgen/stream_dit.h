#pragma once
// StreamDiT's streaming sampler (docs/streamdit.md §6–§9): a B-frame buffer partitioned
// into K reference frames and N chunks of c frames at staggered flow times, advanced by s Euler
// micro steps of 1/T per emitted chunk; the clean oldest chunk leaves, the buffer shifts by c and
// fresh noise enters. Started by a uniform-noise T2V pass whose cached latents fill the chunks at
// their levels. The prompt can change between any two micro steps (set_prompt from any thread).
#include <torch/types.h>

#include <ATen/core/Generator.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "streamgen/colour_hold.h"
#include "streamgen/dit.h"
#include "streamgen/flow_matching.h"

namespace streamgen {

// How a guided velocity may depart from plain CFG. Plain CFG at the scales that make a small model
// follow its caption also shifts each frame's mean colour a little every step, and a stream, which
// feeds each chunk's frames to the next, brightens (streamdit-latent-64's card measures both).
struct GuidanceForm {
  // Drop each frame's per-channel spatial mean from the guidance term w·(v_c − v_u) − (v_c − v_u):
  // the conditional pass alone sets every frame's mean, guidance sharpens only where and what things are.
  bool keep_mean = false;
  // Rescale the guided velocity's per-frame spread (over channels and pixels) to the conditional one's,
  // mixed in by this share (Lin et al., 2024, "guidance_rescale" in diffusers; 0: off).
  double rescale = 0;
  bool plain() const { return !keep_mean && rescale == 0; }
  // Throws streamgen::Error, the message starting with `who`, for a rescale share outside [0, 1].
  void validate(const std::string& who) const;
  std::string describe() const;  // "", ", mean kept", ", rescaled 0.7", ", mean kept, rescaled 0.7"
};

// The guided velocity from the conditional and unconditional ones (both [b, F, C, H, W]); guidance
// [b, F, 1, 1, 1] or anything broadcasting to it. Frames with w = 1 get v_c in every form.
torch::Tensor combine_guidance(const torch::Tensor& vc, const torch::Tensor& vu, const torch::Tensor& guidance, const GuidanceForm& form = {});

// Classifier-free guided velocity v_u + w·(v_c − v_u), the cond/uncond pair in one batch (w = 1:
// the conditional pass only). x [b, F, C, H, W], tau [b, F], cond/uncond text states [b or 1, M, D],
// anchor [b or 1, C, H, W] for models with one (undefined: none), given to both passes
// (anchor_keep [b]: 0 runs an example without it).
torch::Tensor guided_velocity(StreamDiT& model, const torch::Tensor& x, const torch::Tensor& tau, const torch::Tensor& cond,
                              const torch::Tensor& uncond, double guidance, const torch::Tensor& anchor = {}, const GuidanceForm& form = {});
// The same with one scale per example, guidance [b], or per frame, guidance [b, F].
torch::Tensor guided_velocity(StreamDiT& model, const torch::Tensor& x, const torch::Tensor& tau, const torch::Tensor& cond,
                              const torch::Tensor& uncond, const torch::Tensor& guidance, const torch::Tensor& anchor = {},
                              const torch::Tensor& anchor_keep = {}, const GuidanceForm& form = {});
// The same with anchor guidance on top (models with an anchor): text_step + (w_a − 1)·(v_a − v_∅),
// v_a the caption's pass with the anchor, v_∅ without it, text_step the CFG of v_a (v_a itself where
// every scale is 1); one batch of 2b rows (3b with CFG). Examples with anchor_keep 0 get the plain
// guided velocity. w_a = 1 or no anchor: guided_velocity's passes exactly.
torch::Tensor anchor_guided_velocity(StreamDiT& model, const torch::Tensor& x, const torch::Tensor& tau, const torch::Tensor& cond,
                                     const torch::Tensor& uncond, const torch::Tensor& guidance, const torch::Tensor& anchor,
                                     const torch::Tensor& anchor_keep, double anchor_guidance, const GuidanceForm& form = {});

struct StreamDiTOptions {
  std::int64_t chunk_frames = 2;      // c
  std::int64_t micro_steps = 4;       // s
  std::int64_t reference_frames = 0;  // K
  double guidance = 1.0;              // CFG scale w; 1 runs the conditional pass only
  // Guidance in a limited interval (Kynkäänniemi et al., 2024): frames whose level τ lies in
  // [low, high] get w, the others the conditional velocity alone. Guidance near the clean end
  // sharpens little and pushes colour and brightness; a step with no frame inside runs one pass.
  std::array<double, 2> guidance_interval{0.0, 1.0};
  GuidanceForm guidance_form;
  std::int64_t init_steps = 0;        // T2V initialisation steps (0: T = s·N); N must divide it
  // CFG scale of the T2V start alone (0: `guidance`). The start decides what the stream shows, and
  // it runs once: a distilled student guided there, and only there, keeps its one-pass loop.
  double init_guidance = 0;
  // Anchor guidance (models with an anchor): v_a + (w_a − 1)·(v_a − v_∅), v_∅ the same pass without
  // the anchor. A stream's errors compound chunk after chunk; the anchor is what it can be pulled
  // back to, and a model trained on clips that never drift leans on it weakly. 1: off (one pass
  // fewer); it acts once the stream has its anchor.
  double anchor_guidance = 1.0;
  // CFG scale for the N steps after a prompt change (0: `guidance`): while the chunks that entered
  // as noise under the new caption cross the buffer, what the guided start does for the first one.
  double change_guidance = 0;
  std::uint64_t seed = 0;             // the buffer's noise generator
  std::int64_t frame_height = 0, frame_width = 0;  // 0: the model's sample size
  // Video-to-video (spec §8): 0 makes video from text; σ in (0, 1] noises input frames to the entry
  // level τ_in = m0/N, m0 = round(N·(1 − σ)), and keeps only the N − m0 chunks at levels ≥ τ_in.
  double strength = 0;
  // Temperature of the noise that enters the buffer (1: the training distribution). Below 1 trades
  // variety for cleaner frames, as in other diffusion samplers.
  double noise_scale = 1.0;
  // Models with an anchor (StreamDiTConfig::anchor): condition every step on the stream's first
  // emitted frame, and after a prompt change on the first frame made wholly under the new prompt.
  // false streams such a model without one (as its anchor-dropout examples trained it to).
  bool use_anchor = true;
  // Colour hold (colour_hold.h): after each step, the clean share τ of every buffer frame moves this
  // share of the way from the recent emitted frames' per-channel latent mean and spatial spread (over
  // about colour_hold_frames frames) back to those of the stream's first colour_hold_frames frames
  // (after a prompt change, of the first ones made under it). Keeps a long stream's look from
  // wandering; 0: off.
  double colour_hold = 0;
  std::int64_t colour_hold_frames = 16;
};

// "5", "5 on levels [0.2, 0.7]" when the interval is narrower than [0, 1], "5, mean kept, rescaled 0.7",
// "1 (the start 2), mean kept" when the T2V start has a guidance of its own, ", anchor guidance 2".
std::string describe_guidance(const StreamDiTOptions& options);

// ", colour hold 0.5 over 16 frames", or "" when it is off.
std::string describe_colour_hold(const StreamDiTOptions& options);

// Model passes per micro step of the loop at most (CFG, also after a prompt change, and anchor guidance each add one).
std::int64_t passes_per_step(const StreamDiTOptions& options);

// A model folder's own sampler settings, `sampler.json` (distillation writes the student's c, s and
// guidance there, since a student streamed with its teacher's settings wastes passes and drifts).
// read: fills the keys the file has into `options` and returns whether it exists; a malformed file
// is an error naming it.
bool read_sampler_settings(const std::filesystem::path& model_folder, StreamDiTOptions& options);
void write_sampler_settings(const std::filesystem::path& model_folder, const StreamDiTOptions& options);

class StreamDiTSampler {
 public:
  StreamDiTSampler(StreamDiT model, const StreamDiTOptions& options);

  // Encodes the caption (unknown words are logged once) and publishes it; the next micro step
  // uses it. Safe to call from another thread while step() runs.
  void set_prompt(const std::string& prompt);
  std::string prompt() const;

  // T2V initialisation (spec §7) from fresh noise. Returns the K clean reference frames it
  // produced, to be emitted first ([K, C, H, W]; empty when K = 0).
  torch::Tensor start();
  // s micro steps, then emits chunk 0 ([c, C, H, W], τ = 1), shifts and appends noise. Calls
  // start() first if needed.
  torch::Tensor step();

  // Video-to-video (strength > 0). start(video) fills the buffer from start_frames() input frames
  // [F, C, H, W] in the model's space: references clean, chunk k noised to its level. Returns the
  // references, like start(). step(chunk) advances like step() and lets the next c input frames
  // enter at τ_in; the output lags the input by N_eff chunks.
  bool video_to_video() const { return options_.strength > 0; }
  std::int64_t start_frames() const { return partition_.reference_frames + v2v_chunks_ * partition_.chunk_frames; }
  double entry_level() const;  // τ_in (0 for text-to-video)
  torch::Tensor start(const torch::Tensor& video);
  torch::Tensor step(const torch::Tensor& input_chunk);

  const BufferPartition& partition() const { return partition_; }
  std::int64_t frame_height() const { return height_; }
  std::int64_t frame_width() const { return width_; }
  // Levels the buffer holds before micro step j of the next step().
  std::vector<double> levels(std::int64_t micro_step = 0) const { return buffer_levels(micro_step); }
  const torch::Tensor& buffer() const { return buffer_; }  // [1, B, C, H, W]
  std::int64_t nfe() const { return nfe_; }               // model passes so far (a CFG pair counts 2)
  // Per-frame CFG scales for levels `tau` ([F]; every entry 1 when no frame is guided).
  torch::Tensor guidance_scales(const std::vector<double>& tau) const { return guidance_scales(tau, options_.guidance); }
  torch::Tensor guidance_scales(const std::vector<double>& tau, double guidance) const;
  double start_guidance() const { return options_.init_guidance > 0 ? options_.init_guidance : options_.guidance; }
  // The scale of the next step's loop passes: change_guidance for N steps after a prompt change.
  double loop_guidance() const { return change_steps_left_ > 0 && options_.change_guidance > 0 ? options_.change_guidance : options_.guidance; }
  std::int64_t init_nfe() const { return init_nfe_; }     // of which spent in start()
  std::int64_t chunks_emitted() const { return chunks_emitted_; }
  bool started() const { return buffer_.defined(); }
  // The frame every step is conditioned on ([1, C, H, W]); undefined before the first chunk
  // leaves, for N steps after a prompt change, and always for models without an anchor.
  const torch::Tensor& anchor() const { return anchor_; }
  const ColourHold& colour_hold() const { return colour_hold_; }
  StreamDiT& model() { return model_; }

 private:
  torch::Tensor velocity(const torch::Tensor& x, const std::vector<double>& tau, double guidance);
  torch::Tensor noise(std::int64_t frames);
  torch::Tensor text_snapshot() const;
  torch::Tensor advance(const torch::Tensor& entering);  // micro steps, emit, shift, append `entering`
  void update_anchor(const torch::Tensor& emitted);
  void hold_colour(const torch::Tensor& emitted);  // after the shift: nudges the buffer towards the stream's look
  std::uint64_t prompt_version() const;
  void sync_anchor_to_prompt();
  void notice_prompt_change();
  std::vector<double> buffer_levels(std::int64_t micro_step) const;
  torch::Tensor check_input(const torch::Tensor& frames, std::int64_t count, const char* what) const;

  StreamDiT model_;
  StreamDiTOptions options_;
  BufferPartition partition_;
  std::int64_t channels_, height_, width_;
  std::int64_t v2v_chunks_ = 0;  // N_eff: chunks kept in video-to-video (N for text-to-video)
  at::Generator generator_;
  torch::Tensor buffer_;
  torch::Tensor uncond_;  // null-caption states, for CFG
  mutable std::mutex prompt_mutex_;
  torch::Tensor cond_;    // published by set_prompt, read at each micro step
  std::string prompt_;
  std::uint64_t prompt_version_ = 0;  // counts prompt changes (under prompt_mutex_)
  torch::Tensor anchor_;
  std::uint64_t anchor_version_ = 0;  // the prompt version the anchor belongs to
  std::int64_t anchor_wait_ = 0;      // chunks still to leave before the next anchor is taken
  std::uint64_t change_version_ = 0;  // the prompt version the loop's guidance has seen
  std::int64_t change_steps_left_ = 0;  // steps still under change_guidance
  ColourHold colour_hold_;
  std::uint64_t hold_version_ = 0;  // the prompt version the held look belongs to
  std::int64_t nfe_ = 0, init_nfe_ = 0, chunks_emitted_ = 0;
};

}  // namespace streamgen
