#include "commands.h"

namespace streamgen::cli {

void ComputeArgs::add_to(CLI::App& cmd, bool with_dtype) {
  cmd.add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
  if (with_dtype) cmd.add_option("--dtype", dtype, "fp32, bf16 or fp16 (bf16 is the fast CPU path)")->capture_default_str();
  cmd.add_option("--threads", threads, "CPU threads (0 = one per core)")->capture_default_str();
}

ComputeOptions ComputeArgs::resolve() const {
  ComputeOptions o;
  o.device = parse_device(device);
  o.dtype = parse_dtype(dtype);
  o.threads = threads;
  return apply_compute_options(o);
}

}  // namespace streamgen::cli
