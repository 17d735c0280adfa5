#pragma once
// Evaluation of generated shape videos without pretrained networks (docs/streamdit.md
// §15, metrics 2–3): objects are found by the known palette (colour threshold + connected
// components), which gives their colour, shape (fill ratio of the bounding box) and centroid
// track; from these come caption accuracy, dynamic degree (centroid speed), seam ratio and drift.
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "streamgen/procedural_video.h"

namespace streamgen {

struct DetectedObject {
  int colour = 0;
  std::optional<ShapeKind> shape;  // none when the component is too small or irregular to show one
  double x = 0, y = 0;  // centroid in pixels
  std::int64_t area = 0;
};

// frame [3, H, W] in [-1, 1]. Components smaller than `min_area` pixels are noise.
std::vector<DetectedObject> detect_objects(const torch::Tensor& frame, std::int64_t min_area = 6);

// What a caption asks for: "red circle moving left and blue square moving up".
struct CaptionedObject {
  int colour = -1;
  int shape = -1;      // ShapeKind, -1 when not named
  int direction = -1;  // 0 left, 1 right, 2 up, 3 down, -1 when not named
};
std::vector<CaptionedObject> parse_shape_caption(const std::string& caption);

// What a caption says about its objects, for probing whether a model listens to it.
enum class CaptionAttribute { Colour, Shape, Direction };
// The caption with every word of that attribute replaced by a different one of its kind (colours and
// shapes by the next in the palette's list, directions by their opposite); other words stay.
// `changed` (optional) receives how many words were replaced (0: the caption names none).
std::string swap_caption_attribute(const std::string& caption, CaptionAttribute what, int* changed = nullptr);

struct CaptionScore {
  double colour = 0, shape = 0, direction = 0;  // fraction of captioned objects right
  double overall() const { return (colour + shape + direction) / 3.0; }
};
// Scores frames [F, 3, H, W] against the caption: colour = the object's colour is present in at
// least half the frames; shape = the majority shape of that colour's largest component (a frame
// where it is too small or irregular to show a shape votes for none); direction = the dominant axis
// and sign of its centroid motion over the first `direction_frames` frames.
CaptionScore score_caption(const torch::Tensor& frames, const std::string& caption, std::int64_t direction_frames = 6);

struct VideoStatistics {
  double dynamic_degree = 0;  // mean centroid speed, pixels per frame
  double seam_ratio = 0;      // mean |x_t - x_{t-1}| at chunk boundaries / inside chunks; 0: undefined (one-frame chunks)
  double brightness = 0, contrast = 0;  // mean and standard deviation of the pixels as [0, 1] intensities
};
// Mean |x_t − x_{t−1}| at chunk boundaries (every `chunk_frames` frames) over the same inside
// chunks; frames [F, C, H, W]. 0 when there is no boundary or no inside pair.
double seam_ratio(const torch::Tensor& frames, std::int64_t chunk_frames);
// Mean [0, 1] intensity of frames in [-1, 1] (the brightness of video_statistics, without its object tracking).
double mean_intensity(const torch::Tensor& frames);
// Standard deviation of the [0, 1] intensities of frames in [-1, 1] (the contrast of video_statistics, likewise).
double intensity_contrast(const torch::Tensor& frames);
// frames [F, 3, H, W] in [-1, 1]; chunk boundaries every `chunk_frames` frames (<= 1: seam ratio left 0).
VideoStatistics video_statistics(const torch::Tensor& frames, std::int64_t chunk_frames);

// Kernel Inception Distance (Bińkowski et al. 2018) between two sets of features a [n, d] and
// b [m, d]: the unbiased squared MMD under the kernel (x·y/d + 1)^3. About 0 when both come from
// one distribution (it can dip below 0); n, m >= 2. Stable with the few hundred samples an
// evaluation on this machine affords, unlike the Fréchet distance.
double kernel_inception_distance(const torch::Tensor& a, const torch::Tensor& b);
// The same after centring both sets on `reference`'s mean and dividing by its spread (the RMS of
// the per-feature standard deviations; one map for both sets): features of a small network without
// normalisation layers run to tens, where the cubic kernel's values reach 1e9 and the estimate
// drowns in its own variance.
double kernel_inception_distance_standardised(const torch::Tensor& candidate, const torch::Tensor& reference);

}  // namespace streamgen
