#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "streamgen/error.h"
#include "streamgen/tensor_compare.h"

namespace streamgen {
namespace {

TEST(TensorCompare, RelativeErrorIsTheL2Ratio) {
  const auto ref = torch::tensor({3.0f, 4.0f});  // ||ref|| = 5
  const auto out = torch::tensor({3.0f, 4.5f});
  const auto d = compare_tensors(out, ref);
  EXPECT_NEAR(d.rel, 0.1, 1e-12);
  EXPECT_NEAR(d.max_abs, 0.5, 1e-12);
  EXPECT_TRUE(d.within(0.1 + 1e-9));
  EXPECT_FALSE(d.within(0.05));
}

TEST(TensorCompare, NanNeverPasses) {
  const auto ref = torch::ones({4});
  auto out = ref.clone();
  out[2] = NAN;
  EXPECT_FALSE(compare_tensors(out, ref).within(1e9));
  EXPECT_FALSE(compare_tensors(ref, out).within(1e9));
  out[2] = INFINITY;
  EXPECT_FALSE(compare_tensors(out, ref).within(1e9));
}

TEST(TensorCompare, ZeroReferenceAndMixedDtypes) {
  EXPECT_TRUE(compare_tensors(torch::zeros({3}), torch::zeros({3})).within(0));
  EXPECT_TRUE(std::isinf(compare_tensors(torch::ones({3}), torch::zeros({3})).rel));
  EXPECT_TRUE(compare_tensors(torch::ones({3}, torch::kBFloat16), torch::ones({3}, torch::kFloat64)).within(0));
  EXPECT_THROW(compare_tensors(torch::ones({3}), torch::ones({4})), Error);
}

}  // namespace
}  // namespace streamgen
