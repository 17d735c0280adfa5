// streamgen serve: the web page and its WebSocket streams.
#include <fmt/core.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <iostream>
#include <thread>

#include "commands.h"
#include "streamgen/server.h"

namespace streamgen::cli {

void register_serve(CLI::App& app) {
  struct Args {
    std::string model, taesd, host = "127.0.0.1", prompt = "an oil painting, vivid colours";
    int port = 8080, max_sessions = 4;
    std::int64_t width = 512, height = 512;
    std::vector<std::int64_t> t_index{32, 45};
    ComputeArgs compute;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("serve", "Serve the web page: camera or video in the browser, generated frames back live");
  cmd->add_option("--model", a->model, "Diffusers pipeline folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--taesd", a->taesd, "TAESD folder (the stream's encoder and decoder)")->required()->check(CLI::ExistingPath);
  cmd->add_option("--host", a->host, "Address to bind; anything but 127.0.0.1 exposes the server to the network")->capture_default_str();
  cmd->add_option("--port", a->port, "Port (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--max-sessions", a->max_sessions, "Browser sessions served at once; more get a 'busy' message")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("-W,--width", a->width, "Frame width (multiple of 8)")->capture_default_str();
  cmd->add_option("-H,--height", a->height, "Frame height (multiple of 8)")->capture_default_str();
  cmd->add_option("--t-index", a->t_index, "Default slots (the page's strength slider overrides)")->delimiter(',')->capture_default_str();
  cmd->add_option("--prompt,-p", a->prompt, "Prompt of a new session until the page sends its own")->capture_default_str();
  a->compute.add_to(*cmd);
  cmd->callback([a] {
    ServerOptions o;
    o.host = a->host;
    o.port = static_cast<unsigned short>(a->port);
    o.max_sessions = a->max_sessions;
    o.stream.model = a->model;
    o.stream.taesd = a->taesd;
    o.stream.compute = a->compute.resolve();
    o.stream.width = a->width;
    o.stream.height = a->height;
    o.stream.prompt = a->prompt;
    o.stream.stream.t_index_list = a->t_index;
    o.stream.stream.cfg = CfgType::Self;
    o.stream.input_capacity = 1;
    o.stream.output_capacity = 2;
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
