// Server overhead: the same stream (same models, size and options) driven in-process through
// StreamRunner push/pop and through `streamgen serve`'s WebSocket over loopback (JPEG both ways),
// one frame in flight at a time, so that the difference is what the server adds per frame.
#include <torch/torch.h>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <nlohmann/json.hpp>

#include "streamgen/bench.h"
#include "streamgen/error.h"
#include "streamgen/image_io.h"
#include "streamgen/server.h"
#include "streamgen/timing.h"

namespace streamgen {
namespace {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using Clock = std::chrono::steady_clock;

constexpr int kWarmup = 3;

struct Pass {
  std::vector<double> latency_ms;
  double seconds = 0;
};

Pass in_process(const StreamRunnerOptions& opts, const torch::Tensor& frame, int frames) {
  StreamRunner runner(opts);
  Pass p;
  Clock::time_point start;
  for (int i = 0; i < kWarmup + frames; ++i) {
    if (i == kWarmup) start = Clock::now();
    const auto t0 = Clock::now();
    runner.push(frame);
    if (!runner.pop(std::chrono::seconds(600))) throw Error("bench serve: the in-process stream stopped");
    if (i >= kWarmup) p.latency_ms.push_back(ms_since(t0));
  }
  p.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return p;
}

Pass over_websocket(const StreamRunnerOptions& opts, const torch::Tensor& frame, int frames) {
  ServerOptions so;
  so.port = 0;
  so.max_sessions = 1;
  so.stream = opts;
  Server server(so);
  server.start();
  net::io_context ioc;
  websocket::stream<net::ip::tcp::socket> ws(ioc);
  ws.next_layer().connect({net::ip::make_address("127.0.0.1"), server.port()});
  ws.next_layer().set_option(net::ip::tcp::no_delay(true));  // as a browser does
  ws.handshake("127.0.0.1", "/ws");
  auto read = [&](beast::flat_buffer& b) {
    b.clear();
    ws.read(b);
    return ws.got_text();
  };
  beast::flat_buffer b;
  while (read(b)) {  // until "ready"
    const auto j = nlohmann::json::parse(beast::buffers_to_string(b.data()));
    if (j["type"] == "ready") break;
    if (j["type"] == "error") throw Error("bench serve: " + j["message"].get<std::string>());
  }
  const auto jpeg = encode_jpeg(frame, 85);
  Pass p;
  Clock::time_point start;
  for (int i = 0; i < kWarmup + frames; ++i) {
    if (i == kWarmup) start = Clock::now();
    const auto t0 = Clock::now();
    ws.binary(true);
    ws.write(net::buffer(jpeg));
    while (read(b)) {  // skip stats messages until the frame
    }
    decode_image(beast::buffers_to_string(b.data()), "frame");
    if (i >= kWarmup) p.latency_ms.push_back(ms_since(t0));
  }
  p.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ws.close(websocket::close_code::normal);
  return p;
}

}  // namespace

std::vector<BenchRow> bench_serve(const ServeBenchOptions& o) {
  StreamRunnerOptions opts;
  opts.width = opts.height = o.size;
  opts.prompt = "an oil painting";
  opts.stream.t_index_list = {35};
  opts.stream.cfg = CfgType::Self;
  opts.input_capacity = 1;
  opts.output_capacity = 2;
  opts.models = StreamModels::load(o.model, o.taesd, o.compute);
  const auto frame = torch::randint(0, 256, {3, o.size, o.size}, torch::kUInt8);
  const auto a = in_process(opts, frame, o.frames);
  const auto b = over_websocket(opts, frame, o.frames);
  BenchRow row;
  row["name"] = "serve_vs_in_process";
  row["size"] = o.size;
  row["frames"] = o.frames;
  row["in_process_fps"] = o.frames / a.seconds;
  row["websocket_fps"] = o.frames / b.seconds;
  row["fps_loss"] = 1.0 - a.seconds / b.seconds;
  row["in_process_latency_ms"] = percentile(a.latency_ms, 50);
  row["websocket_latency_ms"] = percentile(b.latency_ms, 50);
  row["added_latency_ms"] = percentile(b.latency_ms, 50) - percentile(a.latency_ms, 50);
  return {row};
}

}  // namespace streamgen
