#include "streamgen/dit_metrics.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <optional>
#include <sstream>

#include "streamgen/error.h"

namespace streamgen {
namespace {

// A pixel belongs to a palette colour when every channel is within this distance (in [0, 1]).
constexpr float kColourTolerance = 0.3f;

// A plausible per-frame move of an object's centroid, in pixels; a larger jump is another
// component taking over as the colour's largest, or an object wrapping round an edge.
constexpr double kMaxMovePerFrame = 8.0;

// The smallest object the procedural scenes draw is a triangle of the minimum radius r, about
// 1.7·r² pixels (27 px on 32×32 frames). Below 1.3·r² a component is too small to show a shape — a
// lone 4×4 patch fills its whole box and would otherwise read as a square.
double min_shape_area(std::int64_t width, std::int64_t height) {
  const double r = ProceduralVideoOptions::for_frame_size(width, height).min_radius;
  return 1.3 * r * r;
}

std::optional<ShapeKind> shape_of_component(std::int64_t area, std::int64_t box_width, std::int64_t box_height, double min_area) {
  if (static_cast<double>(area) < min_area) return std::nullopt;
  // Every drawn shape has a near-square box (the triangle's is 1.15:1); a longer box is a smear or
  // fragments joined in a row, which no caption describes.
  const auto longer = std::max(box_width, box_height), shorter = std::min(box_width, box_height);
  if (static_cast<double>(longer) > 1.4 * static_cast<double>(shorter)) return std::nullopt;
  // Fill ratio of the bounding box: square ~1, disc pi/4 ~0.79, triangle ~0.5.
  const double fill = static_cast<double>(area) / static_cast<double>(box_width * box_height);
  if (fill > 0.9) return ShapeKind::Square;
  if (fill > 0.64) return ShapeKind::Circle;
  if (fill > 0.35) return ShapeKind::Triangle;
  return std::nullopt;
}

// Each palette colour's largest component in `objects` (nullptr where the colour is absent).
std::vector<const DetectedObject*> largest_per_colour(const std::vector<DetectedObject>& objects) {
  std::vector<const DetectedObject*> largest(ProceduralPalette::colours().size(), nullptr);
  for (const auto& o : objects) {
    auto& best = largest[static_cast<std::size_t>(o.colour)];
    if (!best || o.area > best->area) best = &o;
  }
  return largest;
}

int index_of(const std::vector<std::string>& list, const std::string& word) {
  const auto it = std::find(list.begin(), list.end(), word);
  return it == list.end() ? -1 : static_cast<int>(it - list.begin());
}

}  // namespace

std::vector<DetectedObject> detect_objects(const torch::Tensor& frame, std::int64_t min_area) {
  const auto img = ((frame.detach().to(torch::kCPU, torch::kFloat32) + 1) / 2).contiguous();
  const auto h = img.size(1), w = img.size(2), plane = h * w;
  const double shape_area = min_shape_area(w, h);
  const float* p = img.data_ptr<float>();
  const auto& palette = ProceduralPalette::colours();
  std::vector<DetectedObject> found;
  std::vector<std::uint8_t> seen(static_cast<std::size_t>(plane));
  std::vector<std::int64_t> stack;
  for (std::size_t c = 0; c < palette.size(); ++c) {
    auto matches = [&](std::int64_t i) {
      for (int ch = 0; ch < 3; ++ch)
        if (std::abs(p[ch * plane + i] - palette[c][static_cast<std::size_t>(ch)]) > kColourTolerance) return false;
      return true;
    };
    std::fill(seen.begin(), seen.end(), 0);
    for (std::int64_t start = 0; start < plane; ++start) {
      if (seen[static_cast<std::size_t>(start)] || !matches(start)) continue;
      // 4-connected flood fill.
      std::int64_t area = 0, x0 = w, x1 = -1, y0 = h, y1 = -1;
      double sx = 0, sy = 0;
      stack.assign(1, start);
      seen[static_cast<std::size_t>(start)] = 1;
      while (!stack.empty()) {
        const auto i = stack.back();
        stack.pop_back();
        const auto y = i / w, x = i % w;
        ++area;
        sx += static_cast<double>(x) + 0.5;
        sy += static_cast<double>(y) + 0.5;
        x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
        const std::array<std::int64_t, 4> next{y > 0 ? i - w : -1, y + 1 < h ? i + w : -1, x > 0 ? i - 1 : -1, x + 1 < w ? i + 1 : -1};
        for (auto n : next)
          if (n >= 0 && !seen[static_cast<std::size_t>(n)] && matches(n)) {
            seen[static_cast<std::size_t>(n)] = 1;
            stack.push_back(n);
          }
      }
      if (area < min_area) continue;
      found.push_back({static_cast<int>(c), shape_of_component(area, x1 - x0 + 1, y1 - y0 + 1, shape_area), sx / static_cast<double>(area),
                       sy / static_cast<double>(area), area});
    }
  }
  return found;
}

std::vector<CaptionedObject> parse_shape_caption(const std::string& caption) {
  std::vector<CaptionedObject> objects;
  std::stringstream in(caption);
  std::string word;
  CaptionedObject current;
  auto flush = [&] {
    if (current.colour >= 0 || current.shape >= 0) objects.push_back(current);
    current = {};
  };
  while (in >> word) {
    std::transform(word.begin(), word.end(), word.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (word == "and") {
      flush();
    } else if (int c = index_of(ProceduralPalette::colour_names(), word); c >= 0) {
      if (current.colour >= 0) flush();
      current.colour = c;
    } else if (int s = index_of(ProceduralPalette::shape_names(), word); s >= 0) {
      current.shape = s;
    } else if (int d = index_of(ProceduralPalette::direction_names(), word); d >= 0) {
      current.direction = d;
    }
  }
  flush();
  return objects;
}

std::string swap_caption_attribute(const std::string& caption, CaptionAttribute what, int* changed) {
  const auto& words = what == CaptionAttribute::Colour  ? ProceduralPalette::colour_names()
                      : what == CaptionAttribute::Shape ? ProceduralPalette::shape_names()
                                                        : ProceduralPalette::direction_names();
  std::stringstream in(caption);
  std::string word, out;
  int n = 0;
  while (in >> word) {
    std::string lower = word;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (const int i = index_of(words, lower); i >= 0) {
      // Directions come in opposite pairs (left/right, up/down): the opposite is the clearest lie.
      const auto other = what == CaptionAttribute::Direction ? (i ^ 1) : (i + 1) % static_cast<int>(words.size());
      word = words[static_cast<std::size_t>(other)];
      ++n;
    }
    out += (out.empty() ? "" : " ") + word;
  }
  if (changed) *changed = n;
  return out;
}

CaptionScore score_caption(const torch::Tensor& frames, const std::string& caption, std::int64_t direction_frames) {
  const auto wanted = parse_shape_caption(caption);
  CaptionScore score;
  if (wanted.empty()) return score;
  const auto f = frames.size(0);
  std::vector<std::vector<DetectedObject>> per_frame;
  for (std::int64_t i = 0; i < f; ++i) per_frame.push_back(detect_objects(frames[i]));
  std::vector<std::vector<const DetectedObject*>> largest;  // [frame][colour], into per_frame
  for (const auto& objects : per_frame) largest.push_back(largest_per_colour(objects));
  double colour_ok = 0, shape_ok = 0, direction_ok = 0, shapes_asked = 0, directions_asked = 0;
  for (const auto& want : wanted) {
    // The largest component of the wanted colour in each frame stands for the object.
    std::vector<const DetectedObject*> track;
    std::int64_t present = 0;
    std::map<int, int> shape_votes;
    for (const auto& by_colour : largest) {
      // A caption object without a colour word has nothing to track: it is never present.
      const auto* best = want.colour >= 0 ? by_colour[static_cast<std::size_t>(want.colour)] : nullptr;
      track.push_back(best);
      if (best) {
        ++present;
        // A component too small or too irregular to have a shape votes for none.
        ++shape_votes[best->shape ? static_cast<int>(*best->shape) : -1];
      }
    }
    const bool colour_present = 2 * present >= f;
    colour_ok += colour_present;
    if (want.shape >= 0) {
      ++shapes_asked;
      int majority = -1, votes = 0;
      for (const auto& [shape, n] : shape_votes)
        if (n > votes) majority = shape, votes = n;  // -1 (no shape) can win, and then it is wrong
      shape_ok += colour_present && majority == want.shape;
    }
    if (want.direction >= 0) {
      ++directions_asked;
      // The sum of the plausible frame-to-frame moves, not last minus first: the two ends can be
      // different components, or one object on both sides of a wrap.
      double dx = 0, dy = 0;
      bool moved = false;
      for (std::int64_t i = 1; i < std::min<std::int64_t>(f, direction_frames); ++i) {
        const auto* a = track[static_cast<std::size_t>(i - 1)];
        const auto* b = track[static_cast<std::size_t>(i)];
        if (!a || !b || std::hypot(b->x - a->x, b->y - a->y) >= kMaxMovePerFrame) continue;
        dx += b->x - a->x, dy += b->y - a->y;
        moved = true;
      }
      if (moved && (dx != 0 || dy != 0)) {
        const MovingObject motion{0, ShapeKind::Circle, 0, 0, dx, dy, 1};
        direction_ok += motion.direction() == want.direction;
      }
    }
  }
  const double n = static_cast<double>(wanted.size());
  score.colour = colour_ok / n;
  score.shape = shapes_asked > 0 ? shape_ok / shapes_asked : 1.0;
  score.direction = directions_asked > 0 ? direction_ok / directions_asked : 1.0;
  return score;
}

double seam_ratio(const torch::Tensor& frames, std::int64_t chunk_frames) {
  const auto x = frames.detach().to(torch::kCPU, torch::kFloat32);
  const auto f = x.size(0);
  if (f < 2 || chunk_frames <= 1) return 0;
  const auto diffs = (x.narrow(0, 1, f - 1) - x.narrow(0, 0, f - 1)).abs().flatten(1).mean(1);  // diffs[i] = |x_{i+1} - x_i|
  double at_seams = 0, inside = 0;
  std::int64_t n_seams = 0, n_inside = 0;
  for (std::int64_t i = 0; i + 1 < f; ++i) {
    const double d = diffs[i].item<double>();
    if ((i + 1) % chunk_frames == 0) at_seams += d, ++n_seams;
    else inside += d, ++n_inside;
  }
  if (n_seams == 0 || n_inside == 0 || inside <= 0) return 0;
  return (at_seams / static_cast<double>(n_seams)) / (inside / static_cast<double>(n_inside));
}

double mean_intensity(const torch::Tensor& frames) { return ((frames.detach().to(torch::kFloat32) + 1) * 0.5).mean().item<double>(); }

double intensity_contrast(const torch::Tensor& frames) { return ((frames.detach().to(torch::kFloat32) + 1) * 0.5).std().item<double>(); }

VideoStatistics video_statistics(const torch::Tensor& frames, std::int64_t chunk_frames) {
  VideoStatistics s;
  const auto x = frames.detach().to(torch::kCPU, torch::kFloat32);
  const auto f = x.size(0);
  // On [0, 1] intensities, not the [-1, 1] network range: a ratio of two negative means would
  // read a frame that grew brighter as one that sank.
  s.brightness = mean_intensity(x);
  s.contrast = intensity_contrast(x);
  if (f < 2) return s;
  s.seam_ratio = seam_ratio(x, chunk_frames);
  // Dynamic degree: centroid displacement of each colour's largest object between frames.
  double moved = 0;
  std::int64_t moves = 0;
  auto previous_objects = detect_objects(x[0]);
  for (std::int64_t i = 1; i < f; ++i) {
    auto current_objects = detect_objects(x[i]);
    const auto previous = largest_per_colour(previous_objects), current = largest_per_colour(current_objects);
    for (std::size_t c = 0; c < current.size(); ++c) {
      if (!current[c] || !previous[c]) continue;
      const double d = std::hypot(current[c]->x - previous[c]->x, current[c]->y - previous[c]->y);
      if (d < kMaxMovePerFrame) {
        moved += d;
        ++moves;
      }
    }
    previous_objects = std::move(current_objects);
  }
  s.dynamic_degree = moves > 0 ? moved / static_cast<double>(moves) : 0.0;
  return s;
}

double kernel_inception_distance(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.dim() != 2 || b.dim() != 2 || a.size(1) != b.size(1) || a.size(0) < 2 || b.size(0) < 2)
    throw Error(fmt::format("kernel inception distance: needs two feature sets [n >= 2, d] of one width, got [{}] and [{}]", fmt::join(a.sizes(), ", "), fmt::join(b.sizes(), ", ")));
  const auto x = a.detach().to(torch::kCPU, torch::kFloat64), y = b.detach().to(torch::kCPU, torch::kFloat64);
  const double d = static_cast<double>(x.size(1)), n = static_cast<double>(x.size(0)), m = static_cast<double>(y.size(0));
  auto kernel = [d](const torch::Tensor& p, const torch::Tensor& q) { return (p.matmul(q.t()) / d + 1).pow(3); };
  // Off-diagonal means: the diagonal k(x_i, x_i) would bias the estimate.
  const auto kxx = kernel(x, x), kyy = kernel(y, y);
  const double xx = (kxx.sum() - kxx.diagonal().sum()).item<double>() / (n * (n - 1));
  const double yy = (kyy.sum() - kyy.diagonal().sum()).item<double>() / (m * (m - 1));
  const double xy = kernel(x, y).mean().item<double>();
  return xx + yy - 2 * xy;
}

double kernel_inception_distance_standardised(const torch::Tensor& candidate, const torch::Tensor& reference) {
  if (reference.dim() != 2 || reference.size(0) < 2)
    throw Error(fmt::format("kernel inception distance: the reference needs [n >= 2, d] features, got [{}]", fmt::join(reference.sizes(), ", ")));
  const auto r = reference.detach().to(torch::kCPU, torch::kFloat64);
  // One spread for every feature (the RMS of their standard deviations): per-feature scaling would
  // blow up a unit that is nearly constant on the reference into the whole distance.
  const auto mean = r.mean(0);
  const auto spread = r.var(0).mean().sqrt().clamp_min(1e-6);
  return kernel_inception_distance((candidate.detach().to(torch::kCPU, torch::kFloat64) - mean) / spread, (r - mean) / spread);
}

}  // namespace streamgen
