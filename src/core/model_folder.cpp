#include "streamgen/model_folder.h"
#include "streamgen/model_io.h"
#include "streamgen/component_run.h"

#include <vector>

#include "streamgen/error.h"
#include "streamgen/json_file.h"

namespace streamgen {
namespace {

// Weight file names in the order they are preferred, for one variant ("" = none).
std::vector<std::string> candidates(const std::string& variant) {
  std::vector<std::string> out;
  for (const std::string base : {"diffusion_pytorch_model", "model"}) {
    if (variant.empty()) {
      out.push_back(base + ".safetensors");
      out.push_back(base + ".safetensors.index.json");
    } else {
      out.push_back(base + "." + variant + ".safetensors");
      out.push_back(base + ".safetensors.index." + variant + ".json");
    }
  }
  return out;
}

}  // namespace

std::filesystem::path find_component_weights(const std::filesystem::path& dir, const std::string& variant) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw Error("model folder '" + dir.string() + "' does not exist or is not a folder");
  std::vector<std::string> tried;
  const std::vector<std::string> variants = variant.empty() ? std::vector<std::string>{"", "fp16"} : std::vector<std::string>{variant};
  for (const auto& v : variants)
    for (const auto& name : candidates(v)) {
      if (std::filesystem::is_regular_file(dir / name, ec)) return dir / name;
      tried.push_back(name);
    }
  std::string msg = "no safetensors weights in '" + dir.string() + "' (looked for";
  for (const auto& t : tried) msg += " " + t;
  msg += ")";
  for (const std::string pickle : {"diffusion_pytorch_model.bin", "pytorch_model.bin", "model.ckpt"})
    if (std::filesystem::exists(dir / pickle, ec))
      msg += "; found '" + pickle + "', a PyTorch pickle, which streamgen does not read for safety: convert it to safetensors";
  throw Error(msg);
}

ComponentFolder open_component(const std::filesystem::path& dir, const std::string& variant) {
  ComponentFolder c;
  c.dir = dir;
  c.weights_path = find_component_weights(dir, variant);
  const auto config_path = dir / "config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(config_path, ec)) throw Error("model folder '" + dir.string() + "' has no config.json");
  c.config = read_json_file(config_path);
  if (!c.config.is_object()) throw FormatError(config_path.string() + ": expected a JSON object");
  c.weights = WeightSet::open(c.weights_path);
  return c;
}

ComponentSource component_source(const std::filesystem::path& dir, const std::string& variant) {
  auto folder = open_component(dir, variant);
  ComponentSource s;
  s.config = std::move(folder.config);
  s.config_source = (dir / "config.json").string();
  s.weights = std::make_shared<WeightSet>(std::move(folder.weights));
  return s;
}

WeightSet open_weights(const std::filesystem::path& path, const std::string& variant) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return WeightSet::open(find_component_weights(path, variant));
  return WeightSet::open(path);
}

std::int64_t stored_parameter_count(const std::filesystem::path& path) {
  const auto weights = open_weights(resolve_component_dir(path, "unet"));  // a pipeline's UNet, else `path` itself
  std::int64_t count = 0;
  for (const auto& name : weights.names()) count += static_cast<std::int64_t>(weights.entry(name).numel());
  return count;
}

namespace {

// The "_class_name" a diffusers JSON file (config.json, model_index.json) names; "" without one.
std::string class_name_in(const std::filesystem::path& json_path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(json_path, ec)) return "";
  const auto j = read_json_file(json_path);
  return j.is_object() && j.contains("_class_name") && j["_class_name"].is_string() ? j["_class_name"].get<std::string>() : "";
}

}  // namespace

std::string folder_class_name(const std::filesystem::path& folder) { return class_name_in(folder / "config.json"); }

std::string describe_model_folder(const std::filesystem::path& folder) {
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec)) return std::filesystem::exists(folder, ec) ? "a file, not a folder" : "a path that does not exist";
  if (std::filesystem::is_regular_file(folder / "model_index.json", ec)) {
    const auto name = class_name_in(folder / "model_index.json");
    return "a diffusers pipeline" + (name.empty() ? std::string() : " (" + printable(name) + ")");
  }
  if (std::filesystem::is_regular_file(folder / "config.json", ec)) {
    const auto name = folder_class_name(folder);
    if (name == "StreamDiT") return "a StreamDiT model";
    if (name == "AutoencoderTiny") return "a TAESD folder (AutoencoderTiny)";
    if (name.empty()) return "a component folder whose config.json names no _class_name";
    return "a " + printable(name) + " folder";
  }
  std::size_t entries = 0;
  for (auto it = std::filesystem::directory_iterator(folder, ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) ++entries;
  if (entries == 0) return "an empty folder";
  return "a folder with neither model_index.json nor config.json (" + std::to_string(entries) + " entries)";
}

void save_model_folder(torch::nn::Module& module, const nlohmann::json& config, const std::filesystem::path& folder, torch::ScalarType dtype,
                       const std::map<std::string, std::string>& metadata) {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec) throw Error("cannot create '" + folder.string() + "': " + ec.message());
  save_state_dict(module, folder / "model.safetensors", dtype, metadata);
  write_json_file(folder / "config.json", config);
}

}  // namespace streamgen
