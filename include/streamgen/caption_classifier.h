#pragma once
// A small 3D-CNN that reads a window of procedural video and names, for each palette colour,
// whether an object of that colour is there, which shapes of that colour and which directions of
// motion (the project's caption-accuracy scorer: "a small classifier trained on real procedural clips";
// docs/streamdit.md §15 metric 4 takes its features for KID). Trained by
// caption_classifier_trainer.h on real clips only; it never sees generated video.
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "streamgen/device.h"

namespace streamgen {

struct CaptionClassifierConfig {
  std::int64_t frames = 16;  // the window it reads
  std::int64_t width = 64, height = 64;
  // One block per entry (a strided 3×3×3 Conv3d, then one of stride 1, SiLU after each); each
  // halves the frame size, the later ones also time.
  std::vector<std::int64_t> block_out_channels{32, 64, 96, 128};
  std::int64_t colours = 6, shapes = 3, directions = 4;
  std::string edges = "wrap";  // the procedural world it was trained on (bounce | wrap)

  // Logits per colour: presence, then one per shape, then one per direction.
  std::int64_t logits_per_colour() const { return 1 + shapes + directions; }
  std::int64_t feature_size() const { return block_out_channels.back(); }
  void validate(const std::string& source = "caption classifier config") const;
  static CaptionClassifierConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  nlohmann::json to_json() const;
};

struct CaptionClassifierImpl : torch::nn::Module {
  explicit CaptionClassifierImpl(CaptionClassifierConfig config);
  // clips [N, F, 3, H, W] in [-1, 1] -> features [N, feature_size] (the pooled last block after one
  // linear layer: the KID features)
  torch::Tensor features(const torch::Tensor& clips);
  // clips [N, F, 3, H, W] -> logits [N, colours, logits_per_colour]. Shapes are checked with errors
  // that name what was expected.
  torch::Tensor forward(const torch::Tensor& clips);
  // features [N, feature_size] -> logits [N, colours, logits_per_colour]
  torch::Tensor head_of(const torch::Tensor& features);

  CaptionClassifierConfig config;
  torch::nn::ModuleList blocks{nullptr};  // Sequential(Conv3d, SiLU, Conv3d, SiLU)
  torch::nn::Linear proj{nullptr}, head{nullptr};
};
TORCH_MODULE(CaptionClassifier);

bool is_caption_classifier_folder(const std::filesystem::path& folder);
CaptionClassifier load_caption_classifier(const std::filesystem::path& folder, const ComputeOptions& compute = {});
void save_caption_classifier(CaptionClassifier& model, const std::filesystem::path& folder, torch::ScalarType dtype = torch::kFloat32,
                             const std::map<std::string, std::string>& metadata = {});

}  // namespace streamgen
