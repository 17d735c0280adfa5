#pragma once
// The Stochastic Similarity Filter: skip a frame with probability max(0, (S - eta) / (1 - eta)),
// S = cosine similarity to the last processed frame, with a bound on skips in a row.
#include <torch/types.h>

#include <functional>
#include <optional>
#include <string>

namespace streamgen {

struct SimilarityFilterOptions {
  double threshold = 0.98;  // eta; >= 1 disables skipping
  int max_skip = 10;
  // false (default): at most max_skip skips in a row, the counter reset by every processed frame.
  // true: upstream's counter (never reset by a normal process; up to max_skip + 1 skips in a row),
  // for parity with the reference.
  bool upstream_counter = false;
};

class SimilarityFilter {
 public:
  using Uniform = std::function<double()>;  // draws u in [0, 1); injectable for tests
  explicit SimilarityFilter(SimilarityFilterOptions options = {}, std::uint64_t seed = 0);
  SimilarityFilter(SimilarityFilterOptions options, Uniform uniform);

  struct Decision {
    bool process = true;
    double cos = 1.0;
    double p_skip = 0.0;
    std::string reason;  // "first", "process", "skip", "forced"
    int skip_count = 0;
  };
  // frame: the preprocessed input (any shape, values in [-1, 1]).
  Decision check(const torch::Tensor& frame);
  void reset();

 private:
  SimilarityFilterOptions options_;
  Uniform uniform_;
  torch::Tensor reference_;
  int skip_count_ = 0;
};

}  // namespace streamgen
