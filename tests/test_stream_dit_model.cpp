// StreamDiT's pieces: partitions and flow-time tables (spec §3–§6), windows and the shifted-window
// mask, the per-frame time modulation, checkpoints and the procedural data.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "streamgen/attention.h"
#include "streamgen/dit.h"
#include "streamgen/error.h"
#include "streamgen/flow_matching.h"
#include "streamgen/procedural_video.h"
#include "streamgen/tensor_compare.h"
#include "dit_test_util.h"
#include "test_util.h"

namespace streamgen {
namespace {

StreamDiTConfig tiny_config() { return test::tiny_dit_config(); }

// Random values everywhere, including the zero-initialised adaLN and output layers, so that every
// path carries signal.
void randomize(torch::nn::Module& m, std::uint64_t seed = 1) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(static_cast<std::int64_t>(seed));
  for (auto& p : m.parameters()) p.normal_(0.0, 0.1);
}

std::vector<double> levels_of(std::initializer_list<double> eighths) {
  std::vector<double> v;
  for (double e : eighths) v.push_back(e / 8.0);
  return v;
}

// ---- partitions and levels -------------------------------------------------------------------
TEST(BufferPartition, DerivesNFromBufferAndChunkSize) {
  const auto p = BufferPartition::for_chunk_size(16, 2, 0, 4);
  EXPECT_EQ(p.chunks, 8);
  EXPECT_EQ(p.buffer_frames(), 16);
  EXPECT_EQ(p.total_steps(), 32);
  EXPECT_EQ(p.describe(), "K=0 N=8 c=2 s=4 (B=16, T=32)");
  const auto fig2 = BufferPartition::for_chunk_size(7, 2, 1, 2);  // paper Fig. 2: K=1 c=2 s=2 N=3
  EXPECT_EQ(fig2.chunks, 3);
  EXPECT_EQ(chunk_of_slot(fig2, 0), -1);
  EXPECT_EQ(chunk_of_slot(fig2, 1), 0);
  EXPECT_EQ(chunk_of_slot(fig2, 6), 2);
}

TEST(BufferPartition, RejectsBuffersThatDoNotSplit) {
  EXPECT_THROW(BufferPartition::for_chunk_size(16, 3), Error);
  EXPECT_THROW(BufferPartition::for_chunk_size(4, 1, 4), Error);
  EXPECT_THROW(BufferPartition::for_chunk_size(16, 0), Error);
  try {
    BufferPartition::for_chunk_size(16, 3);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("B = K + N·c"), std::string::npos) << e.what();
  }
}

TEST(FlowLevels, StudentAndTeacherTablesMatchTheSpec) {
  // Spec §6 worked example, K = 0, c = 2, N = 8.
  const auto student = BufferPartition::for_chunk_size(16, 2, 0, 1);
  EXPECT_EQ(stream_levels(student, 0), levels_of({7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0}));
  const auto teacher = BufferPartition::for_chunk_size(16, 2, 0, 4);
  for (std::int64_t j = 0; j < 4; ++j) {
    const auto tau = stream_levels(teacher, j);
    for (std::int64_t b = 0; b < 16; ++b) EXPECT_DOUBLE_EQ(tau[b], (7.0 - static_cast<double>(b / 2)) / 8 + static_cast<double>(j) / 32);
  }
  // After s micro steps chunk k reaches the start level of chunk k - 1: the schedule is stationary.
  EXPECT_DOUBLE_EQ(stream_levels(teacher, 3)[2] + 1.0 / 32, stream_levels(teacher, 0)[0]);
  // References stay clean.
  const auto fig2 = BufferPartition::for_chunk_size(7, 2, 1, 2);
  EXPECT_EQ(stream_levels(fig2, 1)[0], 1.0);
  // j = s is where the micro steps end: every chunk at the next chunk's start level.
  EXPECT_DOUBLE_EQ(stream_levels(teacher, 4)[2], stream_levels(teacher, 0)[0]);
  EXPECT_THROW(stream_levels(teacher, 5), Error);
  EXPECT_THROW(stream_levels(teacher, -1), Error);
}

TEST(FlowLevels, TrainingLevelsStayInTheirChunkSegments) {
  const auto p = BufferPartition::for_chunk_size(16, 4, 0);
  const auto lo = training_levels(p, {0.0, 0.0, 0.0, 0.0});
  const auto hi = training_levels(p, {0.999999, 0.999999, 0.999999, 0.999999});
  for (std::int64_t b = 0; b < 16; ++b) {
    const double k = static_cast<double>(b / 4);
    EXPECT_NEAR(lo[b], (3 - k) / 4, 1e-12);
    EXPECT_NEAR(hi[b], (4 - k) / 4, 1e-6);
  }
  // One draw per chunk: the frames of a chunk share it.
  const auto mixed = training_levels(p, {0.1, 0.5, 0.9, 0.3});
  EXPECT_EQ(mixed[4], mixed[7]);
  EXPECT_NE(mixed[3], mixed[4]);
  // c = B is plain T2V: one level in [0, 1) for the whole clip; K reference frames are clean.
  const auto full = training_levels(BufferPartition::for_chunk_size(16, 16), {0.37});
  EXPECT_EQ(full, std::vector<double>(16, 0.37));
  const auto ref = training_levels(BufferPartition::for_chunk_size(5, 2, 1), {0.5, 0.5});
  EXPECT_EQ(ref[0], 1.0);
  EXPECT_DOUBLE_EQ(ref[1], 0.75);
  EXPECT_DOUBLE_EQ(ref[3], 0.25);
}

