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

}  // namespace streamgen
