#include "streamgen/unet_2d_condition.h"

#include <torch/torch.h>

#include <cmath>

#include "streamgen/config_json.h"
#include "streamgen/error.h"
#include "streamgen/model_folder.h"
#include "streamgen/safetensors_format.h"
#include "streamgen/state_dict.h"

namespace streamgen {
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, std::int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  // timesteps [N] -> [N, dim] (float32)
  const auto half = dim / 2;
  const auto exponent = torch::arange(0, half, torch::TensorOptions().dtype(torch::kFloat32).device(timesteps.device())) *
                        static_cast<float>(-std::log(10000.0)) / static_cast<float>(static_cast<double>(half) - freq_shift);
  const auto args = timesteps.unsqueeze(1).to(torch::kFloat32) * torch::exp(exponent).unsqueeze(0);
  auto emb = flip_sin_to_cos ? torch::cat({torch::cos(args), torch::sin(args)}, -1) : torch::cat({torch::sin(args), torch::cos(args)}, -1);
  if (dim % 2 == 1) emb = torch::constant_pad_nd(emb, {0, 1, 0, 0}, 0);
  return emb;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(std::int64_t in, std::int64_t out) {
  linear_1 = register_module("linear_1", torch::nn::Linear(in, out));
  linear_2 = register_module("linear_2", torch::nn::Linear(out, out));
}

torch::Tensor TimestepEmbeddingImpl::forward(const torch::Tensor& x) { return linear_2(torch::silu(linear_1(x))); }

UNetConditioning UNetConditioning::expand(std::int64_t n) const {
  UNetConditioning c{encoder_hidden_states.expand({n, -1, -1})};
  if (text_embeds.defined()) c.text_embeds = text_embeds.expand({n, -1});
  if (time_ids.defined()) c.time_ids = time_ids.expand({n, -1});
  return c;
}

UNetConditioning UNetConditioning::narrow(std::int64_t start, std::int64_t length) const {
  UNetConditioning c{encoder_hidden_states.narrow(0, start, length)};
  if (text_embeds.defined()) c.text_embeds = text_embeds.narrow(0, start, length);
  if (time_ids.defined()) c.time_ids = time_ids.narrow(0, start, length);
  return c;
}

UNetConditioning UNetConditioning::to(const torch::Device& device, torch::ScalarType dtype) const {
  UNetConditioning c{encoder_hidden_states.to(device, dtype)};
  if (text_embeds.defined()) c.text_embeds = text_embeds.to(device, dtype);
  if (time_ids.defined()) c.time_ids = time_ids.to(device, torch::kFloat32);
  return c;
}

UNetConditioning cat_rows(const std::vector<UNetConditioning>& parts) {
  if (parts.size() == 1) return parts.front();
  auto field = [&](torch::Tensor UNetConditioning::*f) -> torch::Tensor {
    std::vector<torch::Tensor> ts;
    for (const auto& p : parts)
      if ((p.*f).defined()) ts.push_back(p.*f);
    if (ts.empty()) return {};
    if (ts.size() != parts.size()) throw Error("unet conditioning: rows with and without SDXL's added conditioning cannot be batched");
    return torch::cat(ts, 0);
  };
  return UNetConditioning(field(&UNetConditioning::encoder_hidden_states), field(&UNetConditioning::text_embeds), field(&UNetConditioning::time_ids));
}

UNetConditioning lerp(const UNetConditioning& a, const UNetConditioning& b, double w) {
  UNetConditioning c{torch::lerp(a.encoder_hidden_states, b.encoder_hidden_states, w), b.text_embeds, b.time_ids};
  if (a.text_embeds.defined() && b.text_embeds.defined()) c.text_embeds = torch::lerp(a.text_embeds, b.text_embeds, w);
  return c;
}

torch::Tensor default_time_ids(std::int64_t height, std::int64_t width) {
  const auto h = static_cast<float>(height), w = static_cast<float>(width);
  return torch::tensor({h, w, 0.0f, 0.0f, h, w}).view({1, 6});
}

torch::Tensor embed_timesteps(TimestepEmbeddingImpl& embedding, TimestepEmbeddingImpl* add_embedding, const UNet2DConditionConfig& c,
                              const torch::Tensor& timestep, const UNetConditioning& cond, std::int64_t n, torch::ScalarType dtype,
                              const char* who) {
  auto t = timestep.reshape({-1});
  if (t.size(0) == 1) t = t.expand({n});
  if (t.size(0) != n) throw Error(std::string(who) + ": " + std::to_string(t.size(0)) + " timesteps for a batch of " + std::to_string(n));
  auto emb = embedding.forward(timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift).to(dtype));
  if (!c.text_time) {
    if (cond.text_embeds.defined() || cond.time_ids.defined())
      throw Error(std::string(who) + ": text_embeds / time_ids given, but this model has no added conditioning (they are SDXL's)");
    return emb;
  }
  const auto p = c.text_embeds_dim();
  const auto shape = [](const torch::Tensor& x) { return x.defined() ? safetensors::shape_string(x.sizes().vec()) : std::string("missing"); };
  if (!cond.text_embeds.defined() || cond.text_embeds.dim() != 2 || cond.text_embeds.size(0) != n || cond.text_embeds.size(1) != p ||
      !cond.time_ids.defined() || cond.time_ids.dim() != 2 || cond.time_ids.size(0) != n || cond.time_ids.size(1) != c.kTimeIds)
    throw Error(std::string(who) + ": this SDXL model (addition_embed_type text_time) needs text_embeds [" + std::to_string(n) + ", " +
                std::to_string(p) + "] and time_ids [" + std::to_string(n) + ", 6]; got text_embeds " + shape(cond.text_embeds) +
                ", time_ids " + shape(cond.time_ids));
  // diffusers: add_time_proj(time_ids.flatten()).reshape(N, -1), concatenated in float32 after text_embeds.
  const auto time_embeds = timestep_embedding(cond.time_ids.reshape({-1}), c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift).reshape({n, -1});
  const auto added = torch::cat({cond.text_embeds.to(torch::kFloat32), time_embeds}, -1).to(dtype);
  return emb + add_embedding->forward(added);
}

