#include "streamgen/caption_classifier_trainer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>

#include "streamgen/device.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"

namespace streamgen {

namespace {

namespace F = torch::nn::functional;

CaptionClassifier as_classifier(const ModulePtr& m) { return CaptionClassifier(std::dynamic_pointer_cast<CaptionClassifierImpl>(m)); }

// frames [F, 3, H, W] blurred by a Gaussian of σ pixels (separable, edges replicated).
torch::Tensor gaussian_blur(const torch::Tensor& frames, double sigma) {
  if (sigma < 0.05) return frames;
  const auto radius = static_cast<std::int64_t>(std::ceil(3 * sigma));
  const auto x = torch::arange(-radius, radius + 1, torch::kFloat32);
  auto kernel = torch::exp(-x.pow(2) / (2 * sigma * sigma));
  kernel = kernel / kernel.sum();
  const auto f = frames.size(0), h = frames.size(2), w = frames.size(3);
  auto planes = frames.reshape({f * 3, 1, h, w});
  planes = F::pad(planes, F::PadFuncOptions({radius, radius, radius, radius}).mode(torch::kReplicate));
  planes = F::conv2d(planes, kernel.view({1, 1, 1, -1}));
  planes = F::conv2d(planes, kernel.view({1, 1, -1, 1}));
  return planes.view({f, 3, h, w});
}

// One real clip of the world with its targets, augmented; engines of (seed, step, micro, index).
std::pair<torch::Tensor, torch::Tensor> training_example(const CaptionClassifierConfig& config, const ProceduralVideoOptions& world,
                                                         const CaptionClassifierTrainOptions& o, std::uint64_t step, std::uint64_t micro,
                                                         std::int64_t index) {
  auto [rng, gen] = example_engines(o.seed, step, micro, index);
  const auto clip = make_procedural_clip(world, config.frames, rng);
  auto video = clip.frames;
  const double size_scale = static_cast<double>(std::min(config.width, config.height)) / 64.0;
  video = gaussian_blur(video, uniform01(rng) * o.blur * size_scale);
  if (o.noise > 0) video = video + torch::randn(video.sizes(), gen) * (uniform01(rng) * o.noise);
  return {video.clamp(-1, 1), caption_classifier_targets(clip.states, config)};
}

}  // namespace

ProceduralVideoOptions caption_classifier_world(const CaptionClassifierConfig& config) {
  return ProceduralVideoOptions::for_frame_size(config.width, config.height, parse_edge_rule(config.edges));
}

torch::Tensor caption_classifier_targets(const std::vector<std::vector<MovingObject>>& states, const CaptionClassifierConfig& c) {
  auto t = torch::zeros({c.colours, c.logits_per_colour()});
  auto a = t.accessor<float, 2>();
  for (const auto& frame : states)
    for (const auto& o : frame) {
      if (o.colour < 0 || o.colour >= c.colours) throw Error(fmt::format("caption classifier targets: colour {} outside the config's {}", o.colour, c.colours));
      a[o.colour][0] = 1;
      a[o.colour][1 + static_cast<int>(o.shape)] = 1;
      a[o.colour][1 + c.shapes + o.direction()] = 1;
    }
  return t;
}

torch::Tensor caption_classifier_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  // logits, targets [N, colours, 1 + S + D]
  const auto presence = F::binary_cross_entropy_with_logits(logits.select(2, 0), targets.select(2, 0));
  const auto rest = logits.size(2) - 1;
  const auto present = targets.select(2, 0).unsqueeze(2);  // [N, colours, 1]
  const auto per_label = F::binary_cross_entropy_with_logits(logits.narrow(2, 1, rest), targets.narrow(2, 1, rest),
                                                             F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone));
  const auto attributes = (per_label * present).sum() / (present.sum() * static_cast<double>(rest)).clamp_min(1);
  return presence + attributes;
}

CaptionScore score_caption_probabilities(const torch::Tensor& probabilities, const std::string& caption) {
  const auto wanted = parse_shape_caption(caption);
  CaptionScore score;
  if (wanted.empty()) return score;
  const auto p = probabilities.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const auto shapes = static_cast<std::int64_t>(ProceduralPalette::shape_names().size());
  if (p.dim() != 2 || p.size(1) != 1 + shapes + static_cast<std::int64_t>(ProceduralPalette::direction_names().size()))
    throw Error(fmt::format("caption scoring: probabilities must be [colours, 1 + shapes + directions], got [{}]", fmt::join(p.sizes(), ", ")));
  const auto colours = p.size(0);
  const auto a = p.accessor<float, 2>();
  double colour_ok = 0, shape_ok = 0, direction_ok = 0, shapes_asked = 0, directions_asked = 0;
  for (const auto& want : wanted) {
    const bool present = want.colour >= 0 && want.colour < colours && a[want.colour][0] >= 0.5f;
    colour_ok += present;
    if (want.shape >= 0) ++shapes_asked, shape_ok += present && a[want.colour][1 + want.shape] >= 0.5f;
    if (want.direction >= 0) ++directions_asked, direction_ok += present && a[want.colour][1 + shapes + want.direction] >= 0.5f;
  }
  score.colour = colour_ok / static_cast<double>(wanted.size());
  score.shape = shapes_asked > 0 ? shape_ok / shapes_asked : 1.0;
  score.direction = directions_asked > 0 ? direction_ok / directions_asked : 1.0;
  return score;
}

