#include "streamgen/stream_runner.h"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <cmath>
#include <thread>

#include "streamgen/autoencoder_tiny.h"
#include "streamgen/bounded_queue.h"
#include "streamgen/component_run.h"
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/timing.h"

namespace streamgen {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kDecodeQueueCapacity = 2;

struct Input {
  torch::Tensor image_u8;
  Clock::time_point pushed;
};

struct ToDecode {
  torch::Tensor latents;  // undefined: the similarity filter skipped the call
  Clock::time_point pushed;
};

struct Embeddings {
  UNetConditioning cond, uncond;
  int blend_frames = 0;
};

// Linear interpolation between two prompts' embeddings over a number of calls.
struct PromptBlend {
  UNetConditioning from_cond, from_uncond, to_cond, to_uncond;
  int step = 0, total = 0;
  bool active() const { return step < total; }
};

}  // namespace

struct StreamRunner::Impl {
  StreamRunnerOptions o;
  std::shared_ptr<StreamModels> models;
  std::unique_ptr<StreamDiffusion> stream;
  std::optional<SimilarityFilter> ssf;
  std::mutex control_mutex;  // the ControlNet scales and control source, read once per call
  std::vector<double> controlnet_scales;
  ControlSource control;
  at::Generator generator;
  std::int64_t latent_channels = 4;  // the UNet's in_channels

  BoundedQueue<Input> inputs;
  BoundedQueue<ToDecode> to_decode{kDecodeQueueCapacity};
  FrameOutlet outputs;

  std::mutex embeddings_mutex;
  std::shared_ptr<const Embeddings> embeddings;  // replaced whole by the prompt thread
  std::uint64_t embeddings_version = 0;

  std::mutex prompt_mutex;
  std::condition_variable prompt_cv;
  std::optional<std::pair<std::string, std::string>> pending_prompt;
  int pending_blend = 0;
  std::pair<std::string, std::string> current_prompt;

  StageSamples stage_samples;
  std::atomic<std::uint64_t> frames_in{0}, frames_skipped{0}, calls{0};
  std::atomic<bool> running{true};
  std::mutex stop_mutex;
  std::thread compute_thread, decode_thread, prompt_thread;

  explicit Impl(StreamRunnerOptions options)
      : o(std::move(options)),
        inputs(o.input_capacity),
        outputs(o.output_capacity) {}

  void record(const std::string& stage, double ms) { stage_samples.record(stage, ms); }

  std::shared_ptr<Embeddings> encode_prompt(const std::string& prompt, const std::string& negative) {
    torch::NoGradGuard no_grad;
    const auto t0 = Clock::now();
    auto e = std::make_shared<Embeddings>();
    UNetConditioning both;
    {
      const auto reading = models->weights->read();
      both = models->prompts.encode({prompt, negative});
    }
    both = condition_for(both, models->unet->config, o.height, o.width);
    e->cond = both.narrow(0, 1);
    e->uncond = both.narrow(1, 1);
    record("text_encoder", ms_between(t0, Clock::now()));
    return e;
  }

  void prompt_loop() {
    std::uint64_t seen_weights = models->weights->version();
    while (true) {
      std::pair<std::string, std::string> job;
      int blend = 0;
      {
        std::unique_lock lock(prompt_mutex);
        // The embeddings follow the text encoder's weights too: after a LoRA scale change the current
        // prompt is encoded again (the gate's version says that the weights changed).
        const bool adapted = models->loras && (models->loras->adapts("text_encoder") || models->loras->adapts("text_encoder_2"));
        const auto weights_changed = [&] { return adapted && models->weights->version() != seen_weights; };
        prompt_cv.wait_for(lock, kLiveStreamPollInterval, [&] { return !running || pending_prompt.has_value() || weights_changed(); });
        if (!running) return;
        const auto version = models->weights->version();
        const bool again = adapted && version != seen_weights;
        seen_weights = version;
        if (pending_prompt) {
          job = *pending_prompt;
          blend = pending_blend;
          pending_prompt.reset();
        } else {
          job = current_prompt;
        }
        if (job == current_prompt && !again) continue;  // the text encoder runs only when the prompt (or its weights) change
      }
      try {
        auto e = encode_prompt(job.first, job.second);
        e->blend_frames = blend;
        std::lock_guard lock(embeddings_mutex);
        embeddings = std::move(e);
        ++embeddings_version;
        current_prompt = job;
      } catch (const std::exception& ex) {
        spdlog::error("stream: encoding the prompt failed: {}", ex.what());
      }
    }
  }

