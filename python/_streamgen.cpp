// streamgen's native Python module: the C API (libstreamgen.so) with numpy arrays in and out. No PyTorch is
// imported; the engine's LibTorch lives inside the library. Calls that wait (loading, popping) release the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "streamgen/streamgen.h"

namespace py = pybind11;

namespace {

// Raised for every failed call; ValueError for bad arguments (SG_INVALID_ARGUMENT).
py::object error_type;

[[noreturn]] void raise(sg_status status, const char* message) {
  if (status == SG_INVALID_ARGUMENT) throw py::value_error(message);
  PyErr_SetString(error_type.ptr(), message);
  throw py::error_already_set();
}

void check(sg_status status, const char* message) {
  if (status != SG_OK) raise(status, message);
}

sg_pixel_format pixel_format(const std::string& name, py::ssize_t channels) {
  if (name == "rgb") return channels == 4 ? SG_PIXEL_RGBA8 : SG_PIXEL_RGB8;
  if (name == "bgr") return channels == 4 ? SG_PIXEL_BGRA8 : SG_PIXEL_BGR8;
  throw py::value_error("channel order '" + name + "' is not 'rgb' or 'bgr'");
}

class Pipeline {
 public:
  Pipeline(const std::string& model, std::optional<std::string> taesd, const std::string& device, const std::string& dtype,
           const std::vector<std::string>& loras, int threads) {
    sg_pipeline_options o;
    sg_pipeline_options_init(&o);
    o.model = model.c_str();
    o.taesd = taesd ? taesd->c_str() : nullptr;
    o.device = device.c_str();
    o.dtype = dtype.c_str();
    std::vector<const char*> specs;
    for (const auto& l : loras) specs.push_back(l.c_str());
    o.loras = specs.data();
    o.lora_count = specs.size();
    o.threads = threads;
    sg_pipeline* p = nullptr;
    sg_status status;
    {
      py::gil_scoped_release release;
      status = sg_pipeline_load(&o, &p);
    }
    check(status, sg_last_error());
    handle_.reset(p, sg_pipeline_destroy);
  }
  std::string kind() const { return sg_pipeline_kind(handle_.get()); }
  sg_pipeline* get() const { return handle_.get(); }

 private:
  std::shared_ptr<sg_pipeline> handle_;
};

class Stream {
 public:
  Stream(const Pipeline& pipeline, int width, int height, const std::string& prompt, const std::string& negative_prompt, std::uint64_t seed,
         const std::string& mode, const std::vector<std::int32_t>& t_index_list, int num_inference_steps, const std::string& cfg_type,
         double guidance_scale, double delta, int frame_buffer_size, bool use_denoising_batch, bool do_add_noise, bool similar_image_filter,
         double similar_image_filter_threshold, int similar_image_filter_max_skip, const std::string& fit, double fps, int input_capacity,
         int output_capacity)
      : pipeline_(pipeline) {
    sg_stream_options o;
    sg_stream_options_init(&o);
    o.width = width;
    o.height = height;
    o.prompt = prompt.c_str();
    o.negative_prompt = negative_prompt.c_str();
    o.seed = seed;
    o.mode = mode.c_str();
    o.t_index_list = t_index_list.empty() ? nullptr : t_index_list.data();
    o.t_index_count = t_index_list.size();
    o.num_inference_steps = num_inference_steps;
    o.cfg_type = cfg_type.c_str();
    o.guidance_scale = static_cast<float>(guidance_scale);
    o.delta = static_cast<float>(delta);
    o.frame_buffer_size = frame_buffer_size;
    o.use_denoising_batch = use_denoising_batch;
    o.do_add_noise = do_add_noise;
    o.similar_image_filter = similar_image_filter;
    o.similar_image_filter_threshold = static_cast<float>(similar_image_filter_threshold);
    o.similar_image_filter_max_skip = similar_image_filter_max_skip;
    o.fit = fit.c_str();
    o.fps = fps;
    o.input_capacity = input_capacity;
    o.output_capacity = output_capacity;
    sg_stream* s = nullptr;
    sg_status status;
    {
      py::gil_scoped_release release;
      status = sg_stream_create(pipeline.get(), &o, &s);
    }
    check(status, sg_last_error());
    stream_ = s;
    int w = 0, h = 0;
    check(sg_stream_size(s, &w, &h), sg_last_error());
    width_ = w;
    height_ = h;
  }
  ~Stream() { close(); }

