#include "streamgen/procedural_video.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "streamgen/error.h"

namespace streamgen {

ProceduralVideoOptions ProceduralVideoOptions::for_frame_size(std::int64_t width, std::int64_t height, EdgeRule edges) {
  ProceduralVideoOptions o;
  o.edges = edges;
  const double scale = static_cast<double>(std::min(width, height)) / 32.0;
  o.width = width;
  o.height = height;
  o.min_radius *= scale;
  o.max_radius *= scale;
  return o;
}

EdgeRule parse_edge_rule(const std::string& name) {
  if (name == "bounce") return EdgeRule::Bounce;
  if (name == "wrap") return EdgeRule::Wrap;
  throw Error(fmt::format("procedural video: edge rule '{}' is not one of: bounce, wrap", name));
}

std::string edge_rule_name(EdgeRule rule) { return rule == EdgeRule::Wrap ? "wrap" : "bounce"; }

double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

namespace {

double uniform(std::mt19937_64& rng, double lo, double hi) { return lo + (hi - lo) * uniform01(rng); }
int pick(std::mt19937_64& rng, std::size_t n) { return static_cast<int>(std::min<double>(uniform01(rng) * static_cast<double>(n), static_cast<double>(n - 1))); }

// Anti-aliased coverage in [0, 1] of a pixel centred at (px, py) from a signed distance (negative
// inside), with a one-pixel ramp.
float coverage(double signed_distance) { return static_cast<float>(std::clamp(0.5 - signed_distance, 0.0, 1.0)); }

double signed_distance(const MovingObject& o, double px, double py) {
  const double dx = px - o.x, dy = py - o.y;
  switch (o.shape) {
    case ShapeKind::Circle:
      return std::hypot(dx, dy) - o.radius;
    case ShapeKind::Square: {
      const double half = o.radius * 0.85;  // similar area to the circle
      return std::max(std::abs(dx), std::abs(dy)) - half;
    }
    case ShapeKind::Triangle: {
      // Upward equilateral triangle around its centroid (image y grows downward): the largest
      // signed distance to its three edge lines, each at the inradius from the centre.
      const double inradius = o.radius * 1.15 / 2, n = std::sqrt(3.0) / 2;
      const double bottom = dy - inradius;
      const double upper_left = -n * dx - 0.5 * dy - inradius;
      const double upper_right = n * dx - 0.5 * dy - inradius;
      return std::max({bottom, upper_left, upper_right});
    }
  }
  return 1e9;
}

}  // namespace

const std::vector<std::string>& ProceduralPalette::colour_names() {
  static const std::vector<std::string> names{"red", "green", "blue", "yellow", "magenta", "cyan"};
  return names;
}
const std::vector<std::array<float, 3>>& ProceduralPalette::colours() {
  static const std::vector<std::array<float, 3>> rgb{{0.95f, 0.15f, 0.15f}, {0.15f, 0.85f, 0.2f}, {0.2f, 0.35f, 1.0f},
                                                     {0.95f, 0.9f, 0.1f},   {0.9f, 0.2f, 0.9f},   {0.1f, 0.9f, 0.95f}};
  return rgb;
}
const std::vector<std::string>& ProceduralPalette::shape_names() {
  static const std::vector<std::string> names{"circle", "square", "triangle"};
  return names;
}
const std::vector<std::string>& ProceduralPalette::direction_names() {
  static const std::vector<std::string> names{"left", "right", "up", "down"};
  return names;
}
std::vector<std::string> ProceduralPalette::vocabulary() {
  // "a" is never in a procedural caption and the tokenizer drops it; it keeps its id for the
  // checkpoints trained with this vocabulary.
  std::vector<std::string> v{"a", "and", "moving"};
  for (const auto* list : {&colour_names(), &shape_names(), &direction_names()}) v.insert(v.end(), list->begin(), list->end());
  return v;
}

int MovingObject::direction() const {
  if (std::abs(vx) >= std::abs(vy)) return vx < 0 ? 0 : 1;
  return vy < 0 ? 2 : 3;
}

ProceduralScene::ProceduralScene(const ProceduralVideoOptions& o, std::mt19937_64& rng) : options_(o) {
  if (o.width < 8 || o.height < 8) throw Error(fmt::format("procedural video: frames of {}x{} are too small (at least 8x8)", o.width, o.height));
  if (o.min_objects < 1 || o.max_objects < o.min_objects) throw Error("procedural video: need 1 <= min_objects <= max_objects");
  for (auto& c : background_) c = static_cast<float>(uniform(rng, 0.0, o.max_background));
  const int count = o.min_objects + pick(rng, static_cast<std::size_t>(o.max_objects - o.min_objects + 1));
  for (int i = 0; i < count; ++i) {
    MovingObject m;
    m.colour = pick(rng, ProceduralPalette::colours().size());
    m.shape = static_cast<ShapeKind>(pick(rng, 3));
    m.radius = uniform(rng, o.min_radius, o.max_radius);
    // A wrapped object may start anywhere, cut by an edge; a bouncing one starts inside. One draw
    // per coordinate either way, so both rules see the same sequence of scenes.
    const double margin = o.edges == EdgeRule::Wrap ? 0.0 : m.radius;
    m.x = uniform(rng, margin, static_cast<double>(o.width) - margin);
    m.y = uniform(rng, margin, static_cast<double>(o.height) - margin);
    const double speed = uniform(rng, o.min_speed, o.max_speed), angle = uniform(rng, 0.0, 2.0 * M_PI);
    m.vx = speed * std::cos(angle);
    m.vy = speed * std::sin(angle);
    objects_.push_back(m);
  }
}

torch::Tensor ProceduralScene::render() const {
  const auto h = options_.height, w = options_.width;
  auto img = torch::empty({3, h, w}, torch::kFloat32);
  auto* p = img.data_ptr<float>();
  const auto plane = h * w;
  // Under the wrap rule an object cut by an edge shows its other part at the opposite edge: draw
  // it once more, shifted by the frame size, on every side it overlaps (the largest shape reaches
  // 1.2 radii from its centre, plus the one-pixel ramp).
  std::vector<MovingObject> drawn;
  for (const auto& o : objects_) {
    std::vector<double> xs{o.x}, ys{o.y};
    if (options_.edges == EdgeRule::Wrap) {
      const double reach = 1.2 * o.radius + 1.0, fw = static_cast<double>(w), fh = static_cast<double>(h);
      if (o.x - reach < 0) xs.push_back(o.x + fw);
      if (o.x + reach > fw) xs.push_back(o.x - fw);
      if (o.y - reach < 0) ys.push_back(o.y + fh);
      if (o.y + reach > fh) ys.push_back(o.y - fh);
    }
    for (double x : xs)
      for (double y : ys) {
        drawn.push_back(o);
        drawn.back().x = x;
        drawn.back().y = y;
      }
  }
  for (std::int64_t y = 0; y < h; ++y) {
    for (std::int64_t x = 0; x < w; ++x) {
      std::array<float, 3> rgb = background_;
      for (const auto& o : drawn) {
        const float a = coverage(signed_distance(o, static_cast<double>(x) + 0.5, static_cast<double>(y) + 0.5));
        if (a <= 0.f) continue;
        const auto& c = ProceduralPalette::colours()[static_cast<std::size_t>(o.colour)];
        for (int ch = 0; ch < 3; ++ch) rgb[ch] = rgb[ch] * (1.f - a) + c[ch] * a;
      }
      for (int ch = 0; ch < 3; ++ch) p[ch * plane + y * w + x] = rgb[ch] * 2.f - 1.f;
    }
  }
  return img;
}

void ProceduralScene::advance() {
  const double w = static_cast<double>(options_.width), h = static_cast<double>(options_.height);
  for (auto& o : objects_) {
    o.x += o.vx;
    o.y += o.vy;
    if (options_.edges == EdgeRule::Wrap) {
      o.x = std::fmod(std::fmod(o.x, w) + w, w);
      o.y = std::fmod(std::fmod(o.y, h) + h, h);
      continue;
    }
    // Elastic bounce: reflect the overshoot back inside and flip the velocity.
    if (o.x < o.radius) o.x = 2 * o.radius - o.x, o.vx = std::abs(o.vx);
    if (o.x > w - o.radius) o.x = 2 * (w - o.radius) - o.x, o.vx = -std::abs(o.vx);
    if (o.y < o.radius) o.y = 2 * o.radius - o.y, o.vy = std::abs(o.vy);
    if (o.y > h - o.radius) o.y = 2 * (h - o.radius) - o.y, o.vy = -std::abs(o.vy);
  }
}

std::string ProceduralScene::caption() const {
  std::string text;
  for (const auto& o : objects_) {
    if (!text.empty()) text += " and ";
    text += ProceduralPalette::colour_names()[static_cast<std::size_t>(o.colour)] + " " +
            ProceduralPalette::shape_names()[static_cast<std::size_t>(o.shape)] + " moving " +
            ProceduralPalette::direction_names()[static_cast<std::size_t>(o.direction())];
  }
  return text;
}

ProceduralClip make_procedural_clip(const ProceduralVideoOptions& options, std::int64_t frames, std::mt19937_64& rng) {
  if (frames < 1) throw Error("procedural video: a clip needs at least one frame");
  ProceduralScene scene(options, rng);
  ProceduralClip clip;
  clip.caption = scene.caption();
  std::vector<torch::Tensor> images;
  for (std::int64_t f = 0; f < frames; ++f) {
    images.push_back(scene.render());
    clip.states.push_back(scene.objects());
    scene.advance();
  }
  clip.frames = torch::stack(images);
  return clip;
}

}  // namespace streamgen
