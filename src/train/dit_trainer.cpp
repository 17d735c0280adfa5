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
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/media.h"
#include "streamgen/json_file.h"
#include "streamgen/progress.h"
#include "streamgen/state_dict.h"
#include "streamgen/weight_set.h"

namespace streamgen {

std::uint64_t step_seed(std::uint64_t seed, std::uint64_t step, std::uint64_t stream) {
  auto mix = [](std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(seed) ^ step) ^ stream);
}

ClipBatch ProceduralClipSource::next(std::int64_t batch, std::mt19937_64& rng) {
  ClipBatch out;
  std::vector<torch::Tensor> videos;
  for (std::int64_t i = 0; i < batch; ++i) {
    auto clip = make_procedural_clip(options_, frames_, rng);
    videos.push_back(clip.frames);
    out.captions.push_back(std::move(clip.caption));
  }
  out.video = torch::stack(videos);
  return out;
}

std::string ProceduralClipSource::describe() const {
  return fmt::format("procedural shapes, {} frames of {}x{}, {}–{} objects", frames_, options_.width, options_.height, options_.min_objects,
                     options_.max_objects);
}

namespace {
bool is_video_file(const std::filesystem::path& p) {
  auto ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* known : {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".gif"})
    if (ext == known) return true;
  return false;
}

std::string caption_for(const std::filesystem::path& video) {
  auto side = video;
  side.replace_extension(".txt");
  std::ifstream in(side);
  if (in) {
    std::string text((std::istreambuf_iterator<char>(in)), {});
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    if (!text.empty()) return text;
  }
  auto stem = video.stem().string();
  std::replace(stem.begin(), stem.end(), '_', ' ');
  std::replace(stem.begin(), stem.end(), '-', ' ');
  return stem;
}
}  // namespace

VideoFolderClipSource::VideoFolderClipSource(const std::filesystem::path& folder, std::int64_t frames, std::int64_t width, std::int64_t height)
    : folder_(folder), frames_(frames) {
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec)) throw Error("training data '" + folder.string() + "' is not a folder of videos");
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(folder, ec))
    if (entry.is_regular_file() && is_video_file(entry.path())) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error("training data '" + folder.string() + "' holds no video files (.mp4 .mkv .mov .avi .webm .m4v .gif)");
  ProgressBar bar("decode videos", static_cast<std::int64_t>(files.size()), "file");
  for (const auto& file : files) {
    auto source = open_source(file.string());
    std::vector<torch::Tensor> decoded;
    while (auto frame = source->next()) decoded.push_back(fit_image(frame->rgb.unsqueeze(0), width, height, Fit::Crop)[0]);
    bar.advance();
    if (static_cast<std::int64_t>(decoded.size()) < frames) {
      spdlog::warn("'{}' has {} frames, fewer than the {} a clip needs; skipped", file.string(), decoded.size(), frames);
      continue;
    }
    videos_.push_back({torch::stack(decoded), caption_for(file)});
  }
  bar.finish();
  if (videos_.empty()) throw Error(fmt::format("no video in '{}' has the {} frames a training clip needs", folder.string(), frames));
}

ClipBatch VideoFolderClipSource::next(std::int64_t batch, std::mt19937_64& rng) {
  ClipBatch out;
  std::vector<torch::Tensor> clips;
  for (std::int64_t i = 0; i < batch; ++i) {
    const auto& v = videos_[std::min(videos_.size() - 1, static_cast<std::size_t>(uniform01(rng) * static_cast<double>(videos_.size())))];
    const auto starts = v.frames.size(0) - frames_ + 1;
    const auto start = std::min(starts - 1, static_cast<std::int64_t>(uniform01(rng) * static_cast<double>(starts)));
    clips.push_back(image_u8_to_unit_range(v.frames.narrow(0, start, frames_)));
    out.captions.push_back(v.caption);
  }
  out.video = torch::stack(clips);
  return out;
}

std::vector<std::string> VideoFolderClipSource::caption_words() const {
  std::set<std::string> words;
  for (const auto& v : videos_)
    for (auto& w : split_caption_words(v.caption)) words.insert(std::move(w));
  return {words.begin(), words.end()};
}

std::int64_t VideoFolderClipSource::longest_caption() const {
  std::size_t longest = 0;
  for (const auto& v : videos_) longest = std::max(longest, split_caption_words(v.caption).size());
  return static_cast<std::int64_t>(longest);
}

