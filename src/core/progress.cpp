#include "streamgen/progress.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

namespace streamgen {
namespace {
std::atomic<bool> g_enabled{true};
constexpr int kBarWidth = 24;
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
constexpr auto kPlainInterval = std::chrono::seconds(30);  // non-TTY: at least this often on long tenths
}  // namespace

void set_progress_enabled(bool enabled) { g_enabled = enabled; }
bool progress_enabled() { return g_enabled; }

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", s / 60, s % 60);
  return buf;
}

ProgressBar::ProgressBar(std::string label, std::int64_t total, std::string unit, std::ostream* out, std::optional<bool> tty)
    : label_(std::move(label)),
      total_(total),
      unit_(std::move(unit)),
      out_(out ? out : &std::cerr),
      tty_(tty.value_or(out == nullptr && ::isatty(STDERR_FILENO) == 1)),
      enabled_(g_enabled),
      start_(clock::now()),
      last_draw_(start_) {
  maybe_draw(true);
}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::advance(std::int64_t n) { set(done_ + n); }

void ProgressBar::set(std::int64_t done) {
  done_ = done;
  maybe_draw(false);
}

void ProgressBar::start_at(std::int64_t done) {
  initial_ = done_ = done;
  start_ = clock::now();
  maybe_draw(true);
}

void ProgressBar::set_postfix(std::string text) { postfix_ = std::move(text); }

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (!enabled_) return;
  if (tty_)
    *out_ << "\r" << line() << "\x1b[K\n" << std::flush;
  else if (drawn_done_ != done_)
    *out_ << line() << "\n" << std::flush;
}

std::string ProgressBar::line() const {
  const double elapsed = std::chrono::duration<double>(clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_ - initial_) / elapsed : 0.0;
  std::ostringstream os;
  os << label_;
  if (total_ > 0) {
    const double frac = std::clamp(static_cast<double>(done_) / static_cast<double>(total_), 0.0, 1.0);
    const int filled = static_cast<int>(frac * kBarWidth);
    char pct[8];
    std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(frac * 100));
    os << " " << pct << " |" << std::string(filled, '#') << std::string(kBarWidth - filled, ' ') << "| " << done_ << "/"
       << total_;
    const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : NAN;
    os << " [" << format_duration(elapsed) << "<" << format_duration(eta);
  } else {
    os << " " << done_ << " [" << format_duration(elapsed);
  }
  char r[32];
  if (rate >= 1 || rate == 0)
    std::snprintf(r, sizeof r, "%.2f %s/s", rate, unit_.c_str());
  else
    std::snprintf(r, sizeof r, "%.2f s/%s", 1.0 / rate, unit_.c_str());
  os << ", " << r << "]";
  if (!postfix_.empty()) os << " " << postfix_;
  return os.str();
}

void ProgressBar::maybe_draw(bool force) {
  if (!enabled_ || finished_) return;
  const auto now = clock::now();
  if (tty_) {
    if (!force && now - last_draw_ < kRedrawInterval) return;
    *out_ << "\r" << line() << "\x1b[K" << std::flush;
  } else {
    const int decile = total_ > 0 ? static_cast<int>(10 * done_ / total_) : -1;
    const bool new_decile = total_ > 0 && decile > last_decile_;
    if (!force && !new_decile && now - last_draw_ < kPlainInterval) return;
    last_decile_ = std::max(last_decile_, decile);
    *out_ << line() << "\n" << std::flush;
  }
  last_draw_ = now;
  drawn_done_ = done_;
}

}  // namespace streamgen
