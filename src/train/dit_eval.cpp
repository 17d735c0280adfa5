#include "streamgen/dit_eval.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <random>

#include "streamgen/caption_classifier_trainer.h"
#include "streamgen/device.h"
#include "streamgen/dit_trainer.h"
#include "streamgen/error.h"

namespace streamgen {
namespace {

// Accumulates one stream's frames into the report.
struct Accumulator {
  const StreamEvalOptions& o;
  std::int64_t chunk_frames;
  double colour = 0, shape = 0, direction = 0, seam = 0, dynamic = 0, every_window = 0;
  std::vector<StreamDrift> drifts{};  // one per stream added
  std::int64_t seams = 0;
  ClassifierCaptionScores classified{};  // sums over streams, with a classifier
  std::vector<torch::Tensor> features{};

  // A window's caption score as "every window" counts it: the direction only where it holds.
  double window_score(const CaptionScore& s) const {
    return o.edges == EdgeRule::Wrap ? (s.colour + s.shape + s.direction) / 3 : (s.colour + s.shape) / 2;
  }

  // The classifier's reading of every whole window of `frames`; fills the drift's classifier fields.
  void classify(const torch::Tensor& frames, const std::string& caption, std::int64_t ref_frames, StreamDrift& drift) {
    const auto w = o.window, f = frames.size(0);
    torch::Tensor window_features;
    auto classifier = o.classifier;  // a holder: shares the module
    const auto probabilities = classify_windows(classifier, frames, &window_features);
    features.push_back(window_features);
    std::vector<double> scores;
    for (std::int64_t i = 0; i < probabilities.size(0); ++i) {
      const auto score = score_caption_probabilities(probabilities[i], caption);
      if (i == 0) classified.colour += score.colour, classified.shape += score.shape, classified.direction += score.direction;
      scores.push_back(window_score(score));
    }
    double all = 0;
    for (double v : scores) all += v;
    classified.every_window += all / static_cast<double>(scores.size());
    // Mean score of the windows that lie wholly in [begin, begin + length).
    auto span_mean = [&](std::int64_t begin, std::int64_t length) {
      double sum = 0;
      std::int64_t n = 0;
      for (std::int64_t i = 0; i < static_cast<std::int64_t>(scores.size()); ++i)
        if (i * w >= begin && (i + 1) * w <= begin + length) sum += scores[static_cast<std::size_t>(i)], ++n;
      return n > 0 ? sum / static_cast<double>(n) : 0.0;
    };
    const double ref = span_mean(0, ref_frames), last = span_mean(f - ref_frames, ref_frames);
    drift.classifier_caption = ref > 0 ? last / ref : 1.0;
    const auto span = o.drift_reference_frames;
    if (span >= w && f >= 2 * span)
      for (std::int64_t start = 0; start + span <= f; start += span) drift.span_classifier_caption.push_back(span_mean(start, span));
  }

