// The anchor frame (StreamDiTConfig::anchor): a clean frame from a stream's start as extra
// conditioning. What the model does with it, where training clips take it from, and when the
// sampler takes and renews it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include <ATen/CPUGeneratorImpl.h>

#include "streamgen/dit.h"
#include "streamgen/dit_distill.h"
#include "streamgen/dit_trainer.h"
#include "streamgen/error.h"
#include "streamgen/optimisation.h"
#include "streamgen/stream_dit.h"
#include "streamgen/tensor_compare.h"
#include "dit_test_util.h"
#include "test_util.h"

namespace streamgen {
namespace {

StreamDiTConfig anchored_config() {
  auto c = test::tiny_dit_config();
  c.anchor = true;
  return c;
}

struct AnchorInputs {
  torch::Tensor x, tau, text, anchor;
};
AnchorInputs anchor_inputs(StreamDiT& model, std::int64_t batch) {
  torch::manual_seed(4);
  torch::NoGradGuard no_grad;
  return {torch::randn({batch, 16, 3, 16, 16}), torch::rand({batch, 16}),
          model->encode_text(model->tokenizer.encode_batch(std::vector<std::string>(static_cast<std::size_t>(batch), "red circle moving left"))),
          torch::randn({batch, 3, 16, 16})};
}

TEST(DiTAnchor, AFreshAnchorPathChangesNothingAndDroppedAnchorsAreIgnored) {
  // Weights of a model without an anchor, copied into one with it: the zero-initialised anchor
  // attention leaves every prediction as it was, with or without an anchor given.
  auto plain = test::random_tiny_dit(2);
  StreamDiT anchored(anchored_config());
  copy_parameters(*plain, *anchored, [](const std::string& name) { return name.find("anchor") != std::string::npos; });
  torch::NoGradGuard no_grad;
  auto in = anchor_inputs(plain, 2);
  const auto base = plain->forward(in.x, in.tau, in.text);
  EXPECT_TRUE(torch::equal(anchored->forward(in.x, in.tau, in.text), base));
  EXPECT_TRUE(compare_tensors(anchored->forward(in.x, in.tau, in.text, in.anchor), base).within(1e-6));
  // Anything else missing is still an error.
  StreamDiT other(anchored_config());
  EXPECT_THROW(copy_parameters(*plain, *other, [](const std::string& name) { return name.find("norm_anchor") != std::string::npos; }), Error);

  // Once the anchor path carries weight, the anchor changes predictions; anchor_keep 0 for an
  // example is exactly that example without its anchor, and a [1, ...] anchor serves the batch.
  auto trained = test::random_tiny_dit(3, 0.05, anchored_config());
  in = anchor_inputs(trained, 2);
  const auto none = trained->forward(in.x, in.tau, in.text);
  const auto with = trained->forward(in.x, in.tau, in.text, in.anchor);
  EXPECT_GT((with - none).abs().max().item<float>(), 1e-3);
  const auto half = trained->forward(in.x, in.tau, in.text, in.anchor, torch::tensor({1.0f, 0.0f}));
  EXPECT_TRUE(compare_tensors(half[0], with[0]).within(1e-6));
  EXPECT_TRUE(compare_tensors(half[1], none[1]).within(1e-6));
  const auto shared = trained->forward(in.x, in.tau, in.text, in.anchor.narrow(0, 0, 1));
  EXPECT_TRUE(compare_tensors(shared[0], with[0]).within(1e-6));
  EXPECT_FALSE(compare_tensors(shared[1], with[1]).within(1e-3));
}

TEST(DiTAnchor, TheAnchorReachesEveryFrameAndTrainsItsPath) {
  auto model = test::random_tiny_dit(5, 0.05, anchored_config());
  auto in = anchor_inputs(model, 1);
  const auto anchor = in.anchor.clone().requires_grad_(true);
  model->forward(in.x, in.tau, in.text, anchor).sum().backward();
  EXPECT_GT(anchor.grad().abs().sum().item<float>(), 0.f);
  for (const auto& p : model->named_parameters())
    if (p.key().find("anchor") != std::string::npos) {
      EXPECT_GT(p.value().grad().abs().sum().item<float>(), 0.f) << p.key();
    }
  // Per frame: the anchor moves the first and the last frame's prediction.
  torch::NoGradGuard no_grad;
  const auto a = model->forward(in.x, in.tau, in.text, in.anchor), b = model->forward(in.x, in.tau, in.text, in.anchor * -1);
  EXPECT_GT((a - b).select(1, 0).abs().max().item<float>(), 1e-4);
  EXPECT_GT((a - b).select(1, 15).abs().max().item<float>(), 1e-4);
}

TEST(DiTAnchor, ConfigRoundTripsAndBadAnchorsGiveClearErrors) {
  const auto c = anchored_config();
  EXPECT_TRUE(StreamDiTConfig::from_json(c.to_json()).anchor);
  auto old = c.to_json();
  old.erase("anchor");  // a checkpoint from before the option
  EXPECT_FALSE(StreamDiTConfig::from_json(old).anchor);

  auto plain = test::random_tiny_dit(1);
  auto anchored = test::random_tiny_dit(1, 0.05, c);
  torch::NoGradGuard no_grad;
  const auto in = anchor_inputs(plain, 2);
  test::expect_error_mentions([&] { plain->forward(in.x, in.tau, in.text, in.anchor); }, "without anchor conditioning");
  test::expect_error_mentions([&] { anchored->forward(in.x, in.tau, in.text, in.anchor.narrow(1, 0, 2)); }, "anchor frame must be");
  test::expect_error_mentions([&] { anchored->forward(in.x, in.tau, in.text, in.anchor, torch::ones({3})); }, "anchor_keep must be [2]");
}

TEST(DiTAnchor, AnchoredClipsTakeTheAnchorFromTheLeadOfTheSameClip) {
  // 8-frame clips, a lead of 8 in groups of 4: the anchor is frames 0–3, 4–7 or 8–11 of a 16-frame
  // clip whose last 8 frames are the video.
  auto video = test::tiny_clip_source().options();
  AnchoredClipSource anchored(std::make_unique<ProceduralClipSource>(video, 16), 8, 8, 4);
  ProceduralClipSource longer(video, 16);
  std::set<std::int64_t> starts;
  for (std::uint64_t seed = 0; seed < 24; ++seed) {
    std::mt19937_64 a(seed), b(seed);
    const auto clips = anchored.next(1, a);
    const auto full = longer.next(1, b).video[0];
    ASSERT_EQ(clips.video.sizes(), (std::vector<std::int64_t>{1, 8, 3, 16, 16}));
    ASSERT_EQ(clips.anchor.sizes(), (std::vector<std::int64_t>{1, 4, 3, 16, 16}));
    EXPECT_TRUE(torch::equal(clips.video[0], full.narrow(0, 8, 8)));
    std::int64_t found = -1;
    for (std::int64_t start : {0, 4, 8})
      if (torch::equal(clips.anchor[0], full.narrow(0, start, 4))) found = start;
    EXPECT_GE(found, 0) << "seed " << seed;
    starts.insert(found);
  }
  EXPECT_EQ(starts.size(), 3u);  // every position is drawn
  test::expect_error_mentions([&] { AnchoredClipSource(std::make_unique<ProceduralClipSource>(video, 16), 8, 6, 4); }, "multiple");
  AnchoredClipSource wrong(std::make_unique<ProceduralClipSource>(video, 12), 8, 8, 4);
  std::mt19937_64 rng(1);
  test::expect_error_mentions([&] { wrong.next(1, rng); }, "expected 8 + 8 lead");
}

TEST(DiTAnchor, BatchesCarryTheAnchorAndDropItAtTheRecipesRate) {
  auto video = test::tiny_clip_source().options();
  AnchoredClipSource source(std::make_unique<ProceduralClipSource>(video, 32), 16, 16, 1);
  StreamDiT model(anchored_config());
  FlowMatchingRecipe recipe;
  recipe.anchor_dropout = 0.25;
  const auto fm = seeded_flow_matching_batch(source, model->tokenizer, recipe, 7, 0, 0, 0, 400);
  ASSERT_EQ(fm.anchor.sizes(), (std::vector<std::int64_t>{400, 3, 16, 16}));
  ASSERT_EQ(fm.anchor_keep.sizes(), (std::vector<std::int64_t>{400}));
  const auto dropped = (fm.anchor_keep == 0).sum().item<std::int64_t>();
  EXPECT_GT(dropped, 70);
  EXPECT_LT(dropped, 130);
  // Held-out loss on anchored clips measures what dropping the anchor costs.
  auto trained = test::random_tiny_dit(5, 0.05, anchored_config());
  const auto r = evaluate_flow_loss(trained, source, FlowMatchingRecipe{}, 2, 4, 99);
  ASSERT_FALSE(r.caption_probes.empty());
  EXPECT_EQ(r.caption_probes.back().name, "anchor dropped");
  EXPECT_NE(r.caption_probes.back().loss, r.caption_probes.front().loss);
}

StreamDiTOptions sampler_options() {
  StreamDiTOptions o;
  o.chunk_frames = 4;  // N = 4
  o.micro_steps = 1;
  o.seed = 3;
  return o;
}

TEST(DiTAnchor, TheSamplerAnchorsOnTheFirstFrameAndRenewsItAfterAPromptChange) {
  auto model = test::random_tiny_dit(6, 0.05, anchored_config());
  StreamDiTSampler s(model, sampler_options());
  s.set_prompt("red circle moving left");
  EXPECT_FALSE(s.anchor().defined());
  const auto first = s.step();
  ASSERT_TRUE(s.anchor().defined());
  EXPECT_TRUE(torch::equal(s.anchor()[0], first[0]));
  for (int i = 0; i < 3; ++i) s.step();
  EXPECT_TRUE(torch::equal(s.anchor()[0], first[0]));  // kept for the whole stream
  s.set_prompt("red circle moving left");  // the same prompt again changes nothing
  s.step();
  EXPECT_TRUE(torch::equal(s.anchor()[0], first[0]));

  // A new prompt: the chunks in the buffer began under the old one, so no anchor until the first
  // chunk that entered after the change leaves, N = 4 steps later; it becomes the anchor.
  s.set_prompt("blue square moving up");
  for (int i = 0; i < 4; ++i) {
    s.step();
    EXPECT_FALSE(s.anchor().defined()) << "step " << i;
  }
  const auto renewed = s.step();
  ASSERT_TRUE(s.anchor().defined());
  EXPECT_TRUE(torch::equal(s.anchor()[0], renewed[0]));

  // The anchor conditions the stream: the same seed without it makes other frames.
  auto o = sampler_options();
  StreamDiTSampler with(model, o);
  o.use_anchor = false;
  StreamDiTSampler without(model, o);
  EXPECT_TRUE(torch::equal(with.step(), without.step()));  // the first chunk has no anchor yet
  EXPECT_FALSE(without.anchor().defined());
  EXPECT_FALSE(compare_tensors(with.step(), without.step()).within(1e-4));
}

TEST(DiTAnchor, AnchorGuidancePullsEachStepTowardsTheAnchoredVelocity) {
  auto model = test::random_tiny_dit(6, 0.05, anchored_config());
  auto sampler = [&](double w, double text_w = 1.0) {
    auto o = sampler_options();
    o.anchor_guidance = w;
    o.guidance = text_w;
    return std::make_unique<StreamDiTSampler>(model, o);
  };
  auto plain = sampler(1.0), pulled = sampler(3.0), free = sampler(0.0);
  auto o = sampler_options();
  o.use_anchor = false;
  StreamDiTSampler unanchored(model, o);
  for (auto* s : {plain.get(), pulled.get(), free.get(), &unanchored}) s->set_prompt("red circle moving left");
  // The first chunk has no anchor yet: one pass, the same frames.
  const auto first = plain->step();
  EXPECT_TRUE(torch::equal(pulled->step(), first));
  EXPECT_TRUE(torch::equal(free->step(), first));
  unanchored.step();
  EXPECT_EQ(pulled->nfe(), plain->nfe());
  // Then two passes per step; with s = 1 a chunk is the buffer plus one velocity step, so the pulled
  // chunk lies W − 1 = 2 times as far beyond the anchored one as the anchored one lies from v_∅'s.
  const auto before = pulled->nfe();
  const auto a = plain->step(), p = pulled->step(), f = free->step();
  EXPECT_EQ(pulled->nfe() - before, 2);
  EXPECT_FALSE(compare_tensors(a, f).within(1e-4));
  EXPECT_TRUE(compare_tensors(p, a + 2.0 * (a - f)).within(1e-4));
  // W = 0 is the stream without its anchor.
  EXPECT_TRUE(compare_tensors(f, unanchored.step()).within(1e-5));
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(compare_tensors(free->step(), unanchored.step()).within(1e-4));

  // With CFG on the caption: three passes in one batch, and W = 1 is CFG alone.
  auto guided = sampler(1.0, 3.0), both = sampler(2.0, 3.0);
  guided->set_prompt("red circle moving left");
  both->set_prompt("red circle moving left");
  EXPECT_TRUE(torch::equal(guided->step(), both->step()));
  const auto n = both->nfe();
  EXPECT_FALSE(compare_tensors(guided->step(), both->step()).within(1e-4));
  EXPECT_EQ(both->nfe() - n, 3);
  EXPECT_NE(describe_guidance([] {
              StreamDiTOptions d;
              d.anchor_guidance = 2;
              return d;
            }()).find("anchor guidance 2"),
            std::string::npos);
  StreamDiTOptions counted;
  counted.anchor_guidance = 2;
  EXPECT_EQ(passes_per_step(counted), 2);
  counted.guidance = 3;
  EXPECT_EQ(passes_per_step(counted), 3);
  test::expect_error_mentions([&] { sampler(-1.0); }, "anchor guidance");
}

TEST(DiTAnchor, ModelsWithoutAnAnchorStreamAsBefore) {
  StreamDiTSampler s(test::random_tiny_dit(6), sampler_options());
  for (int i = 0; i < 2; ++i) s.step();
  EXPECT_FALSE(s.anchor().defined());
  auto o = sampler_options();
  o.anchor_guidance = 2;
  test::expect_error_mentions([&] { StreamDiTSampler(test::random_tiny_dit(6), o); }, "needs an anchor frame");
}

TEST(DiTAnchor, DistillationGivesTeacherAndStudentTheSameAnchor) {
  auto teacher = test::random_tiny_dit(7, 0.1, anchored_config());
  AnchoredClipSource data(std::make_unique<ProceduralClipSource>(test::tiny_clip_source().options(), 32), 16, 16, 1);
  DistillRecipe r;
  r.chunk_frames = 2;
  r.teacher_steps = 2;
  r.guidance = 2.0;
  r.anchor_dropout = 0;
  auto draw = [&](std::uint64_t seed, ClipBatch* clips_out) {
    std::mt19937_64 rng(seed);
    auto noise = at::detail::createCPUGenerator(seed + 1);
    auto clips = data.next(3, rng);
    if (clips_out) *clips_out = clips;
    return make_distill_batch(clips, teacher, r, rng, noise);
  };
  ClipBatch clips;
  auto batch = draw(4, &clips);
  ASSERT_TRUE(batch.anchor.defined());
  EXPECT_TRUE(torch::equal(batch.anchor, clips.anchor.select(1, 0)));
  EXPECT_TRUE(torch::equal(batch.anchor_keep, torch::ones({3})));
  // The teacher's segment end depends on the anchor, and a dropped one is the same as none.
  const auto with = teacher_segment_end(teacher, batch, r, 16);
  auto dropped = batch;
  dropped.anchor_keep = torch::zeros({3});
  auto none = batch;
  none.anchor = none.anchor_keep = torch::Tensor{};
  EXPECT_FALSE(compare_tensors(with, teacher_segment_end(teacher, dropped, r, 16)).within(1e-4));
  EXPECT_TRUE(compare_tensors(teacher_segment_end(teacher, dropped, r, 16), teacher_segment_end(teacher, none, r, 16)).within(1e-6));

  // A rollout example's start is its stream's buffer, so its anchor is that stream's: none before
  // the first chunk leaves, then the first emitted frame.
  torch::Tensor anchor;
  teacher_rollout_state(teacher, r, "red circle moving left", 2.0, 99, 0, &anchor);
  EXPECT_FALSE(anchor.defined());
  teacher_rollout_state(teacher, r, "red circle moving left", 2.0, 99, 2, &anchor);
  auto o = r.stream_options(r.teacher_steps, 2.0);
  o.seed = 99;
  StreamDiTSampler stream(teacher, o);
  stream.set_prompt("red circle moving left");
  const auto first = stream.step();
  ASSERT_TRUE(anchor.defined());
  EXPECT_TRUE(torch::equal(anchor[0], first[0]));
}

TEST(DiTAnchor, DistilledAnchorGuidanceIsTheGuidedStreamsStep) {
  // The teacher's target with anchor guidance (and CFG) is what the guided sampler does in one step:
  // take a stream's buffer and anchor once it has one, and compare its next chunk with the segment end.
  auto teacher = test::random_tiny_dit(8, 0.1, anchored_config());
  DistillRecipe r;
  r.chunk_frames = 2;
  r.teacher_steps = 2;
  r.guidance = 2.0;
  r.anchor_guidance = 2.5;
  auto o = r.stream_options(r.teacher_steps, r.guidance);
  o.anchor_guidance = r.anchor_guidance;
  o.seed = 5;
  StreamDiTSampler stream(teacher, o);
  stream.set_prompt("red circle moving left");
  stream.step();
  ASSERT_TRUE(stream.anchor().defined());
  DistillBatch batch;
  batch.start = torch::cat({stream.buffer(), stream.buffer()});
  batch.tau = torch::tensor(stream.levels(0), torch::kFloat32).view({1, 16}).repeat({2, 1});
  batch.moving = torch::ones({2, 16});
  batch.tokens = teacher->tokenizer.encode_batch({"red circle moving left", "red circle moving left"});
  batch.guidance = torch::full({2}, 2.0);
  batch.anchor = torch::cat({stream.anchor(), stream.anchor()});
  batch.anchor_keep = torch::tensor({1.0f, 0.0f});  // the second example runs without its anchor
  const auto end = teacher_segment_end(teacher, batch, r, 16);
  const auto emitted = stream.step();
  EXPECT_TRUE(compare_tensors(end[0].narrow(0, 0, 2), emitted).within(1e-5)) << compare_tensors(end[0].narrow(0, 0, 2), emitted).rel;
  EXPECT_TRUE(compare_tensors(end.narrow(0, 0, 1).narrow(1, 2, 14), stream.buffer().narrow(1, 0, 14)).within(1e-5));
  // Without its anchor an example gets plain CFG, as if the recipe had no anchor guidance;
  // with it, anchor guidance moves the end.
  auto plain = r;
  plain.anchor_guidance = 1.0;
  const auto unguided = teacher_segment_end(teacher, batch, plain, 16);
  EXPECT_TRUE(compare_tensors(end[1], unguided[1]).within(1e-5));
  EXPECT_FALSE(compare_tensors(end[0], unguided[0]).within(1e-3));
  EXPECT_NE(r.guidance_label().find("anchor guidance 2.5"), std::string::npos) << r.guidance_label();
  // Rollout starts follow the same policy: the teacher's stream with the recipe's anchor guidance.
  auto buffer_after_two = [&](double w) {
    auto so = o;
    so.anchor_guidance = w;
    StreamDiTSampler s(teacher, so);
    s.set_prompt("red circle moving left");
    s.start();
    s.step();
    s.step();
    return s.buffer();
  };
  const auto rolled = teacher_rollout_state(teacher, r, "red circle moving left", 2.0, 5, 2);
  EXPECT_TRUE(torch::equal(rolled, buffer_after_two(2.5)));
  EXPECT_FALSE(torch::equal(rolled, buffer_after_two(1.0)));

  // Bad recipes: a negative scale, and anchor guidance from a teacher without an anchor.
  auto negative = r;
  negative.anchor_guidance = -1;
  test::expect_error_mentions([&] { negative.validate(16); }, "anchor guidance");
  DiTDistillOptions d;
  d.recipe = r;
  d.steps = 1;
  test::TempDir out;
  d.out = out.path();
  auto data = test::tiny_clip_source();
  test::expect_error_mentions([&] { distill_stream_dit(test::random_tiny_dit(8), data, d); }, "needs a teacher with an anchor");
}

}  // namespace
}  // namespace streamgen
