// The live StreamDiT stream behind LiveStream: the frames it hands out are the sampler's frames,
// in order, at no more than the requested pace; it refuses input frames; a prompt change is taken
// while it runs; stop() ends it promptly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <mutex>
#include <thread>

#include "streamgen/dit_codec.h"
#include "streamgen/dit_runner.h"
#include "streamgen/dit_stream.h"
#include "streamgen/error.h"
#include "dit_test_util.h"

namespace streamgen {
namespace {

DiTRunnerOptions runner_options(double fps) {
  DiTRunnerOptions o;
  o.loaded = test::random_tiny_dit(3);
  o.sampler.chunk_frames = 2;
  o.sampler.micro_steps = 2;
  o.sampler.seed = 11;
  o.prompt = "a red circle moving left";
  o.width = o.height = 24;
  o.fps = fps;
  return o;
}

TEST(DiTRunner, HandsOutTheSamplersFramesInOrder) {
  auto o = runner_options(0);
  o.output_capacity = 1000;  // pop() keeps the latest frames when the reader falls behind; here it may not drop
  StreamDiTSampler reference(o.loaded, o.sampler);
  reference.set_prompt(o.prompt);
  std::vector<torch::Tensor> expected;
  for (int i = 0; i < 3; ++i) {
    const auto u8 = dit_frames_to_u8(reference.step(), 24, 24);
    for (std::int64_t f = 0; f < u8.size(0); ++f) expected.push_back(u8[f]);
  }
  DiTRunner runner(o);
  EXPECT_THROW(runner.push(torch::zeros({3, 24, 24}, torch::kUInt8)), Error);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const auto frame = runner.pop(std::chrono::seconds(20));
    ASSERT_TRUE(frame) << "frame " << i;
    EXPECT_EQ(frame->index, static_cast<std::int64_t>(i));
    EXPECT_TRUE(torch::equal(frame->image_u8, expected[i])) << "frame " << i;
  }
  runner.stop();
  const auto s = runner.stats();
  EXPECT_GE(s.frames_out, expected.size());
  EXPECT_GE(s.calls, 3u);
  for (const char* stage : {"dit", "decode", "latency", "text_encoder"}) EXPECT_EQ(s.stages.count(stage), 1u) << stage;
}

TEST(DiTRunner, NeverFasterThanTheRequestedPace) {
  // Load only ever makes it slower, so a lower bound on the time is safe: 9 intervals of 1/20 s.
  DiTRunner runner(runner_options(20));
  std::mutex mutex;
  std::vector<std::chrono::steady_clock::time_point> at;
  auto count = [&] {
    std::lock_guard lock(mutex);
    return at.size();
  };
  runner.set_output_callback([&](const StreamFrame&) {
    std::lock_guard lock(mutex);
    if (at.size() < 10) at.push_back(std::chrono::steady_clock::now());
  });
  for (int i = 0; i < 400 && count() < 10; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  runner.stop();
  ASSERT_EQ(at.size(), 10u);
  EXPECT_GE(std::chrono::duration<double>(at.back() - at.front()).count(), 9 * 0.05 - 0.01);
}

TEST(DiTRunner, TakesPromptsWhileRunningAndStopsWhileAheadOfItsReader) {
  // Nobody reads after the first frames: generation fills its queue and waits; stop() must still
  // end both threads at once. (When a new caption applies is the sampler's contract, tested there.)
  auto o = runner_options(0);
  o.ahead_frames = 2;
  DiTRunner runner(o);
  ASSERT_TRUE(runner.pop(std::chrono::seconds(20)));
  runner.set_prompt("a blue square moving up");
  EXPECT_EQ(runner.unknown_words("a purple square"), (std::vector<std::string>{"purple"}));
  ASSERT_TRUE(runner.pop(std::chrono::seconds(20)));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = std::chrono::steady_clock::now();
  runner.stop();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  EXPECT_TRUE(runner.error().empty()) << runner.error();
}

}  // namespace
}  // namespace streamgen

namespace streamgen {
namespace {

// A latent model behind the live runner: each chunk of c latent frames comes out as c·r_t RGB
// frames at the pixel size, decoded as one stream (equal to decoding the sampler's chunks in order).
TEST(DiTRunner, ALatentModelsChunksComeOutDecoded) {
  auto config = test::tiny_dit_config();
  config.in_channels = 4;
  config.patch_size = 1;
  config.sample_height = config.sample_width = 2;
  config.window = {8, 2, 2};
  torch::manual_seed(4);
  StreamDiT dit(config);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : dit->parameters()) p.normal_(0.0, 0.05);
  }
  TemporalAutoencoderConfig tc;
  tc.latent_channels = 4;
  tc.block_out_channels = {8, 8, 8};
  TemporalAutoencoder tae(tc);
  tae->eval();

  DiTRunnerOptions o;
  o.loaded = dit;
  o.loaded_autoencoder = tae;
  o.sampler.chunk_frames = 2;
  o.sampler.micro_steps = 1;
  o.sampler.seed = 5;
  o.prompt = "red circle";
  o.fps = 0;
  o.output_capacity = 1000;
  StreamDiTSampler reference(dit, o.sampler);
  reference.set_prompt(o.prompt);
  DiTVideoCodec codec(tae);
  std::vector<torch::Tensor> expected;
  for (int i = 0; i < 2; ++i) {
    const auto u8 = dit_frames_to_u8(codec.decode(reference.step()), 0, 0);
    for (std::int64_t f = 0; f < u8.size(0); ++f) expected.push_back(u8[f]);
  }
  ASSERT_EQ(expected.size(), 16u);  // 2 steps x 2 latent frames x 4 RGB frames
  DiTRunner runner(o);
  EXPECT_EQ(runner.output_width(), 16);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const auto frame = runner.pop(std::chrono::seconds(20));
    ASSERT_TRUE(frame) << "frame " << i;
    EXPECT_EQ(frame->image_u8.sizes(), (std::vector<std::int64_t>{3, 16, 16}));
    EXPECT_TRUE(torch::equal(frame->image_u8, expected[i])) << "frame " << i;
  }
  runner.stop();
}

}  // namespace
}  // namespace streamgen
