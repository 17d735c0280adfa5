#include "streamgen/control_image.h"

#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "streamgen/error.h"
#include "streamgen/image_io.h"
#include "streamgen/image_tensor.h"

namespace streamgen {

ControlSource parse_control_source(const std::string& arg, std::int64_t width, std::int64_t height) {
  ControlSource s;
  if (arg == "canny") return s;
  if (arg == "frame") {
    s.preprocessor = ControlPreprocessor::Frame;
    return s;
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(arg, ec))
    throw Error("--control '" + printable(arg) + "': expected canny, frame, or an image file (which does not exist)");
  s.preprocessor = ControlPreprocessor::Fixed;
  auto image = read_image(arg);  // [1, 3, H, W]
  s.fixed_u8 = fit_image(image, width, height, Fit::Crop)[0];
  return s;
}

std::string control_source_name(const ControlSource& source) {
  switch (source.preprocessor) {
    case ControlPreprocessor::Canny: return "canny";
    case ControlPreprocessor::Frame: return "frame";
    case ControlPreprocessor::Fixed: return "fixed image";
  }
  return "?";
}

torch::Tensor canny_edges(const torch::Tensor& rgb_u8, double low, double high) {
  // [3, H, W] uint8 -> [3, H, W] uint8 edges (0 or 255)
  if (rgb_u8.dim() != 3 || rgb_u8.size(0) != 3 || rgb_u8.scalar_type() != torch::kUInt8) throw Error("canny: expected an RGB uint8 [3, H, W] image");
  const auto hwc = rgb_u8.permute({1, 2, 0}).contiguous();
  const int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1));
  const cv::Mat rgb(h, w, CV_8UC3, hwc.data_ptr<std::uint8_t>());
  cv::Mat gray, edges;
  cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
  cv::Canny(gray, edges, low, high);
  auto out = torch::from_blob(edges.data, {h, w}, torch::kUInt8).clone();
  return out.unsqueeze(0).expand({3, h, w}).contiguous();
}

torch::Tensor make_control_images(const ControlSource& source, const torch::Tensor& frames_u8) {
  switch (source.preprocessor) {
    case ControlPreprocessor::Fixed: return source.fixed_u8.unsqueeze(0);
    case ControlPreprocessor::Frame: return frames_u8;
    case ControlPreprocessor::Canny: {
      std::vector<torch::Tensor> edges;
      for (std::int64_t i = 0; i < frames_u8.size(0); ++i) edges.push_back(canny_edges(frames_u8[i], source.canny_low, source.canny_high));
      return torch::stack(edges);
    }
  }
  throw Error("unknown control preprocessor");
}

}  // namespace streamgen
