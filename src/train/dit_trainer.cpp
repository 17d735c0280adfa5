#include "streamgen/dit_trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "streamgen/device.h"
#include "streamgen/distributed.h"
#include "streamgen/dit_metrics.h"
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/media.h"
#include "streamgen/json_file.h"
#include "streamgen/progress.h"
#include "streamgen/state_dict.h"
#include "streamgen/weight_set.h"

namespace streamgen {



ClipAnchors draw_clip_anchors(const ClipBatch& clips, double dropout, std::mt19937_64& rng, const std::string& what) {
  const auto b = static_cast<std::int64_t>(clips.captions.size());
  if (clips.anchor.dim() != 5 || clips.anchor.size(0) != b || clips.anchor.size(1) != 1)
    throw Error(fmt::format("{}: anchors must be [{}, 1, C, H, W] (one frame in the model's space), got [{}]", what, b,
                            fmt::join(clips.anchor.sizes(), ", ")));
  ClipAnchors out{clips.anchor.select(1, 0).to(torch::kCPU, torch::kFloat32).clone(), torch::ones({b}, torch::kFloat32)};
  for (std::int64_t i = 0; i < b; ++i)
    if (uniform01(rng) < dropout) out.keep[i] = 0.0f;
  return out;
}

FlowMatchingBatch make_flow_matching_batch(const ClipBatch& clips, const CaptionTokenizer& tokenizer, const FlowMatchingRecipe& recipe,
                                           std::mt19937_64& rng, at::Generator& noise) {
  const auto& x1 = clips.video;
  if (x1.dim() != 5) throw Error(fmt::format("flow matching batch: video must be [batch, F, C, H, W], got [{}]", fmt::join(x1.sizes(), ", ")));
  const auto b = x1.size(0), frames = x1.size(1);
  if (static_cast<std::int64_t>(clips.captions.size()) != b)
    throw Error(fmt::format("flow matching batch: {} captions for {} clips", clips.captions.size(), b));
  const auto denoised = frames - recipe.reference_frames;
  recipe.mix.validate(denoised);

  FlowMatchingBatch out;
  auto tau = torch::empty({b, frames}, torch::kFloat32);
  auto mask = torch::ones({b, frames}, torch::kFloat32);
  if (recipe.reference_frames > 0) mask.narrow(1, 0, recipe.reference_frames).zero_();
  std::vector<std::string> captions;
  for (std::int64_t i = 0; i < b; ++i) {
    const auto c = recipe.mix.pick(uniform01(rng), denoised);
    const auto partition = BufferPartition::for_chunk_size(frames, c, recipe.reference_frames);
    std::vector<double> draws(static_cast<std::size_t>(partition.chunks));
    for (auto& d : draws) d = uniform01(rng);
    const auto levels = training_levels(partition, draws, recipe.time_shift);
    for (std::int64_t f = 0; f < frames; ++f) tau[i][f] = levels[static_cast<std::size_t>(f)];
    out.chunk_sizes.push_back(c);
    captions.push_back(uniform01(rng) < recipe.text_dropout ? std::string{} : clips.captions[static_cast<std::size_t>(i)]);
  }
  if (clips.anchor.defined()) {
    // Drawn after every other per-example choice, so that clips without an anchor keep their old draws.
    const auto anchors = draw_clip_anchors(clips, recipe.anchor_dropout, rng, "flow matching batch");
    out.anchor = anchors.anchor.to(x1.device());
    out.anchor_keep = anchors.keep.to(x1.device());
  }
  const auto x0 = at::randn(x1.sizes(), noise, x1.options());
  out.noisy = flow_interpolate(x1, x0, tau.to(x1.device()), recipe.sigma_min);
  out.target = flow_velocity(x1, x0, recipe.sigma_min);
  out.tau = tau.to(x1.device());
  out.loss_mask = mask.to(x1.device());
  if (recipe.foreground_weight > 0) out.loss_weight = foreground_loss_weight(x1, recipe.foreground_weight);
  out.tokens = tokenizer.encode_batch(captions);
  return out;
}

FlowMatchingBatch concat_batches(const std::vector<FlowMatchingBatch>& parts) {
  FlowMatchingBatch out;
  std::vector<torch::Tensor> noisy, tau, target, mask, tokens, anchor, keep, weight;
  for (const auto& p : parts) {
    if (p.anchor.defined() != parts.front().anchor.defined()) throw Error("flow matching batch: some examples have an anchor and some not");
    if (p.loss_weight.defined() != parts.front().loss_weight.defined())
      throw Error("flow matching batch: some examples have loss weights and some not");
    if (p.loss_weight.defined()) weight.push_back(p.loss_weight);
    if (p.anchor.defined()) {
      anchor.push_back(p.anchor);
      keep.push_back(p.anchor_keep);
    }
    noisy.push_back(p.noisy);
    tau.push_back(p.tau);
    target.push_back(p.target);
    mask.push_back(p.loss_mask);
    tokens.push_back(p.tokens);
    out.chunk_sizes.insert(out.chunk_sizes.end(), p.chunk_sizes.begin(), p.chunk_sizes.end());
  }
  out.noisy = torch::cat(noisy);
  out.tau = torch::cat(tau);
  out.target = torch::cat(target);
  out.loss_mask = torch::cat(mask);
  out.tokens = torch::cat(tokens);
  if (!anchor.empty()) {
    out.anchor = torch::cat(anchor);
    out.anchor_keep = torch::cat(keep);
  }
  if (!weight.empty()) out.loss_weight = torch::cat(weight);
  return out;
}


FlowMatchingBatch seeded_flow_matching_batch(ClipSource& data, const CaptionTokenizer& tokenizer, const FlowMatchingRecipe& recipe,
                                             std::uint64_t seed, std::uint64_t step, std::uint64_t micro, std::int64_t first,
                                             std::int64_t count) {
  std::vector<FlowMatchingBatch> parts;
  for (std::int64_t e = first; e < first + count; ++e) {
    auto [rng, noise] = example_engines(seed, step, micro, e);
    parts.push_back(make_flow_matching_batch(data.next(1, rng), tokenizer, recipe, rng, noise));
  }
  return concat_batches(parts);
}

torch::Tensor foreground_loss_weight(const torch::Tensor& x1, double lambda) {
  if (x1.dim() != 5) throw Error(fmt::format("foreground loss weight: clips must be [batch, F, C, H, W], got [{}]", fmt::join(x1.sizes(), ", ")));
  if (!(lambda >= 0)) throw Error(fmt::format("foreground loss weight: λ must be >= 0, got {}", lambda));
  torch::NoGradGuard no_grad;
  const auto x = x1.to(torch::kFloat32);
  const auto b = x.size(0), c = x.size(2);
  const auto background = std::get<0>(x.transpose(1, 2).reshape({b, c, -1}).median(-1));  // [b, C]
  const auto d = (x - background.view({b, 1, c, 1, 1})).pow(2).sum(2, /*keepdim=*/true).sqrt();  // [b, F, 1, H, W]
  // A flat frame (d ≈ 0 everywhere) gets uniform weights rather than a division by ~0.
  const auto mean_d = d.mean({3, 4}, /*keepdim=*/true).clamp_min(1e-6);
  const auto w = 1.0 + lambda * d / mean_d;
  return w / w.mean({3, 4}, /*keepdim=*/true);
}

torch::Tensor masked_flow_loss(const torch::Tensor& prediction, const torch::Tensor& target, const torch::Tensor& mask,
                               const torch::Tensor& weight) {
  auto squared = (prediction.to(torch::kFloat32) - target.to(torch::kFloat32)).pow(2);
  if (weight.defined()) squared = squared * weight.to(squared.device(), torch::kFloat32);
  const auto per_frame = squared.flatten(2).mean(2);  // [b, F]
  return (per_frame * mask).sum() / mask.sum().clamp_min(1.0);
}


TrainSummary run_dit_optimisation(const StreamDiTConfig& requested, const OptimisationOptions& o, const DiTRunHooks& hooks,
                                  const std::function<void(const TrainStepInfo&)>& on_step) {
  if (!hooks.loss) throw Error("training: no loss to optimise");
  StreamDiTConfig config = requested;
  if (o.resume && has_training_run(o.out)) {
    const auto file = o.out / "config.json";
    config = StreamDiTConfig::from_json(read_json_file(file), file.string());
  }
  auto as_dit = [](const ModulePtr& m) { return StreamDiT(std::static_pointer_cast<StreamDiTImpl>(m)); };
  OptimisationHooks run;
  run.create = [&config]() -> ModulePtr { return StreamDiT(config).ptr(); };
  if (hooks.initialise)
    run.initialise = [&](const ModulePtr& m) {
      auto dit = as_dit(m);
      hooks.initialise(dit);
    };
  run.loss = [&](const ModulePtr& m, std::uint64_t step, std::uint64_t micro, std::int64_t first, std::int64_t count) {
    auto dit = as_dit(m);
    return hooks.loss(dit, step, micro, first, count);
  };
  run.save = [&](const ModulePtr& ema, const std::filesystem::path& folder, std::int64_t step) {
    auto dit = as_dit(ema);
    save_stream_dit(dit, folder, torch::kFloat32, {{"step", std::to_string(step)}, {"weights", "ema"}});
  };
  run.metadata = hooks.metadata;
  run.label = hooks.label;
  return run_optimisation(o, run, on_step);
}

TrainSummary train_stream_dit(const StreamDiTConfig& config, ClipSource& data, const DiTTrainOptions& o,
                                 const std::function<void(const TrainStepInfo&)>& on_step) {
  DiTRunHooks hooks;
  if (!o.init_from.empty())
    hooks.initialise = [&](StreamDiT& model) {
      const auto start = load_stream_dit(o.init_from);
      // A fine-tune may move the model to another procedural world, or add the anchor.
      auto same_model = start->config;
      same_model.procedural_edges = config.procedural_edges;
      const bool adds_anchor = config.anchor && !same_model.anchor;
      same_model.anchor = config.anchor;
      if (same_model.to_json() != config.to_json())
        throw Error(fmt::format("dit train: '{}' is a model of another config than the run's", o.init_from.string()));
      copy_parameters(*start, *model, [adds_anchor](const std::string& name) {
        return adds_anchor && (name.find("anchor_") != std::string::npos || name.find("norm_anchor") != std::string::npos);
      });
      spdlog::info("starting from the weights of '{}'", o.init_from.string());
    };
  hooks.loss = [&](StreamDiT& model, std::uint64_t step, std::uint64_t micro, std::int64_t first, std::int64_t count) {
    auto recipe = o.recipe;
    recipe.time_shift = model->config.time_shift;
    const auto fm = seeded_flow_matching_batch(data, model->tokenizer, recipe, o.seed, step, micro, first, count);
    torch::Tensor prediction;
    {
      const ScopedCpuAutocast autocast(o.bf16_autocast);
      prediction = model->forward(fm.noisy, fm.tau, model->encode_text(fm.tokens), fm.anchor, fm.anchor_keep);
    }
    return masked_flow_loss(prediction.to(torch::kFloat32), fm.target, fm.loss_mask, fm.loss_weight);
  };
  hooks.metadata = {{"chunk_sizes", o.recipe.mix.chunk_sizes},
                    {"full_share", o.recipe.mix.full_share},
                    {"reference_frames", o.recipe.reference_frames},
                    {"text_dropout", o.recipe.text_dropout},
                    {"foreground_weight", o.recipe.foreground_weight},
                    {"anchor_dropout", config.anchor ? nlohmann::json(o.recipe.anchor_dropout) : nlohmann::json()},
                    {"data", data.describe()}};
  return run_dit_optimisation(config, o, hooks, on_step);
}

}  // namespace streamgen

