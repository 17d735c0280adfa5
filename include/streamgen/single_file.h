#pragma once
// Single-file Stable Diffusion 1.x / 2.x / XL checkpoints in the original (LDM / SGM) layout, as A1111 and
// ComfyUI users keep them: model.diffusion_model.* (UNet), first_stage_model.* (VAE),
// cond_stage_model.* (CLIP ViT-L for SD1.x, OpenCLIP ViT-H for SD2.x), or for SDXL
// conditioner.embedders.0.transformer.* (CLIP ViT-L) and conditioner.embedders.1.model.* (OpenCLIP bigG with its
// text_projection). Keys are mapped to the
// diffusers layout by tables derived from the configuration; OpenCLIP's fused attention
// projections are split in memory. Configurations are inferred from tensor shapes, or taken from a
// diffusers folder (`config_from`) for what shapes cannot tell (heads, v-prediction).
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "streamgen/model_folder.h"

namespace streamgen {

struct SingleFileCheckpoint {
  std::string family;  // "sd1", "sd2" or "sdxl"
  ComponentSource unet, vae, text_encoder;
  std::optional<ComponentSource> text_encoder_2;  // SDXL's CLIPTextModelWithProjection
};

SingleFileCheckpoint open_single_file(const std::filesystem::path& file, const std::optional<std::filesystem::path>& config_from = std::nullopt);

// A ControlNet in the original layout (lllyasviel's ControlNet 1.0 / 1.1 files converted to safetensors):
// control_model.* or unprefixed input_blocks / middle_block / time_embed / input_hint_block / zero_convs /
// middle_block_out tensors. The configuration is inferred from the shapes (heads as for the UNet: 8 for
// SD1.x, 64-wide for SD2.x) or read from `config_from` (a diffusers ControlNet folder).
ComponentSource open_single_file_controlnet(const std::filesystem::path& file, const std::optional<std::filesystem::path>& config_from = std::nullopt);

// The prefix tables (LDM prefix -> diffusers prefix), exposed for tests and for converters.
// `prefix`: "control_model." or "" (files saved without it).
std::vector<KeyRename> ldm_controlnet_renames(const nlohmann::json& controlnet_config, const std::string& prefix);
std::vector<KeyRename> ldm_unet_renames(const nlohmann::json& unet_config);
std::vector<KeyRename> ldm_vae_renames(const nlohmann::json& vae_config);

}  // namespace streamgen
