#pragma once
// Frames in and out of the stream: video files, cameras, image files and folders, raw RGB pipes
// (FFmpeg's libavformat / libavcodec / libswscale / libavdevice underneath).
//
// Source specs                              Sink specs
//   clip.mp4 (any container FFmpeg reads)     out.mp4 / .mkv / .mov / .avi (H.264 when libx264 is there, else MPEG-4)
//   camera:/dev/video0 (V4L2)                 out.webm (VP9 / VP8)
//   photo.png, a folder, 'frames/*.png'       a folder (or a path ending in '/'): frame_NNNNN.png
//   - (raw RGB24 on stdin, --input-size WxH)  - (raw RGB24 on stdout)
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace streamgen {

struct VideoFrame {
  torch::Tensor rgb;        // uint8 [3, H, W] at the source's own size
  std::int64_t index = 0;   // 0, 1, 2, ... in source order
  double time_s = 0;        // presentation time from the start of the source
};

struct SourceInfo {
  std::string spec;              // what the user gave, for messages
  std::string kind;              // "video", "camera", "images", "raw"
  std::int64_t width = 0, height = 0;
  double fps = 0;                // 0 when the source has no rate (images, raw pipes)
  std::int64_t frame_count = -1; // -1 when unknown (cameras, pipes, some containers)
  bool live = false;             // frames arrive in real time (cameras): read on their own thread
};

struct SourceOptions {
  std::int64_t raw_width = 0, raw_height = 0;  // required for '-'
  double raw_fps = 0;                          // rate to assume for '-' (0: none)
};

class FrameSource {
 public:
  virtual ~FrameSource() = default;
  // The next frame, or nullopt at the end. Throws streamgen::Error naming the source on a broken read.
  virtual std::optional<VideoFrame> next() = 0;
  const SourceInfo& info() const { return info_; }

 protected:
  SourceInfo info_;
};

// Opens a source by its spec (see the table above). Throws streamgen::Error naming the source: a
// missing file, a file that holds no video stream, a codec FFmpeg cannot decode, a busy or missing
// camera, a missing --input-size for '-'.
std::unique_ptr<FrameSource> open_source(const std::string& spec, const SourceOptions& options = {});

struct SinkOptions {
  double fps = 30;                                // frame rate written into video files
  std::map<std::string, std::string> png_text;    // tEXt chunks for PNG frames (prompt, seed, ...)
  std::string codec;                              // force an encoder by FFmpeg name (e.g. "mpeg4")
  int crf = 20;                                   // quality for H.264 / VP9 (lower is better)
};

class FrameSink {
 public:
  virtual ~FrameSink() = default;
  // uint8 [3, H, W]; every frame of one sink has the size of the first.
  virtual void write(const torch::Tensor& rgb_u8) = 0;
  // Flushes encoders and closes the file; idempotent. The destructor closes too, logging errors.
  virtual void close() = 0;
  virtual std::string description() const = 0;
};

std::unique_ptr<FrameSink> open_sink(const std::string& spec, const SinkOptions& options = {});

// "640x480" -> {640, 480}; throws streamgen::Error on anything else.
std::pair<std::int64_t, std::int64_t> parse_size(const std::string& text);

}  // namespace streamgen