  // image: uint8 [H, W, 3 or 4], any strides along H (rows may be padded); copied before push returns.
  void push(py::array_t<std::uint8_t, py::array::forcecast> image, const std::string& channel_order) {
    auto* s = live();
    if (image.ndim() != 3 || (image.shape(2) != 3 && image.shape(2) != 4))
      throw py::value_error("push: the image must be a uint8 array [height, width, 3 or 4], got " + std::to_string(image.ndim()) + " dimensions");
    // The C API reads rows of packed pixels: make the pixels within a row contiguous if they are not.
    if (image.strides(2) != 1 || image.strides(1) != image.shape(2)) image = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>(image);
    const auto format = pixel_format(channel_order, image.shape(2));
    sg_status status;
    {
      py::gil_scoped_release release;
      status = sg_stream_push(s, image.data(), static_cast<int>(image.shape(1)), static_cast<int>(image.shape(0)),
                              static_cast<std::size_t>(image.strides(0)), format);
    }
    check(status, sg_stream_last_error(s));
  }

  // The next (or newest) output as uint8 [H, W, 3], or None when none came within `timeout` seconds (None: wait for it).
  py::object pop(std::optional<double> timeout, bool latest) {
    auto* s = live();
    py::array_t<std::uint8_t> out({height(), width(), py::ssize_t{3}});
    sg_frame f{};
    f.pixels = out.mutable_data();
    f.capacity = static_cast<std::size_t>(out.size());
    f.format = SG_PIXEL_RGB8;
    sg_status status;
    {
      py::gil_scoped_release release;
      // Without a timeout, wait in slices so that Ctrl-C reaches Python between them.
      do {
        const int ms = timeout ? static_cast<int>(*timeout * 1000) : 200;
        status = latest ? sg_stream_pop_latest(s, ms, &f) : sg_stream_pop(s, ms, &f);
        if (status == SG_NO_FRAME && !timeout) {
          py::gil_scoped_acquire acquire;
          if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        }
      } while (status == SG_NO_FRAME && !timeout);
    }
    if (status == SG_NO_FRAME) return py::none();
    check(status, sg_stream_last_error(s));
    last_index_ = f.index;
    last_latency_ms_ = f.latency_ms;
    return std::move(out);
  }

  void set_prompt(const std::string& prompt, const std::string& negative_prompt, int blend_frames) {
    auto* s = live();
    check(sg_stream_set_prompt(s, prompt.c_str(), negative_prompt.c_str(), blend_frames), sg_stream_last_error(s));
  }

  py::dict stats() {
    auto* s = live();
    const std::string json = sg_stream_stats_json(s);
    return py::module_::import("json").attr("loads")(json);
  }

  void close() {
    if (!stream_) return;
    auto* s = stream_;
    stream_ = nullptr;
    py::gil_scoped_release release;
    sg_stream_destroy(s);
  }

  py::ssize_t width() const { return width_; }
  py::ssize_t height() const { return height_; }

  py::ssize_t width_ = 0, height_ = 0;  // the output size, as the engine resolved the options'
  std::uint64_t last_index_ = 0;
  double last_latency_ms_ = 0;

 private:
  sg_stream* live() const {
    if (!stream_) throw py::value_error("the stream is closed");
    return stream_;
  }

  Pipeline pipeline_;  // keeps the models alive as long as the stream
  sg_stream* stream_ = nullptr;
};

}  // namespace

