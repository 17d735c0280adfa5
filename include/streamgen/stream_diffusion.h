#pragma once
// The StreamDiffusion denoising core (Stream Batch, RCFG, LCM step) as specified in
// docs/streamdiffusion.md: n slots at staggered timesteps, each slot F rows, advanced by ONE
// batched UNet call per stream step; the oldest slot's x0 leaves, the others are re-noised one slot
// down. Model-agnostic in the sense that matters: it takes the UNet and the scheduler maths, and
// latents in, latents out (encoding/decoding and threads live elsewhere).
#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "streamgen/controlnet.h"
#include "streamgen/lcm_scheduler.h"
#include "streamgen/unet_2d_condition.h"

namespace streamgen {

enum class CfgType { None, Full, Self, Initialize };
// explicit: the reference-latent ring of the spec (exact for any n, F, do_add_noise);
// recursive: upstream's "stock noise" recursion, kept for bit parity with the reference.
enum class RcfgForm { Explicit, Recursive };
// What the first n-1 calls (before every slot holds a real frame) do: prime fills the slots from
// the first input (img2img), suppress emits nothing (txt2img), zeros is upstream's zero buffer.
enum class Warmup { Prime, Suppress, Zeros };
CfgType parse_cfg_type(const std::string& name);  // "none" | "full" | "self" | "initialize"

struct StreamDiffusionConfig {
  std::vector<std::int64_t> t_index_list{32, 45};  // indices into the 50-step LCM schedule, ascending
  std::int64_t num_inference_steps = 50;
  std::int64_t frame_buffer_size = 1;               // F rows per slot
  CfgType cfg = CfgType::None;
  double guidance_scale = 1.2;                      // gamma
  double delta = 1.0;                               // RCFG residual scale
  bool do_add_noise = true;
  bool txt2img = false;                             // input rows are pure noise x_T instead of latents
  // false: the sequential loop (n UNet calls per frame, no pipeline delay), for comparison and for
  // devices where n*F rows do not fit.
  bool use_denoising_batch = true;
  RcfgForm rcfg_form = RcfgForm::Explicit;
  Warmup warmup = Warmup::Prime;
};

class StreamDiffusion {
 public:
  // init_noise: the per-slot noise N fixed for the stream's life, [n, C, h, w] (broadcast over the
  // F rows of a slot) or [n*F, C, h, w].
  StreamDiffusion(UNet2DConditionModel unet, LcmScheduler scheduler, StreamDiffusionConfig config, torch::Tensor init_noise);

  // cond/uncond: [1, L, D] text embeddings. uncond is needed for full / initialize with guidance > 1.
  void set_embeddings(torch::Tensor cond, torch::Tensor uncond = {});
  // The same with SDXL's added conditioning (text_embeds [1, P], time_ids [1, 6]) for a text_time UNet.
  void set_embeddings(UNetConditioning cond, UNetConditioning uncond = {});

  struct Output {
    bool valid = true;       // false while warmup=suppress holds outputs back
    torch::Tensor latents;   // [F, C, h, w]: x0 of the oldest slot
    torch::Tensor x0_batch;  // [n*F, C, h, w]: x0 of every slot this call
    torch::Tensor stock;     // [n*F, C, h, w]: RCFG virtual residual noise after the call (self / initialize)
  };
  // img2img: input = encoded frames z0 [F, C, h, w] (already scaled); txt2img: input = x_T.
  // Sequential mode re-noises between its n steps with `renoise` [n-1, F, C, h, w] (or [n-1, C, h, w]
  // for F = 1); drawn from the stream's seeded generator when not given.
  Output step(const torch::Tensor& input, const torch::Tensor& renoise = {});
  // ControlNets advanced with the UNet: on the same rows in the same call, their residuals (times their
  // scales) summed into the UNet's skip connections. A ControlNet at scale 0 is not run.
  void set_controlnets(std::vector<ControlNetModel> controlnets);
  // The control images of the next steps, float [b, C, 8h, 8w] in [0, 1] with b = 1 (every row) or F (row
  // k of a slot: frame k), and one scale per ControlNet.
  void set_control(torch::Tensor control, std::vector<double> scales);
  // Seeds the generator sequential mode draws its re-noise from.
  void seed(std::uint64_t seed);
  // Empties the slots (scene cut, resolution or t_index change); warmup applies again.
  void reset();

  // Slot constants (per slot, not per row).
  const std::vector<std::int64_t>& timesteps() const { return timesteps_; }
  std::int64_t slots() const { return static_cast<std::int64_t>(timesteps_.size()); }
  std::int64_t calls() const { return calls_; }

 private:
  torch::Tensor unet_rows(const torch::Tensor& x, const torch::Tensor& t, const UNetConditioning& ctx);
  Output step_sequential(const torch::Tensor& z, const torch::Tensor& renoise);
  torch::Tensor per_row(const std::vector<float>& per_slot) const;

  UNet2DConditionModel unet_;
  LcmScheduler scheduler_;
  StreamDiffusionConfig config_;
  std::vector<std::int64_t> timesteps_;
  torch::Tensor noise_;                 // [nF, C, h, w]
  torch::Tensor A_, B_, c_skip_, c_out_;  // [nF, 1, 1, 1] float32
  torch::Tensor t_rows_;                // int64 [nF]
  torch::Tensor buffer_;                // [(n-1)F, C, h, w]: latents of slots 1..n-1 for the next call
  torch::Tensor stock_;                 // [nF, C, h, w]: residual noise (recursive RCFG form)
  torch::Tensor refs_;                  // [(n-1)F, C, h, w]: reference latents of slots 1..n-1 (explicit form)
  UNetConditioning cond_, uncond_;
  std::vector<ControlNetModel> controlnets_;
  torch::Tensor control_;
  std::vector<double> control_scales_;
  std::int64_t calls_ = 0;
  at::Generator generator_;
};

}  // namespace streamgen
