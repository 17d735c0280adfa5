#include "load_client.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

namespace streamgen::load {

double ms_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

namespace {

// Runs the io_context until `done` or `timeout`; on timeout cancels the socket's operations and
// lets them finish. Returns whether the operation completed in time.
template <class Socket>
bool run_until(net::io_context& ioc, Socket& socket, const bool& done, std::chrono::milliseconds timeout) {
  ioc.restart();
  ioc.run_for(timeout);
  if (done) return true;
  beast::error_code ignored;
  socket.cancel(ignored);
  ioc.restart();
  ioc.run();
  return false;
}

}  // namespace

WsClient::WsClient(unsigned short port, int receive_buffer) : ws_(ioc_) {
  beast::error_code ec;
  auto& s = ws_.next_layer();
  s.open(tcp::v4(), ec);
  if (receive_buffer > 0) s.set_option(net::socket_base::receive_buffer_size(receive_buffer), ec);
  bool done = false;
  s.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), [&](beast::error_code e) {
    ec = e;
    done = true;
  });
  if (!run_until(ioc_, s, done, 5000ms) || ec) return;
  done = false;
  ws_.async_handshake("127.0.0.1", "/ws", [&](beast::error_code e) {
    ec = e;
    done = true;
  });
  open_ = run_until(ioc_, s, done, 5000ms) && !ec;
}

void WsClient::send(const std::string& s, bool text) {
  if (!open_ || closed_) return;
  beast::error_code ec;
  ws_.text(text);
  ws_.write(net::buffer(s), ec);
  if (ec) closed_ = true;
}

// A read that times out stays pending (cancelling a WebSocket read would fail the stream): the
// next call goes on waiting for the same message.
std::optional<Message> WsClient::read(std::chrono::milliseconds timeout) {
  if (!open_ || closed_) return std::nullopt;
  if (!reading_) {
    reading_ = true;
    read_done_ = false;
    read_buffer_.clear();
    ws_.async_read(read_buffer_, [this](beast::error_code e, std::size_t) {
      read_error_ = e;
      read_done_ = true;
    });
  }
  ioc_.restart();
  ioc_.run_for(timeout);
  if (!read_done_) return std::nullopt;
  reading_ = false;
  if (read_error_) {
    closed_ = true;
    close_code_ = read_error_ == websocket::error::closed ? static_cast<int>(ws_.reason().code) : -1;
    return std::nullopt;
  }
  return Message{ws_.got_text(), beast::buffers_to_string(read_buffer_.data())};
}

std::optional<std::string> WsClient::read_type(const std::vector<std::string>& types, std::chrono::milliseconds timeout) {
  const auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    auto m = read(std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()));
    if (!m) return std::nullopt;
    if (!m->text) {
      ++frames_seen;
      continue;
    }
    const auto j = nlohmann::json::parse(m->data, nullptr, false);
    if (j.is_object() && j.contains("type") && j["type"].is_string())
      for (const auto& t : types)
        if (j["type"] == t) return m->data;
  }
  return std::nullopt;
}

void WsClient::close() {
  if (!open_ || closed_) return;
  beast::error_code ec;
  bool done = false;
  ws_.async_close(websocket::close_code::normal, [&](beast::error_code e) {
    ec = e;
    done = true;
  });
  run_until(ioc_, ws_.next_layer(), done, 5000ms);
  closed_ = true;
}

std::string raw_http(unsigned short port, const std::string& request, std::chrono::milliseconds timeout) {
  net::io_context ioc;
  tcp::socket s(ioc);
  std::string out;
  bool done = false;
  std::array<char, 4096> buf{};
  std::function<void(beast::error_code, std::size_t)> on_read = [&](beast::error_code ec, std::size_t n) {
    out.append(buf.data(), n);
    if (ec) {
      done = true;
      return;
    }
    s.async_read_some(net::buffer(buf), on_read);
  };
  s.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), [&](beast::error_code ec) {
    if (ec) {
      done = true;
      return;
    }
    net::async_write(s, net::buffer(request), [&](beast::error_code e, std::size_t) {
      if (e) done = true;
      else s.async_read_some(net::buffer(buf), on_read);
    });
  });
  run_until(ioc, s, done, timeout);
  return out;
}

std::pair<int, std::string> http_get(unsigned short port, const std::string& target, std::chrono::milliseconds timeout) {
  const auto r = raw_http(port, "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout);
  if (r.size() < 12 || r.rfind("HTTP/1.1 ", 0) != 0) return {0, ""};
  const auto body = r.find("\r\n\r\n");
  return {std::stoi(r.substr(9, 3)), body == std::string::npos ? "" : r.substr(body + 4)};
}

double metric(const std::string& metrics, const std::string& sample) {
  const auto at = metrics.find("\n" + sample + " ");
  if (at == std::string::npos) return -1;
  return std::stod(metrics.substr(at + sample.size() + 2));
}

ServerProcess::ServerProcess(const std::vector<std::string>& argv, const std::string& log) {
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    const int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0) ::dup2(err, STDERR_FILENO);
    ::close(out[0]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out[1]);
  // "serving on http://127.0.0.1:PORT/" once the models are loaded and the port is bound.
  std::string text;
  const auto until = Clock::now() + 300s;
  while (Clock::now() < until && text.find("/\n") == std::string::npos) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) {
      if (!alive()) break;
      continue;
    }
    char buf[256];
    const auto n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  const auto colon = text.rfind(':');
  if (text.find("serving on") == std::string::npos || colon == std::string::npos)
    throw std::runtime_error("the server did not start (see " + log + "): " + text);
  port_ = static_cast<unsigned short>(std::stoi(text.substr(colon + 1)));
}

ServerProcess::~ServerProcess() {
  if (alive()) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

bool ServerProcess::alive() {
  if (exit_status_ != -2) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == 0) return true;
  exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return false;
}

double ServerProcess::rss_mib() const {
  std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

int ServerProcess::stop(std::chrono::seconds timeout) {
  if (!alive()) return exit_status_;
  ::kill(pid_, SIGINT);
  const auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    if (!alive()) return exit_status_;
    std::this_thread::sleep_for(50ms);
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  exit_status_ = -1;
  return -1;
}

}  // namespace streamgen::load