TEST(FlowLevels, TimeShiftWarpsTheScheduleAndKeepsItStationary) {
  // τ = u / (a − (a−1)·u): the ends stay, the middle moves towards noise, and it inverts.
  EXPECT_EQ(shifted_time(0.0, 3.0), 0.0);
  EXPECT_DOUBLE_EQ(shifted_time(1.0, 3.0), 1.0);
  EXPECT_DOUBLE_EQ(shifted_time(0.5, 3.0), 0.25);
  EXPECT_DOUBLE_EQ(shifted_time(0.37, 1.0), 0.37);
  const auto u = torch::linspace(0, 1, 11, torch::kFloat64);
  const auto tau = shifted_time(u, 3.0);
  EXPECT_TRUE((tau.slice(0, 1) > tau.slice(0, 0, -1)).all().item<bool>());  // still increasing
  EXPECT_TRUE((tau.slice(0, 1, -1) < u.slice(0, 1, -1)).all().item<bool>());
  EXPECT_TRUE(torch::allclose(unshifted_time(tau, 3.0), u, 0, 1e-12));
  EXPECT_THROW(shifted_time(0.5, 0.0), Error);
  EXPECT_THROW(unshifted_time(u, 0.0), Error);

  // Stream levels are the shifted linear levels, and j = s reaches the next chunk's start levels:
  // the shifted schedule is as stationary as the linear one.
  const auto teacher = BufferPartition::for_chunk_size(16, 2, 0, 4);
  for (std::int64_t j = 0; j <= 4; ++j) {
    const auto linear = stream_levels(teacher, j), shifted = stream_levels(teacher, j, 3.0);
    for (std::size_t b = 0; b < 16; ++b) EXPECT_DOUBLE_EQ(shifted[b], shifted_time(linear[b], 3.0));
  }
  const auto end = stream_levels(teacher, 4, 3.0), begin = stream_levels(teacher, 0, 3.0);
  for (std::size_t b = 2; b < 16; ++b) EXPECT_NEAR(end[b], begin[b - 2], 1e-15) << b;
  EXPECT_THROW(stream_levels(teacher, 5, 3.0), Error);

  // Training draws the same segments of u, so each chunk's τ stays in its shifted segment.
  const auto p = BufferPartition::for_chunk_size(16, 4, 0);
  const auto lo = training_levels(p, {0.0, 0.0, 0.0, 0.0}, 3.0);
  const auto mid = training_levels(p, {0.5, 0.5, 0.5, 0.5}, 3.0);
  for (std::int64_t b = 0; b < 16; ++b) {
    const double k = static_cast<double>(b / 4);
    EXPECT_NEAR(lo[b], shifted_time((3 - k) / 4, 3.0), 1e-12);
    EXPECT_NEAR(mid[b], shifted_time((3.5 - k) / 4, 3.0), 1e-12);
  }
}

TEST(FlowLevels, ChunkMixDefaults) {
  const auto mix = ChunkMix::powers_of_two(16);
  EXPECT_EQ(mix.chunk_sizes, (std::vector<std::int64_t>{1, 2, 4, 8, 16}));
  const auto p = mix.probabilities(16);
  EXPECT_DOUBLE_EQ(p[4], 0.3);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(p[i], 0.175);
  EXPECT_EQ(mix.pick(0.0, 16), 1);
  EXPECT_EQ(mix.pick(0.99, 16), 16);
  EXPECT_EQ(ChunkMix::parse("1", 16).probabilities(16), std::vector<double>{1.0});
  EXPECT_THROW(ChunkMix::parse("1,3", 16), Error);
  EXPECT_THROW(ChunkMix::parse("1,x", 16), Error);
}

TEST(FlowMatching, InterpolantEndsAndVelocity) {
  torch::manual_seed(0);
  const auto x1 = torch::randn({2, 4, 3, 5, 5}), x0 = torch::randn({2, 4, 3, 5, 5});
  const auto zeros = torch::zeros({2, 4}), ones = torch::ones({2, 4});
  EXPECT_TRUE(torch::allclose(flow_interpolate(x1, x0, zeros), x0));
  EXPECT_TRUE(torch::allclose(flow_interpolate(x1, x0, ones), x1 + kFlowSigmaMin * x0));
  // V = dX/dτ, the same at every τ.
  const auto tau = torch::rand({2, 4});
  const auto dx = (flow_interpolate(x1, x0, tau + 1e-3) - flow_interpolate(x1, x0, tau)) / 1e-3;
  EXPECT_TRUE(compare_tensors(dx, flow_velocity(x1, x0)).within(1e-3));
  EXPECT_THROW(flow_interpolate(x1, x0, torch::zeros({2, 3})), Error);
}

