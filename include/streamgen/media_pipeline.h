#pragma once
// Source -> fit to the model size -> StreamRunner -> sink, the way a user runs it:
//   offline (files, as fast as the model): every frame in order, one output per input, nothing dropped;
//   live (cameras, or --realtime files paced to their frame rate): the source is read on its own
//   thread into the runner's latest-frame mailbox, outputs go to the sink through a bounded queue
//   on a writer thread, so neither a slow model nor a slow disk builds a backlog (drops are counted).
#include <atomic>
#include <functional>

#include "streamgen/image_tensor.h"
#include "streamgen/media.h"
#include "streamgen/stream_runner.h"

namespace streamgen {

struct MediaPipelineOptions {
  std::int64_t width = 512, height = 512;  // the runner's frame size
  Fit fit = Fit::Crop;
  bool realtime = false;                   // pace a file source to its frame rate (live mode)
  std::size_t sink_queue = 8;              // live mode: frames waiting for the writer
  std::int64_t max_frames = -1;            // stop after this many input frames (-1: all)
  std::int64_t frames_per_call = 1;        // the runner's frame_buffer_size; its input queue must hold this many
  const std::atomic<bool>* stop = nullptr; // set from a signal handler to end the run cleanly
  std::function<void(std::int64_t frames_done)> on_frame;  // progress (offline: per output)
  std::function<void(const StreamStats&)> on_status;       // live: about twice a second
};

struct MediaPipelineResult {
  std::int64_t frames_read = 0, frames_written = 0, sink_dropped = 0;
  bool live = false;
};

// Throws streamgen::Error for source and sink failures (after closing the sink, so what was
// written stays a valid file).
MediaPipelineResult run_media_pipeline(FrameSource& source, StreamRunner& runner, FrameSink& sink, const MediaPipelineOptions& options);

// A sink written on its own thread through a bounded queue that drops the oldest frame when full
// (a warning names the sink the first time). close() writes what is queued and stops the thread;
// the inner sink stays open for its owner to close.
class AsyncSink final : public FrameSink {
 public:
  AsyncSink(FrameSink& inner, std::size_t capacity);
  ~AsyncSink() override;
  void write(const torch::Tensor& rgb_u8) override;
  void close() override;
  std::string description() const override;
  std::uint64_t dropped() const;
  std::uint64_t written() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace streamgen
