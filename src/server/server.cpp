// The HTTP + WebSocket server: Boost.Beast on an Asio io_context, one strand per connection. The
// I/O threads only move bytes and parse small messages: frames are decoded on a worker pool, model
// work happens on each session's stream threads (StreamRunner or DiTRunner), and a closed
// session's stream is stopped on the worker pool too. Every client can be slow, silent or hostile:
// each wait has a timeout, each queue a bound, each image a pixel budget read from its header.
#include "streamgen/server.h"

#include <fmt/core.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <algorithm>
#include <array>
#include <cctype>
#include <condition_variable>
#include <cstring>
#include <map>
#include <deque>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <vector>

#include "server/web_assets.h"
#include "streamgen/dit_codec.h"
#include "streamgen/error.h"
#include "streamgen/image_io.h"
#include "streamgen/image_tensor.h"
#include "streamgen/session_config.h"
#include "streamgen/timing.h"

namespace streamgen {
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMaxPendingFrames = 2;  // frames waiting to be sent to one client; older ones are dropped
// Messages waiting to be sent to one client beyond which the session stops reading from it: every
// config message is answered, so a client that sends and never reads would otherwise grow the
// outbox without bound. Reading resumes when half of them are out.
constexpr std::size_t kMaxPendingMessages = 32;
constexpr auto kTickEvery = 500ms;            // stats to the page, and the session's timeouts checked
// Connections that have not yet sent a complete request: each costs a socket and a 30 KiB parser
// at most; beyond this many the newest is closed at once (under the default 1024 descriptors).
constexpr int kMaxHttpConnections = 512;
constexpr std::uint32_t kMaxHeaderBytes = 8 * 1024;
constexpr int kSendBufferBytes = 256 * 1024;  // a 512² JPEG is 30-60 KiB; 256 KiB keeps 10 Mbit/s at 200 ms RTT
constexpr std::uint64_t kMaxRequestBodyBytes = 64 * 1024;
// Decode time a session may use: half a core on average, with a burst of one second. A 512² JPEG
// takes about 3 ms, a 1080p one about 15 ms, so a camera page stays far below it; a client
// flooding large frames has the excess dropped before decoding instead of taking the pool.
constexpr double kDecodeShare = 0.5;
constexpr double kDecodeBurstSeconds = 1.0;

// The largest frame a session decodes: 4x its stream's pixels, at least a 1080p camera frame, at most
// decode_image's cap. The check reads the image's header, before anything is decoded.
std::int64_t frame_pixel_budget(std::int64_t width, std::int64_t height) {
  return std::clamp<std::int64_t>(4 * width * height, 1920 * 1080, kMaxDecodedPixels);
}

std::chrono::milliseconds to_duration(double seconds) { return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000)); }

// Decoding can take a core each: at most half the machine's, at least one thread.
int decode_threads() { return static_cast<int>(std::clamp(std::thread::hardware_concurrency() / 2, 1u, 4u)); }

enum class TimeoutKind { Handshake, Idle, Write };
constexpr std::array<const char*, 3> kTimeoutNames{"handshake", "idle", "write"};

// Headers every response carries: no MIME sniffing of what the server sends, no framing, no referrer.
template <class Fields>
void set_security_headers(Fields& f) {
  f.set(http::field::server, "streamgen");
  f.set("X-Content-Type-Options", "nosniff");
  f.set("X-Frame-Options", "DENY");
  f.set("Referrer-Policy", "no-referrer");
  f.set(http::field::cache_control, "no-store");
}

// The page only loads its own files, shows blob: frames and talks to its own WebSocket. `host` is
// the request's Host header, used for the ws:/wss: source only when it is a plain host[:port].
std::string content_security_policy(beast::string_view host) {
  const bool plain = !host.empty() && host.size() < 256 &&
                     std::all_of(host.begin(), host.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || std::strchr(".-:[]", c); });
  const std::string ws = plain ? fmt::format(" ws://{} wss://{}", std::string(host), std::string(host)) : "";
  return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
         "connect-src 'self'" + ws + "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
}

// A browser always sends Origin with a WebSocket handshake: a page from another site must not drive
// this server through a visitor's browser (cross-site WebSocket hijacking).
bool same_origin(beast::string_view origin, beast::string_view host) {
  for (beast::string_view scheme : {"http://", "https://"})
    if (origin.substr(0, scheme.size()) == scheme) {
      origin.remove_prefix(scheme.size());
      return beast::iequals(origin, host);
    }
  return false;
}

class WsSession;

