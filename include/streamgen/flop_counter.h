#pragma once
// Counts the multiply-add FLOPs of the dense ops (conv2d, linear, matmul family) that run while a
// FlopCounter is alive, by observing LibTorch's dispatcher (RecordFunction). Used by benchmarks to
// report analytic GFLOPs and achieved GFLOP/s for any model without a hand-written formula.
#include <cstdint>

namespace streamgen {

class FlopCounter {
 public:
  FlopCounter();
  ~FlopCounter();
  FlopCounter(const FlopCounter&) = delete;
  FlopCounter& operator=(const FlopCounter&) = delete;
  // FLOPs counted so far (2 per multiply-add).
  double flops() const;

 private:
  std::uint64_t handle_;
};

}  // namespace streamgen

#include <map>
#include <string>

namespace streamgen {

// Wall time per top-level ATen op (nested ops are attributed to their caller) while alive: where
// a model's time goes, without an external profiler.
class OpTimer {
 public:
  struct Entry {
    std::int64_t calls = 0;
    double ms = 0;
  };
  OpTimer();
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;
  std::map<std::string, Entry> entries() const;

 private:
  std::uint64_t handle_;
};

}  // namespace streamgen