  // The ControlNets' inputs for this call: the control images of `frames` (or the fixed image) and the scales.
  void set_control_of(const torch::Tensor& frames) {
    const auto t0 = Clock::now();
    ControlSource source;
    std::vector<double> scales;
    {
      std::lock_guard lock(control_mutex);
      source = control;
      scales = controlnet_scales;
    }
    stream->set_control(control_image_to_unit(make_control_images(source, frames)), std::move(scales));
    record("control", ms_between(t0, Clock::now()));
  }

  void compute_loop() {
    torch::NoGradGuard no_grad;
    std::uint64_t seen_version = 0;
    UNetConditioning cond, uncond;  // what the stream uses now
    PromptBlend blend;
    const auto& c = o.compute;
    const auto F = o.stream.frame_buffer_size;
    const auto latent_shape = std::vector<std::int64_t>{F, latent_channels, o.height / 8, o.width / 8};
    try {
      while (running) {
        Clock::time_point pushed = Clock::now();
        torch::Tensor z;
        if (o.stream.txt2img) {
          z = torch::randn(latent_shape, generator);
          if (!models->controlnets.empty()) set_control_of({});
        } else {
          // F frames make one call (frame_buffer_size); latency counts from the oldest of them.
          std::vector<torch::Tensor> batch;
          while (running && static_cast<std::int64_t>(batch.size()) < F) {
            auto in = inputs.pop(kLiveStreamPollInterval);
            if (!in) continue;
            if (batch.empty()) pushed = in->pushed;
            batch.push_back(in->image_u8.unsqueeze(0));
          }
          if (static_cast<std::int64_t>(batch.size()) < F) continue;  // stopping
          auto t0 = Clock::now();
          const auto frames = torch::cat(batch);
          const auto x = image_u8_to_unit_range(frames);
          record("preprocess", ms_between(t0, Clock::now()));
          if (!models->controlnets.empty()) set_control_of(frames);
          if (ssf && !ssf->check(x).process) {
            ++frames_skipped;
            to_decode.push({torch::Tensor(), pushed});
            continue;
          }
          t0 = Clock::now();
          z = models->taesd->encode(x.to(c.device, models->taesd_dtype)).to(torch::kCPU, torch::kFloat32);
          record("encode", ms_between(t0, Clock::now()));
        }
        {
          std::lock_guard lock(embeddings_mutex);
          if (embeddings_version != seen_version) {  // a new prompt: read once, between calls
            if (embeddings->blend_frames > 1 && cond.encoder_hidden_states.defined()) {
              blend = {cond, uncond, embeddings->cond, embeddings->uncond, 0, embeddings->blend_frames};
            } else {
              blend = {};
              cond = embeddings->cond;
              uncond = embeddings->uncond;
            }
            seen_version = embeddings_version;
            if (!blend.active()) stream->set_embeddings(cond, uncond);
          }
        }
        if (blend.active()) {
          const double w = static_cast<double>(++blend.step) / blend.total;
          cond = lerp(blend.from_cond, blend.to_cond, w);
          uncond = lerp(blend.from_uncond, blend.to_uncond, w);
          stream->set_embeddings(cond, uncond);
        }
        const auto t0 = Clock::now();
        StreamDiffusion::Output out;
        {
          const auto reading = models->weights->read();
          out = stream->step(z);
        }
        record("unet", ms_between(t0, Clock::now()));
        ++calls;
        if (out.valid) to_decode.push({out.latents, pushed});
      }
    } catch (const std::exception& e) {
      spdlog::error("stream: compute thread stopped: {}", e.what());
      running = false;
    }
    to_decode.close();
  }

