// The load and abuse suite: starts the real `streamgen serve` on loopback and plays the clients a
// public server meets (too many, silent, hostile, careless), then prints one table row per scenario
// and fails on a crash, a leaked session slot, a check that did not hold, or memory that does not
// come back. `tests/load/run.sh` runs it (short in CI, long by hand).
#include <stb/stb_image_write.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fmt/core.h>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "../image_bytes.h"
#include "load_client.h"

namespace streamgen::load {
namespace {

using json = nlohmann::json;

struct Profile {
  int max_sessions = 2;
  double idle_s = 2, write_s = 2, handshake_s = 2;
  int over_limit_clients = 4;
  double over_limit_seconds = 6;
  int idle_clients = 2;
  int bomb_sessions = 2;
  int slow_readers = 2;
  int flood_idle = 200, flood_rapid = 500;
  int t2v_clients = 2;
  double t2v_seconds = 6, t2v_prompt_every = 1;
};

Profile short_profile() { return {}; }

Profile long_profile() {
  Profile p;
  p.max_sessions = 4;
  p.idle_s = p.write_s = p.handshake_s = 5;
  p.over_limit_clients = 8;
  p.over_limit_seconds = 120;
  p.idle_clients = 4;
  p.bomb_sessions = 4;
  p.slow_readers = 4;
  p.flood_idle = 400;
  p.flood_rapid = 2000;
  p.t2v_clients = 4;
  p.t2v_seconds = 60;
  p.t2v_prompt_every = 5;
  return p;
}

// One row of the table. Counters are filled by client threads.
struct Row {
  std::string name;
  std::atomic<int> admitted{0}, busy{0}, errors{0}, frames_in{0}, frames_out{0};
  std::mutex mutex;
  std::vector<double> latency_ms;
  double rss_before = 0, rss_peak = 0, rss_after = 0;
  std::vector<std::string> failures;  // checks that did not hold
  void latency(double ms) {
    std::lock_guard lock(mutex);
    latency_ms.push_back(ms);
  }
  void fail(const std::string& why) {
    std::lock_guard lock(mutex);
    failures.push_back(why);
  }
};

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(std::min<double>(v.size() - 1, q * (v.size() - 1) + 0.5))];
}

std::string encode_jpeg(int width, int height, int seed, int quality) {
  std::vector<unsigned char> pixels(static_cast<std::size_t>(width) * height * 3);
  std::uint32_t state = static_cast<std::uint32_t>(seed) * 2654435761u + 1;
  for (std::size_t i = 0; i < pixels.size(); ++i) {
    state = state * 1664525u + 1013904223u;
    pixels[i] = static_cast<unsigned char>((i / 3 % width + (i / 3 / width) + (state >> 28)) & 0xff);  // gradient + noise
  }
  std::string out;
  stbi_write_jpg_to_func([](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); }, &out,
                         width, height, 3, pixels.data(), quality);
  return out;
}

// Runs `client(i)` on n threads and waits for them.
void clients(int n, const std::function<void(int)>& client) {
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) threads.emplace_back(client, i);
  for (auto& t : threads) t.join();
}

// N clients over --max-sessions stream frames in a closed loop (send, wait for the output).
void over_limit(unsigned short port, const Profile& p, Row& row) {
  const auto frame = encode_jpeg(96, 80, 1, 90);
  const auto until = Clock::now() + std::chrono::milliseconds(static_cast<int>(p.over_limit_seconds * 1000));
  std::atomic<int> ready_count{0};
  clients(p.over_limit_clients, [&](int i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50 * i));  // admitted in order: the first max_sessions
    WsClient c(port);
    const auto first = c.read_type({"ready", "busy"}, 20s);
    if (!first) return row.fail("client " + std::to_string(i) + ": no ready/busy");
    if (json::parse(*first)["type"] == "busy") {
      ++row.busy;
      c.read(5s);  // the server closes with 1013 once the message is out
      if (c.close_code() != 1013) row.fail("busy client closed with " + std::to_string(c.close_code()));
      return;
    }
    ++row.admitted;
    ++ready_count;
    while (ready_count < p.max_sessions && Clock::now() < until) std::this_thread::sleep_for(10ms);  // the busy ones are told first
    while (Clock::now() < until) {
      const auto t0 = Clock::now();
      c.send_binary(frame);
      ++row.frames_in;
      bool got = false;
      while (auto m = c.read(10s)) {
        if (!m->text) {
          got = true;
          break;
        }
        if (json::parse(m->data)["type"] == "error") ++row.errors;
      }
      if (!got) return row.fail("client " + std::to_string(i) + ": no frame back within 10 s");
      ++row.frames_out;
      row.latency(ms_between(t0, Clock::now()));
    }
    c.close();
  });
  if (row.admitted != p.max_sessions) row.fail(fmt::format("{} admitted, expected {}", row.admitted.load(), p.max_sessions));
  if (row.busy != p.over_limit_clients - p.max_sessions) row.fail(fmt::format("{} told busy, expected {}", row.busy.load(), p.over_limit_clients - p.max_sessions));
  if (row.errors != 0) row.fail(fmt::format("{} errors", row.errors.load()));
}