// Every connection, so that stop() can close what clients left open: their pending handlers hold the
// server (its io_context is the server's), and only a closed socket lets them finish.
struct Connection {
  virtual ~Connection() = default;
  virtual void close_now() = 0;  // only once the I/O threads have stopped
};

}  // namespace

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  ServerOptions o;
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  net::steady_timer accept_retry{ioc};
  net::thread_pool workers{static_cast<std::size_t>(decode_threads())};  // frame decoding, stopping closed streams
  std::vector<std::thread> threads;
  mutable std::mutex mutex;
  std::condition_variable stopped_cv;
  bool started = false, stopped = false;
  int slots_used = 0;                              // admitted sessions whose close has not completed
  std::set<std::shared_ptr<WsSession>> sessions;   // admitted sessions until their stream has stopped and been counted
  std::vector<std::weak_ptr<Connection>> connections;  // every connection opened, for stop(); pruned as they end
  std::uint64_t next_id = 1;
  std::atomic<int> http_connections{0};            // connections still reading their first request
  // Totals of sessions that have ended (live sessions are added at scrape time).
  std::uint64_t sessions_total = 0, rejected_busy = 0, rejected_origin = 0, messages_rejected = 0, connections_refused = 0;
  std::array<std::uint64_t, 3> timeouts{};
  std::map<int, std::uint64_t> http_errors;        // status -> replies to requests that could not be served
  std::uint64_t ended_in = 0, ended_out = 0, ended_skipped = 0, ended_drop_in = 0, ended_drop_out = 0, send_dropped = 0, decode_dropped = 0;

  // LoRA scale changes: the newest request wins and one re-fusion runs at a time, on the worker pool (it
  // takes seconds for a full-size model on a CPU); the models, so the scales, are shared by every session,
  // and every Stable Diffusion session is told the new scales.
  std::optional<std::vector<double>> lora_wanted;
  std::vector<double> lora_scales;  // as last fused (the fusion's own are written while it re-fuses)
  bool lora_fusing = false;
  void request_lora_scales(std::vector<double> scales);
  void fuse_wanted_loras();
  json lora_state() const;

  explicit Impl(ServerOptions options) : o(std::move(options)) {}
  void accept();
  std::string metrics() const;
  void track(const std::shared_ptr<Connection>& c) {
    std::lock_guard lock(mutex);
    if (connections.size() >= 64 && connections.size() % 64 == 0)
      std::erase_if(connections, [](const auto& w) { return w.expired(); });
    connections.push_back(c);
  }
  void count_timeout(TimeoutKind kind) {
    std::lock_guard lock(mutex);
    ++timeouts[static_cast<int>(kind)];
  }
};

namespace {

class WsSession : public Connection, public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(tcp::socket&& socket, std::shared_ptr<Server::Impl> server) : ws_(std::move(socket)), server_(std::move(server)) {}