namespace {

Transformer2DModel make_transformer(const UNet2DConditionConfig& c, std::int64_t channels, std::int64_t heads, std::int64_t layers) {
  Transformer2DOptions o{channels, heads, channels / heads, c.cross_attention_dim};
  o.groups = c.norm_num_groups;
  o.layers = layers;
  o.use_linear_projection = c.use_linear_projection;
  o.upcast_attention = c.upcast_attention;
  return Transformer2DModel(o);
}

}  // namespace

UNetDownBlockImpl::UNetDownBlockImpl(const UNet2DConditionConfig& c, std::size_t index, std::int64_t in, std::int64_t out, bool attention,
                                     bool downsample) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (attention) attentions = register_module("attentions", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.layers_per_block; ++i) {
    resnets->push_back(ResnetBlock2D(i == 0 ? in : out, out, c.time_embed_dim(), c.norm_num_groups, c.norm_eps));
    if (attention) attentions->push_back(make_transformer(c, out, c.heads[index], c.transformer_layers_per_block[index]));
  }
  if (downsample) downsamplers = register_module("downsamplers", torch::nn::ModuleList(Downsample2D(out, c.downsample_padding)));
}

torch::Tensor UNetDownBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                                         std::vector<torch::Tensor>& skips) {
  for (std::size_t i = 0; i < resnets->size(); ++i) {
    x = resnets[i]->as<ResnetBlock2D>()->forward(x, temb);
    if (attentions) x = attentions[i]->as<Transformer2DModel>()->forward(x, context);
    skips.push_back(x);
  }
  if (downsamplers) {
    x = downsamplers[0]->as<Downsample2D>()->forward(x);
    skips.push_back(x);
  }
  return x;
}

