// StreamDiT multistep distillation (spec §12): segment-start states, the teacher's target as the
// sampler's own micro steps, the student learning the segments, its one-NFE-per-chunk stream, and
// resuming a run.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>

#include "streamgen/dit_distill.h"
#include "streamgen/error.h"
#include "streamgen/stream_dit.h"
#include "streamgen/tensor_compare.h"
#include "dit_test_util.h"
#include "test_util.h"

namespace streamgen {
namespace {


// A started teacher stream (c = 2) for "a red circle moving left".
std::unique_ptr<StreamDiTSampler> started_stream(StreamDiT teacher, std::int64_t micro_steps, double guidance, std::uint64_t seed,
                                                 const GuidanceForm& form = {}) {
  StreamDiTOptions o;
  o.guidance_form = form;
  o.chunk_frames = 2;
  o.micro_steps = micro_steps;
  o.guidance = guidance;
  o.seed = seed;
  auto stream = std::make_unique<StreamDiTSampler>(std::move(teacher), o);
  stream->set_prompt("a red circle moving left");
  stream->start();
  return stream;
}

DistillRecipe recipe(std::int64_t teacher_steps = 4, std::int64_t student_steps = 1, double guidance = 3.0) {
  DistillRecipe r;
  r.chunk_frames = 2;
  r.teacher_steps = teacher_steps;
  r.student_steps = student_steps;
  r.guidance = guidance;
  return r;
}

TEST(DiTDistill, StartStatesSitOnStudentStepBoundaries) {
  auto data = test::tiny_clip_source();
  auto r = recipe(4, 2);
  r.reference_frames = 2;  // N = 7 chunks of 2 after 2 references
  r.staggered_share = 0.5;
  StreamDiT model(test::tiny_dit_config());
  std::mt19937_64 rng(3);
  auto noise = at::detail::createCPUGenerator(4);
  const auto clips = data.next(64, rng);
  const auto batch = make_distill_batch(clips, model, r, rng, noise);
  const double n = 7, steps = 14;  // N·s_S student steps over the flow
  std::int64_t staggered = 0;
  for (std::int64_t i = 0; i < 64; ++i) {
    const auto tau = batch.tau[i];
    if (batch.staggered[static_cast<std::size_t>(i)]) {
      ++staggered;
      EXPECT_EQ(tau[0].item<double>(), 1.0);
      EXPECT_EQ(batch.moving[i][1].item<float>(), 0.f);  // references never move
      const double j = std::round((tau[2].item<double>() - (n - 1) / n) * steps);
      EXPECT_TRUE(j == 0 || j == 1) << j;
      for (std::int64_t f = 2; f < 16; ++f) {
        const double k = static_cast<double>((f - 2) / 2);
        EXPECT_NEAR(tau[f].item<double>(), (n - 1 - k) / n + j / steps, 1e-6) << "example " << i << " slot " << f;
        EXPECT_EQ(batch.moving[i][f].item<float>(), 1.f);
      }
    } else {
      const double m = tau[0].item<double>() * steps;
      EXPECT_NEAR(m, std::round(m), 1e-4);  // the stream's uniform T2V levels, references included
      EXPECT_TRUE(tau.eq(tau[0]).all().item<bool>());
      EXPECT_TRUE(batch.moving[i].eq(1).all().item<bool>());
    }
  }
  EXPECT_GT(staggered, 16);
  EXPECT_LT(staggered, 48);
  // Captions are never dropped: the student is conditional only.
  for (std::int64_t i = 0; i < 64; ++i) EXPECT_FALSE(batch.tokens[i].eq(CaptionTokenizer::kPad).all().item<bool>());
}

TEST(DiTDistill, TeacherTargetIsWhatTheStreamingSamplerDoesInOneStep) {
  // The target must be the sampler's own guided micro steps: start a teacher stream, take its
  // buffer as X_start, and compare the teacher's segment end with what one step() emits and keeps;
  // on the linear schedule and under a time shift (unequal steps per chunk).
  // Also for guidance that keeps each frame's mean: the form reaches the teacher's passes.
  struct Case {
    double shift;
    bool keep_mean;
  };
  for (const auto [shift, keep_mean] : {Case{1.0, false}, Case{3.0, false}, Case{1.0, true}}) {
  SCOPED_TRACE(fmt::format("shift {} keep_mean {}", shift, keep_mean));
  const GuidanceForm form{keep_mean, 0};
  auto teacher = test::random_tiny_dit(2, 0.1);
  teacher->config.time_shift = shift;
  auto stream = started_stream(teacher, 4, 3.0, 11, form);
  auto r = recipe(4, 1, 3.0);
  r.guidance_form = form;
  auto& sampler = *stream;
  DistillBatch batch;
  batch.start = sampler.buffer().clone();
  const auto levels = sampler.levels(0);
  batch.tau = torch::tensor(levels, torch::kFloat32).view({1, 16});
  batch.moving = torch::ones({1, 16});
  batch.tokens = teacher->tokenizer.encode_batch({"a red circle moving left"});
  batch.guidance = torch::full({1}, 3.0);
  batch.staggered = {true};
  auto t = teacher;
  const auto end = teacher_segment_end(t, batch, r, 16);
  const auto emitted = sampler.step();
  const auto kept = sampler.buffer().narrow(1, 0, 14);
  EXPECT_TRUE(compare_tensors(end.narrow(1, 0, 2)[0], emitted).within(1e-5)) << compare_tensors(end.narrow(1, 0, 2)[0], emitted).rel;
  EXPECT_TRUE(compare_tensors(end.narrow(1, 2, 14), kept).within(1e-5));
  // One undistilled step lands elsewhere: the test would pass vacuously if it did not.
  const auto one = one_step_segment_end(t, batch, r, 16);
  EXPECT_GT(segment_endpoint_error(one, end, batch), 0.05);
  // The student's one step is the sampler's s = 1 step: Δτ per frame = levels(1) − levels(0).
  const auto dtau = student_step_sizes(batch, r, 16, shift);
  for (std::int64_t f = 0; f < 16; ++f) {
    const double expected = shifted_time((7.0 - static_cast<double>(f / 2) + 1.0) / 8, shift) - levels[static_cast<std::size_t>(f)];
    EXPECT_NEAR(dtau[0][f].item<double>(), expected, 1e-6) << "slot " << f;
  }
  }
}

TEST(DiTDistill, AGuidanceRangeGivesEachExampleItsOwnScale) {
  auto data = test::tiny_clip_source();
  auto teacher = test::random_tiny_dit(4, 0.1);
  auto r = recipe(2, 1, 1.5);
  r.guidance_high = 4.0;
  std::mt19937_64 rng(8);
  auto noise = at::detail::createCPUGenerator(9);
  const auto batch = make_distill_batch(data.next(3, rng), teacher, r, rng, noise);
  EXPECT_TRUE(batch.guidance.ge(1.5).all().item<bool>() && batch.guidance.le(4.0).all().item<bool>()) << batch.guidance;
  EXPECT_GT((batch.guidance.max() - batch.guidance.min()).item<double>(), 0.1) << batch.guidance;
  // Each example's end is what the teacher does with that example's scale alone.
  const auto end = teacher_segment_end(teacher, batch, r, 16);
  for (std::int64_t i = 0; i < 3; ++i) {
    DistillBatch one{batch.start.narrow(0, i, 1), batch.tau.narrow(0, i, 1), batch.moving.narrow(0, i, 1), batch.tokens.narrow(0, i, 1),
                     batch.guidance.narrow(0, i, 1), {batch.staggered[static_cast<std::size_t>(i)]}, {false}, {}, {}};
    auto fixed = r;
    fixed.guidance = batch.guidance[i].item<double>();
    fixed.guidance_high = 0;
    EXPECT_TRUE(compare_tensors(end.narrow(0, i, 1), teacher_segment_end(teacher, one, fixed, 16)).within(1e-5)) << "example " << i;
  }
}

TEST(DiTDistill, RolloutExamplesStartFromTheTeachersOwnStream) {
  auto data = test::tiny_clip_source();
  auto teacher = test::random_tiny_dit(6, 0.1);
  auto r = recipe(2, 1, 2.0);
  r.rollout_share = 1.0;
  r.rollout_max_chunks = 2;
  auto draw = [&] {
    std::mt19937_64 rng(12);
    auto noise = at::detail::createCPUGenerator(13);
    return make_distill_batch(data.next(2, rng), teacher, r, rng, noise);
  };
  const auto batch = draw();
  const auto levels = torch::tensor(stream_levels(r.student_partition(16), 0), torch::kFloat32);
  for (std::int64_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(batch.rollout[static_cast<std::size_t>(i)]);
    EXPECT_TRUE(torch::equal(batch.tau[i], levels));  // a stream's segment start: staggered, micro step 0
  }
  EXPECT_TRUE(torch::isfinite(batch.start).all().item<bool>());
  EXPECT_TRUE(torch::equal(batch.start, draw().start));  // seeded like every other example
  // A rollout state is a stream's buffer: the teacher's start from the same seed gives the same one.
  const auto state = teacher_rollout_state(teacher, r, "a red circle moving left", 2.0, 99, 0);
  EXPECT_TRUE(torch::equal(state, started_stream(teacher, 2, 2.0, 99)->buffer()));
}

TEST(DiTDistill, StudentLandsWhereTheTeachersGuidedStepsLandTenTimesCloser) {
  auto data = test::tiny_clip_source();
  // N(0, 0.1) weights bend the teacher's trajectories enough that one undistilled step misses the
  // end of its guided micro steps by ~15 % of the distance moved.
  auto teacher = test::random_tiny_dit(3, 0.1);
  test::TempDir dir;
  DiTDistillOptions o;
  o.out = dir.path();
  o.steps = 200;
  o.batch = 4;
  o.lr = 2e-3;
  o.warmup = 10;
  o.ema_decay = 0.9;
  o.checkpoint_every = 1000;
  o.seed = 1;
  o.recipe = recipe(4, 1, 3.0);
  distill_stream_dit(teacher, data, o);
  auto student = load_stream_dit(dir.path());
  const auto report = evaluate_distillation(teacher, student, data, o.recipe, 2, 8, /*held-out seed*/ 777);
  EXPECT_GE(report.improvement(), 10.0) << "undistilled one step " << report.teacher_one_step << ", student " << report.student;
  EXPECT_TRUE(std::isfinite(report.student));

  // The student streams with the same sampler at one conditional pass per chunk, deterministically.
  StreamDiTOptions s;
  s.chunk_frames = 2;
  s.micro_steps = 1;
  s.seed = 4;
  auto stream = [&] {
    StreamDiTSampler sampler(student, s);
    sampler.set_prompt("a blue square moving up");
    std::vector<torch::Tensor> out;
    for (int i = 0; i < 5; ++i) out.push_back(sampler.step());
    EXPECT_EQ(sampler.nfe() - sampler.init_nfe(), sampler.chunks_emitted());
    EXPECT_EQ(sampler.init_nfe(), 7);  // T2V start with T_i = N: N - 1 passes reach every level a chunk needs
    return torch::cat(out);
  };
  EXPECT_TRUE(torch::equal(stream(), stream()));
}

TEST(DiTDistill, AnInterruptedRunResumesOnTheSameCurve) {
  auto data = test::tiny_clip_source();
  auto teacher = test::random_tiny_dit(5);
  DiTDistillOptions o;
  o.steps = 4;
  o.batch = 2;
  o.warmup = 1;
  o.checkpoint_every = 2;
  o.recipe = recipe(2, 1, 2.0);
  test::TempDir straight, split;
  test::expect_resumed_run_follows_the_same_curve(
      o, [&](const auto& run, const auto& on_step) { distill_stream_dit(teacher, data, run, on_step); },
      straight.path(), split.path(), /*interrupt_at=*/3, /*last_checkpoint=*/2);
  EXPECT_TRUE(torch::equal(load_stream_dit(straight.path())->blocks->parameters()[0], load_stream_dit(split.path())->blocks->parameters()[0]));
}

TEST(DiTDistill, AStudentCanStartFromAnotherModelsWeights) {
  // --init: distilling further from an earlier student (lr 0 leaves its weights as they were).
  auto data = test::tiny_clip_source();
  auto teacher = test::random_tiny_dit(5);
  auto earlier = test::random_tiny_dit(6);
  test::TempDir earlier_dir, out, other_dir;
  save_stream_dit(earlier, earlier_dir.path());
  DiTDistillOptions o;
  o.steps = 1;
  o.batch = 1;
  o.lr = 0;
  o.recipe = recipe(2, 1, 1.0);
  o.out = out.path();
  o.init_from = earlier_dir.path();
  distill_stream_dit(teacher, data, o);
  const auto student = load_stream_dit(out.path());
  EXPECT_TRUE(torch::equal(student->blocks->parameters()[0], earlier->blocks->parameters()[0]));
  EXPECT_FALSE(torch::equal(student->blocks->parameters()[0], teacher->blocks->parameters()[0]));
  // A model of another config is refused by name.
  auto config = test::tiny_dit_config();
  config.depth += 1;
  StreamDiT other(config);
  save_stream_dit(other, other_dir.path());
  o.init_from = other_dir.path();
  test::TempDir out2;
  o.out = out2.path();
  test::expect_error_mentions([&] { distill_stream_dit(teacher, data, o); }, "another config");
}

TEST(DiTDistill, SamplerSettingsRoundTripAndBadFilesNameThemselves) {
  test::TempDir dir;
  StreamDiTOptions written;
  written.chunk_frames = 4;
  written.micro_steps = 1;
  written.guidance = 4.0;
  written.guidance_interval = {0.25, 0.75};
  written.guidance_form = {true, 0.5};
  written.init_steps = 32;
  written.init_guidance = 2.5;
  written.anchor_guidance = 1.5;
  written.change_guidance = 2.0;
  written.colour_hold = 0.25;
  written.colour_hold_frames = 32;
  write_sampler_settings(dir.path(), written);
  StreamDiTOptions read;
  ASSERT_TRUE(read_sampler_settings(dir.path(), read));
  EXPECT_EQ(read.chunk_frames, 4);
  EXPECT_EQ(read.micro_steps, 1);
  EXPECT_EQ(read.guidance, 4.0);
  EXPECT_EQ(read.guidance_interval[0], 0.25);
  EXPECT_EQ(read.guidance_interval[1], 0.75);
  EXPECT_TRUE(read.guidance_form.keep_mean);
  EXPECT_EQ(read.guidance_form.rescale, 0.5);
  EXPECT_EQ(read.init_steps, 32);
  EXPECT_EQ(read.init_guidance, 2.5);
  EXPECT_EQ(read.anchor_guidance, 1.5);
  EXPECT_EQ(read.change_guidance, 2.0);
  EXPECT_EQ(read.colour_hold, 0.25);
  EXPECT_EQ(read.colour_hold_frames, 32);
  test::TempDir none;
  EXPECT_FALSE(read_sampler_settings(none.path(), read));
  test::write_bytes(dir / "sampler.json", R"({"micro_steps": "one"})");
  try {
    read_sampler_settings(dir.path(), read);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sampler.json"), std::string::npos) << e.what();
  }
}

TEST(DiTDistill, BadRecipesNameTheField) {
  auto expect_error = [](DistillRecipe r, const std::string& words) {
    try {
      r.validate(16);
      ADD_FAILURE() << "no error for " << words;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  expect_error(recipe(4, 3), "must divide the teacher's 4");
  expect_error(recipe(0, 1), "teacher steps");
  expect_error(recipe(4, 1, -1), "guidance");
  auto range = recipe(4, 1, 3.0);
  range.guidance_high = 2.0;
  expect_error(range, "guidance range 3,2 is empty");
  auto r = recipe();
  r.chunk_frames = 3;
  expect_error(r, "3");
  r = recipe();
  r.staggered_share = 1.5;
  expect_error(r, "staggered share");
  r = recipe();
  r.rollout_share = -0.1;
  expect_error(r, "rollout share");
  r = recipe();
  r.student_init_steps = 6;  // N = 8 chunks of 2
  expect_error(r, "multiple of its 8 chunks");
  r = recipe();
  r.student_init_guidance = -1;
  expect_error(r, "start guidance");
}

}  // namespace
}  // namespace streamgen
