#include "streamgen/flow_matching.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "streamgen/error.h"

namespace streamgen {

void BufferPartition::validate() const {
  auto need = [](std::int64_t v, std::int64_t min, const char* what) {
    if (v < min) throw Error(fmt::format("buffer partition: {} must be >= {}, got {}", what, min, v));
  };
  need(reference_frames, 0, "reference frames K");
  need(chunks, 1, "chunk count N");
  need(chunk_frames, 1, "chunk size c");
  need(micro_steps, 1, "micro steps s");
}

BufferPartition BufferPartition::for_chunk_size(std::int64_t buffer_frames, std::int64_t chunk_frames,
                                                std::int64_t reference_frames, std::int64_t micro_steps) {
  if (chunk_frames < 1) throw Error(fmt::format("buffer partition: chunk size c must be >= 1, got {}", chunk_frames));
  const auto denoised = buffer_frames - reference_frames;
  if (denoised < 1 || denoised % chunk_frames != 0)
    throw Error(fmt::format("buffer partition: B = K + N·c has no whole N for B = {}, K = {}, c = {} ({} frames to split into chunks of {})",
                            buffer_frames, reference_frames, chunk_frames, denoised, chunk_frames));
  BufferPartition p{reference_frames, denoised / chunk_frames, chunk_frames, micro_steps};
  p.validate();
  return p;
}

std::string BufferPartition::describe() const {
  return fmt::format("K={} N={} c={} s={} (B={}, T={})", reference_frames, chunks, chunk_frames, micro_steps, buffer_frames(),
                     total_steps());
}

std::int64_t chunk_of_slot(const BufferPartition& p, std::int64_t slot) {
  if (slot < 0 || slot >= p.buffer_frames()) throw Error(fmt::format("slot {} outside a buffer of {} frames", slot, p.buffer_frames()));
  return slot < p.reference_frames ? -1 : (slot - p.reference_frames) / p.chunk_frames;
}

namespace {
template <class T>
T shift_time(const T& u, double shift) {
  if (!(shift > 0)) throw Error(fmt::format("time shift must be > 0, got {}", shift));
  if (shift == 1.0) return u;
  return u / (shift - (shift - 1.0) * u);
}
}  // namespace

double shifted_time(double u, double shift) { return shift_time(u, shift); }

torch::Tensor shifted_time(const torch::Tensor& u, double shift) { return shift_time(u, shift); }

torch::Tensor unshifted_time(const torch::Tensor& tau, double shift) {
  // The same map with 1/a: τ / (1/a − (1/a − 1)·τ) = a·τ / (1 + (a − 1)·τ).
  if (!(shift > 0)) throw Error(fmt::format("time shift must be > 0, got {}", shift));
  return shift_time(tau, 1.0 / shift);
}

std::vector<double> training_levels(const BufferPartition& p, const std::vector<double>& uniform01, double shift) {
  p.validate();
  if (static_cast<std::int64_t>(uniform01.size()) != p.chunks)
    throw Error(fmt::format("training_levels: {} uniform draws for {} chunks", uniform01.size(), p.chunks));
  const double n = static_cast<double>(p.chunks);
  std::vector<double> tau(p.buffer_frames(), 1.0);
  for (std::int64_t k = 0; k < p.chunks; ++k) {
    const double lo = static_cast<double>(p.chunks - 1 - k) / n;
    const double u = lo + uniform01[k] / n;
    std::fill_n(tau.begin() + p.reference_frames + k * p.chunk_frames, p.chunk_frames, shifted_time(u, shift));
  }
  return tau;
}

std::vector<double> stream_levels(const BufferPartition& p, std::int64_t micro_step, double shift) {
  p.validate();
  if (micro_step < 0 || micro_step > p.micro_steps)
    throw Error(fmt::format("stream_levels: micro step {} outside 0..{}", micro_step, p.micro_steps));
  const double n = static_cast<double>(p.chunks), t = static_cast<double>(p.total_steps());
  std::vector<double> tau(p.buffer_frames(), 1.0);
  for (std::int64_t k = 0; k < p.chunks; ++k)
    std::fill_n(tau.begin() + p.reference_frames + k * p.chunk_frames, p.chunk_frames,
                shifted_time(static_cast<double>(p.chunks - 1 - k) / n + static_cast<double>(micro_step) / t, shift));
  return tau;
}

namespace {
// [batch, F] -> [batch, F, 1, ...] to broadcast over a frame's values.
torch::Tensor per_frame(const torch::Tensor& tau, const torch::Tensor& like) {
  if (tau.dim() != 2 || tau.size(0) != like.size(0) || tau.size(1) != like.size(1))
    throw Error(fmt::format("flow matching: tau must be [batch, frames] = [{}, {}], got {}", like.size(0), like.size(1),
                            fmt::join(tau.sizes(), "x")));
  std::vector<std::int64_t> shape(like.dim(), 1);
  shape[0] = tau.size(0);
  shape[1] = tau.size(1);
  return tau.to(like.scalar_type()).view(shape);
}
}  // namespace

torch::Tensor flow_interpolate(const torch::Tensor& x1, const torch::Tensor& x0, const torch::Tensor& tau, double sigma_min) {
  const auto t = per_frame(tau, x1);
  return t * x1 + (1.0 - (1.0 - sigma_min) * t) * x0;
}

torch::Tensor flow_velocity(const torch::Tensor& x1, const torch::Tensor& x0, double sigma_min) {
  return x1 - (1.0 - sigma_min) * x0;
}

ChunkMix ChunkMix::powers_of_two(std::int64_t frames, double full_share) {
  ChunkMix mix;
  mix.full_share = full_share;
  for (std::int64_t c = 1; c <= frames; c *= 2)
    if (frames % c == 0) mix.chunk_sizes.push_back(c);
  if (mix.chunk_sizes.back() != frames) mix.chunk_sizes.push_back(frames);
  return mix;
}

ChunkMix ChunkMix::parse(const std::string& text, std::int64_t frames, double full_share) {
  ChunkMix mix;
  mix.full_share = full_share;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      std::size_t used = 0;
      const auto c = std::stoll(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      mix.chunk_sizes.push_back(c);
    } catch (const std::exception&) {
      throw Error(fmt::format("chunk sizes '{}': '{}' is not a whole number", text, item));
    }
  }
  mix.validate(frames);
  return mix;
}

