// The caption classifier of `dit eval --classifier`: its targets, loss, caption scoring, training,
// folder round trip, KID, and how the stream evaluation uses it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/caption_classifier.h"
#include "streamgen/caption_classifier_trainer.h"
#include "streamgen/dit_eval.h"
#include "streamgen/dit_metrics.h"
#include "test_util.h"

namespace streamgen {
namespace {

// A classifier small enough to train in seconds: 4 frames of 16×16, two blocks.
CaptionClassifierConfig tiny_classifier_config() {
  CaptionClassifierConfig c;
  c.frames = 4;
  c.width = c.height = 16;
  c.block_out_channels = {16, 32};
  return c;
}

MovingObject object(int colour, ShapeKind shape, double vx, double vy) { return {colour, shape, 8, 8, vx, vy, 3}; }

TEST(CaptionClassifier, TargetsNameEachColoursShapesAndDirections) {
  const auto c = tiny_classifier_config();
  // red circle moving left, then (a bounce) right; a blue triangle moving up throughout.
  const std::vector<std::vector<MovingObject>> states{{object(0, ShapeKind::Circle, -1, 0), object(2, ShapeKind::Triangle, 0, -1)},
                                                     {object(0, ShapeKind::Circle, 1, 0), object(2, ShapeKind::Triangle, 0, -1)}};
  const auto t = caption_classifier_targets(states, c);
  ASSERT_EQ(t.sizes(), (std::vector<std::int64_t>{6, 8}));
  // presence, circle, square, triangle, left, right, up, down
  EXPECT_TRUE(t[0].equal(torch::tensor({1.f, 1.f, 0.f, 0.f, 1.f, 1.f, 0.f, 0.f})));
  EXPECT_TRUE(t[2].equal(torch::tensor({1.f, 0.f, 0.f, 1.f, 0.f, 0.f, 1.f, 0.f})));
  for (int absent : {1, 3, 4, 5}) EXPECT_EQ(t[absent].sum().item<float>(), 0.f) << absent;
}

TEST(CaptionClassifier, LossIgnoresTheAttributesOfAbsentColours) {
  const auto c = tiny_classifier_config();
  const auto targets = caption_classifier_targets({{object(1, ShapeKind::Square, 0, 1)}}, c).unsqueeze(0);
  // Confident and right everywhere: the loss is about 0.
  auto logits = (targets * 2 - 1) * 20;
  EXPECT_LT(caption_classifier_loss(logits, targets).item<double>(), 1e-6);
  // Any answer about the shape of a colour that is not there costs nothing...
  auto absent_changed = logits.clone();
  absent_changed[0][4].narrow(0, 1, 7).fill_(20);
  EXPECT_LT(caption_classifier_loss(absent_changed, targets).item<double>(), 1e-6);
  // ...but a wrong shape of the present colour does, and so does seeing a colour that is absent.
  auto wrong_shape = logits.clone();
  wrong_shape[0][1][1 + 0] = 20;
  EXPECT_GT(caption_classifier_loss(wrong_shape, targets).item<double>(), 0.5);
  auto phantom = logits.clone();
  phantom[0][4][0] = 20;
  EXPECT_GT(caption_classifier_loss(phantom, targets).item<double>(), 1.0);
}

TEST(CaptionClassifier, ScoresACaptionFromItsProbabilities) {
  auto p = torch::zeros({6, 8});
  p[0] = torch::tensor({0.9f, 0.8f, 0.1f, 0.1f, 0.7f, 0.1f, 0.1f, 0.1f});  // red circle, left
  p[2] = torch::tensor({0.6f, 0.2f, 0.3f, 0.4f, 0.1f, 0.1f, 0.9f, 0.1f});  // blue, no shape sure, up
  auto s = score_caption_probabilities(p, "red circle moving left and blue triangle moving up");
  EXPECT_DOUBLE_EQ(s.colour, 1.0);
  EXPECT_DOUBLE_EQ(s.shape, 0.5);
  EXPECT_DOUBLE_EQ(s.direction, 1.0);
  // An absent colour gets nothing for its shape or direction either, however sure they look.
  p[5] = torch::tensor({0.2f, 0.9f, 0.1f, 0.1f, 0.9f, 0.1f, 0.1f, 0.1f});
  s = score_caption_probabilities(p, "cyan circle moving left");
  EXPECT_EQ(s.overall(), 0.0);
  test::expect_error_mentions([&] { score_caption_probabilities(torch::zeros({6, 5}), "red circle"); }, "[colours, 1 + shapes + directions]");
}

TEST(CaptionClassifier, ChecksItsInputAndConfig) {
  CaptionClassifier model(tiny_classifier_config());
  EXPECT_EQ(model->forward(torch::zeros({2, 4, 3, 16, 16})).sizes(), (std::vector<std::int64_t>{2, 6, 8}));
  EXPECT_EQ(model->features(torch::zeros({2, 4, 3, 16, 16})).sizes(), (std::vector<std::int64_t>{2, 32}));
  test::expect_error_mentions([&] { model->forward(torch::zeros({2, 4, 3, 32, 32})); }, "[N, 4, 3, 16, 16]");
  test::expect_error_mentions([&] { classify_windows(model, torch::zeros({3, 3, 16, 16})); }, "fewer than one window of 4");
  auto bad = tiny_classifier_config();
  bad.width = 18;
  test::expect_error_mentions([&] { bad.validate(); }, "multiples of 4");
  bad = tiny_classifier_config();
  bad.edges = "sideways";
  EXPECT_THROW(bad.validate(), Error);
}

TEST(CaptionClassifier, SavedFolderLoadsToTheSameOutputs) {
  test::TempDir dir;
  torch::manual_seed(3);
  CaptionClassifier model(tiny_classifier_config());
  model->eval();
  save_caption_classifier(model, dir.path());
  EXPECT_TRUE(is_caption_classifier_folder(dir.path()));
  auto loaded = load_caption_classifier(dir.path());
  const auto clips = torch::rand({2, 4, 3, 16, 16}) * 2 - 1;
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->forward(clips), loaded->forward(clips)));
}

