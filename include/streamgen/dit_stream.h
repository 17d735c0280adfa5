#pragma once
// Runs a StreamDiT sampler into a frame sink: the DiT loop on the calling thread, decoding and
// writing on a writer thread behind a bounded queue (offline: it blocks, nothing is dropped), and
// prompt changes scheduled by output frame (the CLI's --prompt-at) or pushed live by set_prompt
// from any thread.
#include <torch/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "streamgen/dit_codec.h"
#include "streamgen/media.h"
#include "streamgen/stream_dit.h"

namespace streamgen {

struct PromptChange {
  std::int64_t frame = 0;  // takes effect at the first step after this many output frames
  std::string prompt;
};
// "64:blue square moving up" -> {64, "blue square moving up"}; throws streamgen::Error.
PromptChange parse_prompt_change(const std::string& text);

struct DiTStreamStats {
  std::int64_t frames = 0, chunks = 0, nfe = 0, init_nfe = 0;
  double seconds = 0;           // wall time so far
  double first_frame_s = 0;     // start to the first frame handed to the sink
  double fps = 0;               // output frames per second after the first chunk (overall for a one-chunk stream)
  double step_ms = 0;           // mean DiT time per emitted chunk
};

struct DiTStreamOptions {
  std::int64_t frames = 256;  // output frames (-1: until *stop, or the end of the input)
  // Video-to-video (a sampler with strength > 0): the input video, fitted to the model's frame size.
  // The stream ends with the input: the last chunk is repeated N_eff times to bring every input
  // frame out, and output stops at the input's frame count.
  FrameSource* input = nullptr;
  std::vector<PromptChange> prompt_changes;
  std::int64_t output_width = 0, output_height = 0;  // resize for the sink (0: the model's size)
  // A latent model's codec (decodes every chunk on the writer thread, encodes the input video);
  // nullptr: a pixel-space model. Frame counts (frames, prompt changes) are RGB frames either way.
  DiTVideoCodec* codec = nullptr;
  const std::atomic<bool>* stop = nullptr;
  std::function<void(const DiTStreamStats&)> on_chunk;
};

// Frames [F, C, H, W] in about [-1, 1] -> uint8 [F, 3, h, w], bilinearly resized when the size differs.
torch::Tensor dit_frames_to_u8(const torch::Tensor& frames, std::int64_t width, std::int64_t height);
// The next `count` frames of `source`, centre-cropped and resized to width x height, as float
// [count, 3, H, W] in [-1, 1]; fewer at the end of the source (empty tensor when none are left).
torch::Tensor read_dit_frames(FrameSource& source, std::int64_t count, std::int64_t width, std::int64_t height);

DiTStreamStats run_dit_stream(StreamDiTSampler& sampler, FrameSink& sink, const DiTStreamOptions& options);

}  // namespace streamgen