void ChunkMix::validate(std::int64_t frames) const {
  if (chunk_sizes.empty()) throw Error("chunk mix: no chunk sizes given");
  for (auto c : chunk_sizes)
    if (c < 1 || frames % c != 0) throw Error(fmt::format("chunk mix: chunk size {} does not divide the {} denoised buffer frames", c, frames));
  if (!(full_share >= 0.0 && full_share <= 1.0)) throw Error(fmt::format("chunk mix: the c = B share must lie in [0, 1], got {}", full_share));
}

std::vector<double> ChunkMix::probabilities(std::int64_t frames) const {
  validate(frames);
  const bool has_full = std::find(chunk_sizes.begin(), chunk_sizes.end(), frames) != chunk_sizes.end();
  const auto others = static_cast<double>(chunk_sizes.size() - (has_full ? 1 : 0));
  std::vector<double> p;
  for (auto c : chunk_sizes) {
    if (!has_full || others == 0) p.push_back(1.0 / static_cast<double>(chunk_sizes.size()));
    else p.push_back(c == frames ? full_share : (1.0 - full_share) / others);
  }
  return p;
}

std::int64_t ChunkMix::pick(double uniform01, std::int64_t frames) const {
  const auto p = probabilities(frames);
  double acc = 0.0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    acc += p[i];
    if (uniform01 < acc) return chunk_sizes[i];
  }
  return chunk_sizes.back();
}

}  // namespace streamgen
