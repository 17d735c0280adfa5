// The StreamDiT sampler (spec §6–§7) and trainer: when a chunk leaves, what τ each slot sees,
// determinism, NFE accounting, CFG, prompt switches, overfitting one clip, resuming a run.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>

#include <fstream>
#include <tuple>

#include "streamgen/device.h"
#include "streamgen/dit_stream.h"
#include "streamgen/dit_trainer.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "streamgen/tensor_compare.h"
#include "bf16_bound.h"
#include "dit_test_util.h"
#include "test_util.h"

namespace streamgen {
namespace {

StreamDiTConfig small_config() { return test::tiny_dit_config(); }

StreamDiT random_model(std::uint64_t seed = 1) { return test::random_tiny_dit(seed); }

StreamDiTOptions teacher_options() {
  StreamDiTOptions o;
  o.chunk_frames = 2;
  o.micro_steps = 4;
  o.seed = 9;
  return o;
}

TEST(StreamDiTSampler, ChunksLeaveAfterExactlyNStepsAtZeroVelocity) {
  // A fresh model predicts exactly zero velocity (adaLN-Zero), so every frame keeps the noise it
  // entered with and can be followed by value: the T2V start puts X0's chunk k at slot k, and a
  // chunk appended after step i leaves at step i + N.
  StreamDiTSampler sampler(StreamDiT(small_config()), teacher_options());
  sampler.start();
  const auto initial = sampler.buffer().clone();
  const auto& p = sampler.partition();
  std::vector<torch::Tensor> appended;
  for (std::int64_t i = 0; i < 2 * p.chunks; ++i) {
    const auto out = sampler.step();
    ASSERT_EQ(out.sizes(), (std::vector<std::int64_t>{2, 3, 16, 16}));
    if (i < p.chunks) {
      EXPECT_TRUE(torch::equal(out, initial[0].narrow(0, 2 * i, 2))) << "step " << i;
    } else {
      EXPECT_TRUE(torch::equal(out, appended[static_cast<std::size_t>(i - p.chunks)])) << "step " << i;
    }
    appended.push_back(sampler.buffer()[0].narrow(0, 14, 2).clone());
  }
  EXPECT_EQ(sampler.chunks_emitted(), 2 * p.chunks);
}

TEST(StreamDiTSampler, EachFrameMovesByItsOwnLevelStepUnderATimeShift) {
  // s = 1: one pass moves every frame from its level to the next chunk's start level. On the linear
  // schedule that is 1/N for all; with a shift the noisiest chunk takes the smallest step.
  for (const double shift : {1.0, 3.0}) {
    auto config = small_config();
    config.time_shift = shift;
    StreamDiT model(config);
    {
      torch::NoGradGuard no_grad;
      torch::manual_seed(5);
      for (auto& p : model->parameters()) p.normal_(0.0, 0.05);
    }
    auto o = teacher_options();
    o.micro_steps = 1;
    StreamDiTSampler sampler(model, o);
    sampler.set_prompt("red circle moving left");
    sampler.start();
    const auto before = sampler.buffer().clone();
    const auto from = sampler.levels(0), to = sampler.levels(1);
    torch::Tensor v;
    {
      torch::NoGradGuard no_grad;
      v = model->forward(before, torch::tensor(from, torch::kFloat32).view({1, 16}),
                         model->encode_text(model->tokenizer.encode_batch({"red circle moving left"})));
    }
    std::vector<double> step(16);
    for (std::size_t f = 0; f < 16; ++f) step[f] = to[f] - from[f];
    const auto expected = before + v * torch::tensor(step, torch::kFloat32).view({1, 16, 1, 1, 1});
    const auto emitted = sampler.step();
    EXPECT_TRUE(compare_tensors(emitted, expected[0].narrow(0, 0, 2)).within(1e-6)) << "shift " << shift;
    EXPECT_TRUE(compare_tensors(sampler.buffer().narrow(1, 0, 14), expected.narrow(1, 2, 14)).within(1e-6)) << "shift " << shift;
    if (shift == 1.0) {
      for (const double d : step) EXPECT_NEAR(d, 1.0 / 8, 1e-12);
    } else {
      EXPECT_NEAR(step[14], shifted_time(1.0 / 8, 3.0), 1e-12);  // the entering chunk: 0 -> τ(1/8)
      EXPECT_LT(step[14], step[0]);
      EXPECT_DOUBLE_EQ(to[0], 1.0);  // the emitted chunk is clean
    }
  }
}

TEST(StreamDiTSampler, CountsModelPassesPerChunkAndForTheStart) {
  auto o = teacher_options();
  StreamDiTSampler plain(random_model(), o);
  plain.set_prompt("red circle moving left");
  plain.start();
  EXPECT_EQ(plain.init_nfe(), 32 - 4);  // T = 32 steps, the last level (7/8 -> 1) is not needed
  for (int i = 0; i < 3; ++i) plain.step();
  EXPECT_EQ(plain.nfe() - plain.init_nfe(), 3 * 4);
  o.guidance = 3.0;
  StreamDiTSampler cfg(random_model(), o);
  cfg.step();
  EXPECT_EQ(cfg.nfe(), 2 * (28 + 4));
  o.guidance = 1.0;
  o.micro_steps = 1;
  o.init_steps = 0;
  StreamDiTSampler student(random_model(), o);
  student.step();
  EXPECT_EQ(student.init_nfe(), 7);  // T_i = N = 8
  EXPECT_EQ(student.nfe(), 8);       // one NFE per emitted chunk
  o.init_steps = 12;
  EXPECT_THROW(StreamDiTSampler(random_model(), o), Error);  // 12 is not a multiple of N = 8
  o.init_steps = 0;
  o.chunk_frames = 3;
  EXPECT_THROW(StreamDiTSampler(random_model(), o), Error);  // 16 frames do not split into 3s
}

TEST(StreamDiTSampler, StartGuidanceGuidesTheStartAlone) {
  auto o = teacher_options();
  o.micro_steps = 1;
  o.init_steps = 16;
  o.init_guidance = 3.0;
  StreamDiTSampler start_guided(random_model(), o);
  o.init_guidance = 0;
  o.guidance = 3.0;
  StreamDiTSampler guided(random_model(), o);
  for (auto* s : {&start_guided, &guided}) {
    s->set_prompt("red circle moving left");
    s->start();
  }
  // The same guided start: the buffers it leaves agree bit for bit, and so do its passes.
  EXPECT_TRUE(torch::equal(start_guided.buffer(), guided.buffer()));
  EXPECT_EQ(start_guided.init_nfe(), 2 * (16 - 2));
  EXPECT_EQ(guided.init_nfe(), start_guided.init_nfe());
  // Then the loop runs the conditional pass alone.
  for (int i = 0; i < 3; ++i) start_guided.step(), guided.step();
  EXPECT_EQ(start_guided.nfe() - start_guided.init_nfe(), 3);
  EXPECT_EQ(guided.nfe() - guided.init_nfe(), 2 * 3);
  o.init_guidance = -1;
  EXPECT_THROW(StreamDiTSampler(random_model(), o), Error);
}

TEST(StreamDiTSampler, DeterministicUnderASeed) {
  StreamDiTSampler a(random_model(), teacher_options()), b(random_model(), teacher_options());
  a.set_prompt("blue square moving up");
  b.set_prompt("blue square moving up");
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(torch::equal(a.step(), b.step())) << "step " << i;
  auto other = teacher_options();
  other.seed = 10;
  StreamDiTSampler c(random_model(), other);
  c.set_prompt("blue square moving up");
  EXPECT_FALSE(torch::equal(c.step(), StreamDiTSampler(random_model(), teacher_options()).step()));
}

TEST(StreamDiTSampler, GuidanceZeroIsTheUnconditionalModel) {
  auto o = teacher_options();
  o.guidance = 0.0;
  StreamDiTSampler guided(random_model(), o);
  guided.set_prompt("red circle moving left");
  o.guidance = 1.0;
  StreamDiTSampler uncond(random_model(), o);
  uncond.set_prompt("");
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(compare_tensors(guided.step(), uncond.step()).within(1e-5));
}

TEST(StreamDiTSampler, GuidanceIntervalGuidesOnlyTheFramesAtLevelsInside) {
  auto o = teacher_options();
  o.guidance = 3.0;
  o.guidance_interval = {0.25, 0.5};
  StreamDiTSampler sampler(random_model(), o);
  const std::vector<double> tau{0.0, 0.25, 0.4, 0.5, 0.75, 1.0};
  const auto w = sampler.guidance_scales(tau);
  EXPECT_TRUE(torch::equal(w, torch::tensor({1.0f, 3.0f, 3.0f, 3.0f, 1.0f, 1.0f})));

  // Per frame, the guided velocity is the conditional one outside and v_u + w (v_c - v_u) inside.
  torch::NoGradGuard no_grad;
  auto model = random_model();
  const auto& c = model->config;
  auto x = torch::randn({1, c.max_frames, c.in_channels, c.sample_height, c.sample_width});
  auto levels = torch::rand({1, c.max_frames});
  const auto cond = model->encode_text(model->tokenizer.encode_batch({"red circle moving left"}));
  const auto uncond = model->encode_text(model->tokenizer.encode_batch({""}));
  auto scales = torch::ones({1, c.max_frames});
  scales.index_put_({0, torch::indexing::Slice(0, 4)}, 3.0);
  const auto mixed = guided_velocity(model, x, levels, cond, uncond, scales);
  const auto vc = model->forward(x, levels, cond), vu = model->forward(x, levels, uncond);
  EXPECT_TRUE(compare_tensors(mixed.narrow(1, 4, c.max_frames - 4), vc.narrow(1, 4, c.max_frames - 4)).within(1e-5));
  EXPECT_TRUE(compare_tensors(mixed.narrow(1, 0, 4), (vu + 3.0 * (vc - vu)).narrow(1, 0, 4)).within(1e-5));

  // An interval no level reaches costs one pass per step and equals no guidance; [0, 1] is plain CFG.
  auto outside = teacher_options();
  outside.guidance = 3.0;
  outside.guidance_interval = {0.01, 0.02};
  auto none = teacher_options();
  StreamDiTSampler a(random_model(), outside), b(random_model(), none);
  a.set_prompt("red circle moving left");
  b.set_prompt("red circle moving left");
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(compare_tensors(a.step(), b.step()).within(1e-6));
  EXPECT_EQ(a.nfe(), b.nfe());
  auto whole = teacher_options();
  whole.guidance = 3.0;
  whole.guidance_interval = {0.0, 1.0};
  auto plain = teacher_options();
  plain.guidance = 3.0;
  StreamDiTSampler d(random_model(), whole), e(random_model(), plain);
  d.set_prompt("red circle moving left");
  e.set_prompt("red circle moving left");
  EXPECT_TRUE(torch::equal(d.step(), e.step()));
  EXPECT_EQ(d.nfe(), e.nfe());

  auto bad = teacher_options();
  bad.guidance_interval = {0.6, 0.4};
  test::expect_error_mentions([&] { StreamDiTSampler(random_model(), bad); }, "guidance interval");
}

TEST(StreamDiTSampler, GuidanceThatKeepsTheMeanOrRescalesChangesOnlyWhatItSays) {
  const auto vc = torch::randn({2, 3, 4, 5, 6}), vu = torch::randn({2, 3, 4, 5, 6});
  auto w = torch::full({2, 3, 1, 1, 1}, 4.0);
  w.index_put_({0, 1}, 1.0);  // one frame outside the guidance
  const auto plain = combine_guidance(vc, vu, w);
  EXPECT_TRUE(compare_tensors(plain, vu + w * (vc - vu)).within(1e-6));

  // keep_mean: every frame's per-channel mean is the conditional one's; the rest is plain CFG's.
  const auto kept = combine_guidance(vc, vu, w, {true, 0});
  EXPECT_TRUE(compare_tensors(kept.mean({3, 4}), vc.mean({3, 4})).within(1e-5));
  EXPECT_TRUE(compare_tensors(kept - kept.mean({3, 4}, true), plain - plain.mean({3, 4}, true)).within(1e-5));
  EXPECT_FALSE(compare_tensors(kept, plain).within(1e-3));

  // rescale 1: every frame's spread is the conditional one's; 0.5 lies halfway.
  const auto spread = [](const torch::Tensor& v) { return v.std({2, 3, 4}); };
  const auto rescaled = combine_guidance(vc, vu, w, {false, 1.0});
  EXPECT_TRUE(compare_tensors(spread(rescaled), spread(vc)).within(1e-5));
  const auto half = combine_guidance(vc, vu, w, {false, 0.5});
  EXPECT_TRUE(compare_tensors(half, 0.5 * (rescaled + plain)).within(1e-5));

  // A frame with w = 1 is the conditional velocity in every form.
  for (const auto& form : {GuidanceForm{true, 0}, GuidanceForm{false, 1.0}, GuidanceForm{true, 0.7}})
    EXPECT_TRUE(compare_tensors(combine_guidance(vc, vu, w, form)[0][1], vc[0][1]).within(1e-5));

  // The sampler passes its form on, and refuses a share outside [0, 1].
  auto o = teacher_options();
  o.guidance = 3.0;
  o.guidance_form.keep_mean = true;
  StreamDiTSampler a(random_model(), o);
  auto plain_options = teacher_options();
  plain_options.guidance = 3.0;
  StreamDiTSampler p(random_model(), plain_options);
  a.set_prompt("red circle moving left");
  p.set_prompt("red circle moving left");
  EXPECT_FALSE(compare_tensors(a.step(), p.step()).within(1e-4));
  auto bad = teacher_options();
  bad.guidance_form.rescale = 1.5;
  test::expect_error_mentions([&] { StreamDiTSampler(random_model(), bad); }, "rescale");
}

TEST(StreamDiTSampler, PromptChangesTakeEffectAtTheNextStep) {
  StreamDiTSampler a(random_model(), teacher_options()), b(random_model(), teacher_options());
  a.set_prompt("red circle moving left");
  b.set_prompt("red circle moving left");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(a.step(), b.step()));
  b.set_prompt("green triangle moving down");
  EXPECT_EQ(b.prompt(), "green triangle moving down");
  EXPECT_FALSE(torch::equal(a.step(), b.step()));
}

TEST(StreamDiTSampler, ChangeGuidanceGuidesTheNStepsAfterAPromptChange) {
  auto o = teacher_options();
  o.micro_steps = 1;
  o.change_guidance = 3.0;
  StreamDiTSampler changed(random_model(), o);
  o.change_guidance = 0;
  StreamDiTSampler plain(random_model(), o);
  for (auto* s : {&changed, &plain}) s->set_prompt("red circle moving left");
  // The prompt a stream starts with is no change: one pass per step, the plain stream's frames.
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(changed.step(), plain.step()));
  EXPECT_EQ(changed.nfe(), plain.nfe());
  EXPECT_EQ(changed.loop_guidance(), 1.0);
  // A change: N = 8 steps of CFG pairs (from the same buffer, other frames than the plain stream's),
  // then one pass again; the same prompt given again is no change.
  for (auto* s : {&changed, &plain}) s->set_prompt("green triangle moving down");
  auto n = changed.nfe();
  EXPECT_FALSE(compare_tensors(changed.step(), plain.step()).within(1e-4));
  for (int i = 1; i < 8; ++i) {
    EXPECT_EQ(changed.loop_guidance(), 3.0) << "step " << i;
    changed.step();
  }
  EXPECT_EQ(changed.nfe() - n, 2 * 8);
  EXPECT_EQ(changed.loop_guidance(), 1.0);
  changed.set_prompt("green triangle moving down");
  n = changed.nfe();
  changed.step();
  EXPECT_EQ(changed.nfe() - n, 1);
  o.change_guidance = 3.0;
  EXPECT_EQ(describe_guidance(o), "1 (after a prompt change 3)");
  EXPECT_EQ(passes_per_step(o), 2);
  o.change_guidance = -1;
  test::expect_error_mentions([&] { StreamDiTSampler(random_model(), o); }, "after a prompt change");
}