  void decode_loop() {
    torch::NoGradGuard no_grad;
    torch::Tensor last;
    try {
      while (true) {
        auto item = to_decode.pop(kLiveStreamPollInterval);
        if (!item) {
          if (to_decode.closed()) break;
          continue;
        }
        std::vector<StreamFrame> frames;
        if (!item->latents.defined()) {
          if (!last.defined()) continue;
          frames.push_back({last, 0, true, 0});
        } else {
          const auto t0 = Clock::now();
          const auto images = unit_range_to_image_u8(models->taesd->decode(item->latents.to(o.compute.device, models->taesd_dtype)).to(torch::kCPU));
          record("decode", ms_between(t0, Clock::now()));
          for (std::int64_t f = 0; f < images.size(0); ++f) frames.push_back({images[f], 0, false, 0});
          last = images[images.size(0) - 1];
        }
        const auto now = Clock::now();
        for (auto& frame : frames) {
          frame.latency_ms = ms_between(item->pushed, now);
          record("latency", frame.latency_ms);
          outputs.deliver(std::move(frame));
        }
      }
    } catch (const std::exception& e) {
      spdlog::error("stream: decode thread stopped: {}", e.what());
      running = false;
    }
    outputs.close();
  }
};

std::shared_ptr<StreamModels> StreamModels::load(const std::filesystem::path& model, const std::filesystem::path& taesd,
                                                 const ComputeOptions& compute, const StreamAdapters& adapters) {
  auto m = std::make_shared<StreamModels>(StreamModels{PromptEncoder::load(model, compute), nullptr, nullptr, LcmSchedulerConfig{}, compute,
                                                       torch::kFloat32, nullptr, {}, std::make_shared<WeightsGate>()});
  m->unet = load_unet_2d_condition(resolve_component_dir(model, "unet"), compute);
  m->prompts.check_fits(m->unet->config);
  auto targets = m->prompts.lora_targets();
  targets.insert(targets.begin(), {"unet", m->unet.get()});
  m->loras = fuse_loras(adapters.loras, targets, adapters.lora_rescale);
  for (const auto& dir : adapters.controlnets) {
    auto controlnet = load_controlnet(dir, compute);
    check_controlnet_fits(*controlnet, *m->unet, dir.string());
    m->controlnets.push_back(std::move(controlnet));
  }
  // Under --dtype auto TAESD takes its own dtype: a 2.4 M-weight convnet is compute-bound, and where
  // bf16 has no more FLOPs per cycle than fp32 (no AMX) fp32 runs it faster (decode 256²: 163 vs 255 ms).
  auto taesd_compute = compute;
  if (compute.auto_dtype) taesd_compute.dtype = torch::kFloat32;  // loaded exactly, then converted once
  m->taesd = load_autoencoder_tiny(taesd, taesd_compute);
  if (compute.auto_dtype) {
    taesd_compute.dtype = fastest_dtype(compute.device, parameter_count(*m->taesd));
    prepare_autoencoder_tiny(*m->taesd, compute.device, taesd_compute.dtype);
  }
  m->taesd_dtype = taesd_compute.dtype;
  m->scheduler = LcmSchedulerConfig::from_folder(resolve_component_dir(model, "scheduler"));
  m->compute = compute;
  if (compute.auto_dtype)
    spdlog::info("--dtype auto: TAESD in {} ({:.1f} M weights)", dtype_label(m->taesd_dtype),
                 static_cast<double>(parameter_count(*m->taesd)) / 1e6);
  return m;
}

