#pragma once
// Colour hold for long streams. A stream builds every chunk on the buffer the last one left, so the
// errors of its colours do not average out but wander: a model whose 64-frame clips are right can
// be 5–15 % brighter or darker a few thousand frames later (streamdit-latent-64-student's card).
// Real video of one caption keeps its look. This loop measures the per-channel latent mean and
// spatial spread of the frames a stream emits, takes those of its first frames (after a prompt
// change: of the first frames made under the new prompt) as the look to keep, and tells the sampler
// how far the recent frames have strayed from it; the sampler moves the clean share of each buffer
// frame back by a fraction of that. Only the slow part is held: a chunk may still differ from its
// neighbours (an object enters, the background shows), since the recent look is an average over
// many frames. The mean alone kept a stream's brightness but let its contrast wander (the card).
#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace streamgen {

class ColourHold {
 public:
  // gain: the share of the gap corrected per step (0: off); reference_frames: frames measured for the
  // look; recent_frames: the span the recent mean averages over (exponentially).
  ColourHold(double gain = 0, std::int64_t reference_frames = 16, std::int64_t recent_frames = 16);

  bool enabled() const { return gain_ > 0; }
  // Forgets the look; the next `skip_frames` emitted frames are not measured (they began under an
  // earlier prompt), then the next reference_frames are.
  void restart(std::int64_t skip_frames = 0);
  struct Correction {
    torch::Tensor shift;  // [C]: gain · (look mean − recent mean), to add to the clean share
    torch::Tensor scale;  // [C]: 1 + gain · (look spread / recent spread − 1), for the clean share's deviation from its mean
  };
  // Records emitted frames [c, C, H, W] and returns the correction (fp32; shift 0 and scale 1 while
  // the look is being measured).
  Correction observe(const torch::Tensor& emitted);
  // Frames [1, F, C, H, W] at levels tau [F] moved by the correction on their clean share τ.
  static torch::Tensor apply(const torch::Tensor& frames, const std::vector<double>& tau, const Correction& correction);
  bool holding() const { return look_.defined(); }
  // [2, C]: per-channel mean, then spatial spread (the frames' std over pixels, averaged); undefined while measuring.
  const torch::Tensor& look() const { return look_; }
  const torch::Tensor& recent() const { return recent_; }

 private:
  double gain_;
  std::int64_t reference_frames_, recent_frames_;
  std::int64_t skip_ = 0, measured_ = 0;
  torch::Tensor sum_, look_, recent_;
};

}  // namespace streamgen
