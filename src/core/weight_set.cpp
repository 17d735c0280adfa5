#include "streamgen/weight_set.h"

#include "streamgen/error.h"
#include "streamgen/json_file.h"

namespace streamgen {
namespace {

// Reads `{"weight_map": {tensor: shard_file}}` and checks it against the shards themselves.
WeightSet open_index(const std::filesystem::path& index_path, WeightSet (*from_files)(const std::vector<std::filesystem::path>&)) {
  const auto index = read_json_file(index_path);
  const auto src = index_path.string();
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw FormatError(src + ": expected an object with a \"weight_map\" of tensor name -> shard file");
  std::map<std::string, std::string> weight_map;
  std::vector<std::filesystem::path> shards;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string()) throw FormatError(src + ": weight_map['" + name + "'] must be a file name, found " + file.dump());
    const auto shard = file.get<std::string>();
    if (shard.find('/') != std::string::npos || shard == "..")
      throw FormatError(src + ": weight_map['" + name + "'] = '" + shard + "' must be a file name beside the index");
    weight_map.emplace(name, shard);
    const auto path = index_path.parent_path() / shard;
    if (std::find(shards.begin(), shards.end(), path) == shards.end()) shards.push_back(path);
  }
  if (shards.empty()) throw FormatError(src + ": weight_map is empty");
  WeightSet set = from_files(shards);
  for (const auto& [name, shard] : weight_map) {
    if (!set.contains(name)) throw FormatError(src + ": lists tensor '" + name + "' in '" + shard + "', which does not hold it");
    if (set.file_of(name).filename() != shard)
      throw FormatError(src + ": lists tensor '" + name + "' in '" + shard + "', but it is in '" +
                        set.file_of(name).filename().string() + "'");
  }
  for (const auto& name : set.names())
    if (!weight_map.count(name))
      throw FormatError(src + ": shard '" + set.file_of(name).filename().string() + "' holds tensor '" + name +
                        "', which the index does not list");
  return set;
}

}  // namespace

WeightSet WeightSet::open(const std::filesystem::path& path) {
  if (path.filename().string().ends_with(".json")) {
    WeightSet set = open_index(path, &WeightSet::from_files);
    set.description_ = path.string();
    return set;
  }
  return from_files({path});
}

WeightSet WeightSet::from_files(const std::vector<std::filesystem::path>& files) {
  WeightSet set;
  for (const auto& f : files) set.add(SafetensorsFile::open(f));
  if (files.size() == 1)
    set.description_ = files[0].string();
  else
    set.description_ = std::to_string(files.size()) + " shards in '" + files[0].parent_path().string() + "'";
  return set;
}

void WeightSet::add(SafetensorsFile file) {
  const std::size_t idx = files_.size();
  for (const auto& e : file.entries()) {
    auto [it, inserted] = where_.emplace(e.name, idx);
    if (!inserted)
      throw FormatError("tensor '" + e.name + "' is in both '" + files_[it->second].path().string() + "' and '" +
                        file.path().string() + "'");
  }
  files_.push_back(std::move(file));
}

std::vector<std::string> WeightSet::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

const SafetensorsFile& WeightSet::file_for(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(description_ + ": no tensor named '" + name + "'");
  return files_[it->second];
}

const std::filesystem::path& WeightSet::file_of(const std::string& name) const { return file_for(name).path(); }
const safetensors::TensorEntry& WeightSet::entry(const std::string& name) const { return file_for(name).entry(name); }
torch::Tensor WeightSet::tensor(const std::string& name) const { return file_for(name).tensor(name); }

}  // namespace streamgen
