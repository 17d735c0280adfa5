#pragma once
// The StreamDiT configuration the unit tests share: 16-frame buffers of 16x16 RGB with patch 4
// (a [16, 4, 4] token grid), width 32, 2 blocks, small enough for many passes per test.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <vector>

#include "streamgen/dit.h"
#include "streamgen/dit_trainer.h"
#include "streamgen/error.h"
#include "streamgen/procedural_video.h"

namespace streamgen::test {

inline StreamDiTConfig tiny_dit_config() {
  StreamDiTConfig c;
  c.in_channels = 3;
  c.patch_size = 4;
  c.hidden_size = 32;
  c.depth = 2;
  c.num_heads = 2;
  c.max_frames = 16;
  c.sample_height = 16;
  c.sample_width = 16;
  c.window = {8, 2, 2};
  c.text.vocabulary = ProceduralPalette::vocabulary();
  c.text.num_heads = 2;
  return c;
}

// Every parameter ~ N(0, std): unlike a fresh (adaLN-Zero) model, it predicts non-zero velocities;
// larger std makes the velocity field bend more along a trajectory.
inline StreamDiT random_tiny_dit(std::uint64_t seed = 1, double std = 0.05, const StreamDiTConfig& config = tiny_dit_config()) {
  StreamDiT m(config);
  torch::NoGradGuard no_grad;
  torch::manual_seed(static_cast<std::int64_t>(seed));
  for (auto& p : m->parameters()) p.normal_(0.0, std);
  return m;
}

// 16-frame 16x16 procedural clips with shapes small enough for the frame.
inline ProceduralClipSource tiny_clip_source() {
  ProceduralVideoOptions video;
  video.width = video.height = 16;
  video.min_radius = 2;
  video.max_radius = 4;
  return ProceduralClipSource(video, 16);
}

// Runs `train(options, on_step)` straight into `straight`, and into `split` interrupted during step
// `interrupt_at` (after the checkpoint at `last_checkpoint`) and then resumed; expects the same
// loss at every step, and that continuing a run needs `resume`. Options: DiTTrainOptions,
// DiTDistillOptions.
template <class Options, class Train>
void expect_resumed_run_follows_the_same_curve(Options o, const Train& train, const std::filesystem::path& straight,
                                               const std::filesystem::path& split, std::int64_t interrupt_at, std::int64_t last_checkpoint) {
  std::vector<double> reference, resumed;
  o.out = straight;
  train(o, [&](const TrainStepInfo& s) { reference.push_back(s.loss); });
  o.out = split;
  try {
    train(o, [&](const TrainStepInfo& s) {
      resumed.push_back(s.loss);
      if (s.step == interrupt_at) throw Error("simulated interruption");
    });
  } catch (const Error&) {
  }
  resumed.resize(static_cast<std::size_t>(last_checkpoint));  // later steps were lost with the interruption
  EXPECT_THROW(train(o, [](const TrainStepInfo&) {}), Error);  // the folder holds a run: resuming must be asked for
  o.resume = true;
  train(o, [&](const TrainStepInfo& s) { resumed.push_back(s.loss); });
  ASSERT_EQ(resumed.size(), reference.size());
  for (std::size_t i = 0; i < reference.size(); ++i) EXPECT_NEAR(resumed[i], reference[i], 1e-6 * std::abs(reference[i])) << "step " << i + 1;
}

}  // namespace streamgen::test
