#pragma once
// The live StreamDiT stream (text in, video out) behind the LiveStream interface the server uses:
//   compute thread: sampler steps -> decoded (latent models) -> uint8 at the output size -> bounded frame queue
//     (generation waits when it is ahead: a generator has nothing to drop)
//   pacer thread: hands frames out at the target frame rate (a chunk of c frames would otherwise
//     arrive at once and play in jerks) -> callback or the output queue
//   set_prompt(): encodes the caption on the caller's thread (a tiny encoder) and publishes it;
//     the next micro step uses it.
#include <filesystem>
#include <memory>
#include <string>

#include "streamgen/device.h"
#include "streamgen/dit.h"
#include "streamgen/live_stream.h"
#include "streamgen/stream_dit.h"
#include "streamgen/temporal_autoencoder.h"

namespace streamgen {

struct DiTRunnerOptions {
  std::filesystem::path model;  // StreamDiT folder (config.json + model.safetensors)
  StreamDiT loaded{nullptr};    // already loaded and shared (the server's sessions): `model` and `compute` are then not read
  TemporalAutoencoder loaded_autoencoder{nullptr};  // with `loaded`: a latent model's autoencoder (load_dit_autoencoder)
  ComputeOptions compute;
  StreamDiTOptions sampler;
  std::string prompt;
  std::int64_t width = 0, height = 0;  // output frame size (0: the model's)
  double fps = 24;                     // pace of the output (0: each frame as soon as it is made)
  std::size_t ahead_frames = 8;        // frames made ahead of the pace before generation waits
  std::size_t output_capacity = 4;     // pop() queue; the oldest frame is dropped when nobody reads
};

// Throws streamgen::Error for settings that can never work (pace, output size), before anything loads.
void check_dit_runner_options(const DiTRunnerOptions& options);

class DiTRunner : public LiveStream {
 public:
  explicit DiTRunner(DiTRunnerOptions options);
  ~DiTRunner() override;
  DiTRunner(const DiTRunner&) = delete;
  DiTRunner& operator=(const DiTRunner&) = delete;

  // Text-to-video takes no frames: throws streamgen::Error.
  void push(const torch::Tensor& frame_u8) override;
  std::optional<StreamFrame> pop(std::chrono::milliseconds timeout) override;
  void set_output_callback(std::function<void(const StreamFrame&)> callback) override;
  // The negative prompt and blending do not apply to this model and are ignored.
  void set_prompt(const std::string& prompt, const std::string& negative_prompt = "", int blend_frames = 0) override;
  // stages: dit (one sampler step = one chunk), decode (to uint8 and resize), text_encoder,
  // latency (start of the step that made a frame -> handed out); calls = chunks.
  StreamStats stats() const override;
  void stop() override;

  // Words of `prompt` the model's caption vocabulary lacks (ignored by the model).
  std::vector<std::string> unknown_words(const std::string& prompt) const;
  const StreamDiTConfig& config() const;
  // Size of the frames handed out: the options' size, or else the model's frames in pixels.
  std::int64_t output_width() const;
  std::int64_t output_height() const;
  // The reason the stream stopped on its own, or empty.
  std::string error() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace streamgen