// ---- windows -------------------------------------------------------------------------------
TEST(DiTWindows, PartitionRoundTripsAndHoldsContiguousBlocks) {
  const auto layout = make_window_layout({4, 6, 8}, {2, 3, 4}, false);
  EXPECT_EQ(layout.windows(), 2 * 2 * 2);
  const auto x = torch::randn({3, 4, 6, 8, 5});
  const auto w = window_partition(x, layout);
  ASSERT_EQ(w.sizes(), (std::vector<std::int64_t>{3 * 8, 24, 5}));
  EXPECT_TRUE(torch::equal(window_unpartition(w, layout, 3), x));
  // Window 1 of batch item 2 = frames 0-1, rows 0-2, columns 4-7.
  const auto expect = x[2].slice(0, 0, 2).slice(1, 0, 3).slice(2, 4, 8).reshape({24, 5});
  EXPECT_TRUE(torch::equal(w[2 * 8 + 1], expect));
}

TEST(DiTWindows, WindowsClampToSmallGridsAndShiftByHalf) {
  const auto l = make_window_layout({4, 4, 4}, {8, 2, 4}, true);
  EXPECT_EQ(l.window, (std::array<std::int64_t, 3>{4, 2, 4}));
  EXPECT_EQ(l.shift, (std::array<std::int64_t, 3>{0, 1, 0}));  // no shift where one window covers the grid
  EXPECT_THROW(make_window_layout({6, 4, 4}, {4, 2, 2}, false), Error);
}

TEST(DiTWindows, ShiftMaskBlocksExactlyTheWrappedPairs) {
  const auto l = make_window_layout({8, 4, 6}, {4, 2, 2}, true);
  const auto mask = shifted_window_mask(l);
  ASSERT_EQ(mask.sizes(), (std::vector<std::int64_t>{l.windows(), 16, 16}));
  // Coordinates (in the rolled grid) of every voxel, partitioned the same way.
  auto coords = torch::stack(torch::meshgrid({torch::arange(8), torch::arange(4), torch::arange(6)}, "ij"), -1).unsqueeze(0).to(torch::kFloat32);
  const auto wc = window_partition(coords, l);  // [windows, 16, 3]
  std::int64_t blocked = 0;
  for (std::int64_t w = 0; w < l.windows(); ++w)
    for (std::int64_t a = 0; a < 16; ++a)
      for (std::int64_t b = 0; b < 16; ++b) {
        // A voxel at rolled position i along an axis of size n came around the edge iff i >= n - s.
        bool same = true;
        for (int d = 0; d < 3; ++d) {
          const auto n = l.grid[d], s = l.shift[d];
          const bool wa = wc[w][a][d].item<float>() >= static_cast<float>(n - s), wb = wc[w][b][d].item<float>() >= static_cast<float>(n - s);
          same = same && (s == 0 || wa == wb);
        }
        const bool masked = mask[w][a][b].item<float>() < -1e8;
        EXPECT_EQ(masked, !same) << "window " << w << " pair " << a << "," << b;
        blocked += masked;
      }
  EXPECT_GT(blocked, 0);
  EXPECT_FALSE(shifted_window_mask(make_window_layout({8, 4, 6}, {4, 2, 2}, false)).defined());
}

// ---- the model -------------------------------------------------------------------------------
struct Inputs {
  torch::Tensor x, tau, tokens;
};
Inputs inputs(const StreamDiT& model, std::int64_t batch = 1) {
  torch::manual_seed(3);
  return {torch::randn({batch, 16, 3, 16, 16}), torch::rand({batch, 16}),
          model->tokenizer.encode_batch(std::vector<std::string>(static_cast<std::size_t>(batch), "red circle moving left"))};
}

TEST(StreamDiT, OutputsVelocityOfTheInputShapeAndStartsAtZero) {
  StreamDiT model(tiny_config());
  const auto in = inputs(model, 2);
  const auto v = model->forward(in.x, in.tau, model->encode_text(in.tokens));
  EXPECT_EQ(v.sizes(), in.x.sizes());
  EXPECT_EQ(v.abs().max().item<float>(), 0.f);  // adaLN-Zero output layer
  randomize(*model);
  const auto v2 = model->forward(in.x, in.tau, model->encode_text(in.tokens));
  EXPECT_GT(v2.abs().mean().item<float>(), 0.f);
  EXPECT_TRUE(torch::isfinite(v2).all().item<bool>());
}

TEST(StreamDiT, EveryTokenPositionStartsWithItsOwnEmbedding) {
  // (t, h, w) tables in disjoint channel bands: no two grid positions share an embedding, in
  // particular not a patch and its transpose (2, 1) / (1, 2), nor frame 1 and row 1.
  StreamDiT model(tiny_config());
  const auto f = model->pos_embed_t.size(0), h = model->pos_embed_h.size(0), w = model->pos_embed_w.size(0);
  const auto all = (model->pos_embed_t.view({f, 1, 1, -1}) + model->pos_embed_h.view({1, h, 1, -1}) +
                    model->pos_embed_w.view({1, 1, w, -1}))
                       .reshape({f * h * w, -1});
  const auto distance = torch::cdist(all, all) + torch::eye(f * h * w) * 1e9;
  EXPECT_GT(distance.min().item<float>(), 0.1f);
  const auto at = [&](std::int64_t t, std::int64_t y, std::int64_t x) { return all[(t * h + y) * w + x]; };
  EXPECT_GT((at(0, 2, 1) - at(0, 1, 2)).norm().item<float>(), 0.1f);
  EXPECT_GT((at(1, 0, 0) - at(0, 1, 0)).norm().item<float>(), 0.1f);
}