  void add(const torch::Tensor& frames, const std::string& caption) {
    const auto f = frames.size(0), w = std::min(o.window, f);
    const auto first = score_caption(frames.narrow(0, 0, w), caption);
    colour += first.colour;
    shape += first.shape;
    direction += first.direction;
    double windows_score = 0;
    std::int64_t windows = 0;
    for (std::int64_t start = 0; start + w <= f; start += w, ++windows) {
      const auto score = start == 0 ? first : score_caption(frames.narrow(0, start, w), caption);
      windows_score += window_score(score);
    }
    every_window += windows_score / static_cast<double>(std::max<std::int64_t>(1, windows));
    const auto stats = video_statistics(frames, chunk_frames);
    if (stats.seam_ratio > 0) seam += stats.seam_ratio, ++seams;
    dynamic += stats.dynamic_degree;
    // Drift: the last span against the span at the start (colour + shape only: the
    // direction in a caption describes the start of the motion, bounces change it later).
    const auto ref_frames = std::max(w, std::min(o.drift_reference_frames, f / 2));
    // The same span at both ends: a last scoring window of 16 frames against 500 read one object
    // passing the frame edge as drift.
    const auto ref = frames.narrow(0, 0, ref_frames), last = frames.narrow(0, f - ref_frames, ref_frames);
    const auto ref_stats = video_statistics(ref, 0), last_stats = video_statistics(last, 0);
    auto ratio = [](double a, double b) { return std::abs(b) > 1e-9 ? a / b : 1.0; };
    const auto ref_cap = score_caption(ref, caption), last_cap = score_caption(last, caption);
    StreamDrift drift{caption, ratio(last_stats.brightness, ref_stats.brightness), ratio(last_stats.contrast, ref_stats.contrast),
                      ratio((last_cap.colour + last_cap.shape) / 2, (ref_cap.colour + ref_cap.shape) / 2)};
    const auto span = o.drift_reference_frames;
    if (span > 0 && f >= 2 * span)
      for (std::int64_t start = 0; start + span <= f; start += span) {
        // Not video_statistics: it would track objects through every frame of the stream a second time.
        const auto frames_of_span = frames.narrow(0, start, span);
        drift.span_brightness.push_back(mean_intensity(frames_of_span));
        drift.span_contrast.push_back(intensity_contrast(frames_of_span));
      }
    auto furthest = [&](const std::vector<double>& spans) {
      double out = 1;
      for (double v : spans)
        if (std::abs(ratio(v, spans.front()) - 1) > std::abs(out - 1)) out = ratio(v, spans.front());
      return out;
    };
    drift.furthest_span_brightness = furthest(drift.span_brightness);
    drift.furthest_span_contrast = furthest(drift.span_contrast);
    if (o.classifier) {
      classify(frames, caption, ref_frames, drift);
      drift.furthest_span_classifier_caption = furthest(drift.span_classifier_caption);
    }
    drifts.push_back(std::move(drift));
  }

