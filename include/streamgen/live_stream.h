#pragma once
// What a live consumer (the server's sessions) needs from a stream, whichever model makes it: the
// StreamDiffusion runner (frames in, frames out) and the StreamDiT runner (text in, video out).
#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "streamgen/bounded_queue.h"

namespace streamgen {

// How long a stream's threads wait on a queue before they look again whether to stop.
inline constexpr auto kLiveStreamPollInterval = std::chrono::milliseconds(50);

struct StreamFrame {
  torch::Tensor image_u8;  // [3, H, W]
  std::int64_t index = 0;  // output counter
  bool repeated = false;   // the similarity filter skipped the input; this repeats the last image
  double latency_ms = 0;   // img2img: from push() of the input frame; text-to-video: from the start of the step that made it
};

struct StageTiming {
  double median_ms = 0;
  double p90_ms = 0;
  std::int64_t count = 0;
};

struct StreamStats {
  std::uint64_t frames_in = 0, inputs_dropped = 0, frames_skipped = 0, calls = 0, frames_out = 0, outputs_dropped = 0;
  double output_fps = 0;
  std::map<std::string, StageTiming> stages;  // e.g. preprocess, encode, unet, dit, decode, text_encoder, latency
};

class LiveStream {
 public:
  virtual ~LiveStream() = default;
  // An RGB uint8 frame [3, H, W] for streams that take frames; throws streamgen::Error otherwise.
  virtual void push(const torch::Tensor& frame_u8) = 0;
  virtual std::optional<StreamFrame> pop(std::chrono::milliseconds timeout) = 0;
  // Called for every output instead of queueing it for pop(); keep it short. Empty: back to the queue.
  virtual void set_output_callback(std::function<void(const StreamFrame&)> callback) = 0;
  // Takes effect from the next model call, with no restart.
  virtual void set_prompt(const std::string& prompt, const std::string& negative_prompt = "", int blend_frames = 0) = 0;
  virtual StreamStats stats() const = 0;
  virtual void stop() = 0;
};

// Per-stage durations over a sliding window, for StreamStats::stages. Thread-safe.
class StageSamples {
 public:
  explicit StageSamples(std::size_t window = 512) : window_(window) {}
  void record(const std::string& stage, double ms);
  std::map<std::string, StageTiming> summary() const;

 private:
  std::size_t window_;
  mutable std::mutex mutex_;
  std::map<std::string, std::deque<double>> samples_;
};

// The output end every live stream shares: numbers the frames, hands each to the output callback
// when one is set or else to a bounded pop() queue (the oldest frame dropped when nobody reads), and
// measures output FPS from the first frame. Thread-safe.
class FrameOutlet {
 public:
  explicit FrameOutlet(std::size_t capacity) : queue_(capacity) {}
  void deliver(StreamFrame frame);  // frame.index is assigned here
  std::optional<StreamFrame> pop(std::chrono::milliseconds timeout) { return queue_.pop(timeout); }
  void set_callback(std::function<void(const StreamFrame&)> callback);
  void close() { queue_.close(); }
  // Fills frames_out, outputs_dropped and output_fps.
  void add_to(StreamStats& stats) const;

 private:
  BoundedQueue<StreamFrame> queue_;
  mutable std::mutex mutex_;
  std::function<void(const StreamFrame&)> callback_;
  std::uint64_t frames_out_ = 0;
  std::chrono::steady_clock::time_point first_output_{};
};

}  // namespace streamgen
