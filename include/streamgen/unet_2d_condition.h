#pragma once
// UNet2DConditionModel as in diffusers, for the SD1.x, SD2.x / SD-Turbo and SDXL / SDXL-Turbo families: down
// blocks (CrossAttnDownBlock2D, DownBlock2D), UNetMidBlock2DCrossAttn, up blocks (UpBlock2D, CrossAttnUpBlock2D),
// and SDXL's added "text_time" conditioning. Module names equal the checkpoint keys.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "streamgen/device.h"
#include "streamgen/diffusers_blocks.h"
#include "streamgen/unet_2d_condition_config.h"

namespace streamgen {

// Sinusoidal timestep embedding (diffusers get_timestep_embedding, max_period 10000).
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, std::int64_t dim, bool flip_sin_to_cos, double freq_shift);

struct TimestepEmbeddingImpl : torch::nn::Module {
  TimestepEmbeddingImpl(std::int64_t in, std::int64_t out);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

// What a UNet call is conditioned on besides the timestep, row by row.
struct UNetConditioning {
  UNetConditioning() = default;
  explicit UNetConditioning(torch::Tensor hidden, torch::Tensor pooled = {}, torch::Tensor ids = {})
      : encoder_hidden_states(std::move(hidden)), text_embeds(std::move(pooled)), time_ids(std::move(ids)) {}
  torch::Tensor encoder_hidden_states;  // [N, L, D]: the prompt's tokens
  torch::Tensor text_embeds;            // [N, P]: SDXL's pooled text projection (text_time UNets only)
  torch::Tensor time_ids;               // [N, 6]: SDXL's (orig_h, orig_w, crop_top, crop_left, target_h, target_w), pixels
  std::int64_t rows() const { return encoder_hidden_states.size(0); }
  // Batch 1 -> n rows (a view).
  UNetConditioning expand(std::int64_t n) const;
  // Rows [start, start + length).
  UNetConditioning narrow(std::int64_t start, std::int64_t length) const;
  // The embeddings moved to `dtype` on `device`; time_ids stay float32 (pixel sizes, turned into sinusoids in float32).
  UNetConditioning to(const torch::Device& device, torch::ScalarType dtype) const;
};
// The parts' rows one after another (each part's fields defined alike).
UNetConditioning cat_rows(const std::vector<UNetConditioning>& parts);
// a + w (b - a) on every embedding (time_ids from b): a prompt blend.
UNetConditioning lerp(const UNetConditioning& a, const UNetConditioning& b, double w);
// The time_ids SDXL's pipelines pass by default for an image of height x width: no crop, original = target size. [1, 6]
torch::Tensor default_time_ids(std::int64_t height, std::int64_t width);

// The embedding a UNet-shaped model (the UNet, a ControlNet) gives its resnets: timestep [N] | [1] | [] for a
// batch of n rows -> [n, time_embed_dim] in `dtype`, plus, for a text_time config, add_embedding(cat(text_embeds,
// sinusoids of time_ids)). Throws streamgen::Error naming `who` when the timesteps are neither one nor n or the
// added conditioning is missing or misshapen.
torch::Tensor embed_timesteps(TimestepEmbeddingImpl& embedding, TimestepEmbeddingImpl* add_embedding, const UNet2DConditionConfig& c,
                              const torch::Tensor& timestep, const UNetConditioning& cond, std::int64_t n, torch::ScalarType dtype,
                              const char* who);

// CrossAttnDownBlock2D (with attentions) or DownBlock2D.
struct UNetDownBlockImpl : torch::nn::Module {
  UNetDownBlockImpl(const UNet2DConditionConfig& c, std::size_t index, std::int64_t in, std::int64_t out, bool attention, bool downsample);
  // x [N, Cin, H, W] -> [N, Cout, H', W']; appends every resnet/attention output and the
  // downsampled result to `skips`.
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context, std::vector<torch::Tensor>& skips);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(UNetDownBlock);

// CrossAttnUpBlock2D (with attentions) or UpBlock2D.
struct UNetUpBlockImpl : torch::nn::Module {
  UNetUpBlockImpl(const UNet2DConditionConfig& c, std::size_t index, std::int64_t in, std::int64_t prev_out, std::int64_t out, bool attention,
                  bool upsample);
  // Consumes len(resnets) skips from the back of `skips`.
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context, std::vector<torch::Tensor>& skips);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UNetUpBlock);

struct UNetMidBlock2DCrossAttnImpl : torch::nn::Module {
  explicit UNetMidBlock2DCrossAttnImpl(const UNet2DConditionConfig& c);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(UNetMidBlock2DCrossAttn);

// What ControlNets add to a UNet call (already multiplied by their conditioning scales, and summed over
// several ControlNets): one residual per skip connection, in the order the down path makes them (conv_in,
// every resnet / attention output, every downsampler), and one to the mid block's output.
struct UNetResiduals {
  std::vector<torch::Tensor> down;
  torch::Tensor mid;
};

struct UNet2DConditionModelImpl : torch::nn::Module {
  explicit UNet2DConditionModelImpl(const UNet2DConditionConfig& c);
  // sample [N, Cin, H, W], timestep int64 [N] or [1] or scalar, cond.encoder_hidden_states [N, L, D] (+ text_embeds
  // [N, P] and time_ids [N, 6] for a text_time UNet) -> [N, Cout, H, W]
  torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timestep, const UNetConditioning& cond,
                        const UNetResiduals* residuals = nullptr);
  // The SD1.x / SD2.x form: text tokens only.
  torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& encoder_hidden_states,
                        const UNetResiduals* residuals = nullptr);
  UNet2DConditionConfig config;
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  TimestepEmbedding add_embedding{nullptr};  // text_time only
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  UNetMidBlock2DCrossAttn mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(UNet2DConditionModel);

struct ComponentSource;
// Built from a component source (strict loading), or from a diffusers unet folder.
UNet2DConditionModel load_unet_2d_condition(const ComponentSource& source, const ComputeOptions& compute = {});
UNet2DConditionModel load_unet_2d_condition(const std::filesystem::path& dir, const ComputeOptions& compute = {});

}  // namespace streamgen
