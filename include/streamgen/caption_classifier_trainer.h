#pragma once
// Training the caption classifier (caption_classifier.h) on real procedural clips, and scoring
// video with it: `streamgen dit classifier train | eval`, and `dit eval --classifier`.
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "streamgen/caption_classifier.h"
#include "streamgen/dit_metrics.h"
#include "streamgen/optimisation.h"
#include "streamgen/procedural_video.h"

namespace streamgen {

// What the classifier learns of a window whose per-frame object states are `states`:
// [colours, 1 + shapes + directions] of 0/1 — colour present, the shapes of that colour, the
// directions objects of that colour move in during the window (two in a window with a bounce).
torch::Tensor caption_classifier_targets(const std::vector<std::vector<MovingObject>>& states, const CaptionClassifierConfig& config);

// Binary cross-entropy of presence over every colour, and of shapes and directions over the colours
// that are present (the shape of an absent colour has no answer).
torch::Tensor caption_classifier_loss(const torch::Tensor& logits, const torch::Tensor& targets);

// A caption scored from the classifier's probabilities [colours, 1 + shapes + directions] of one
// window: a captioned object's colour is right when its presence is ≥ 0.5; its shape (direction)
// when, besides, that shape's (direction's) probability for its colour is ≥ 0.5 — as
// score_caption's rules, with the classifier in place of the palette heuristics.
CaptionScore score_caption_probabilities(const torch::Tensor& probabilities, const std::string& caption);

struct CaptionClassifierTrainOptions : OptimisationOptions {
  // Augmentations of the real clips, so that the classifier names what is drawn rather than how
  // crisply: Gaussian blur of σ drawn from [0, blur] pixels (at 64 px; scaled with the frame
  // size), pixel noise of σ drawn from [0, noise].
  double blur = 1.5, noise = 0.05;
};

// Trains `config` into options.out (or resumes there) on real clips of caption_classifier_world(config),
// seeded per step.
TrainSummary train_caption_classifier(const CaptionClassifierConfig& config, const CaptionClassifierTrainOptions& options,
                                      const std::function<void(const TrainStepInfo&)>& on_step = {});

// Windows of frames [F, 3, H, W] (F a multiple of the classifier's window; leftover frames are
// ignored) -> probabilities [windows, colours, 1 + shapes + directions] and, when `features` is
// given, the features of each window [windows, feature_size].
torch::Tensor classify_windows(CaptionClassifier& classifier, const torch::Tensor& frames, torch::Tensor* features = nullptr);

struct CaptionClassifierReport {
  std::int64_t clips = 0;
  CaptionScore score;  // the clips' own captions, scored from the classifier's probabilities
  // Every label's exact accuracy: presence over all colours, shapes and directions over present colours.
  double presence_accuracy = 0, shape_label_accuracy = 0, direction_label_accuracy = 0;
};
// Held-out real clips of the classifier's world (seeded by `seed`, never a training seed).
CaptionClassifierReport evaluate_caption_classifier(CaptionClassifier& classifier, const ProceduralVideoOptions& world, std::int64_t clips,
                                                    std::uint64_t seed);

// The world a classifier was trained on: its frame size and edge rule, the default object sizes.
ProceduralVideoOptions caption_classifier_world(const CaptionClassifierConfig& config);

}  // namespace streamgen
