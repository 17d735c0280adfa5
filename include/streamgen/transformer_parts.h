#pragma once
// Attention and MLP sublayers shared by the DiT and its caption encoder (timm / DiT layout:
// attn.qkv + attn.proj, mlp.fc1 + GELU(tanh) + mlp.fc2).
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

namespace streamgen {

struct SelfAttentionImpl : torch::nn::Module {
  SelfAttentionImpl(std::int64_t dim, std::int64_t heads);
  // x [N, L, D] -> [N, L, D]; mask as multi_head_attention takes it ([L, L] or [G, L, L]).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});
  std::int64_t heads;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(SelfAttention);

struct CrossAttentionImpl : torch::nn::Module {
  CrossAttentionImpl(std::int64_t dim, std::int64_t heads);
  // x [N, L, D], context [N, M, D] -> [N, L, D]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);
  std::int64_t heads;
  torch::nn::Linear q{nullptr}, kv{nullptr}, proj{nullptr};
};
TORCH_MODULE(CrossAttention);

struct MlpImpl : torch::nn::Module {
  MlpImpl(std::int64_t dim, std::int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

}  // namespace streamgen