TEST(StreamDiT, TimeModulationIsPerFrame) {
  // With a one-frame temporal window, frame f's output may depend on τ_f only: the gradient of
  // frame 5's output with respect to τ is non-zero at 5 and exactly zero elsewhere.
  auto c = tiny_config();
  c.window = {1, 2, 2};
  StreamDiT model(c);
  randomize(*model);
  const auto in = inputs(model);
  const auto tau = in.tau.clone().requires_grad_(true);
  model->forward(in.x, tau, model->encode_text(in.tokens)).select(1, 5).sum().backward();
  const auto g = tau.grad()[0];
  for (std::int64_t f = 0; f < 16; ++f) {
    if (f == 5) EXPECT_GT(g[f].abs().item<float>(), 0.f);
    else EXPECT_EQ(g[f].item<float>(), 0.f) << "frame " << f;
  }
}

TEST(StreamDiT, WindowsLimitWhichFramesInteract) {
  // depth 2, window 8 frames: block 0 attends within frames 0-7 / 8-15; block 1 is rolled by 4,
  // so its windows hold frames 4-11 and the wrapped 12-15 + 0-3, which the mask splits in two.
  // With the mask frame 0's output therefore sees frames 0-7 only; without it, 12-15 (and through
  // them, block 0's 8-15) reach frame 0 as well.
  auto grad_of_frame0 = [](bool shift_mask) {
    auto c = tiny_config();
    c.shift_mask = shift_mask;
    StreamDiT model(c);
    randomize(*model);
    const auto in = inputs(model);
    const auto x = in.x.clone().requires_grad_(true);
    model->forward(x, in.tau, model->encode_text(in.tokens)).select(1, 0).sum().backward();
    return x.grad()[0].abs().flatten(1).sum(1);  // [16] per input frame
  };
  const auto masked = grad_of_frame0(true), wrapped = grad_of_frame0(false);
  for (std::int64_t f = 0; f < 16; ++f) {
    if (f < 8) EXPECT_GT(masked[f].item<float>(), 0.f) << "frame " << f;
    else EXPECT_EQ(masked[f].item<float>(), 0.f) << "frame " << f;
    EXPECT_GT(wrapped[f].item<float>(), 0.f) << "frame " << f;
  }
}

TEST(StreamDiT, BadConfigsAndInputsGiveClearErrors) {
  auto c = tiny_config();
  c.window = {32, 2, 2};
  EXPECT_THROW(StreamDiT{c}, Error);
  c = tiny_config();
  c.num_heads = 3;
  EXPECT_THROW(StreamDiT{c}, Error);
  c = tiny_config();
  c.sample_height = 18;
  EXPECT_THROW(StreamDiT{c}, Error);
  try {
    auto bad = tiny_config();
    bad.window = {8, 3, 2};
    StreamDiT m(bad);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by the window"), std::string::npos) << e.what();
  }
  StreamDiT model(tiny_config());
  const auto in = inputs(model);
  const auto text = model->encode_text(in.tokens);
  EXPECT_THROW(model->forward(torch::randn({1, 17, 3, 16, 16}), torch::rand({1, 17}), text), Error);
  EXPECT_THROW(model->forward(in.x, torch::rand({1, 15}), text), Error);
  EXPECT_THROW(model->forward(torch::randn({1, 16, 4, 16, 16}), in.tau, text), Error);
}

TEST(StreamDiT, ConfigRoundTripsThroughJson) {
  auto c = tiny_config();
  c.time_shift = 3.0;
  c.procedural_edges = EdgeRule::Wrap;
  const auto back = StreamDiTConfig::from_json(c.to_json());
  EXPECT_EQ(back.to_json(), c.to_json());
  auto j = c.to_json();
  j["_class_name"] = "UNet2DConditionModel";
  EXPECT_THROW(StreamDiTConfig::from_json(j), Error);
  j = c.to_json();
  j["window"] = {8, 2};
  EXPECT_THROW(StreamDiTConfig::from_json(j), Error);
  j = c.to_json();
  j.erase("time_shift");  // a checkpoint from before the option: the linear schedule
  EXPECT_EQ(StreamDiTConfig::from_json(j).time_shift, 1.0);
  j["time_shift"] = -1.0;
  EXPECT_THROW(StreamDiTConfig::from_json(j), Error);
  j = c.to_json();
  j.erase("procedural_edges");  // trained before the wrap rule existed: bouncing shapes
  EXPECT_EQ(StreamDiTConfig::from_json(j).procedural_edges, EdgeRule::Bounce);
  j["procedural_edges"] = "loop";
  try {
    StreamDiTConfig::from_json(j, "m/config.json");
    ADD_FAILURE() << "an unknown edge rule was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m/config.json: procedural_edges is 'loop'"), std::string::npos) << e.what();
  }
}

