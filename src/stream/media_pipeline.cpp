#include "streamgen/media_pipeline.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <thread>

#include "streamgen/bounded_queue.h"
#include "streamgen/error.h"

namespace streamgen {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kOfflineOutputTimeout = 600s;  // one output per input; generous for big models on CPU
constexpr auto kDrainQuiet = 10s;             // live: end of input, no new output for this long -> done
constexpr auto kStatusEvery = 500ms;

bool stop_requested(const MediaPipelineOptions& o) { return o.stop && o.stop->load(); }

torch::Tensor fit_frame(const VideoFrame& f, const MediaPipelineOptions& o) { return fit_image(f.rgb.unsqueeze(0), o.width, o.height, o.fit)[0]; }

MediaPipelineResult run_offline(FrameSource& source, StreamRunner& runner, FrameSink& sink, const MediaPipelineOptions& o) {
  MediaPipelineResult r;
  const auto per_call = static_cast<std::size_t>(std::max<std::int64_t>(1, o.frames_per_call));
  while (!stop_requested(o)) {
    // One call's worth of frames in, as many out; the runner's input queue holds them all.
    std::vector<torch::Tensor> group;
    while (group.size() < per_call && (o.max_frames < 0 || r.frames_read < o.max_frames)) {
      auto f = source.next();
      if (!f) break;
      ++r.frames_read;
      group.push_back(fit_frame(*f, o));
    }
    if (group.empty()) break;
    const auto real = group.size();
    while (group.size() < per_call) group.push_back(group.back());  // the source ended mid-call: pad, then drop the extra outputs
    for (const auto& g : group) runner.push(g);
    for (std::size_t i = 0; i < per_call; ++i) {
      const auto out = runner.pop(kOfflineOutputTimeout);
      if (!out) throw Error("the stream stopped before output " + std::to_string(r.frames_written) + " (see the log)");
      if (i >= real) continue;
      sink.write(out->image_u8);
      ++r.frames_written;
      if (o.on_frame) o.on_frame(r.frames_written);
    }
    if (real < per_call) break;
  }
  return r;
}

MediaPipelineResult run_live(FrameSource& source, StreamRunner& runner, FrameSink& sink, const MediaPipelineOptions& o) {
  MediaPipelineResult r;
  r.live = true;
  AsyncSink writer(sink, o.sink_queue);
  runner.set_output_callback([&](const StreamFrame& f) { writer.write(f.image_u8); });
  std::exception_ptr reader_error;
  std::atomic<bool> reader_done{false};
  std::atomic<std::int64_t> read{0};
  std::thread reader([&] {
    try {
      const auto start = Clock::now();
      const bool pace = o.realtime && !source.info().live;
      while (!stop_requested(o) && (o.max_frames < 0 || read < o.max_frames)) {
        auto f = source.next();
        if (!f) break;
        if (pace) std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(f->time_s)));
        runner.push(fit_frame(*f, o));
        ++read;
      }
    } catch (...) {
      reader_error = std::current_exception();
    }
    reader_done = true;
  });

  auto last_status = Clock::now();
  auto last_progress = Clock::now();
  std::uint64_t last_out = 0;
  while (true) {
    std::this_thread::sleep_for(20ms);
    const auto s = runner.stats();
    const auto out = s.frames_out + s.outputs_dropped;
    if (out != last_out) {
      last_out = out;
      last_progress = Clock::now();
    }
    if (o.on_status && Clock::now() - last_status >= kStatusEvery) {
      o.on_status(s);
      last_status = Clock::now();
    }
    if (stop_requested(o)) break;
    if (reader_done) {
      // Every input that was not dropped gets its output; wait for those, not for ever.
      const auto expected = s.frames_in - s.inputs_dropped;
      if (out >= expected || Clock::now() - last_progress > kDrainQuiet) break;
    }
  }
  reader.join();
  runner.stop();
  runner.set_output_callback({});
  writer.close();
  r.frames_read = read;
  r.frames_written = static_cast<std::int64_t>(writer.written());
  r.sink_dropped = static_cast<std::int64_t>(writer.dropped());
  if (reader_error) std::rethrow_exception(reader_error);
  return r;
}

}  // namespace

MediaPipelineResult run_media_pipeline(FrameSource& source, StreamRunner& runner, FrameSink& sink, const MediaPipelineOptions& options) {
  MediaPipelineResult r;
  try {
    r = source.info().live || options.realtime ? run_live(source, runner, sink, options) : run_offline(source, runner, sink, options);
  } catch (...) {
    try {
      sink.close();  // keep what was written a playable file
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
    }
    throw;
  }
  sink.close();
  return r;
}

// ---- AsyncSink ----------------------------------------------------------------------------------

struct AsyncSink::Impl {
  FrameSink& inner;
  BoundedQueue<torch::Tensor> queue;
  std::atomic<std::uint64_t> written{0};
  std::atomic<bool> warned{false};
  std::exception_ptr error;
  std::thread thread;
  bool closed = false;

  Impl(FrameSink& s, std::size_t capacity) : inner(s), queue(capacity) {
    thread = std::thread([this] {
      while (true) {
        auto f = queue.pop(100ms);
        if (!f) {
          if (queue.closed() && queue.size() == 0) return;
          continue;
        }
        try {
          if (!error) inner.write(*f);
          ++written;
        } catch (...) {
          error = std::current_exception();
          spdlog::error("writing to {} failed; later frames are discarded", inner.description());
        }
      }
    });
  }
};

AsyncSink::AsyncSink(FrameSink& inner, std::size_t capacity) : impl_(std::make_unique<Impl>(inner, capacity)) {}

AsyncSink::~AsyncSink() {
  try {
    close();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
  }
}

void AsyncSink::write(const torch::Tensor& rgb_u8) {
  const auto before = impl_->queue.dropped();
  impl_->queue.push(rgb_u8);
  if (impl_->queue.dropped() > before && !impl_->warned.exchange(true))
    spdlog::warn("{} cannot keep up: dropping frames instead of queueing them (counted in the summary)", impl_->inner.description());
}

void AsyncSink::close() {
  if (impl_->closed) return;
  impl_->closed = true;
  impl_->queue.close();
  if (impl_->thread.joinable()) impl_->thread.join();
  if (impl_->error) std::rethrow_exception(impl_->error);
}

std::string AsyncSink::description() const { return impl_->inner.description(); }
std::uint64_t AsyncSink::dropped() const { return impl_->queue.dropped(); }
std::uint64_t AsyncSink::written() const { return impl_->written; }

}  // namespace streamgen
