#pragma once
// Anything a state dict can be loaded from: safetensors files (WeightSet) or tensors converted in
// memory (single-file checkpoints whose layout needs more than renaming).
#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

namespace streamgen {

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual std::vector<std::string> names() const = 0;  // sorted
  virtual bool contains(const std::string& name) const = 0;
  virtual std::vector<std::int64_t> shape(const std::string& name) const = 0;
  virtual torch::Tensor tensor(const std::string& name) const = 0;
  virtual const std::string& description() const = 0;  // for messages: where the tensors came from
};

class TensorMapSource : public TensorSource {
 public:
  TensorMapSource(std::map<std::string, torch::Tensor> tensors, std::string description)
      : tensors_(std::move(tensors)), description_(std::move(description)) {}
  std::vector<std::string> names() const override;
  bool contains(const std::string& name) const override { return tensors_.count(name) != 0; }
  std::vector<std::int64_t> shape(const std::string& name) const override { return at(name).sizes().vec(); }
  torch::Tensor tensor(const std::string& name) const override { return at(name); }
  const std::string& description() const override { return description_; }

 private:
  const torch::Tensor& at(const std::string& name) const;
  std::map<std::string, torch::Tensor> tensors_;
  std::string description_;
};

}  // namespace streamgen
