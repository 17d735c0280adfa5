#pragma once
// Multi-head scaled dot-product attention, the one kernel every model here calls (CLIP, the UNet's
// transformer blocks, the VAE's mid-block attention), so that speed work happens in one place.
#include <torch/types.h>

namespace streamgen {

// q [N, Lq, H*D], k and v [N, Lk, H*D] -> [N, Lq, H*D]. Scores and softmax are computed in fp32
// for reduced-precision inputs (what diffusers' upcast_attention / upcast_softmax do); the
// optional additive mask broadcasts to [N, H, Lq, Lk].
torch::Tensor multi_head_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, std::int64_t heads,
                                   const torch::Tensor& additive_mask = {});

}  // namespace streamgen
