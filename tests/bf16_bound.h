#pragma once
// The bound a bf16 result is held to, derived from how the bf16 path computes on the machine the test
// runs on, instead of one number that holds on one CPU.
//
// A bf16 forward differs from the exact (fp32) reference for two reasons:
//  1. Its weights and inputs are bf16. `rounding`: the relative error of the fp32 model run on
//     bf16-rounded weights and inputs. It is the same on every machine.
//  2. Its reductions (convolutions, matrix products) round. With native bf16 (AVX512-BF16, AMX, CUDA)
//     LibTorch accumulates in fp32 and rounds the result once: relative error about 0.0017. On CPUs
//     without it (AVX2-only AMD and Intel) LibTorch 1.13's fallback kernels accumulate some products
//     in bf16, and the error grows as √K: 0.020 at K = 288 and 0.041 at K = 1280 on an AVX2 EPYC.
//     `reduction`: this machine's measured error for a reduction as wide as the model's widest,
//     the worse of the two matrix layouts LibTorch's kernels take.
// bound = 3 (rounding + reduction). The two parts add at worst linearly at the output. The factor 3
// budgets the elementwise ops between reductions: in these models a weight is followed by at most two
// ops that round their output in bf16 before the next weight (a normalisation and an activation, or a
// residual add and a softmax), each by no more than the weight's own rounding (2^-8 of the value) and
// through the same downstream layers, so they add at most twice the first part; the reduction part
// gets the same factor for the same reason. (The tiny VAE run wholly in bf16 measured 2.3-2.8 % on an
// earlier development machine and 3.4 % on an AVX2 EPYC, its first part 1.1 %: with a reduction part
// of one rounding, 0.17 %, a factor 2 would not cover it.)
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "streamgen/tensor_compare.h"

namespace streamgen::test {

// `t` rounded to `dtype` and back (floating tensors only; others are returned as they are).
inline torch::Tensor round_to(const torch::Tensor& t, torch::ScalarType dtype = torch::kBFloat16) {
  return t.is_floating_point() ? t.to(dtype).to(t.scalar_type()) : t;
}

// A module's parameters and floating buffers: what a dtype conversion of the module converts.
inline std::vector<torch::Tensor> floating_state(const torch::nn::Module& module) {
  auto all = module.parameters();
  for (const auto& b : module.buffers())
    if (b.is_floating_point()) all.push_back(b);
  return all;
}

// Rounds every floating parameter and buffer of an fp32 module to `dtype`, in place: the fp32 model
// that computes exactly on the weights a `dtype` model holds.
inline void round_parameters_to(torch::nn::Module& module, torch::ScalarType dtype = torch::kBFloat16) {
  torch::NoGradGuard no_grad;
  for (auto& t : floating_state(module)) t.copy_(round_to(t, dtype));
}

// The same for the life of the scope: the module's own values come back at its end (a module that
// goes on training after the comparison).
class ScopedRoundedParameters {
 public:
  explicit ScopedRoundedParameters(torch::nn::Module& module, torch::ScalarType dtype = torch::kBFloat16) : module_(module) {
    torch::NoGradGuard no_grad;
    for (const auto& t : floating_state(module)) saved_.push_back(t.detach().clone());
    round_parameters_to(module, dtype);
  }
  ~ScopedRoundedParameters() {
    torch::NoGradGuard no_grad;
    auto current = floating_state(module_);
    for (std::size_t i = 0; i < current.size(); ++i) current[i].copy_(saved_[i]);
  }
  ScopedRoundedParameters(const ScopedRoundedParameters&) = delete;
  ScopedRoundedParameters& operator=(const ScopedRoundedParameters&) = delete;

 private:
  torch::nn::Module& module_;
  std::vector<torch::Tensor> saved_;
};

// The widest reduction of a module's weights: in_channels · kernel area of a convolution, in_features
// of a linear layer.
inline std::int64_t widest_reduction(const torch::nn::Module& module) {
  std::int64_t widest = 1;
  for (const auto& p : module.named_parameters()) {
    const auto& w = p.value();
    if (p.key().size() < 6 || p.key().substr(p.key().size() - 6) != "weight" || w.dim() < 2) continue;
    widest = std::max(widest, w.numel() / w.size(0));
  }
  return widest;
}

// Measured relative error of a `dtype` reduction of width k on `device`, against fp32 on the same
// (rounded) operands: the worse of A·B with B stored [k, n] (the layout of convolutions' matrix
// products) and A·Bᵀ with B stored [n, k] (linear layers). Seeded, cached per (device, dtype, k).
inline double reduction_error(std::int64_t k, torch::ScalarType dtype = torch::kBFloat16, torch::Device device = torch::kCPU) {
  static std::mutex mutex;
  static std::map<std::string, double> cache;
  std::ostringstream key;
  key << device << '/' << dtype << '/' << k;
  std::lock_guard lock(mutex);
  if (const auto it = cache.find(key.str()); it != cache.end()) return it->second;
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(1234 + static_cast<std::uint64_t>(k));
  const auto a = round_to(at::randn({256, k}, gen), dtype), b = round_to(at::randn({k, 256}, gen), dtype);
  const auto exact = torch::matmul(a, b);
  const auto on = [&](const torch::Tensor& t) { return t.to(device, dtype); };
  const auto kn = torch::matmul(on(a), on(b)).cpu();
  const auto nk = torch::nn::functional::linear(on(a), on(b.t().contiguous())).cpu();
  const double error = std::max(compare_tensors(kn, exact).rel, compare_tensors(nk, exact).rel);
  cache[key.str()] = error;
  return error;
}

struct Bf16Bound {
  double rounding = 0;   // the fp32 model on rounded weights and inputs, against the reference
  double reduction = 0;  // this machine's error for the model's widest reduction
  double tol() const { return 3 * (rounding + reduction); }
  std::string describe() const {
    std::ostringstream s;
    s << "bound " << tol() << " = 3 (weight and input rounding " << rounding << " + reduction " << reduction << ")";
    return s.str();
  }
};

}  // namespace streamgen::test
