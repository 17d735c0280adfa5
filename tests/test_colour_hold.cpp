// Colour hold (colour_hold.h): the look a stream keeps is the mean of its first frames, the recent
// mean follows what it emits, and the sampler moves each buffer frame's clean share back towards it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/colour_hold.h"
#include "streamgen/stream_dit.h"
#include "streamgen/tensor_compare.h"
#include "dit_test_util.h"
#include "test_util.h"

namespace streamgen {
namespace {

// c frames [c, 2, 4, 4] whose channels have means (a, b) and spatial std (sa, sb) on every frame.
torch::Tensor frames(std::int64_t c, float a, float b, float sa = 1, float sb = 1) {
  auto f = torch::randn({c, 2, 4, 4});
  f = (f - f.mean({2, 3}, true)) / f.std({2, 3}, false, true);
  return f * torch::tensor({sa, sb}).view({1, 2, 1, 1}) + torch::tensor({a, b}).view({1, 2, 1, 1});
}

void expect_close(const torch::Tensor& got, std::vector<float> want, const char* what) {
  ASSERT_TRUE(got.defined()) << what;
  EXPECT_TRUE(torch::allclose(got, torch::tensor(want), 1e-4, 1e-5)) << what << ": " << got;
}

void expect_no_correction(const ColourHold::Correction& c, const char* what) {
  expect_close(c.shift, {0, 0}, what);
  expect_close(c.scale, {1, 1}, what);
}

TEST(ColourHold, TheLookIsTheFirstFramesAndTheCorrectionClosesPartOfTheGap) {
  torch::manual_seed(1);
  ColourHold hold(0.5, 3, 4);  // look over 3 frames, recent mean over about 4
  EXPECT_TRUE(hold.enabled());
  // Measuring: no correction until 3 frames are in; the chunk that completes the look feeds its
  // last frame to the recent mean.
  expect_no_correction(hold.observe(frames(2, 1, 2)), "first chunk");
  EXPECT_FALSE(hold.holding());
  const auto c = hold.observe(frames(2, 4, 2, 1, 4));
  ASSERT_TRUE(hold.holding());
  expect_close(hold.look()[0], {2, 2}, "look mean: frames 1, 1, 4 and 2, 2, 2");
  expect_close(hold.look()[1], {1, 2}, "look spread: frames 1, 1, 1 and 1, 1, 4");
  // recent = 0.75 · look + 0.25 · the frame; the correction closes half the gap.
  expect_close(hold.recent()[0], {2.5, 2}, "recent mean");
  expect_close(hold.recent()[1], {1, 2.5}, "recent spread");
  expect_close(c.shift, {-0.25, 0}, "shift");
  expect_close(c.scale, {1, 1 + 0.5f * (2 / 2.5f - 1)}, "scale");
  // Frames that stay away pull the recent mean after them, and the shift grows with the gap.
  const auto further = hold.observe(frames(2, 4, 0));
  expect_close(hold.recent()[0], {2.5f + (1 - 0.5625f) * 1.5f, 2 * 0.5625f}, "recent mean after two more frames");
  expect_close(further.shift, {-0.5f * (1 - 0.5625f) * 1.5f - 0.25f, 0.5f * 2 * (1 - 0.5625f)}, "shift after two more frames");

  // Restart: the look is forgotten; skipped frames are not measured.
  hold.restart(2);
  EXPECT_FALSE(hold.holding());
  expect_no_correction(hold.observe(frames(2, 9, 9)), "skipped");
  hold.observe(frames(2, 0, 1));
  EXPECT_FALSE(hold.holding());
  hold.observe(frames(2, 3, 1));
  ASSERT_TRUE(hold.holding());
  expect_close(hold.look()[0], {1, 1}, "the new look");

  ColourHold off;
  EXPECT_FALSE(off.enabled());
  expect_no_correction(off.observe(frames(2, 5, 5)), "off");
  EXPECT_FALSE(off.holding());
  test::expect_error_mentions([] { ColourHold(1.5); }, "gain must be in [0, 1]");
  test::expect_error_mentions([] { ColourHold(0.5, 0); }, "at least 1 frame");
  test::expect_error_mentions([] { ColourHold(0.5, 4, 0); }, "recent mean");
}

TEST(ColourHold, ACorrectionMovesTheCleanShareOfEachFrame) {
  // A clean frame (τ = 1) takes the whole shift and scale; a pure-noise one (τ = 0) none; in between, τ of them.
  torch::manual_seed(2);
  const auto x = torch::randn({1, 3, 2, 4, 4});
  const ColourHold::Correction c{torch::tensor({0.5f, -1.0f}), torch::tensor({2.0f, 0.5f})};
  const auto out = ColourHold::apply(x, {0.0, 0.5, 1.0}, c);
  const auto mean = x.mean({3, 4}, true);
  for (int f = 0; f < 3; ++f) {
    const float t = 0.5f * static_cast<float>(f);
    const auto want = x[0][f] + t * c.shift.view({2, 1, 1}) + t * (c.scale.view({2, 1, 1}) - 1) * (x[0][f] - mean[0][f]);
    EXPECT_TRUE(torch::allclose(out[0][f], want, 1e-5, 1e-6)) << "frame " << f;
  }
  EXPECT_TRUE(torch::equal(out[0][0], x[0][0]));
  const auto bf16 = ColourHold::apply(x.to(torch::kBFloat16), {1.0, 1.0, 1.0}, c);
  EXPECT_EQ(bf16.scalar_type(), torch::kBFloat16);
}

// Equal up to float rounding (max |a − b|: the expected difference is zero while the look is measured).
bool near(const torch::Tensor& a, const torch::Tensor& b) {
  const auto d = compare_tensors(a, b);
  return !d.non_finite && d.max_abs < 1e-5;
}

StreamDiTOptions held_options(double gain) {
  StreamDiTOptions o;
  o.chunk_frames = 2;
  o.micro_steps = 4;
  o.seed = 9;
  o.colour_hold = gain;
  o.colour_hold_frames = 4;
  return o;
}

TEST(ColourHold, TheSamplerMovesEachFramesCleanShareByTheCorrection) {
  // A fresh model predicts zero velocity (adaLN-Zero): frames move only by the hold, so the held
  // buffer is the plain one moved by each step's correction (on the frames' levels then), carried
  // along as the buffer shifts.
  StreamDiTSampler held(StreamDiT(test::tiny_dit_config()), held_options(0.5)), plain(StreamDiT(test::tiny_dit_config()), held_options(0));
  ColourHold mirror(0.5, 4, 4);
  held.start();
  plain.start();
  auto expected = plain.buffer().clone();
  for (int i = 0; i < 12; ++i) {
    const auto out = held.step();
    const auto plain_out = plain.step();
    EXPECT_TRUE(near(out, expected[0].narrow(0, 0, 2))) << "step " << i;
    if (i < 2) {
      EXPECT_TRUE(torch::equal(out, plain_out)) << "the look is still measured at step " << i;
    }
    const auto correction = mirror.observe(out);
    expected = torch::cat({expected.narrow(1, 2, 14), plain.buffer().narrow(1, 14, 2)}, 1);
    if (mirror.holding()) expected = ColourHold::apply(expected, held.levels(0), correction);
    EXPECT_TRUE(near(held.buffer(), expected)) << "step " << i;
    EXPECT_EQ(held.colour_hold().holding(), i >= 1) << "step " << i;
  }
  EXPECT_GT((held.buffer() - plain.buffer()).abs().max().item<float>(), 1e-3);  // the hold did move the buffer
}

TEST(ColourHold, APromptChangeTakesANewLookFromTheFramesMadeUnderIt) {
  auto model = test::random_tiny_dit(4);
  StreamDiTSampler s(model, held_options(0.5));
  s.set_prompt("red circle moving left");
  for (int i = 0; i < 3; ++i) s.step();
  ASSERT_TRUE(s.colour_hold().holding());
  const auto first_look = s.colour_hold().look().clone();
  s.set_prompt("red circle moving left");  // the same prompt: no change
  s.step();
  EXPECT_TRUE(torch::equal(s.colour_hold().look(), first_look));
  // N = 8 chunks began under the old prompt, then 4 frames (2 chunks) are measured.
  s.set_prompt("blue square moving up");
  for (int i = 0; i < 9; ++i) {
    s.step();
    EXPECT_FALSE(s.colour_hold().holding()) << "step " << i;
  }
  s.step();
  ASSERT_TRUE(s.colour_hold().holding());
  EXPECT_FALSE(torch::allclose(s.colour_hold().look(), first_look));

  auto bad = held_options(2.0);
  test::expect_error_mentions([&] { StreamDiTSampler(model, bad); }, "colour hold: the gain must be in [0, 1]");
}

}  // namespace
}  // namespace streamgen
