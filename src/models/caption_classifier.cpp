#include "streamgen/caption_classifier.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "streamgen/config_json.h"
#include "streamgen/error.h"
#include "streamgen/model_folder.h"
#include "streamgen/model_io.h"
#include "streamgen/procedural_video.h"

namespace streamgen {

namespace {

// Time is halved by a block only while at least 2 frames would remain; the first block keeps every
// frame so that the motion between neighbouring frames is still there to see.
std::vector<std::int64_t> temporal_strides(const CaptionClassifierConfig& c) {
  std::vector<std::int64_t> strides;
  auto t = c.frames;
  for (std::size_t i = 0; i < c.block_out_channels.size(); ++i) {
    const std::int64_t s = i > 0 && t >= 4 ? 2 : 1;
    strides.push_back(s);
    t /= s;
  }
  return strides;
}

}  // namespace

void CaptionClassifierConfig::validate(const std::string& source) const {
  if (frames < 2) throw Error(fmt::format("{}: frames is {}; a window needs at least 2 frames to show motion", source, frames));
  if (block_out_channels.empty()) throw Error(source + ": block_out_channels must list at least one block");
  for (auto c : block_out_channels)
    if (c < 1) throw Error(fmt::format("{}: block_out_channels {} has a block with {} channels", source, block_out_channels, c));
  const std::int64_t factor = std::int64_t{1} << block_out_channels.size();
  if (width < factor || height < factor || width % factor != 0 || height % factor != 0)
    throw Error(fmt::format("{}: frames of {}x{} do not halve {} times (one per block); width and height must be multiples of {}", source,
                            width, height, block_out_channels.size(), factor));
  if (colours < 1 || shapes < 1 || directions < 1)
    throw Error(fmt::format("{}: colours, shapes and directions must be >= 1 (got {}, {}, {})", source, colours, shapes, directions));
  parse_edge_rule(edges);
}

CaptionClassifierConfig CaptionClassifierConfig::from_json(const nlohmann::json& j, const std::string& source) {
  CaptionClassifierConfig c;
  const auto cls = config_value<std::string>(j, "_class_name", "CaptionClassifier", source);
  if (cls != "CaptionClassifier") throw Error(source + ": _class_name is '" + cls + "', expected CaptionClassifier");
  c.frames = config_value(j, "frames", c.frames, source);
  c.width = config_value(j, "width", c.width, source);
  c.height = config_value(j, "height", c.height, source);
  c.block_out_channels = config_value(j, "block_out_channels", c.block_out_channels, source);
  c.colours = config_value(j, "colours", c.colours, source);
  c.shapes = config_value(j, "shapes", c.shapes, source);
  c.directions = config_value(j, "directions", c.directions, source);
  c.edges = config_value(j, "edges", c.edges, source);
  c.validate(source);
  return c;
}

nlohmann::json CaptionClassifierConfig::to_json() const {
  return {{"_class_name", "CaptionClassifier"},
          {"frames", frames},
          {"width", width},
          {"height", height},
          {"block_out_channels", block_out_channels},
          {"colours", colours},
          {"shapes", shapes},
          {"directions", directions},
          {"edges", edges}};
}

CaptionClassifierImpl::CaptionClassifierImpl(CaptionClassifierConfig c) : config(std::move(c)) {
  config.validate();
  blocks = register_module("blocks", torch::nn::ModuleList());
  const auto strides = temporal_strides(config);
  std::int64_t in = 3;
  for (std::size_t i = 0; i < config.block_out_channels.size(); ++i) {
    const auto out = config.block_out_channels[i];
    // A strided convolution, then one at the new resolution: two looks per scale, which the
    // shapes (a fill of 0.5 vs 0.79 vs 1 of the box at 8–14 px radius) need.
    blocks->push_back(torch::nn::Sequential(torch::nn::Conv3d(torch::nn::Conv3dOptions(in, out, 3).stride({strides[i], 2, 2}).padding(1)),
                                            torch::nn::SiLU(), torch::nn::Conv3d(torch::nn::Conv3dOptions(out, out, 3).padding(1)),
                                            torch::nn::SiLU()));
    in = out;
  }
  proj = register_module("proj", torch::nn::Linear(2 * in, in));
  head = register_module("head", torch::nn::Linear(in, config.colours * config.logits_per_colour()));
}

torch::Tensor CaptionClassifierImpl::features(const torch::Tensor& clips) {
  // clips [N, F, 3, H, W] -> [N, 3, F, H, W] (Conv3d's layout) -> blocks -> mean over (F, H, W)
  const auto& c = config;
  if (clips.dim() != 5 || clips.size(1) != c.frames || clips.size(2) != 3 || clips.size(3) != c.height || clips.size(4) != c.width)
    throw Error(fmt::format("caption classifier: clips must be [N, {}, 3, {}, {}] (windows of {} RGB frames of {}x{}), got [{}]", c.frames,
                            c.height, c.width, c.frames, c.width, c.height, fmt::join(clips.sizes(), ", ")));
  auto x = clips.to(proj->weight.scalar_type()).permute({0, 2, 1, 3, 4});
  for (const auto& block : *blocks) x = block->as<torch::nn::Sequential>()->forward(x);
  // Mean and max over (F, H, W): the max keeps a small object's evidence that the mean dilutes.
  const auto pooled = torch::cat({x.mean({2, 3, 4}), x.amax({2, 3, 4})}, 1);
  return torch::silu(proj(pooled));
}

torch::Tensor CaptionClassifierImpl::head_of(const torch::Tensor& f) {
  return head(f).view({f.size(0), config.colours, config.logits_per_colour()});
}

torch::Tensor CaptionClassifierImpl::forward(const torch::Tensor& clips) { return head_of(features(clips)); }

bool is_caption_classifier_folder(const std::filesystem::path& folder) { return folder_class_name(folder) == "CaptionClassifier"; }

CaptionClassifier load_caption_classifier(const std::filesystem::path& folder, const ComputeOptions& compute) {
  return load_model_folder<CaptionClassifier>(folder, compute);
}

void save_caption_classifier(CaptionClassifier& model, const std::filesystem::path& folder, torch::ScalarType dtype,
                             const std::map<std::string, std::string>& metadata) {
  save_model_folder(*model, model->config.to_json(), folder, dtype, metadata);
}

}  // namespace streamgen