  void run(http::request<http::string_body> req) {
    // Frames are latency-bound messages: without this, Nagle's algorithm and delayed ACKs hold
    // small writes back by up to 40 ms.
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().set_option(tcp::no_delay(true), ignored);
    // A fixed send buffer of a few frames instead of the kernel's autotuned megabytes: frames a
    // slow client has not taken wait in the outbox, where newer ones replace them, not in the
    // kernel, where they would add seconds of delay; and a client that stops reading stalls the
    // write, which the write timeout sees.
    beast::get_lowest_layer(ws_).socket().set_option(net::socket_base::send_buffer_size(kSendBufferBytes), ignored);
    websocket::stream_base::timeout timeout{};
    timeout.handshake_timeout = to_duration(server_->o.timeouts.handshake_s);  // the upgrade and the close handshake
    timeout.idle_timeout = websocket::stream_base::none();  // idleness and stalled writes are this session's own checks
    timeout.keep_alive_pings = false;
    ws_.set_option(timeout);
    ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) { set_security_headers(res); }));
    ws_.read_message_max(server_->o.max_message_bytes);
    // Called when the client's close frame arrives, before the reply goes out: once the client's
    // close completes, its slot is free for the next connection.
    ws_.control_callback([this](websocket::frame_type kind, beast::string_view) {
      if (kind == websocket::frame_type::close) release_slot();
    });
    ws_.async_accept(req, beast::bind_front_handler(&WsSession::on_accept, shared_from_this()));
  }

  void close_now() override {
    beast::get_lowest_layer(ws_).close();
    timer_.cancel();
  }

  std::uint64_t id() const { return id_; }
  std::shared_ptr<LiveStream> runner() const {
    std::lock_guard lock(runner_mutex_);
    return runner_;
  }
  std::uint64_t send_dropped() const { return send_dropped_; }
  std::uint64_t decode_dropped() const { return decode_dropped_; }

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
    if (ec) {
      if (ec == beast::error::timeout) server_->count_timeout(TimeoutKind::Handshake);
      return;
    }
    {
      std::lock_guard lock(server_->mutex);
      if (server_->slots_used >= server_->o.max_sessions) {
        ++server_->rejected_busy;
        busy_ = true;
      } else {
        ++server_->slots_used;
        holding_slot_ = true;
        id_ = server_->next_id++;
        ++server_->sessions_total;
        server_->sessions.insert(shared_from_this());
      }
    }
    if (busy_) {
      const auto n = server_->o.max_sessions;
      spdlog::warn("session refused: {} sessions open (--max-sessions {})", n, n);
      send_text(json{{"type", "busy"}, {"message", fmt::format("the server is busy: {} of {} sessions in use, try again later", n, n)}});
      return;  // closed with "try again later" once the message is out
    }
    spdlog::info("session {} opened", id_);
    opts_ = server_->o.stream;
    dit_ = server_->o.dit;
    last_activity_ = Clock::now();
    try {
      restart_stream();
      send_text(config_message(true, "ready"));
    } catch (const std::exception& e) {
      send_error(e.what());
    }
    schedule_tick();
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
    last_activity_ = Clock::now();
    std::string data = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    try {
      if (ws_.got_text()) {
        apply_config(parse_session_message(data, dit_ ? SessionKind::TextToVideo : SessionKind::StableDiffusion));
      } else {
        handle_frame(std::move(data));
      }
    } catch (const std::exception& e) {
      reject(e.what());
    }
    if (closing_) return;
    if (outbox_.size() > kMaxPendingMessages) {
      read_paused_ = true;  // until the client takes its replies (or the write timeout ends it)
      return;
    }
    do_read();
  }

  void reject(const std::string& what) {
    count_rejected();
    const auto message = printable(what);
    spdlog::warn("session {}: rejected a message: {}", id_, message);
    send_error(message);
  }

  // The header is checked here, at once (microseconds); decoding goes to the worker pool, at most
  // one frame per session at a time: a frame arriving meanwhile waits, replacing an older waiting one.
  void handle_frame(std::string bytes) {
    if (dit_) throw Error("this server streams text-to-video (StreamDiT): send a prompt, not frames");
    if (!runner()) throw Error("the stream is not running (see the last error)");
    if (opts_.stream.txt2img) throw Error("frames are not used in txt2img mode");
    checked_image_size(bytes, "the frame", frame_pixel_budget(opts_.width, opts_.height));
    if (decoding_) {
      if (waiting_frame_) ++decode_dropped_;
      waiting_frame_ = std::move(bytes);
      return;
    }
    start_decode(std::move(bytes));
  }

  void start_decode(std::string bytes) {
    const auto now = Clock::now();
    decode_credit_s_ = std::min(kDecodeBurstSeconds, decode_credit_s_ + kDecodeShare * ms_between(credit_updated_, now) / 1000);
    credit_updated_ = now;
    if (decode_credit_s_ <= 0) {  // over its decode budget: the frame is dropped, the session goes on
      ++decode_dropped_;
      return;
    }
    decoding_ = true;
    const auto budget = frame_pixel_budget(opts_.width, opts_.height);
    net::post(server_->workers, [self = shared_from_this(), bytes = std::move(bytes), runner = runner(), w = opts_.width, h = opts_.height, budget] {
      const auto t0 = Clock::now();
      std::string error;
      try {
        runner->push(fit_image(decode_image(bytes, "the frame", budget), w, h, Fit::Crop)[0]);
      } catch (const std::exception& e) {
        error = e.what();
      }
      const double seconds = ms_since(t0) / 1000;
      net::post(self->ws_.get_executor(), [self, seconds, error] { self->on_decoded(seconds, error); });
    });
  }

  void on_decoded(double seconds, const std::string& error) {
    decoding_ = false;
    decode_credit_s_ -= seconds;
    if (ended_) return;
    if (!error.empty()) reject(error);
    if (waiting_frame_) {
      auto next = std::move(*waiting_frame_);
      waiting_frame_.reset();
      start_decode(std::move(next));
    }
  }

  void apply_config(const SessionConfigUpdate& u) {
    if (dit_) return apply_dit_config(u);
    auto next = opts_;
    const auto& defaults = server_->o.stream.stream;
    if (u.mode) {
      next.stream.txt2img = *u.mode == "txt2img";
      next.stream.warmup = next.stream.txt2img ? Warmup::Suppress : defaults.warmup;
      // Residual CFG (self, initialize) works on input latents: a switch to txt2img takes plain
      // CFG off unless the message names a cfg; back to img2img, the server's default returns.
      const bool residual = defaults.cfg == CfgType::Self || defaults.cfg == CfgType::Initialize;
      next.stream.cfg = next.stream.txt2img && residual ? CfgType::None : defaults.cfg;
    }
    if (u.guidance) next.stream.guidance_scale = *u.guidance;
    if (u.delta) next.stream.delta = *u.delta;
    if (u.seed) next.seed = *u.seed;
    if (u.t_index) next.stream.t_index_list = *u.t_index;
    if (u.cfg) next.stream.cfg = parse_cfg_type(*u.cfg);
    if (next.stream.txt2img && (next.stream.cfg == CfgType::Self || next.stream.cfg == CfgType::Initialize))
      throw Error("\"cfg\" self and initialize need input frames: txt2img takes \"none\" or \"full\"");
    if (u.prompt) next.prompt = *u.prompt;
    if (u.negative_prompt) next.negative_prompt = *u.negative_prompt;
    if (u.lora_scales) check_lora_scales(*u.lora_scales);
    const auto controlnets = server_->o.stream.models->controlnets.size();
    if (u.controlnet_scales) {
      if (controlnets == 0) throw Error("\"controlnet_scales\": this server has no ControlNet loaded (serve --controlnet DIR[:SCALE])");
      if (u.controlnet_scales->size() != controlnets)
        throw Error(fmt::format("\"controlnet_scales\" must have one scale per ControlNet: {} given, {} loaded", u.controlnet_scales->size(), controlnets));
      next.controlnet_scales = *u.controlnet_scales;
    }
    if (u.control) {
      if (controlnets == 0) throw Error("\"control\": this server has no ControlNet loaded (serve --controlnet DIR[:SCALE])");
      next.control = parse_control_source(*u.control, next.width, next.height);
    }

    const auto& a = next.stream;
    const auto& b = opts_.stream;
    const bool restart = !runner() || a.txt2img != b.txt2img || a.guidance_scale != b.guidance_scale || a.delta != b.delta ||
                         a.t_index_list != b.t_index_list || a.cfg != b.cfg || next.seed != opts_.seed;
    const bool prompt_changed = next.prompt != opts_.prompt || next.negative_prompt != opts_.negative_prompt;
    if (!restart && (u.controlnet_scales || u.control)) {  // per session, from the next call: no restart
      auto r = std::dynamic_pointer_cast<StreamRunner>(runner());
      if (u.control) r->set_control(next.control);
      if (u.controlnet_scales) r->set_controlnet_scales(next.controlnet_scales);
      opts_.control = next.control;
      opts_.controlnet_scales = next.controlnet_scales;
    }
    if (restart) {
      const auto previous = opts_;
      opts_ = next;
      restart_or_restore([&] { opts_ = previous; });
    } else if (prompt_changed) {
      opts_ = next;
      runner()->set_prompt(opts_.prompt, opts_.negative_prompt, u.blend_frames);
    }
    if (u.lora_scales) server_->request_lora_scales(*u.lora_scales);  // answered by a "loras" message once fused
    if (restart || prompt_changed || !u.lora_scales) send_text(config_message(restart, "config"));
  }

  json controlnet_state() const {
    json list = json::array();
    const auto& dirs = server_->o.stream.adapters.controlnets;
    for (std::size_t i = 0; i < dirs.size(); ++i)
      list.push_back({{"folder", dirs[i].filename().string()},
                      {"scale", i < opts_.controlnet_scales.size() ? opts_.controlnet_scales[i] : 1.0}});
    return list;
  }

  void check_lora_scales(const std::vector<double>& scales) const {
    const auto& loras = server_->o.stream.models->loras;
    if (!loras) throw Error("\"lora_scales\": this server has no LoRA loaded (serve --lora FILE[:SCALE])");
    if (!loras->rescalable()) throw Error("\"lora_scales\": this server's LoRA scales are fixed");
    if (scales.size() != loras->loras().size())
      throw Error(fmt::format("\"lora_scales\" must have one scale per LoRA: {} given, {} loaded", scales.size(), loras->loras().size()));
  }

 public:
  // From the worker pool once the server's LoRAs were re-fused.
  void notify(json message) {
    net::post(ws_.get_executor(), [self = shared_from_this(), message = std::move(message)] {
      if (!self->ended_ && !self->dit_) self->send_text(message);
    });
  }

 private:

  // Text-to-video: the prompt hot-swaps; guidance and seed start a new stream.
  void apply_dit_config(const SessionConfigUpdate& u) {
    auto next = *dit_;
    if (u.guidance) next.sampler.guidance = *u.guidance;
    if (u.seed) next.sampler.seed = *u.seed;
    if (u.prompt) next.prompt = *u.prompt;
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
            {"loras", server_->lora_state()},
            {"controlnets", controlnet_state()},
            {"control", control_source_name(opts_.control)},
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
    std::lock_guard lock(server_->mutex);
    add_to_totals_locked(r);
  }
  void add_to_totals_locked(const LiveStream& r) {
    const auto s = r.stats();
    server_->ended_in += s.frames_in;
    server_->ended_out += s.frames_out;
    server_->ended_skipped += s.frames_skipped;
    server_->ended_drop_in += s.inputs_dropped;
    server_->ended_drop_out += s.outputs_dropped;
  }

  // img2img sessions live on their input: one that sends nothing holds a slot for nobody. Sessions
  // that generate without input (txt2img, text-to-video) are not idle while the client reads.
  bool can_idle() const { return !dit_ && !opts_.stream.txt2img; }

  void schedule_tick() {
    timer_.expires_after(kTickEvery);
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->ended_ || self->closing_) return;
      if (self->check_timeouts()) return;
      self->send_stats();
      self->schedule_tick();
    });
  }

  // Returns whether the session is being closed.
  bool check_timeouts() {
    const auto now = Clock::now();
    const auto& t = server_->o.timeouts;
    if (writing_ && ms_between(write_started_, now) > t.write_s * 1000) {
      server_->count_timeout(TimeoutKind::Write);
      spdlog::warn("session {}: the client took no data for {} s; closing the connection", id_, t.write_s);
      closing_ = true;
      release_slot();
      beast::get_lowest_layer(ws_).close();  // the pending write fails, which ends the session
      return true;
    }
    if (can_idle() && ms_between(last_activity_, now) > t.idle_s * 1000) {
      server_->count_timeout(TimeoutKind::Idle);
      spdlog::info("session {}: no frame or message for {} s; closing it", id_, t.idle_s);
      send_error(fmt::format("closing the session: no frame or message for {} s", t.idle_s));
      closing_ = true;
      release_slot();  // the slot is free now, whatever the client does with the close
      close_after_writes_ = websocket::close_reason(websocket::close_code::policy_error, "idle");
      if (!writing_) do_close();
      return true;
    }
    return false;
  }

  void send_stats() {
    auto r = runner();
    if (!r) return;
    const auto s = r->stats();
    json st = {{"type", "stats"}, {"fps", s.output_fps}, {"frames_in", s.frames_in}, {"frames_out", s.frames_out},
               {"inputs_dropped", s.inputs_dropped + decode_dropped_}, {"send_dropped", send_dropped_.load()}, {"skipped", s.frames_skipped}};
    for (const auto& [stage, t] : s.stages) st["stages"][stage] = {{"median_ms", t.median_ms}, {"p90_ms", t.p90_ms}};
    send_text(st);
    if (const auto dit = std::dynamic_pointer_cast<DiTRunner>(r); dit && !stream_error_sent_) {
      if (auto error = dit->error(); !error.empty()) {
        send_error("the stream stopped: " + error);
        stream_error_sent_ = true;
      }
    }
  }

  void send_text(const json& j) { queue_message(j.dump(-1, ' ', false, json::error_handler_t::replace), false); }
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
      if (closing_) return;
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
    write_started_ = Clock::now();
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
    if (read_paused_ && outbox_.size() <= kMaxPendingMessages / 2 && !closing_) {
      read_paused_ = false;
      do_read();
    }
    if (!outbox_.empty()) {
      do_write();
    } else if (busy_) {
      close_after_writes_ = websocket::close_reason(websocket::close_code::try_again_later, "busy");
      do_close();
    } else if (close_after_writes_) {
      do_close();
    }
  }

  void do_close() {
    const auto reason = *close_after_writes_;
    close_after_writes_.reset();
    ws_.async_close(reason, [self = shared_from_this()](beast::error_code) { self->end(); });
  }

  void release_slot() {
    std::lock_guard lock(server_->mutex);
    if (!holding_slot_) return;
    holding_slot_ = false;
    --server_->slots_used;
  }

  // The connection is over: the slot is freed now; the stream is stopped on the worker pool (it may
  // be in the middle of a model call) and its counts move to the server's totals in the same step
  // that removes the session from /metrics' live list, so that no scrape sees them twice or never.
  void end() {
    if (ended_) return;
    ended_ = true;
    timer_.cancel();
    release_slot();
    waiting_frame_.reset();
    if (busy_ || id_ == 0) return;
    std::shared_ptr<LiveStream> r;
    {
      std::lock_guard lock(runner_mutex_);
      r = std::move(runner_);
    }
    net::post(server_->workers, [self = shared_from_this(), r] {
      if (r) r->stop();
      auto& server = *self->server_;
      std::lock_guard lock(server.mutex);
      if (r) self->add_to_totals_locked(*r);
      server.send_dropped += self->send_dropped_;
      server.decode_dropped += self->decode_dropped_;
      server.sessions.erase(self);
      spdlog::info("session {} closed", self->id_);
    });
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
  std::optional<websocket::close_reason> close_after_writes_;
  std::optional<std::string> waiting_frame_;  // the newest frame received while another decodes
  std::atomic<std::uint64_t> send_dropped_{0}, decode_dropped_{0};
  double decode_credit_s_ = kDecodeBurstSeconds;
  Clock::time_point credit_updated_ = Clock::now(), last_activity_ = Clock::now(), write_started_;
  std::uint64_t id_ = 0;
  bool holding_slot_ = false;  // guarded by the server's mutex
  bool writing_ = false, busy_ = false, ended_ = false, closing_ = false, decoding_ = false, stream_error_sent_ = false;
  bool read_paused_ = false;  // too many replies waiting: the client's messages wait in its socket
};

