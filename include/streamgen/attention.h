#pragma once
// Multi-head scaled dot-product attention, the one kernel every model here calls (CLIP, the UNet's
// transformer blocks, the VAE's mid-block attention), so that speed work happens in one place.
#include <torch/types.h>

namespace streamgen {

// q [N, Lq, H*D], k and v [N, Lk, H*D] -> [N, Lq, H*D]. With `upcast` and bf16/fp16 inputs the
// scores and softmax are computed in fp32 (diffusers' upcast_attention); otherwise in the inputs'
// dtype, as the reference does. The optional additive mask is [Lq, Lk] (broadcast over batch and
// heads) or [G, Lq, Lk] with N a multiple of G, batch row i taking mask i % G (one mask per window
// when windows of several clips are batched, as the DiT's shifted windows need).
// When autograd records (any input requires grad), a plain differentiable formulation is used.
torch::Tensor multi_head_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, std::int64_t heads,
                                   const torch::Tensor& additive_mask = {}, bool upcast = true);

}  // namespace streamgen
