#pragma once
// Repeated timing with robust statistics, shared by `streamgen bench`, `info` and bench/.
#include <chrono>
#include <functional>
#include <vector>

namespace streamgen {

struct Timing {
  std::vector<double> samples_ms;
  double median_ms = 0;
  double p10_ms = 0;
  double p90_ms = 0;
  int runs = 0;
};

// Percentiles with linear interpolation between order statistics (numpy's default).
double percentile(std::vector<double> values, double q);
Timing summarize(std::vector<double> samples_ms);

struct TimingOptions {
  int warmup = 1;
  int min_runs = 3;
  int max_runs = 1000;
  double min_seconds = 0.5;  // keep running until both min_runs and min_seconds are reached
};

// Exactly `runs` timed calls after `warmup` untimed ones.
inline TimingOptions fixed_runs(int runs, int warmup = 1) { return {warmup, runs, runs, 0.0}; }

Timing time_runs(const std::function<void()>& fn, const TimingOptions& options = {});

// Milliseconds from `from` to `to` on the steady clock.
inline double ms_between(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}
// Milliseconds from `from` to now.
inline double ms_since(std::chrono::steady_clock::time_point from) { return ms_between(from, std::chrono::steady_clock::now()); }

}  // namespace streamgen
