#pragma once
// FFmpeg-backed sources and sinks; media.cpp chooses them from a spec.
#include <memory>
#include <string>

#include "streamgen/media.h"

namespace streamgen {

// `url` is a file path, or a V4L2 device path when `camera`.
std::unique_ptr<FrameSource> open_ffmpeg_source(const std::string& spec, const std::string& url, bool camera);
std::unique_ptr<FrameSink> open_ffmpeg_sink(const std::string& path, const SinkOptions& options);

}  // namespace streamgen
