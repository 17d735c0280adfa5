#include "streamgen/dit_stream.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <thread>

#include "streamgen/bounded_queue.h"
#include "streamgen/device.h"
#include "streamgen/dit_codec.h"
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"

namespace streamgen {

PromptChange parse_prompt_change(const std::string& text) {
  const auto colon = text.find(':');
  if (colon == std::string::npos || colon == 0)
    throw Error(fmt::format("--prompt-at '{}': expected FRAME:PROMPT, e.g. 64:\"blue square moving up\"", text));
  PromptChange change;
  try {
    std::size_t used = 0;
    change.frame = std::stoll(text.substr(0, colon), &used);
    if (used != colon || change.frame < 0) throw std::invalid_argument("frame");
  } catch (const std::exception&) {
    throw Error(fmt::format("--prompt-at '{}': '{}' is not a frame number", text, text.substr(0, colon)));
  }
  change.prompt = text.substr(colon + 1);
  return change;
}

torch::Tensor dit_frames_to_u8(const torch::Tensor& frames, std::int64_t width, std::int64_t height) {
  auto x = frames.detach().to(torch::kCPU, torch::kFloat32);
  if (x.size(1) != 3) throw Error(fmt::format("StreamDiT frames have {} channels; decoding latents needs the autoencoder", x.size(1)));
  if ((width > 0 && width != x.size(3)) || (height > 0 && height != x.size(2)))
    x = torch::nn::functional::interpolate(
        x, torch::nn::functional::InterpolateFuncOptions().size(std::vector<std::int64_t>{height, width}).mode(torch::kBilinear).align_corners(false));
  return unit_range_to_image_u8(x);
}

torch::Tensor read_dit_frames(FrameSource& source, std::int64_t count, std::int64_t width, std::int64_t height) {
  std::vector<torch::Tensor> frames;
  while (static_cast<std::int64_t>(frames.size()) < count) {
    auto f = source.next();
    if (!f) break;
    frames.push_back(image_u8_to_unit_range(fit_image(f->rgb.unsqueeze(0), width, height, Fit::Crop))[0]);
  }
  return frames.empty() ? torch::Tensor{} : torch::stack(frames);
}

DiTStreamStats run_dit_stream(StreamDiTSampler& sampler, FrameSink& sink, const DiTStreamOptions& o) {
  using clock = std::chrono::steady_clock;
  const ScopedBlasThreads blas_threads(1);
  auto changes = o.prompt_changes;
  std::stable_sort(changes.begin(), changes.end(), [](const PromptChange& a, const PromptChange& b) { return a.frame < b.frame; });
  std::size_t next_change = 0;

  // The writer thread: conversion to uint8 and the sink (video encoding) off the DiT loop.
  // Latent models: the writer decodes each chunk (the decoder's thread in spec §9); frames are
  // counted in RGB frames, r_t per model frame.
  const std::int64_t r = o.codec ? o.codec->frames_per_latent() : 1;
  const std::int64_t s = o.codec ? o.codec->spatial_factor() : 1;
  struct Chunk {
    torch::Tensor frames;  // the sampler's space
    std::int64_t keep;     // RGB frames of it to write
  };
  BoundedQueue<Chunk> queue(4, QueuePolicy::Block);
  std::exception_ptr writer_error;
  std::atomic<std::int64_t> written{0};
  std::atomic<double> first_frame_s{0};
  const auto t0 = clock::now();
  std::thread writer([&] {
    try {
      while (true) {
        auto chunk = queue.pop(std::chrono::milliseconds(100));
        if (!chunk) {
          if (queue.closed() && queue.size() == 0) break;
          continue;
        }
        const auto rgb = o.codec ? o.codec->decode(chunk->frames) : chunk->frames;
        const auto u8 = dit_frames_to_u8(rgb.narrow(0, 0, chunk->keep), o.output_width, o.output_height);
        for (std::int64_t f = 0; f < u8.size(0); ++f) {
          sink.write(u8[f]);
          if (written.fetch_add(1) == 0) first_frame_s = std::chrono::duration<double>(clock::now() - t0).count();
        }
      }
    } catch (...) {
      writer_error = std::current_exception();
      queue.close();
    }
  });

  DiTStreamStats stats;
  double dit_seconds = 0;
  std::int64_t frames_out = 0;
  auto update_stats = [&] {
    stats.chunks = sampler.chunks_emitted();
    stats.nfe = sampler.nfe();
    stats.init_nfe = sampler.init_nfe();
    stats.frames = written.load();
    stats.seconds = std::chrono::duration<double>(clock::now() - t0).count();
    stats.first_frame_s = first_frame_s.load();
    stats.step_ms = 1000.0 * dit_seconds / static_cast<double>(std::max<std::int64_t>(1, stats.chunks));
    // Frames come a chunk at a time: the rate counts the frames after the first chunk over the time
    // after it, and a stream that is one chunk long has only its overall rate.
    const auto after_first = stats.frames - sampler.partition().chunk_frames;
    if (after_first > 0 && stats.seconds > stats.first_frame_s)
      stats.fps = static_cast<double>(after_first) / (stats.seconds - stats.first_frame_s);
    else if (stats.seconds > 0)
      stats.fps = static_cast<double>(stats.frames) / stats.seconds;
  };
  auto finish = [&] {
    queue.close();
    writer.join();
  };
  try {
    auto apply_changes = [&] {
      while (next_change < changes.size() && changes[next_change].frame <= frames_out) sampler.set_prompt(changes[next_change++].prompt);
    };
    apply_changes();
    // Video-to-video: input frames in, the output bounded by their count (see the header).
    const bool v2v = sampler.video_to_video();
    if (v2v && !o.input) throw Error("StreamDiT video-to-video (strength > 0) needs an input video");
    std::int64_t input_frames = 0;
    bool input_ended = false;
    torch::Tensor last_chunk;
    auto next_input = [&](std::int64_t count) {
      count *= r;
      auto frames = read_dit_frames(*o.input, count, sampler.frame_width() * s, sampler.frame_height() * s);
      const auto got = frames.defined() ? frames.size(0) : 0;
      input_frames += got;
      if (got == 0 && !last_chunk.defined()) throw Error("video-to-video: the input '" + o.input->info().spec + "' has no frames");
      if (got < count) {  // the end of the input: pad with its last frame
        input_ended = true;
        const auto last = got > 0 ? frames[got - 1] : last_chunk[last_chunk.size(0) - 1];
        const auto pad = last.unsqueeze(0).expand({count - got, last.size(0), last.size(1), last.size(2)});
        frames = got > 0 ? torch::cat({frames, pad}) : pad.contiguous();
      }
      last_chunk = frames;
      return o.codec ? o.codec->encode(frames) : frames;
    };
    // Output frame j is input frame j, so once the input has ended the stream stops at its length.
    auto output_limit = [&] {
      if (!input_ended) return o.frames;
      return o.frames < 0 ? input_frames : std::min(o.frames, input_frames);
    };
    auto push = [&](const torch::Tensor& frames) {
      auto keep = frames.size(0) * r;
      if (const auto l = output_limit(); l >= 0) keep = std::max<std::int64_t>(0, std::min(keep, l - frames_out));
      frames_out += keep;
      if (keep > 0 && !queue.push(Chunk{frames, keep})) {
        if (writer_error) std::rethrow_exception(writer_error);
      }
    };
    if (!sampler.started()) {
      torch::Tensor first;
      if (v2v) first = next_input(sampler.start_frames());
      const auto s0 = clock::now();
      const auto references = v2v ? sampler.start(first) : sampler.start();
      dit_seconds += std::chrono::duration<double>(clock::now() - s0).count();
      if (references.defined()) push(references);
    }
    while ((output_limit() < 0 || frames_out < output_limit()) && !(o.stop && o.stop->load())) {
      apply_changes();
      const auto input = v2v ? next_input(sampler.partition().chunk_frames) : torch::Tensor{};
      const auto s0 = clock::now();
      auto chunk = v2v ? sampler.step(input) : sampler.step();
      dit_seconds += std::chrono::duration<double>(clock::now() - s0).count();
      push(chunk);
      if (writer_error) std::rethrow_exception(writer_error);
      update_stats();
      if (o.on_chunk) o.on_chunk(stats);
    }
  } catch (...) {
    finish();
    throw;
  }
  finish();
  if (writer_error) std::rethrow_exception(writer_error);
  update_stats();
  return stats;
}

}  // namespace streamgen