// Sessions that open and send nothing are closed after --idle-timeout; a real user gets in.
void idle(unsigned short port, const Profile& p, Row& row) {
  clients(p.idle_clients, [&](int i) {
    WsClient c(port);
    if (!c.read_type({"ready"}, 20s)) return row.fail("idle client " + std::to_string(i) + " not admitted");
    ++row.admitted;
    const auto t0 = Clock::now();
    if (c.read_type({"error"}, std::chrono::milliseconds(static_cast<int>(p.idle_s * 1000) + 5000))) ++row.errors;
    c.read(5s);
    if (c.close_code() != 1008) return row.fail("idle client closed with " + std::to_string(c.close_code()) + ", expected 1008");
    row.latency(ms_between(t0, Clock::now()));  // how long the slot was held
  });
  WsClient real(port);
  if (!real.read_type({"ready"}, 20s)) row.fail("a real client was not admitted after the idle ones");
  real.close();
}

// Decompression bombs (header claims, real oversized JPEGs) next to valid frames: refused from the
// header, the session goes on, memory stays flat.
void bombs(unsigned short port, const Profile& p, Row& row) {
  const std::vector<std::string> bombs = {test::png_header_claiming(16000, 16000), test::png_header_claiming(65535, 65535),
                                          encode_jpeg(4000, 3000, 2, 50)};
  const auto frame = encode_jpeg(96, 80, 3, 90);
  clients(p.bomb_sessions, [&](int i) {
    WsClient c(port);
    const auto first = c.read_type({"ready", "busy"}, 20s);
    if (!first || json::parse(*first)["type"] == "busy") {
      ++row.busy;
      return;
    }
    ++row.admitted;
    for (int round = 0; round < 3; ++round) {
      for (const auto& b : bombs) {
        c.send_binary(b);
        ++row.frames_in;
        // Refused from the header: over the session's pixel budget, or more than the decoder takes at all.
        const auto e = c.read_type({"error"}, 10s);
        if (!e || json::parse(*e)["message"].get<std::string>().rfind("cannot decode the frame: ", 0) != 0)
          return row.fail("client " + std::to_string(i) + ": a bomb was not refused from its header: " + e.value_or("(nothing)"));
        ++row.errors;
      }
      const auto t0 = Clock::now();
      c.send_binary(frame);
      ++row.frames_in;
      const int before = c.frames_seen;
      while (c.frames_seen == before)
        if (!c.read_type({"never"}, 20ms) && c.closed()) return row.fail("session ended after bombs");
      ++row.frames_out;
      row.latency(ms_between(t0, Clock::now()));
    }
    c.close();
  });
}