TEST(StreamDiT, SaveLoadGivesIdenticalOutputs) {
  test::TempDir dir;
  StreamDiT model(tiny_config());
  randomize(*model);
  model->eval();
  save_stream_dit(model, dir.path());
  auto loaded = load_stream_dit(dir.path());
  const auto in = inputs(model, 2);
  torch::NoGradGuard no_grad;
  const auto a = model->forward(in.x, in.tau, model->encode_text(in.tokens));
  const auto b = loaded->forward(in.x, in.tau, loaded->encode_text(in.tokens));
  EXPECT_TRUE(torch::equal(a, b));
}

// ---- captions and data -----------------------------------------------------------------------
TEST(CaptionTokenizer, MapsWordsPadsAndFlagsUnknown) {
  CaptionEncoderConfig c;
  c.vocabulary = ProceduralPalette::vocabulary();
  c.max_tokens = 6;
  const CaptionTokenizer tok(c);
  const auto ids = tok.encode("Red circle, moving LEFT");
  ASSERT_EQ(ids.size(), 6u);
  EXPECT_GT(ids[0], 1);
  EXPECT_EQ(ids[4], CaptionTokenizer::kPad);
  EXPECT_EQ(tok.encode(""), std::vector<std::int64_t>(6, CaptionTokenizer::kPad));
  EXPECT_EQ(tok.encode("purple circle")[0], CaptionTokenizer::kUnknown);
  EXPECT_EQ(tok.unknown_words("purple circle"), std::vector<std::string>{"purple"});
  EXPECT_EQ(tok.unknown_words("red circle moving left and blue square").size(), 1u);  // 7 words, 6 fit
  // Articles are not words to the tokenizer: the captions it was trained on have none, and a
  // leading "a" would move the colour to the shape's position.
  EXPECT_EQ(tok.encode("A red circle moving left"), tok.encode("red circle moving left"));
  EXPECT_EQ(tok.encode("the red circle and an blue square"), tok.encode("red circle and blue square"));
  EXPECT_TRUE(tok.unknown_words("a red circle and a blue square").empty());
}

TEST(ProceduralVideo, SeededClipsAreReproducibleAndCaptioned) {
  ProceduralVideoOptions o;
  std::mt19937_64 a(42), b(42), c(43);
  const auto ca = make_procedural_clip(o, 16, a), cb = make_procedural_clip(o, 16, b), cc = make_procedural_clip(o, 16, c);
  EXPECT_TRUE(torch::equal(ca.frames, cb.frames));
  EXPECT_FALSE(torch::equal(ca.frames, cc.frames));
  EXPECT_EQ(ca.frames.sizes(), (std::vector<std::int64_t>{16, 3, 32, 32}));
  EXPECT_GE(ca.frames.min().item<float>(), -1.f);
  EXPECT_LE(ca.frames.max().item<float>(), 1.f);
  CaptionEncoderConfig tc;
  tc.vocabulary = ProceduralPalette::vocabulary();
  tc.max_tokens = 12;
  const CaptionTokenizer tok(tc);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 50; ++i) {
    const auto clip = make_procedural_clip(o, 16, rng);
    EXPECT_TRUE(tok.unknown_words(clip.caption).empty()) << clip.caption;
    for (const auto& frame : clip.states)
      for (const auto& obj : frame) {
        EXPECT_GE(obj.x, obj.radius - 1e-9);
        EXPECT_LE(obj.x, 32 - obj.radius + 1e-9);
        EXPECT_GE(obj.y, obj.radius - 1e-9);
        EXPECT_LE(obj.y, 32 - obj.radius + 1e-9);
      }
  }
}

TEST(ProceduralVideo, ObjectsMoveByTheirVelocityAndShowTheirColour) {
  ProceduralVideoOptions o;
  o.min_objects = o.max_objects = 1;
  o.min_speed = o.max_speed = 1.0;
  std::mt19937_64 rng(5);
  const auto clip = make_procedural_clip(o, 2, rng);
  const auto& s0 = clip.states[0][0];
  const auto& s1 = clip.states[1][0];
  if (s0.x > 8 && s0.x < 24 && s0.y > 8 && s0.y < 24) {  // no bounce in between
    EXPECT_NEAR(s1.x - s0.x, s0.vx, 1e-9);
    EXPECT_NEAR(s1.y - s0.y, s0.vy, 1e-9);
  }
  // The centre pixel carries the object's colour.
  const auto& rgb = ProceduralPalette::colours()[static_cast<std::size_t>(s0.colour)];
  const auto px = clip.frames[0].index({torch::indexing::Slice(), static_cast<std::int64_t>(s0.y), static_cast<std::int64_t>(s0.x)});
  for (int ch = 0; ch < 3; ++ch) EXPECT_NEAR((px[ch].item<float>() + 1) / 2, rgb[ch], 0.02);
}

