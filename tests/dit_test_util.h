#pragma once
// The StreamDiT configuration the unit tests share: 16-frame buffers of 16x16 RGB with patch 4
// (a [16, 4, 4] token grid), width 32, 2 blocks, small enough for many passes per test.
#include <torch/torch.h>

#include "streamgen/dit.h"
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
inline StreamDiT random_tiny_dit(std::uint64_t seed = 1, double std = 0.05) {
  StreamDiT m(tiny_dit_config());
  torch::NoGradGuard no_grad;
  torch::manual_seed(static_cast<std::int64_t>(seed));
  for (auto& p : m->parameters()) p.normal_(0.0, std);
  return m;
}

}  // namespace streamgen::test