PYBIND11_MODULE(_streamgen, m) {
  m.doc() = "streamgen's native module: real-time streaming diffusion over the C API (numpy in and out)";
  static py::exception<std::runtime_error> error(m, "Error", PyExc_RuntimeError);
  error_type = error;
  m.attr("__version__") = sg_version();
  m.def("build_info", [] { return py::module_::import("json").attr("loads")(sg_build_info()); });
  m.def(
      "set_log_level", [](const std::string& level) { check(sg_set_log_level(level.c_str()), sg_last_error()); }, py::arg("level"));

  py::class_<Pipeline>(m, "Pipeline", "Loaded models: a Stable Diffusion pipeline folder with its TAESD, or a StreamDiT folder")
      .def(py::init<const std::string&, std::optional<std::string>, const std::string&, const std::string&, const std::vector<std::string>&, int>(),
           py::arg("model"), py::arg("taesd") = py::none(), py::arg("device") = "cpu", py::arg("dtype") = "fp32",
           py::arg("loras") = std::vector<std::string>{}, py::arg("threads") = 0)
      .def_property_readonly("kind", &Pipeline::kind);

  py::class_<Stream>(m, "Stream", "A live stream on a pipeline: frames (or text) in, frames out, on the engine's own threads")
      .def(py::init([](const Pipeline& p, int width, int height, const std::string& prompt, const std::string& negative_prompt, std::uint64_t seed,
                       const std::string& mode, const std::vector<std::int32_t>& t_index_list, int num_inference_steps, const std::string& cfg_type,
                       double guidance_scale, double delta, int frame_buffer_size, bool use_denoising_batch, bool do_add_noise,
                       bool similar_image_filter, double similar_image_filter_threshold, int similar_image_filter_max_skip, const std::string& fit,
                       double fps, int input_capacity, int output_capacity) {
             return std::make_unique<Stream>(p, width, height, prompt, negative_prompt, seed, mode, t_index_list, num_inference_steps, cfg_type,
                                             guidance_scale, delta, frame_buffer_size, use_denoising_batch, do_add_noise, similar_image_filter,
                                             similar_image_filter_threshold, similar_image_filter_max_skip, fit, fps, input_capacity,
                                             output_capacity);
           }),
           py::arg("pipeline"), py::arg("width") = 512, py::arg("height") = 512, py::arg("prompt") = "", py::arg("negative_prompt") = "",
           py::arg("seed") = 2, py::arg("mode") = "img2img", py::arg("t_index_list") = std::vector<std::int32_t>{},
           py::arg("num_inference_steps") = 50, py::arg("cfg_type") = "self", py::arg("guidance_scale") = 1.2, py::arg("delta") = 1.0,
           py::arg("frame_buffer_size") = 1, py::arg("use_denoising_batch") = true, py::arg("do_add_noise") = true,
           py::arg("similar_image_filter") = false, py::arg("similar_image_filter_threshold") = 0.98, py::arg("similar_image_filter_max_skip") = 10,
           py::arg("fit") = "crop", py::arg("fps") = 24.0, py::arg("input_capacity") = 1, py::arg("output_capacity") = 4)
      .def("push", &Stream::push, py::arg("image"), py::arg("channel_order") = "rgb",
           "An image as a uint8 array [height, width, 3 or 4] of any size (fitted to the stream's); never blocks")
      .def("pop", &Stream::pop, py::arg("timeout") = py::none(), py::arg("latest") = false,
           "The next output (latest=True: the newest) as uint8 [height, width, 3]; None after `timeout` seconds without one")
      .def("set_prompt", &Stream::set_prompt, py::arg("prompt"), py::arg("negative_prompt") = "", py::arg("blend_frames") = 0)
      .def("stats", &Stream::stats, "Counters, output FPS and every stage's median / p90 / count")
      .def("close", &Stream::close)
      .def_readonly("width", &Stream::width_)
      .def_readonly("height", &Stream::height_)
      .def_readonly("last_latency_ms", &Stream::last_latency_ms_)
      .def("__enter__", [](Stream& s) -> Stream& { return s; })
      .def("__exit__", [](Stream& s, py::args) { s.close(); });
}