class HttpSession : public Connection, public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket&& socket, std::shared_ptr<Server::Impl> server) : stream_(std::move(socket)), server_(std::move(server)) {
    ++server_->http_connections;
  }
  ~HttpSession() override { --server_->http_connections; }
  void close_now() override { stream_.close(); }

  void run() {
    parser_.header_limit(kMaxHeaderBytes);
    parser_.body_limit(kMaxRequestBodyBytes);
    stream_.expires_after(to_duration(server_->o.timeouts.handshake_s));
    http::async_read(stream_, buffer_, parser_, beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
  }

 private:
  void on_read(beast::error_code ec, std::size_t) {
    if (ec == beast::error::timeout) return server_->count_timeout(TimeoutKind::Handshake);
    if (ec == http::error::end_of_stream || ec == http::error::partial_message) return;
    if (ec) {  // a request that cannot be parsed still gets an answer saying why
      if (ec.category() != http::make_error_code(http::error::bad_target).category()) return;  // a reset, not bad HTTP
      if (ec == http::error::header_limit) return error_reply(http::status::request_header_fields_too_large, fmt::format("request headers over {} bytes\n", kMaxHeaderBytes));
      if (ec == http::error::body_limit) return error_reply(http::status::payload_too_large, fmt::format("request body over {} bytes\n", kMaxRequestBodyBytes));
      if (ec == http::error::bad_version) return error_reply(http::status::http_version_not_supported, "HTTP/1.0 and HTTP/1.1 only\n");
      return error_reply(http::status::bad_request, "bad request: " + ec.message() + "\n");
    }
    const auto& req = parser_.get();
    if (req.version() != 10 && req.version() != 11) return error_reply(http::status::http_version_not_supported, "HTTP/1.0 and HTTP/1.1 only\n");
    head_ = req.method() == http::verb::head;
    std::string target(req.target());
    if (const auto q = target.find('?'); q != std::string::npos) target.resize(q);
    if (websocket::is_upgrade(req)) {
      if (target != "/ws") return error_reply(http::status::not_found, "the WebSocket endpoint is /ws\n");
      if (const auto origin = req[http::field::origin]; !origin.empty() && !same_origin(origin, req[http::field::host])) {
        {
          std::lock_guard lock(server_->mutex);
          ++server_->rejected_origin;
        }
        return error_reply(http::status::forbidden, printable(fmt::format("a page from {} may not open a session here (the server is {})\n",
                                                                          std::string(origin), std::string(req[http::field::host]))));
      }
      stream_.expires_never();  // the WebSocket session keeps its own time
      auto session = std::make_shared<WsSession>(stream_.release_socket(), server_);
      server_->track(session);
      session->run(parser_.release());
      return;
    }
    if (req.method() != http::verb::get && !head_) return error_reply(http::status::method_not_allowed, "GET or HEAD only\n", {{"Allow", "GET, HEAD"}});
    if (target == "/healthz") return reply(http::status::ok, "text/plain", "ok\n");
    if (target == "/metrics") return reply(http::status::ok, "text/plain; version=0.0.4", server_->metrics());
    if (const auto asset = web_asset(target == "/" ? "/index.html" : target)) {
      const bool page = asset->second.find("text/html") != std::string_view::npos;
      return reply(http::status::ok, asset->second, std::string(asset->first),
                   page ? std::vector<std::pair<std::string, std::string>>{{"Content-Security-Policy", content_security_policy(req[http::field::host])}}
                        : std::vector<std::pair<std::string, std::string>>{});
    }
    error_reply(http::status::not_found, "not found: " + printable(target) + "\n");
  }

  void error_reply(http::status status, std::string body, std::vector<std::pair<std::string, std::string>> extra = {}) {
    {
      std::lock_guard lock(server_->mutex);
      ++server_->http_errors[static_cast<int>(status)];
    }
    reply(status, "text/plain; charset=utf-8", std::move(body), std::move(extra));
  }

  void reply(http::status status, std::string_view type, std::string body, std::vector<std::pair<std::string, std::string>> extra = {}) {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    set_security_headers(*res);
    res->set(http::field::content_type, std::string(type));
    for (const auto& [name, value] : extra) res->set(name, value);
    res->keep_alive(false);
    const auto length = body.size();
    if (!head_) res->body() = std::move(body);
    res->content_length(length);
    stream_.expires_after(to_duration(server_->o.timeouts.write_s));
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
      if (ec == beast::error::timeout) self->server_->count_timeout(TimeoutKind::Write);
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request_parser<http::string_body> parser_;
  std::shared_ptr<Server::Impl> server_;
  bool head_ = false;
};

}  // namespace

