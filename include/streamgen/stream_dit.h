#pragma once
// StreamDiT's streaming sampler (../shared/docs/streamdit.md §6–§9): a B-frame buffer partitioned
// into K reference frames and N chunks of c frames at staggered flow times, advanced by s Euler
// micro steps of 1/T per emitted chunk; the clean oldest chunk leaves, the buffer shifts by c and
// fresh noise enters. Started by a uniform-noise T2V pass whose cached latents fill the chunks at
// their levels. The prompt can change between any two micro steps (set_prompt from any thread).
#include <torch/types.h>

#include <ATen/core/Generator.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "streamgen/dit.h"
#include "streamgen/flow_matching.h"

namespace streamgen {

struct StreamDiTOptions {
  std::int64_t chunk_frames = 2;      // c
  std::int64_t micro_steps = 4;       // s
  std::int64_t reference_frames = 0;  // K
  double guidance = 1.0;              // CFG scale w; 1 runs the conditional pass only
  std::int64_t init_steps = 0;        // T2V initialisation steps (0: T = s·N); N must divide it
  std::uint64_t seed = 0;             // the buffer's noise generator
  std::int64_t frame_height = 0, frame_width = 0;  // 0: the model's sample size
};

class StreamDiTSampler {
 public:
  StreamDiTSampler(StreamDiT model, const StreamDiTOptions& options);

  // Encodes the caption (unknown words are logged once) and publishes it; the next micro step
  // uses it. Safe to call from another thread while step() runs.
  void set_prompt(const std::string& prompt);
  std::string prompt() const;

  // T2V initialisation (spec §7) from fresh noise. Returns the K clean reference frames it
  // produced, to be emitted first ([K, C, H, W]; empty when K = 0).
  torch::Tensor start();
  // s micro steps, then emits chunk 0 ([c, C, H, W], τ = 1), shifts and appends noise. Calls
  // start() first if needed.
  torch::Tensor step();

  const BufferPartition& partition() const { return partition_; }
  // Levels the buffer holds before micro step j of the next step().
  std::vector<double> levels(std::int64_t micro_step = 0) const { return stream_levels(partition_, micro_step); }
  const torch::Tensor& buffer() const { return buffer_; }  // [1, B, C, H, W]
  std::int64_t nfe() const { return nfe_; }               // model passes so far (a CFG pair counts 2)
  std::int64_t init_nfe() const { return init_nfe_; }     // of which spent in start()
  std::int64_t chunks_emitted() const { return chunks_emitted_; }
  bool started() const { return buffer_.defined(); }
  StreamDiT& model() { return model_; }

 private:
  torch::Tensor velocity(const torch::Tensor& x, const std::vector<double>& tau);
  torch::Tensor noise(std::int64_t frames);
  torch::Tensor text_snapshot() const;

  StreamDiT model_;
  StreamDiTOptions options_;
  BufferPartition partition_;
  std::int64_t channels_, height_, width_;
  at::Generator generator_;
  torch::Tensor buffer_;
  torch::Tensor uncond_;  // null-caption states, for CFG
  mutable std::mutex prompt_mutex_;
  torch::Tensor cond_;    // published by set_prompt, read at each micro step
  std::string prompt_;
  std::int64_t nfe_ = 0, init_nfe_ = 0, chunks_emitted_ = 0;
};

}  // namespace streamgen
