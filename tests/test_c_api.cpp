// The C API as a host sees it: linked against libstreamgen.so and streamgen.h alone (no LibTorch, no C++
// engine headers), on the test pipelines; and the C example, built from examples/, run on a video file.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "streamgen/streamgen.h"

namespace {

std::string data(const std::string& name) { return std::string(STREAMGEN_TEST_DATA) + "/" + name; }

class TempDir {
 public:
  TempDir() : path_(std::filesystem::temp_directory_path() / ("streamgen-capi-" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A test pattern: a gradient with a square at a position that moves with `t`, RGB packed.
std::vector<std::uint8_t> pattern(int width, int height, int t) {
  std::vector<std::uint8_t> p(static_cast<std::size_t>(width * height * 3));
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const bool square = x >= 8 + 4 * t && x < 28 + 4 * t && y >= 10 && y < 30;
      auto* px = &p[static_cast<std::size_t>((y * width + x) * 3)];
      px[0] = static_cast<std::uint8_t>(square ? 230 : x * 255 / width);
      px[1] = static_cast<std::uint8_t>(square ? 40 : y * 255 / height);
      px[2] = static_cast<std::uint8_t>(square ? 60 : 128);
    }
  return p;
}

// The same pixels as BGRA rows of `stride` bytes.
std::vector<std::uint8_t> as_bgra(const std::vector<std::uint8_t>& rgb, int width, int height, std::size_t stride) {
  std::vector<std::uint8_t> out(stride * static_cast<std::size_t>(height), 7);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const auto* s = &rgb[static_cast<std::size_t>((y * width + x) * 3)];
      auto* d = &out[static_cast<std::size_t>(y) * stride + static_cast<std::size_t>(x) * 4];
      d[0] = s[2];
      d[1] = s[1];
      d[2] = s[0];
      d[3] = 99;
    }
  return out;
}

struct Pipeline {
  sg_pipeline* p = nullptr;
  explicit Pipeline(const std::string& model, const char* taesd = nullptr) {
    sg_pipeline_options o;
    sg_pipeline_options_init(&o);
    o.model = model.c_str();
    o.taesd = taesd;
    EXPECT_EQ(sg_pipeline_load(&o, &p), SG_OK) << sg_last_error();
  }
  ~Pipeline() { sg_pipeline_destroy(p); }
};

sg_stream* start(sg_pipeline* p, int size, const char* prompt = "oil painting") {
  sg_stream_options o;
  sg_stream_options_init(&o);
  o.width = o.height = size;
  o.prompt = prompt;
  o.fps = 0;
  sg_stream* s = nullptr;
  EXPECT_EQ(sg_stream_create(p, &o, &s), SG_OK) << sg_pipeline_last_error(p);
  return s;
}

TEST(CApi, VersionBuildInfoAndStatusNames) {
  EXPECT_STREQ(sg_version(), "0.1.0");
  const std::string info = sg_build_info();
  EXPECT_NE(info.find("\"api_version\":1"), std::string::npos) << info;
  EXPECT_NE(info.find("\"libtorch\""), std::string::npos) << info;
  EXPECT_STREQ(sg_status_name(SG_NO_FRAME), "SG_NO_FRAME");
  EXPECT_EQ(sg_set_log_level("warn"), SG_OK);
  EXPECT_EQ(sg_set_log_level("loud"), SG_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sg_last_error()).find("'loud' is not one of off, error, warn, info, debug"), std::string::npos);
}

TEST(CApi, BadArgumentsAreNamedNotCrashes) {
  sg_pipeline* p = nullptr;
  EXPECT_EQ(sg_pipeline_load(nullptr, &p), SG_INVALID_ARGUMENT);
  sg_pipeline_options o{};
  o.model = "x";
  EXPECT_EQ(sg_pipeline_load(&o, &p), SG_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sg_last_error()).find("call sg_pipeline_options_init"), std::string::npos) << sg_last_error();
  sg_pipeline_options_init(&o);
  o.model = "/no/such/model";
  EXPECT_EQ(sg_pipeline_load(&o, &p), SG_ERROR);
  EXPECT_NE(std::string(sg_last_error()).find("/no/such/model"), std::string::npos) << sg_last_error();
  const auto sd = data("tiny-sd21");
  o.model = sd.c_str();
  EXPECT_EQ(sg_pipeline_load(&o, &p), SG_ERROR);
  EXPECT_NE(std::string(sg_last_error()).find("its streams need a TAESD folder"), std::string::npos) << sg_last_error();
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(sg_stream_push(nullptr, nullptr, 1, 1, 0, SG_PIXEL_RGB8), SG_INVALID_ARGUMENT);
  sg_pipeline_destroy(nullptr);
  sg_stream_destroy(nullptr);
}