TrainSummary train_caption_classifier(const CaptionClassifierConfig& requested, const CaptionClassifierTrainOptions& o,
                                      const std::function<void(const TrainStepInfo&)>& on_step) {
  CaptionClassifierConfig config = requested;
  if (o.resume && has_training_run(o.out)) {
    const auto file = o.out / "config.json";
    config = CaptionClassifierConfig::from_json(read_json_file(file), file.string());
  }
  config.validate("caption classifier");
  const auto world = caption_classifier_world(config);
  OptimisationHooks run;
  run.create = [&config]() -> ModulePtr { return CaptionClassifier(config).ptr(); };
  run.loss = [&](const ModulePtr& m, std::uint64_t step, std::uint64_t micro, std::int64_t first, std::int64_t count) {
    auto classifier = as_classifier(m);
    std::vector<torch::Tensor> clips, targets;
    for (std::int64_t e = first; e < first + count; ++e) {
      auto [video, target] = training_example(config, world, o, step, micro, e);
      clips.push_back(video);
      targets.push_back(target);
    }
    const ScopedCpuAutocast autocast(o.bf16_autocast);
    return caption_classifier_loss(classifier(torch::stack(clips)).to(torch::kFloat32), torch::stack(targets));
  };
  run.save = [](const ModulePtr& ema, const std::filesystem::path& folder, std::int64_t step) {
    auto classifier = as_classifier(ema);
    save_caption_classifier(classifier, folder, torch::kFloat32, {{"step", std::to_string(step)}, {"weights", "ema"}});
  };
  run.metadata = {{"blur", o.blur}, {"noise", o.noise}, {"edges", config.edges}};
  run.label = "classifier train";
  return run_optimisation(o, run, on_step);
}

torch::Tensor classify_windows(CaptionClassifier& classifier, const torch::Tensor& frames, torch::Tensor* features) {
  const auto& c = classifier->config;
  if (frames.dim() != 4 || frames.size(1) != 3 || frames.size(2) != c.height || frames.size(3) != c.width)
    throw Error(fmt::format("caption classifier: frames must be [F, 3, {}, {}] (the size it was trained on), got [{}]", c.height, c.width,
                            fmt::join(frames.sizes(), ", ")));
  const auto windows = frames.size(0) / c.frames;
  if (windows < 1)
    throw Error(fmt::format("caption classifier: {} frames are fewer than one window of {}", frames.size(0), c.frames));
  torch::NoGradGuard no_grad;
  const auto device = classifier->proj->weight.device();
  std::vector<torch::Tensor> probabilities, pooled;
  constexpr std::int64_t kWindowsPerPass = 32;  // bounds the activations of a 10,000-frame stream
  for (std::int64_t w = 0; w < windows; w += kWindowsPerPass) {
    const auto n = std::min(kWindowsPerPass, windows - w);
    const auto clips = frames.narrow(0, w * c.frames, n * c.frames).reshape({n, c.frames, 3, c.height, c.width}).to(device);
    const auto f = classifier->features(clips);
    probabilities.push_back(torch::sigmoid(classifier->head_of(f).to(torch::kFloat32)).cpu());
    if (features) pooled.push_back(f.to(torch::kFloat32).cpu());
  }
  if (features) *features = torch::cat(pooled);
  return torch::cat(probabilities);
}

CaptionClassifierReport evaluate_caption_classifier(CaptionClassifier& classifier, const ProceduralVideoOptions& world, std::int64_t clips,
                                                    std::uint64_t seed) {
  if (clips < 1) throw Error("caption classifier eval: --clips must be >= 1");
  const auto& c = classifier->config;
  const ScopedBlasThreads blas_threads(1);
  CaptionClassifierReport r;
  r.clips = clips;
  double presence = 0, shape = 0, direction = 0, present = 0;
  for (std::int64_t i = 0; i < clips; ++i) {
    std::mt19937_64 rng(step_seed(seed, static_cast<std::uint64_t>(i), 91));
    const auto clip = make_procedural_clip(world, c.frames, rng);
    const auto p = classify_windows(classifier, clip.frames)[0];
    const auto t = caption_classifier_targets(clip.states, c);
    const auto s = score_caption_probabilities(p, clip.caption);
    r.score.colour += s.colour / static_cast<double>(clips);
    r.score.shape += s.shape / static_cast<double>(clips);
    r.score.direction += s.direction / static_cast<double>(clips);
    const auto right = (p >= 0.5).to(torch::kFloat32).eq(t).to(torch::kFloat64);  // [colours, labels]
    const auto is_present = t.select(1, 0).to(torch::kFloat64);
    presence += right.select(1, 0).mean().item<double>() / static_cast<double>(clips);
    shape += (right.narrow(1, 1, c.shapes).mean(1) * is_present).sum().item<double>();
    direction += (right.narrow(1, 1 + c.shapes, c.directions).mean(1) * is_present).sum().item<double>();
    present += is_present.sum().item<double>();
  }
  r.presence_accuracy = presence;
  r.shape_label_accuracy = present > 0 ? shape / present : 0;
  r.direction_label_accuracy = present > 0 ? direction / present : 0;
  return r;
}

}  // namespace streamgen
