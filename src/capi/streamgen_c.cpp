// The C API (include/streamgen/streamgen.h) over the C++ engine: handles own the C++ objects, every entry
// point turns exceptions into a status and a message, and pixels cross the boundary by copy in the caller's
// layout (any stride, RGB/BGR, with or without alpha).
#include "streamgen/streamgen.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "streamgen/build_info.h"
#include "streamgen/device.h"
#include "streamgen/dit.h"
#include "streamgen/dit_codec.h"
#include "streamgen/dit_runner.h"
#include "streamgen/error.h"
#include "streamgen/image_tensor.h"
#include "streamgen/lora.h"
#include "streamgen/media.h"
#include "streamgen/model_folder.h"
#include "streamgen/stream_dit.h"
#include "streamgen/stream_runner.h"

namespace {

using namespace streamgen;

thread_local std::string t_last_error;

// A handle's last error: set by whichever thread's call failed, read by sg_*_last_error.
struct ErrorSlot {
  mutable std::mutex mutex;
  std::string message;
  void set(const std::string& m) {
    std::lock_guard lock(mutex);
    message = m;
  }
  const char* get() const {
    std::lock_guard lock(mutex);
    return message.c_str();
  }
};

// A bad argument found at the boundary (NULL, out of range, a buffer too small).
struct ArgumentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

sg_status fail(ErrorSlot* slot, sg_status status, const std::string& message) {
  t_last_error = message;
  if (slot) slot->set(message);
  return status;
}

template <typename F>
sg_status guarded(ErrorSlot* slot, F&& f) {
  try {
    return f();
  } catch (const ArgumentError& e) {
    return fail(slot, SG_INVALID_ARGUMENT, e.what());
  } catch (const Error& e) {
    return fail(slot, SG_ERROR, e.what());
  } catch (const std::exception& e) {
    return fail(slot, SG_INTERNAL, e.what());
  } catch (...) {
    return fail(slot, SG_INTERNAL, "an unknown exception");
  }
}

void require(bool ok, const std::string& message) {
  if (!ok) throw ArgumentError(message);
}

std::string text(const char* s, const char* fallback = "") { return s ? std::string(s) : std::string(fallback); }

struct Layout {
  int channels;
  bool bgr, alpha;
};

Layout layout_of(sg_pixel_format f) {
  switch (f) {
    case SG_PIXEL_RGB8: return {3, false, false};
    case SG_PIXEL_RGBA8: return {4, false, true};
    case SG_PIXEL_BGR8: return {3, true, false};
    case SG_PIXEL_BGRA8: return {4, true, true};
  }
  throw ArgumentError("pixel format " + std::to_string(static_cast<int>(f)) + " is not one of SG_PIXEL_RGB8, RGBA8, BGR8, BGRA8");
}

// The caller's pixels -> uint8 [3, H, W] (a copy).
torch::Tensor image_from_pixels(const std::uint8_t* pixels, int width, int height, std::size_t stride, sg_pixel_format format) {
  require(pixels != nullptr, "pixels is NULL");
  require(width > 0 && height > 0 && width <= 16384 && height <= 16384,
          "frame size " + std::to_string(width) + "x" + std::to_string(height) + " is outside 1..16384");
  const auto l = layout_of(format);
  const auto row = static_cast<std::size_t>(width) * static_cast<std::size_t>(l.channels);
  if (stride == 0) stride = row;
  require(stride >= row, "stride " + std::to_string(stride) + " is less than a row of " + std::to_string(width) + " pixels (" + std::to_string(row) + " bytes)");
  const auto hwc = torch::from_blob(const_cast<std::uint8_t*>(pixels), {height, width, l.channels},
                                    {static_cast<std::int64_t>(stride), l.channels, 1}, torch::kUInt8);
  auto rgb = hwc.narrow(2, 0, 3);
  if (l.bgr) rgb = rgb.flip({2});
  return rgb.permute({2, 0, 1}).contiguous();
}

// The row stride of a width x height frame in the caller's buffer; throws ArgumentError when it does not fit.
std::size_t checked_stride(const sg_frame* frame, std::int64_t width, std::int64_t height) {
  const auto l = layout_of(frame->format);
  const auto row = static_cast<std::size_t>(width) * static_cast<std::size_t>(l.channels);
  const auto stride = frame->stride == 0 ? row : frame->stride;
  require(stride >= row, "frame stride " + std::to_string(stride) + " is less than a row of " + std::to_string(width) + " pixels");
  const auto needed = stride * static_cast<std::size_t>(height - 1) + row;
  require(frame->pixels != nullptr && frame->capacity >= needed,
          "the frame buffer holds " + std::to_string(frame->capacity) + " bytes; a " + std::to_string(width) + "x" + std::to_string(height) +
              " frame needs " + std::to_string(needed));
  return stride;
}

// uint8 [3, H, W] -> the caller's frame buffer.
void image_to_frame(const torch::Tensor& image, sg_frame* frame) {
  const auto l = layout_of(frame->format);
  const int height = static_cast<int>(image.size(1)), width = static_cast<int>(image.size(2));
  const auto stride = checked_stride(frame, width, height);
  auto hwc = image.permute({1, 2, 0});
  if (l.bgr) hwc = hwc.flip({2});
  if (l.alpha) hwc = torch::cat({hwc, torch::full({height, width, 1}, 255, torch::kUInt8)}, 2);
  torch::from_blob(frame->pixels, {height, width, l.channels}, {static_cast<std::int64_t>(stride), l.channels, 1}, torch::kUInt8).copy_(hwc);
  frame->width = width;
  frame->height = height;
  frame->stride = stride;
}

}  // namespace

