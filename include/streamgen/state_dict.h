#pragma once
// Strict loading of checkpoints into torch::nn::Module trees by exact parameter/buffer names.
#include <torch/nn/module.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "streamgen/weight_set.h"

namespace streamgen {

// Rewrites a checkpoint key prefix before matching, e.g. {"model.diffusion_model.", ""}.
// The first rule whose `from` prefixes the key applies.
struct KeyRename {
  std::string from;
  std::string to;
};

struct LoadOptions {
  std::vector<KeyRename> renames;
  // Checkpoint keys (after renaming) that may be left unused without an error, e.g. buffers that
  // older exporters saved but the module computes itself.
  std::function<bool(std::string_view)> ignore_unexpected;
  // When false, problems are reported in the returned LoadReport instead of thrown.
  bool strict = true;
  // Accept [O, I, 1, 1] conv weights for [O, I] Linear weights and the reverse (original SD
  // checkpoints store some projections as 1x1 convs where diffusers uses Linear).
  bool conv1x1_as_linear = false;
};

struct ShapeMismatch {
  std::string name;
  std::vector<std::int64_t> checkpoint;
  std::vector<std::int64_t> module;
};

struct LoadReport {
  std::vector<std::string> loaded;
  std::vector<std::string> missing;     // in the module, not in the checkpoint
  std::vector<std::string> unexpected;  // in the checkpoint, not in the module
  std::vector<ShapeMismatch> mismatched;
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  // A multi-line listing of every problem.
  std::string describe(const std::string& checkpoint, const std::string& module) const;
};

std::string apply_renames(const std::string& key, const std::vector<KeyRename>& renames);

// Copies every tensor of `weights` into the module's parameter or buffer of the same name,
// converting to the module tensor's dtype and device. In strict mode throws StateDictError that
// lists all missing, unexpected and shape-mismatched tensors at once; nothing is copied then.
LoadReport load_state_dict(torch::nn::Module& module, const TensorSource& weights, const LoadOptions& options = {});

// The reverse: every parameter (converted to `dtype`) and buffer of the module, by its name, into
// one safetensors file, written atomically.
void save_state_dict(const torch::nn::Module& module, const std::filesystem::path& file, torch::ScalarType dtype = torch::kFloat32,
                     const std::map<std::string, std::string>& metadata = {});

}  // namespace streamgen
