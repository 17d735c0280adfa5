#pragma once
// A progress bar for long jobs: percentage, count, rate and ETA. On a terminal it redraws one
// line; otherwise (logs, CI) it prints a plain line at each tenth of the work and at the end.
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>

namespace streamgen {

// Global switch (the CLI's -q turns bars off).
void set_progress_enabled(bool enabled);
bool progress_enabled();

class ProgressBar {
 public:
  // total <= 0: unknown length (no percentage or ETA). `tty` overrides terminal detection.
  ProgressBar(std::string label, std::int64_t total, std::string unit = "it", std::ostream* out = nullptr,
              std::optional<bool> tty = std::nullopt);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void advance(std::int64_t n = 1);
  void set(std::int64_t done);
  // Work already done before this bar started (a resumed run): shown in the count and the
  // percentage, left out of the rate and the ETA. Call before the first set/advance.
  void start_at(std::int64_t done);
  void set_postfix(std::string text);  // e.g. "loss=0.123"
  void finish();

  std::int64_t done() const { return done_; }
  // The line as it would be drawn now (without carriage return / newline).
  std::string line() const;

 private:
  void maybe_draw(bool force);
  using clock = std::chrono::steady_clock;
  std::string label_;
  std::int64_t total_;
  std::string unit_;
  std::ostream* out_;
  bool tty_;
  bool enabled_;
  bool finished_ = false;
  std::int64_t done_ = 0;
  std::int64_t initial_ = 0;
  std::string postfix_;
  clock::time_point start_;
  clock::time_point last_draw_;
  int last_decile_ = -1;
  std::int64_t drawn_done_ = -1;
};

// "01:05" or "1:02:03".
std::string format_duration(double seconds);

}  // namespace streamgen