TEST(StreamDiTSampler, ReferenceFramesAreEmittedFirstAndStayClean) {
  auto o = teacher_options();
  o.reference_frames = 2;
  o.chunk_frames = 2;  // B = 16 = 2 + 7 * 2
  StreamDiTSampler s(random_model(), o);
  const auto refs = s.start();
  ASSERT_EQ(refs.size(0), 2);
  EXPECT_TRUE(torch::equal(refs, s.buffer()[0].narrow(0, 0, 2)));
  const auto out = s.step();
  // The emitted chunk becomes the references.
  EXPECT_TRUE(torch::equal(out, s.buffer()[0].narrow(0, 0, 2)));
}

TEST(StreamDiTSampler, NoiseScaleScalesEveryNoiseThatEnters) {
  // At zero velocity the buffer is the noise itself: a scale of 0.5 halves the start and every new chunk.
  auto o = teacher_options();
  StreamDiTSampler plain(StreamDiT(small_config()), o);
  o.noise_scale = 0.5;
  StreamDiTSampler cool(StreamDiT(small_config()), o);
  plain.start();
  cool.start();
  EXPECT_TRUE(compare_tensors(cool.buffer(), 0.5 * plain.buffer()).within(1e-6));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(compare_tensors(cool.step(), 0.5 * plain.step()).within(1e-6));
  EXPECT_TRUE(compare_tensors(cool.buffer(), 0.5 * plain.buffer()).within(1e-6));
}

