// The HTTP + WebSocket server: Boost.Beast on an Asio io_context, one strand per connection; model
// work happens on each session's stream threads (StreamRunner or DiTRunner), never on the I/O threads' hot path except
// for JPEG decoding of incoming frames.
#include "streamgen/server.h"

#include <fmt/core.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <algorithm>
#include <deque>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "server/web_assets.h"
#include "streamgen/dit_codec.h"
#include "streamgen/error.h"
#include "streamgen/image_io.h"
#include "streamgen/image_tensor.h"

namespace streamgen {
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMaxPendingFrames = 2;  // frames waiting to be sent to one client; older ones are dropped
constexpr std::size_t kMaxPromptChars = 2000;
constexpr auto kStatsEvery = 500ms;

// The largest frame a session decodes: 4x its stream's pixels, at least a 1080p camera frame, at most
// decode_image's cap. The check reads the image's header, before anything is decoded.
std::int64_t frame_pixel_budget(std::int64_t width, std::int64_t height) {
  return std::clamp<std::int64_t>(4 * width * height, 1920 * 1080, kMaxDecodedPixels);
}

class WsSession;

}  // namespace

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  ServerOptions o;
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  mutable std::mutex mutex;
  std::condition_variable stopped_cv;
  bool stopped = false;
  std::set<std::shared_ptr<WsSession>> sessions;  // admitted sessions
  std::uint64_t next_id = 1;
  // Totals of sessions that have ended (live sessions are added at scrape time).
  std::uint64_t sessions_total = 0, rejected_busy = 0, messages_rejected = 0;
  std::uint64_t ended_in = 0, ended_out = 0, ended_skipped = 0, ended_drop_in = 0, ended_drop_out = 0, send_dropped = 0;

  explicit Impl(ServerOptions options) : o(std::move(options)) {}
  void accept();
  std::string metrics() const;
};

namespace {

std::string describe(const beast::error_code& ec) { return ec.message(); }

class WsSession : public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(tcp::socket&& socket, std::shared_ptr<Server::Impl> server) : ws_(std::move(socket)), server_(std::move(server)) {}

  void run(http::request<http::string_body> req) {
    // Frames are latency-bound messages: without this, Nagle's algorithm and delayed ACKs hold
    // small writes back by up to 40 ms.
    beast::error_code ignored;
    ws_.next_layer().socket().set_option(tcp::no_delay(true), ignored);
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.read_message_max(server_->o.max_message_bytes);
    ws_.async_accept(req, beast::bind_front_handler(&WsSession::on_accept, shared_from_this()));
  }

  std::uint64_t id() const { return id_; }
  std::shared_ptr<LiveStream> runner() const {
    std::lock_guard lock(runner_mutex_);
    return runner_;
  }
  std::uint64_t send_dropped() const { return send_dropped_; }

  // Server shutdown, after the I/O threads have stopped: pending handlers may keep this session
  // object alive, but its stream's threads must end now (a text-to-video stream never idles).
  void shutdown() {
    std::shared_ptr<LiveStream> r;
    {
      std::lock_guard lock(runner_mutex_);
      r = std::move(runner_);
    }
    if (r) r->stop();
  }

 private:
  void on_accept(beast::error_code ec) {
    if (ec) return;
    {
      std::lock_guard lock(server_->mutex);
      if (static_cast<int>(server_->sessions.size()) >= server_->o.max_sessions) {
        ++server_->rejected_busy;
        busy_ = true;
      } else {
        id_ = server_->next_id++;
        ++server_->sessions_total;
        server_->sessions.insert(shared_from_this());
      }
    }
    if (busy_) {
      spdlog::warn("session refused: {} sessions open (--max-sessions {})", server_->o.max_sessions, server_->o.max_sessions);
      send_text(json{{"type", "busy"}, {"message", fmt::format("the server is busy: {} of {} sessions in use, try again later", server_->o.max_sessions,
                                                               server_->o.max_sessions)}});
      return;  // closed with "try again later" once the message is out
    }
    spdlog::info("session {} opened", id_);
    opts_ = server_->o.stream;
    dit_ = server_->o.dit;
    try {
      restart_stream();
      send_text(config_message(true, "ready"));
    } catch (const std::exception& e) {
      send_error(e.what());
    }
    schedule_stats();
    do_read();
  }

