#include "streamgen/optimisation.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "streamgen/device.h"
#include "streamgen/error.h"
#include "streamgen/json_file.h"
#include "streamgen/progress.h"
#include "streamgen/safetensors_format.h"
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

ExampleEngines example_engines(std::uint64_t seed, std::uint64_t step, std::uint64_t micro, std::int64_t index) {
  const auto stream = (micro << 20) + static_cast<std::uint64_t>(index);
  return {std::mt19937_64(step_seed(seed, step, stream)), at::detail::createCPUGenerator(step_seed(seed, step, stream | (std::uint64_t{1} << 60)))};
}

double learning_rate_at(const OptimisationOptions& o, std::int64_t step) {
  if (o.warmup > 0 && step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double span = static_cast<double>(std::max<std::int64_t>(1, o.steps - o.warmup));
  const double progress = std::clamp(static_cast<double>(step - o.warmup) / span, 0.0, 1.0);
  const double floor = o.lr * o.min_lr_ratio;
  return floor + (o.lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}


void copy_parameters(const torch::nn::Module& from, torch::nn::Module& to, const std::function<bool(const std::string&)>& may_be_new) {
  torch::NoGradGuard no_grad;
  const auto source = from.named_parameters();
  for (auto& p : to.named_parameters()) {
    const auto* value = source.find(p.key());
    if (value == nullptr && may_be_new && may_be_new(p.key())) continue;
    if (value == nullptr) throw Error(fmt::format("starting weights: parameter '{}' is missing", p.key()));
    if (!value->sizes().equals(p.value().sizes()))
      throw Error(fmt::format("starting weights: parameter '{}' has shape {}, the model expects {}", p.key(),
                              safetensors::shape_string(value->sizes().vec()), safetensors::shape_string(p.value().sizes().vec())));
    p.value().copy_(*value);
  }
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

void update_ema(torch::nn::Module& ema, const torch::nn::Module& model, double decay) {
  torch::NoGradGuard no_grad;
  const auto src = model.parameters();
  auto dst = ema.parameters();
  for (std::size_t i = 0; i < dst.size(); ++i) {
    // A frozen parameter's average is itself, exactly (decay·x + (1 − decay)·x is not, in floats).
    if (!src[i].requires_grad()) continue;
    dst[i].mul_(decay).add_(src[i], 1.0 - decay);
  }
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

TrainSummary run_optimisation(const OptimisationOptions& o, const OptimisationHooks& hooks,
                              const std::function<void(const TrainStepInfo&)>& on_step) {
  if (!hooks.create || !hooks.loss || !hooks.save) throw Error("training: the run lacks a model, a loss or a way to save");
  if (o.out.empty()) throw Error("training needs an output folder");
  if (o.steps < 1 || o.batch < 1 || o.accumulate < 1) throw Error("training: steps, batch and accumulate must be >= 1");
  const RunFiles files(o.out);
  std::error_code ec;
  const bool has_run = fs::exists(files.state, ec);
  if (has_run && !o.resume)
    throw Error("'" + o.out.string() + "' already holds a training run (training/state.json); pass --resume to continue it or choose another folder");
  if (o.resume && !has_run) throw Error("nothing to resume in '" + o.out.string() + "': no training/state.json");

  const ScopedBlasThreads blas_threads(1);
  std::int64_t start = 0;
  if (o.resume) {
    const auto state = read_json_file(files.state);
    start = state.at("step").get<std::int64_t>();
    if (state.value("seed", o.seed) != o.seed)
      spdlog::warn("resuming with seed {} although the run was started with seed {}: the curve will differ", o.seed,
                   state.value("seed", std::uint64_t{0}));
  }
  const auto& dist = o.distributed;
  std::unique_ptr<DataParallelGroup> group;
  if (dist.world_size > 1) {
    if (o.batch % dist.world_size != 0)
      throw Error(fmt::format("data parallel: the batch of {} examples does not split over {} processes", o.batch, dist.world_size));
    group = std::make_unique<DataParallelGroup>(dist);
  }
  const std::int64_t rank = dist.world_size > 1 ? dist.rank : 0;
  const std::int64_t per_rank = o.batch / std::max(1, dist.world_size);
  const bool leader = rank == 0;

  torch::manual_seed(o.seed);  // the initial weights
  const auto model = hooks.create();
  if (hooks.initialise && !o.resume) hooks.initialise(model);
  const auto ema = hooks.create();
  copy_parameters(*model, *ema);
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
    if (!o.init_from.empty()) meta["initialised_from"] = o.init_from.string();
    meta.update(hooks.metadata);
    hooks.save(ema, files.dir, step);
    save_state_dict(*model, files.weights, torch::kFloat32, {{"step", std::to_string(step)}, {"weights", "raw"}});
    save_optimizer(optimizer, files.optimizer);
    write_json_file(files.state, meta);  // last: a state.json always names complete files
  };

  model->train();
  TrainSummary summary;
  summary.first_step = start;
  const auto t0 = std::chrono::steady_clock::now();
  std::ostream discard(nullptr);  // ranks other than 0 stay quiet
  ProgressBar bar(hooks.label, o.steps, "step", leader ? nullptr : &discard, leader ? std::nullopt : std::optional<bool>(false));
  bar.start_at(start);
  double interval_loss = 0;
  std::int64_t interval_steps = 0;
  auto last = std::chrono::steady_clock::now();
  const std::int64_t end = o.stop_at > 0 ? std::min(o.stop_at, o.steps) : o.steps;
  for (std::int64_t step = start; step < end; ++step) {
    const double lr = learning_rate_at(o, step);
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
    if ((step + 1) % o.log_every == 0 || step + 1 == end) {
      if (leader) log.flush();
      summary.final_loss = interval_loss / static_cast<double>(interval_steps);
      bar.set_postfix(fmt::format("loss={:.4f} lr={:.1e} {:.1f} samples/s", summary.final_loss, lr, info.samples_per_second));
      interval_loss = 0;
      interval_steps = 0;
    }
    bar.advance();
    if (leader && ((step + 1) % o.checkpoint_every == 0 || step + 1 == end)) {
      log.flush();
      checkpoint(step + 1);
    }
  }
  if (interval_steps > 0) summary.final_loss = interval_loss / static_cast<double>(interval_steps);
  bar.finish();
  summary.last_step = std::max(start, end);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

bool has_training_run(const std::filesystem::path& folder) {
  std::error_code ec;
  return std::filesystem::exists(RunFiles(folder).state, ec);
}

}  // namespace streamgen
