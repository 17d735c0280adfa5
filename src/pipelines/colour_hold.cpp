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

torch::Tensor ColourHold::observe(const torch::Tensor& emitted) {
  // emitted [c, C, H, W]
  const auto c = emitted.size(0);
  auto frame_means = emitted.to(torch::kFloat32).mean({2, 3});  // [c, C]
  const auto zero = torch::zeros({emitted.size(1)}, frame_means.options());
  if (!enabled()) return zero;
  std::int64_t first = std::min(skip_, c);
  skip_ -= first;
  if (!look_.defined()) {
    const auto take = std::min(c - first, reference_frames_ - measured_);
    if (take > 0) {
      const auto part = frame_means.narrow(0, first, take).sum(0);
      sum_ = sum_.defined() ? sum_ + part : part;
      measured_ += take;
      first += take;
    }
    if (measured_ < reference_frames_) return zero;
    look_ = sum_ / static_cast<double>(reference_frames_);
    recent_ = look_.clone();
  }
  // The recent mean forgets a frame's weight at 1/recent_frames per frame.
  const double keep = 1.0 - 1.0 / static_cast<double>(recent_frames_);
  for (std::int64_t f = first; f < c; ++f) recent_ = keep * recent_ + (1.0 - keep) * frame_means[f];
  return gain_ * (look_ - recent_);
}

}  // namespace streamgen