void Server::Impl::request_lora_scales(std::vector<double> scales) {
  std::lock_guard lock(mutex);
  lora_wanted = std::move(scales);
  if (lora_fusing) return;  // the running re-fusion takes the newest request when it is done
  lora_fusing = true;
  net::post(workers, [self = shared_from_this()] { self->fuse_wanted_loras(); });
}

void Server::Impl::fuse_wanted_loras() {
  while (true) {
    std::vector<double> scales;
    {
      std::lock_guard lock(mutex);
      if (!lora_wanted || stopped) {
        lora_fusing = false;
        return;
      }
      scales = std::move(*lora_wanted);
      lora_wanted.reset();
    }
    json message;
    try {
      const double ms = o.stream.models->set_lora_scales(scales);
      {
        std::lock_guard lock(mutex);
        lora_scales = scales;
      }
      spdlog::info("LoRA scales {} (re-fused in {:.0f} ms)", describe_lora_specs(o.stream.models->loras->loras()), ms);
      message = {{"type", "loras"}, {"loras", lora_state()}, {"fuse_ms", ms}};
    } catch (const std::exception& e) {
      spdlog::error("LoRA scale change failed: {}", e.what());
      message = {{"type", "error"}, {"message", std::string("LoRA scale change failed: ") + e.what()}};
    }
    std::vector<std::shared_ptr<WsSession>> live;
    {
      std::lock_guard lock(mutex);
      live.assign(sessions.begin(), sessions.end());
    }
    for (const auto& session : live) session->notify(message);
  }
}

