#pragma once
// The optimisation loop every model this project trains shares (the StreamDiT teacher, its
// distilled student, the temporal autoencoder): AdamW with warm-up + cosine, gradient clipping,
// EMA, accumulation, c10d data parallelism, a progress bar, the CSV loss log and resumable
// checkpoints. What is built and what is optimised come from hooks.
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>

#include "streamgen/distributed.h"

namespace streamgen {

struct OptimisationOptions {
  std::filesystem::path out;  // checkpoint folder
  std::int64_t steps = 2500;
  std::int64_t stop_at = 0;  // > 0: end this leg after that step (the schedule still spans `steps`); resume later
  std::int64_t batch = 8;
  std::int64_t accumulate = 1;  // micro-batches per optimiser step
  double lr = 3e-4;
  std::int64_t warmup = 100;
  double min_lr_ratio = 0.1;  // cosine decays to lr·this
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.99;
  double grad_clip = 1.0;
  double ema_decay = 0.999;
  std::uint64_t seed = 0;
  std::int64_t checkpoint_every = 250;
  std::int64_t log_every = 10;
  bool resume = false;
  // A model folder whose weights a fresh run starts from (fine-tuning: the optimiser, the step and
  // the schedule start anew). Its config must be the run's; ignored on resume.
  std::filesystem::path init_from;
  bool bf16_autocast = false;  // forward in bf16 autocast (CPU); parameters, optimiser and EMA stay fp32
  DistributedOptions distributed;  // world_size > 1: data-parallel over c10d/Gloo, batch split by rank
  std::string command_line;  // recorded in the checkpoint for the model card
};

struct TrainStepInfo {
  std::int64_t step = 0;  // 1-based, after the update
  double loss = 0, lr = 0, grad_norm = 0, samples_per_second = 0;
};

struct TrainSummary {
  std::int64_t first_step = 0, last_step = 0;
  double final_loss = 0;  // mean over the last log interval
  double seconds = 0;
};

// Learning rate at step (0-based): linear warm-up, then cosine to lr·min_lr_ratio.
double learning_rate_at(const OptimisationOptions& o, std::int64_t step);

// The per-step random engine: a SplitMix64 mix of (seed, step, stream), stable across runs.
std::uint64_t step_seed(std::uint64_t seed, std::uint64_t step, std::uint64_t stream = 0);

// The per-example random engines of example `index` of micro-batch `micro` of step `step`: data
// draws from `rng`, Gaussian noise from `noise`. Any split of a batch over processes sees the
// same examples.
struct ExampleEngines {
  std::mt19937_64 rng;
  at::Generator noise;
};
ExampleEngines example_engines(std::uint64_t seed, std::uint64_t step, std::uint64_t micro, std::int64_t index);

// True when `folder` holds a run that can be resumed (training/state.json).
bool has_training_run(const std::filesystem::path& folder);

using ModulePtr = std::shared_ptr<torch::nn::Module>;

// Copies every parameter of `from` into `to` by name (a fine-tune's start, a student from its
// teacher, the EMA's first value); a missing or mis-shaped one is an Error that names it.
// `may_be_new` names the parameters of `to` that `from` may lack (they keep their initialisation:
// a fine-tune that adds a module); any other missing one is an error.
void copy_parameters(const torch::nn::Module& from, torch::nn::Module& to, const std::function<bool(const std::string&)>& may_be_new = {});

struct OptimisationHooks {
  // A module of the run's config (called for the weights and for their EMA copy; the loop seeds
  // torch with options.seed first, so fresh weights are reproducible).
  std::function<ModulePtr()> create;
  // A fresh run's starting weights (default: whatever `create` made).
  std::function<void(const ModulePtr& model)> initialise;
  // The loss of this rank's examples [first, first + count) of micro-batch `micro` of step `step`.
  std::function<torch::Tensor(const ModulePtr& model, std::uint64_t step, std::uint64_t micro, std::int64_t first, std::int64_t count)> loss;
  // Writes the EMA weights as the model folder's config.json + model.safetensors.
  std::function<void(const ModulePtr& ema, const std::filesystem::path& folder, std::int64_t step)> save;
  // Recorded in training/state.json beside the loop's own fields.
  nlohmann::json metadata = nlohmann::json::object();
  std::string label = "train";  // the progress bar's name
};

// Runs options.steps optimiser steps into options.out (the model folder, plus training/ with the
// raw weights, the optimiser and state.json), or continues the run found there with
// options.resume: the step, weights, EMA and optimiser state come from the folder, and each
// step's randomness depends only on (seed, step), so a resumed run follows the same curve.
TrainSummary run_optimisation(const OptimisationOptions& options, const OptimisationHooks& hooks,
                              const std::function<void(const TrainStepInfo&)>& on_step = {});

}  // namespace streamgen
