#include "streamgen/attention.h"

#include <torch/torch.h>

#include <cmath>

namespace streamgen {

torch::Tensor multi_head_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, std::int64_t heads,
                                   const torch::Tensor& additive_mask) {
  const auto n = q.size(0), lq = q.size(1), lk = k.size(1);
  const auto d = q.size(2) / heads;
  const auto qh = q.view({n, lq, heads, d}).transpose(1, 2);  // [N, H, Lq, D]
  const auto kh = k.view({n, lk, heads, d}).transpose(1, 2);
  const auto vh = v.view({n, lk, heads, d}).transpose(1, 2);
  auto scores = torch::matmul(qh, kh.transpose(-1, -2));  // [N, H, Lq, Lk]
  if (scores.scalar_type() != torch::kFloat32 && scores.scalar_type() != torch::kFloat64) scores = scores.to(torch::kFloat32);
  scores.mul_(1.0 / std::sqrt(static_cast<double>(d)));
  if (additive_mask.defined()) scores.add_(additive_mask);
  const auto probs = torch::softmax(scores, -1).to(v.scalar_type());
  return torch::matmul(probs, vh).transpose(1, 2).reshape({n, lq, heads * d});
}

}  // namespace streamgen