json Server::Impl::lora_state() const {
  json list = json::array();
  if (o.dit || !o.stream.models || !o.stream.models->loras) return list;
  std::lock_guard lock(mutex);
  const auto& loras = o.stream.models->loras->loras();
  for (std::size_t i = 0; i < loras.size() && i < lora_scales.size(); ++i)
    list.push_back({{"file", loras[i].file.filename().string()}, {"scale", lora_scales[i]}});
  return list;
}

void Server::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors (EMFILE) or memory: accepting again at once would spin a core while the
      // condition lasts; wait a moment for connections to close instead.
      spdlog::warn("accepting a connection failed: {}; retrying in 100 ms", ec.message());
      self->accept_retry.expires_after(100ms);
      self->accept_retry.async_wait([self](beast::error_code e) {
        if (!e) self->accept();
      });
      return;
    }
    if (self->http_connections.load() >= kMaxHttpConnections) {
      {
        std::lock_guard lock(self->mutex);
        ++self->connections_refused;
      }
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      auto session = std::make_shared<HttpSession>(std::move(socket), self);
      self->track(session);
      session->run();
    }
    self->accept();
  });
}

std::string Server::Impl::metrics() const {
  std::vector<std::shared_ptr<WsSession>> live;
  std::uint64_t in, out, skipped, drop_in, drop_out, drop_send, drop_decode, total, busy, origin, rejected, refused;
  int active;
  std::array<std::uint64_t, 3> timeout_counts;
  std::map<int, std::uint64_t> errors;
  {
    std::lock_guard lock(mutex);
    live.assign(sessions.begin(), sessions.end());
    in = ended_in, out = ended_out, skipped = ended_skipped, drop_in = ended_drop_in, drop_out = ended_drop_out, drop_send = send_dropped;
    drop_decode = decode_dropped, total = sessions_total, busy = rejected_busy, origin = rejected_origin, rejected = messages_rejected;
    refused = connections_refused, active = slots_used, timeout_counts = timeouts, errors = http_errors;
  }
  std::string fps, lat;  // per-session samples of the two gauges
  for (const auto& s : live) {
    drop_send += s->send_dropped();
    drop_decode += s->decode_dropped();
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
  metric("streamgen_sessions_active", "gauge", "Session slots in use.", fmt::format("streamgen_sessions_active {}\n", active));
  metric("streamgen_sessions_total", "counter", "Sessions admitted since start.", fmt::format("streamgen_sessions_total {}\n", total));
  metric("streamgen_sessions_rejected_total", "counter", "Sessions refused, by reason.",
         fmt::format("streamgen_sessions_rejected_total{{reason=\"busy\"}} {}\nstreamgen_sessions_rejected_total{{reason=\"origin\"}} {}\n", busy, origin));
  metric("streamgen_connections_refused_total", "counter", "Connections closed at once: too many were still sending their request.",
         fmt::format("streamgen_connections_refused_total {}\n", refused));
  std::string timeout_samples;
  for (std::size_t k = 0; k < kTimeoutNames.size(); ++k)
    timeout_samples += fmt::format("streamgen_timeouts_total{{kind=\"{}\"}} {}\n", kTimeoutNames[k], timeout_counts[k]);
  metric("streamgen_timeouts_total", "counter", "Connections given up: handshake (no complete request or upgrade), idle (img2img "
         "session with no input), write (client stopped reading).", timeout_samples);
  std::string error_samples;
  for (const auto& [status, count] : errors) error_samples += fmt::format("streamgen_http_errors_total{{status=\"{}\"}} {}\n", status, count);
  metric("streamgen_http_errors_total", "counter", "HTTP requests answered with an error status.", error_samples);
  metric("streamgen_messages_rejected_total", "counter", "Malformed or oversized client messages.",
         fmt::format("streamgen_messages_rejected_total {}\n", rejected));
  metric("streamgen_frames_in_total", "counter", "Frames received.", fmt::format("streamgen_frames_in_total {}\n", in));
  metric("streamgen_frames_out_total", "counter", "Frames generated.", fmt::format("streamgen_frames_out_total {}\n", out));
  metric("streamgen_frames_skipped_total", "counter", "Inputs the similarity filter skipped.", fmt::format("streamgen_frames_skipped_total {}\n", skipped));
  metric("streamgen_frames_dropped_total", "counter", "Frames dropped to stay real-time, by where.",
         fmt::format("streamgen_frames_dropped_total{{where=\"decode\"}} {}\nstreamgen_frames_dropped_total{{where=\"input\"}} {}\n"
                     "streamgen_frames_dropped_total{{where=\"output\"}} {}\nstreamgen_frames_dropped_total{{where=\"send\"}} {}\n",
                     drop_decode, drop_in, drop_out, drop_send));
  metric("streamgen_output_fps", "gauge", "Output frames per second, per session.", fps);
  metric("streamgen_stage_latency_ms", "gauge", "Per-stage latency over the last frames, per session.", lat);
  return m;
}

void validate_server_options(const ServerOptions& o) {
  beast::error_code ec;
  net::ip::make_address(o.host, ec);
  if (ec) throw Error("--host '" + printable(o.host) + "' is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1)");
  if (o.max_sessions < 1) throw Error(fmt::format("--max-sessions must be at least 1, got {}", o.max_sessions));
  if (o.max_message_bytes < 1024) throw Error(fmt::format("the message limit must be at least 1024 bytes, got {}", o.max_message_bytes));
  if (o.jpeg_quality < 1 || o.jpeg_quality > 100) throw Error(fmt::format("the JPEG quality must be in 1..100, got {}", o.jpeg_quality));
  const auto& t = o.timeouts;
  for (const auto& [name, value] : {std::pair{"--handshake-timeout", t.handshake_s}, {"--idle-timeout", t.idle_s}, {"--write-timeout", t.write_s}})
    if (!(value >= 0.1 && value <= 86400)) throw Error(fmt::format("{} must be between 0.1 and 86400 seconds, got {}", name, value));
  try {
    if (o.dit) {
      if (!o.stream.adapters.loras.empty() || !o.stream.adapters.controlnets.empty())
        throw Error("--lora and --controlnet are for Stable Diffusion pipelines; a StreamDiT model takes neither");
      check_dit_runner_options(*o.dit);
    } else {
      check_stream_runner_options(o.stream);
    }
  } catch (const Error& e) {
    // The runners name their own settings; say which server options they came from.
    throw Error(fmt::format("{} (from --width/--height/--t-index/--fps)", e.what()));
  }
}

Server::Server(ServerOptions options) : impl_(std::make_shared<Impl>(std::move(options))) {
  auto& m = *impl_;
  auto& o = m.o;
  validate_server_options(o);
  // Bound before the models load: a taken port is an error in a second, not after a minute's load.
  beast::error_code ec;
  const tcp::endpoint endpoint(net::ip::make_address(o.host), o.port);
  m.acceptor.open(endpoint.protocol(), ec);
  if (!ec) m.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(endpoint, ec);
  if (!ec) m.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw Error(fmt::format("cannot listen on {}:{}: {}", o.host, o.port, ec.message()));
  if (o.dit) {
    if (!o.dit->loaded) {
      o.dit->loaded = load_stream_dit(o.dit->model, o.dit->compute);
      o.dit->loaded_autoencoder = load_dit_autoencoder(o.dit->model, o.dit->compute);
    }
    o.dit->loaded->eval();
  } else if (!o.stream.models) {
    o.stream.models = StreamModels::load(o.stream.model, o.stream.taesd, o.stream.compute, o.stream.adapters);
  }
  if (!o.dit && o.stream.models->loras) m.lora_scales = o.stream.models->loras->scales();
}

Server::~Server() { stop(); }

void Server::start() {
  auto& m = *impl_;
  {
    std::lock_guard lock(m.mutex);
    if (m.started || m.stopped) return;
    m.started = true;
  }
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
  m.ioc.stop();
  for (auto& t : m.threads)
    if (t.joinable()) t.join();
  // The I/O threads are gone: close everything clients left open, so that every pending handler
  // completes (with an error) and lets go of its session and of this server; the streams stop.
  std::vector<std::shared_ptr<Connection>> open;
  std::set<std::shared_ptr<WsSession>> sessions;
  {
    std::lock_guard lock(m.mutex);
    for (const auto& w : m.connections)
      if (auto c = w.lock()) open.push_back(std::move(c));
    m.connections.clear();
    sessions = m.sessions;
  }
  beast::error_code ignored;
  m.acceptor.close(ignored);
  m.accept_retry.cancel();
  for (const auto& c : open) c->close_now();
  open.clear();
  for (const auto& session : sessions) session->shutdown();
  sessions.clear();
  m.ioc.restart();
  m.ioc.run();       // the aborted handlers, on this thread
  m.workers.join();  // streams of closed sessions still stopping, decodes in flight
  m.ioc.restart();
  m.ioc.run();       // what those posted back
  {
    std::lock_guard lock(m.mutex);
    m.sessions.clear();
  }
  m.stopped_cv.notify_all();
}

std::string Server::metrics_text() const { return impl_->metrics(); }

}  // namespace streamgen