struct sg_pipeline {
  std::string kind;
  std::filesystem::path model;
  ComputeOptions compute;
  std::shared_ptr<StreamModels> sd;  // Stable Diffusion
  StreamDiT dit{nullptr};            // StreamDiT
  TemporalAutoencoder dit_autoencoder{nullptr};
  StreamDiTOptions dit_sampler;
  ErrorSlot error;
};

struct sg_stream {
  std::unique_ptr<LiveStream> stream;
  bool takes_frames = false;
  std::int64_t width = 0, height = 0;
  Fit fit = Fit::Crop;
  ErrorSlot error;
  std::mutex json_mutex;
  std::string stats_json;
};

struct sg_source {
  std::unique_ptr<FrameSource> source;
};

struct sg_sink {
  std::unique_ptr<FrameSink> sink;
  std::string spec;
};

extern "C" {

const char* sg_version(void) { return STREAMGEN_VERSION_STRING; }

const char* sg_build_info(void) {
  static const std::string info = nlohmann::json{{"version", STREAMGEN_VERSION_STRING},
                                                 {"api_version", SG_API_VERSION},
                                                 {"build_type", STREAMGEN_BUILD_TYPE},
                                                 {"compiler", STREAMGEN_COMPILER},
                                                 {"libtorch", TORCH_VERSION},
                                                 {"cuda_available", torch::cuda::is_available()}}
                                      .dump();
  return info.c_str();
}

const char* sg_last_error(void) { return t_last_error.c_str(); }

const char* sg_status_name(sg_status status) {
  switch (status) {
    case SG_OK: return "SG_OK";
    case SG_INVALID_ARGUMENT: return "SG_INVALID_ARGUMENT";
    case SG_ERROR: return "SG_ERROR";
    case SG_NO_FRAME: return "SG_NO_FRAME";
    case SG_END: return "SG_END";
    case SG_INTERNAL: return "SG_INTERNAL";
  }
  return "SG_UNKNOWN_STATUS";
}

sg_status sg_set_log_level(const char* level) {
  return guarded(nullptr, [&] {
    require(level != nullptr, "sg_set_log_level: level is NULL");
    const std::string l = level;
    if (l != "off" && l != "error" && l != "warn" && l != "info" && l != "debug")
      throw ArgumentError("log level '" + l + "' is not one of off, error, warn, info, debug");
    spdlog::set_level(spdlog::level::from_str(l == "warn" ? "warning" : l));
    return SG_OK;
  });
}

void sg_pipeline_options_init(sg_pipeline_options* o) {
  if (!o) return;
  *o = sg_pipeline_options{};
  o->struct_size = sizeof(sg_pipeline_options);
}

sg_status sg_pipeline_load(const sg_pipeline_options* o, sg_pipeline** out) {
  return guarded(nullptr, [&] {
    require(o != nullptr && out != nullptr, "sg_pipeline_load: options and out must not be NULL");
    require(o->struct_size == sizeof(sg_pipeline_options), "sg_pipeline_options.struct_size is " + std::to_string(o->struct_size) +
                                                               ": call sg_pipeline_options_init (built against another streamgen.h?)");
    require(o->model != nullptr, "sg_pipeline_options.model is NULL: give a pipeline or StreamDiT folder");
    require(o->lora_count == 0 || o->loras != nullptr, "sg_pipeline_options.loras is NULL with lora_count " + std::to_string(o->lora_count));
    *out = nullptr;
    auto p = std::make_unique<sg_pipeline>();
    p->model = o->model;
    ComputeOptions compute;
    compute.device = parse_device(text(o->device, "cpu"));
    compute.threads = o->threads;
    const auto dtype = text(o->dtype, "fp32");
    if (dtype == "auto") {
      compute.dtype = fastest_dtype(compute.device, stored_parameter_count(p->model));
      compute.auto_dtype = true;
    } else {
      compute.dtype = parse_dtype(dtype);
    }
    p->compute = apply_compute_options(compute);
    if (is_stream_dit_folder(p->model)) {
      if (o->taesd) throw Error("taesd is for Stable Diffusion pipelines; " + p->model.string() + " is a StreamDiT model (it decodes with its own autoencoder)");
      if (o->lora_count) throw Error("LoRAs adapt Stable Diffusion pipelines; " + p->model.string() + " is a StreamDiT model");
      p->kind = "streamdit";
      p->dit = load_stream_dit(p->model, p->compute);
      p->dit_autoencoder = load_dit_autoencoder(p->model, p->compute);
      read_sampler_settings(p->model, p->dit_sampler);
    } else {
      if (!std::filesystem::is_regular_file(p->model / "model_index.json"))
        throw Error("model " + p->model.string() + " is " + describe_model_folder(p->model) +
                    ": expected a Stable Diffusion pipeline folder (model_index.json) or a StreamDiT model");
      if (!o->taesd) throw Error("model " + p->model.string() + " is a Stable Diffusion pipeline: its streams need a TAESD folder (taesd)");
      StreamAdapters adapters;
      for (std::size_t i = 0; i < o->lora_count; ++i) {
        require(o->loras[i] != nullptr, "loras[" + std::to_string(i) + "] is NULL");
        adapters.loras.push_back(parse_lora_spec(o->loras[i], "loras"));
      }
      p->kind = "stable-diffusion";
      p->sd = StreamModels::load(p->model, o->taesd, p->compute, adapters);
    }
    *out = p.release();
    return SG_OK;
  });
}

const char* sg_pipeline_kind(const sg_pipeline* p) { return p ? p->kind.c_str() : ""; }
const char* sg_pipeline_last_error(const sg_pipeline* p) { return p ? p->error.get() : t_last_error.c_str(); }
void sg_pipeline_destroy(sg_pipeline* p) { delete p; }

void sg_stream_options_init(sg_stream_options* o) {
  if (!o) return;
  *o = sg_stream_options{};
  o->struct_size = sizeof(sg_stream_options);
  o->seed = 2;
  o->guidance_scale = 1.2f;
  o->delta = 1.0f;
  o->frame_buffer_size = 1;
  o->use_denoising_batch = 1;
  o->num_inference_steps = 50;
  o->do_add_noise = 1;
  o->similar_image_filter_threshold = 0.98f;
  o->similar_image_filter_max_skip = 10;
  o->fps = 24;
  o->input_capacity = 1;
  o->output_capacity = 4;
}

sg_status sg_stream_create(sg_pipeline* p, const sg_stream_options* o, sg_stream** out) {
  return guarded(p ? &p->error : nullptr, [&] {
    require(p != nullptr && o != nullptr && out != nullptr, "sg_stream_create: pipeline, options and out must not be NULL");
    require(o->struct_size == sizeof(sg_stream_options), "sg_stream_options.struct_size is " + std::to_string(o->struct_size) +
                                                             ": call sg_stream_options_init (built against another streamgen.h?)");
    require(o->width >= 0 && o->height >= 0 && o->width <= 8192 && o->height <= 8192, "width and height must be in 0..8192");
    require(o->input_capacity >= 1 && o->output_capacity >= 1, "input_capacity and output_capacity must be at least 1");
    require(o->t_index_count == 0 || o->t_index_list != nullptr, "t_index_list is NULL with t_index_count " + std::to_string(o->t_index_count));
    *out = nullptr;
    auto s = std::make_unique<sg_stream>();
    if (p->kind == "streamdit") {
      DiTRunnerOptions d;
      d.loaded = p->dit;
      d.loaded_autoencoder = p->dit_autoencoder;
      d.compute = p->compute;
      d.sampler = p->dit_sampler;
      d.sampler.seed = o->seed;
      d.prompt = text(o->prompt, "a red circle moving right");
      d.width = o->width > 0 ? o->width : 256;
      d.height = o->height > 0 ? o->height : d.width;
      d.fps = o->fps;
      d.output_capacity = static_cast<std::size_t>(o->output_capacity);
      check_dit_runner_options(d);
      s->width = d.width;
      s->height = d.height;
      s->stream = std::make_unique<DiTRunner>(std::move(d));
    } else {
      StreamRunnerOptions r;
      r.models = p->sd;
      r.compute = p->compute;
      r.width = o->width > 0 ? o->width : 512;
      r.height = o->height > 0 ? o->height : 512;
      r.prompt = text(o->prompt);
      r.negative_prompt = text(o->negative_prompt);
      r.seed = o->seed;
      const auto mode = text(o->mode, "img2img");
      if (mode != "img2img" && mode != "txt2img") throw Error("mode '" + mode + "' is not img2img or txt2img");
      r.stream.txt2img = mode == "txt2img";
      if (o->t_index_count > 0) r.stream.t_index_list.assign(o->t_index_list, o->t_index_list + o->t_index_count);
      r.stream.cfg = parse_cfg_type(text(o->cfg_type, r.stream.txt2img ? "none" : "self"));
      r.stream.guidance_scale = o->guidance_scale;
      r.stream.delta = o->delta;
      r.stream.frame_buffer_size = o->frame_buffer_size;
      r.stream.use_denoising_batch = o->use_denoising_batch != 0;
      r.stream.num_inference_steps = o->num_inference_steps;
      r.stream.do_add_noise = o->do_add_noise != 0;
      if (r.stream.txt2img) r.stream.warmup = Warmup::Suppress;
      if (o->similar_image_filter) r.ssf = SimilarityFilterOptions{o->similar_image_filter_threshold, o->similar_image_filter_max_skip};
      r.input_capacity = static_cast<std::size_t>(std::max(o->input_capacity, o->frame_buffer_size));
      r.output_capacity = static_cast<std::size_t>(o->output_capacity);
      check_stream_runner_options(r);
      s->fit = parse_fit(text(o->fit, "crop"));
      s->takes_frames = !r.stream.txt2img;
      s->width = r.width;
      s->height = r.height;
      s->stream = std::make_unique<StreamRunner>(std::move(r));
    }
    *out = s.release();
    return SG_OK;
  });
}

sg_status sg_stream_size(const sg_stream* s, int* width, int* height) {
  return guarded(nullptr, [&] {
    require(s != nullptr && width != nullptr && height != nullptr, "sg_stream_size: stream, width and height must not be NULL");
    *width = static_cast<int>(s->width);
    *height = static_cast<int>(s->height);
    return SG_OK;
  });
}

sg_status sg_stream_push(sg_stream* s, const std::uint8_t* pixels, int width, int height, std::size_t stride, sg_pixel_format format) {
  return guarded(s ? &s->error : nullptr, [&] {
    require(s != nullptr, "sg_stream_push: stream is NULL");
    if (!s->takes_frames) throw Error("this stream makes its frames from text alone (txt2img or text-to-video): it takes no input frames");
    auto image = image_from_pixels(pixels, width, height, stride, format);
    if (image.size(1) != s->height || image.size(2) != s->width) image = fit_image(image.unsqueeze(0), s->width, s->height, s->fit)[0];
    s->stream->push(image);
    return SG_OK;
  });
}

namespace {

sg_status pop_frame(sg_stream* s, int timeout_ms, sg_frame* frame, bool latest) {
  return guarded(s ? &s->error : nullptr, [&] {
    require(s != nullptr && frame != nullptr, "sg_stream_pop: stream and frame must not be NULL");
    require(timeout_ms >= 0, "timeout_ms must be 0 (no wait) or positive");
    checked_stride(frame, s->width, s->height);  // before popping: a buffer that is too small loses no frame
    auto f = s->stream->pop(std::chrono::milliseconds(timeout_ms));
    if (!f) return SG_NO_FRAME;
    if (latest)
      while (auto newer = s->stream->pop(std::chrono::milliseconds(0))) f = std::move(newer);
    image_to_frame(f->image_u8, frame);
    frame->index = static_cast<std::uint64_t>(f->index);
    frame->latency_ms = f->latency_ms;
    frame->repeated = f->repeated ? 1 : 0;
    return SG_OK;
  });
}

}  // namespace

sg_status sg_stream_pop(sg_stream* s, int timeout_ms, sg_frame* frame) { return pop_frame(s, timeout_ms, frame, false); }
sg_status sg_stream_pop_latest(sg_stream* s, int timeout_ms, sg_frame* frame) { return pop_frame(s, timeout_ms, frame, true); }

sg_status sg_stream_set_prompt(sg_stream* s, const char* prompt, const char* negative_prompt, int blend_frames) {
  return guarded(s ? &s->error : nullptr, [&] {
    require(s != nullptr && prompt != nullptr, "sg_stream_set_prompt: stream and prompt must not be NULL");
    require(blend_frames >= 0, "blend_frames must not be negative");
    s->stream->set_prompt(prompt, text(negative_prompt), blend_frames);
    return SG_OK;
  });
}

sg_status sg_stream_stats(sg_stream* s, sg_stats* out) {
  return guarded(s ? &s->error : nullptr, [&] {
    require(s != nullptr && out != nullptr, "sg_stream_stats: stream and stats must not be NULL");
    require(out->struct_size == sizeof(sg_stats), "sg_stats.struct_size must be sizeof(sg_stats)");
    const auto st = s->stream->stats();
    out->frames_in = st.frames_in;
    out->inputs_dropped = st.inputs_dropped;
    out->frames_skipped = st.frames_skipped;
    out->calls = st.calls;
    out->frames_out = st.frames_out;
    out->outputs_dropped = st.outputs_dropped;
    out->output_fps = st.output_fps;
    const auto stage = [&](const char* name) { return st.stages.count(name) ? st.stages.at(name) : StageTiming{}; };
    out->latency_ms_median = stage("latency").median_ms;
    out->latency_ms_p90 = stage("latency").p90_ms;
    out->model_ms_median = st.stages.count("unet") ? stage("unet").median_ms : stage("dit").median_ms;
    return SG_OK;
  });
}

const char* sg_stream_stats_json(sg_stream* s) {
  if (!s) return "{}";
  nlohmann::json j;
  const auto status = guarded(&s->error, [&] {
    const auto st = s->stream->stats();
    j = {{"frames_in", st.frames_in},   {"inputs_dropped", st.inputs_dropped}, {"frames_skipped", st.frames_skipped}, {"calls", st.calls},
         {"frames_out", st.frames_out}, {"outputs_dropped", st.outputs_dropped}, {"output_fps", st.output_fps}};
    for (const auto& [name, t] : st.stages) j["stages"][name] = {{"median_ms", t.median_ms}, {"p90_ms", t.p90_ms}, {"count", t.count}};
    return SG_OK;
  });
  std::lock_guard lock(s->json_mutex);
  s->stats_json = status == SG_OK ? j.dump() : "{}";
  return s->stats_json.c_str();
}

const char* sg_stream_last_error(const sg_stream* s) { return s ? s->error.get() : t_last_error.c_str(); }

void sg_stream_destroy(sg_stream* s) {
  if (!s) return;
  try {
    s->stream->stop();
  } catch (const std::exception& e) {
    spdlog::error("sg_stream_destroy: stopping the stream failed: {}", e.what());
  }
  delete s;
}

sg_status sg_source_open(const char* spec, sg_source** out) {
  return guarded(nullptr, [&] {
    require(spec != nullptr && out != nullptr, "sg_source_open: spec and out must not be NULL");
    *out = nullptr;
    auto s = std::make_unique<sg_source>();
    s->source = open_source(spec);
    *out = s.release();
    return SG_OK;
  });
}

sg_status sg_source_info(sg_source* s, int* width, int* height, double* fps, std::int64_t* frame_count) {
  return guarded(nullptr, [&] {
    require(s != nullptr, "sg_source_info: source is NULL");
    const auto& i = s->source->info();
    if (width) *width = static_cast<int>(i.width);
    if (height) *height = static_cast<int>(i.height);
    if (fps) *fps = i.fps;
    if (frame_count) *frame_count = i.frame_count;
    return SG_OK;
  });
}

sg_status sg_source_next(sg_source* s, sg_frame* frame) {
  return guarded(nullptr, [&] {
    require(s != nullptr && frame != nullptr, "sg_source_next: source and frame must not be NULL");
    layout_of(frame->format);
    auto f = s->source->next();
    if (!f) return SG_END;
    image_to_frame(f->rgb, frame);
    frame->index = static_cast<std::uint64_t>(f->index);
    frame->latency_ms = 0;
    frame->repeated = 0;
    return SG_OK;
  });
}

void sg_source_close(sg_source* s) { delete s; }

sg_status sg_sink_open(const char* spec, double fps, sg_sink** out) {
  return guarded(nullptr, [&] {
    require(spec != nullptr && out != nullptr, "sg_sink_open: spec and out must not be NULL");
    require(fps > 0 && fps <= 1000, "fps must be in (0, 1000]");
    *out = nullptr;
    SinkOptions options;
    options.fps = fps;
    auto s = std::make_unique<sg_sink>();
    s->spec = spec;
    s->sink = open_sink(spec, options);
    *out = s.release();
    return SG_OK;
  });
}

sg_status sg_sink_write(sg_sink* s, const std::uint8_t* pixels, int width, int height, std::size_t stride, sg_pixel_format format) {
  return guarded(nullptr, [&] {
    require(s != nullptr, "sg_sink_write: sink is NULL");
    s->sink->write(image_from_pixels(pixels, width, height, stride, format));
    return SG_OK;
  });
}

sg_status sg_sink_close(sg_sink* s) {
  if (!s) return SG_OK;
  std::unique_ptr<sg_sink> owned(s);
  return guarded(nullptr, [&] {
    owned->sink->close();
    return SG_OK;
  });
}

}  // extern "C"
