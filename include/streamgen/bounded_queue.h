#pragma once
// A bounded, thread-safe queue. In the live policy a full queue drops its oldest item (counted)
// instead of blocking the producer, so a slow consumer never builds a backlog: the latest-frame
// behaviour real-time streams need. The blocking policy (offline runs) never drops.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>

namespace streamgen {

enum class QueuePolicy { DropOldest, Block };

template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(std::size_t capacity, QueuePolicy policy = QueuePolicy::DropOldest) : capacity_(capacity ? capacity : 1), policy_(policy) {}

  // Returns false once closed. DropOldest never waits; Block waits for room.
  bool push(T item) {
    std::unique_lock lock(mutex_);
    if (policy_ == QueuePolicy::Block) not_full_.wait(lock, [&] { return closed_ || items_.size() < capacity_; });
    if (closed_) return false;
    if (items_.size() >= capacity_) {
      items_.pop_front();
      ++dropped_;
    }
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }

  // Waits up to `timeout`; empty once closed and drained.
  std::optional<T> pop(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!not_empty_.wait_for(lock, timeout, [&] { return closed_ || !items_.empty(); })) return std::nullopt;
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return item;
  }

  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

  bool closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return items_.size();
  }
  std::uint64_t dropped() const {
    std::lock_guard lock(mutex_);
    return dropped_;
  }

 private:
  const std::size_t capacity_;
  const QueuePolicy policy_;
  mutable std::mutex mutex_;
  std::condition_variable not_empty_, not_full_;
  std::deque<T> items_;
  std::uint64_t dropped_ = 0;
  bool closed_ = false;
};

}  // namespace streamgen