// Malformed frames and configs: each refused with an error, the session survives.
void malformed(unsigned short port, const Profile&, Row& row) {
  WsClient c(port);
  if (!c.read_type({"ready"}, 20s)) return row.fail("not admitted");
  ++row.admitted;
  const auto jpeg = encode_jpeg(96, 80, 4, 90);
  const std::vector<std::pair<bool, std::string>> bad = {
      {false, "not an image"}, {false, jpeg.substr(0, 40)}, {false, std::string(1, '\0')},
      {true, "not json"}, {true, "[]"}, {true, R"({"type":"dance"})"}, {true, R"({"type":"config","guidance":1e308})"},
      {true, R"({"type":"config","t_index":[999]})"}, {true, R"({"type":"config","prompt":)" + json(std::string(3000, 'x')).dump() + "}"},
      {true, R"({"type":"config","seed":"\u0000"})"}, {true, std::string(20000, '[')},
  };
  for (const auto& [text, data] : bad) {
    text ? c.send_text(data) : c.send_binary(data);
    ++row.frames_in;
    if (!c.read_type({"error"}, 10s)) return row.fail("no error for a malformed message: " + data.substr(0, 40));
    ++row.errors;
  }
  const auto t0 = Clock::now();
  c.send_binary(jpeg);
  ++row.frames_in;
  while (c.frames_seen == 0)
    if (!c.read_type({"never"}, 20ms) && c.closed()) return row.fail("the session did not survive");
  ++row.frames_out;
  row.latency(ms_between(t0, Clock::now()));
  // A text frame that is not UTF-8 breaks the protocol (RFC 6455 8.1): the server fails the
  // connection with 1007.
  c.send_text("{\"type\":\"config\",\"prompt\":\"\xff\xfe\"}");
  ++row.frames_in;
  while (!c.closed()) c.read(5s);
  if (c.close_code() != 1007) row.fail("a text message that is not UTF-8 closed with " + std::to_string(c.close_code()) + ", expected 1007");
}

// Clients that send and never read: each config message is answered with ~2 KiB (the prompt
// echoed); the server stops reading when 32 replies wait and the write timeout ends the connection.
void slow_readers(unsigned short port, const Profile& p, Row& row, double write_timeouts_before) {
  clients(p.slow_readers, [&](int i) {
    WsClient c(port, 2048);
    if (!c.read_type({"ready"}, 20s)) return row.fail("slow reader not admitted");
    ++row.admitted;
    // Blocks once the server stops reading, and fails once it has closed the connection.
    for (int k = 0; k < 100000 && !c.closed(); ++k) {
      c.send_text(json{{"type", "config"}, {"prompt", std::string(1990, static_cast<char>('a' + (i + k) % 26))}}.dump());
      ++row.frames_in;
    }
    if (!c.closed()) row.fail("the server read 100000 messages from a client that took none of its replies");
  });
  const auto timeouts = metric(http_get(port, "/metrics").second, "streamgen_timeouts_total{kind=\"write\"}") - write_timeouts_before;
  row.errors = static_cast<int>(timeouts);
  if (timeouts < p.slow_readers) row.fail(fmt::format("{} write timeouts, expected {}", timeouts, p.slow_readers));
}

// Connections that never send a request, and a storm of connects: the idle ones are closed after
// --handshake-timeout, /healthz answers throughout.
void flood(unsigned short port, const Profile& p, Row& row) {
  net::io_context ioc;
  std::vector<std::unique_ptr<tcp::socket>> silent;
  for (int i = 0; i < p.flood_idle; ++i) {
    auto s = std::make_unique<tcp::socket>(ioc);
    beast::error_code ec;
    s->connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
    if (!ec) silent.push_back(std::move(s));
  }
  row.admitted = static_cast<int>(silent.size());
  std::atomic<bool> storming{true};
  std::thread probe([&] {
    while (storming) {
      const auto t0 = Clock::now();
      if (http_get(port, "/healthz", 10s).first != 200) ++row.errors;
      row.latency(ms_between(t0, Clock::now()));
      std::this_thread::sleep_for(50ms);
    }
  });
  clients(4, [&](int k) {
    for (int i = k; i < p.flood_rapid; i += 4) {
      if (i % 2) {
        net::io_context local;
        tcp::socket s(local);
        beast::error_code ec;
        s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
      } else {
        raw_http(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
      }
      ++row.frames_in;
    }
  });
  storming = false;
  probe.join();
  // Every silent connection must have been closed by the server by now, or within the timeout.
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(p.handshake_s * 1000) + 1500));
  int still_open = 0;
  for (auto& s : silent) {
    s->non_blocking(true);
    std::array<char, 8> buf{};
    beast::error_code ec;
    s->read_some(net::buffer(buf), ec);
    if (ec == net::error::would_block) ++still_open;
  }
  row.frames_out = p.flood_idle - still_open;  // silent connections the server gave up
  if (still_open) row.fail(fmt::format("{} silent connections still open after the handshake timeout", still_open));
}

