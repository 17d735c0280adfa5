// `streamgen serve` over loopback with a real WebSocket client: frames in -> frames out, prompt
// hot-swap, separate sessions, malformed and oversized messages, admission control, HTTP routes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <nlohmann/json.hpp>
#include <array>
#include <cmath>
#include <functional>

#include "streamgen/error.h"
#include "streamgen/image_io.h"
#include "streamgen/server.h"
#include "dit_test_util.h"
#include "test_util.h"

namespace streamgen {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;

ServerOptions tiny_server(int max_sessions = 2) {
  ServerOptions o;
  o.port = 0;
  o.max_sessions = max_sessions;
  o.stream.model = test::data_path("tiny-sd21");
  o.stream.taesd = test::data_path("taesd");
  o.stream.width = o.stream.height = 64;
  o.stream.prompt = "a cat";
  o.stream.stream.t_index_list = {32, 45};
  o.stream.stream.cfg = CfgType::Self;
  o.stream.output_capacity = 2;
  return o;
}

std::string jpeg_frame(std::uint64_t seed) {
  torch::manual_seed(seed);
  return encode_jpeg(torch::randint(0, 256, {3, 80, 96}, torch::kUInt8), 90);
}

// A WebSocket client with blocking calls; a read gives up after 20 s instead of hanging the suite.
class Client {
 public:
  explicit Client(unsigned short port) : ws_(ioc_) {
    ws_.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    ws_.handshake("127.0.0.1", "/ws");
  }
  void send_text(const std::string& s) {
    ws_.text(true);
    ws_.write(net::buffer(s));
  }
  void send_json(const json& j) { send_text(j.dump()); }
  void send_binary(const std::string& s) {
    ws_.binary(true);
    ws_.write(net::buffer(s));
  }
  // For messages the server may refuse mid-write: it can close the socket before the whole payload
  // is sent, which the writer sees as a broken pipe or reset. Returns whether the write completed.
  bool send_binary_maybe_refused(const std::string& s) {
    ws_.binary(true);
    beast::error_code ec;
    ws_.write(net::buffer(s), ec);
    return !ec;
  }
  // The next text message of this type (others, e.g. stats, are skipped); frames are kept for next_frame().
  json next_json(const std::string& type) {
    for (int i = 0; i < 200; ++i) {
      auto [text, data] = read();
      if (!text) {
        frames_.push_back(data);
        continue;
      }
      auto j = json::parse(data);
      if (j["type"] == type) return j;
      if (j["type"] == "error" && type != "error") ADD_FAILURE() << "unexpected error: " << data;
    }
    ADD_FAILURE() << "no '" << type << "' message";
    return {};
  }
  torch::Tensor next_frame() {
    // Stats arrive twice a second whether frames do or not: 100 text messages without a frame is a failure.
    for (int i = 0; frames_.empty(); ++i) {
      if (i == 100) throw std::runtime_error("100 messages and no frame");
      auto [text, data] = read();
      if (!text) return decode_image(data, "frame");
    }
    auto f = frames_.front();
    frames_.erase(frames_.begin());
    return decode_image(f, "frame");
  }
  // Reads until the server closes; returns the close code, or -1 if the connection was dropped
  // without a close frame reaching us (a server may reset a connection it refuses to read further).
  int wait_close() {
    try {
      while (true) read();
    } catch (const beast::system_error& e) {
      if (e.code() != websocket::error::closed) return -1;
    }
    return ws_.reason().code;
  }
  void close() { ws_.close(websocket::close_code::normal); }

