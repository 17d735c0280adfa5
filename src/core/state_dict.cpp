#include "streamgen/state_dict.h"

#include <torch/torch.h>

#include <map>
#include <sstream>

#include "streamgen/error.h"

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

LoadReport load_state_dict(torch::nn::Module& module, const WeightSet& weights, const LoadOptions& options) {
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
    const auto& entry = weights.entry(it->second);
    if (entry.shape != target.sizes().vec()) report.mismatched.push_back({name, entry.shape, target.sizes().vec()});
  }
  for (const auto& [key, stored] : source_of)
    if (!targets.count(key) && !(options.ignore_unexpected && options.ignore_unexpected(key)))
      report.unexpected.push_back(key);

  if (options.strict && !report.ok()) throw StateDictError(report.describe(weights.description(), module.name()));

  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    auto it = source_of.find(name);
    if (it == source_of.end() || weights.entry(it->second).shape != target.sizes().vec()) continue;
    target.copy_(weights.tensor(it->second));  // converts dtype and device
    report.loaded.push_back(name);
  }
  return report;
}

}  // namespace streamgen
