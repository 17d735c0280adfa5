#include "streamgen/diffusers_blocks.h"

#include <torch/torch.h>

#include "streamgen/attention.h"

namespace streamgen {
namespace {

torch::nn::GroupNorm group_norm(std::int64_t groups, std::int64_t channels, double eps) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps));
}

torch::nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride = 1, std::int64_t pad = 0) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(pad));
}

}  // namespace

torch::nn::Conv2d conv3x3(std::int64_t in, std::int64_t out, std::int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

torch::Tensor group_norm_fp32(torch::nn::GroupNorm norm, const torch::Tensor& x) {
  if (x.scalar_type() != torch::kHalf && x.scalar_type() != torch::kBFloat16) return norm(x);
  const auto& o = norm->options;
  return torch::group_norm(x.to(torch::kFloat32), o.num_groups(), norm->weight.to(torch::kFloat32), norm->bias.to(torch::kFloat32), o.eps())
      .to(x.scalar_type());
}

torch::Tensor layer_norm_fp32(torch::nn::LayerNorm norm, const torch::Tensor& x) {
  if (x.scalar_type() != torch::kHalf && x.scalar_type() != torch::kBFloat16) return norm(x);
  const auto& o = norm->options;
  return torch::layer_norm(x.to(torch::kFloat32), o.normalized_shape(), norm->weight.to(torch::kFloat32), norm->bias.to(torch::kFloat32), o.eps())
      .to(x.scalar_type());
}

ResnetBlock2DImpl::ResnetBlock2DImpl(std::int64_t in, std::int64_t out, std::optional<std::int64_t> temb_channels, std::int64_t groups,
                                     double eps) {
  norm1 = register_module("norm1", group_norm(groups, in, eps));
  conv1 = register_module("conv1", conv(in, out, 3, 1, 1));
  if (temb_channels) time_emb_proj = register_module("time_emb_proj", torch::nn::Linear(*temb_channels, out));
  norm2 = register_module("norm2", group_norm(groups, out, eps));
  conv2 = register_module("conv2", conv(out, out, 3, 1, 1));
  if (in != out) conv_shortcut = register_module("conv_shortcut", conv(in, out, 1));
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  auto h = conv1(torch::silu(group_norm_fp32(norm1, x)));
  if (time_emb_proj && temb.defined()) h = h + time_emb_proj(torch::silu(temb)).unsqueeze(-1).unsqueeze(-1);
  h = conv2(torch::silu(group_norm_fp32(norm2, h)));
  return (conv_shortcut ? conv_shortcut(x) : x) + h;
}

Downsample2DImpl::Downsample2DImpl(std::int64_t channels, std::int64_t pad) : padding(pad) {
  conv = register_module("conv", streamgen::conv(channels, channels, 3, 2, pad));
}

torch::Tensor Downsample2DImpl::forward(const torch::Tensor& x) {
  if (padding == 0) return conv(torch::constant_pad_nd(x, {0, 1, 0, 1}, 0));
  return conv(x);
}

Upsample2DImpl::Upsample2DImpl(std::int64_t channels) { conv = register_module("conv", streamgen::conv(channels, channels, 3, 1, 1)); }

torch::Tensor Upsample2DImpl::forward(const torch::Tensor& x, std::optional<std::vector<std::int64_t>> size) {
  namespace F = torch::nn::functional;
  auto opts = F::InterpolateFuncOptions().mode(torch::kNearest);
  if (size)
    opts.size(*size);
  else
    opts.scale_factor(std::vector<double>{2.0, 2.0});
  return conv(F::interpolate(x, opts));
}

AttentionImpl::AttentionImpl(const AttentionOptions& o) : heads(o.heads), upcast(o.upcast) {
  const auto inner = o.heads * o.dim_head;
  const auto ctx = o.cross_attention_dim > 0 ? o.cross_attention_dim : o.query_dim;
  if (o.group_norm_groups > 0) group_norm = register_module("group_norm", streamgen::group_norm(o.group_norm_groups, o.query_dim, o.group_norm_eps));
  to_q = register_module("to_q", torch::nn::Linear(torch::nn::LinearOptions(o.query_dim, inner).bias(o.qkv_bias)));
  to_k = register_module("to_k", torch::nn::Linear(torch::nn::LinearOptions(ctx, inner).bias(o.qkv_bias)));
  to_v = register_module("to_v", torch::nn::Linear(torch::nn::LinearOptions(ctx, inner).bias(o.qkv_bias)));
  to_out = register_module("to_out", torch::nn::ModuleList(torch::nn::Linear(inner, o.query_dim)));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const auto& c = context.defined() ? context : x;
  return to_out[0]->as<torch::nn::Linear>()->forward(multi_head_attention(to_q(x), to_k(c), to_v(c), heads, {}, upcast));
}

torch::Tensor AttentionImpl::forward_spatial(const torch::Tensor& x) {
  // x [N, C, H, W] -> tokens [N, HW, C]
  const auto n = x.size(0), ch = x.size(1), h = x.size(2), w = x.size(3);
  const auto tokens = group_norm_fp32(group_norm, x).view({n, ch, h * w}).transpose(1, 2);
  const auto out = forward(tokens);
  return out.transpose(1, 2).reshape({n, ch, h, w}) + x;
}

GegluImpl::GegluImpl(std::int64_t dim, std::int64_t inner) { proj = register_module("proj", torch::nn::Linear(dim, 2 * inner)); }

torch::Tensor GegluImpl::forward(const torch::Tensor& x) {
  const auto parts = proj(x).chunk(2, -1);
  return parts[0] * torch::gelu(parts[1]);
}

GegluFeedForwardImpl::GegluFeedForwardImpl(std::int64_t dim) {
  const auto inner = 4 * dim;
  // net.0 GEGLU, net.1 dropout (no parameters), net.2 the output Linear.
  net = register_module("net", torch::nn::ModuleList(Geglu(dim, inner), torch::nn::Dropout(0.0), torch::nn::Linear(inner, dim)));
}

torch::Tensor GegluFeedForwardImpl::forward(const torch::Tensor& x) {
  return net[2]->as<torch::nn::Linear>()->forward(net[0]->as<Geglu>()->forward(x));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(std::int64_t dim, std::int64_t heads, std::int64_t dim_head,
                                                     std::int64_t cross_attention_dim, bool upcast) {
  const auto ln = torch::nn::LayerNormOptions({dim}).eps(1e-5);
  norm1 = register_module("norm1", torch::nn::LayerNorm(ln));
  attn1 = register_module("attn1", Attention(AttentionOptions{dim, 0, heads, dim_head, false, upcast}));
  norm2 = register_module("norm2", torch::nn::LayerNorm(ln));
  attn2 = register_module("attn2", Attention(AttentionOptions{dim, cross_attention_dim, heads, dim_head, false, upcast}));
  norm3 = register_module("norm3", torch::nn::LayerNorm(ln));
  ff = register_module("ff", GegluFeedForward(dim));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  auto h = attn1(layer_norm_fp32(norm1, x)) + x;
  h = attn2(layer_norm_fp32(norm2, h), context) + h;
  return ff(layer_norm_fp32(norm3, h)) + h;
}

Transformer2DModelImpl::Transformer2DModelImpl(const Transformer2DOptions& o) : linear(o.use_linear_projection) {
  const auto inner = o.heads * o.dim_head;
  norm = register_module("norm", group_norm(o.groups, o.channels, 1e-6));
  if (linear)
    proj_in_linear = register_module("proj_in", torch::nn::Linear(o.channels, inner));
  else
    proj_in_conv = register_module("proj_in", conv(o.channels, inner, 1));
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < o.layers; ++i)
    transformer_blocks->push_back(BasicTransformerBlock(inner, o.heads, o.dim_head, o.cross_attention_dim, o.upcast_attention));
  if (linear)
    proj_out_linear = register_module("proj_out", torch::nn::Linear(inner, o.channels));
  else
    proj_out_conv = register_module("proj_out", conv(inner, o.channels, 1));
}

torch::Tensor Transformer2DModelImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  // x [N, C, H, W] -> tokens [N, HW, inner] -> [N, C, H, W]
  const auto n = x.size(0), h = x.size(2), w = x.size(3);
  auto t = group_norm_fp32(norm, x);
  if (!linear) t = proj_in_conv(t);
  const auto inner = t.size(1);
  t = t.permute({0, 2, 3, 1}).reshape({n, h * w, inner});
  if (linear) t = proj_in_linear(t);
  for (const auto& block : *transformer_blocks) t = block->as<BasicTransformerBlock>()->forward(t, context);
  if (linear) t = proj_out_linear(t);
  t = t.reshape({n, h, w, t.size(-1)}).permute({0, 3, 1, 2}).contiguous(x.suggest_memory_format());
  if (!linear) t = proj_out_conv(t);
  return t + x;
}

}  // namespace streamgen
