#include "streamgen/dit_runner.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <atomic>
#include <thread>

#include "streamgen/bounded_queue.h"
#include "streamgen/dit_codec.h"
#include "streamgen/dit_stream.h"
#include "streamgen/error.h"
#include "streamgen/timing.h"

namespace streamgen {
namespace {

using Clock = std::chrono::steady_clock;

struct MadeFrame {
  torch::Tensor image_u8;
  Clock::time_point step_started;
};

}  // namespace

struct DiTRunner::Impl {
  DiTRunnerOptions o;
  StreamDiT model{nullptr};
  std::unique_ptr<StreamDiTSampler> sampler;
  DiTVideoCodec codec;  // pixel space, or the model's temporal autoencoder
  BoundedQueue<MadeFrame> made;
  FrameOutlet outputs;
  StageSamples stages;

  mutable std::mutex state_mutex;
  std::string error;
  std::atomic<std::uint64_t> chunks{0};
  std::atomic<bool> running{true};
  std::mutex stop_mutex;
  std::thread compute_thread, pacer_thread;

  explicit Impl(DiTRunnerOptions options)
      : o(std::move(options)), made(o.ahead_frames ? o.ahead_frames : 1, QueuePolicy::Block), outputs(o.output_capacity) {}

  void compute_loop() {
    // Small GEMMs: OpenBLAS's own pool only fights LibTorch's workers here (see device.h).
    const ScopedBlasThreads blas_threads(1);
    try {
      while (running) {
        const auto t0 = Clock::now();
        const auto chunk = sampler->step();
        const auto t1 = Clock::now();
        stages.record("dit", ms_between(t0, t1));
        const auto u8 = dit_frames_to_u8(codec.decode(chunk), o.width, o.height);
        stages.record("decode", ms_between(t1, Clock::now()));
        ++chunks;
        for (std::int64_t f = 0; f < u8.size(0); ++f)
          if (!made.push({u8[f], t0})) return;  // closed: stopping
      }
    } catch (const std::exception& e) {
      spdlog::error("StreamDiT stream stopped: {}", e.what());
      std::lock_guard lock(state_mutex);
      error = e.what();
    }
    made.close();
  }

  void pacer_loop() {
    const auto period = o.fps > 0 ? std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / o.fps)) : Clock::duration::zero();
    auto due = Clock::now();
    while (running) {
      auto item = made.pop(kLiveStreamPollInterval);
      if (!item) {
        if (made.closed() && made.size() == 0) break;
        continue;
      }
      // At least one period between frames; when the model is slower than the pace, frames go out
      // as they come, with no burst to catch up.
      if (due > Clock::now()) std::this_thread::sleep_until(due);
      const auto now = Clock::now();
      due = now + period;
      StreamFrame frame{item->image_u8, 0, false, ms_between(item->step_started, now)};
      stages.record("latency", frame.latency_ms);
      outputs.deliver(std::move(frame));
    }
    outputs.close();
  }
};

void check_dit_runner_options(const DiTRunnerOptions& o) {
  if (!(o.fps >= 0)) throw Error(fmt::format("StreamDiT stream: fps must be ≥ 0, got {}", o.fps));
  if (o.width < 0 || o.height < 0 || o.width > 4096 || o.height > 4096)
    throw Error(fmt::format("StreamDiT stream: output size {}x{} is not in 0..4096 (0: the model's)", o.width, o.height));
}

DiTRunner::DiTRunner(DiTRunnerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  auto& m = *impl_;
  check_dit_runner_options(m.o);
  m.model = m.o.loaded ? m.o.loaded : load_stream_dit(m.o.model, m.o.compute);
  m.codec = DiTVideoCodec(m.o.loaded ? m.o.loaded_autoencoder : load_dit_autoencoder(m.o.model, m.o.compute));
  m.model->eval();
  m.sampler = std::make_unique<StreamDiTSampler>(m.model, m.o.sampler);
  set_prompt(m.o.prompt);
  m.compute_thread = std::thread([&m] { m.compute_loop(); });
  m.pacer_thread = std::thread([&m] { m.pacer_loop(); });
}

DiTRunner::~DiTRunner() { stop(); }

void DiTRunner::stop() {
  auto& m = *impl_;
  std::lock_guard stopping(m.stop_mutex);
  m.running = false;
  m.made.close();
  for (auto* t : {&m.compute_thread, &m.pacer_thread})
    if (t->joinable()) t->join();
  m.outputs.close();
}

void DiTRunner::push(const torch::Tensor&) {
  throw Error("this stream makes video from text (StreamDiT): it takes a prompt, not frames");
}

std::int64_t DiTRunner::output_width() const {
  const auto& m = *impl_;
  return m.o.width > 0 ? m.o.width : m.sampler->frame_width() * m.codec.spatial_factor();
}

std::int64_t DiTRunner::output_height() const {
  const auto& m = *impl_;
  return m.o.height > 0 ? m.o.height : m.sampler->frame_height() * m.codec.spatial_factor();
}

std::optional<StreamFrame> DiTRunner::pop(std::chrono::milliseconds timeout) { return impl_->outputs.pop(timeout); }

void DiTRunner::set_output_callback(std::function<void(const StreamFrame&)> callback) { impl_->outputs.set_callback(std::move(callback)); }

void DiTRunner::set_prompt(const std::string& prompt, const std::string&, int) {
  const auto t0 = Clock::now();
  impl_->sampler->set_prompt(prompt);
  impl_->stages.record("text_encoder", ms_between(t0, Clock::now()));
}

std::vector<std::string> DiTRunner::unknown_words(const std::string& prompt) const { return impl_->model->tokenizer.unknown_words(prompt); }

const StreamDiTConfig& DiTRunner::config() const { return impl_->model->config; }

std::string DiTRunner::error() const {
  std::lock_guard lock(impl_->state_mutex);
  return impl_->error;
}

StreamStats DiTRunner::stats() const {
  const auto& m = *impl_;
  StreamStats s;
  s.calls = m.chunks;
  s.stages = m.stages.summary();
  m.outputs.add_to(s);
  return s;
}

}  // namespace streamgen