TEST(StreamDiTSampler, VideoToVideoKeepsTheChunksAboveTheEntryLevel) {
  // Spec §8 with N = 8: σ = 0.5 -> m0 = 4, N_eff = 4, B_eff = 8, τ_in = 1/2; σ = 0.3 -> m0 = 6.
  auto o = teacher_options();
  o.strength = 0.5;
  StreamDiTSampler half(random_model(), o);
  EXPECT_EQ(half.start_frames(), 8);
  EXPECT_DOUBLE_EQ(half.entry_level(), 0.5);
  EXPECT_EQ(half.levels(0), (std::vector<double>{7 / 8., 7 / 8., 6 / 8., 6 / 8., 5 / 8., 5 / 8., 4 / 8., 4 / 8.}));
  EXPECT_DOUBLE_EQ(half.levels(3)[6], 4 / 8. + 3 / 32.);
  o.strength = 0.3;
  StreamDiTSampler low(random_model(), o);
  EXPECT_EQ(low.start_frames(), 4);
  EXPECT_DOUBLE_EQ(low.entry_level(), 0.75);
  o.strength = 0.01;
  EXPECT_THROW(StreamDiTSampler(random_model(), o), Error);  // keeps no chunk
  o.strength = 1.5;
  EXPECT_THROW(StreamDiTSampler(random_model(), o), Error);
}