// Text-to-video sessions changing their prompts while they stream.
void text_to_video(unsigned short port, const Profile& p, Row& row) {
  const std::vector<std::string> prompts = {"a red circle moving right", "a blue square moving up", "a green triangle moving left"};
  const auto until = Clock::now() + std::chrono::milliseconds(static_cast<int>(p.t2v_seconds * 1000));
  clients(p.t2v_clients, [&](int i) {
    WsClient c(port);
    if (!c.read_type({"ready"}, 60s)) return row.fail("t2v client " + std::to_string(i) + " not admitted");
    ++row.admitted;
    std::size_t k = static_cast<std::size_t>(i);
    while (Clock::now() < until) {
      const auto next_change = Clock::now() + std::chrono::milliseconds(static_cast<int>(p.t2v_prompt_every * 1000));
      const auto t0 = Clock::now();
      c.send_text(json{{"type", "config"}, {"prompt", prompts[++k % prompts.size()]}}.dump());
      ++row.frames_in;
      const auto ack = c.read_type({"config", "error"}, 30s);
      if (!ack || json::parse(*ack)["type"] != "config") return row.fail("prompt change not acknowledged");
      row.latency(ms_between(t0, Clock::now()));
      while (Clock::now() < next_change && !c.closed()) c.read_type({"never"}, 100ms);
      if (c.closed()) return row.fail("t2v session closed");
    }
    row.frames_out += c.frames_seen;
    if (c.frames_seen == 0) row.fail("no video frames");
    c.close();
  });
}

// Runs one scenario with RSS sampled every 20 ms, then checks the server survived and every slot came back.
bool run(ServerProcess& server, Row& row, const std::function<void()>& scenario) {
  row.rss_before = row.rss_peak = server.rss_mib();
  std::atomic<bool> sampling{true};
  std::thread sampler([&] {
    while (sampling) {
      row.rss_peak = std::max(row.rss_peak, server.rss_mib());
      std::this_thread::sleep_for(20ms);
    }
  });
  std::fprintf(stderr, "load: %s ...\n", row.name.c_str());
  scenario();
  bool slots_back = false;
  for (int i = 0; i < 100 && !slots_back; ++i) {
    const auto m = http_get(server.port(), "/metrics");
    slots_back = m.first == 200 && metric(m.second, "streamgen_sessions_active") == 0;
    if (!slots_back) std::this_thread::sleep_for(100ms);
  }
  std::this_thread::sleep_for(1s);  // streams of closed sessions stop on the worker pool
  sampling = false;
  sampler.join();
  row.rss_after = server.rss_mib();
  if (!server.alive()) row.fail("the server died");
  else if (!slots_back) row.fail("session slots not freed 10 s after every client left");
  return row.failures.empty();
}

void print_table(const std::vector<std::unique_ptr<Row>>& rows) {
  std::printf("\n%-16s %8s %5s %6s %9s %10s %8s %8s %9s %9s %9s  %s\n", "scenario", "admitted", "busy", "errors", "frames in", "frames out",
              "p50 ms", "p99 ms", "RSS MiB", "peak", "after", "result");
  for (const auto& r : rows) {
    std::printf("%-16s %8d %5d %6d %9d %10d %8.1f %8.1f %9.0f %9.0f %9.0f  %s\n", r->name.c_str(), r->admitted.load(), r->busy.load(),
                r->errors.load(), r->frames_in.load(), r->frames_out.load(), percentile(r->latency_ms, 0.5), percentile(r->latency_ms, 0.99),
                r->rss_before, r->rss_peak, r->rss_after, r->failures.empty() ? "ok" : ("FAIL: " + r->failures.front()).c_str());
    for (std::size_t k = 1; k < r->failures.size(); ++k) std::printf("%-16s FAIL: %s\n", "", r->failures[k].c_str());
  }
}

}  // namespace
}  // namespace streamgen::load

