// The live runner with real threads: frames in, images out, bounded queues, prompt hot-swap.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <mutex>
#include <thread>
#include <vector>

#include "streamgen/bounded_queue.h"
#include "streamgen/error.h"
#include "streamgen/safetensors.h"
#include "streamgen/image_io.h"
#include "streamgen/stream_runner.h"
#include "test_util.h"

namespace streamgen {
namespace {

using namespace std::chrono_literals;

StreamRunnerOptions tiny_options() {
  StreamRunnerOptions o;
  o.model = test::data_path("tiny-sd15");
  o.taesd = test::data_path("taesd");
  o.stream.t_index_list = {32, 45};
  o.stream.cfg = CfgType::Self;
  o.prompt = "a photo of an astronaut, oil painting";
  o.width = 128;
  o.height = 128;
  return o;
}

torch::Tensor frame(std::int64_t i) {
  static const auto frames = SafetensorsFile::open(test::data_path("stream/frames_128.safetensors")).tensor("frames_u8");
  return frames[i % frames.size(0)].clone();
}

// Pushes the same frame `count` times and returns the last output: a constant input and settings give a
// constant image once the stream's slots hold it.
torch::Tensor steady_output(StreamRunner& r, int count) {
  torch::Tensor last;
  for (int i = 0; i < count; ++i) {
    r.push(frame(0));
    auto f = r.pop(10s);
    EXPECT_TRUE(f.has_value());
    if (f) last = f->image_u8;
  }
  return last;
}

TEST(BoundedQueue, DropsOldestWhenFullAndDrainsAfterClose) {
  BoundedQueue<int> q(2);
  for (int i = 0; i < 5; ++i) q.push(i);
  EXPECT_EQ(q.dropped(), 3u);
  EXPECT_EQ(q.pop(0ms).value(), 3);
  q.close();
  EXPECT_FALSE(q.push(9));
  EXPECT_EQ(q.pop(0ms).value(), 4);
  EXPECT_FALSE(q.pop(10ms).has_value());
}

TEST(FrameOutlet, NumbersFramesAndHandsThemToTheCallbackOrABoundedQueue) {
  FrameOutlet outlet(2);
  auto frame = [] { return StreamFrame{torch::zeros({3, 2, 2}, torch::kUInt8), -1, false, 1.0}; };
  for (int i = 0; i < 3; ++i) outlet.deliver(frame());  // nobody reads: frame 0 is dropped
  StreamStats s;
  outlet.add_to(s);
  EXPECT_EQ(s.frames_out, 3u);
  EXPECT_EQ(s.outputs_dropped, 1u);
  EXPECT_EQ(outlet.pop(10ms)->index, 1);
  EXPECT_EQ(outlet.pop(10ms)->index, 2);

  std::vector<std::int64_t> seen;
  outlet.set_callback([&](const StreamFrame& f) { seen.push_back(f.index); });
  std::this_thread::sleep_for(5ms);
  outlet.deliver(frame());
  EXPECT_EQ(seen, std::vector<std::int64_t>{3});
  EXPECT_FALSE(outlet.pop(10ms).has_value());  // the callback took it
  outlet.add_to(s);
  EXPECT_GT(s.output_fps, 0.0);

  outlet.set_callback({});
  outlet.deliver(frame());
  outlet.close();
  EXPECT_EQ(outlet.pop(10ms)->index, 4);  // back to the queue; drains after close
  EXPECT_FALSE(outlet.pop(10ms).has_value());
}

TEST(StreamRunner, FramesInImagesOutWithStageTimings) {
  StreamRunner runner(tiny_options());
  std::vector<StreamFrame> got;
  for (int i = 0; i < 4; ++i) {
    runner.push(frame(i));
    auto f = runner.pop(10s);
    ASSERT_TRUE(f.has_value()) << "no output for frame " << i;
    got.push_back(*f);
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].index, static_cast<std::int64_t>(i));
    EXPECT_EQ(got[i].image_u8.sizes(), (std::vector<std::int64_t>{3, 128, 128}));
    EXPECT_GT(got[i].latency_ms, 0);
  }
  const auto s = runner.stats();
  EXPECT_EQ(s.frames_in, 4u);
  EXPECT_EQ(s.calls, 4u);
  EXPECT_EQ(s.frames_out, 4u);
  for (const char* stage : {"preprocess", "encode", "unet", "decode", "text_encoder", "latency"})
    EXPECT_TRUE(s.stages.count(stage)) << stage;
  runner.stop();
  EXPECT_FALSE(runner.pop(10ms).has_value());
}