 private:
  std::pair<bool, std::string> read() {
    beast::flat_buffer b;
    beast::error_code ec;
    bool done = false;
    ws_.async_read(b, [&](beast::error_code e, std::size_t) {
      ec = e;
      done = true;
    });
    ioc_.restart();
    ioc_.run_for(std::chrono::seconds(20));
    if (!done) {
      ws_.next_layer().cancel();
      ioc_.restart();
      ioc_.run();
      throw std::runtime_error("no message from the server within 20 s");
    }
    if (ec) throw beast::system_error(ec);
    return {ws_.got_text(), beast::buffers_to_string(b.data())};
  }
  net::io_context ioc_;
  websocket::stream<tcp::socket> ws_;
  std::vector<std::string> frames_;
};

std::pair<int, std::string> http_get(unsigned short port, const std::string& target) {
  net::io_context ioc;
  tcp::socket s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::empty_body> req(http::verb::get, target, 11);
  req.set(http::field::host, "127.0.0.1");
  http::write(s, req);
  beast::flat_buffer b;
  http::response<http::string_body> res;
  http::read(s, b, res);
  return {static_cast<int>(res.result_int()), res.body()};
}

TEST(Server, FramesInFramesOutAndPromptHotSwap) {
  Server server(tiny_server());
  server.start();
  Client c(server.port());
  const auto ready = c.next_json("ready");
  EXPECT_EQ(ready["prompt"], "a cat");
  EXPECT_EQ(ready["width"], 64);
  c.send_binary(jpeg_frame(1));
  const auto out = c.next_frame();
  EXPECT_EQ(out.sizes(), (std::vector<std::int64_t>{1, 3, 64, 64}));

  c.send_json({{"type", "config"}, {"prompt", "a dog"}});
  const auto cfg = c.next_json("config");
  EXPECT_EQ(cfg["prompt"], "a dog");
  EXPECT_FALSE(cfg["restarted"].get<bool>());  // a prompt change is a hot swap
  c.send_binary(jpeg_frame(2));
  EXPECT_EQ(c.next_frame().size(3), 64);

  c.send_json({{"type", "config"}, {"guidance", 1.5}, {"t_index", {20, 40}}});
  EXPECT_TRUE(c.next_json("config")["restarted"].get<bool>());
  c.send_binary(jpeg_frame(3));
  EXPECT_EQ(c.next_frame().size(2), 64);
  c.close();
}

TEST(Server, SdxlPipelinesServeWithTaesdXl) {
  auto o = tiny_server();
  o.stream.model = test::data_path("tiny-sdxl");
  o.stream.taesd = test::data_path("taesdxl");
  Server server(o);
  server.start();
  Client c(server.port());
  EXPECT_EQ(c.next_json("ready")["prompt"], "a cat");
  c.send_binary(jpeg_frame(1));
  EXPECT_EQ(c.next_frame().sizes(), (std::vector<std::int64_t>{1, 3, 64, 64}));
  c.send_json({{"type", "config"}, {"prompt", "a dog"}});  // both text encoders, the pooled projection: a hot swap
  EXPECT_FALSE(c.next_json("config")["restarted"].get<bool>());
  c.send_binary(jpeg_frame(2));
  EXPECT_EQ(c.next_frame().size(3), 64);
  c.close();
}

TEST(Server, LoraScalesChangeLiveAndEverySessionHearsIt) {
  auto o = tiny_server();
  o.stream.model = test::data_path("tiny-sd15");
  o.stream.adapters.loras = {{test::data_path("lora/tiny-sd15_kohya_r4.safetensors"), 1.0}};
  Server server(o);
  server.start();
  Client a(server.port()), b(server.port());
  const auto ready = a.next_json("ready");
  EXPECT_EQ(ready["loras"], json::parse(R"([{"file":"tiny-sd15_kohya_r4.safetensors","scale":1.0}])"));
  b.next_json("ready");
  a.send_binary(jpeg_frame(1));
  EXPECT_EQ(a.next_frame().size(3), 64);

  a.send_json({{"type", "config"}, {"lora_scales", {0.5}}});
  for (auto* c : {&a, &b}) {  // the models are shared: both sessions are told
    const auto changed = c->next_json("loras");
    EXPECT_EQ(changed["loras"][0]["scale"], 0.5);
    EXPECT_GE(changed["fuse_ms"].get<double>(), 0.0);
  }
  b.send_json({{"type", "config"}, {"prompt", "a dog"}});
  EXPECT_EQ(b.next_json("config")["loras"][0]["scale"], 0.5);
  a.send_json({{"type", "config"}, {"lora_scales", {0.5, 1.0}}});
  EXPECT_NE(a.next_json("error")["message"].get<std::string>().find("one scale per LoRA: 2 given, 1 loaded"), std::string::npos);
  a.send_binary(jpeg_frame(2));
  EXPECT_EQ(a.next_frame().size(3), 64);  // the stream goes on
  a.close();
  b.close();

  Server plain(tiny_server());
  plain.start();
  Client c(plain.port());
  EXPECT_EQ(c.next_json("ready")["loras"], json::array());
  c.send_json({{"type", "config"}, {"lora_scales", {0.5}}});
  EXPECT_NE(c.next_json("error")["message"].get<std::string>().find("this server has no LoRA loaded"), std::string::npos);
  c.close();
}

TEST(Server, ControlNetScalesAndSourceArePerSessionAndLive) {
  auto o = tiny_server();
  o.stream.model = test::data_path("tiny-sd15");
  o.stream.adapters.controlnets = {test::data_path("controlnet")};
  Server server(o);
  server.start();
  Client c(server.port());
  const auto ready = c.next_json("ready");
  EXPECT_EQ(ready["controlnets"], json::parse(R"([{"folder":"controlnet","scale":1.0}])"));
  EXPECT_EQ(ready["control"], "canny");
  c.send_binary(jpeg_frame(1));
  EXPECT_EQ(c.next_frame().size(3), 64);
  c.send_json({{"type", "config"}, {"controlnet_scales", {0.4}}, {"control", "frame"}});
  const auto cfg = c.next_json("config");
  EXPECT_FALSE(cfg["restarted"].get<bool>());
  EXPECT_EQ(cfg["controlnets"][0]["scale"], 0.4);
  EXPECT_EQ(cfg["control"], "frame");
  c.send_binary(jpeg_frame(2));
  EXPECT_EQ(c.next_frame().size(3), 64);
  c.send_json({{"type", "config"}, {"controlnet_scales", {0.4, 1}}});
  EXPECT_NE(c.next_json("error")["message"].get<std::string>().find("one scale per ControlNet: 2 given, 1 loaded"), std::string::npos);
  c.send_json({{"type", "config"}, {"mode", "txt2img"}});  // no frames to see: refused, the img2img stream goes on
  EXPECT_NE(c.next_json("error")["message"].get<std::string>().find("no input frames"), std::string::npos);
  c.close();
}

TEST(Server, TwoSessionsGetTheirOwnStreams) {
  Server server(tiny_server());
  server.start();
  Client a(server.port()), b(server.port());
  const auto ra = a.next_json("ready"), rb = b.next_json("ready");
  EXPECT_NE(ra["session"], rb["session"]);
  a.send_json({{"type", "config"}, {"prompt", "a red house"}, {"seed", 1}});
  b.send_json({{"type", "config"}, {"prompt", "a blue boat"}, {"seed", 7}});
  a.next_json("config");
  b.next_json("config");
  const auto frame = jpeg_frame(4);
  torch::Tensor fa, fb;
  for (int i = 0; i < 3; ++i) {  // past the two-slot warm-up; one at a time, as the latest frame wins
    a.send_binary(frame);
    b.send_binary(frame);
    fa = a.next_frame();
    fb = b.next_frame();
  }
  EXPECT_FALSE(torch::equal(fa, fb)) << "two sessions with different prompts and seeds gave the same image";
  // Only frames sent by a session come back to it: b sends nothing more, a sends one.
  a.send_binary(frame);
  a.next_frame();
  const auto m = http_get(server.port(), "/metrics").second;
  EXPECT_NE(m.find("streamgen_sessions_active 2"), std::string::npos) << m;
  EXPECT_NE(m.find("streamgen_frames_in_total 7"), std::string::npos) << m;
}

TEST(Server, MalformedMessagesAreRejectedAndTheSessionSurvives) {
  Server server(tiny_server());
  server.start();
  Client c(server.port());
  c.next_json("ready");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"not json", "JSON object"},
      {R"({"prompt": "x"})", "with a \"type\""},
      {R"({"type": "dance"})", "unknown message type 'dance'"},
      {R"({"type": "config", "guidance": "high"})", "\"guidance\" must be a number"},
      {R"({"type": "config", "guidance": 99})", "\"guidance\" must be in [0, 20]"},
      {R"({"type": "config", "t_index": [60]})", "t_index"},
      {R"({"type": "config", "mode": "video"})", "\"mode\" must be"},
  };
  for (const auto& [msg, want] : bad) {
    c.send_text(msg);
    const auto e = c.next_json("error");
    EXPECT_NE(e["message"].get<std::string>().find(want), std::string::npos) << msg << " -> " << e.dump();
  }
  c.send_binary("definitely not an image");
  EXPECT_NE(c.next_json("error")["message"].get<std::string>().find("cannot decode the frame"), std::string::npos);
  c.send_binary(test::png_header_claiming(16000, 16000));  // a decompression bomb: refused from its header
  EXPECT_NE(c.next_json("error")["message"].get<std::string>().find("16000x16000 pixels is more than the"), std::string::npos);
  c.send_binary(jpeg_frame(5));  // still serving
  EXPECT_EQ(c.next_frame().size(1), 3);
  const auto m = http_get(server.port(), "/metrics").second;
  EXPECT_NE(m.find("streamgen_messages_rejected_total 9"), std::string::npos) << m;
}

