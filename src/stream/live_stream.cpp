#include "streamgen/live_stream.h"

#include <vector>

#include "streamgen/timing.h"

namespace streamgen {

void StageSamples::record(const std::string& stage, double ms) {
  std::lock_guard lock(mutex_);
  auto& s = samples_[stage];
  s.push_back(ms);
  if (s.size() > window_) s.pop_front();
}

std::map<std::string, StageTiming> StageSamples::summary() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, StageTiming> out;
  for (const auto& [stage, v] : samples_) {
    if (v.empty()) continue;
    std::vector<double> values(v.begin(), v.end());
    out[stage] = {percentile(values, 50), percentile(values, 90), static_cast<std::int64_t>(values.size())};
  }
  return out;
}

void FrameOutlet::deliver(StreamFrame frame) {
  std::function<void(const StreamFrame&)> callback;
  {
    std::lock_guard lock(mutex_);
    if (frames_out_ == 0) first_output_ = std::chrono::steady_clock::now();
    frame.index = static_cast<std::int64_t>(frames_out_++);
    callback = callback_;
  }
  // Outside the lock: a slow callback must not stall stats() or set_callback().
  if (callback)
    callback(frame);
  else
    queue_.push(std::move(frame));
}

void FrameOutlet::set_callback(std::function<void(const StreamFrame&)> callback) {
  std::lock_guard lock(mutex_);
  callback_ = std::move(callback);
}

void FrameOutlet::add_to(StreamStats& stats) const {
  stats.outputs_dropped = queue_.dropped();
  std::lock_guard lock(mutex_);
  stats.frames_out = frames_out_;
  if (frames_out_ > 1) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - first_output_).count();
    if (secs > 0) stats.output_fps = static_cast<double>(frames_out_ - 1) / secs;
  }
}

}  // namespace streamgen
