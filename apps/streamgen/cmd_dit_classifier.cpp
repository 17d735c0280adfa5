// streamgen dit classifier train | eval: the caption classifier `dit eval --classifier` scores with.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <iostream>

#include "commands.h"
#include "streamgen/caption_classifier_trainer.h"
#include "streamgen/error.h"

namespace streamgen::cli {
namespace {

void print_report(const CaptionClassifierReport& r, const CaptionClassifierConfig& c) {
  std::cout << fmt::format(
                   "{} held-out real clips ({} frames of {}x{}, {} edges):\n"
                   "  caption accuracy {:.3f}  (colour {:.3f}, shape {:.3f}, direction {:.3f})\n"
                   "  labels right: presence {:.3f}, shapes {:.3f}, directions {:.3f} (of present colours)\n",
                   r.clips, c.frames, c.width, c.height, c.edges, r.score.overall(), r.score.colour, r.score.shape, r.score.direction,
                   r.presence_accuracy, r.shape_label_accuracy, r.direction_label_accuracy)
            << std::flush;
}

void register_classifier_train(CLI::App& classifier) {
  struct Args {
    std::string out, edges = "wrap";
    std::int64_t size = 64, frames = 16, eval_clips = 256;
    std::vector<std::int64_t> channels{32, 64, 96, 128};
    CaptionClassifierTrainOptions train;
    ComputeArgs compute;
  };
  auto a = std::make_shared<Args>();
  a->train.steps = 1500;
  a->train.batch = 16;
  a->train.lr = 1e-3;
  a->train.warmup = 50;
  a->train.ema_decay = 0.995;
  auto* cmd = classifier.add_subcommand("train", "Train the caption classifier on real procedural clips (what dit eval --classifier scores with)");
  cmd->add_option("--out,-o", a->out, "Model folder (config.json + model.safetensors with the EMA weights, training/, loss.csv)")->required();
  cmd->add_flag("--resume", a->train.resume, "Continue the run in --out (weights, EMA, optimiser, step)");
  add_edges_option(*cmd, a->edges, " (the world of the StreamDiT it will score)")->capture_default_str();
  cmd->add_option("--size", a->size, "Frame size in pixels (square; a multiple of 2^blocks)")->capture_default_str()->check(CLI::Range(8, 1024));
  cmd->add_option("--frames", a->frames, "Frames per window it reads (dit eval's window)")->capture_default_str()->check(CLI::Range(2, 256));
  cmd->add_option("--channels", a->channels, "Channels of each Conv3d block (each halves the frame size)")->delimiter(',')->capture_default_str();
  cmd->add_option("--blur", a->train.blur, "Augmentation: Gaussian blur of sigma up to this many pixels (at 64 px)")->capture_default_str();
  cmd->add_option("--noise", a->train.noise, "Augmentation: pixel noise of sigma up to this")->capture_default_str();
  cmd->add_option("--eval-clips", a->eval_clips, "Held-out clips scored at the end (0: none)")->capture_default_str();
  cmd->add_flag("--bf16-autocast", a->train.bf16_autocast, "Forward passes in bf16 autocast (weights, optimiser and EMA stay fp32)");
  add_run_options(*cmd, a->train, "Optimiser steps", "Seed of the weights and the data");
  a->compute.add_to(*cmd, /*with_dtype=*/false);
  cmd->callback([a] {
    a->compute.resolve();
    CaptionClassifierConfig config;
    config.width = config.height = a->size;
    config.frames = a->frames;
    config.block_out_channels = a->channels;
    config.edges = a->edges;
    config.validate("dit classifier train");
    a->train.out = a->out;
    a->train.command_line = command_line();
    CaptionClassifier probe(config);
    std::int64_t params = 0;
    for (const auto& p : probe->parameters()) params += p.numel();
    spdlog::info("training a caption classifier ({:.2f}M parameters) on real {}x{} procedural clips ({} edges), windows of {} frames; {} steps of {}",
                 static_cast<double>(params) / 1e6, config.width, config.height, config.edges, config.frames, a->train.steps, a->train.batch);
    const auto summary = train_caption_classifier(config, a->train);
    std::cout << training_summary_line(summary, a->out);
    if (a->eval_clips > 0) {
      auto trained = load_caption_classifier(a->out);
      print_report(evaluate_caption_classifier(trained, caption_classifier_world(trained->config), a->eval_clips, 4242), trained->config);
    }
  });
}

void register_classifier_eval(CLI::App& classifier) {
  struct Args {
    std::string model;
    std::int64_t clips = 256;
    std::uint64_t seed = 4242;
    bool json = false;
    ComputeArgs compute;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = classifier.add_subcommand("eval", "The caption classifier's accuracy on held-out real clips of its world");
  cmd->add_option("--model,-m", a->model, "Caption classifier folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--clips", a->clips, "Held-out clips")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--seed", a->seed, "Seed of the held-out clips (keep it away from the training seed)")->capture_default_str();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  a->compute.add_to(*cmd);
  cmd->callback([a] {
    auto classifier = load_caption_classifier(a->model, a->compute.resolve());
    const auto r = evaluate_caption_classifier(classifier, caption_classifier_world(classifier->config), a->clips, a->seed);
    if (!a->json) return print_report(r, classifier->config);
    const nlohmann::json j{{"clips", r.clips},
                           {"caption_accuracy", r.score.overall()},
                           {"colour_accuracy", r.score.colour},
                           {"shape_accuracy", r.score.shape},
                           {"direction_accuracy", r.score.direction},
                           {"presence_label_accuracy", r.presence_accuracy},
                           {"shape_label_accuracy", r.shape_label_accuracy},
                           {"direction_label_accuracy", r.direction_label_accuracy}};
    std::cout << j.dump() << "\n";
  });
}

}  // namespace

void register_dit_classifier(CLI::App& dit) {
  auto* classifier = dit.add_subcommand("classifier", "The caption classifier of dit eval: a small 3D-CNN trained on real procedural clips");
  classifier->require_subcommand(1);
  register_classifier_train(*classifier);
  register_classifier_eval(*classifier);
}

}  // namespace streamgen::cli