double StreamModels::set_lora_scales(const std::vector<double>& scales) {
  if (!loras) throw Error("no LoRA is loaded: start with --lora FILE[:SCALE] to change LoRA scales");
  if (!loras->rescalable()) throw Error("these models were loaded with fixed LoRA scales");
  double ms = 0;
  weights->write([&] {
    const auto t0 = Clock::now();
    loras->set_scales(scales);
    ms = ms_between(t0, Clock::now());
  });
  return ms;
}

// A ControlNet's residuals are added to the UNet's skip connections: their widths must be the UNet's.
void check_controlnet_fits(const ControlNetModelImpl& controlnet, const UNet2DConditionModelImpl& unet, const std::string& where) {
  const auto& a = controlnet.config.unet;
  const auto& b = unet.config;
  if (a.block_out_channels != b.block_out_channels || a.layers_per_block != b.layers_per_block || a.in_channels != b.in_channels ||
      a.cross_attention_dim != b.cross_attention_dim || a.down_block_types != b.down_block_types || a.text_time != b.text_time ||
      a.transformer_layers_per_block != b.transformer_layers_per_block)
    throw Error("--controlnet " + where + " was made for another UNet: its blocks, widths, SDXL conditioning or cross-attention (" +
                std::to_string(a.cross_attention_dim) + " wide) differ from this model's (" + std::to_string(b.cross_attention_dim) +
                " wide; SD1.x 768, SD2.x 1024, SDXL 2048)");
}

void check_control_options(const StreamRunnerOptions& o, std::size_t controlnets) {
  if (!o.controlnet_scales.empty() && o.controlnet_scales.size() != controlnets)
    throw Error("stream: " + std::to_string(o.controlnet_scales.size()) + " ControlNet scales for " + std::to_string(controlnets) + " ControlNet(s)");
  if (controlnets > 0 && o.stream.txt2img && o.control.preprocessor != ControlPreprocessor::Fixed)
    throw Error("stream: a txt2img stream has no input frames to make control images from: give a control image file (--control FILE)");
  if (o.control.preprocessor == ControlPreprocessor::Fixed &&
      (!o.control.fixed_u8.defined() || o.control.fixed_u8.size(1) != o.height || o.control.fixed_u8.size(2) != o.width))
    throw Error("stream: the fixed control image must be fitted to the stream's " + std::to_string(o.width) + "x" + std::to_string(o.height));
}

void check_stream_runner_options(const StreamRunnerOptions& o) {
  if (o.width % 8 != 0 || o.height % 8 != 0 || o.width <= 0 || o.height <= 0)
    throw Error("stream: width and height must be positive multiples of 8, got " + std::to_string(o.width) + "x" + std::to_string(o.height));
  if (o.stream.frame_buffer_size < 1) throw Error("stream: frame_buffer_size must be at least 1");
  if (o.ssf && o.stream.frame_buffer_size != 1)
    throw Error("stream: the similarity filter decides frame by frame; use it with frame_buffer_size 1");
  if (o.stream.t_index_list.empty()) throw Error("stream: t_index_list is empty");
  check_control_options(o, o.models ? o.models->controlnets.size() : o.adapters.controlnets.size());
  for (const auto i : o.stream.t_index_list)
    if (i < 0 || i >= o.stream.num_inference_steps)
      throw Error("stream: t_index " + std::to_string(i) + " outside 0.." + std::to_string(o.stream.num_inference_steps - 1));
}

