#include "streamgen/state_dict.h"

#include <torch/torch.h>

#include <map>
#include <sstream>

#include "streamgen/error.h"
#include "streamgen/safetensors.h"

namespace streamgen {

std::string apply_renames(const std::string& key, const std::vector<KeyRename>& renames) {
  for (const auto& r : renames)
    if (key.compare(0, r.from.size(), r.from) == 0) return r.to + key.substr(r.from.size());
  return key;
}

std::string LoadReport::describe(const std::string& checkpoint, const std::string& module) const {
  std::ostringstream os;
  os << "cannot load '" << checkpoint << "' into " << module << ": " << missing.size() << " missing, "
     << unexpected.size() << " unexpected, " << mismatched.size() << " with the wrong shape";
  if (!missing.empty()) {
    os << "\n  missing (the module has them, the checkpoint does not):";
    for (const auto& n : missing) os << "\n    " << n;
  }
  if (!unexpected.empty()) {
    os << "\n  unexpected (the checkpoint has them, the module does not):";
    for (const auto& n : unexpected) os << "\n    " << n;
  }
  if (!mismatched.empty()) {
    os << "\n  wrong shape:";
    for (const auto& m : mismatched)
      os << "\n    " << m.name << ": checkpoint " << safetensors::shape_string(m.checkpoint) << ", module "
         << safetensors::shape_string(m.module);
  }
  return os.str();
}

namespace {

bool is_1x1_of(const std::vector<std::int64_t>& conv, const std::vector<std::int64_t>& linear) {
  return conv.size() == 4 && linear.size() == 2 && conv[0] == linear[0] && conv[1] == linear[1] && conv[2] == 1 && conv[3] == 1;
}

bool shapes_fit(const std::vector<std::int64_t>& checkpoint, const std::vector<std::int64_t>& module, const LoadOptions& o) {
  if (checkpoint == module) return true;
  return o.conv1x1_as_linear && (is_1x1_of(checkpoint, module) || is_1x1_of(module, checkpoint));
}

}  // namespace

LoadReport load_state_dict(torch::nn::Module& module, const TensorSource& weights, const LoadOptions& options) {
  // Module tensors by name: parameters and buffers share one namespace in a state dict.
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) targets.emplace(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) targets.emplace(b.key(), b.value());

  // Checkpoint key (after renames) -> key as stored.
  std::map<std::string, std::string> source_of;
  for (const auto& stored : weights.names()) {
    const auto key = apply_renames(stored, options.renames);
    auto [it, inserted] = source_of.emplace(key, stored);
    if (!inserted)
      throw StateDictError(weights.description() + ": checkpoint keys '" + it->second + "' and '" + stored +
                           "' both map to '" + key + "' after renaming");
  }

  LoadReport report;
  for (const auto& [name, target] : targets) {
    auto it = source_of.find(name);
    if (it == source_of.end()) {
      report.missing.push_back(name);
      continue;
    }
    const auto shape = weights.shape(it->second);
    if (!shapes_fit(shape, target.sizes().vec(), options)) report.mismatched.push_back({name, shape, target.sizes().vec()});
  }
  for (const auto& [key, stored] : source_of)
    if (!targets.count(key) && !(options.ignore_unexpected && options.ignore_unexpected(key)))
      report.unexpected.push_back(key);

  if (options.strict && !report.ok()) throw StateDictError(report.describe(weights.description(), module.name()));

  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    auto it = source_of.find(name);
    if (it == source_of.end() || !shapes_fit(weights.shape(it->second), target.sizes().vec(), options)) continue;
    target.copy_(weights.tensor(it->second).reshape(target.sizes()));  // converts dtype and device
    report.loaded.push_back(name);
  }
  return report;
}

void save_state_dict(const torch::nn::Module& module, const std::filesystem::path& file, torch::ScalarType dtype,
                     const std::map<std::string, std::string>& metadata) {
  NamedTensors tensors;
  for (const auto& item : module.named_parameters()) tensors.emplace_back(item.key(), item.value().detach().to(torch::kCPU, dtype).contiguous());
  for (const auto& item : module.named_buffers()) tensors.emplace_back(item.key(), item.value().detach().to(torch::kCPU).contiguous());
  save_safetensors(file, tensors, metadata);
}

}  // namespace streamgen