TEST(CaptionClassifier, LearnsToSeeColourInAFewHundredSteps) {
  test::TempDir dir;
  CaptionClassifierTrainOptions o;
  o.out = dir.path();
  o.steps = 600;
  o.batch = 16;
  o.lr = 1e-2;
  o.warmup = 5;
  o.ema_decay = 0.9;
  o.checkpoint_every = 1000;
  std::vector<double> losses;
  train_caption_classifier(tiny_classifier_config(), o, [&](const TrainStepInfo& s) { losses.push_back(s.loss); });
  ASSERT_EQ(losses.size(), 600u);
  double first = 0, last = 0;
  for (int i = 0; i < 20; ++i) first += losses[static_cast<std::size_t>(i)], last += losses[losses.size() - 1 - static_cast<std::size_t>(i)];
  EXPECT_LT(last, 0.8 * first);
  auto trained = load_caption_classifier(dir.path());
  const auto r = evaluate_caption_classifier(trained, caption_classifier_world(trained->config), 32, 4242);
  // Four or five colours of six are absent from every clip: answering "absent" for all is right on
  // at most 5/6 of the presence labels. Beating that takes seeing colour in the pixels.
  EXPECT_GT(r.presence_accuracy, 5.0 / 6.0 + 0.02);
  EXPECT_GT(r.score.colour, 0.0);
}

TEST(KernelInceptionDistance, NearZeroForOneDistributionAndGrowsWithAShift) {
  torch::manual_seed(0);
  const auto a = torch::randn({200, 16}), b = torch::randn({200, 16});
  const double same = kernel_inception_distance(a, b), shifted = kernel_inception_distance(a, b + 1.0);
  EXPECT_LT(std::abs(same), 0.1);
  EXPECT_GT(shifted, 10 * std::abs(same) + 0.5);
  EXPECT_NEAR(kernel_inception_distance(a, b), kernel_inception_distance(b, a), 1e-9);
  test::expect_error_mentions([&] { kernel_inception_distance(a, torch::randn({5, 8})); }, "one width");
  // Standardised by the reference, features of any scale read as those of unit scale.
  EXPECT_NEAR(kernel_inception_distance_standardised(a * 50 + 7, b * 50 + 7), kernel_inception_distance_standardised(a, b), 1e-9);
  EXPECT_GT(kernel_inception_distance_standardised((a + 1) * 50, b * 50), 0.5);
}

TEST(StreamEval, ScoresWithTheCaptionClassifierToo) {
  StreamEvalOptions o;
  o.streams = 2;
  o.frames = 12;
  o.window = 4;
  auto config = tiny_classifier_config();
  config.edges = "bounce";
  o.classifier = CaptionClassifier(config);
  const auto q = evaluate_real_streams(16, 16, 2, o);
  ASSERT_TRUE(q.classifier.has_value());
  EXPECT_GE(q.classifier->caption_accuracy, 0.0);
  EXPECT_LE(q.classifier->caption_accuracy, 1.0);
  ASSERT_TRUE(q.classifier_features.defined());
  EXPECT_EQ(q.classifier_features.sizes(), (std::vector<std::int64_t>{2 * 3, 32}));  // 2 streams × 3 windows
  // Without one, nothing of it.
  o.classifier = CaptionClassifier(nullptr);
  EXPECT_FALSE(evaluate_real_streams(16, 16, 2, o).classifier.has_value());
  // A classifier of another window or frame size is refused with both sizes named.
  o.classifier = CaptionClassifier(config);
  o.window = 8;
  test::expect_error_mentions([&] { evaluate_real_streams(16, 16, 2, o); }, "windows of 4 frames of 16x16");
}

}  // namespace
}  // namespace streamgen
