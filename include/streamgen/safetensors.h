#pragma once
// Reading and writing safetensors files as LibTorch tensors.
//
// SafetensorsFile::open validates the whole header (see safetensors_format.h) before any tensor
// data is touched. With LoadMode::Mmap the file is mapped copy-on-write and tensors alias the
// mapping whenever their data is aligned for their dtype (zero-copy); the mapping lives as long as
// the file object or any tensor taken from it. Writes to such a tensor stay private to the process.
#include <torch/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "streamgen/safetensors_format.h"

namespace streamgen {

enum class LoadMode {
  Mmap,  // map the file; tensors alias the page cache
  Read,  // read the whole file into memory with read(2)
};

torch::ScalarType to_scalar_type(safetensors::DType dtype);
// Throws streamgen::Error for dtypes safetensors cannot hold (complex, quantised, ...).
safetensors::DType from_scalar_type(torch::ScalarType dtype);

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path, LoadMode mode = LoadMode::Mmap);

  const std::filesystem::path& path() const { return path_; }
  const std::vector<safetensors::TensorEntry>& entries() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  std::size_t size() const { return entries().size(); }

  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const safetensors::TensorEntry* find(std::string_view name) const;
  // Throws streamgen::Error naming the file when the tensor is absent.
  const safetensors::TensorEntry& entry(std::string_view name) const;

  // The tensor as stored (dtype and shape of the file). Zero-copy when the data is aligned.
  torch::Tensor tensor(std::string_view name) const;
  bool is_zero_copy(std::string_view name) const;
  // Every tensor, by name.
  std::map<std::string, torch::Tensor> tensors() const;

  // Raw bytes of the whole file (for benchmarks and checksums).
  const std::uint8_t* bytes() const;
  std::uint64_t file_size() const;

 private:
  struct Storage;
  SafetensorsFile() = default;
  const std::uint8_t* data_of(const safetensors::TensorEntry& e) const;

  std::filesystem::path path_;
  std::shared_ptr<Storage> storage_;
  safetensors::Header header_;
  std::unordered_map<std::string, std::size_t> index_;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes atomically: the data goes to a temporary file in the same folder, is flushed to disk
// and then renamed over `path`, so a crash leaves either the old file or the new one.
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
void save_safetensors(const std::filesystem::path& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace streamgen
