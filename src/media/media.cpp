// Chooses a source or sink from its spec; image files and folders, raw RGB pipes and PNG folders
// live here, video files and cameras in ffmpeg_video.cpp.
#include "streamgen/media.h"

#include <fmt/core.h>
#include <glob.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "media/ffmpeg_video.h"
#include "streamgen/error.h"
#include "streamgen/image_io.h"

namespace streamgen {
namespace fs = std::filesystem;
namespace {

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

class ImageSource final : public FrameSource {
 public:
  ImageSource(const std::string& spec, std::vector<fs::path> files) : files_(std::move(files)) {
    if (files_.empty()) throw Error("'" + spec + "': no PNG, JPEG or BMP images there");
    info_.spec = spec;
    info_.kind = "images";
    info_.frame_count = static_cast<std::int64_t>(files_.size());
    first_ = read_image(files_[0])[0];
    info_.width = first_.size(2);
    info_.height = first_.size(1);
  }
  std::optional<VideoFrame> next() override {
    if (next_ >= files_.size()) return std::nullopt;
    VideoFrame f;
    f.rgb = next_ == 0 ? first_ : read_image(files_[next_])[0];
    f.index = static_cast<std::int64_t>(next_++);
    return f;
  }

 private:
  std::vector<fs::path> files_;
  torch::Tensor first_;
  std::size_t next_ = 0;
};

// Reads exactly W*H*3 bytes per frame from a file descriptor (stdin for '-').
class RawSource final : public FrameSource {
 public:
  RawSource(int fd, std::int64_t width, std::int64_t height, double fps) : fd_(fd) {
    info_.spec = "-";
    info_.kind = "raw";
    info_.width = width;
    info_.height = height;
    info_.fps = fps;
  }
  std::optional<VideoFrame> next() override {
    auto hwc = torch::empty({info_.height, info_.width, 3}, torch::kUInt8);
    auto* p = hwc.data_ptr<std::uint8_t>();
    const auto want = static_cast<std::size_t>(hwc.numel());
    std::size_t got = 0;
    while (got < want) {
      const auto n = ::read(fd_, p + got, want - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error("'-': read error on standard input: " + std::string(std::strerror(errno)));
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
    }
    if (got == 0) return std::nullopt;
    if (got < want)
      throw Error(fmt::format("'-': standard input ended inside frame {} ({} of {} bytes; is --input-size {}x{} right?)", index_, got, want,
                              info_.width, info_.height));
    VideoFrame f;
    f.rgb = hwc.permute({2, 0, 1}).contiguous();
    f.index = index_++;
    f.time_s = info_.fps > 0 ? static_cast<double>(f.index) / info_.fps : 0;
    return f;
  }

 private:
  int fd_;
  std::int64_t index_ = 0;
};

void check_frame(const torch::Tensor& t, const std::string& where) {
  if (t.scalar_type() != torch::kUInt8 || t.dim() != 3 || t.size(0) != 3) throw Error("'" + where + "': frames must be uint8 [3, H, W]");
}

class RawSink final : public FrameSink {
 public:
  explicit RawSink(int fd) : fd_(fd) {}
  void write(const torch::Tensor& rgb_u8) override {
    check_frame(rgb_u8, "-");
    const auto hwc = rgb_u8.permute({1, 2, 0}).contiguous();
    const auto* p = hwc.data_ptr<std::uint8_t>();
    std::size_t done = 0;
    const auto total = static_cast<std::size_t>(hwc.numel());
    while (done < total) {
      const auto n = ::write(fd_, p + done, total - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error("'-': cannot write to standard output: " + std::string(std::strerror(errno)));
      done += static_cast<std::size_t>(n);
    }
  }
  void close() override {}
  std::string description() const override { return "raw RGB24 on standard output"; }

 private:
  int fd_;
};

class PngFolderSink final : public FrameSink {
 public:
  PngFolderSink(fs::path dir, std::map<std::string, std::string> text) : dir_(std::move(dir)), text_(std::move(text)) {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec || !fs::is_directory(dir_)) throw Error("cannot create the output folder '" + dir_.string() + "': " + ec.message());
  }
  void write(const torch::Tensor& rgb_u8) override {
    check_frame(rgb_u8, dir_.string());
    write_png(dir_ / fmt::format("frame_{:05d}.png", index_++), rgb_u8, text_);
  }
  void close() override {}
  std::string description() const override { return dir_.string() + "/frame_NNNNN.png"; }

 private:
  fs::path dir_;
  std::map<std::string, std::string> text_;
  std::int64_t index_ = 0;
};

std::vector<fs::path> glob_files(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<fs::path> out;
  if (rc == 0)
    for (std::size_t i = 0; i < g.gl_pathc; ++i)
      if (is_image_file(g.gl_pathv[i])) out.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::pair<std::int64_t, std::int64_t> parse_size(const std::string& text) {
  const auto x = text.find('x');
  try {
    if (x != std::string::npos) {
      std::size_t a = 0, b = 0;
      const auto w = std::stoll(text.substr(0, x), &a), h = std::stoll(text.substr(x + 1), &b);
      if (a == x && b == text.size() - x - 1 && w > 0 && h > 0 && w <= 16384 && h <= 16384) return {w, h};
    }
  } catch (const std::exception&) {
  }
  throw Error("size '" + text + "' is not WIDTHxHEIGHT (e.g. 640x480)");
}

std::unique_ptr<FrameSource> open_source(const std::string& spec, const SourceOptions& options) {
  if (spec.empty()) throw Error("no input given");
  if (spec == "-") {
    if (options.raw_width <= 0 || options.raw_height <= 0) throw Error("'-' reads raw RGB24 frames from standard input: give their size with --input-size WxH");
    return std::make_unique<RawSource>(STDIN_FILENO, options.raw_width, options.raw_height, options.raw_fps);
  }
  if (spec.rfind("camera:", 0) == 0) {
    const auto device = spec.substr(7);
    if (device.empty()) throw Error("'" + spec + "': name the camera device, e.g. camera:/dev/video0");
    if (!fs::exists(device)) throw Error("cannot open camera '" + device + "': no such device");
    return open_ffmpeg_source(spec, device, true);
  }
  if (has_glob_chars(spec) && !fs::exists(spec)) {
    auto files = glob_files(spec);
    if (files.empty()) throw Error("'" + spec + "': the pattern matches no PNG, JPEG or BMP file");
    return std::make_unique<ImageSource>(spec, std::move(files));
  }
  std::error_code ec;
  const auto status = fs::status(spec, ec);
  if (!fs::exists(status)) throw Error("cannot open input '" + spec + "': no such file or folder");
  if (fs::is_directory(status) || is_image_file(spec)) return std::make_unique<ImageSource>(spec, list_images(spec));
  return open_ffmpeg_source(spec, spec, false);
}

std::unique_ptr<FrameSink> open_sink(const std::string& spec, const SinkOptions& options) {
  if (spec.empty()) throw Error("no output given");
  if (spec == "-") return std::make_unique<RawSink>(STDOUT_FILENO);
  const fs::path p(spec);
  if (spec.back() == '/' || fs::is_directory(p) || !p.has_extension()) return std::make_unique<PngFolderSink>(p, options.png_text);
  if (is_image_file(p)) throw Error("'" + spec + "': an output of frames is a folder (frame_NNNNN.png) or a video file, not one image");
  if (p.has_parent_path() && !fs::is_directory(p.parent_path())) throw Error("cannot create '" + spec + "': folder '" + p.parent_path().string() + "' does not exist");
  return open_ffmpeg_sink(spec, options);
}

}  // namespace streamgen
