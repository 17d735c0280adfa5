#pragma once
// Buffered flow matching (StreamDiT, docs/streamdit.md §1–§7): the partition of a
// B-frame buffer into K reference frames and N chunks of c frames, the per-frame flow time τ for
// training and for each micro step of the streaming sampler, and the interpolant / target.
//
// Flow time convention: τ = 0 is pure noise, τ = 1 is data (the opposite of the DDPM timestep used
// by the StreamDiffusion engine). Slot 0 is the oldest and cleanest frame.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace streamgen {

// σmin of Movie Gen's interpolant; StreamDiT does not state its own (spec §1, Decision).
inline constexpr double kFlowSigmaMin = 1e-5;

struct BufferPartition {
  std::int64_t reference_frames = 0;  // K: clean frames at the old end, input only
  std::int64_t chunks = 1;            // N: noise segments
  std::int64_t chunk_frames = 1;      // c: frames per chunk (share τ, leave together)
  std::int64_t micro_steps = 1;       // s: Euler steps per buffer position

  std::int64_t buffer_frames() const { return reference_frames + chunks * chunk_frames; }  // B = K + N·c
  std::int64_t total_steps() const { return micro_steps * chunks; }                         // T = s·N
  // Throws streamgen::Error naming the bad field (all values must be >= 1, K >= 0).
  void validate() const;
  // The partition with c frames per chunk over B frames (K reference frames); throws when
  // B − K is not a multiple of c.
  static BufferPartition for_chunk_size(std::int64_t buffer_frames, std::int64_t chunk_frames,
                                        std::int64_t reference_frames = 0, std::int64_t micro_steps = 1);
  std::string describe() const;  // "K=0 N=8 c=2 s=4 (B=16, T=32)"
};

// Chunk index of slot b (−1 for reference slots).
std::int64_t chunk_of_slot(const BufferPartition& p, std::int64_t slot);

// Time shift (Decision, beyond the paper; SD3's resolution shift in our τ convention): the
// partition works on a linear schedule position u ∈ [0, 1] and the model sees τ = u / (a − (a−1)·u).
// a > 1 spends more of the schedule, in training and in the stream alike, at high noise, where the
// layout of a frame is decided. That matters when a token carries many redundant values (a 4×4×3
// pixel patch): its own noisy values reveal it early, and a model trained on the linear schedule
// decides each token on its own (scattered fragments). a = 1 is the paper's linear schedule.
double shifted_time(double u, double shift);
// The same per element, and its inverse u = a·τ / (1 + (a−1)·τ).
torch::Tensor shifted_time(const torch::Tensor& u, double shift);
torch::Tensor unshifted_time(const torch::Tensor& tau, double shift);

// Training noise levels (spec §4): for each chunk k, u ~ U[(N−1−k)/N, (N−k)/N], τ = shifted_time(u);
// reference slots get 1. `uniform01` holds one U[0,1) draw per chunk. Returns B values.
std::vector<double> training_levels(const BufferPartition& p, const std::vector<double>& uniform01, double shift = 1.0);

// Sampler levels before micro step j ∈ [0, s] (spec §6): u_b = (N−1−k)/N + j/T, τ_b = shifted_time(u_b),
// references 1. j = s gives the levels the micro steps end at, so step j moves frame b by
// stream_levels(j+1)[b] − stream_levels(j)[b] (1/T for every frame when shift = 1).
std::vector<double> stream_levels(const BufferPartition& p, std::int64_t micro_step, double shift = 1.0);

// X_τ = τ·X1 + (1 − (1 − σmin)·τ)·X0 with τ broadcast per frame. x1, x0: [batch, F, ...];
// tau: [batch, F].
torch::Tensor flow_interpolate(const torch::Tensor& x1, const torch::Tensor& x0, const torch::Tensor& tau,
                               double sigma_min = kFlowSigmaMin);
// V = X1 − (1 − σmin)·X0.
torch::Tensor flow_velocity(const torch::Tensor& x1, const torch::Tensor& x0, double sigma_min = kFlowSigmaMin);

// Mixed training over chunk sizes (spec §5): P(c = B) = `full_share`, the rest split evenly over
// the other sizes. Sizes must divide B − K.
struct ChunkMix {
  std::vector<std::int64_t> chunk_sizes;  // e.g. {1, 2, 4, 8, 16}
  double full_share = 0.3;                // probability of c = B − K (plain T2V)
  // Every power of two up to B − K.
  static ChunkMix powers_of_two(std::int64_t frames, double full_share = 0.3);
  // "1,2,4,8,16" -> sizes; throws when empty or a size does not divide `frames`.
  static ChunkMix parse(const std::string& text, std::int64_t frames, double full_share = 0.3);
  void validate(std::int64_t frames) const;
  std::vector<double> probabilities(std::int64_t frames) const;
  // Picks a size from a U[0,1) draw.
  std::int64_t pick(double uniform01, std::int64_t frames) const;
};

}  // namespace streamgen
