// Media I/O: videos this test writes itself through FFmpeg (a moving pattern) read back with their
// frame counts, sizes, timestamps and content; photos and folders; every error case names its source.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

#include "streamgen/error.h"
#include "streamgen/image_io.h"
#include "streamgen/image_tensor.h"
#include "streamgen/media.h"
#include "streamgen/media_pipeline.h"
#include "test_util.h"

namespace streamgen {
namespace {

// A square moving one pixel column per frame over a gradient: motion and colour both visible.
torch::Tensor pattern(std::int64_t i, std::int64_t w, std::int64_t h) {
  auto x = torch::linspace(0, 255, w).view({1, 1, w}).expand({3, h, w}).clone();
  x[1] = 255 - x[1];
  const auto s = std::min(w, h) / 3;
  x.narrow(1, h / 3, s).narrow(2, (4 * i) % (w - s), s).fill_(255);
  return x.round().to(torch::kUInt8);
}

using test::expect_error_mentions;

struct Container {
  std::string ext, codec;
  double min_psnr;
};

class VideoRoundTrip : public ::testing::TestWithParam<Container> {};

TEST_P(VideoRoundTrip, FramesSizesTimestampsAndContent) {
  test::TempDir dir;
  const auto path = (dir / ("clip" + GetParam().ext)).string();
  constexpr std::int64_t kFrames = 30, kW = 96, kH = 64;
  constexpr double kFps = 24;
  {
    SinkOptions o;
    o.fps = kFps;
    o.codec = GetParam().codec;
    auto sink = open_sink(path, o);
    for (std::int64_t i = 0; i < kFrames; ++i) sink->write(pattern(i, kW, kH));
    sink->close();
  }
  auto src = open_source(path);
  EXPECT_EQ(src->info().kind, "video");
  EXPECT_EQ(src->info().width, kW);
  EXPECT_EQ(src->info().height, kH);
  EXPECT_NEAR(src->info().fps, kFps, 1e-6);
  EXPECT_FALSE(src->info().live);
  std::int64_t n = 0;
  while (auto f = src->next()) {
    EXPECT_EQ(f->index, n);
    EXPECT_NEAR(f->time_s, static_cast<double>(n) / kFps, 1e-3) << "frame " << n;
    ASSERT_EQ(f->rgb.sizes(), (std::vector<std::int64_t>{3, kH, kW}));
    EXPECT_GT(psnr_db(image_u8_to_unit_range(f->rgb.unsqueeze(0)), pattern(n, kW, kH).unsqueeze(0)), GetParam().min_psnr) << "frame " << n;
    ++n;
  }
  EXPECT_EQ(n, kFrames);
  EXPECT_FALSE(src->next().has_value());  // stays at the end
}

INSTANTIATE_TEST_SUITE_P(Containers, VideoRoundTrip,
                         ::testing::Values(Container{".mp4", "", 30}, Container{".mkv", "mpeg4", 25}, Container{".webm", "", 25},
                                           Container{".avi", "mpeg4", 25}),
                         [](const auto& info) { return info.param.ext.substr(1) + (info.param.codec.empty() ? "" : "_" + info.param.codec); });

TEST(Media, ImagesOverThePixelBudgetAreRefusedFromTheirHeader) {
  // 16000x16000 claimed by 33 bytes: refused before the decoder allocates 768 MB for it.
  test::expect_error_mentions([] { decode_image(test::png_header_claiming(16000, 16000), "the frame"); },
                              "cannot decode the frame: 16000x16000 pixels is more than the 16777216 accepted");
  test::expect_error_mentions([] { decode_image(test::png_header_claiming(64, 64), "the frame", 32 * 32); },
                              "64x64 pixels is more than the 1024 accepted");
  // Within the budget the header passes and the missing image data is the error.
  test::expect_error_mentions([] { decode_image(test::png_header_claiming(64, 64), "the frame"); }, "cannot decode the frame: ");
  // A real image exactly at the budget decodes.
  const auto jpeg = encode_jpeg(pattern(1, 32, 24));
  EXPECT_EQ(decode_image(jpeg, "the frame", 32 * 24).sizes(), (std::vector<std::int64_t>{1, 3, 24, 32}));
  test::expect_error_mentions([&] { decode_image(jpeg, "the frame", 32 * 24 - 1); }, "32x24 pixels is more than the 767 accepted");
  // A corrupt JPEG leaves nothing behind: the next good one on the same thread decodes.
  test::expect_error_mentions([&] { decode_image(jpeg.substr(0, 40), "the frame"); }, "cannot decode the frame: ");
  EXPECT_EQ(decode_image(jpeg, "the frame").sizes(), (std::vector<std::int64_t>{1, 3, 24, 32}));
  // stb's other decoders (GIF, PSD, TGA, HDR, PIC, PNM) are never reached.
  for (const std::string other : {"GIF89a\x01\x00\x01\x00\x00\x00\x00", "8BPS\x00\x01", "P6\n1 1\n255\n\x00\x00\x00", "#?RADIANCE\n"})
    test::expect_error_mentions([&] { decode_image(other, "the frame"); }, "cannot decode the frame: not a PNG, JPEG or BMP file");
}

TEST(Media, PhotoFolderAndGlobSources) {
  auto photo = open_source(test::data_path("astronaut_512.png").string());
  EXPECT_EQ(photo->info().kind, "images");
  EXPECT_EQ(photo->info().frame_count, 1);
  const auto f = photo->next();
  ASSERT_TRUE(f.has_value());
  EXPECT_TRUE(torch::equal(f->rgb, read_image(test::data_path("astronaut_512.png"))[0]));
  EXPECT_FALSE(photo->next().has_value());

  test::TempDir dir;
  for (int i = 0; i < 3; ++i) write_png(dir / ("f" + std::to_string(i) + ".png"), pattern(i, 32, 24));
  test::write_bytes(dir / "notes.txt", "not an image");
  auto folder = open_source(dir.path().string());
  EXPECT_EQ(folder->info().frame_count, 3);
  EXPECT_EQ(folder->info().width, 32);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(folder->next()->rgb, pattern(i, 32, 24)));
  EXPECT_FALSE(folder->next().has_value());
  auto glob = open_source((dir / "f[12].png").string());
  EXPECT_EQ(glob->info().frame_count, 2);
  EXPECT_TRUE(torch::equal(glob->next()->rgb, pattern(1, 32, 24)));
}

TEST(Media, PngFolderSinkWritesNumberedFramesWithText) {
  test::TempDir dir;
  SinkOptions o;
  o.png_text = {{"prompt", "a cat"}};
  auto sink = open_sink((dir / "out").string(), o);
  for (int i = 0; i < 2; ++i) sink->write(pattern(i, 16, 16));
  sink->close();
  EXPECT_TRUE(torch::equal(read_image(dir / "out/frame_00001.png")[0], pattern(1, 16, 16)));
  EXPECT_EQ(read_png_text(dir / "out/frame_00000.png").at("prompt"), "a cat");
}

TEST(Media, ErrorsNameTheSource) {
  test::TempDir dir;
  expect_error_mentions([&] { open_source((dir / "missing.mp4").string()); }, "missing.mp4': no such file");
  test::write_bytes(dir / "text.mp4", std::string(4096, 'x'));
  expect_error_mentions([&] { open_source((dir / "text.mp4").string()); }, "text.mp4");
  expect_error_mentions([&] { open_source("camera:/dev/video97"); }, "cannot open camera '/dev/video97': no such device");
  expect_error_mentions([&] { open_source("camera:"); }, "name the camera device");
  expect_error_mentions([&] { open_source("-"); }, "--input-size");
  expect_error_mentions([&] { open_source((dir / "*.png").string()); }, "matches no PNG");
  expect_error_mentions([&] { open_sink((dir / "x.png").string()); }, "not one image");
  expect_error_mentions([&] { open_sink((dir / "x.xyz").string()); }, "no container");
  expect_error_mentions([&] { open_sink((dir / "nowhere/x.mp4").string()); }, "does not exist");
  expect_error_mentions([&] { open_sink((dir / "x.mp4").string(), SinkOptions{0, {}, "", 20}); }, "frame rate");
  expect_error_mentions([&] { open_sink((dir / "x.mp4").string(), SinkOptions{30, {}, "nosuchcodec", 20}); }, "no video encoder named 'nosuchcodec'");
  expect_error_mentions([&] { open_sink((dir / "odd.mp4").string())->write(pattern(0, 33, 24)); }, "even width and height");
  auto sink = open_sink((dir / "two.mp4").string());
  sink->write(pattern(0, 32, 24));
  expect_error_mentions([&] { sink->write(pattern(0, 64, 48)); }, "the video is 32x24");
  EXPECT_EQ(parse_size("640x480"), (std::pair<std::int64_t, std::int64_t>{640, 480}));
  for (const char* bad : {"640", "x480", "640x", "640x480x3", "-1x5", "axb"}) expect_error_mentions([&] { parse_size(bad); }, "is not WIDTHxHEIGHT");
}

// A sink slower than the producer: the queue drops instead of growing, and counts what it dropped.
class SlowSink final : public FrameSink {
 public:
  void write(const torch::Tensor&) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ++written;
  }
  void close() override {}
  std::string description() const override { return "slow sink"; }
  int written = 0;
};

TEST(Media, AsyncSinkDropsUnderOverloadAndDrainsOnClose) {
  SlowSink slow;
  AsyncSink async(slow, 2);
  for (int i = 0; i < 20; ++i) async.write(pattern(i, 8, 8));
  async.close();
  EXPECT_GT(async.dropped(), 0u);
  EXPECT_EQ(async.written() + async.dropped(), 20u);
  EXPECT_EQ(static_cast<std::uint64_t>(slow.written), async.written());
}

}  // namespace
}  // namespace streamgen