std::string VideoFolderClipSource::describe() const {
  return fmt::format("{} videos from '{}', clips of {} frames", videos_.size(), folder_.string(), frames_);
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
    const auto levels = training_levels(partition, draws, recipe.tau_power);
    for (std::int64_t f = 0; f < frames; ++f) tau[i][f] = levels[static_cast<std::size_t>(f)];
    out.chunk_sizes.push_back(c);
    captions.push_back(uniform01(rng) < recipe.text_dropout ? std::string{} : clips.captions[static_cast<std::size_t>(i)]);
  }
  const auto x0 = at::randn(x1.sizes(), noise, x1.options());
  out.noisy = flow_interpolate(x1, x0, tau.to(x1.device()), recipe.sigma_min);
  out.target = flow_velocity(x1, x0, recipe.sigma_min);
  out.tau = tau.to(x1.device());
  out.loss_mask = mask.to(x1.device());
  out.tokens = tokenizer.encode_batch(captions);
  return out;
}

FlowMatchingBatch concat_batches(const std::vector<FlowMatchingBatch>& parts) {
  FlowMatchingBatch out;
  std::vector<torch::Tensor> noisy, tau, target, mask, tokens;
  for (const auto& p : parts) {
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
  return out;
}

ExampleEngines example_engines(std::uint64_t seed, std::uint64_t step, std::uint64_t micro, std::int64_t index) {
  const auto stream = (micro << 20) + static_cast<std::uint64_t>(index);
  return {std::mt19937_64(step_seed(seed, step, stream)), at::detail::createCPUGenerator(step_seed(seed, step, stream | (std::uint64_t{1} << 60)))};
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

torch::Tensor masked_flow_loss(const torch::Tensor& prediction, const torch::Tensor& target, const torch::Tensor& mask) {
  const auto per_frame = (prediction.to(torch::kFloat32) - target.to(torch::kFloat32)).pow(2).flatten(2).mean(2);  // [b, F]
  return (per_frame * mask).sum() / mask.sum().clamp_min(1.0);
}

double dit_learning_rate(const DiTRunOptions& o, std::int64_t step) {
  if (o.warmup > 0 && step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double span = static_cast<double>(std::max<std::int64_t>(1, o.steps - o.warmup));
  const double progress = std::clamp(static_cast<double>(step - o.warmup) / span, 0.0, 1.0);
  const double floor = o.lr * o.min_lr_ratio;
  return floor + (o.lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

namespace {

namespace fs = std::filesystem;

struct RunFiles {
  fs::path dir, training, weights, optimizer, state, loss_log;
  explicit RunFiles(const fs::path& out)
      : dir(out),
        training(out / "training"),
        weights(out / "training" / "weights.safetensors"),
        optimizer(out / "training" / "optimizer.pt"),
        state(out / "training" / "state.json"),
        loss_log(out / "loss.csv") {}
};

void copy_parameters(torch::nn::Module& to, const torch::nn::Module& from) {
  torch::NoGradGuard no_grad;
  const auto src = from.parameters();
  auto dst = to.parameters();
  for (std::size_t i = 0; i < dst.size(); ++i) dst[i].copy_(src[i]);
}

void update_ema(torch::nn::Module& ema, const torch::nn::Module& model, double decay) {
  torch::NoGradGuard no_grad;
  const auto src = model.parameters();
  auto dst = ema.parameters();
  for (std::size_t i = 0; i < dst.size(); ++i) dst[i].mul_(decay).add_(src[i], 1.0 - decay);
}

void load_weights(torch::nn::Module& module, const fs::path& file) { load_state_dict(module, WeightSet::open(file)); }

// Keeps the loss log consistent with a resumed checkpoint: rows past `step` came from work that
// was lost with the interrupted run.
void truncate_loss_log(const fs::path& log, std::int64_t step) {
  std::ifstream in(log);
  if (!in) return;
  std::stringstream kept;
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (header || line.empty()) {
      kept << line << "\n";
      header = false;
      continue;
    }
    if (std::stoll(line.substr(0, line.find(','))) <= step) kept << line << "\n";
  }
  in.close();
  write_text_file(log, kept.str());
}

void save_optimizer(torch::optim::AdamW& optimizer, const fs::path& path) {
  auto tmp = path;
  tmp += ".tmp";
  torch::save(optimizer, tmp.string());
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error("cannot rename '" + tmp.string() + "': " + ec.message());
}

}  // namespace

DiTTrainSummary run_dit_optimisation(const StreamDiTConfig& requested, const DiTRunOptions& o, const DiTRunHooks& hooks,
                                     const std::function<void(const TrainStepInfo&)>& on_step) {
  if (!hooks.loss) throw Error("training: no loss to optimise");
  if (o.out.empty()) throw Error("training needs an output folder");
  if (o.steps < 1 || o.batch < 1 || o.accumulate < 1) throw Error("training: steps, batch and accumulate must be >= 1");
  const RunFiles files(o.out);
  std::error_code ec;
  const bool has_run = fs::exists(files.state, ec);
  if (has_run && !o.resume)
    throw Error("'" + o.out.string() + "' already holds a training run (training/state.json); pass --resume to continue it or choose another folder");
  if (o.resume && !has_run) throw Error("nothing to resume in '" + o.out.string() + "': no training/state.json");

  const ScopedBlasThreads blas_threads(1);
  StreamDiTConfig config = requested;
  std::int64_t start = 0;
  nlohmann::json state;
  if (o.resume) {
    state = read_json_file(files.state);
    config = StreamDiTConfig::from_json(read_json_file(files.dir / "config.json"), (files.dir / "config.json").string());
    start = state.at("step").get<std::int64_t>();
    if (state.value("seed", o.seed) != o.seed)
      spdlog::warn("resuming with seed {} although the run was started with seed {}: the curve will differ", o.seed,
                   state.value("seed", std::uint64_t{0}));
  }
  const auto& dist = o.distributed;
  std::unique_ptr<DataParallelGroup> group;
  if (dist.world_size > 1) {
    if (o.batch % dist.world_size != 0)
      throw Error(fmt::format("data parallel: the batch of {} clips does not split over {} processes", o.batch, dist.world_size));
    group = std::make_unique<DataParallelGroup>(dist);
  }
  const std::int64_t rank = dist.world_size > 1 ? dist.rank : 0;
  const std::int64_t per_rank = o.batch / std::max(1, dist.world_size);
  const bool leader = rank == 0;

  torch::manual_seed(o.seed);  // the initial weights
  StreamDiT model(config);
  if (hooks.initialise && !o.resume) hooks.initialise(model);
  StreamDiT ema(config);
  copy_parameters(*ema, *model);
  ema->eval();
  for (auto& p : ema->parameters()) p.set_requires_grad(false);

  torch::optim::AdamW optimizer(model->parameters(),
                                torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).weight_decay(o.weight_decay).eps(1e-8));
  if (o.resume) {
    load_weights(*model, files.weights);
    load_weights(*ema, files.dir / "model.safetensors");
    torch::load(optimizer, files.optimizer.string());
    truncate_loss_log(files.loss_log, start);
    spdlog::info("resuming '{}' at step {} of {}", o.out.string(), start, o.steps);
  }
  if (group) group->broadcast(model->parameters());  // identical starting points, whatever the seeds did
  std::ofstream log;
  if (leader) {
    fs::create_directories(files.training, ec);
    if (ec) throw Error("cannot create '" + files.training.string() + "': " + ec.message());
    if (!fs::exists(files.loss_log)) write_text_file(files.loss_log, "step,loss,lr,grad_norm,samples_per_s,elapsed_s\n");
    log.open(files.loss_log, std::ios::app);
  }

  auto checkpoint = [&](std::int64_t step) {
    nlohmann::json meta = {{"step", step},
                           {"seed", o.seed},
                           {"steps", o.steps},
                           {"batch", o.batch},
                           {"accumulate", o.accumulate},
                           {"lr", o.lr},
                           {"warmup", o.warmup},
                           {"ema_decay", o.ema_decay},
                           {"world_size", dist.world_size},
                           {"command", o.command_line}};
    meta.update(hooks.metadata);
    save_stream_dit(ema, files.dir, torch::kFloat32, {{"step", std::to_string(step)}, {"weights", "ema"}});
    save_state_dict(*model, files.weights, torch::kFloat32, {{"step", std::to_string(step)}, {"weights", "raw"}});
    save_optimizer(optimizer, files.optimizer);
    write_json_file(files.state, meta);  // last: a state.json always names complete files
  };

  model->train();
  DiTTrainSummary summary;
  summary.first_step = start;
  const auto t0 = std::chrono::steady_clock::now();
  std::ostream discard(nullptr);  // ranks other than 0 stay quiet
  ProgressBar bar(hooks.label, o.steps, "step", leader ? nullptr : &discard, leader ? std::nullopt : std::optional<bool>(false));
  bar.set(start);
  double interval_loss = 0;
  std::int64_t interval_steps = 0;
  auto last = std::chrono::steady_clock::now();
  for (std::int64_t step = start; step < o.steps; ++step) {
    const double lr = dit_learning_rate(o, step);
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    optimizer.zero_grad();
    double loss_sum = 0;
    for (std::int64_t micro = 0; micro < o.accumulate; ++micro) {
      // This rank's slice of the global batch; every example is seeded by (seed, step, micro, index).
      const auto loss = hooks.loss(model, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(micro), rank * per_rank, per_rank) /
                        static_cast<double>(o.accumulate);
      loss.backward();
      loss_sum += loss.item<double>();
    }
    if (group) {
      group->average_gradients(model->parameters());
      loss_sum = group->average(loss_sum);
    }
    if (!std::isfinite(loss_sum))
      throw Error(fmt::format("training diverged at step {}: loss is {} (lower --lr or raise --warmup; the last checkpoint is in '{}')", step + 1,
                              loss_sum, o.out.string()));
    const double grad_norm = torch::nn::utils::clip_grad_norm_(model->parameters(), o.grad_clip);
    optimizer.step();
    // EMA warm-up (as in timm's ModelEmaV2 schedules): early averages follow the weights closely.
    const double decay = std::min(o.ema_decay, (1.0 + static_cast<double>(step)) / (10.0 + static_cast<double>(step)));
    update_ema(*ema, *model, decay);

    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - last).count();
    last = now;
    TrainStepInfo info{step + 1, loss_sum, lr, grad_norm, static_cast<double>(o.batch * o.accumulate) / std::max(dt, 1e-9)};  // global samples
    interval_loss += loss_sum;
    ++interval_steps;
    if (on_step) on_step(info);
    const double elapsed = std::chrono::duration<double>(now - t0).count();
    if (leader) log << fmt::format("{},{:.6f},{:.3e},{:.4f},{:.2f},{:.1f}\n", info.step, info.loss, lr, grad_norm, info.samples_per_second, elapsed);
    if ((step + 1) % o.log_every == 0 || step + 1 == o.steps) {
      if (leader) log.flush();
      summary.final_loss = interval_loss / static_cast<double>(interval_steps);
      bar.set_postfix(fmt::format("loss={:.4f} lr={:.1e} {:.1f} samples/s", summary.final_loss, lr, info.samples_per_second));
      interval_loss = 0;
      interval_steps = 0;
    }
    bar.advance();
    if (leader && ((step + 1) % o.checkpoint_every == 0 || step + 1 == o.steps)) {
      log.flush();
      checkpoint(step + 1);
    }
  }
  if (interval_steps > 0) summary.final_loss = interval_loss / static_cast<double>(interval_steps);
  bar.finish();
  summary.last_step = o.steps;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

DiTTrainSummary train_stream_dit(const StreamDiTConfig& config, ClipSource& data, const DiTTrainOptions& o,
                                 const std::function<void(const TrainStepInfo&)>& on_step) {
  DiTRunHooks hooks;
  hooks.loss = [&](StreamDiT& model, std::uint64_t step, std::uint64_t micro, std::int64_t first, std::int64_t count) {
    const auto fm = seeded_flow_matching_batch(data, model->tokenizer, o.recipe, o.seed, step, micro, first, count);
    torch::Tensor prediction;
    {
      const ScopedCpuAutocast autocast(o.bf16_autocast);
      prediction = model->forward(fm.noisy, fm.tau, model->encode_text(fm.tokens));
    }
    return masked_flow_loss(prediction.to(torch::kFloat32), fm.target, fm.loss_mask);
  };
  hooks.metadata = {{"chunk_sizes", o.recipe.mix.chunk_sizes},
                    {"full_share", o.recipe.mix.full_share},
                    {"reference_frames", o.recipe.reference_frames},
                    {"text_dropout", o.recipe.text_dropout},
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
  for (std::int64_t i = 0; i < batches; ++i) {
    std::mt19937_64 rng(step_seed(seed, static_cast<std::uint64_t>(i), 7));
    auto noise = at::detail::createCPUGenerator(step_seed(seed, static_cast<std::uint64_t>(i), 8));
    const auto clips = data.next(batch_size, rng);
    const auto fm = make_flow_matching_batch(clips, model->tokenizer, recipe_no_dropout, rng, noise);
    const auto prediction = model->forward(fm.noisy.to(w.device(), w.scalar_type()), fm.tau, model->encode_text(fm.tokens));
    const auto per_frame = (prediction.to(torch::kCPU, torch::kFloat32) - fm.target).pow(2).flatten(2).mean(2);  // [b, F]
    const auto tau = fm.tau.to(torch::kCPU);
    const auto mask = fm.loss_mask.to(torch::kCPU);
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
  return report;
}

}  // namespace streamgen