TEST(Server, OversizedMessageClosesOnlyThatSession) {
  auto o = tiny_server();
  o.max_message_bytes = 64 * 1024;
  Server server(o);
  server.start();
  Client c(server.port());
  c.next_json("ready");
  c.send_binary_maybe_refused(std::string(100 * 1024, 'x'));
  const int code = c.wait_close();
  EXPECT_TRUE(code == static_cast<int>(websocket::close_code::too_big) || code == -1) << code;
  Client d(server.port());
  d.next_json("ready");
  d.send_binary(jpeg_frame(6));
  EXPECT_EQ(d.next_frame().size(3), 64);
  EXPECT_NE(http_get(server.port(), "/metrics").second.find("streamgen_messages_rejected_total 1"), std::string::npos);
}

TEST(Server, SessionsBeyondTheLimitAreToldTheServerIsBusy) {
  Server server(tiny_server(1));
  server.start();
  auto a = std::make_unique<Client>(server.port());
  a->next_json("ready");
  Client b(server.port());
  const auto busy = b.next_json("busy");
  EXPECT_NE(busy["message"].get<std::string>().find("busy"), std::string::npos);
  EXPECT_EQ(b.wait_close(), static_cast<int>(websocket::close_code::try_again_later));  // 1013
  a->close();
  a.reset();
  // The slot frees when the first session ends.
  for (int i = 0; i < 50; ++i) {
    if (http_get(server.port(), "/metrics").second.find("streamgen_sessions_active 0") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  Client c(server.port());
  c.next_json("ready");
  EXPECT_NE(http_get(server.port(), "/metrics").second.find("streamgen_sessions_rejected_total{reason=\"busy\"} 1"), std::string::npos);
}

TEST(Server, HttpRoutes) {
  Server server(tiny_server());
  server.start();
  EXPECT_EQ(http_get(server.port(), "/healthz"), (std::pair<int, std::string>{200, "ok\n"}));
  const auto page = http_get(server.port(), "/");
  EXPECT_EQ(page.first, 200);
  EXPECT_NE(page.second.find("<script src=\"/app.js\">"), std::string::npos);
  EXPECT_EQ(http_get(server.port(), "/app.js").first, 200);
  EXPECT_EQ(http_get(server.port(), "/style.css").first, 200);
  EXPECT_EQ(http_get(server.port(), "/../etc/passwd").first, 404);
  const auto m = http_get(server.port(), "/metrics");
  EXPECT_EQ(m.first, 200);
  EXPECT_NE(m.second.find("# TYPE streamgen_frames_dropped_total counter"), std::string::npos);
}

TEST(Server, TextToVideoSessionsStreamAndSwapPrompts) {
  ServerOptions o;
  o.port = 0;
  DiTRunnerOptions d;
  d.loaded = test::random_tiny_dit(4);
  d.sampler.chunk_frames = 2;
  d.sampler.micro_steps = 1;
  d.prompt = "a red circle moving left";
  d.width = d.height = 48;
  d.fps = 0;
  o.dit = d;
  Server server(o);
  server.start();
  Client c(server.port());
  const auto ready = c.next_json("ready");
  EXPECT_EQ(ready["kind"], "dit");
  EXPECT_EQ(ready["mode"], "t2v");
  EXPECT_EQ(ready["width"], 48);
  EXPECT_EQ(ready["vocabulary"].size(), test::tiny_dit_config().text.vocabulary.size());
  // Frames come with no input at all.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.next_frame().sizes(), (std::vector<std::int64_t>{1, 3, 48, 48}));

  c.send_json({{"type", "config"}, {"prompt", "a purple square moving up"}});
  auto cfg = c.next_json("config");
  EXPECT_FALSE(cfg["restarted"].get<bool>());  // hot swap
  EXPECT_EQ(cfg["unknown_words"], json::array({"purple"}));
  EXPECT_EQ(c.next_frame().size(2), 48);

  c.send_json({{"type", "config"}, {"guidance", 2.5}, {"seed", 7}});
  cfg = c.next_json("config");
  EXPECT_TRUE(cfg["restarted"].get<bool>());
  EXPECT_EQ(cfg["guidance"], 2.5);
  EXPECT_EQ(c.next_frame().size(3), 48);

  c.send_binary(jpeg_frame(1));
  EXPECT_NE(c.next_json("error")["message"].get<std::string>().find("not frames"), std::string::npos);
  c.send_json({{"type", "config"}, {"mode", "img2img"}});
  EXPECT_NE(c.next_json("error")["message"].get<std::string>().find("\"t2v\""), std::string::npos);
  c.send_json({{"type", "config"}, {"guidance", 0.5}});
  EXPECT_NE(c.next_json("error")["message"].get<std::string>().find("[1, 20]"), std::string::npos);
  EXPECT_EQ(c.next_frame().size(1), 3);  // still streaming
  // The restarted stream reports its DiT stage once its first step is done.
  std::string m;
  for (int i = 0; i < 200 && m.find("stage=\"dit\"") == std::string::npos; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    m = http_get(server.port(), "/metrics").second;
  }
  EXPECT_NE(m.find("stage=\"dit\""), std::string::npos) << m;
  c.close();
}

TEST(Server, AddressInUseIsAClearErrorBeforeAnyModelLoads) {
  Server a(tiny_server());
  a.start();
  auto o = tiny_server();
  o.port = a.port();
  o.stream.model = "/nonexistent/model";  // never reached: the address is bound first
  try {
    Server b(o);
    ADD_FAILURE() << "bound twice";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot listen on 127.0.0.1:" + std::to_string(a.port())), std::string::npos) << e.what();
  }
}

TEST(Server, OptionsThatCanNeverServeAreRefusedBeforeLoading) {
  const std::vector<std::pair<std::function<void(ServerOptions&)>, std::string>> bad = {
      {[](ServerOptions& o) { o.stream.width = o.stream.height = 100; }, "multiples of 8, got 100x100"},
      {[](ServerOptions& o) { o.host = "localhost:80"; }, "--host 'localhost:80' is not an IP address"},
      {[](ServerOptions& o) { o.max_sessions = 0; }, "--max-sessions must be at least 1"},
      {[](ServerOptions& o) { o.stream.stream.t_index_list = {10, 50}; }, "t_index 50 outside 0..49"},
      {[](ServerOptions& o) { o.timeouts.idle_s = 0; }, "--idle-timeout must be between"},
      {[](ServerOptions& o) { o.timeouts.write_s = std::nan(""); }, "--write-timeout must be between"},
  };
  for (const auto& [change, want] : bad) {
    auto o = tiny_server();
    o.stream.model = "/nonexistent/model";
    change(o);
    try {
      Server server(o);
      ADD_FAILURE() << "accepted; expected: " << want;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
  ServerOptions dit;
  dit.dit = DiTRunnerOptions{};
  dit.dit->fps = -1;
  EXPECT_THROW(validate_server_options(dit), Error);
  ServerOptions dit_lora;
  dit_lora.dit = DiTRunnerOptions{};
  dit_lora.stream.adapters.loras = {{"style.safetensors", 1.0}};
  test::expect_error_mentions([&] { validate_server_options(dit_lora); }, "--lora and --controlnet are for Stable Diffusion pipelines");
}

// Raw HTTP: writes `request` as given and returns everything the server sends before it closes.
std::string raw_http(unsigned short port, const std::string& request) {
  net::io_context ioc;
  tcp::socket s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  net::write(s, net::buffer(request));
  std::string out;
  beast::error_code ec;
  std::array<char, 4096> buf{};
  while (!ec) out.append(buf.data(), s.read_some(net::buffer(buf), ec));
  return out;
}

TEST(Server, BadHttpGetsAnErrorStatusAndEveryResponseItsSecurityHeaders) {
  Server server(tiny_server());
  server.start();
  const auto port = server.port();
  auto status_line = [](const std::string& r) { return r.substr(0, r.find("\r\n")); };
  EXPECT_EQ(status_line(raw_http(port, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n")),
            "HTTP/1.1 431 Request Header Fields Too Large");
  std::string many = "GET / HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 1000; ++i) many += "X-H" + std::to_string(i) + ": 1\r\n";
  EXPECT_EQ(status_line(raw_http(port, many + "\r\n")), "HTTP/1.1 431 Request Header Fields Too Large");
  EXPECT_EQ(status_line(raw_http(port, "GET / HTTP/9.9\r\nHost: x\r\n\r\n")), "HTTP/1.1 505 HTTP Version Not Supported");
  EXPECT_EQ(status_line(raw_http(port, "GET / HTTP/1.x\r\nHost: x\r\n\r\n")), "HTTP/1.1 505 HTTP Version Not Supported");
  EXPECT_EQ(status_line(raw_http(port, "\x01\x02garbage\r\n\r\n")), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(status_line(raw_http(port, "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")), "HTTP/1.1 405 Method Not Allowed");

  const auto not_found = raw_http(port, "GET /<script> HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(status_line(not_found), "HTTP/1.1 404 Not Found");
  for (const char* h : {"X-Content-Type-Options: nosniff", "Cache-Control: no-store", "X-Frame-Options: DENY", "text/plain"})
    EXPECT_NE(not_found.find(h), std::string::npos) << h << " in " << not_found;
  const auto page = raw_http(port, "GET / HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\n\r\n");
  EXPECT_NE(page.find("Content-Security-Policy: default-src 'none'; script-src 'self'"), std::string::npos) << page.substr(0, 800);
  EXPECT_NE(page.find("connect-src 'self' ws://127.0.0.1:" + std::to_string(port)), std::string::npos) << page.substr(0, 800);
  const auto head = raw_http(port, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(head.find("Content-Length: 3"), std::string::npos) << head;
  EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n") << head;  // no body

  const std::string upgrade = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                              "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n";
  EXPECT_EQ(status_line(raw_http(port, upgrade + "Origin: https://evil.example\r\n\r\n")), "HTTP/1.1 403 Forbidden");
  {  // the same origin is welcome, and the upgrade is never cached
    net::io_context ioc;
    websocket::stream<tcp::socket> ws(ioc);
    ws.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    ws.set_option(websocket::stream_base::decorator(
        [port](websocket::request_type& req) { req.set(http::field::origin, "http://127.0.0.1:" + std::to_string(port)); }));
    websocket::response_type res;
    ws.handshake(res, "127.0.0.1:" + std::to_string(port), "/ws");
    EXPECT_EQ(res[http::field::cache_control], "no-store");
    ws.close(websocket::close_code::normal);
  }
  const auto m = http_get(port, "/metrics").second;
  EXPECT_NE(m.find("streamgen_http_errors_total{status=\"431\"} 2"), std::string::npos) << m;
  EXPECT_NE(m.find("streamgen_sessions_rejected_total{reason=\"origin\"} 1"), std::string::npos) << m;
}

// Waits up to 20 s for /metrics to hold `sample`.
bool metrics_reach(unsigned short port, const std::string& sample) {
  for (int i = 0; i < 200; ++i) {
    if (http_get(port, "/metrics").second.find(sample) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST(Server, ConnectionsThatNeverSendARequestAreClosed) {
  auto o = tiny_server();
  o.timeouts.handshake_s = 0.5;
  Server server(o);
  server.start();
  net::io_context ioc;
  tcp::socket s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server.port()));
  std::array<char, 16> buf{};
  beast::error_code ec;
  s.read_some(net::buffer(buf), ec);  // returns when the server gives the connection up
  EXPECT_EQ(ec, net::error::eof);
  EXPECT_TRUE(metrics_reach(server.port(), "streamgen_timeouts_total{kind=\"handshake\"} 1"));
}

TEST(Server, IdleImg2ImgSessionsAreClosedAndFreeTheirSlot) {
  auto o = tiny_server(1);
  o.timeouts.idle_s = 0.6;
  Server server(o);
  server.start();
  Client idle(server.port());
  idle.next_json("ready");
  const auto e = idle.next_json("error");
  EXPECT_NE(e["message"].get<std::string>().find("no frame or message for 0.6 s"), std::string::npos) << e.dump();
  EXPECT_EQ(idle.wait_close(), static_cast<int>(websocket::close_code::policy_error));
  Client next(server.port());  // the slot is free again
  next.next_json("ready");
  // A txt2img session makes frames with no input: it is not idle while the client reads them.
  next.send_json({{"type", "config"}, {"mode", "txt2img"}});
  next.next_json("config");
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (std::chrono::steady_clock::now() < until) EXPECT_EQ(next.next_frame().size(1), 3);
  EXPECT_TRUE(metrics_reach(server.port(), "streamgen_timeouts_total{kind=\"idle\"} 1"));
  EXPECT_TRUE(metrics_reach(server.port(), "streamgen_sessions_active 1"));
}

// A client that sends and never reads: every config message is answered (here ~2 KiB, the prompt
// echoed), the server stops reading once 32 replies wait, and when the kernel's buffers are full the
// write timeout ends the connection. Nothing grows without bound on the way.
TEST(Server, ClientsThatStopReadingAreDisconnected) {
  auto o = tiny_server(1);
  o.timeouts.write_s = 1;
  Server server(o);
  server.start();
  {
    net::io_context ioc;
    websocket::stream<tcp::socket> ws(ioc);
    ws.next_layer().open(tcp::v4());
    ws.next_layer().set_option(net::socket_base::receive_buffer_size(2048));
    ws.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server.port()));
    ws.handshake("127.0.0.1", "/ws");
    ws.text(true);
    beast::error_code ec;
    int sent = 0;
    // Blocks once the server stops reading; fails once the write timeout has closed the connection.
    for (; sent < 100000 && !ec; ++sent)
      ws.write(net::buffer(json{{"type", "config"}, {"prompt", std::string(1990, 'a' + sent % 26)}}.dump()), ec);
    EXPECT_TRUE(ec) << "the server read " << sent << " messages without its replies being taken";
    EXPECT_TRUE(metrics_reach(server.port(), "streamgen_timeouts_total{kind=\"write\"} 1"));
  }
  EXPECT_TRUE(metrics_reach(server.port(), "streamgen_sessions_active 0"));
  Client c(server.port());
  c.next_json("ready");
}

TEST(Server, AReconnectRightAfterACloseIsAdmitted) {
  Server server(tiny_server(1));
  server.start();
  for (int i = 0; i < 20; ++i) {
    Client c(server.port());
    const auto first = c.next_json("ready");
    ASSERT_EQ(first["type"], "ready") << "attempt " << i;
    c.close();  // returns once the server's close frame is back: the slot must be free now
  }
  EXPECT_NE(http_get(server.port(), "/metrics").second.find("streamgen_sessions_rejected_total{reason=\"busy\"} 0"), std::string::npos);
}

// A server that is stopped with clients still connected lets go of everything: no handler left
// holding the server (its io_context is the server's own), so the models it was given are released.
TEST(Server, StoppingWithClientsConnectedReleasesTheServerAndItsModels) {
  auto o = tiny_server(2);
  o.stream.models = StreamModels::load(o.stream.model, o.stream.taesd, o.stream.compute);
  const std::weak_ptr<StreamModels> models = o.stream.models;
  {
    Server server(o);
    o.stream.models.reset();
    server.start();
    Client streaming(server.port());
    streaming.next_json("ready");
    streaming.send_binary(jpeg_frame(3));
    streaming.next_frame();
    net::io_context ioc;
    tcp::socket silent(ioc);  // connected, never sends a request
    silent.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server.port()));
    http_get(server.port(), "/healthz");
    server.stop();
  }
  EXPECT_TRUE(models.expired()) << "the server (or a session) was never destroyed: " << models.use_count() << " references left";
}

TEST(Server, FloodedFramesAreDecodedOneAtATimeAndTheRestDropped) {
  Server server(tiny_server(1));
  server.start();
  Client c(server.port());
  c.next_json("ready");
  const auto frame = jpeg_frame(9);
  for (int i = 0; i < 40; ++i) c.send_binary(frame);
  EXPECT_EQ(c.next_frame().size(2), 64);  // the session goes on
  EXPECT_EQ(http_get(server.port(), "/healthz").first, 200);
  const auto m = http_get(server.port(), "/metrics").second;
  // Every frame is either taken by the stream or counted as dropped somewhere.
  const auto count = [&](const std::string& sample) {
    const auto at = m.find(sample + " ");
    return at == std::string::npos ? -1 : std::stoll(m.substr(at + sample.size() + 1));
  };
  EXPECT_GT(count("streamgen_frames_dropped_total{where=\"decode\"}") + count("streamgen_frames_dropped_total{where=\"input\"}"), 0) << m;
}

}  // namespace
}  // namespace streamgen
