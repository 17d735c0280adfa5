#include "streamgen/attention.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>

namespace streamgen {
namespace {

// Queries are processed in chunks so that one chunk's score block stays near this many elements:
// at SD-Turbo's 64x64 latent a whole score matrix is 5 x 4096 x 4096 (335 MB in fp32), which costs
// more in memory traffic than the matmuls themselves.
constexpr std::int64_t kScoreBlockElements = std::int64_t{1} << 22;

}  // namespace

torch::Tensor multi_head_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, std::int64_t heads,
                                   const torch::Tensor& additive_mask, bool upcast) {
  const auto n = q.size(0), lq = q.size(1), lk = k.size(1);
  const auto d = q.size(2) / heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const bool reduced = q.scalar_type() != torch::kFloat32 && q.scalar_type() != torch::kFloat64;
  const bool grouped_mask = additive_mask.defined() && additive_mask.dim() == 3;
  const std::int64_t groups = grouped_mask ? additive_mask.size(0) : 1;
  if (grouped_mask && n % groups != 0)
    throw std::invalid_argument("multi_head_attention: batch " + std::to_string(n) + " is not a multiple of the " +
                                std::to_string(groups) + " masks");
  // The mask as [N or 1, 1, Lq, Lk], broadcastable over [N, H, Lq, Lk].
  auto batched_mask = [&](torch::ScalarType dtype) {
    const auto m = additive_mask.to(dtype);
    if (!grouped_mask) return m.reshape({1, 1, lq, lk});
    return m.view({1, groups, 1, lq, lk}).expand({n / groups, groups, 1, lq, lk}).reshape({n, 1, lq, lk});
  };
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  if (q.is_cuda()) {
    // PyTorch 2.x fuses the whole attention on CUDA (FlashAttention / memory-efficient kernels):
    // the score matrix never reaches memory and the softmax accumulates in fp32, which is what
    // `upcast` asks for.
    auto split = [&](const torch::Tensor& t, std::int64_t l) { return t.view({n, l, heads, d}).transpose(1, 2); };
    const auto o = additive_mask.defined()
                       ? at::scaled_dot_product_attention(split(q, lq), split(k, lk), split(v, lk), batched_mask(q.scalar_type()), 0.0, false, scale)
                       : at::scaled_dot_product_attention(split(q, lq), split(k, lk), split(v, lk), {}, 0.0, false, scale);
    return o.transpose(1, 2).reshape({n, lq, heads * d});
  }
#endif
  // LibTorch 1.13's CPU kernel for tiny batched products (head dim x Lq x Lk < 400) reads the
  // uninitialised output of baddbmm / bmm_out (NaN seen in the scores of 5-token windows with 4-dim
  // heads), and chunking buys nothing at that size: such problems take the plain path.
  const bool tiny = d * lq * lk < 400;
  if (tiny || (torch::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad()))) {
    // Training: out= kernels do not record autograd, so the whole score matrix is built at once.
    auto split = [&](const torch::Tensor& t, std::int64_t l) { return t.view({n, l, heads, d}).transpose(1, 2); };
    auto scores = torch::matmul(split(q, lq), split(k, lk).transpose(-2, -1)) * scale;  // [N, H, Lq, Lk]
    if (upcast && reduced) scores = scores.to(torch::kFloat32);
    if (additive_mask.defined()) scores = scores + batched_mask(scores.scalar_type());
    const auto o = torch::matmul(torch::softmax(scores, -1).to(v.scalar_type()), split(v, lk));
    return o.transpose(1, 2).reshape({n, lq, heads * d});
  }
  // [N, L, H*D] -> [N*H, L, D]
  auto heads_first = [&](const torch::Tensor& t, std::int64_t l) { return t.view({n, l, heads, d}).transpose(1, 2).reshape({n * heads, l, d}); };
  const auto qh = heads_first(q, lq);
  const auto kt = heads_first(k, lk).transpose(1, 2);  // [N*H, D, Lk]
  const auto vh = heads_first(v, lk);
  torch::Tensor mask;
  if (additive_mask.defined()) mask = additive_mask.to(upcast && reduced ? torch::kFloat32 : q.scalar_type());

  const std::int64_t chunk = std::clamp<std::int64_t>(kScoreBlockElements / std::max<std::int64_t>(1, n * heads * lk), 1, lq);
  auto out = torch::empty({n * heads, lq, d}, qh.options());
  for (std::int64_t start = 0; start < lq; start += chunk) {
    const auto len = std::min(chunk, lq - start);
    // The matmuls run in the inputs' dtype (bf16 accumulates in fp32 inside oneDNN); with upcast the
    // scaled scores and the softmax are fp32.
    auto scores = torch::baddbmm(torch::empty({n * heads, len, lk}, qh.options()), qh.narrow(1, start, len), kt, /*beta=*/0, /*alpha=*/scale);
    if (upcast && reduced) scores = scores.to(torch::kFloat32);
    if (mask.defined()) {
      if (grouped_mask)  // [N*H, len, Lk] viewed as [N, H, len, Lk]; row i takes mask i % G
        scores.view({n, heads, len, lk}).add_(batched_mask(mask.scalar_type()).narrow(2, start, len));
      else
        scores.add_(mask.narrow(0, start, len));
    }
    auto o = out.narrow(1, start, len);
    torch::bmm_out(o, torch::softmax(scores, -1).to(vh.scalar_type()), vh);
  }
  // [N*H, Lq, D] -> [N, Lq, H*D]
  return out.view({n, heads, lq, d}).transpose(1, 2).reshape({n, lq, heads * d});
}

}  // namespace streamgen