TEST(StreamDiTSampler, VideoToVideoInputsLeaveAtTheirLevelAfterNEffSteps) {
  // At zero velocity (a fresh adaLN-Zero model) a frame keeps the value it entered with, so two
  // runs with the same noise and different input videos differ by exactly level × (input change):
  // chunk i of the start sits at (N − 1 − i)/N; a chunk fed at step j enters at τ_in and leaves at
  // step j + N_eff.
  auto o = teacher_options();
  o.strength = 0.5;
  torch::manual_seed(5);
  const auto video_a = torch::rand({24, 3, 16, 16}) * 2 - 1, video_b = torch::rand({24, 3, 16, 16}) * 2 - 1;
  StreamDiTSampler a(StreamDiT(small_config()), o), b(StreamDiT(small_config()), o);
  a.start(video_a.narrow(0, 0, 8));
  b.start(video_b.narrow(0, 0, 8));
  EXPECT_EQ(a.init_nfe(), 0);
  for (std::int64_t i = 0; i < 8; ++i) {  // step i feeds chunk 4 + i and emits chunk i
    const auto out_a = a.step(video_a.narrow(0, 8 + 2 * i, 2)), out_b = b.step(video_b.narrow(0, 8 + 2 * i, 2));
    const double level = i < 4 ? (7.0 - static_cast<double>(i)) / 8.0 : 0.5;
    const auto want = level * (video_a.narrow(0, 2 * i, 2) - video_b.narrow(0, 2 * i, 2));
    EXPECT_TRUE(compare_tensors(out_a - out_b, want).within(1e-5)) << "step " << i;
  }
  EXPECT_EQ(a.chunks_emitted(), 8);
  EXPECT_THROW(a.step(), Error);                                     // video-to-video needs input
  EXPECT_THROW(a.step(torch::zeros({3, 3, 16, 16})), Error);         // c = 2 frames
  EXPECT_THROW(a.step(torch::zeros({2, 3, 8, 16})), Error);          // wrong size
  StreamDiTSampler fresh(StreamDiT(small_config()), o);
  EXPECT_THROW(fresh.start(), Error);                                // T2V start in V2V mode
  EXPECT_THROW(fresh.step(video_a.narrow(0, 0, 2)), Error);          // not started
  EXPECT_THROW(fresh.start(video_a.narrow(0, 0, 6)), Error);         // needs 8 frames
}

