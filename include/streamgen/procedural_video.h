#pragma once
// Procedural training video for StreamDiT's tiny configuration (docs/streamdit.md §15):
// 1–2 coloured shapes moving at constant velocity with elastic bounces over a dark background,
// with templated captions and the true object state kept for the metrics. Infinite and seeded:
// the same seed gives the same pixels on every machine.
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace streamgen {

enum class ShapeKind { Circle = 0, Square = 1, Triangle = 2 };

struct ProceduralPalette {
  static const std::vector<std::string>& colour_names();  // red, green, blue, yellow, magenta, cyan
  static const std::vector<std::array<float, 3>>& colours();  // RGB in [0, 1]
  static const std::vector<std::string>& shape_names();   // circle, square, triangle
  static const std::vector<std::string>& direction_names();  // left, right, up, down
  // Every word a caption can use: the caption encoder's vocabulary.
  static std::vector<std::string> vocabulary();
};

struct MovingObject {
  int colour = 0;
  ShapeKind shape = ShapeKind::Circle;
  double x = 0, y = 0;    // centre in pixels
  double vx = 0, vy = 0;  // pixels per frame
  double radius = 5;
  // 0 left, 1 right, 2 up, 3 down: the dominant axis of the velocity.
  int direction() const;
};

// What an object does at the frame edge. Bounce reflects it, so a caption's direction ("moving
// left") holds only until the first bounce — about 16 frames at the default speeds. Wrap lets it
// leave on one side and come back on the other, so the caption holds for the whole clip however
// long: the world a streaming model's prompt describes.
enum class EdgeRule { Bounce = 0, Wrap = 1 };
// "bounce" | "wrap"; anything else is an Error that names the value and the choices.
EdgeRule parse_edge_rule(const std::string& name);
std::string edge_rule_name(EdgeRule rule);

struct ProceduralVideoOptions {
  std::int64_t width = 32, height = 32;
  int min_objects = 1, max_objects = 2;
  double min_radius = 4, max_radius = 7;
  double min_speed = 0.5, max_speed = 2.0;  // pixels per frame
  double max_background = 0.15;             // background channels drawn from [0, this]
  EdgeRule edges = EdgeRule::Bounce;
  // The defaults (made for 32x32) at another frame size: radii scale with the smaller side, so
  // a shape covers the same share of the frame; speeds stay in pixels per frame.
  static ProceduralVideoOptions for_frame_size(std::int64_t width, std::int64_t height, EdgeRule edges = EdgeRule::Bounce);
};

// One scene that plays forever: call render() then advance() per frame.
class ProceduralScene {
 public:
  ProceduralScene(const ProceduralVideoOptions& options, std::mt19937_64& rng);
  // [3, H, W] float in [-1, 1]
  torch::Tensor render() const;
  // Moves every object by its velocity, then applies the edge rule.
  void advance();
  // "red circle moving left and blue square moving up" (objects in drawing order).
  std::string caption() const;
  const std::vector<MovingObject>& objects() const { return objects_; }
  const std::array<float, 3>& background() const { return background_; }

 private:
  ProceduralVideoOptions options_;
  std::array<float, 3> background_{};
  std::vector<MovingObject> objects_;
};

struct ProceduralClip {
  torch::Tensor frames;  // [F, 3, H, W] in [-1, 1]
  std::string caption;   // describes the first frame's motion
  std::vector<std::vector<MovingObject>> states;  // per frame
};

ProceduralClip make_procedural_clip(const ProceduralVideoOptions& options, std::int64_t frames, std::mt19937_64& rng);

// A U[0, 1) draw from the engine's raw bits (the same on every standard library, unlike
// std::uniform_real_distribution).
double uniform01(std::mt19937_64& rng);

}  // namespace streamgen
