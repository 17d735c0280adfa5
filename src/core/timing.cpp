#include "streamgen/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "streamgen/error.h"

namespace streamgen {

double percentile(std::vector<double> values, double q) {
  if (values.empty()) throw Error("percentile of an empty sample");
  std::sort(values.begin(), values.end());
  const double pos = q / 100.0 * static_cast<double>(values.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const auto hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (pos - static_cast<double>(lo));
}

Timing summarize(std::vector<double> samples_ms) {
  Timing t;
  t.runs = static_cast<int>(samples_ms.size());
  t.median_ms = percentile(samples_ms, 50);
  t.p10_ms = percentile(samples_ms, 10);
  t.p90_ms = percentile(samples_ms, 90);
  t.samples_ms = std::move(samples_ms);
  return t;
}

Timing time_runs(const std::function<void()>& fn, const TimingOptions& options) {
  using clock = std::chrono::steady_clock;
  for (int i = 0; i < options.warmup; ++i) fn();
  std::vector<double> samples;
  const auto start = clock::now();
  while (static_cast<int>(samples.size()) < options.max_runs) {
    const auto t0 = clock::now();
    fn();
    const auto t1 = clock::now();
    samples.push_back(ms_between(t0, t1));
    const double elapsed = std::chrono::duration<double>(t1 - start).count();
    if (static_cast<int>(samples.size()) >= options.min_runs && elapsed >= options.min_seconds) break;
  }
  return summarize(std::move(samples));
}

}  // namespace streamgen