TEST(DiTStream, WritesTheRequestedFramesAndAppliesScheduledPrompts) {
  StreamDiTSampler sampler(random_model(), teacher_options());
  sampler.set_prompt("red circle moving left");
  struct Collect : FrameSink {
    std::vector<torch::Tensor> frames;
    void write(const torch::Tensor& f) override { frames.push_back(f.clone()); }
    void close() override {}
    std::string description() const override { return "memory"; }
  } sink;
  DiTStreamOptions o;
  o.frames = 9;  // not a multiple of c: the last chunk is cut
  o.prompt_changes = {parse_prompt_change("4:blue square moving up")};
  o.output_width = o.output_height = 32;
  const auto stats = run_dit_stream(sampler, sink, o);
  EXPECT_EQ(stats.frames, 9);
  ASSERT_EQ(sink.frames.size(), 9u);
  EXPECT_EQ(sink.frames[0].sizes(), (std::vector<std::int64_t>{3, 32, 32}));
  EXPECT_EQ(sink.frames[0].scalar_type(), torch::kUInt8);
  EXPECT_EQ(stats.chunks, 5);
  EXPECT_EQ(sampler.prompt(), "blue square moving up");
  // The output rate counts the 7 frames after the first chunk over the time after the first frame.
  EXPECT_NEAR(stats.fps, 7.0 / (stats.seconds - stats.first_frame_s), 1e-6 * stats.fps);
  // A stream one chunk long has no steady rate, only its overall one (it printed thousands of FPS).
  StreamDiTSampler one_chunk(random_model(), teacher_options());
  o.frames = 2;
  o.prompt_changes.clear();
  const auto short_stats = run_dit_stream(one_chunk, sink, o);
  EXPECT_NEAR(short_stats.fps, 2.0 / short_stats.seconds, 1e-6 * short_stats.fps);
  EXPECT_THROW(parse_prompt_change("x:blue"), Error);
  EXPECT_THROW(parse_prompt_change("blue"), Error);
}

// ---- training --------------------------------------------------------------------------------
TEST(DiTStream, VideoToVideoBringsOutEveryInputFrameAndStopsWithTheInput) {
  struct Frames : FrameSource {
    std::int64_t left;
    explicit Frames(std::int64_t n) : left(n) { info_.spec = "test frames"; }
    std::optional<VideoFrame> next() override {
      if (left == 0) return std::nullopt;
      --left;
      return VideoFrame{torch::randint(0, 256, {3, 24, 30}, torch::kUInt8), 0, 0};
    }
  };
  struct Count : FrameSink {
    std::int64_t frames = 0;
    void write(const torch::Tensor&) override { ++frames; }
    void close() override {}
    std::string description() const override { return "count"; }
  };
  auto o = teacher_options();
  o.strength = 0.5;  // N_eff = 4 chunks of 2: 8 frames in flight
  for (const auto& [input, limit, want] : std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t>>{
           {13, -1, 13}, {13, 5, 5}, {3, -1, 3}, {40, 20, 20}}) {
    StreamDiTSampler sampler(random_model(), o);
    Frames source(input);
    Count sink;
    DiTStreamOptions so;
    so.frames = limit;
    so.input = &source;
    const auto stats = run_dit_stream(sampler, sink, so);
    EXPECT_EQ(sink.frames, want) << input << " frames in, limit " << limit;
    EXPECT_EQ(stats.chunks, (want + 1) / 2) << input << " frames in, limit " << limit;
  }
  StreamDiTSampler sampler(random_model(), o);
  Count sink;
  EXPECT_THROW(run_dit_stream(sampler, sink, {}), Error);  // no input
  Frames empty(0);
  DiTStreamOptions so;
  so.input = &empty;
  EXPECT_THROW(run_dit_stream(sampler, sink, so), Error);
}

TEST(DiTTrainer, LearningRateWarmsUpThenDecays) {
  DiTTrainOptions o;
  o.steps = 100;
  o.warmup = 10;
  o.lr = 1e-3;
  EXPECT_NEAR(learning_rate_at(o, 0), 1e-4, 1e-12);
  EXPECT_NEAR(learning_rate_at(o, 9), 1e-3, 1e-12);
  EXPECT_NEAR(learning_rate_at(o, 99), 1e-4, 1e-6);
  EXPECT_GT(learning_rate_at(o, 40), learning_rate_at(o, 60));
}

// Clips of 16 frames of 16x16 procedural shapes: small_config()'s buffer.
ProceduralClipSource small_clip_source() {
  ProceduralVideoOptions video;
  video.width = video.height = 16;
  video.min_radius = 2;
  video.max_radius = 4;
  return ProceduralClipSource(video, 16);
}

TEST(DiTTrainer, BatchesFollowTheRecipe) {
  StreamDiT model(small_config());
  FlowMatchingRecipe recipe;
  recipe.reference_frames = 0;
  recipe.text_dropout = 0.5;
  auto source = small_clip_source();
  std::mt19937_64 rng(1);
  auto gen = at::detail::createCPUGenerator(2);
  const auto clips = source.next(64, rng);
  const auto fm = make_flow_matching_batch(clips, model->tokenizer, recipe, rng, gen);
  std::int64_t nulls = 0;
  for (std::int64_t i = 0; i < 64; ++i) {
    const auto c = fm.chunk_sizes[static_cast<std::size_t>(i)];
    const auto n = 16 / c;
    for (std::int64_t f = 0; f < 16; ++f) {
      const double k = static_cast<double>(f / c), tau = fm.tau[i][f].item<double>();
      EXPECT_GE(tau, (n - 1 - k) / n - 1e-6);
      EXPECT_LE(tau, (n - k) / n + 1e-6);
      if (f % c != 0) {
        EXPECT_EQ(tau, fm.tau[i][f - 1].item<double>());  // one level per chunk
      }
    }
    nulls += fm.tokens[i].eq(CaptionTokenizer::kPad).all().item<bool>();
  }
  EXPECT_GT(nulls, 15);
  EXPECT_LT(nulls, 49);
  // X_τ and V are the interpolant and the velocity of one noise tensor.
  const auto x0 = (clips.video - fm.target) / (1 - kFlowSigmaMin);
  EXPECT_TRUE(compare_tensors(flow_interpolate(clips.video, x0, fm.tau), fm.noisy).within(1e-5));
}

