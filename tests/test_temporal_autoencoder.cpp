// The temporal autoencoder: shapes, causality, chunked (streaming) coding equal to whole-clip
// coding, checkpoints, errors, and training (overfit, resume, latent calibration).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dit_test_util.h"
#include "streamgen/dit_codec.h"
#include "streamgen/dit_eval.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "streamgen/tae_trainer.h"
#include "streamgen/temporal_autoencoder.h"
#include "streamgen/tensor_compare.h"
#include "test_util.h"

using namespace streamgen;

namespace {

TemporalAutoencoderConfig tiny_tae_config() {
  TemporalAutoencoderConfig c;
  c.latent_channels = 4;
  c.block_out_channels = {8, 12, 16};
  c.temporal_compression = 4;
  return c;
}

// Seeded weights with a spread that keeps activations alive through the ReLUs.
TemporalAutoencoder random_tae(std::uint64_t seed = 3) {
  torch::manual_seed(seed);
  TemporalAutoencoder tae(tiny_tae_config());
  tae->eval();
  return tae;
}

ProceduralClipSource tae_clip_source(std::int64_t frames = 8) {
  ProceduralVideoOptions video;
  video.width = 32;
  video.height = 32;
  video.max_objects = 1;
  return ProceduralClipSource(video, frames);
}

}  // namespace

TEST(TemporalAutoencoder, CompressesEightTimesInSpaceAndFourInTime) {
  auto tae = random_tae();
  torch::NoGradGuard no_grad;
  const auto video = torch::rand({2, 8, 3, 32, 24}) * 2 - 1;
  const auto z = tae->encode(video);
  EXPECT_EQ(z.sizes(), (std::vector<std::int64_t>{2, 2, 4, 4, 3}));
  const auto back = tae->decode(z);
  EXPECT_EQ(back.sizes(), video.sizes());
  EXPECT_TRUE(torch::isfinite(back).all().item<bool>());
  EXPECT_EQ(tae->config.spatial_compression(), 8);
  // parameter names are the checkpoint's
  const auto names = tae->named_parameters().keys();
  for (const char* expected : {"encoder.conv_in.weight", "encoder.down_blocks.0.pool.weight", "encoder.down_blocks.1.pool.weight",
                               "encoder.down_blocks.2.memory.conv.4.weight", "decoder.up_blocks.2.grow.weight", "decoder.conv_out.bias"})
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  EXPECT_EQ(std::find(names.begin(), names.end(), "encoder.down_blocks.2.pool.weight"), names.end());  // 4x time = two pools
}

TEST(TemporalAutoencoder, IsCausalInTime) {
  auto tae = random_tae();
  torch::NoGradGuard no_grad;
  const auto video = torch::rand({1, 12, 3, 16, 16}) * 2 - 1;
  auto changed = video.clone();
  changed[0][5] += 0.5;  // an RGB frame of latent frame 1
  const auto z = tae->encode(video), z2 = tae->encode(changed);
  EXPECT_TRUE(torch::equal(z[0][0], z2[0][0])) << "latent frame 0 saw a later RGB frame";
  EXPECT_GT((z[0][1] - z2[0][1]).abs().max().item<double>(), 1e-6);
  auto zc = z.clone();
  zc[0][1] += 0.5;
  const auto x = tae->decode(z), x2 = tae->decode(zc);
  EXPECT_TRUE(torch::equal(x[0].narrow(0, 0, 4), x2[0].narrow(0, 0, 4))) << "frames of latent 0 saw latent 1";
  EXPECT_GT((x[0].narrow(0, 4, 4) - x2[0].narrow(0, 4, 4)).abs().max().item<double>(), 1e-6);
}

