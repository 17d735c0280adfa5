#include "streamgen/transformer_parts.h"

#include <torch/torch.h>

#include "streamgen/attention.h"

namespace streamgen {

SelfAttentionImpl::SelfAttentionImpl(std::int64_t dim, std::int64_t heads) : heads(heads) {
  qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  const auto parts = qkv(x).chunk(3, -1);
  // The attention kernel views q/k/v per head, which needs them contiguous.
  return proj(multi_head_attention(parts[0].contiguous(), parts[1].contiguous(), parts[2].contiguous(), heads, mask));
}

CrossAttentionImpl::CrossAttentionImpl(std::int64_t dim, std::int64_t heads) : heads(heads) {
  q = register_module("q", torch::nn::Linear(dim, dim));
  kv = register_module("kv", torch::nn::Linear(dim, 2 * dim));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
}

torch::Tensor CrossAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const auto parts = kv(context).chunk(2, -1);
  return proj(multi_head_attention(q(x), parts[0].contiguous(), parts[1].contiguous(), heads));
}

MlpImpl::MlpImpl(std::int64_t dim, std::int64_t hidden) {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return fc2(torch::gelu(fc1(x), "tanh"));
}

}  // namespace streamgen