TEST(StreamRunner, FrameBufferOfTwoTakesAndGivesTwoFramesPerCall) {
  auto o = tiny_options();
  o.stream.frame_buffer_size = 2;
  o.input_capacity = 8;  // this test feeds faster than real time and wants every frame
  o.output_capacity = 8;
  auto run = [&] {
    StreamRunner runner(o);
    for (int i = 0; i < 6; ++i) runner.push(frame(i));
    std::vector<torch::Tensor> out;
    for (int i = 0; i < 6; ++i) {
      auto f = runner.pop(20s);
      if (!f) break;
      EXPECT_EQ(f->index, i);
      out.push_back(f->image_u8);
    }
    const auto s = runner.stats();
    EXPECT_EQ(s.calls, 3u);  // six frames, two per UNet call
    EXPECT_EQ(s.frames_out, 6u);
    return out;
  };
  const auto a = run(), b = run();
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "frame " << i << " is not reproducible";
  EXPECT_FALSE(torch::equal(a[4], a[5]));  // the two frames of a call are different frames

  o.ssf = SimilarityFilterOptions{0.98, 10, false};
  EXPECT_THROW(StreamRunner{o}, Error);
}

TEST(StreamRunner, OutputCallback) {
  StreamRunner runner(tiny_options());
  std::mutex m;
  std::vector<std::int64_t> seen;
  runner.set_output_callback([&](const StreamFrame& f) {
    std::lock_guard lock(m);
    seen.push_back(f.index);
  });
  for (int i = 0; i < 3; ++i) {
    runner.push(frame(i));
    for (int w = 0; w < 1000; ++w) {
      {
        std::lock_guard lock(m);
        if (static_cast<int>(seen.size()) > i) break;
      }
      std::this_thread::sleep_for(10ms);
    }
  }
  runner.stop();
  EXPECT_EQ(seen, (std::vector<std::int64_t>{0, 1, 2}));
  EXPECT_FALSE(runner.pop(10ms).has_value());  // delivered to the callback, not queued
}

TEST(StreamRunner, OverloadDropsInputsInsteadOfQueueing) {
  StreamRunner runner(tiny_options());
  for (int i = 0; i < 200; ++i) runner.push(frame(i));  // far faster than the model runs
  std::this_thread::sleep_for(300ms);
  runner.stop();
  const auto s = runner.stats();
  EXPECT_EQ(s.frames_in, 200u);
  EXPECT_GT(s.inputs_dropped, 100u);
  EXPECT_LE(s.calls + s.inputs_dropped, 200u);  // nothing hoarded: every frame was processed or dropped
}

TEST(StreamRunner, PromptChangeTakesEffectWithoutReset) {
  StreamRunner runner(tiny_options());
  auto run_steady = [&](int count) { return steady_output(runner, count); };
  const auto before = run_steady(3);
  const auto again = run_steady(2);
  EXPECT_TRUE(torch::equal(before, again)) << "a constant frame and prompt give a constant image";
  runner.set_prompt("a watercolor portrait of a cat wearing a hat");
  // The prompt thread encodes off the hot path; wait until it has published.
  for (int i = 0; i < 1000 && runner.stats().stages.at("text_encoder").count < 2; ++i) std::this_thread::sleep_for(10ms);
  const auto after = run_steady(3);
  EXPECT_FALSE(torch::equal(before, after));
  EXPECT_EQ(runner.stats().stages.at("text_encoder").count, 2);
  runner.set_prompt("a watercolor portrait of a cat wearing a hat");  // unchanged: not encoded again
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(runner.stats().stages.at("text_encoder").count, 2);
}