// Frames of any size, stride and channel order go in; outputs come out in the caller's layout. The same
// picture as packed RGB and as padded BGRA gives two seeded streams the same output, byte for byte.
TEST(CApi, Img2ImgFramesInAnyLayoutAndOutputsInTheCallersLayout) {
  const auto taesd = data("taesd");
  Pipeline pipeline(data("tiny-sd21"), taesd.c_str());
  ASSERT_NE(pipeline.p, nullptr);
  EXPECT_STREQ(sg_pipeline_kind(pipeline.p), "stable-diffusion");
  sg_stream* a = start(pipeline.p, 64);
  sg_stream* b = start(pipeline.p, 64);
  const int w = 96, h = 80;
  const auto rgb = pattern(w, h, 0);
  const std::size_t stride = w * 4 + 16;
  const auto bgra = as_bgra(rgb, w, h, stride);
  ASSERT_EQ(sg_stream_push(a, rgb.data(), w, h, 0, SG_PIXEL_RGB8), SG_OK) << sg_stream_last_error(a);
  ASSERT_EQ(sg_stream_push(b, bgra.data(), w, h, stride, SG_PIXEL_BGRA8), SG_OK) << sg_stream_last_error(b);
  std::vector<std::uint8_t> out_a(64 * 64 * 3), out_b(64 * 64 * 3), small(100);
  sg_frame fa{out_a.data(), out_a.size(), SG_PIXEL_RGB8, 0, 0, 0, 0, 0, 0};
  ASSERT_EQ(sg_stream_pop(a, 60000, &fa), SG_OK) << sg_stream_last_error(a);
  EXPECT_EQ(fa.width, 64);
  EXPECT_EQ(fa.height, 64);
  EXPECT_EQ(fa.stride, 64u * 3);
  EXPECT_GT(fa.latency_ms, 0);
  // A buffer too small is refused before anything is popped: the frame waits for a good one.
  sg_frame too_small{small.data(), small.size(), SG_PIXEL_RGB8, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(sg_stream_pop(b, 60000, &too_small), SG_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sg_stream_last_error(b)).find("holds 100 bytes; a 64x64 frame needs 12288"), std::string::npos) << sg_stream_last_error(b);
  sg_frame fb{out_b.data(), out_b.size(), SG_PIXEL_RGB8, 0, 0, 0, 0, 0, 0};
  ASSERT_EQ(sg_stream_pop(b, 60000, &fb), SG_OK);
  EXPECT_EQ(out_a, out_b) << "the same picture in two layouts";
  // In the caller's BGRA layout: the same pixels, alpha 255.
  std::vector<std::uint8_t> out_bgra(64 * 64 * 4);
  ASSERT_EQ(sg_stream_push(a, rgb.data(), w, h, 0, SG_PIXEL_RGB8), SG_OK);
  sg_frame fx{out_bgra.data(), out_bgra.size(), SG_PIXEL_BGRA8, 0, 0, 0, 0, 0, 0};
  ASSERT_EQ(sg_stream_pop_latest(a, 60000, &fx), SG_OK);
  EXPECT_EQ(out_bgra[3], 255);
  EXPECT_EQ(sg_stream_pop(a, 0, &fa), SG_NO_FRAME);

  EXPECT_EQ(sg_stream_set_prompt(a, "a watercolour", nullptr, 2), SG_OK);
  sg_stats st{};
  st.struct_size = sizeof st;
  ASSERT_EQ(sg_stream_stats(a, &st), SG_OK);
  EXPECT_EQ(st.frames_in, 2u);
  EXPECT_EQ(st.frames_out, 2u);
  EXPECT_GT(st.model_ms_median, 0);
  EXPECT_NE(std::string(sg_stream_stats_json(a)).find("\"stages\""), std::string::npos);
  EXPECT_EQ(sg_stream_push(a, rgb.data(), w, h, 10, SG_PIXEL_RGB8), SG_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sg_stream_last_error(a)).find("stride 10 is less than a row of 96 pixels (288 bytes)"), std::string::npos);
  sg_stream_destroy(a);
  sg_stream_destroy(b);
}

