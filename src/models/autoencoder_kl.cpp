#include "streamgen/autoencoder_kl.h"

#include <torch/torch.h>

#include "streamgen/config_json.h"
#include "streamgen/error.h"
#include "streamgen/model_folder.h"
#include "streamgen/state_dict.h"

namespace streamgen {
namespace {

constexpr double kVaeEps = 1e-6;  // diffusers builds every VAE norm with eps 1e-6

torch::nn::Conv2d conv3(std::int64_t in, std::int64_t out) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
}

// DownEncoderBlock2D / UpDecoderBlock2D: resnets plus an optional resampler.
struct VaeBlockImpl : torch::nn::Module {
  VaeBlockImpl(std::int64_t in, std::int64_t out, std::int64_t layers, std::int64_t groups, int resample /* -1 down, +1 up, 0 none */) {
    resnets = register_module("resnets", torch::nn::ModuleList());
    for (std::int64_t i = 0; i < layers; ++i) resnets->push_back(ResnetBlock2D(i == 0 ? in : out, out, std::nullopt, groups, kVaeEps));
    if (resample < 0) downsamplers = register_module("downsamplers", torch::nn::ModuleList(Downsample2D(out, 0)));
    if (resample > 0) upsamplers = register_module("upsamplers", torch::nn::ModuleList(Upsample2D(out)));
  }
  torch::Tensor forward(torch::Tensor x) {
    for (const auto& r : *resnets) x = r->as<ResnetBlock2D>()->forward(x);
    if (downsamplers) x = downsamplers[0]->as<Downsample2D>()->forward(x);
    if (upsamplers) x = upsamplers[0]->as<Upsample2D>()->forward(x);
    return x;
  }
  torch::nn::ModuleList resnets{nullptr}, downsamplers{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(VaeBlock);

torch::nn::GroupNorm norm(std::int64_t groups, std::int64_t ch) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, ch).eps(kVaeEps));
}

}  // namespace

VaeMidBlockImpl::VaeMidBlockImpl(std::int64_t ch, std::int64_t groups, bool attention) {
  resnets = register_module("resnets", torch::nn::ModuleList(ResnetBlock2D(ch, ch, std::nullopt, groups, kVaeEps),
                                                             ResnetBlock2D(ch, ch, std::nullopt, groups, kVaeEps)));
  if (attention) {
    // diffusers builds this attention with upcast_softmax=True.
    AttentionOptions o{ch, 0, 1, ch, /*qkv_bias=*/true, /*upcast=*/true, groups, kVaeEps};
    attentions = register_module("attentions", torch::nn::ModuleList(Attention(o)));
  }
}

torch::Tensor VaeMidBlockImpl::forward(torch::Tensor x) {
  x = resnets[0]->as<ResnetBlock2D>()->forward(x);
  if (attentions) x = attentions[0]->as<Attention>()->forward_spatial(x);
  return resnets[1]->as<ResnetBlock2D>()->forward(x);
}

VaeEncoderImpl::VaeEncoderImpl(const AutoencoderKLConfig& c) {
  const auto& ch = c.block_out_channels;
  conv_in = register_module("conv_in", conv3(c.in_channels, ch[0]));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (std::size_t i = 0; i < ch.size(); ++i)
    down_blocks->push_back(VaeBlock(i == 0 ? ch[0] : ch[i - 1], ch[i], c.layers_per_block, c.norm_num_groups, i + 1 < ch.size() ? -1 : 0));
  mid_block = register_module("mid_block", VaeMidBlock(ch.back(), c.norm_num_groups, c.mid_block_add_attention));
  conv_norm_out = register_module("conv_norm_out", norm(c.norm_num_groups, ch.back()));
  conv_out = register_module("conv_out", conv3(ch.back(), 2 * c.latent_channels));
}

torch::Tensor VaeEncoderImpl::forward(const torch::Tensor& x) {
  auto h = conv_in(x);
  for (const auto& b : *down_blocks) h = b->as<VaeBlock>()->forward(h);
  h = mid_block(h);
  return conv_out(torch::silu(group_norm_fp32(conv_norm_out, h)));
}

VaeDecoderImpl::VaeDecoderImpl(const AutoencoderKLConfig& c) {
  const auto& ch = c.block_out_channels;
  conv_in = register_module("conv_in", conv3(c.latent_channels, ch.back()));
  mid_block = register_module("mid_block", VaeMidBlock(ch.back(), c.norm_num_groups, c.mid_block_add_attention));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  std::int64_t out = ch.back();
  for (std::size_t i = 0; i < ch.size(); ++i) {
    const auto prev = out;
    out = ch[ch.size() - 1 - i];
    up_blocks->push_back(VaeBlock(prev, out, c.layers_per_block + 1, c.norm_num_groups, i + 1 < ch.size() ? 1 : 0));
  }
  conv_norm_out = register_module("conv_norm_out", norm(c.norm_num_groups, ch[0]));
  conv_out = register_module("conv_out", conv3(ch[0], c.out_channels));
}

torch::Tensor VaeDecoderImpl::forward(const torch::Tensor& z) {
  auto h = mid_block(conv_in(z));
  for (const auto& b : *up_blocks) h = b->as<VaeBlock>()->forward(h);
  return conv_out(torch::silu(group_norm_fp32(conv_norm_out, h)));
}

AutoencoderKLImpl::AutoencoderKLImpl(const AutoencoderKLConfig& c) : config(c) {
  encoder = register_module("encoder", VaeEncoder(c));
  decoder = register_module("decoder", VaeDecoder(c));
  if (c.use_quant_conv)
    quant_conv = register_module("quant_conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(2 * c.latent_channels, 2 * c.latent_channels, 1)));
  if (c.use_post_quant_conv)
    post_quant_conv = register_module("post_quant_conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.latent_channels, c.latent_channels, 1)));
}

torch::ScalarType AutoencoderKLImpl::conv_in_dtype() const { return encoder->conv_in->weight.scalar_type(); }

LatentDistribution AutoencoderKLImpl::encode(const torch::Tensor& x) {
  // x [N, 3, H, W] in [-1, 1] -> mean, logvar, std [N, latent, H/f, W/f]
  const auto weights_dtype = conv_in_dtype();
  auto moments = encoder(match_memory_format(x.to(weights_dtype), encoder->conv_in->weight));
  if (quant_conv) moments = quant_conv(moments);
  const auto parts = moments.chunk(2, 1);
  LatentDistribution d;
  d.logvar = parts[1].clamp(-30.0, 20.0);
  d.std = torch::exp(0.5 * d.logvar).to(io_dtype);
  d.mean = parts[0].to(io_dtype);
  d.logvar = d.logvar.to(io_dtype);
  return d;
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& z) {
  const auto zz = match_memory_format(z.to(conv_in_dtype()), decoder->conv_in->weight);
  return decoder(post_quant_conv ? post_quant_conv(zz) : zz).to(io_dtype);
}

AutoencoderKL load_autoencoder_kl(const std::filesystem::path& dir, const ComputeOptions& compute) {
  return load_autoencoder_kl(component_source(dir), compute);
}

AutoencoderKL load_autoencoder_kl(const ComponentSource& source, const ComputeOptions& compute) {
  AutoencoderKL model(AutoencoderKLConfig::from_json(source.config, source.config_source));
  load_state_dict(*model, *source.weights, source.load);
  const bool upcast = model->config.force_upcast && compute.dtype != torch::kFloat32 && compute.dtype != torch::kFloat64;
  prepare_for_inference(*model, compute.device, upcast ? torch::kFloat32 : compute.dtype);
  model->io_dtype = compute.dtype;
  return model;
}

}  // namespace streamgen
