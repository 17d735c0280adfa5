#pragma once
// The conditioning images ControlNets read, made from each input frame (or fixed): Canny edges (OpenCV's,
// as the ControlNet annotators compute them) or the frame itself (tile / identity ControlNets). Images are
// RGB uint8 [3, H, W]; what the networks take is float [0, 1] (control_image_to_unit in controlnet.h).
#include <torch/types.h>

#include <filesystem>
#include <string>

namespace streamgen {

enum class ControlPreprocessor { Canny, Frame, Fixed };

struct ControlSource {
  ControlPreprocessor preprocessor = ControlPreprocessor::Canny;
  double canny_low = 100, canny_high = 200;  // hysteresis thresholds (the ControlNet annotator's defaults)
  torch::Tensor fixed_u8;                      // Fixed: [3, H, W], fitted to the stream's size
};

// "canny", "frame", or an image file (a fixed control image, fitted to width x height). Throws
// streamgen::Error naming the argument.
ControlSource parse_control_source(const std::string& arg, std::int64_t width, std::int64_t height);
std::string control_source_name(const ControlSource& source);

// White edges on black, as three equal channels: [3, H, W] uint8 -> [3, H, W] uint8.
torch::Tensor canny_edges(const torch::Tensor& rgb_u8, double low = 100, double high = 200);

// The control images of a batch of frames [F, 3, H, W] (Fixed: the fixed image, [1, 3, H, W]).
torch::Tensor make_control_images(const ControlSource& source, const torch::Tensor& frames_u8);

}  // namespace streamgen