TEST(DiTTrainer, ForegroundWeightsFavourTheObjectsAndKeepEachFramesMean) {
  // Two clips of 3 frames, 2 channels, 8x8: a flat background with a 2x2 object moving right; the
  // second clip's background is another colour, so each clip is weighed against its own.
  auto x1 = torch::zeros({2, 3, 2, 8, 8});
  x1[1].select(1, 0).fill_(-0.5);
  for (std::int64_t f = 0; f < 3; ++f) x1.narrow(1, f, 1).narrow(3, 3, 2).narrow(4, f, 2).fill_(0.8);
  const auto w = foreground_loss_weight(x1, 3.0);
  ASSERT_EQ(w.sizes(), torch::IntArrayRef({2, 3, 1, 8, 8}));
  EXPECT_TRUE(compare_tensors(w.mean({3, 4}), torch::ones({2, 3, 1})).within(1e-6));
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t f = 0; f < 3; ++f) {
      const auto on = w[b][f][0][3][f].item<float>(), off = w[b][f][0][0][0].item<float>();
      // 4 of 64 positions carry the object: w = (1 + λ·16) / mean and (1 + 0) / mean, mean = 1 + λ.
      EXPECT_NEAR(on, (1 + 3.0 * 16) / 4.0, 1e-4) << b << "," << f;
      EXPECT_NEAR(off, 1 / 4.0, 1e-5) << b << "," << f;
    }
  // A flat clip, and λ = 0, weigh every position the same.
  EXPECT_TRUE(compare_tensors(foreground_loss_weight(torch::full({1, 2, 2, 4, 4}, 0.3), 3.0), torch::ones({1, 2, 1, 4, 4})).within(1e-6));
  EXPECT_TRUE(compare_tensors(foreground_loss_weight(x1, 0.0), torch::ones({2, 3, 1, 8, 8})).within(1e-6));
  EXPECT_THROW(foreground_loss_weight(x1, -1.0), Error);
  EXPECT_THROW(foreground_loss_weight(x1[0], 1.0), Error);

  // The loss with weights: uniform weights change nothing; the batch carries weights only when asked.
  const auto prediction = torch::randn({2, 3, 2, 8, 8}), target = torch::randn({2, 3, 2, 8, 8});
  const auto mask = torch::tensor({{1.f, 1.f, 0.f}, {1.f, 1.f, 1.f}});
  EXPECT_NEAR(masked_flow_loss(prediction, target, mask, torch::ones({2, 3, 1, 8, 8})).item<double>(),
              masked_flow_loss(prediction, target, mask).item<double>(), 1e-6);
  const auto weighted = masked_flow_loss(prediction, target, mask, w).item<double>();
  const auto by_hand = ((prediction - target).pow(2) * w).flatten(2).mean(2).mul(mask).sum().item<double>() / 5.0;
  EXPECT_NEAR(weighted, by_hand, 1e-5);

  StreamDiT model(small_config());
  FlowMatchingRecipe recipe;
  auto source = small_clip_source();
  std::mt19937_64 rng(1);
  auto gen = at::detail::createCPUGenerator(2);
  const auto clips = source.next(4, rng);
  EXPECT_FALSE(make_flow_matching_batch(clips, model->tokenizer, recipe, rng, gen).loss_weight.defined());
  recipe.foreground_weight = 2.0;
  const auto fm = make_flow_matching_batch(clips, model->tokenizer, recipe, rng, gen);
  ASSERT_TRUE(fm.loss_weight.defined());
  EXPECT_TRUE(compare_tensors(fm.loss_weight, foreground_loss_weight(clips.video, 2.0)).within(1e-6));
  // The trainer's batches, made example by example and joined, carry theirs too.
  EXPECT_EQ(seeded_flow_matching_batch(source, model->tokenizer, recipe, 0, 0, 0, 0, 3).loss_weight.size(0), 3);
}

// A fresh width-64 model and one clip with one noise and one τ draw: the overfitting runs' setup.
struct OneClip {
  StreamDiT model{nullptr};
  FlowMatchingBatch fm;
};
OneClip one_clip(double min_radius, double max_radius) {
  torch::manual_seed(0);
  auto config = small_config();
  config.hidden_size = 64;
  OneClip o{StreamDiT(config), {}};
  ProceduralVideoOptions video;
  video.width = video.height = 16;
  video.min_radius = min_radius;
  video.max_radius = max_radius;
  std::mt19937_64 rng(3);
  auto gen = at::detail::createCPUGenerator(4);
  const auto clips = ProceduralClipSource(video, 16).next(1, rng);
  FlowMatchingRecipe recipe;
  recipe.text_dropout = 0;
  o.fm = make_flow_matching_batch(clips, o.model->tokenizer, recipe, rng, gen);
  return o;
}

