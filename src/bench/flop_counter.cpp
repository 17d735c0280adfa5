#include "streamgen/flop_counter.h"

#include <ATen/record_function.h>

#include <atomic>
#include <chrono>
#include <map>
#include <cstring>
#include <mutex>
#include <vector>

#include "streamgen/error.h"
#include "streamgen/timing.h"

namespace streamgen {
namespace {

std::atomic<double> g_flops{0};
std::mutex g_mutex;
bool g_active = false;
thread_local int t_depth = 0;

// Marks "this op was counted" between its start and end callbacks.
struct CountedOp : at::ObserverContext {};  // > 0 inside a counted op: its internals are not counted again

std::vector<std::int64_t> sizes_of(const c10::IValue& v) {
  if (v.isTensor() && v.toTensor().defined()) return v.toTensor().sizes().vec();
  return {};
}

double prod(const std::vector<std::int64_t>& s, std::size_t from, std::size_t to) {
  double p = 1;
  for (std::size_t i = from; i < to; ++i) p *= static_cast<double>(s[i]);
  return p;
}

double conv2d_flops(c10::ArrayRef<const c10::IValue> in) {
  // conv2d(input, weight, bias, stride, padding, dilation, groups)
  const auto x = sizes_of(in[0]), w = sizes_of(in[1]);
  if (x.size() != 4 || w.size() != 4 || in.size() < 7) return 0;
  const auto stride = in[3].toIntVector(), pad = in[4].isIntList() ? in[4].toIntVector() : std::vector<std::int64_t>{0, 0};
  const auto dil = in[5].toIntVector();
  auto out_dim = [&](std::size_t i) {
    return (x[2 + i] + 2 * pad[i % pad.size()] - dil[i % dil.size()] * (w[2 + i] - 1) - 1) / stride[i % stride.size()] + 1;
  };
  return 2.0 * static_cast<double>(x[0]) * static_cast<double>(w[0]) * static_cast<double>(out_dim(0)) * static_cast<double>(out_dim(1)) *
         prod(w, 1, 4);
}

double matmul_flops(const std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b) {
  if (a.empty() || b.empty()) return 0;
  if (b.size() == 1) return 2.0 * prod(a, 0, a.size());  // matrix-vector
  const double k = static_cast<double>(a.back()), m = static_cast<double>(b.back());
  const double n = a.size() >= 2 ? static_cast<double>(a[a.size() - 2]) : 1.0;
  // Batch: the broadcast of both operands' leading dimensions.
  double batch = 1;
  const auto la = a.size() >= 2 ? a.size() - 2 : 0, lb = b.size() - 2;
  for (std::size_t i = 0; i < std::max(la, lb); ++i) {
    const auto da = i < la ? a[la - 1 - i] : 1, db = i < lb ? b[lb - 1 - i] : 1;
    batch *= static_cast<double>(std::max(da, db));
  }
  return 2.0 * batch * n * k * m;
}

double op_flops(const at::RecordFunction& fn) {
  const char* name = fn.name();
  const auto in = fn.inputs();
  if (std::strcmp(name, "aten::conv2d") == 0) return conv2d_flops(in);
  if (std::strcmp(name, "aten::linear") == 0 && in.size() >= 2) {
    const auto x = sizes_of(in[0]), w = sizes_of(in[1]);
    return x.empty() || w.size() != 2 ? 0 : 2.0 * prod(x, 0, x.size()) * static_cast<double>(w[0]);
  }
  if ((std::strcmp(name, "aten::matmul") == 0 || std::strcmp(name, "aten::mm") == 0 || std::strcmp(name, "aten::bmm") == 0) && in.size() >= 2)
    return matmul_flops(sizes_of(in[0]), sizes_of(in[1]));
  if ((std::strcmp(name, "aten::addmm") == 0 || std::strcmp(name, "aten::baddbmm") == 0) && in.size() >= 3)
    return matmul_flops(sizes_of(in[1]), sizes_of(in[2]));
  return -1;  // not a counted op
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  if (t_depth > 0) {
    ++t_depth;
    return nullptr;
  }
  const double f = op_flops(fn);
  if (f < 0) return nullptr;
  g_flops.store(g_flops.load() + f);  // single forward pass at a time; contention is not a concern
  ++t_depth;
  return std::make_unique<CountedOp>();
}

void on_end(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  if (t_depth > 1 || ctx) --t_depth;
  if (t_depth < 0) t_depth = 0;
}

}  // namespace

FlopCounter::FlopCounter() {
  std::lock_guard lock(g_mutex);
  if (g_active) throw Error("only one FlopCounter may be active at a time");
  g_active = true;
  g_flops = 0;
  handle_ = at::addGlobalCallback(at::RecordFunctionCallback(&on_start, &on_end).needsInputs(true).scopes({at::RecordScope::FUNCTION}));
}

FlopCounter::~FlopCounter() {
  at::removeCallback(handle_);
  std::lock_guard lock(g_mutex);
  g_active = false;
}

double FlopCounter::flops() const { return g_flops.load(); }

namespace {

std::mutex g_timer_mutex;
std::map<std::string, OpTimer::Entry> g_timer_entries;
bool g_timer_active = false;
thread_local int t_timer_depth = 0;

struct TimedOp : at::ObserverContext {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

std::unique_ptr<at::ObserverContext> on_timer_start(const at::RecordFunction& fn) {
  if (t_timer_depth++ > 0) return nullptr;
  return std::make_unique<TimedOp>();
}

void on_timer_end(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  --t_timer_depth;
  if (!ctx) return;
  const double ms = ms_since(static_cast<TimedOp*>(ctx)->start);
  std::lock_guard lock(g_timer_mutex);
  auto& e = g_timer_entries[fn.name()];
  ++e.calls;
  e.ms += ms;
}

}  // namespace

OpTimer::OpTimer() {
  std::lock_guard lock(g_timer_mutex);
  if (g_timer_active) throw Error("only one OpTimer may be active at a time");
  g_timer_active = true;
  g_timer_entries.clear();
  handle_ = at::addGlobalCallback(at::RecordFunctionCallback(&on_timer_start, &on_timer_end).scopes({at::RecordScope::FUNCTION}));
}

OpTimer::~OpTimer() {
  at::removeCallback(handle_);
  std::lock_guard lock(g_timer_mutex);
  g_timer_active = false;
}

std::map<std::string, OpTimer::Entry> OpTimer::entries() const {
  std::lock_guard lock(g_timer_mutex);
  return g_timer_entries;
}

}  // namespace streamgen