  void do_read() { ws_.async_read(buffer_, beast::bind_front_handler(&WsSession::on_read, shared_from_this())); }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) {
      if (ec == websocket::error::message_too_big) {  // Beast fails the connection with close code 1009 itself
        spdlog::warn("session {}: message over {} bytes; closing the session", id_, server_->o.max_message_bytes);
        count_rejected();
      }
      end();
      return;
    }
    const std::string data = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    try {
      if (ws_.got_text()) {
        handle_text(data);
      } else {
        handle_frame(data);
      }
    } catch (const std::exception& e) {
      count_rejected();
      spdlog::warn("session {}: rejected a message: {}", id_, e.what());
      send_error(e.what());
    }
    do_read();
  }

  void handle_frame(const std::string& bytes) {
    auto r = runner();
    if (!r) throw Error("the stream is not running (see the last error)");
    if (dit_) throw Error("this server streams text-to-video (StreamDiT): send a prompt, not frames");
    if (opts_.stream.txt2img) throw Error("frames are not used in txt2img mode");
    const auto image = decode_image(bytes, "the frame", frame_pixel_budget(opts_.width, opts_.height));
    r->push(fit_image(image, opts_.width, opts_.height, Fit::Crop)[0]);
  }

  void handle_text(const std::string& text) {
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception&) {
      throw Error("a text message must be a JSON object");
    }
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) throw Error("a text message must be a JSON object with a \"type\"");
    const auto type = j["type"].get<std::string>();
    if (type != "config") throw Error("unknown message type '" + type + "' (expected \"config\")");
    apply_config(j);
  }

  template <typename T>
  static T number(const json& j, const char* key, T lo, T hi) {
    if (!j[key].is_number()) throw Error(std::string("\"") + key + "\" must be a number");
    const auto v = j[key].get<double>();
    if (!(v >= static_cast<double>(lo) && v <= static_cast<double>(hi)))
      throw Error(fmt::format("\"{}\" must be in [{}, {}], got {}", key, lo, hi, v));
    return static_cast<T>(v);
  }

  static std::string text_field(const json& j, const char* key) {
    if (!j[key].is_string()) throw Error(std::string("\"") + key + "\" must be a string");
    auto s = j[key].get<std::string>();
    if (s.size() > kMaxPromptChars) throw Error(fmt::format("\"{}\" is longer than {} characters", key, kMaxPromptChars));
    return s;
  }

  void apply_config(const json& j) {
    if (dit_) return apply_dit_config(j);
    auto next = opts_;
    if (j.contains("mode")) {
      const auto mode = text_field(j, "mode");
      if (mode != "img2img" && mode != "txt2img") throw Error("\"mode\" must be \"img2img\" or \"txt2img\", got '" + mode + "'");
      next.stream.txt2img = mode == "txt2img";
      next.stream.warmup = next.stream.txt2img ? Warmup::Suppress : server_->o.stream.stream.warmup;
    }
    if (j.contains("guidance")) next.stream.guidance_scale = number<double>(j, "guidance", 0.0, 20.0);
    if (j.contains("delta")) next.stream.delta = number<double>(j, "delta", 0.0, 5.0);
    if (j.contains("seed")) next.seed = number<std::uint64_t>(j, "seed", 0, 4294967295ull);
    if (j.contains("t_index")) {
      if (!j["t_index"].is_array() || j["t_index"].empty() || j["t_index"].size() > 8) throw Error("\"t_index\" must be an array of 1 to 8 integers");
      std::vector<std::int64_t> t;
      for (const auto& v : j["t_index"]) {
        if (!v.is_number_integer()) throw Error("\"t_index\" must hold integers");
        t.push_back(v.get<std::int64_t>());
      }
      next.stream.t_index_list = t;
    }
    if (j.contains("cfg")) next.stream.cfg = parse_cfg_type(text_field(j, "cfg"));
    int blend = 0;
    if (j.contains("blend_frames")) blend = number<int>(j, "blend_frames", 0, 240);
    if (j.contains("prompt")) next.prompt = text_field(j, "prompt");
    if (j.contains("negative_prompt")) next.negative_prompt = text_field(j, "negative_prompt");

    const auto& a = next.stream;
    const auto& b = opts_.stream;
    const bool restart = !runner() || a.txt2img != b.txt2img || a.guidance_scale != b.guidance_scale || a.delta != b.delta ||
                         a.t_index_list != b.t_index_list || a.cfg != b.cfg || next.seed != opts_.seed;
    const bool prompt_changed = next.prompt != opts_.prompt || next.negative_prompt != opts_.negative_prompt;
    if (restart) {
      const auto previous = opts_;
      opts_ = next;
      restart_or_restore([&] { opts_ = previous; });
    } else if (prompt_changed) {
      opts_ = next;
      runner()->set_prompt(opts_.prompt, opts_.negative_prompt, blend);
    }
    send_text(config_message(restart, "config"));
  }

  // Text-to-video: the prompt hot-swaps; guidance and seed start a new stream.
  void apply_dit_config(const json& j) {
    auto next = *dit_;
    if (j.contains("mode") && text_field(j, "mode") != "t2v")
      throw Error("this server streams text-to-video (StreamDiT): \"mode\" must be \"t2v\", got '" + text_field(j, "mode") + "'");
    if (j.contains("guidance")) next.sampler.guidance = number<double>(j, "guidance", 1.0, 20.0);
    if (j.contains("seed")) next.sampler.seed = number<std::uint64_t>(j, "seed", 0, 4294967295ull);
    if (j.contains("prompt")) next.prompt = text_field(j, "prompt");
    const bool restart = !runner() || next.sampler.guidance != dit_->sampler.guidance || next.sampler.seed != dit_->sampler.seed;
    const bool prompt_changed = next.prompt != dit_->prompt;
    const auto previous = *dit_;
    dit_ = next;
    if (restart) {
      restart_or_restore([&] { dit_ = previous; });
    } else if (prompt_changed) {
      runner()->set_prompt(dit_->prompt);
    }
    send_text(config_message(restart, "config"));
  }

  // Restarts the stream with the current settings; if that fails, `restore` puts the last good
  // settings back, the stream restarts with them (for the next attempt) and the error goes on.
  void restart_or_restore(const std::function<void()>& restore) {
    try {
      restart_stream();
    } catch (...) {
      restore();
      restart_stream();
      throw;
    }
  }

  json config_message(bool restarted, const char* type) const {
    if (dit_) {
      const auto r = std::dynamic_pointer_cast<DiTRunner>(runner());
      json m = {{"type", type},
                {"session", id_},
                {"kind", "dit"},
                {"mode", "t2v"},
                {"prompt", dit_->prompt},
                {"guidance", dit_->sampler.guidance},
                {"seed", dit_->sampler.seed},
                {"chunk_frames", dit_->sampler.chunk_frames},
                {"micro_steps", dit_->sampler.micro_steps},
                {"fps", dit_->fps},
                {"restarted", restarted}};
      if (r) {
        const auto& c = r->config();
        m["width"] = r->output_width();
        m["height"] = r->output_height();
        m["vocabulary"] = c.text.vocabulary;
        m["unknown_words"] = r->unknown_words(dit_->prompt);
      }
      return m;
    }
    return {{"type", type},
            {"session", id_},
            {"prompt", opts_.prompt},
            {"mode", opts_.stream.txt2img ? "txt2img" : "img2img"},
            {"guidance", opts_.stream.guidance_scale},
            {"delta", opts_.stream.delta},
            {"t_index", opts_.stream.t_index_list},
            {"seed", opts_.seed},
            {"width", opts_.width},
            {"height", opts_.height},
            {"kind", "sd"},
            {"restarted", restarted}};
  }

  void restart_stream() {
    std::shared_ptr<LiveStream> old;
    {
      std::lock_guard lock(runner_mutex_);
      old = std::move(runner_);
    }
    if (old) {
      old->stop();
      add_to_totals(*old);
    }
    stream_error_sent_ = false;
    std::shared_ptr<LiveStream> r;
    if (dit_)
      r = std::make_shared<DiTRunner>(*dit_);
    else
      r = std::make_shared<StreamRunner>(opts_);
    std::weak_ptr<WsSession> weak = shared_from_this();
    const int quality = server_->o.jpeg_quality;
    // Runs on the runner's decode thread: JPEG encoding stays off the I/O threads.
    r->set_output_callback([weak, quality](const StreamFrame& f) {
      auto self = weak.lock();
      if (!self) return;
      auto bytes = std::make_shared<std::string>(encode_jpeg(f.image_u8, quality));
      net::post(self->ws_.get_executor(), [self, bytes] { self->queue_message(std::move(*bytes), true); });
    });
    std::lock_guard lock(runner_mutex_);
    runner_ = std::move(r);
  }

  void add_to_totals(const LiveStream& r) {
    const auto s = r.stats();
    std::lock_guard lock(server_->mutex);
    server_->ended_in += s.frames_in;
    server_->ended_out += s.frames_out;
    server_->ended_skipped += s.frames_skipped;
    server_->ended_drop_in += s.inputs_dropped;
    server_->ended_drop_out += s.outputs_dropped;
  }

  void schedule_stats() {
    timer_.expires_after(kStatsEvery);
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->ended_) return;
      if (auto r = self->runner()) {
        const auto s = r->stats();
        json st = {{"type", "stats"}, {"fps", s.output_fps}, {"frames_in", s.frames_in}, {"frames_out", s.frames_out},
                   {"inputs_dropped", s.inputs_dropped}, {"send_dropped", self->send_dropped_.load()}, {"skipped", s.frames_skipped}};
        for (const auto& [stage, t] : s.stages) st["stages"][stage] = {{"median_ms", t.median_ms}, {"p90_ms", t.p90_ms}};
        self->send_text(st);
        if (const auto dit = std::dynamic_pointer_cast<DiTRunner>(r); dit && !self->stream_error_sent_) {
          if (auto error = dit->error(); !error.empty()) {
            self->send_error("the stream stopped: " + error);
            self->stream_error_sent_ = true;
          }
        }
      }
      self->schedule_stats();
    });
  }

  void send_text(const json& j) { queue_message(j.dump(), false); }
  void send_error(const std::string& message) { send_text(json{{"type", "error"}, {"message", message}}); }

  void count_rejected() {
    std::lock_guard lock(server_->mutex);
    ++server_->messages_rejected;
  }

  // On the session's executor. Frames beyond kMaxPendingFrames replace the oldest waiting frame:
  // a slow client sees the latest output, not a growing delay.
  void queue_message(std::string data, bool binary) {
    if (ended_) return;
    if (binary) {
      std::size_t frames = 0;
      for (const auto& m : outbox_) frames += m.second;
      if (frames >= kMaxPendingFrames) {
        for (auto it = outbox_.begin() + (writing_ ? 1 : 0); it != outbox_.end(); ++it)
          if (it->second) {
            outbox_.erase(it);
            ++send_dropped_;
            break;
          }
      }
    }
    outbox_.emplace_back(std::move(data), binary);
    if (!writing_) do_write();
  }

  void do_write() {
    writing_ = true;
    ws_.binary(outbox_.front().second);
    ws_.async_write(net::buffer(outbox_.front().first), beast::bind_front_handler(&WsSession::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    writing_ = false;
    if (ec) {
      end();
      return;
    }
    outbox_.pop_front();
    if (!outbox_.empty()) {
      do_write();
    } else if (busy_) {
      ws_.async_close(websocket::close_reason(websocket::close_code::try_again_later, "busy"), [self = shared_from_this()](beast::error_code) {});
    }
  }

  void end() {
    if (ended_) return;
    ended_ = true;
    timer_.cancel();
    if (busy_) return;
    std::shared_ptr<LiveStream> r;
    {
      std::lock_guard lock(runner_mutex_);
      r = std::move(runner_);
    }
    if (r) {
      r->stop();
      add_to_totals(*r);
    }
    std::lock_guard lock(server_->mutex);
    server_->send_dropped += send_dropped_;
    server_->sessions.erase(shared_from_this());
    spdlog::info("session {} closed", id_);
  }

  websocket::stream<beast::tcp_stream> ws_;
  std::shared_ptr<Server::Impl> server_;
  beast::flat_buffer buffer_;
  net::steady_timer timer_{ws_.get_executor()};
  StreamRunnerOptions opts_;
  std::optional<DiTRunnerOptions> dit_;  // set: this session streams StreamDiT text-to-video
  mutable std::mutex runner_mutex_;
  std::shared_ptr<LiveStream> runner_;
  std::deque<std::pair<std::string, bool>> outbox_;
  std::atomic<std::uint64_t> send_dropped_{0};
  std::uint64_t id_ = 0;
  bool writing_ = false, busy_ = false, ended_ = false, stream_error_sent_ = false;
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket&& socket, std::shared_ptr<Server::Impl> server) : stream_(std::move(socket)), server_(std::move(server)) {}

  void run() {
    parser_.body_limit(64 * 1024);
    stream_.expires_after(30s);
    http::async_read(stream_, buffer_, parser_, beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
  }

 private:
  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return;
    auto req = parser_.release();
    if (websocket::is_upgrade(req)) {
      if (req.target() == "/ws") {
        stream_.expires_never();
        std::make_shared<WsSession>(stream_.release_socket(), server_)->run(std::move(req));
        return;
      }
      return reply(http::status::not_found, "text/plain", "WebSocket endpoint is /ws\n");
    }
    if (req.method() != http::verb::get && req.method() != http::verb::head) return reply(http::status::method_not_allowed, "text/plain", "GET only\n");
    std::string target(req.target());
    if (const auto q = target.find('?'); q != std::string::npos) target.resize(q);
    if (target == "/healthz") return reply(http::status::ok, "text/plain", "ok\n");
    if (target == "/metrics") return reply(http::status::ok, "text/plain; version=0.0.4", server_->metrics());
    if (const auto asset = web_asset(target == "/" ? "/index.html" : target)) return reply(http::status::ok, asset->second, std::string(asset->first));
    reply(http::status::not_found, "text/plain", "not found: " + target + "\n");
  }

  void reply(http::status status, std::string_view type, std::string body) {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::server, "streamgen");
    res->set(http::field::content_type, std::string(type));
    res->set(http::field::cache_control, "no-store");
    res->keep_alive(false);
    res->body() = std::move(body);
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code, std::size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request_parser<http::string_body> parser_;
  std::shared_ptr<Server::Impl> server_;
};

}  // namespace

