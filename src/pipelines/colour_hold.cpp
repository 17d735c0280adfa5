#include "streamgen/colour_hold.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>

#include "streamgen/error.h"

namespace streamgen {

ColourHold::ColourHold(double gain, std::int64_t reference_frames, std::int64_t recent_frames)
    : gain_(gain), reference_frames_(reference_frames), recent_frames_(recent_frames) {
  if (!(gain >= 0 && gain <= 1)) throw Error(fmt::format("colour hold: the gain must be in [0, 1] (0: off), got {}", gain));
  if (reference_frames < 1) throw Error(fmt::format("colour hold: the look needs at least 1 frame to measure, got {}", reference_frames));
  if (recent_frames < 1) throw Error(fmt::format("colour hold: the recent mean needs a span of at least 1 frame, got {}", recent_frames));
}

void ColourHold::restart(std::int64_t skip_frames) {
  skip_ = std::max<std::int64_t>(skip_frames, 0);
  measured_ = 0;
  sum_ = look_ = recent_ = torch::Tensor{};
}

ColourHold::Correction ColourHold::observe(const torch::Tensor& emitted) {
  // emitted [c, C, H, W]
  const Correction none{torch::zeros({emitted.size(1)}), torch::ones({emitted.size(1)})};
  if (!enabled()) return none;
  const auto c = emitted.size(0);
  const auto x = emitted.to(torch::kFloat32).flatten(2);
  const auto frame_looks = torch::stack({x.mean(2), x.std(2, false)}, 1);  // [c, 2, C]
  std::int64_t first = std::min(skip_, c);
  skip_ -= first;
  if (!look_.defined()) {
    const auto take = std::min(c - first, reference_frames_ - measured_);
    if (take > 0) {
      const auto part = frame_looks.narrow(0, first, take).sum(0);
      sum_ = sum_.defined() ? sum_ + part : part;
      measured_ += take;
      first += take;
    }
    if (measured_ < reference_frames_) return none;
    look_ = sum_ / static_cast<double>(reference_frames_);
    recent_ = look_.clone();
  }
  // The recent mean forgets a frame's weight at 1/recent_frames per frame.
  const double keep = 1.0 - 1.0 / static_cast<double>(recent_frames_);
  for (std::int64_t f = first; f < c; ++f) recent_ = keep * recent_ + (1.0 - keep) * frame_looks[f];
  return {gain_ * (look_[0] - recent_[0]), 1.0 + gain_ * (look_[1] / recent_[1].clamp_min(1e-6) - 1.0)};
}

torch::Tensor ColourHold::apply(const torch::Tensor& frames, const std::vector<double>& tau, const Correction& correction) {
  // frames [1, F, C, H, W]; x_τ = τ·x1 + (1 − (1 − σ)τ)·x0: the clean share is τ, so τ of the correction applies.
  const auto t = torch::tensor(tau, torch::kFloat32).view({1, -1, 1, 1, 1}).to(frames.device());
  const auto x = frames.to(torch::kFloat32);
  const auto mean = x.mean({3, 4}, true);
  const auto shift = correction.shift.to(frames.device()).view({1, 1, -1, 1, 1});
  const auto scale = correction.scale.to(frames.device()).view({1, 1, -1, 1, 1});
  return (x + t * shift + t * (scale - 1.0) * (x - mean)).to(frames.scalar_type());
}

}  // namespace streamgen
