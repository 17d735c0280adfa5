#pragma once
// Model calls read a model's weights while a LoRA scale change rewrites them in place: every call holds
// the gate shared, a change holds it alone, so a change lands between calls and no frame is computed
// from half-changed weights. Writer-preferring: once a change waits, new calls queue behind it, so
// sessions whose calls overlap (the server's) cannot starve it.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <shared_mutex>

namespace streamgen {

class WeightsGate {
 public:
  [[nodiscard]] std::shared_lock<std::shared_mutex> read() const {
    { std::lock_guard wait_for_writers(turnstile_); }
    return std::shared_lock(mutex_);
  }
  // Runs `change` with no call in flight, then counts a new version of the weights.
  template <class Change>
  void write(Change&& change) {
    std::lock_guard hold_new_readers(turnstile_);
    std::unique_lock alone(mutex_);
    change();
    version_.fetch_add(1);
  }
  // How many changes were written: a reader that saw another version re-derives what it cached
  // (the stream's prompt embeddings, when the text encoder changed).
  std::uint64_t version() const { return version_.load(); }

 private:
  mutable std::mutex turnstile_;
  mutable std::shared_mutex mutex_;
  std::atomic<std::uint64_t> version_{0};
};

}  // namespace streamgen