TEST(DiTTrainer, OverfitsOneClip) {
  // One clip, one noise draw, one τ draw: the mapping is deterministic and a small model must
  // memorise it within a few hundred steps (measured: 1.69 -> 0.003 after 150 steps).
  auto [model, fm] = one_clip(2, 4);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(2e-3).weight_decay(0));
  double first = 0, last = 0;
  for (int step = 0; step < 200; ++step) {
    opt.zero_grad();
    const auto loss = masked_flow_loss(model->forward(fm.noisy, fm.tau, model->encode_text(fm.tokens)), fm.target, fm.loss_mask);
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_GT(first, 1.0);
  EXPECT_LT(last, 0.01 * first) << "first " << first << " last " << last;
}

TEST(DiTTrainer, Bf16AutocastTrainsWithFp32WeightsAndMatchesFp32) {
  // The same overfitting run under bf16 autocast: its forward stays within bf16 accuracy of the
  // fp32 forward, gradients and weights stay fp32, and it still memorises the clip.
  auto [model, fm] = one_clip(ProceduralVideoOptions{}.min_radius, ProceduralVideoOptions{}.max_radius);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(2e-3).weight_decay(0));
  double first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    opt.zero_grad();
    // At step 20, before the autocast pass records its graph: the fp32 forward, and the fp32 forward
    // on the bf16-rounded weights and inputs autocast gives its linear layers (rounded in place and
    // restored, which the graph of a later pass would not allow).
    torch::Tensor reference, on_rounded;
    if (step == 20) {
      torch::NoGradGuard no_grad;
      reference = model->forward(fm.noisy, fm.tau, model->encode_text(fm.tokens));
      const test::ScopedRoundedParameters rounded(*model);
      on_rounded = model->forward(test::round_to(fm.noisy), fm.tau, model->encode_text(fm.tokens));
    }
    torch::Tensor prediction;
    {
      const ScopedCpuAutocast autocast(true);
      prediction = model->forward(fm.noisy, fm.tau, model->encode_text(fm.tokens));
    }
    if (step == 20) {
      EXPECT_EQ(prediction.scalar_type(), torch::kBFloat16);  // the final linear ran in bf16
      const test::Bf16Bound bound{compare_tensors(on_rounded, reference).rel, test::reduction_error(test::widest_reduction(*model))};
      const auto d = compare_tensors(prediction.to(torch::kFloat32), reference);
      EXPECT_TRUE(d.within(bound.tol())) << "bf16 rel " << d.rel << ", " << bound.describe();
    }
    const auto loss = masked_flow_loss(prediction.to(torch::kFloat32), fm.target, fm.loss_mask);
    loss.backward();
    for (const auto& p : model->parameters()) ASSERT_EQ(p.grad().scalar_type(), torch::kFloat32);
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  for (const auto& p : model->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat32);
  EXPECT_LT(last, 0.05 * first) << "first " << first << " last " << last;
  // Autocast is off again outside the scope.
  EXPECT_EQ(model->forward(fm.noisy, fm.tau, model->encode_text(fm.tokens)).scalar_type(), torch::kFloat32);
}

TEST(DiTTrainer, ResumedRunFollowsTheSameCurve) {
  auto config = small_config();
  auto data = test::tiny_clip_source();
  DiTTrainOptions o;
  o.steps = 6;
  o.batch = 2;
  o.warmup = 2;
  o.lr = 1e-3;
  o.checkpoint_every = 3;
  o.seed = 5;
  test::TempDir straight, split;
  test::expect_resumed_run_follows_the_same_curve(
      o, [&](const auto& run, const auto& on_step) { train_stream_dit(config, data, run, on_step); },
      straight.path(), split.path(), /*interrupt_at=*/4, /*last_checkpoint=*/3);
  // The loss log has one row per step, none duplicated by the resume.
  std::ifstream log(split / "loss.csv");
  std::string line;
  int rows = -1;
  while (std::getline(log, line)) ++rows;
  EXPECT_EQ(rows, 6);
  // The EMA weights load as a model.
  EXPECT_NO_THROW(load_stream_dit(split.path()));
}

