#pragma once
// Runs one Stable Diffusion component on named input tensors: the parity hook behind
// `streamgen tensors run`, usable from any program that wants to check our models against its own.
#include <torch/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "streamgen/device.h"
#include "streamgen/lora.h"

namespace streamgen {

enum class Component { Unet, TextEncoder, VaeEncode, VaeDecode, TaesdEncode, TaesdDecode, Tokenizer, ControlNet, TextEncoders, Txt2Img };

Component parse_component(std::string_view name);  // "unet", "text_encoder", "vae_encode", ...
std::string component_name(Component c);
// The input names a component reads (the tokenizer reads prompts instead).
std::vector<std::string> component_inputs(Component c);
// The inputs it also reads when the model is SDXL's (text_embeds, time_ids, input_ids_2); pass them when present.
std::vector<std::string> component_sdxl_inputs(Component c);

// A pipeline folder (model_index.json), or the component folder itself, -> the folder holding
// `sub` ("unet", "text_encoder", "vae", "tokenizer").
std::filesystem::path resolve_component_dir(const std::filesystem::path& model, const std::string& sub);

using TensorMap = std::map<std::string, torch::Tensor>;

struct ComponentRunOptions {
  // Single-file checkpoints: a diffusers folder whose configs to use instead of inferring them.
  std::optional<std::filesystem::path> config_from;
  // Fused into the component (unet, text_encoder) at load; the parts of a LoRA for the other component are not used.
  std::vector<LoraSpec> loras;
  // Component::ControlNet: the ControlNet folder (the UNet comes from the model) and its conditioning scale.
  std::filesystem::path controlnet;
  double conditioning_scale = 1.0;
};

// `model` is a pipeline folder, a component folder, or a single-file SD1.x/SD2.x checkpoint. text_encoders (an
// SDXL pipeline folder) reads input_ids and input_ids_2 and writes prompt_embeds and pooled_prompt_embeds. controlnet reads
// sample, timestep, encoder_hidden_states and cond_image_u8 and writes cond_embedding, down_block_res_samples.N,
// mid_block_res_sample (scaled) and unet_out (the UNet with them). unet on an SDXL UNet also reads text_embeds and
// time_ids. txt2img (a pipeline folder) reads x_T, input_ids (+ input_ids_2 and time_ids for SDXL) and timestep (one
// per step, checked against the schedule) and writes out_latents and decoded (the VAE's). Outputs are float32 on the CPU whatever
// dtype/device computed them.
TensorMap run_component(Component c, const std::filesystem::path& model, const TensorMap& inputs, const ComputeOptions& compute,
                        const ComponentRunOptions& options = {});
// Throws streamgen::Error when `loras` are given for a component they cannot adapt (only unet and text_encoder).
void check_component_loras(Component c, const std::vector<LoraSpec>& loras);
TensorMap run_tokenizer(const std::filesystem::path& model, const std::vector<std::string>& prompts);

}  // namespace streamgen