TEST(StreamRunner, LoraScaleChangesReachTheUNetAndThePromptLive) {
  const auto lora = test::data_path("lora/tiny-sd15_kohya_r4.safetensors");
  auto o = tiny_options();
  o.adapters.loras = {{lora, 1.0}};
  StreamRunner live(o);
  const auto at_one = steady_output(live, 4);
  EXPECT_GE(live.set_lora_scales({0.5}), 0.0);
  // The prompt thread sees the text encoder's new weights and encodes the prompt again, with no frame needed.
  for (int i = 0; i < 1000 && live.stats().stages.at("text_encoder").count < 2; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(live.stats().stages.at("text_encoder").count, 2);
  const auto changed = steady_output(live, 4);

  o.adapters.loras = {{lora, 0.5}};
  StreamRunner fresh(o);
  const auto at_half = steady_output(fresh, 4);
  EXPECT_FALSE(torch::equal(at_one, at_half));
  EXPECT_TRUE(torch::equal(changed, at_half)) << "a live change gives the stream a fresh start at that scale would";

  StreamRunner plain(tiny_options());
  test::expect_error_mentions([&] { plain.set_lora_scales({0.5}); }, "no LoRA is loaded");
  test::expect_error_mentions([&] { live.set_lora_scales({0.5, 1.0}); }, "2 given, 1 LoRA(s) loaded");
  o.adapters.lora_rescale = LoraRescale::Never;
  StreamRunner fixed(o);
  test::expect_error_mentions([&] { fixed.set_lora_scales({1.0}); }, "fixed LoRA scales");
}

TEST(StreamRunner, ControlNetsRunWithTheUNetWithLiveScalesAndSources) {
  StreamRunner plain(tiny_options());
  const auto without = steady_output(plain, 4);
  auto o = tiny_options();
  o.adapters.controlnets = {test::data_path("controlnet")};
  o.controlnet_scales = {0.0};
  StreamRunner controlled(o);
  EXPECT_TRUE(torch::equal(steady_output(controlled, 4), without)) << "a ControlNet at scale 0 is not run";
  controlled.set_controlnet_scales({1.0});
  const auto edges = steady_output(controlled, 4);
  EXPECT_FALSE(torch::equal(edges, without));
  EXPECT_GE(controlled.stats().stages.at("control").count, 4);
  controlled.set_control(parse_control_source("frame", 128, 128));
  EXPECT_FALSE(torch::equal(steady_output(controlled, 4), edges));
  test::expect_error_mentions([&] { controlled.set_controlnet_scales({1.0, 1.0}); }, "2 given, 1 ControlNet(s) loaded");

  o.stream.txt2img = true;
  o.stream.cfg = CfgType::None;
  test::expect_error_mentions([&] { StreamRunner r(o); }, "a txt2img stream has no input frames");
  test::TempDir dir;
  write_png(dir / "edges.png", canny_edges(frame(1)));
  o.control = parse_control_source((dir / "edges.png").string(), 128, 128);
  o.controlnet_scales = {1.0};
  StreamRunner txt2img(o);
  EXPECT_TRUE(txt2img.pop(20s).has_value());
  o.adapters.controlnets = {test::data_path("taesd")};
  test::expect_error_mentions([&] { StreamRunner r(o); }, "not a ControlNet folder");
}

TEST(ControlImage, CannyEdgesAreWhiteOnBlackInThreeEqualChannels) {
  auto image = torch::zeros({3, 64, 64}, torch::kUInt8);
  image.index_put_({torch::indexing::Slice(), torch::indexing::Slice(16, 48), torch::indexing::Slice(16, 48)}, 200);
  const auto edges = canny_edges(image);
  EXPECT_EQ(edges.sizes(), (std::vector<std::int64_t>{3, 64, 64}));
  EXPECT_TRUE(torch::equal(edges[0], edges[2]));
  EXPECT_EQ(edges.max().item<int>(), 255);
  using torch::indexing::Slice;
  EXPECT_EQ(edges[0][32][32].item<int>(), 0);  // inside the square and far outside it: no edge
  EXPECT_EQ(edges[0][4][4].item<int>(), 0);
  EXPECT_EQ(edges[0].index({Slice(14, 18), 32}).max().item<int>(), 255);  // its top and left sides are edges
  EXPECT_EQ(edges[0].index({32, Slice(14, 18)}).max().item<int>(), 255);
  test::expect_error_mentions([] { parse_control_source("nope.png", 64, 64); }, "expected canny, frame, or an image file");
}

TEST(StreamRunner, PromptBlendMovesGraduallyToTheNewPrompt) {
  auto steady = [](StreamRunner& r, int count) { return steady_output(r, count).to(torch::kFloat32); };
  auto wait_encoded = [](StreamRunner& r, int count) {
    for (int i = 0; i < 1000 && r.stats().stages.at("text_encoder").count < count; ++i) std::this_thread::sleep_for(10ms);
  };
  const std::string target = "a watercolor portrait of a cat wearing a hat";
  StreamRunner direct(tiny_options());
  steady(direct, 3);
  direct.set_prompt(target);
  wait_encoded(direct, 2);
  const auto end = steady(direct, 8);

  StreamRunner blended(tiny_options());
  const auto start = steady(blended, 3);
  blended.set_prompt(target, "", 4);
  wait_encoded(blended, 2);
  const auto first = steady(blended, 1);
  const auto settled = steady(blended, 7);
  // The first blended frame sits between the two prompts; once the blend is over it is the new prompt's.
  EXPECT_GT((first - start).abs().sum().item<double>(), 0);
  EXPECT_GT((first - end).abs().sum().item<double>(), 0);
  EXPECT_TRUE(torch::equal(settled, end));
}

TEST(StreamRunner, Txt2ImgStreamAndBadFrames) {
  auto o = tiny_options();
  o.stream.txt2img = true;
  o.stream.cfg = CfgType::None;
  o.stream.t_index_list = {0, 16, 32, 45};
  o.stream.warmup = Warmup::Suppress;
  StreamRunner t2i(o);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(t2i.pop(10s).has_value());
  t2i.stop();

  StreamRunner runner(tiny_options());
  EXPECT_THROW(runner.push(torch::zeros({3, 64, 64}, torch::kUInt8)), Error);
  EXPECT_THROW(runner.push(torch::zeros({3, 128, 128})), Error);
  auto bad = tiny_options();
  bad.width = 100;
  EXPECT_THROW(StreamRunner{bad}, Error);
}

}  // namespace
}  // namespace streamgen
