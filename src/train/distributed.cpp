#include "streamgen/distributed.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "streamgen/error.h"

#ifdef STREAMGEN_HAS_C10D
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace streamgen {

#ifdef STREAMGEN_HAS_C10D

bool distributed_available() { return true; }

struct DataParallelGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

DataParallelGroup::DataParallelGroup(const DistributedOptions& o) : options_(o), impl_(std::make_unique<Impl>()) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    throw Error(fmt::format("data parallel: rank {} is outside a world of {} processes", o.rank, o.world_size));
  if (o.master_port < 1 || o.master_port > 65535) throw Error(fmt::format("data parallel: port {} is not a TCP port", o.master_port));
  const auto where = fmt::format("{}:{} (rank {} of {})", o.master_addr, o.master_port, o.rank, o.world_size);
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(o.master_port);
    store_options.isServer = o.rank == 0;
    store_options.numWorkers = static_cast<std::size_t>(o.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(o.timeout);
    impl_->store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, store_options);
    auto group_options = c10d::ProcessGroupGloo::Options::create(std::chrono::duration_cast<std::chrono::milliseconds>(o.timeout));
    group_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.master_addr));
    group_options->threads = 1;
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, o.rank, o.world_size, group_options);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("data parallel: cannot join the group at {}: {}", where, e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw Error(fmt::format("data parallel: cannot join the group at {}: {}", where, e.what()));
  }
}

DataParallelGroup::~DataParallelGroup() = default;

void DataParallelGroup::average_gradients(const std::vector<torch::Tensor>& parameters) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : parameters)
    grads.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros({p.numel()}, p.options()));
  std::vector<torch::Tensor> flat{torch::cat(grads)};
  impl_->group->allreduce(flat)->wait();
  flat[0].div_(static_cast<double>(options_.world_size));
  std::int64_t offset = 0;
  for (const auto& p : parameters) {
    if (p.grad().defined()) p.grad().copy_(flat[0].narrow(0, offset, p.numel()).view_as(p));
    offset += p.numel();
  }
}

void DataParallelGroup::broadcast(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (const auto& t : tensors) parts.push_back(t.detach().reshape({-1}).to(torch::kFloat32));
  std::vector<torch::Tensor> flat{torch::cat(parts)};
  impl_->group->broadcast(flat)->wait();
  std::int64_t offset = 0;
  for (const auto& t : tensors) {
    t.copy_(flat[0].narrow(0, offset, t.numel()).view_as(t));
    offset += t.numel();
  }
}

double DataParallelGroup::average(double value) {
  std::vector<torch::Tensor> t{torch::full({1}, value, torch::kFloat64)};
  impl_->group->allreduce(t)->wait();
  return t[0].item<double>() / static_cast<double>(options_.world_size);
}

void DataParallelGroup::barrier() { impl_->group->barrier()->wait(); }

#else

bool distributed_available() { return false; }
struct DataParallelGroup::Impl {};
DataParallelGroup::DataParallelGroup(const DistributedOptions& o) : options_(o) {
  throw Error("data-parallel training needs LibTorch's c10d with the Gloo backend; this build has none (install libgloo-dev and rebuild)");
}
DataParallelGroup::~DataParallelGroup() = default;
void DataParallelGroup::average_gradients(const std::vector<torch::Tensor>&) {}
void DataParallelGroup::broadcast(const std::vector<torch::Tensor>&) {}
double DataParallelGroup::average(double value) { return value; }
void DataParallelGroup::barrier() {}

#endif

}  // namespace streamgen
