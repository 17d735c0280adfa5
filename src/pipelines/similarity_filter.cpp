#include "streamgen/similarity_filter.h"

#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <random>

#include "streamgen/error.h"

namespace streamgen {

SimilarityFilter::SimilarityFilter(SimilarityFilterOptions options, std::uint64_t seed)
    : SimilarityFilter(options, [rng = std::make_shared<std::mt19937_64>(seed)] { return std::uniform_real_distribution<double>(0.0, 1.0)(*rng); }) {}

SimilarityFilter::SimilarityFilter(SimilarityFilterOptions options, Uniform uniform) : options_(options), uniform_(std::move(uniform)) {
  if (options_.max_skip < 0) throw Error("similarity filter: max_skip must be >= 0");
  if (!uniform_) throw Error("similarity filter: no random source");
}

void SimilarityFilter::reset() {
  reference_ = torch::Tensor();
  skip_count_ = 0;
}

SimilarityFilter::Decision SimilarityFilter::check(const torch::Tensor& frame) {
  torch::NoGradGuard no_grad;
  const auto x = frame.detach().to(torch::kCPU, torch::kFloat32).reshape({-1});
  Decision d;
  if (!reference_.defined() || reference_.numel() != x.numel()) {
    reference_ = x.clone();
    d.reason = "first";
    d.skip_count = skip_count_;
    return d;
  }
  // torch's CosineSimilarity with eps 1e-6, in float32 like the reference.
  d.cos = torch::cosine_similarity(reference_, x, 0, 1e-6).item<float>();
  d.p_skip = options_.threshold >= 1 ? 0.0 : std::max(0.0, 1.0 - (1.0 - d.cos) / (1.0 - options_.threshold));
  const double u = uniform_();
  if (options_.threshold >= 1 || d.p_skip < u) {  // eta >= 1 disables skipping outright
    d.reason = "process";
    if (!options_.upstream_counter) skip_count_ = 0;
  } else if (options_.upstream_counter ? skip_count_ > options_.max_skip : skip_count_ >= options_.max_skip) {
    d.reason = "forced";
    skip_count_ = 0;
  } else {
    d.process = false;
    d.reason = "skip";
    ++skip_count_;
  }
  if (d.process) reference_ = x.clone();
  d.skip_count = skip_count_;
  return d;
}

}  // namespace streamgen