TEST(TemporalAutoencoder, ChunkedDecodingWithTheDecodersReachEqualsWholeDecoding) {
  auto tae = random_tae();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(tae->decoder_history(), 3);  // 1 + 1 + 1/2 latent frames
  EXPECT_EQ(tae->encoder_history_frames(), 12);  // 2 + 4 + 4 RGB frames, in whole latent groups
  const auto z = torch::randn({1, 10, 4, 4, 4});
  const auto whole = tae->decode(z)[0];
  ChunkDecoder exact(tae);
  ChunkDecoder plain(tae, 0);
  std::vector<torch::Tensor> a, b;
  for (std::int64_t t = 0; t < 10; t += 2) {
    a.push_back(exact.decode(z[0].narrow(0, t, 2)));
    b.push_back(plain.decode(z[0].narrow(0, t, 2)));
  }
  const auto chunked = torch::cat(a), no_overlap = torch::cat(b);
  ASSERT_EQ(chunked.sizes(), whole.sizes());
  const auto d = compare_tensors(chunked, whole);
  EXPECT_TRUE(d.within(1e-5)) << d.rel;
  EXPECT_GT(compare_tensors(no_overlap, whole).rel, 1e-3) << "without the overlap each chunk forgets the previous one";
  // One latent frame of overlap (the spec's default) is already most of the way.
  ChunkDecoder one(tae, 1);
  std::vector<torch::Tensor> c;
  for (std::int64_t t = 0; t < 10; t += 2) c.push_back(one.decode(z[0].narrow(0, t, 2)));
  EXPECT_LT(compare_tensors(torch::cat(c), whole).rel, compare_tensors(no_overlap, whole).rel);
}

TEST(TemporalAutoencoder, ChunkedEncodingEqualsWholeEncoding) {
  auto tae = random_tae();
  torch::NoGradGuard no_grad;
  const auto video = torch::rand({1, 24, 3, 16, 16}) * 2 - 1;
  const auto whole = tae->encode(video)[0];
  ChunkEncoder encoder(tae);
  std::vector<torch::Tensor> parts;
  for (std::int64_t t = 0; t < 24; t += 8) parts.push_back(encoder.encode(video[0].narrow(0, t, 8)));
  const auto d = compare_tensors(torch::cat(parts), whole);
  EXPECT_TRUE(d.within(1e-5)) << d.rel;
  EXPECT_THROW(ChunkEncoder(tae, 6), Error);  // history must be whole latent groups
}

TEST(TemporalAutoencoder, ScalingFactorsMapRawLatentsToTheDiTsSpace) {
  auto config = tiny_tae_config();
  config.scaling_factor = 2.5;
  config.shift_factor = 0.3;
  torch::manual_seed(3);
  TemporalAutoencoder scaled(config);
  auto plain = random_tae(3);
  torch::NoGradGuard no_grad;
  const auto video = torch::rand({1, 4, 3, 16, 16}) * 2 - 1;
  const auto raw = plain->encode(video);
  EXPECT_TRUE(compare_tensors(scaled->encode(video), (raw - 0.3) * 2.5).within(1e-6));
  EXPECT_TRUE(compare_tensors(scaled->decode(scaled->encode(video)), plain->decode(raw)).within(1e-5));
}

TEST(TemporalAutoencoder, SaveLoadGivesIdenticalOutputs) {
  test::TempDir dir;
  auto tae = random_tae();
  save_temporal_autoencoder(tae, dir / "tae");
  EXPECT_TRUE(is_temporal_autoencoder_folder(dir / "tae"));
  EXPECT_FALSE(is_temporal_autoencoder_folder(dir.path()));
  auto loaded = load_temporal_autoencoder(dir / "tae");
  torch::NoGradGuard no_grad;
  const auto video = torch::rand({1, 8, 3, 16, 16}) * 2 - 1;
  // (loading prepares the weights for inference, e.g. channels-last, so only rounding may differ)
  const auto d = compare_tensors(loaded->decode(loaded->encode(video)), tae->decode(tae->encode(video)));
  EXPECT_TRUE(d.within(1e-6)) << d.rel;
  const auto original = tae->named_parameters();
  for (const auto& item : loaded->named_parameters()) EXPECT_TRUE(torch::equal(item.value(), original[item.key()])) << item.key();
}