void Server::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted) return;
    if (!ec) std::make_shared<HttpSession>(std::move(socket), self)->run();
    self->accept();
  });
}

std::string Server::Impl::metrics() const {
  std::vector<std::shared_ptr<WsSession>> live;
  std::uint64_t in, out, skipped, drop_in, drop_out, drop_send, total, busy, rejected;
  {
    std::lock_guard lock(mutex);
    live.assign(sessions.begin(), sessions.end());
    in = ended_in, out = ended_out, skipped = ended_skipped, drop_in = ended_drop_in, drop_out = ended_drop_out, drop_send = send_dropped;
    total = sessions_total, busy = rejected_busy, rejected = messages_rejected;
  }
  std::string fps, lat;  // per-session samples of the two gauges
  for (const auto& s : live) {
    drop_send += s->send_dropped();
    const auto r = s->runner();
    if (!r) continue;
    const auto st = r->stats();
    in += st.frames_in, out += st.frames_out, skipped += st.frames_skipped, drop_in += st.inputs_dropped, drop_out += st.outputs_dropped;
    fps += fmt::format("streamgen_output_fps{{session=\"{}\"}} {:.3f}\n", s->id(), st.output_fps);
    for (const auto& [stage, t] : st.stages)
      lat += fmt::format("streamgen_stage_latency_ms{{session=\"{}\",stage=\"{}\",quantile=\"0.5\"}} {:.3f}\n"
                                 "streamgen_stage_latency_ms{{session=\"{}\",stage=\"{}\",quantile=\"0.9\"}} {:.3f}\n",
                                 s->id(), stage, t.median_ms, s->id(), stage, t.p90_ms);
  }
  std::string m;
  auto metric = [&](const char* name, const char* type, const char* help, const std::string& samples) {
    m += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}", name, help, name, type, samples);
  };
  metric("streamgen_sessions_active", "gauge", "Open WebSocket sessions.", fmt::format("streamgen_sessions_active {}\n", live.size()));
  metric("streamgen_sessions_total", "counter", "Sessions admitted since start.", fmt::format("streamgen_sessions_total {}\n", total));
  metric("streamgen_sessions_rejected_total", "counter", "Sessions refused.", fmt::format("streamgen_sessions_rejected_total{{reason=\"busy\"}} {}\n", busy));
  metric("streamgen_messages_rejected_total", "counter", "Malformed or oversized client messages.",
         fmt::format("streamgen_messages_rejected_total {}\n", rejected));
  metric("streamgen_frames_in_total", "counter", "Frames received.", fmt::format("streamgen_frames_in_total {}\n", in));
  metric("streamgen_frames_out_total", "counter", "Frames generated.", fmt::format("streamgen_frames_out_total {}\n", out));
  metric("streamgen_frames_skipped_total", "counter", "Inputs the similarity filter skipped.", fmt::format("streamgen_frames_skipped_total {}\n", skipped));
  metric("streamgen_frames_dropped_total", "counter", "Frames dropped to stay real-time, by where.",
         fmt::format("streamgen_frames_dropped_total{{where=\"input\"}} {}\nstreamgen_frames_dropped_total{{where=\"output\"}} {}\n"
                     "streamgen_frames_dropped_total{{where=\"send\"}} {}\n",
                     drop_in, drop_out, drop_send));
  metric("streamgen_output_fps", "gauge", "Output frames per second, per session.", fps);
  metric("streamgen_stage_latency_ms", "gauge", "Per-stage latency over the last frames, per session.", lat);
  return m;
}

