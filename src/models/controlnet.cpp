#include "streamgen/controlnet.h"

#include <torch/torch.h>

#include "streamgen/error.h"
#include "streamgen/model_folder.h"
#include "streamgen/safetensors_format.h"
#include "streamgen/single_file.h"
#include "streamgen/state_dict.h"

namespace streamgen {
namespace {

torch::nn::Conv2d zero_conv(std::int64_t channels) { return torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 1)); }

}  // namespace

ControlNetConditioningEmbeddingImpl::ControlNetConditioningEmbeddingImpl(std::int64_t conditioning_channels, const std::vector<std::int64_t>& widths,
                                                                         std::int64_t out_channels) {
  conv_in = register_module("conv_in", conv3x3(conditioning_channels, widths.front()));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (std::size_t i = 0; i + 1 < widths.size(); ++i) {
    blocks->push_back(conv3x3(widths[i], widths[i]));
    blocks->push_back(conv3x3(widths[i], widths[i + 1], 2));
  }
  conv_out = register_module("conv_out", conv3x3(widths.back(), out_channels));
}

torch::Tensor ControlNetConditioningEmbeddingImpl::forward(const torch::Tensor& cond) {
  auto x = torch::silu(conv_in(match_memory_format(cond, conv_in->weight)));
  for (const auto& block : *blocks) x = torch::silu(block->as<torch::nn::Conv2d>()->forward(x));
  return conv_out(x);
}

ControlNetModelImpl::ControlNetModelImpl(const ControlNetConfig& c) : config(c) {
  const auto& u = c.unet;
  const auto& ch = u.block_out_channels;
  const auto blocks = ch.size();
  conv_in = register_module("conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(u.in_channels, ch[0], 3).padding(1)));
  time_embedding = register_module("time_embedding", TimestepEmbedding(ch[0], u.time_embed_dim()));
  if (u.text_time)
    add_embedding = register_module("add_embedding", TimestepEmbedding(u.projection_class_embeddings_input_dim, u.time_embed_dim()));
  controlnet_cond_embedding =
      register_module("controlnet_cond_embedding", ControlNetConditioningEmbedding(c.conditioning_channels, c.conditioning_embedding_out_channels, ch[0]));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  controlnet_down_blocks = register_module("controlnet_down_blocks", torch::nn::ModuleList());
  controlnet_down_blocks->push_back(zero_conv(ch[0]));  // conv_in's skip
  for (std::size_t i = 0; i < blocks; ++i) {
    const bool downsample = i + 1 < blocks;
    down_blocks->push_back(UNetDownBlock(u, i, i == 0 ? ch[0] : ch[i - 1], ch[i], u.down_block_types[i] == "CrossAttnDownBlock2D", downsample));
    for (std::int64_t l = 0; l < u.layers_per_block + (downsample ? 1 : 0); ++l) controlnet_down_blocks->push_back(zero_conv(ch[i]));
  }
  mid_block = register_module("mid_block", UNetMidBlock2DCrossAttn(u));
  controlnet_mid_block = register_module("controlnet_mid_block", zero_conv(ch.back()));
}

ControlNetOutput ControlNetModelImpl::forward(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& encoder_hidden_states,
                                              const torch::Tensor& control, double conditioning_scale) {
  return forward(sample, timestep, UNetConditioning{encoder_hidden_states}, control, conditioning_scale);
}

ControlNetOutput ControlNetModelImpl::forward(const torch::Tensor& sample, const torch::Tensor& timestep, const UNetConditioning& cond,
                                              const torch::Tensor& control, double conditioning_scale) {
  const auto& encoder_hidden_states = cond.encoder_hidden_states;
  // sample [N, C, h, w], control [N or 1, Cc, f h, f w] (f = 8 for the usual embedding) -> residuals
  const auto& u = config.unet;
  const auto f = config.downsample_factor();
  if (sample.dim() != 4 || sample.size(1) != u.in_channels)
    throw Error("controlnet: sample must be [N, " + std::to_string(u.in_channels) + ", h, w]");
  if (control.dim() != 4 || control.size(1) != config.conditioning_channels || control.size(2) != sample.size(2) * f ||
      control.size(3) != sample.size(3) * f || control.size(0) < 1 || sample.size(0) % control.size(0) != 0)
    throw Error("controlnet: the control image must be " + std::to_string(config.conditioning_channels) + " x " + std::to_string(sample.size(2) * f) +
                " x " + std::to_string(sample.size(3) * f) + " (" + std::to_string(f) + "x the latent), a batch that divides the sample's; got " +
                safetensors::shape_string(control.sizes().vec()));
  if (!encoder_hidden_states.defined() || encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(0) != sample.size(0) || encoder_hidden_states.size(2) != u.cross_attention_dim)
    throw Error("controlnet: encoder_hidden_states must be [" + std::to_string(sample.size(0)) + ", L, " + std::to_string(u.cross_attention_dim) + "]");
  const auto n = sample.size(0);
  const auto emb = embed_timesteps(*time_embedding, add_embedding.is_empty() ? nullptr : add_embedding.get(), u, timestep, cond, n, sample.scalar_type(), "controlnet");
  // The embedding runs once per distinct control image, then is tiled over the rows (a stream's rows are
  // slot-major: row k holds frame k mod b).
  const auto image = config.bgr ? control.flip({1}) : control;
  ControlNetOutput out;
  out.cond_embedding = controlnet_cond_embedding(image.to(sample.scalar_type()));
  if (image.size(0) != n) out.cond_embedding = out.cond_embedding.repeat({n / image.size(0), 1, 1, 1});
  auto x = conv_in(match_memory_format(sample, conv_in->weight)) + out.cond_embedding;
  std::vector<torch::Tensor> skips{x};
  for (const auto& block : *down_blocks) x = block->as<UNetDownBlock>()->forward(x, emb, encoder_hidden_states, skips);
  x = mid_block(x, emb, encoder_hidden_states);
  for (std::size_t i = 0; i < skips.size(); ++i)
    out.residuals.down.push_back(controlnet_down_blocks[i]->as<torch::nn::Conv2d>()->forward(skips[i]) * conditioning_scale);
  out.residuals.mid = controlnet_mid_block(x) * conditioning_scale;
  return out;
}

ControlNetModel load_controlnet(const ComponentSource& source, const ComputeOptions& compute) {
  ControlNetModel model(ControlNetConfig::from_json(source.config, source.config_source));
  load_state_dict(*model, *source.weights, source.load);
  prepare_for_inference(*model, compute.device, compute.dtype);
  return model;
}

ControlNetModel load_controlnet(const std::filesystem::path& dir, const ComputeOptions& compute) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(dir, ec)) return load_controlnet(open_single_file_controlnet(dir), compute);
  const auto cls = folder_class_name(dir);
  if (cls != "ControlNetModel")
    throw Error("--controlnet " + dir.string() + " is " + describe_model_folder(dir) + ", not a ControlNet folder (config.json with _class_name ControlNetModel)");
  return load_controlnet(component_source(dir), compute);
}

torch::Tensor control_image_to_unit(const torch::Tensor& image_u8) {
  if (image_u8.scalar_type() != torch::kUInt8 || image_u8.dim() != 4)
    throw Error("controlnet: the control image must be uint8 [N, C, H, W]");
  return image_u8.to(torch::kFloat32) / 255.0;
}

}  // namespace streamgen