TEST(TemporalAutoencoder, BadInputsAndConfigsNameTheProblem) {
  auto tae = random_tae();
  torch::NoGradGuard no_grad;
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { tae->encode(torch::zeros({1, 6, 3, 16, 16})); }).find("multiple of 4"), std::string::npos);
  EXPECT_NE(message([&] { tae->encode(torch::zeros({1, 8, 3, 12, 16})); }).find("multiples of 8"), std::string::npos);
  EXPECT_NE(message([&] { tae->encode(torch::zeros({1, 8, 1, 16, 16})); }).find("[N, T, 3, H, W]"), std::string::npos);
  EXPECT_NE(message([&] { tae->decode(torch::zeros({1, 2, 3, 2, 2})); }).find("[N, t, 4, h, w]"), std::string::npos);
  auto j = tiny_tae_config().to_json();
  j["temporal_compression"] = 3;
  EXPECT_NE(message([&] { TemporalAutoencoderConfig::from_json(j, "x/config.json"); }).find("x/config.json: temporal_compression 3"),
            std::string::npos);
  j["temporal_compression"] = 16;  // more pools than stages
  EXPECT_THROW(TemporalAutoencoderConfig::from_json(j), Error);
  j = tiny_tae_config().to_json();
  j["block_out_channels"] = "wide";
  EXPECT_NE(message([&] { TemporalAutoencoderConfig::from_json(j, "x/config.json"); }).find("block_out_channels"), std::string::npos);
  j = tiny_tae_config().to_json();
  j["_class_name"] = "StreamDiT";
  EXPECT_THROW(TemporalAutoencoderConfig::from_json(j), Error);
}