int main(int argc, char** argv) {
  using namespace streamgen::load;
  CLI::App app{"streamgen load and abuse suite: starts `streamgen serve` on loopback and attacks it"};
  std::string cli, sd_model, taesd, dit_model, profile_name = "short", log_dir = ".";
  // What may stay resident after every session has closed without being a leak: tcmalloc keeps up to
  // 32 MiB in its thread caches (TCMALLOC_MAX_TOTAL_THREAD_CACHE_BYTES) and returns freed spans to the
  // kernel gradually; 16 MiB more for LibTorch's per-thread scratch of the new stream threads.
  double memory_bound_mib = 48;
  app.add_option("--cli", cli, "the streamgen executable")->required();
  app.add_option("--model", sd_model, "Stable Diffusion pipeline folder")->required();
  app.add_option("--taesd", taesd, "TAESD folder")->required();
  app.add_option("--dit-model", dit_model, "StreamDiT model folder (text-to-video scenario; skipped if empty)");
  app.add_option("--profile", profile_name, "short (CI) or long (by hand)")->check(CLI::IsMember({"short", "long"}));
  app.add_option("--logs", log_dir, "folder for the servers' logs");
  app.add_option("--memory-bound", memory_bound_mib, "MiB the server's RSS may stay above its level after the first scenario");
  CLI11_PARSE(app, argc, argv);
  const auto p = profile_name == "long" ? long_profile() : short_profile();
  auto seconds = [](double s) { return fmt::format("{}", s); };

  std::vector<std::unique_ptr<Row>> rows;
  auto row = [&](const std::string& name) -> Row& {
    rows.push_back(std::make_unique<Row>());
    rows.back()->name = name;
    return *rows.back();
  };
  bool ok = true;
  int exit_sd = 0, exit_dit = 0;
  double rss_warm = 0, rss_end = 0;
  {
    ServerProcess server({cli, "serve", "--model", sd_model, "--taesd", taesd, "--port", "0", "-W", "64", "-H", "64", "--threads", "1",
                          "--max-sessions", std::to_string(p.max_sessions), "--idle-timeout", seconds(p.idle_s), "--write-timeout",
                          seconds(p.write_s), "--handshake-timeout", seconds(p.handshake_s)},
                         log_dir + "/load-serve-sd.log");
    const auto port = server.port();
    ok &= run(server, row("over-limit"), [&] { over_limit(port, p, *rows.back()); });
    rss_warm = rows.back()->rss_after;
    ok &= run(server, row("idle"), [&] { idle(port, p, *rows.back()); });
    ok &= run(server, row("bombs"), [&] { bombs(port, p, *rows.back()); });
    ok &= run(server, row("malformed"), [&] { malformed(port, p, *rows.back()); });
    const auto before = metric(http_get(port, "/metrics").second, "streamgen_timeouts_total{kind=\"write\"}");
    ok &= run(server, row("slow-readers"), [&] { slow_readers(port, p, *rows.back(), before); });
    ok &= run(server, row("conn-flood"), [&] { flood(port, p, *rows.back()); });
    ok &= run(server, row("over-limit-2"), [&] { over_limit(port, p, *rows.back()); });
    rss_end = rows.back()->rss_after;
    exit_sd = server.stop();
  }
  if (!dit_model.empty()) {
    ServerProcess server({cli, "serve", "--model", dit_model, "--port", "0", "--threads", "1", "--max-sessions", std::to_string(p.max_sessions),
                          "--fps", "0", "--write-timeout", seconds(p.write_s)},
                         log_dir + "/load-serve-dit.log");
    const auto port = server.port();
    Profile t2v = p;
    t2v.t2v_clients = std::min(p.t2v_clients, p.max_sessions);
    ok &= run(server, row("t2v-prompts"), [&] { text_to_video(port, t2v, *rows.back()); });
    exit_dit = server.stop();
  }
  print_table(rows);
  std::printf("\nRSS after the first scenario %.0f MiB, after the last %.0f MiB (bound: +%.0f MiB)\n", rss_warm, rss_end, memory_bound_mib);
  if (rss_end - rss_warm > memory_bound_mib) {
    std::printf("FAIL: memory did not come back: %.0f MiB above the warm level\n", rss_end - rss_warm);
    ok = false;
  }
  if (exit_sd != 0 || exit_dit != 0) {
    std::printf("FAIL: a server did not exit cleanly on SIGINT (exit %d, %d)\n", exit_sd, exit_dit);
    ok = false;
  }
  std::printf("%s\n", ok ? "load suite: all scenarios held" : "load suite: FAILED");
  return ok ? 0 : 1;
}