TEST(CApi, TextToVideoStreamsFromAStreamDiTModel) {
  Pipeline pipeline(std::string(STREAMGEN_MODELS) + "/streamdit-shapes-32-student");
  ASSERT_NE(pipeline.p, nullptr);
  EXPECT_STREQ(sg_pipeline_kind(pipeline.p), "streamdit");
  sg_stream* s = start(pipeline.p, 64, "a red circle moving right");
  int width = 0, height = 0;
  ASSERT_EQ(sg_stream_size(s, &width, &height), SG_OK);
  EXPECT_EQ(width, 64);
  EXPECT_EQ(height, 64);
  std::vector<std::uint8_t> out(64 * 64 * 4);
  for (int i = 0; i < 3; ++i) {
    sg_frame f{out.data(), out.size(), SG_PIXEL_RGBA8, 0, 0, 0, 0, 0, 0};
    ASSERT_EQ(sg_stream_pop(s, 60000, &f), SG_OK) << sg_stream_last_error(s);
    EXPECT_EQ(f.width, 64);
    EXPECT_EQ(f.index, static_cast<std::uint64_t>(i));
  }
  EXPECT_EQ(sg_stream_set_prompt(s, "a blue square moving up", nullptr, 0), SG_OK);
  const auto rgb = pattern(64, 64, 0);
  EXPECT_EQ(sg_stream_push(s, rgb.data(), 64, 64, 0, SG_PIXEL_RGB8), SG_ERROR);
  EXPECT_NE(std::string(sg_stream_last_error(s)).find("takes no input frames"), std::string::npos);
  sg_stream_destroy(s);
}

// examples/stream_video.c, as built: a video in, the stylised video out, one frame per frame.
TEST(CApi, TheCExampleStreamsAVideoFile) {
  TempDir dir;
  const auto in = dir / "in.mp4", out = dir / "out.mp4";
  sg_sink* sink = nullptr;
  ASSERT_EQ(sg_sink_open(in.c_str(), 12, &sink), SG_OK) << sg_last_error();
  for (int t = 0; t < 5; ++t) {
    const auto p = pattern(96, 80, t);
    ASSERT_EQ(sg_sink_write(sink, p.data(), 96, 80, 0, SG_PIXEL_RGB8), SG_OK) << sg_last_error();
  }
  ASSERT_EQ(sg_sink_close(sink), SG_OK) << sg_last_error();
  const std::string cmd = std::string(STREAMGEN_EXAMPLE) + " " + data("tiny-sd21") + " " + data("taesd") + " " + in + " " + out +
                          " 'oil painting' 64 > " + (dir / "log.txt") + " 2>&1";
  const int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << cmd;
  sg_source* source = nullptr;
  ASSERT_EQ(sg_source_open(out.c_str(), &source), SG_OK) << sg_last_error();
  int width = 0, height = 0;
  double fps = 0;
  ASSERT_EQ(sg_source_info(source, &width, &height, &fps, nullptr), SG_OK);
  EXPECT_EQ(width, 64);
  EXPECT_EQ(height, 64);
  EXPECT_NEAR(fps, 12, 0.01);
  std::vector<std::uint8_t> pixels(64 * 64 * 3);
  int frames = 0;
  for (;;) {
    sg_frame f{pixels.data(), pixels.size(), SG_PIXEL_RGB8, 0, 0, 0, 0, 0, 0};
    const auto s = sg_source_next(source, &f);
    if (s == SG_END) break;
    ASSERT_EQ(s, SG_OK) << sg_last_error();
    ++frames;
  }
  sg_source_close(source);
  EXPECT_EQ(frames, 5);
}

}  // namespace