Server::Server(ServerOptions options) : impl_(std::make_shared<Impl>(std::move(options))) {
  if (impl_->o.max_sessions < 1) throw Error("--max-sessions must be at least 1");
  auto& o = impl_->o;
  if (o.dit) {
    if (!o.dit->loaded) {
      o.dit->loaded = load_stream_dit(o.dit->model, o.dit->compute);
      o.dit->loaded_autoencoder = load_dit_autoencoder(o.dit->model, o.dit->compute);
    }
    o.dit->loaded->eval();
  } else if (!o.stream.models) {
    o.stream.models = StreamModels::load(o.stream.model, o.stream.taesd, o.stream.compute);
  }
}

Server::~Server() { stop(); }

void Server::start() {
  auto& m = *impl_;
  beast::error_code ec;
  const auto address = net::ip::make_address(m.o.host, ec);
  if (ec) throw Error("--host '" + m.o.host + "' is not an IP address");
  const tcp::endpoint endpoint(address, m.o.port);
  m.acceptor.open(endpoint.protocol(), ec);
  if (!ec) m.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(endpoint, ec);
  if (!ec) m.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw Error(fmt::format("cannot listen on {}:{}: {}", m.o.host, m.o.port, describe(ec)));
  m.accept();
  for (int i = 0; i < 2; ++i) m.threads.emplace_back([this] { impl_->ioc.run(); });
}

unsigned short Server::port() const { return impl_->acceptor.local_endpoint().port(); }

void Server::wait() {
  std::unique_lock lock(impl_->mutex);
  impl_->stopped_cv.wait(lock, [&] { return impl_->stopped; });
}

void Server::stop() {
  auto& m = *impl_;
  {
    std::lock_guard lock(m.mutex);
    if (m.stopped) return;
    m.stopped = true;
  }
  net::post(m.ioc, [&m] {
    beast::error_code ignored;
    m.acceptor.close(ignored);
  });
  m.ioc.stop();
  for (auto& t : m.threads)
    if (t.joinable()) t.join();
  std::set<std::shared_ptr<WsSession>> ending;
  {
    std::lock_guard lock(m.mutex);
    ending.swap(m.sessions);
  }
  for (const auto& session : ending) session->shutdown();
  ending.clear();
  m.stopped_cv.notify_all();
}

std::string Server::metrics_text() const { return impl_->metrics(); }

}  // namespace streamgen