namespace streamgen {

FlowLossReport evaluate_flow_loss(StreamDiT& model, ClipSource& data, const FlowMatchingRecipe& recipe, std::int64_t batches,
                                  std::int64_t batch_size, std::uint64_t seed, std::int64_t tau_buckets) {
  torch::NoGradGuard no_grad;
  const ScopedBlasThreads blas_threads(1);
  model->eval();
  FlowLossReport report;
  std::vector<double> bucket_sum(static_cast<std::size_t>(tau_buckets), 0.0);
  report.frames_per_bucket.assign(static_cast<std::size_t>(tau_buckets), 0);
  std::map<std::int64_t, std::pair<double, std::int64_t>> by_c;
  double total = 0;
  std::int64_t frames_counted = 0;
  const auto& w = model->pos_embed_t;
  auto recipe_no_dropout = recipe;  // held-out captions are never dropped
  recipe_no_dropout.text_dropout = 0;
  recipe_no_dropout.time_shift = model->config.time_shift;
  // Caption probes: name, how a caption is altered (nullptr: as given), summed loss, frames, words changed.
  struct Probe {
    std::string name;
    std::function<std::string(const std::string&, int*)> alter;
    double sum = 0;
    std::int64_t frames = 0, changed = 0;
    bool drop_anchor = false;  // the clips' anchor frames left out instead (anchored models)
  };
  auto swap = [](CaptionAttribute a) { return [a](const std::string& c, int* n) { return swap_caption_attribute(c, a, n); }; };
  std::vector<Probe> probes{{"as given", nullptr},
                            {"no caption", [](const std::string& c, int* n) { *n = c.empty() ? 0 : 1; return std::string{}; }},
                            {"colour swapped", swap(CaptionAttribute::Colour)},
                            {"shape swapped", swap(CaptionAttribute::Shape)},
                            {"direction swapped", swap(CaptionAttribute::Direction)},
                            {"anchor dropped", nullptr, 0, 0, 0, true}};
  for (std::int64_t i = 0; i < batches; ++i) {
    std::mt19937_64 rng(step_seed(seed, static_cast<std::uint64_t>(i), 7));
    auto noise = at::detail::createCPUGenerator(step_seed(seed, static_cast<std::uint64_t>(i), 8));
    const auto clips = data.next(batch_size, rng);
    const auto fm = make_flow_matching_batch(clips, model->tokenizer, recipe_no_dropout, rng, noise);
    const auto noisy = fm.noisy.to(w.device(), w.scalar_type());
    const auto anchor = fm.anchor.defined() ? fm.anchor.to(w.device(), w.scalar_type()) : torch::Tensor{};
    auto per_frame_loss = [&](const torch::Tensor& tokens, const torch::Tensor& anchor) {  // [b, F]
      return (model->forward(noisy, fm.tau, model->encode_text(tokens), anchor).to(torch::kCPU, torch::kFloat32) - fm.target).pow(2).flatten(2).mean(2);
    };
    const auto per_frame = per_frame_loss(fm.tokens, anchor);
    const auto tau = fm.tau.to(torch::kCPU);
    const auto mask = fm.loss_mask.to(torch::kCPU);
    const auto probed = (mask > 0).logical_and(tau < kCaptionProbeMaxTau);
    const auto probed_frames = probed.sum().item<std::int64_t>();
    for (auto& p : probes) {
      torch::Tensor loss = per_frame;
      if (p.drop_anchor) {
        if (!anchor.defined()) continue;
        loss = per_frame_loss(fm.tokens, torch::Tensor{});
        p.changed += per_frame.size(0);
      } else if (p.alter) {
        std::vector<std::string> captions;
        for (const auto& c : clips.captions) {
          int n = 0;
          captions.push_back(p.alter(c, &n));
          p.changed += n;
        }
        loss = per_frame_loss(model->tokenizer.encode_batch(captions), anchor);
      }
      p.sum += loss.masked_select(probed).sum().item<double>();
      p.frames += probed_frames;
    }
    for (std::int64_t b = 0; b < per_frame.size(0); ++b) {
      double clip_sum = 0;
      std::int64_t clip_frames = 0;
      for (std::int64_t f = 0; f < per_frame.size(1); ++f) {
        if (mask[b][f].item<float>() == 0.f) continue;
        const double l = per_frame[b][f].item<double>();
        const auto bucket = std::min<std::int64_t>(tau_buckets - 1, static_cast<std::int64_t>(tau[b][f].item<double>() * static_cast<double>(tau_buckets)));
        bucket_sum[static_cast<std::size_t>(bucket)] += l;
        ++report.frames_per_bucket[static_cast<std::size_t>(bucket)];
        clip_sum += l;
        ++clip_frames;
      }
      auto& entry = by_c[fm.chunk_sizes[static_cast<std::size_t>(b)]];
      entry.first += clip_sum;
      entry.second += clip_frames;
      total += clip_sum;
      frames_counted += clip_frames;
    }
  }
  report.overall = total / static_cast<double>(std::max<std::int64_t>(1, frames_counted));
  for (const auto& [c, sum_count] : by_c)
    report.by_chunk_size.emplace_back(c, sum_count.first / static_cast<double>(std::max<std::int64_t>(1, sum_count.second)));
  for (std::size_t i = 0; i < bucket_sum.size(); ++i)
    report.by_tau_bucket.push_back(report.frames_per_bucket[i] ? bucket_sum[i] / static_cast<double>(report.frames_per_bucket[i]) : 0.0);
  const auto& given = probes.front();
  if (given.frames > 0) {
    const double given_loss = given.sum / static_cast<double>(given.frames);
    for (const auto& p : probes)
      if (p.changed > 0 || (!p.alter && !p.drop_anchor)) {
        const double loss = p.sum / static_cast<double>(p.frames);
        report.caption_probes.push_back({p.name, loss, given_loss > 0 ? loss / given_loss - 1 : 0.0});
      }
  }
  return report;
}

}  // namespace streamgen
