#pragma once
// Data-parallel training on LibTorch's c10d: a TCP store for the rendezvous and a Gloo process
// group (CPU) for the collectives. Every rank holds the whole model; after each backward the
// gradients are averaged, so all ranks take identical optimiser steps.
#include <torch/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace streamgen {

struct DistributedOptions {
  int world_size = 1;
  int rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::chrono::seconds timeout{300};
};

// True when this build has c10d with the Gloo backend (LibTorch built with it, gloo headers found).
bool distributed_available();

class DataParallelGroup {
 public:
  // Joins the group (rank 0 hosts the store); blocks until all ranks are there or the timeout.
  // Throws streamgen::Error naming the address and rank on failure.
  explicit DataParallelGroup(const DistributedOptions& options);
  ~DataParallelGroup();
  DataParallelGroup(const DataParallelGroup&) = delete;
  DataParallelGroup& operator=(const DataParallelGroup&) = delete;

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  // Averages the gradients of `parameters` over all ranks (one flattened all-reduce).
  void average_gradients(const std::vector<torch::Tensor>& parameters);
  // Copies rank 0's values into every rank's tensors.
  void broadcast(const std::vector<torch::Tensor>& tensors);
  double average(double value);
  void barrier();

 private:
  struct Impl;
  DistributedOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace streamgen
