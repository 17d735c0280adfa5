#pragma once
// The diffusers / transformers folder layout of one model component:
//   <dir>/config.json
//   <dir>/diffusion_pytorch_model.safetensors        (diffusers)  or  model.safetensors (transformers)
//   <dir>/diffusion_pytorch_model.fp16.safetensors   (the "fp16" variant)
//   <dir>/diffusion_pytorch_model.safetensors.index.json + shards (sharded checkpoints;
//        the variant form is diffusion_pytorch_model.safetensors.index.fp16.json)
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "streamgen/state_dict.h"
#include "streamgen/weight_set.h"

namespace streamgen {

struct ComponentFolder {
  std::filesystem::path dir;
  nlohmann::json config;
  WeightSet weights;
  std::filesystem::path weights_path;  // the file or index the weights came from
};

// A component ready to build: its config and where its tensors come from (a diffusers folder, or
// one part of a single-file checkpoint with the options its layout needs).
struct ComponentSource {
  nlohmann::json config;
  std::string config_source;  // for messages: the config.json path or "inferred from <file>"
  std::shared_ptr<const TensorSource> weights;
  LoadOptions load;
};

// variant "" prefers full-precision weights and falls back to the fp16 variant; a named variant
// ("fp16") is required to exist. Errors list every file name that was looked for.
ComponentFolder open_component(const std::filesystem::path& dir, const std::string& variant = "");

ComponentSource component_source(const std::filesystem::path& dir, const std::string& variant = "");

// Only the weights of a component folder (no config.json needed).
std::filesystem::path find_component_weights(const std::filesystem::path& dir, const std::string& variant = "");

// The _class_name of `folder`'s config.json ("" when it has none, or no config.json): how the
// CLI and the server tell a StreamDiT folder, a temporal autoencoder and a diffusers pipeline apart.
std::string folder_class_name(const std::filesystem::path& folder);

// What `folder` holds, for messages that refuse it: "a diffusers pipeline (StableDiffusionPipeline)",
// "a StreamDiT model", "a TAESD folder (AutoencoderTiny)", "an empty folder", ... Reads only JSON.
std::string describe_model_folder(const std::filesystem::path& folder);

// How many weights the model at `path` stores, read from the safetensors headers (nothing loaded):
// a pipeline folder counts its UNet (its cost dominates), anything else every tensor open_weights finds.
std::int64_t stored_parameter_count(const std::filesystem::path& path);

// A checkpoint given as a .safetensors file, a sharded *.index.json, or a component folder.
WeightSet open_weights(const std::filesystem::path& path, const std::string& variant = "");

}  // namespace streamgen
