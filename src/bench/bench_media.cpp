// Media throughput without a model: how fast frames can be decoded, fitted to the model size and
// encoded again (a video file, or the JPEG frames the server sends). It should be far above any
// model's frame rate, so that media never sets the stream's pace.
#include <torch/torch.h>
#include <unistd.h>

#include "streamgen/bench.h"
#include "streamgen/image_io.h"
#include "streamgen/image_tensor.h"
#include "streamgen/media.h"

namespace streamgen {

std::vector<BenchRow> bench_media(const MediaBenchOptions& o) {
  constexpr std::int64_t kSourceW = 640, kSourceH = 480;
  const auto stem = o.dir / ("streamgen-bench-media-" + std::to_string(::getpid()));
  const auto source_path = stem.string() + "-in.mp4", out_path = stem.string() + "-out.mp4";
  struct Cleanup {
    std::vector<std::string> files;
    ~Cleanup() {
      for (const auto& f : files) ::unlink(f.c_str());
    }
  } cleanup{{source_path, out_path}};
  {  // a moving gradient, H.264 at 30 fps (not timed)
    SinkOptions so;
    so.fps = 30;
    auto sink = open_sink(source_path, so);
    const auto base = torch::linspace(0, 255, kSourceW).view({1, 1, kSourceW}).expand({3, kSourceH, kSourceW});
    for (std::int64_t i = 0; i < o.frames; ++i) sink->write((base + 4.0 * static_cast<double>(i)).remainder(256).to(torch::kUInt8));
    sink->close();
  }
  std::vector<BenchRow> rows;
  auto add = [&](const std::string& name, std::int64_t size, const std::function<void()>& pass) {
    BenchRow row;
    row["name"] = name;
    row["size"] = size;
    row["frames"] = o.frames;
    const auto t = time_runs(pass, fixed_runs(o.runs));
    add_timing(row, t);
    row["fps"] = static_cast<double>(o.frames) * 1000.0 / t.median_ms;
    rows.push_back(row);
  };
  add("media_decode", 0, [&] {
    auto src = open_source(source_path);
    while (src->next()) {
    }
  });
  for (auto size : o.sizes) {
    add("media_decode_fit", size, [&] {
      auto src = open_source(source_path);
      while (auto f = src->next()) fit_image(f->rgb.unsqueeze(0), size, size, Fit::Crop);
    });
    add("media_decode_fit_encode_h264", size, [&] {
      auto src = open_source(source_path);
      auto sink = open_sink(out_path, SinkOptions{});
      while (auto f = src->next()) sink->write(fit_image(f->rgb.unsqueeze(0), size, size, Fit::Crop)[0]);
      sink->close();
    });
    const auto frame = torch::randint(0, 256, {3, size, size}, torch::kUInt8);
    add("media_jpeg_encode_decode", size, [&] {
      for (std::int64_t i = 0; i < o.frames; ++i) decode_image(encode_jpeg(frame), "frame");
    });
  }
  return rows;
}

}  // namespace streamgen
