#pragma once
// ControlNetModel as in diffusers (controlnet.py): a copy of the UNet's encoder (conv_in, time embedding,
// down blocks, mid block) that also reads a control image through a small conditioning embedding, and
// returns, through 1x1 "zero convs", one residual per skip connection of the UNet and one for its mid
// block. Module names equal the checkpoint keys.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>

#include <filesystem>

#include "streamgen/controlnet_config.h"
#include "streamgen/device.h"
#include "streamgen/unet_2d_condition.h"

namespace streamgen {

// controlnet_cond_embedding: conv_in + SiLU; per step between widths a 3x3 conv + SiLU and a stride-2 3x3 conv
// + SiLU; conv_out (no activation) to the UNet's first width. Downsamples by 8 for the usual four widths,
// whatever the VAE: the control image must be 8x the latent size.
struct ControlNetConditioningEmbeddingImpl : torch::nn::Module {
  ControlNetConditioningEmbeddingImpl(std::int64_t conditioning_channels, const std::vector<std::int64_t>& widths, std::int64_t out_channels);
  torch::Tensor forward(const torch::Tensor& cond);  // [N, C, 8h, 8w] -> [N, out, h, w]
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList blocks{nullptr};
};
TORCH_MODULE(ControlNetConditioningEmbedding);

struct ControlNetOutput {
  UNetResiduals residuals;     // already multiplied by the conditioning scale
  torch::Tensor cond_embedding;  // the conditioning embedding's output (for parity checks)
};

struct ControlNetModelImpl : torch::nn::Module {
  explicit ControlNetModelImpl(const ControlNetConfig& c);
  // sample [N, Cin, h, w], timestep [N] | [1] | [], encoder_hidden_states [N, L, D], control [b, C, 8h, 8w]
  // with b dividing N, tiled over the rows (float, [0, 1]: the control image / 255, not [-1, 1])
  // -> residuals x conditioning_scale
  ControlNetOutput forward(const torch::Tensor& sample, const torch::Tensor& timestep, const UNetConditioning& cond, const torch::Tensor& control,
                           double conditioning_scale = 1.0);
  // The SD1.x / SD2.x form: text tokens only.
  ControlNetOutput forward(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& encoder_hidden_states,
                           const torch::Tensor& control, double conditioning_scale = 1.0);
  ControlNetConfig config;
  torch::nn::Conv2d conv_in{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  TimestepEmbedding add_embedding{nullptr};  // SDXL ControlNets (text_time) only
  ControlNetConditioningEmbedding controlnet_cond_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr}, controlnet_down_blocks{nullptr};
  UNetMidBlock2DCrossAttn mid_block{nullptr};
  torch::nn::Conv2d controlnet_mid_block{nullptr};
};
TORCH_MODULE(ControlNetModel);

struct ComponentSource;
ControlNetModel load_controlnet(const ComponentSource& source, const ComputeOptions& compute = {});
// A diffusers ControlNetModel folder (config.json + diffusion_pytorch_model.safetensors), or a single file in
// the original layout (open_single_file_controlnet).
ControlNetModel load_controlnet(const std::filesystem::path& dir, const ComputeOptions& compute = {});

// An RGB uint8 control image [N, 3, H, W] as ControlNet pipelines feed it: float in [0, 1].
torch::Tensor control_image_to_unit(const torch::Tensor& image_u8);

}  // namespace streamgen
