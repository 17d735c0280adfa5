#pragma once
// The live stream: frames in, images out, with the work split over threads so that no stage
// waits for another (docs/streamdiffusion.md section 6):
//   push() -> latest-frame mailbox -> compute thread (SSF, preprocess, TAESD encode, StreamDiffusion
//   step) -> decode queue -> decode thread (TAESD decode, to uint8) -> output queue -> pop()
//   set_prompt() -> prompt thread (tokenizer(s) + text encoder(s), only when the prompt changes) ->
//   embeddings snapshot the compute thread reads once per call.
// Every queue is bounded; under overload the oldest item is dropped and counted.
#include <torch/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "streamgen/autoencoder_tiny.h"
#include "streamgen/control_image.h"
#include "streamgen/controlnet.h"
#include "streamgen/device.h"
#include "streamgen/lcm_scheduler.h"
#include "streamgen/live_stream.h"
#include "streamgen/lora.h"
#include "streamgen/prompt_encoder.h"
#include "streamgen/similarity_filter.h"
#include "streamgen/stream_diffusion.h"
#include "streamgen/unet_2d_condition.h"
#include "streamgen/weights_gate.h"

namespace streamgen {

// What is loaded besides the pipeline: LoRAs fused into it, ControlNets run beside its UNet.
struct StreamAdapters {
  std::vector<LoraSpec> loras;
  LoraRescale lora_rescale = LoraRescale::Exact;  // Never: a one-shot run saves the copy of the adapted weights
  std::vector<std::filesystem::path> controlnets;  // diffusers ControlNetModel folders
};

// The models one stream needs, loaded once and shared by any number of runners (the server's
// sessions): inference never mutates them; only a LoRA scale change does, through the gate.
struct StreamModels {
  PromptEncoder prompts;  // SD1.x / SD2.x's text encoder, or SDXL's two
  UNet2DConditionModel unet{nullptr};
  AutoencoderTiny taesd{nullptr};
  LcmSchedulerConfig scheduler;
  ComputeOptions compute;
  torch::ScalarType taesd_dtype = torch::kFloat32;  // compute.dtype, or TAESD's own pick under --dtype auto
  std::shared_ptr<LoraFusion> loras;                 // fused into unet and the text encoder(s); null without LoRAs
  std::vector<ControlNetModel> controlnets;          // run with the UNet, their scales per runner
  std::shared_ptr<WeightsGate> weights = std::make_shared<WeightsGate>();  // held by every UNet / text encoder call

  // `model`: diffusers pipeline folder (tokenizer, text_encoder, unet, scheduler; SDXL: also tokenizer_2,
  // text_encoder_2); `taesd`: TAESD folder (TAESD-XL for SDXL);
  // `adapters.loras` fused into the UNet and text encoder at load (LoraRescale::Exact: their scales may change
  // later); `adapters.controlnets` loaded and checked against the UNet.
  static std::shared_ptr<StreamModels> load(const std::filesystem::path& model, const std::filesystem::path& taesd,
                                            const ComputeOptions& compute, const StreamAdapters& adapters = {});
  // New scales for the LoRAs, one per LoRA in load order: waits for the model calls in flight, re-fuses,
  // and every runner on these models re-encodes its prompt if the text encoder is adapted. Returns the
  // time the re-fusion took (ms). Throws streamgen::Error without LoRAs, or for fixed scales.
  double set_lora_scales(const std::vector<double>& scales);
};

struct StreamRunnerOptions {
  std::filesystem::path model;  // diffusers pipeline folder (tokenizer, text_encoder, unet, scheduler)
  std::filesystem::path taesd;  // TAESD folder: the stream's encoder and decoder
  std::shared_ptr<StreamModels> models;  // already loaded: model, taesd and compute are then not read
  StreamDiffusionConfig stream;
  ComputeOptions compute;
  std::string prompt;
  std::string negative_prompt;
  StreamAdapters adapters;          // loaded with the models when `models` is not given
  std::vector<double> controlnet_scales;  // one per ControlNet of the models (empty: 1 each)
  ControlSource control;            // what the ControlNets see: each frame's Canny edges, the frame, or a fixed image
  std::uint64_t seed = 2;
  std::int64_t width = 512;
  std::int64_t height = 512;
  std::optional<SimilarityFilterOptions> ssf;
  std::size_t input_capacity = 1;   // latest frame wins
  std::size_t output_capacity = 4;
};

// Throws streamgen::Error for settings no model can run (size, slots, t_index range), before anything
// loads; the constructor checks the same.
void check_stream_runner_options(const StreamRunnerOptions& options);
// ControlNet settings the loaded models cannot run (scale count, a txt2img stream without a fixed control image).
void check_control_options(const StreamRunnerOptions& options, std::size_t controlnets);
// Throws streamgen::Error when `controlnet` was made for a UNet of other widths / blocks.
void check_controlnet_fits(const ControlNetModelImpl& controlnet, const UNet2DConditionModelImpl& unet, const std::string& where);

class StreamRunner : public LiveStream {
 public:
  explicit StreamRunner(StreamRunnerOptions options);
  ~StreamRunner() override;
  StreamRunner(const StreamRunner&) = delete;
  StreamRunner& operator=(const StreamRunner&) = delete;

  // An RGB uint8 frame [3, H, W] of the configured size (img2img). Never blocks.
  void push(const torch::Tensor& frame_u8) override;
  std::optional<StreamFrame> pop(std::chrono::milliseconds timeout) override;
  // Called on the decode thread for every output instead of queueing it for pop(); keep it short
  // (hand the frame to your own sink). An empty function restores the queue.
  void set_output_callback(std::function<void(const StreamFrame&)> callback) override;
  // Encoded off the hot path; takes effect from the next call, with no reset and no blank frame.
  // blend_frames > 1 moves the embeddings linearly from the current prompt to the new one over that
  // many calls instead of switching at once.
  void set_prompt(const std::string& prompt, const std::string& negative_prompt = "", int blend_frames = 0) override;
  StreamStats stats() const override;
  void stop() override;
  // StreamModels::set_lora_scales on this runner's models (shared with any other runner on them).
  double set_lora_scales(const std::vector<double>& scales);
  // This runner's ControlNet scales (one per ControlNet; 0 skips one) and control source, from the next call.
  void set_controlnet_scales(const std::vector<double>& scales);
  void set_control(ControlSource control);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace streamgen
