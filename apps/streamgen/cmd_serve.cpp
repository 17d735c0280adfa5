// streamgen serve: the web page and its WebSocket streams.
#include <fmt/core.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <thread>

#include "commands.h"
#include "streamgen/dit.h"
#include "streamgen/error.h"
#include "streamgen/model_folder.h"
#include "streamgen/server.h"

namespace streamgen::cli {

void register_serve(CLI::App& app) {
  struct Args {
    std::string model, taesd, host = "127.0.0.1", prompt;
    int port = 8080, max_sessions = 4;
    std::int64_t width = 0, height = 0;  // 0: 512 for Stable Diffusion, 256 for StreamDiT
    double fps = 24;
    StreamDiTOptions dit;
    std::vector<std::int64_t> t_index{32, 45};
    std::vector<std::string> loras;
    ControlNetArgs controlnet;
    ComputeArgs compute;
    ServerTimeouts timeouts;
  };
  auto a = std::make_shared<Args>();
  a->dit.chunk_frames = 2;
  a->dit.micro_steps = 1;  // without a sampler.json in the model: the student's setting, one pass per emitted chunk
  auto* cmd = app.add_subcommand("serve", "Serve the web page: camera or video in the browser, generated frames back live "
                                          "(Stable Diffusion), or live text-to-video (StreamDiT)");
  cmd->add_option("--model", a->model, "Diffusers pipeline folder, or a StreamDiT folder (text-to-video)")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--taesd", a->taesd, "TAESD folder (the stream's encoder and decoder; Stable Diffusion only)")->check(CLI::ExistingPath);
  cmd->add_option("--host", a->host, "Address to bind; anything but 127.0.0.1 exposes the server to the network")->capture_default_str();
  cmd->add_option("--port", a->port, "Port (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--max-sessions", a->max_sessions, "Browser sessions served at once; more get a 'busy' message")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("-W,--width", a->width, "Frame width (Stable Diffusion: the model's, a multiple of 8, default 512; StreamDiT: frames are resized to it, default 256)");
  cmd->add_option("-H,--height", a->height, "Frame height (as --width)");
  cmd->add_option("--t-index", a->t_index, "Default slots (the page's strength slider overrides)")->delimiter(',')->capture_default_str();
  cmd->add_option("--prompt,-p", a->prompt, "Prompt of a new session until the page sends its own (default: an example for the model)");
  add_lora_option(*cmd, a->loras);
  a->controlnet.add_to(*cmd);
  auto* dit_group = cmd->add_option_group("StreamDiT", "Text-to-video sessions (a StreamDiT --model)");
  dit_group->add_option("--chunk-size,-c", a->dit.chunk_frames, "Frames per chunk c (default: the model's sampler.json, else 2)");
  dit_group->add_option("--micro-steps,-s", a->dit.micro_steps, "Euler steps per chunk s (default: the model's sampler.json, else 1)");
  dit_group->add_option("--guidance,-g", a->dit.guidance, "CFG scale (1: no CFG; default: the model's sampler.json, else 1; the page's slider overrides)");
  add_guidance_shape_options(*dit_group, a->dit);
  dit_group->add_option("--fps", a->fps, "Pace of the video sent to the page (0: as fast as it is made)")->capture_default_str();
  auto& t = a->timeouts;
  cmd->add_option("--handshake-timeout", t.handshake_s, "Seconds a connection has to send its request and open the WebSocket")
      ->capture_default_str();
  cmd->add_option("--idle-timeout", t.idle_s, "Seconds an img2img session may send no frame or message before it is closed "
                                              "(txt2img and text-to-video sessions do not idle)")
      ->capture_default_str();
  cmd->add_option("--write-timeout", t.write_s, "Seconds a client may leave one message unread before its connection is closed")
      ->capture_default_str();
  a->compute.add_to(*cmd, /*with_dtype=*/true, /*with_auto=*/true);
  cmd->callback([a, cmd] {
    ServerOptions o;
    o.host = a->host;
    o.port = static_cast<unsigned short>(a->port);
    o.max_sessions = a->max_sessions;
    o.timeouts = a->timeouts;
    // Everything is checked before anything loads: the model folder's kind, then every option.
    const bool dit = is_stream_dit_folder(a->model);
    if (!dit) {
      if (!std::filesystem::is_regular_file(std::filesystem::path(a->model) / "model_index.json"))
        throw Error("--model " + a->model + " is " + describe_model_folder(a->model) +
                    ": serve takes a Stable Diffusion pipeline folder (model_index.json) or a StreamDiT model");
      if (a->taesd.empty())
        throw Error("--model " + a->model + " is a Stable Diffusion pipeline: it streams through TAESD, give its folder with --taesd");
      if (folder_class_name(a->taesd) != "AutoencoderTiny")
        throw Error("--taesd " + a->taesd + " is " + describe_model_folder(a->taesd) + ", not a TAESD folder (config.json with _class_name AutoencoderTiny)");
    } else if (!a->taesd.empty()) {
      throw Error("--taesd is for Stable Diffusion pipelines; " + a->model + " is a StreamDiT model (it decodes with its own autoencoder)");
    }
    if (dit) {
      DiTRunnerOptions d;
      d.model = a->model;
      apply_model_sampler_settings(*cmd, a->model, a->dit);  // the settings the model card was measured with
      d.sampler = a->dit;
      d.prompt = a->prompt.empty() ? "a red circle moving right" : a->prompt;
      d.width = a->width > 0 ? a->width : 256;
      d.height = a->height > 0 ? a->height : d.width;
      d.fps = a->fps;
      o.dit = d;
    }
    o.stream.model = a->model;
    o.stream.taesd = a->taesd;
    o.stream.width = a->width > 0 ? a->width : 512;
    o.stream.height = a->height > 0 ? a->height : 512;
    o.stream.prompt = a->prompt.empty() ? "an oil painting, vivid colours" : a->prompt;
    o.stream.stream.t_index_list = a->t_index;
    o.stream.stream.cfg = CfgType::Self;
    o.stream.input_capacity = 1;
    o.stream.output_capacity = 2;
    o.stream.adapters.loras = lora_specs(a->loras);  // their scales stay adjustable from the page
    if (!dit) a->controlnet.apply(o.stream);
    else if (!a->controlnet.controlnets.empty()) o.stream.adapters.controlnets = {a->controlnet.controlnets.front()};  // refused below
    validate_server_options(o);

    const auto compute = a->compute.resolve_for_model(a->model);
    o.stream.compute = compute;
    if (o.dit) {
      o.dit->compute = compute;
      spdlog::info("StreamDiT model {}: text-to-video sessions, c = {}, s = {}, guidance {}{}, {} FPS", a->model, a->dit.chunk_frames,
                   a->dit.micro_steps, describe_guidance(a->dit), describe_colour_hold(a->dit), a->fps);
    }
    if (o.host != "127.0.0.1" && o.host != "::1") spdlog::warn("binding to {}: the server is reachable from other machines", o.host);
    Server server(o);
    server.start();
    // Printed on stdout (flushed) so that scripts and tests can read the port when --port 0.
    std::cout << fmt::format("serving on http://{}:{}/", o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host, server.port()) << std::endl;
    const auto& stop = interrupt_flag();
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    spdlog::info("stopping");
    server.stop();
  });
}

}  // namespace streamgen::cli
