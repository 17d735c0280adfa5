#pragma once
// `streamgen serve`: HTTP + WebSocket server (Boost.Beast) with the web page, one stream per browser
// session over models loaded once.
//
// Routes: GET /            the page (HTML/JS/CSS built into the binary)
//         GET /healthz     "ok"
//         GET /metrics     Prometheus text format: sessions, frames, drops, per-stage latency
//         GET /ws          WebSocket, one session:
//   client -> server  text   {"type":"config", "prompt", "negative_prompt", "mode": "img2img"|"txt2img",
//                             "guidance", "delta", "t_index": [..], "seed", "blend_frames"}
//                             (a prompt change hot-swaps; other changes restart the session's stream)
//                     binary a JPEG/PNG frame (img2img)
//     with a StreamDiT model (ServerOptions::dit) the stream is text-to-video: "mode" is "t2v",
//     config takes "prompt" (hot swap), "guidance" and "seed" (restart), and frames are refused;
//     "ready"/"config" carry "kind": "dit" and the model's caption "vocabulary".
//   server -> client  binary a JPEG frame
//                     text   {"type":"ready"|"config"|"stats"|"error"|"busy", ...}
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "streamgen/dit_runner.h"
#include "streamgen/stream_runner.h"

namespace streamgen {

// How long the server waits on a client before it gives the connection up; each is counted in
// /metrics (streamgen_timeouts_total{kind=...}).
struct ServerTimeouts {
  double handshake_s = 10;  // from connect to a complete HTTP request and WebSocket upgrade (also the close handshake)
  double idle_s = 60;       // img2img sessions: no frame and no message for this long (txt2img and text-to-video never idle)
  double write_s = 10;      // one message not taken by the client (it stopped reading)
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  unsigned short port = 8080;         // 0: any free port (see Server::port())
  int max_sessions = 4;
  std::size_t max_message_bytes = 4u << 20;
  int jpeg_quality = 85;
  ServerTimeouts timeouts;
  StreamRunnerOptions stream;         // defaults for new sessions; stream.models is loaded if empty
  std::optional<DiTRunnerOptions> dit;  // set: sessions stream this StreamDiT model instead (dit->loaded is loaded if empty)
};

// Throws streamgen::Error, naming the option, for anything that could never serve a session: the
// address, limits, timeouts, the stream's size and slots. Cheap: nothing is loaded.
void validate_server_options(const ServerOptions& options);

class Server {
 public:
  // Validates the options, binds the address (so that a taken port is reported before a long model
  // load), then loads the models. Throws streamgen::Error.
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts accepting connections on background threads.
  void start();
  unsigned short port() const;
  // Blocks until stop() (from another thread or a signal handler's flag watcher).
  void wait();
  void stop();
  std::string metrics_text() const;

  struct Impl;  // opaque; public so that the connection classes in server.cpp can name it

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace streamgen