UNetUpBlockImpl::UNetUpBlockImpl(const UNet2DConditionConfig& c, std::size_t index, std::int64_t in, std::int64_t prev_out, std::int64_t out,
                                 bool attention, bool upsample) {
  // index counts up blocks; heads and layers come from the reversed per-block lists.
  const auto rev = c.block_out_channels.size() - 1 - index;
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (attention) attentions = register_module("attentions", torch::nn::ModuleList());
  const auto layers = c.layers_per_block + 1;
  for (std::int64_t i = 0; i < layers; ++i) {
    const auto skip_channels = i == layers - 1 ? in : out;
    const auto resnet_in = i == 0 ? prev_out : out;
    resnets->push_back(ResnetBlock2D(resnet_in + skip_channels, out, c.time_embed_dim(), c.norm_num_groups, c.norm_eps));
    if (attention) attentions->push_back(make_transformer(c, out, c.heads[rev], c.transformer_layers_per_block[rev]));
  }
  if (upsample) upsamplers = register_module("upsamplers", torch::nn::ModuleList(Upsample2D(out)));
}

torch::Tensor UNetUpBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                                       std::vector<torch::Tensor>& skips) {
  for (std::size_t i = 0; i < resnets->size(); ++i) {
    x = torch::cat({x, skips.back()}, 1);
    skips.pop_back();
    x = resnets[i]->as<ResnetBlock2D>()->forward(x, temb);
    if (attentions) x = attentions[i]->as<Transformer2DModel>()->forward(x, context);
  }
  if (upsamplers) {
    // Odd latent sizes: upsample to the next skip's size instead of exactly x2 (diffusers' upsample_size).
    std::optional<std::vector<std::int64_t>> size;
    if (!skips.empty() && (skips.back().size(2) != 2 * x.size(2) || skips.back().size(3) != 2 * x.size(3)))
      size = std::vector<std::int64_t>{skips.back().size(2), skips.back().size(3)};
    x = upsamplers[0]->as<Upsample2D>()->forward(x, size);
  }
  return x;
}

UNetMidBlock2DCrossAttnImpl::UNetMidBlock2DCrossAttnImpl(const UNet2DConditionConfig& c) {
  const auto ch = c.block_out_channels.back();
  resnets = register_module("resnets", torch::nn::ModuleList());
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets->push_back(ResnetBlock2D(ch, ch, c.time_embed_dim(), c.norm_num_groups, c.norm_eps));
  attentions->push_back(make_transformer(c, ch, c.heads.back(), c.transformer_layers_per_block.back()));
  resnets->push_back(ResnetBlock2D(ch, ch, c.time_embed_dim(), c.norm_num_groups, c.norm_eps));
}

