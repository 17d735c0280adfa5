#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "streamgen/error.h"
#include "streamgen/tensor_compare.h"
#include "bf16_bound.h"

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

// The parts of the bf16 bound (bf16_bound.h) measure what they say.
TEST(Bf16Bound, RoundingAndWidestReduction) {
  torch::manual_seed(3);
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 8, 3)), torch::nn::Linear(10, 3));
  EXPECT_EQ(test::widest_reduction(*net), 36);  // 4 channels x 3 x 3 beats 10 features
  const auto before = net->parameters()[0].clone();
  {
    const test::ScopedRoundedParameters rounded(*net);
    const auto w = net->parameters()[0];
    EXPECT_TRUE(torch::equal(w, test::round_to(w)));  // every value is a bf16 value
    EXPECT_FALSE(torch::equal(w, before));
    // bf16 keeps 8 significant bits: rounding to nearest moves each value by at most 2^-8 of itself.
    EXPECT_TRUE(((w - before).abs() <= before.abs() * std::ldexp(1.0, -8)).all().item<bool>());
  }
  EXPECT_TRUE(torch::equal(net->parameters()[0], before));  // restored
}

TEST(Bf16Bound, ReductionErrorIsAtLeastOneRoundingAndFinite) {
  // Whatever the kernels, a bf16 result is rounded once: the relative error of rounding
  // Gaussian values to bf16 is about 0.0017 (under the unit roundoff 2^-8); accumulating in bf16 only adds to it.
  for (std::int64_t k : {16, 256}) {
    const double e = test::reduction_error(k);
    EXPECT_TRUE(std::isfinite(e));
    EXPECT_GT(e, 1e-3) << "k " << k;
    EXPECT_LT(e, 0.1) << "k " << k;
    EXPECT_EQ(test::reduction_error(k), e);  // seeded and cached
  }
  const test::Bf16Bound bound{0.01, 0.002};
  EXPECT_DOUBLE_EQ(bound.tol(), 0.036);
}

}  // namespace
}  // namespace streamgen
