#include "streamgen/tensor_compare.h"

#include <torch/torch.h>

#include <limits>

#include "streamgen/error.h"
#include "streamgen/safetensors_format.h"

namespace streamgen {

TensorDiff compare_tensors(const torch::Tensor& out, const torch::Tensor& ref) {
  if (out.sizes() != ref.sizes())
    throw Error("cannot compare tensors of shape " + safetensors::shape_string(out.sizes().vec()) + " and " +
                safetensors::shape_string(ref.sizes().vec()));
  torch::NoGradGuard no_grad;
  const auto a = out.detach().to(torch::kCPU, torch::kFloat64);
  const auto b = ref.detach().to(torch::kCPU, torch::kFloat64);
  TensorDiff d;
  d.non_finite = !torch::isfinite(a).all().item<bool>() || !torch::isfinite(b).all().item<bool>();
  if (a.numel() == 0) return d;
  const auto diff = a - b;
  d.max_abs = diff.abs().max().item<double>();
  const double num = diff.norm().item<double>();
  const double den = b.norm().item<double>();
  d.rel = den > 0 ? num / den : (num == 0 ? 0.0 : std::numeric_limits<double>::infinity());
  if (d.non_finite) d.rel = std::numeric_limits<double>::quiet_NaN();
  return d;
}

}  // namespace streamgen
