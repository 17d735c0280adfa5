#pragma once
// Loading and saving this project's own model folders (config.json + model.safetensors), for every
// model family whose holder has a `config` with from_json / to_json (StreamDiT, TemporalAutoencoder).
#include <torch/nn/module.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "streamgen/device.h"
#include "streamgen/model_folder.h"
#include "streamgen/state_dict.h"

namespace streamgen {

// Writes config.json and model.safetensors (in `dtype`) into `folder`, creating it.
void save_model_folder(torch::nn::Module& module, const nlohmann::json& config, const std::filesystem::path& folder, torch::ScalarType dtype,
                       const std::map<std::string, std::string>& metadata);

// Builds the model of the folder's config.json, loads its weights and prepares it for inference.
template <class Holder>
Holder load_model_folder(const std::filesystem::path& folder, const ComputeOptions& compute) {
  using Config = std::decay_t<decltype(std::declval<Holder>()->config)>;
  const auto component = open_component(folder);
  Holder model(Config::from_json(component.config, (folder / "config.json").string()));
  load_state_dict(*model, component.weights);
  prepare_for_inference(*model, compute.device, compute.dtype);
  return model;
}

}  // namespace streamgen