TEST(TAETrainer, ReconstructionLossSeesEdgesAndMotion) {
  const auto video = torch::rand({1, 4, 3, 8, 8});
  EXPECT_DOUBLE_EQ(tae_reconstruction_loss(video, video, {}).item<double>(), 0.0);
  // A constant offset costs only in L1; a one-frame flicker also costs in the temporal term.
  auto offset = video + 0.1;
  TAELossWeights only_edges{0, 0, 1, 0}, only_time{0, 0, 0, 1}, only_squares{0, 1, 0, 0};
  EXPECT_NEAR(tae_reconstruction_loss(offset, video, only_squares).item<double>(), 0.01, 1e-6);
  EXPECT_NEAR(tae_reconstruction_loss(offset, video, only_edges).item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(tae_reconstruction_loss(offset, video, only_time).item<double>(), 0.0, 1e-6);
  auto flicker = video.clone();
  flicker[0][2] += 0.1;
  EXPECT_GT(tae_reconstruction_loss(flicker, video, only_time).item<double>(), 0.05);
}

TEST(TAETrainer, SeamTermLooksOnlyAcrossTheBoundariesOfLatentFrameGroups) {
  const auto video = torch::rand({2, 8, 3, 8, 8});
  TAELossWeights only_seams{0, 0, 0, 0, 1};
  // A jump inside a group of 4 (frame 2 against 1) is not a seam; one at frame 4 (the second group's first) is.
  auto inside = video.clone();
  inside.narrow(1, 2, 6) += 0.2;
  EXPECT_NEAR(tae_reconstruction_loss(inside, video, only_seams, 4).item<double>(), 0.0, 1e-6);
  auto across = video.clone();
  across.narrow(1, 4, 4) += 0.2;
  // boundaries: only the entry between frames 3 and 4 in an 8-frame clip, and every element of it jumps 0.2
  EXPECT_NEAR(tae_reconstruction_loss(across, video, only_seams, 4).item<double>(), 0.2, 1e-5);
  EXPECT_NEAR(tae_reconstruction_loss(across, video, only_seams).item<double>(), 0.0, 1e-6);  // no groups given: no term
}

TEST(TAETrainer, DecoderOnlyKeepsTheEncoderAndTheLatentScaling) {
  test::TempDir dir;
  auto data = tae_clip_source();
  TAETrainOptions o;
  o.steps = 20;
  o.batch = 2;
  o.lr = 3e-3;
  o.warmup = 2;
  o.checkpoint_every = 20;
  o.calibration_clips = 2;
  o.out = dir / "base";
  train_temporal_autoencoder(tiny_tae_config(), data, o);
  const auto base = load_temporal_autoencoder(o.out);

  o.init_from = o.out;
  o.out = dir / "decoder";
  o.decoder_only = true;
  o.loss.seam = 2.0;
  train_temporal_autoencoder(tiny_tae_config(), data, o);
  const auto tuned = load_temporal_autoencoder(o.out);
  EXPECT_EQ(tuned->config.scaling_factor, base->config.scaling_factor);
  EXPECT_EQ(tuned->config.shift_factor, base->config.shift_factor);
  const auto before = base->named_parameters(), after = tuned->named_parameters();
  std::int64_t encoder = 0, decoder_moved = 0;
  for (const auto& p : before) {
    if (p.key().rfind("encoder.", 0) == 0) {
      ++encoder;
      EXPECT_TRUE(torch::equal(p.value(), after[p.key()])) << p.key();
    } else if (!torch::equal(p.value(), after[p.key()])) {
      ++decoder_moved;
    }
  }
  EXPECT_GT(encoder, 0);
  EXPECT_GT(decoder_moved, 0);

  TAETrainOptions fresh = o;
  fresh.init_from.clear();
  fresh.out = dir / "nothing-to-keep";
  EXPECT_THROW(train_temporal_autoencoder(tiny_tae_config(), data, fresh), Error);
}

TEST(TAETrainer, LearnsToReconstructShapesResumesAndCalibratesTheLatents) {
  test::TempDir dir;
  auto data = tae_clip_source();
  TAETrainOptions o;
  o.steps = 150;
  o.batch = 4;
  o.lr = 3e-3;
  o.warmup = 5;
  o.checkpoint_every = 30;
  o.ema_decay = 0.9;
  o.calibration_clips = 4;
  o.out = dir / "tae";
  std::vector<double> losses;
  train_temporal_autoencoder(tiny_tae_config(), data, o, [&](const TrainStepInfo& s) { losses.push_back(s.loss); });
  ASSERT_EQ(losses.size(), 150u);
  const double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[147] + losses[148] + losses[149]) / 3;
  EXPECT_LT(last, 0.4 * first) << first << " -> " << last;

  auto tae = load_temporal_autoencoder(o.out);
  EXPECT_NE(tae->config.scaling_factor, 1.0);
  {
  torch::NoGradGuard no_grad;
  const auto stats = measure_latent_statistics(tae, data, 4, o.calibration_seed);
  // the calibrated encode() gives zero mean and unit spread on the clips that calibrated it
  std::vector<torch::Tensor> z;
  for (std::int64_t i = 0; i < 4; ++i) {
    std::mt19937_64 rng(step_seed(o.calibration_seed, static_cast<std::uint64_t>(i), 91));
    z.push_back(tae->encode(data.next(1, rng).video));
  }
  const auto all = torch::cat(z);
  EXPECT_NEAR(all.mean().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(all.pow(2).mean().sqrt().item<double>(), 1.0, 1e-3);
  EXPECT_GT(stats.std, 0.0);

  const auto report = evaluate_temporal_autoencoder(tae, data, 2, 1, 5);
  EXPECT_GT(report.psnr, 10.0);
  EXPECT_NEAR(report.psnr_chunked, report.psnr, 1e-3);  // the default overlap is exact
  EXPECT_EQ(report.frames, 16);
  }

  // resume follows the same curve
  o.steps = 12;
  o.checkpoint_every = 4;
  o.calibration_clips = 0;
  test::expect_resumed_run_follows_the_same_curve(
      o, [&](const TAETrainOptions& opt, const std::function<void(const TrainStepInfo&)>& f) { train_temporal_autoencoder(tiny_tae_config(), data, opt, f); },
      dir / "straight", dir / "split", 10, 8);
}

TEST(TAETrainer, ClipsThatDoNotFillLatentFramesAreRefused) {
  test::TempDir dir;
  auto data = tae_clip_source(6);
  TAETrainOptions o;
  o.steps = 1;
  o.out = dir / "tae";
  try {
    train_temporal_autoencoder(tiny_tae_config(), data, o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("clips of 6 frames"), std::string::npos) << e.what();
  }
}

TEST(DiTVideoCodec, DecodesChunksAsTheWholeStreamAndPassesPixelsThrough) {
  auto tae = random_tae();
  torch::NoGradGuard no_grad;
  DiTVideoCodec pixels;
  EXPECT_FALSE(pixels.latent());
  EXPECT_EQ(pixels.frames_per_latent(), 1);
  const auto frames = torch::rand({2, 3, 8, 8});
  EXPECT_TRUE(torch::equal(pixels.decode(frames), frames));

  DiTVideoCodec codec(tae);
  EXPECT_EQ(codec.frames_per_latent(), 4);
  EXPECT_EQ(codec.spatial_factor(), 8);
  const auto z = torch::randn({6, 4, 2, 2});
  const auto whole = tae->decode(z.unsqueeze(0))[0];
  const auto first = codec.decode(z.narrow(0, 0, 2)), second = codec.decode(z.narrow(0, 2, 4));
  EXPECT_EQ(first.sizes(), (std::vector<std::int64_t>{8, 3, 16, 16}));
  EXPECT_TRUE(compare_tensors(torch::cat({first, second}), whole).within(1e-5));
  codec.reset();  // a new stream: no history from the last one
  EXPECT_TRUE(compare_tensors(codec.decode(z.narrow(0, 2, 2)), tae->decode(z.narrow(0, 2, 2).unsqueeze(0))[0]).within(1e-6));
  const auto video = torch::rand({8, 3, 16, 16}) * 2 - 1;
  EXPECT_TRUE(compare_tensors(codec.encode(video), tae->encode(video.unsqueeze(0))[0]).within(1e-6));
}

TEST(DiTVideoCodec, LatentClipsAndTheModelFoldersAutoencoder) {
  test::TempDir dir;
  auto tae = random_tae();
  save_temporal_autoencoder(tae, dir / "tae");
  EXPECT_FALSE(static_cast<bool>(load_dit_autoencoder(dir / "model")));  // a pixel-space model has none
  attach_dit_autoencoder(dir / "tae", dir / "model");
  auto attached = load_dit_autoencoder(dir / "model");
  ASSERT_TRUE(static_cast<bool>(attached));
  EXPECT_EQ(attached->config.latent_channels, 4);
  EXPECT_THROW(attach_dit_autoencoder(dir.path(), dir / "other"), Error);  // not an autoencoder folder

  LatentClipSource latents(std::make_unique<ProceduralClipSource>(tae_clip_source(16)), tae);
  std::mt19937_64 rng(5), same(5);
  const auto batch = latents.next(2, rng);
  EXPECT_EQ(batch.video.sizes(), (std::vector<std::int64_t>{2, 4, 4, 4, 4}));
  EXPECT_EQ(batch.captions.size(), 2u);
  auto pixels = tae_clip_source(16);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(compare_tensors(batch.video, tae->encode(pixels.next(2, same).video)).within(1e-6));
  EXPECT_NE(latents.describe().find("temporal autoencoder"), std::string::npos);
}

TEST(DiTVideoCodec, RealVideoThroughTheAutoencoderIsScoredAsAStreamDecodesIt) {
  StreamEvalOptions o;
  o.streams = 2;
  o.frames = 16;
  o.window = 8;
  o.edges = EdgeRule::Wrap;
  const auto raw = evaluate_real_streams(32, 32, 8, o);
  DiTVideoCodec pixels;  // pixel space: the video as it is
  const auto same = evaluate_real_streams(32, 32, 8, o, &pixels);
  EXPECT_EQ(same.caption_accuracy, raw.caption_accuracy);
  EXPECT_EQ(same.seam_ratio, raw.seam_ratio);
  // An untrained autoencoder returns no recognisable object.
  DiTVideoCodec codec(random_tae());
  const auto through = evaluate_real_streams(32, 32, 8, o, &codec);
  EXPECT_GT(raw.colour_accuracy, 0.9);
  EXPECT_LT(through.colour_accuracy, raw.colour_accuracy);
  EXPECT_TRUE(std::isfinite(through.seam_ratio));
  test::expect_error_mentions([&] { evaluate_real_streams(32, 32, 6, o, &codec); }, "do not split into chunks of 6 frames of 4");
}

TEST(TAETrainer, StopAtEndsALegThatResumesOnTheSameCurve) {
  test::TempDir dir;
  auto data = tae_clip_source();
  TAETrainOptions o;
  o.steps = 6;
  o.batch = 2;
  o.warmup = 2;
  o.checkpoint_every = 100;
  o.calibration_clips = 0;
  std::vector<double> straight, legs;
  o.out = dir / "straight";
  train_temporal_autoencoder(tiny_tae_config(), data, o, [&](const TrainStepInfo& s) { straight.push_back(s.loss); });
  o.out = dir / "legs";
  o.stop_at = 3;
  const auto first = train_temporal_autoencoder(tiny_tae_config(), data, o, [&](const TrainStepInfo& s) { legs.push_back(s.loss); });
  EXPECT_EQ(first.last_step, 3);
  EXPECT_TRUE(has_training_run(o.out));  // the leg ends with a checkpoint
  o.stop_at = 0;
  o.resume = true;
  train_temporal_autoencoder(tiny_tae_config(), data, o, [&](const TrainStepInfo& s) { legs.push_back(s.loss); });
  ASSERT_EQ(legs.size(), straight.size());
  for (std::size_t i = 0; i < straight.size(); ++i) EXPECT_NEAR(legs[i], straight[i], 1e-6 * std::abs(straight[i])) << "step " << i + 1;
}
