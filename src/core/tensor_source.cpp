#include "streamgen/tensor_source.h"

#include "streamgen/error.h"

namespace streamgen {

std::vector<std::string> TensorMapSource::names() const {
  std::vector<std::string> out;
  for (const auto& [k, _] : tensors_) out.push_back(k);
  return out;
}

const torch::Tensor& TensorMapSource::at(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(description_ + ": no tensor named '" + name + "'");
  return it->second;
}

}  // namespace streamgen
