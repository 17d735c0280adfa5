#pragma once
// A checkpoint as one name -> tensor table, whether it is one safetensors file or several shards
// listed by a `*.safetensors.index.json` (the layout diffusers and transformers write for large
// models). Tensors are read lazily from the memory-mapped files.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "streamgen/safetensors.h"
#include "streamgen/tensor_source.h"

namespace streamgen {

class WeightSet : public TensorSource {
 public:
  // A `.safetensors` file, or a `*.index.json` naming its shards.
  static WeightSet open(const std::filesystem::path& path);
  // Several files whose tensor names must not collide.
  static WeightSet from_files(const std::vector<std::filesystem::path>& files);

  std::vector<std::string> names() const override;  // sorted
  std::size_t size() const { return where_.size(); }
  bool contains(const std::string& name) const override { return where_.count(name) != 0; }
  std::vector<std::int64_t> shape(const std::string& name) const override { return entry(name).shape; }
  const safetensors::TensorEntry& entry(const std::string& name) const;
  torch::Tensor tensor(const std::string& name) const override;
  const std::filesystem::path& file_of(const std::string& name) const;
  // What the set was opened from, for messages.
  const std::string& description() const override { return description_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  void add(SafetensorsFile file);
  const SafetensorsFile& file_for(const std::string& name) const;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, std::size_t> where_;  // tensor name -> index in files_
  std::string description_;
};

}  // namespace streamgen