TEST(ProceduralVideo, WrappedObjectsKeepTheirCaptionAndShowOnBothSidesOfAnEdge) {
  ProceduralVideoOptions o;
  o.edges = EdgeRule::Wrap;
  // The same scene draws under both rules (one draw per coordinate), only the start range differs.
  std::mt19937_64 a(9), b(9);
  ProceduralVideoOptions bounce;
  EXPECT_EQ(ProceduralScene(o, a).caption(), ProceduralScene(bounce, b).caption());
  std::mt19937_64 rng(17);
  for (int i = 0; i < 10; ++i) {
    const auto clip = make_procedural_clip(o, 200, rng);  // many crossings at up to 2 px per frame
    for (const auto& frame : clip.states)
      for (std::size_t k = 0; k < frame.size(); ++k) {
        EXPECT_GE(frame[k].x, 0.0);
        EXPECT_LT(frame[k].x, 32.0);
        EXPECT_GE(frame[k].y, 0.0);
        EXPECT_LT(frame[k].y, 32.0);
        // No bounce: the velocity, and so the caption's direction, holds for the whole clip.
        EXPECT_EQ(frame[k].vx, clip.states[0][k].vx);
        EXPECT_EQ(frame[k].vy, clip.states[0][k].vy);
      }
  }
  // An object centred on the left edge is cut in two: its right half at x = 0, its left half at x = W - 1.
  o.min_objects = o.max_objects = 1;
  o.min_radius = o.max_radius = 6;
  o.min_speed = o.max_speed = 0.5;
  bool checked = false;
  for (std::uint64_t seed = 0; seed < 20 && !checked; ++seed) {
    std::mt19937_64 one(seed);
    ProceduralScene scene(o, one);
    for (int f = 0; f < 400 && !checked; ++f, scene.advance()) {
      const auto& obj = scene.objects()[0];
      if (obj.x > 1.0 || obj.y < 8 || obj.y > 24) continue;
      const auto img = scene.render();
      const auto& rgb = ProceduralPalette::colours()[static_cast<std::size_t>(obj.colour)];
      const auto row = static_cast<std::int64_t>(obj.y);
      for (std::int64_t x : {std::int64_t{0}, std::int64_t{31}})
        for (int ch = 0; ch < 3; ++ch) EXPECT_NEAR((img[ch][row][x].item<float>() + 1) / 2, rgb[ch], 0.05) << "x = " << x;
      checked = true;
    }
  }
  EXPECT_TRUE(checked) << "no scene put its object on the left edge";
  EXPECT_EQ(parse_edge_rule("wrap"), EdgeRule::Wrap);
  EXPECT_EQ(edge_rule_name(parse_edge_rule("bounce")), "bounce");
  try {
    parse_edge_rule("loop");
    ADD_FAILURE() << "an unknown edge rule was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'loop'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace streamgen

namespace streamgen {
namespace {

TEST(Attention, GroupedMasksMatchBetweenInferenceAndAutogradPaths) {
  // One mask per window, batch rows taking mask i % G: the chunked inference kernel and the
  // differentiable formulation must agree, and a row must equal attention with its own mask.
  torch::manual_seed(11);
  const auto q = torch::randn({6, 5, 8}), k = torch::randn({6, 5, 8}), v = torch::randn({6, 5, 8});
  const auto mask = torch::where(torch::rand({3, 5, 5}) < 0.3, torch::full({}, -1e9), torch::zeros({})) * (1 - torch::eye(5));
  torch::Tensor fast;
  {
    torch::NoGradGuard no_grad;
    fast = multi_head_attention(q, k, v, 2, mask);
  }
  const auto qg = q.clone().requires_grad_(true);
  const auto slow = multi_head_attention(qg, k, v, 2, mask);
  const auto d = compare_tensors(fast, slow.detach());
  EXPECT_TRUE(d.within(1e-6)) << d.rel << " " << d.max_abs;
  torch::NoGradGuard no_grad;
  const auto row4 = multi_head_attention(q.narrow(0, 4, 1), k.narrow(0, 4, 1), v.narrow(0, 4, 1), 2, mask[1]);
  EXPECT_TRUE(compare_tensors(fast.narrow(0, 4, 1), row4).within(1e-6));
}

}  // namespace
}  // namespace streamgen

#include "streamgen/dit_eval.h"
#include "streamgen/dit_metrics.h"
#include "streamgen/optimisation.h"

namespace streamgen {
namespace {

TEST(DiTMetrics, DetectsRenderedObjectsByPaletteAndShape) {
  ProceduralVideoOptions o;
  o.min_objects = o.max_objects = 1;
  int right_shape = 0, total = 0;
  std::mt19937_64 rng(21);
  for (int i = 0; i < 60; ++i) {
    // The largest and the smallest objects the scenes draw: both big enough to name a shape.
    o.min_radius = o.max_radius = i < 30 ? 7 : 4;
    ProceduralScene scene(o, rng);
    const auto found = detect_objects(scene.render());
    const auto& truth = scene.objects()[0];
    ASSERT_EQ(found.size(), 1u) << scene.caption();
    EXPECT_EQ(found[0].colour, truth.colour);
    EXPECT_NEAR(found[0].x, truth.x, 1.0);
    EXPECT_NEAR(found[0].y, truth.y, 1.5);  // the triangle's pixel centroid sits below its circumcentre
    right_shape += found[0].shape == truth.shape;
    ++total;
  }
  EXPECT_GE(right_shape, total - 3);
}

TEST(DiTMetrics, FragmentsTooSmallOrLongToShowAShapeNameNone) {
  // Dark frames with one red (palette 0) component; red = (1, -1, -1) in [-1, 1].
  auto frame_with = [](std::int64_t y, std::int64_t x, std::int64_t h, std::int64_t w) {
    auto f = torch::full({3, 32, 32}, -1.0f);
    f[0].narrow(0, y, h).narrow(1, x, w).fill_(1.0f);
    return f;
  };
  const auto patch = detect_objects(frame_with(4, 4, 4, 4));  // one 4×4 token of a patch-4 model
  ASSERT_EQ(patch.size(), 1u);
  EXPECT_EQ(patch[0].colour, 0);
  EXPECT_FALSE(patch[0].shape.has_value());
  const auto row = detect_objects(frame_with(4, 4, 4, 12));  // three tokens in a row: long, not square
  ASSERT_EQ(row.size(), 1u);
  EXPECT_FALSE(row[0].shape.has_value());
  const auto block = detect_objects(frame_with(4, 4, 7, 7));  // the smallest square the scenes draw
  ASSERT_EQ(block.size(), 1u);
  EXPECT_EQ(block[0].shape, ShapeKind::Square);
  // A stream of lone patch fragments has the caption's colour, not its shape.
  const auto fragments = frame_with(10, 12, 4, 4).unsqueeze(0).expand({8, 3, 32, 32});
  const auto score = score_caption(fragments, "red square moving left");
  EXPECT_EQ(score.colour, 1.0);
  EXPECT_EQ(score.shape, 0.0);
  // A caption object without a colour word is never found (and is no crash).
  EXPECT_EQ(score_caption(fragments, "square moving left").overall(), 0.0);
}

TEST(DiTMetrics, DynamicDegreeFollowsEachColoursLargestObject) {
  // A red 7×7 square moving 1 px per frame, and a red 4×4 speck flickering just below it (within the
  // 8 px a real object could move): the speed is the square's alone.
  std::vector<torch::Tensor> frames;
  for (std::int64_t i = 0; i < 8; ++i) {
    auto f = torch::full({3, 32, 32}, -1.0f);
    f[0].narrow(0, 4, 7).narrow(1, 4 + i, 7).fill_(1.0f);
    f[0].narrow(0, 12 + (i % 2) * 2, 4).narrow(1, 8 + (i % 2) * 4, 4).fill_(1.0f);
    frames.push_back(f);
  }
  EXPECT_NEAR(video_statistics(torch::stack(frames), 2).dynamic_degree, 1.0, 1e-9);
}

TEST(DiTMetrics, SwappingACaptionAttributeChangesOnlyThoseWords) {
  int n = 0;
  EXPECT_EQ(swap_caption_attribute("red circle moving left and cyan square moving up", CaptionAttribute::Colour, &n),
            "green circle moving left and red square moving up");
  EXPECT_EQ(n, 2);
  EXPECT_EQ(swap_caption_attribute("Red triangle moving down", CaptionAttribute::Shape, &n), "Red circle moving down");
  EXPECT_EQ(n, 1);
  EXPECT_EQ(swap_caption_attribute("red circle moving left and blue square moving up", CaptionAttribute::Direction, &n),
            "red circle moving right and blue square moving down");
  EXPECT_EQ(n, 2);
  EXPECT_EQ(swap_caption_attribute("a dog running", CaptionAttribute::Shape, &n), "a dog running");
  EXPECT_EQ(n, 0);
}

TEST(DiTMetrics, CaptionsParseAndRealClipsScoreHigh) {
  const auto objects = parse_shape_caption("red circle moving left and blue square moving up");
  ASSERT_EQ(objects.size(), 2u);
  EXPECT_EQ(objects[0].colour, 0);
  EXPECT_EQ(objects[0].shape, static_cast<int>(ShapeKind::Circle));
  EXPECT_EQ(objects[0].direction, 0);
  EXPECT_EQ(objects[1].colour, 2);
  EXPECT_EQ(objects[1].direction, 2);
  StreamEvalOptions o;
  o.streams = 24;
  o.frames = 32;
  const auto real = evaluate_real_streams(32, 32, 2, o);
  EXPECT_GT(real.caption_accuracy, 0.85);
  EXPECT_NEAR(real.seam_ratio, 1.0, 0.15);       // real video has no chunk seams
  EXPECT_GT(real.dynamic_degree, 0.5);           // speeds are drawn from 0.5..2 px/frame
  EXPECT_LT(real.dynamic_degree, 2.2);
  EXPECT_NEAR(real.drift_brightness, 1.0, 0.05);
  // The drift means are the means of the per-stream ratios, each stream listed under its caption.
  ASSERT_EQ(real.per_stream.size(), 24u);
  double contrast = 0;
  for (const auto& d : real.per_stream) {
    EXPECT_FALSE(d.caption.empty());
    EXPECT_GT(d.brightness, 0.0);
    contrast += d.contrast / 24;
  }
  EXPECT_NEAR(real.drift_contrast, contrast, 1e-12);
  EXPECT_TRUE(real.per_stream[0].span_brightness.empty());  // 32 frames: shorter than two 500-frame spans
  // With 8-frame spans a 32-frame stream has four, each a [0, 1] intensity, and real video keeps its brightness.
  o.streams = 2;
  o.drift_reference_frames = 8;
  const auto spans = evaluate_real_streams(32, 32, 2, o);
  for (const auto& d : spans.per_stream) {
    // Brightness and contrast alike: four spans, the furthest from the first is one of them.
    for (const auto& [values, furthest, tolerance] :
         {std::tuple{d.span_brightness, d.furthest_span_brightness, 0.05}, std::tuple{d.span_contrast, d.furthest_span_contrast, 0.1}}) {
      ASSERT_EQ(values.size(), 4u);
      for (double v : values) {
        EXPECT_GT(v, 0.0);
        EXPECT_LT(v, 1.0);
        EXPECT_NEAR(v / values[0], 1.0, tolerance);
        EXPECT_LE(std::abs(v / values[0] - 1), std::abs(furthest - 1) + 1e-12);
      }
      EXPECT_NE(std::find_if(values.begin(), values.end(), [&](double v) { return std::abs(v / values[0] - furthest) < 1e-12; }), values.end());
    }
  }
  // A stream's drift is its last span against its first (spans no shorter than the 16-frame scoring window).
  o.drift_reference_frames = 16;
  for (const auto& d : evaluate_real_streams(32, 32, 2, o).per_stream) {
    ASSERT_EQ(d.span_brightness.size(), 2u);
    EXPECT_NEAR(d.brightness, d.span_brightness.back() / d.span_brightness.front(), 1e-9);
    EXPECT_NEAR(d.contrast, d.span_contrast.back() / d.span_contrast.front(), 1e-9);
  }
  std::mt19937_64 first_scene(step_seed(o.seed, 0, 77));
  EXPECT_EQ(real.per_stream[0].caption, ProceduralScene(ProceduralVideoOptions::for_frame_size(32, 32), first_scene).caption());
  // A static video (every frame the first) has no motion; noise has no objects.
  std::mt19937_64 rng(3);
  const auto clip = make_procedural_clip(ProceduralVideoOptions{}, 16, rng);
  const auto still = clip.frames.narrow(0, 0, 1).expand({16, 3, 32, 32});
  EXPECT_EQ(video_statistics(still, 2).dynamic_degree, 0.0);
  EXPECT_LT(score_caption(torch::rand({16, 3, 32, 32}) * 2 - 1, clip.caption).overall(), 0.5);
  // Brightness and contrast are read on [0, 1] intensities: a dark clip whose pixels all double
  // (x -> 2x + 1 in the [-1, 1] range) drifts by 2, not by the 0.9 a ratio of negative means gives.
  const auto dark = clip.frames * 0.2 - 0.8;
  const auto doubled = torch::cat({dark, dark * 2 + 1});
  const auto first = video_statistics(doubled.narrow(0, 0, 16), 0), last = video_statistics(doubled.narrow(0, 16, 16), 0);
  EXPECT_NEAR(last.brightness / first.brightness, 2.0, 1e-4);
  EXPECT_NEAR(last.contrast / first.contrast, 2.0, 1e-4);
  EXPECT_NEAR(first.brightness, ((dark + 1) * 0.5).mean().item<double>(), 1e-6);
}

TEST(DiTMetrics, DirectionIsTheSumOfFrameMovesSoAWrapDoesNotReverseIt) {
  // A red 7×7 square moving right 2 px per frame that leaves at the right edge and comes back at the
  // left: last minus first points left, the frame-to-frame moves point right.
  std::vector<torch::Tensor> frames;
  for (std::int64_t i = 0; i < 12; ++i) {
    auto f = torch::full({3, 32, 32}, -1.0f);
    const auto x = (18 + 2 * i) % 32;
    f[0].narrow(0, 12, 7).narrow(1, std::min<std::int64_t>(x, 25), 7).fill_(1.0f);
    frames.push_back(f);
  }
  const auto video = torch::stack(frames);
  EXPECT_EQ(score_caption(video, "red square moving right").direction, 1.0);
  EXPECT_EQ(score_caption(video, "red square moving left").direction, 0.0);
  // Real wrapped video scores as well as bouncing video does.
  StreamEvalOptions o;
  o.streams = 24;
  o.frames = 32;
  o.edges = EdgeRule::Wrap;
  const auto real = evaluate_real_streams(32, 32, 2, o);
  EXPECT_GT(real.direction_accuracy, 0.85);
  EXPECT_GT(real.caption_accuracy, 0.8);
  // Real wrapped video keeps its caption in every window, not just the first.
  EXPECT_GT(real.every_window_caption_accuracy, 0.8);
  EXPECT_NEAR(real.every_window_caption_accuracy, real.caption_accuracy, 0.1);
}

}  // namespace
}  // namespace streamgen