StreamRunner::StreamRunner(StreamRunnerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  auto& m = *impl_;
  auto& o = m.o;
  check_stream_runner_options(o);
  m.models = o.models ? o.models : StreamModels::load(o.model, o.taesd, o.compute, o.adapters);  // as many ControlNets as checked
  m.controlnet_scales = o.controlnet_scales.empty() ? std::vector<double>(m.models->controlnets.size(), 1.0) : o.controlnet_scales;
  m.control = o.control;
  o.compute = m.models->compute;
  auto unet = m.models->unet;
  const LcmScheduler scheduler(m.models->scheduler);
  m.generator = at::detail::createCPUGenerator(o.seed);
  m.latent_channels = unet->config.in_channels;
  const auto n = static_cast<std::int64_t>(o.stream.t_index_list.size());
  // Noise policy: one N_k per slot, shared by the slot's rows (temporal stability), from the seed.
  const auto noise = torch::randn({n, m.latent_channels, o.height / 8, o.width / 8}, m.generator);
  m.stream = std::make_unique<StreamDiffusion>(unet, scheduler, o.stream, noise);
  m.stream->set_controlnets(m.models->controlnets);
  m.stream->seed(o.seed);
  if (o.ssf) m.ssf.emplace(*o.ssf, o.seed);
  // The first prompt is encoded before the first frame, so there is never an unconditioned frame.
  m.embeddings = m.encode_prompt(o.prompt, o.negative_prompt);
  m.embeddings_version = 1;
  m.current_prompt = {o.prompt, o.negative_prompt};
  m.prompt_thread = std::thread([&m] { m.prompt_loop(); });
  m.decode_thread = std::thread([&m] { m.decode_loop(); });
  m.compute_thread = std::thread([&m] { m.compute_loop(); });
}

StreamRunner::~StreamRunner() { stop(); }

double StreamRunner::set_lora_scales(const std::vector<double>& scales) { return impl_->models->set_lora_scales(scales); }

void StreamRunner::set_controlnet_scales(const std::vector<double>& scales) {
  auto& m = *impl_;
  if (scales.size() != m.models->controlnets.size())
    throw Error("ControlNet scales: " + std::to_string(scales.size()) + " given, " + std::to_string(m.models->controlnets.size()) + " ControlNet(s) loaded");
  for (const auto s : scales)
    if (!std::isfinite(s)) throw Error("ControlNet scales must be finite numbers");
  std::lock_guard lock(m.control_mutex);
  m.controlnet_scales = scales;
}

void StreamRunner::set_control(ControlSource control) {
  auto& m = *impl_;
  auto o = m.o;
  o.control = control;
  check_control_options(o, m.models->controlnets.size());
  std::lock_guard lock(m.control_mutex);
  m.control = std::move(control);
}

void StreamRunner::stop() {
  auto& m = *impl_;
  std::lock_guard stopping(m.stop_mutex);  // callable from several threads at once (a server shutting down)
  m.running = false;
  m.inputs.close();
  m.prompt_cv.notify_all();
  for (auto* t : {&m.compute_thread, &m.decode_thread, &m.prompt_thread})
    if (t->joinable()) t->join();
  m.outputs.close();
}

void StreamRunner::push(const torch::Tensor& frame) {
  const auto& o = impl_->o;
  if (frame.scalar_type() != torch::kUInt8 || frame.dim() != 3 || frame.size(0) != 3 || frame.size(1) != o.height || frame.size(2) != o.width)
    throw Error("stream: frames must be uint8 [3, " + std::to_string(o.height) + ", " + std::to_string(o.width) + "]");
  ++impl_->frames_in;
  impl_->inputs.push({frame.contiguous(), Clock::now()});
}

std::optional<StreamFrame> StreamRunner::pop(std::chrono::milliseconds timeout) { return impl_->outputs.pop(timeout); }

void StreamRunner::set_output_callback(std::function<void(const StreamFrame&)> callback) { impl_->outputs.set_callback(std::move(callback)); }

void StreamRunner::set_prompt(const std::string& prompt, const std::string& negative_prompt, int blend_frames) {
  std::lock_guard lock(impl_->prompt_mutex);
  impl_->pending_prompt = {prompt, negative_prompt};
  impl_->pending_blend = blend_frames;
  impl_->prompt_cv.notify_one();
}

StreamStats StreamRunner::stats() const {
  const auto& m = *impl_;
  StreamStats s;
  s.frames_in = m.frames_in;
  s.inputs_dropped = m.inputs.dropped();
  s.frames_skipped = m.frames_skipped;
  s.calls = m.calls;
  s.stages = m.stage_samples.summary();
  m.outputs.add_to(s);
  return s;
}

}  // namespace streamgen
