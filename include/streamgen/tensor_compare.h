#pragma once
// The project's one definition of "how far is out from ref": relative error ||out-ref|| / ||ref||
// (L2 over all elements, computed in float64) and max |out-ref|. NaN or Inf in either makes the
// comparison fail whatever the tolerance.
#include <torch/types.h>

namespace streamgen {

struct TensorDiff {
  double max_abs = 0;
  double rel = 0;          // ||out-ref|| / ||ref||; +inf when ref is all zeros and out is not
  bool non_finite = false;  // NaN or Inf in out or ref
  bool within(double tol) const { return !non_finite && rel <= tol; }
};

// Shapes must match (throws streamgen::Error otherwise).
TensorDiff compare_tensors(const torch::Tensor& out, const torch::Tensor& ref);

}  // namespace streamgen
