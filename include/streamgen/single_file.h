#pragma once
// Single-file Stable Diffusion 1.x / 2.x checkpoints in the original (LDM) layout, as A1111 and
// ComfyUI users keep them: model.diffusion_model.* (UNet), first_stage_model.* (VAE),
// cond_stage_model.* (CLIP ViT-L for SD1.x, OpenCLIP ViT-H for SD2.x). Keys are mapped to the
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
  std::string family;  // "sd1" or "sd2"
  ComponentSource unet, vae, text_encoder;
};

SingleFileCheckpoint open_single_file(const std::filesystem::path& file, const std::optional<std::filesystem::path>& config_from = std::nullopt);

// The prefix tables (LDM prefix -> diffusers prefix), exposed for tests and for converters.
std::vector<KeyRename> ldm_unet_renames(const nlohmann::json& unet_config);
std::vector<KeyRename> ldm_vae_renames(const nlohmann::json& vae_config);

}  // namespace streamgen
