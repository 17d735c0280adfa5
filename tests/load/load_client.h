#pragma once
// What the load and abuse suite needs to act as many clients on loopback: a WebSocket client whose
// every wait has a deadline, raw HTTP, the server process (started, watched, measured, stopped).
#include <sys/types.h>

#include <utility>  // before Asio: its awaitable.hpp uses std::exchange without including it (Boost 1.74, GCC 12)
#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace streamgen::load {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double ms_between(Clock::time_point a, Clock::time_point b);

struct Message {
  bool text = false;
  std::string data;
};

// One WebSocket session. Calls never block longer than their timeout.
class WsClient {
 public:
  // `receive_buffer` > 0 shrinks the socket's receive buffer (a client that reads slowly or never).
  explicit WsClient(unsigned short port, int receive_buffer = 0);
  bool open() const { return open_; }
  // A blocking write: it waits while the server does not read, and fails (closed()) once it has closed.
  void send(const std::string& s, bool text);
  void send_text(const std::string& s) { send(s, true); }
  void send_binary(const std::string& s) { send(s, false); }
  // The next message, or nothing on timeout or when the connection ended (then closed() is true).
  // A timed-out read stays pending and the next call continues it.
  std::optional<Message> read(std::chrono::milliseconds timeout);
  // The next text message whose "type" is one of `types` (others skipped, frames counted in
  // frames_seen); nothing on timeout or close.
  std::optional<std::string> read_type(const std::vector<std::string>& types, std::chrono::milliseconds timeout);
  bool closed() const { return closed_; }
  int close_code() const { return close_code_; }  // the server's close code, -1 if the connection just dropped
  void close();
  int frames_seen = 0;

 private:
  net::io_context ioc_;
  websocket::stream<tcp::socket> ws_;
  beast::flat_buffer read_buffer_;
  beast::error_code read_error_;
  bool reading_ = false, read_done_ = false;
  bool open_ = false, closed_ = false;
  int close_code_ = -1;
};

// Sends `request` as given and returns all the server sends back before it closes (or `timeout`).
std::string raw_http(unsigned short port, const std::string& request, std::chrono::milliseconds timeout = 5000ms);
// The status code of GET `target`, and its body; status 0 if no answer came in time.
std::pair<int, std::string> http_get(unsigned short port, const std::string& target, std::chrono::milliseconds timeout = 5000ms);
// The value of one sample line of /metrics text ("name{labels}"), or -1 when it is not there.
double metric(const std::string& metrics, const std::string& sample);

// `streamgen serve ...` as a child process; stdout is read for the port, stderr goes to `log`.
class ServerProcess {
 public:
  ServerProcess(const std::vector<std::string>& argv, const std::string& log);
  ~ServerProcess();
  unsigned short port() const { return port_; }
  bool alive();
  double rss_mib() const;
  // SIGINT, then waits up to `timeout` for a clean exit; returns the exit status (-1: killed or crashed).
  int stop(std::chrono::seconds timeout = 30s);

 private:
  pid_t pid_ = -1;
  unsigned short port_ = 0;
  int exit_status_ = -2;  // -2: still running
};

}  // namespace streamgen::load