torch::Tensor UNetMidBlock2DCrossAttnImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context) {
  x = resnets[0]->as<ResnetBlock2D>()->forward(x, temb);
  for (std::size_t i = 0; i < attentions->size(); ++i) {
    x = attentions[i]->as<Transformer2DModel>()->forward(x, context);
    x = resnets[i + 1]->as<ResnetBlock2D>()->forward(x, temb);
  }
  return x;
}

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNet2DConditionConfig& c) : config(c) {
  const auto& ch = c.block_out_channels;
  const auto blocks = ch.size();
  conv_in = register_module("conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_channels, ch[0], 3).padding(1)));
  time_embedding = register_module("time_embedding", TimestepEmbedding(ch[0], c.time_embed_dim()));
  if (c.text_time)
    add_embedding = register_module("add_embedding", TimestepEmbedding(c.projection_class_embeddings_input_dim, c.time_embed_dim()));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (std::size_t i = 0; i < blocks; ++i)
    down_blocks->push_back(UNetDownBlock(c, i, i == 0 ? ch[0] : ch[i - 1], ch[i], c.down_block_types[i] == "CrossAttnDownBlock2D", i + 1 < blocks));
  mid_block = register_module("mid_block", UNetMidBlock2DCrossAttn(c));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  std::int64_t out = ch.back();
  for (std::size_t i = 0; i < blocks; ++i) {
    const auto prev_out = out;
    out = ch[blocks - 1 - i];
    const auto in = ch[blocks - 1 - std::min(i + 1, blocks - 1)];
    up_blocks->push_back(UNetUpBlock(c, i, in, prev_out, out, c.up_block_types[i] == "CrossAttnUpBlock2D", i + 1 < blocks));
  }
  conv_norm_out = register_module("conv_norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(c.norm_num_groups, ch[0]).eps(c.norm_eps)));
  conv_out = register_module("conv_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(ch[0], c.out_channels, 3).padding(1)));
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sample, const torch::Tensor& timestep,
                                                const torch::Tensor& encoder_hidden_states, const UNetResiduals* residuals) {
  return forward(sample, timestep, UNetConditioning{encoder_hidden_states}, residuals);
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sample, const torch::Tensor& timestep, const UNetConditioning& cond,
                                                const UNetResiduals* residuals) {
  // sample [N, C, H, W], timestep [N] | [1] | [], encoder_hidden_states [N, L, D] (+ text_embeds [N, P], time_ids [N, 6])
  // -> [N, C, H, W]
  const auto& encoder_hidden_states = cond.encoder_hidden_states;
  if (sample.dim() != 4 || sample.size(1) != config.in_channels)
    throw Error("unet: sample must be [N, " + std::to_string(config.in_channels) + ", H, W], got " + std::to_string(sample.dim()) + "-d");
  if (!encoder_hidden_states.defined() || encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(2) != config.cross_attention_dim ||
      encoder_hidden_states.size(0) != sample.size(0))
    throw Error("unet: encoder_hidden_states must be [" + std::to_string(sample.size(0)) + ", L, " +
                std::to_string(config.cross_attention_dim) + "]");
  const auto emb = embed_timesteps(*time_embedding, add_embedding.is_empty() ? nullptr : add_embedding.get(), config, timestep, cond, sample.size(0), sample.scalar_type(), "unet");
  auto x = conv_in(match_memory_format(sample, conv_in->weight));
  std::vector<torch::Tensor> skips{x};
  for (const auto& block : *down_blocks) x = block->as<UNetDownBlock>()->forward(x, emb, encoder_hidden_states, skips);
  if (residuals && residuals->down.size() != skips.size())
    throw Error("unet: " + std::to_string(residuals->down.size()) + " ControlNet residuals for " + std::to_string(skips.size()) +
                " skip connections (a ControlNet made for another UNet?)");
  if (residuals)
    for (std::size_t i = 0; i < skips.size(); ++i) {
      if (residuals->down[i].sizes() != skips[i].sizes())
        throw Error("unet: ControlNet residual " + std::to_string(i) + " is " + safetensors::shape_string(residuals->down[i].sizes().vec()) +
                    ", the skip connection " + safetensors::shape_string(skips[i].sizes().vec()));
      skips[i] = skips[i] + residuals->down[i];
    }
  x = mid_block(x, emb, encoder_hidden_states);
  if (residuals && residuals->mid.defined()) x = x + residuals->mid;
  for (const auto& block : *up_blocks) x = block->as<UNetUpBlock>()->forward(x, emb, encoder_hidden_states, skips);
  return conv_out(torch::silu(group_norm_fp32(conv_norm_out, x)));
}

UNet2DConditionModel load_unet_2d_condition(const std::filesystem::path& dir, const ComputeOptions& compute) {
  return load_unet_2d_condition(component_source(dir), compute);
}

UNet2DConditionModel load_unet_2d_condition(const ComponentSource& source, const ComputeOptions& compute) {
  UNet2DConditionModel model(UNet2DConditionConfig::from_json(source.config, source.config_source));
  load_state_dict(*model, *source.weights, source.load);
  prepare_for_inference(*model, compute.device, compute.dtype);
  return model;
}

}  // namespace streamgen