TEST(DiTTrainer, FineTuningStartsFromTheGivenModelsWeights) {
  auto config = small_config();
  auto data = test::tiny_clip_source();
  DiTTrainOptions o;
  o.steps = 2;
  o.batch = 2;
  o.warmup = 0;
  o.lr = 1e-3;
  o.seed = 5;
  test::TempDir first, tuned, other;
  o.out = first.path();
  train_stream_dit(config, data, o);

  // With lr 0 the fine-tuned run's weights stay the starting model's (a fresh run of seed 6 would not).
  auto f = o;
  f.out = tuned.path();
  f.init_from = first.path();
  f.seed = 6;
  f.lr = 0.0;
  train_stream_dit(config, data, f);
  auto start = load_stream_dit(first.path()), after = load_stream_dit(tuned.path());
  const auto expected = start->named_parameters();
  for (const auto& p : after->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), expected[p.key()])) << p.key();
  const auto state = read_json_file(tuned / "training" / "state.json");
  EXPECT_NE(state.dump().find(first.path().string()), std::string::npos) << state.dump();

  // A fine-tune may move the model to another procedural world; the run's config says which.
  auto wrapped = config;
  wrapped.procedural_edges = EdgeRule::Wrap;
  test::TempDir moved;
  f.out = moved.path();
  train_stream_dit(wrapped, data, f);
  EXPECT_EQ(load_stream_dit(moved.path())->config.procedural_edges, EdgeRule::Wrap);

  // ... or add the anchor: the new anchor path starts at zero, so the model predicts as it did.
  auto anchored = config;
  anchored.anchor = true;
  test::TempDir with_anchor;
  f.out = with_anchor.path();
  AnchoredClipSource anchored_data(std::make_unique<ProceduralClipSource>(data.options(), 32), 16, 16, 1);
  train_stream_dit(anchored, anchored_data, f);
  auto tuned_anchored = load_stream_dit(with_anchor.path());
  ASSERT_TRUE(tuned_anchored->config.anchor);
  {
    torch::NoGradGuard no_grad;
    torch::manual_seed(2);
    const auto x = torch::randn({1, 16, 3, 16, 16}), tau = torch::rand({1, 16}), anchor = torch::randn({1, 3, 16, 16});
    const auto tokens = start->tokenizer.encode_batch({"red circle moving left"});
    EXPECT_TRUE(compare_tensors(tuned_anchored->forward(x, tau, tuned_anchored->encode_text(tokens), anchor),
                                start->forward(x, tau, start->encode_text(tokens)))
                    .within(1e-6));
  }

  // A starting model of another config is refused with its folder named.
  auto wider = config;
  wider.hidden_size *= 2;
  f.out = other.path();
  try {
    train_stream_dit(wider, data, f);
    ADD_FAILURE() << "a model of another config was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(first.path().string()), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace streamgen

#include "streamgen/image_tensor.h"
#include "streamgen/media.h"

namespace streamgen {
namespace {

// Procedural clips under captions that name no palette word.
class UnpaletteClipSource : public ClipSource {
 public:
  ClipBatch next(std::int64_t batch, std::mt19937_64& rng) override {
    auto clips = inner_.next(batch, rng);
    for (auto& c : clips.captions) c = "something moving";
    return clips;
  }
  std::string describe() const override { return "unpalette"; }

 private:
  ProceduralClipSource inner_ = test::tiny_clip_source();
};

TEST(DiTTrainer, CaptionProbesMeasureTheSameFramesUnderAlteredCaptions) {
  auto model = test::random_tiny_dit(5, 0.05);
  auto source = test::tiny_clip_source();
  const auto r = evaluate_flow_loss(model, source, FlowMatchingRecipe{}, 3, 4, 99);
  std::vector<std::string> names;
  for (const auto& p : r.caption_probes) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"as given", "no caption", "colour swapped", "shape swapped", "direction swapped"}));
  // "As given" is the held-out loss over the τ buckets below the probe bound, weighted by their frames.
  double sum = 0, frames = 0;
  for (std::size_t i = 0; i < 5; ++i) sum += r.by_tau_bucket[i] * static_cast<double>(r.frames_per_bucket[i]), frames += static_cast<double>(r.frames_per_bucket[i]);
  ASSERT_GT(frames, 0);
  EXPECT_NEAR(r.caption_probes[0].loss, sum / frames, 1e-6 * sum / frames);
  EXPECT_EQ(r.caption_probes[0].gap, 0.0);
  // This random model reads its caption, so a lie changes its loss; the gap is relative to "as given".
  for (std::size_t i = 1; i < r.caption_probes.size(); ++i) {
    const auto& p = r.caption_probes[i];
    EXPECT_TRUE(std::isfinite(p.loss)) << p.name;
    EXPECT_NE(p.loss, r.caption_probes[0].loss) << p.name;
    EXPECT_NEAR(p.gap, p.loss / r.caption_probes[0].loss - 1, 1e-12) << p.name;
  }
  // Captions without palette words: swapping an attribute would change nothing, so only dropping is probed.
  UnpaletteClipSource plain;
  names.clear();
  for (const auto& p : evaluate_flow_loss(model, plain, FlowMatchingRecipe{}, 1, 4, 99).caption_probes) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"as given", "no caption"}));
}

TEST(DiTTrainer, VideoFolderSourceCutsCaptionedClips) {
  test::TempDir dir;
  std::mt19937_64 rng(1);
  for (const char* name : {"red_ball.mp4", "other.mkv"}) {
    SinkOptions so;
    so.fps = 8;
    auto sink = open_sink((dir / name).string(), so);
    const auto clip = make_procedural_clip(ProceduralVideoOptions{}, 12, rng);
    const auto u8 = unit_range_to_image_u8(clip.frames);
    for (std::int64_t f = 0; f < 12; ++f) sink->write(u8[f]);
    sink->close();
  }
  test::write_bytes(dir / "other.txt", "Green square, slowly\n");
  test::write_bytes(dir / "notes.md", "not a video");
  VideoFolderClipSource source(dir.path(), 8, 16, 16);
  EXPECT_EQ(source.videos(), 2u);
  std::mt19937_64 pick(2);
  const auto batch = source.next(6, pick);
  EXPECT_EQ(batch.video.sizes(), (std::vector<std::int64_t>{6, 8, 3, 16, 16}));
  EXPECT_GE(batch.video.min().item<float>(), -1.f);
  for (const auto& c : batch.captions) EXPECT_TRUE(c == "red ball" || c == "Green square, slowly") << c;
  EXPECT_EQ(source.caption_words(), (std::vector<std::string>{"ball", "green", "red", "slowly", "square"}));
  EXPECT_EQ(source.longest_caption(), 3);
  EXPECT_THROW(VideoFolderClipSource(dir.path(), 40, 16, 16), Error);  // no video is long enough
  EXPECT_THROW(VideoFolderClipSource(dir / "missing", 8, 16, 16), Error);
}

}  // namespace
}  // namespace streamgen