  StreamQuality report(std::int64_t frames) const {
    StreamQuality q;
    const auto n = static_cast<std::int64_t>(drifts.size());
    const double d = static_cast<double>(std::max<std::int64_t>(1, n));
    q.colour_accuracy = colour / d;
    q.shape_accuracy = shape / d;
    q.direction_accuracy = direction / d;
    q.caption_accuracy = (q.colour_accuracy + q.shape_accuracy + q.direction_accuracy) / 3;
    q.every_window_caption_accuracy = every_window / d;
    q.seam_ratio = seams > 0 ? seam / static_cast<double>(seams) : 0;
    q.dynamic_degree = dynamic / d;
    if (!drifts.empty()) q.drift_brightness = q.drift_contrast = q.drift_caption = 0;
    for (const auto& s : drifts) {
      q.drift_brightness += s.brightness / d;
      q.drift_contrast += s.contrast / d;
      q.drift_caption += s.caption_score / d;
    }
    q.per_stream = drifts;
    if (o.classifier) {
      ClassifierCaptionScores c;
      c.colour = classified.colour / d, c.shape = classified.shape / d, c.direction = classified.direction / d;
      c.caption_accuracy = (c.colour + c.shape + c.direction) / 3;
      c.every_window = classified.every_window / d;
      q.classifier = c;
      if (!features.empty()) q.classifier_features = torch::cat(features);
    }
    q.streams = n;
    q.frames_per_stream = frames;
    return q;
  }
};

// A classifier reads windows of its own length and frame size; anything else is the caller's mistake.
void check_classifier(const StreamEvalOptions& o, std::int64_t width, std::int64_t height) {
  if (!o.classifier) return;
  const auto& c = o.classifier->config;
  if (c.frames != o.window || c.width != width || c.height != height)
    throw Error(fmt::format("dit eval: the caption classifier reads windows of {} frames of {}x{}, but the streams are {}x{} scored in windows of {}",
                            c.frames, c.width, c.height, width, height, o.window));
  if (c.edges != edge_rule_name(o.edges))
    spdlog::warn("dit eval: the caption classifier was trained on the {} world, the streams are of the {} world", c.edges, edge_rule_name(o.edges));
}

}  // namespace

StreamQuality evaluate_generated_streams(const std::function<StreamDiTSampler(std::uint64_t)>& make_sampler, std::int64_t width,
                                         std::int64_t height, const StreamEvalOptions& o, DiTVideoCodec* codec) {
  check_classifier(o, width, height);
  const ScopedBlasThreads blas_threads(1);
  std::int64_t chunk = 1;
  Accumulator acc{o, 0};
  std::int64_t nfe = 0, counted = 0;
  for (std::int64_t i = 0; i < o.streams; ++i) {
    auto caption_of = [&](std::uint64_t salt) {
      std::mt19937_64 rng(step_seed(o.seed, static_cast<std::uint64_t>(i), salt));
      return ProceduralScene(ProceduralVideoOptions::for_frame_size(width, height, o.edges), rng).caption();
    };
    const auto caption = caption_of(77);
    auto sampler = make_sampler(step_seed(o.seed, static_cast<std::uint64_t>(i), 78));
    chunk = sampler.partition().chunk_frames * (codec ? codec->frames_per_latent() : 1);
    if (codec) codec->reset();
    auto rgb = [&](const torch::Tensor& x) { return codec ? codec->decode(x) : x; };
    acc.chunk_frames = chunk;
    std::vector<torch::Tensor> frames;
    if (o.change_at > 0) {
      // Another scene's caption first; its frames are decoded (the codec carries context), not scored.
      std::string before;
      for (std::uint64_t draw = 0; before.empty() || before == caption; ++draw) before = caption_of(79 + draw);
      sampler.set_prompt(before);
      const auto refs = sampler.start();
      std::int64_t streamed = refs.defined() ? rgb(refs).size(0) : 0;
      while (streamed < o.change_at) streamed += rgb(sampler.step()).size(0);
      sampler.set_prompt(caption);
      for (std::int64_t k = 0; k < sampler.partition().chunks; ++k) rgb(sampler.step());
    } else {
      sampler.set_prompt(caption);
      const auto refs = sampler.start();
      if (refs.defined()) frames.push_back(rgb(refs));
    }
    const auto nfe_before = sampler.nfe();  // the loop's passes are counted from here
    std::int64_t have = frames.empty() ? 0 : frames.front().size(0);
    while (have < o.frames) {
      frames.push_back(rgb(sampler.step()));
      have += frames.back().size(0);
      if (o.on_frames) o.on_frames(i * o.frames + std::min(have, o.frames), o.streams * o.frames);
    }
    nfe += sampler.nfe() - nfe_before;
    counted += have;
    acc.add(torch::cat(frames).narrow(0, 0, o.frames).clamp(-1, 1), caption);
  }
  auto q = acc.report(o.frames);
  q.nfe_per_frame = static_cast<double>(nfe) / static_cast<double>(std::max<std::int64_t>(1, counted));
  return q;
}

StreamQuality evaluate_real_streams(std::int64_t width, std::int64_t height, std::int64_t chunk_frames, const StreamEvalOptions& o,
                                    DiTVideoCodec* codec) {
  if (codec && codec->latent() && (chunk_frames % codec->frames_per_latent() != 0 || o.frames % chunk_frames != 0))
    throw Error(fmt::format("real video through the autoencoder: {} frames do not split into chunks of {} frames of {} per latent frame",
                            o.frames, chunk_frames, codec->frames_per_latent()));
  check_classifier(o, width, height);
  Accumulator acc{o, chunk_frames};
  torch::NoGradGuard no_grad;
  for (std::int64_t i = 0; i < o.streams; ++i) {
    std::mt19937_64 rng(step_seed(o.seed, static_cast<std::uint64_t>(i), 77));
    ProceduralScene scene(ProceduralVideoOptions::for_frame_size(width, height, o.edges), rng);
    const auto caption = scene.caption();
    std::vector<torch::Tensor> frames;
    for (std::int64_t f = 0; f < o.frames; ++f) {
      frames.push_back(scene.render());
      scene.advance();
    }
    auto video = torch::stack(frames);
    if (codec && codec->latent()) {
      codec->reset();
      std::vector<torch::Tensor> decoded;
      for (std::int64_t f = 0; f < o.frames; f += chunk_frames) decoded.push_back(codec->decode(codec->encode(video.narrow(0, f, chunk_frames))));
      video = torch::cat(decoded).clamp(-1, 1);
    }
    acc.add(video, caption);
  }
  return acc.report(o.frames);
}

}  // namespace streamgen
