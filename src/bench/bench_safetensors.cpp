#include <torch/torch.h>
#include <unistd.h>

#include "streamgen/bench.h"
#include "streamgen/error.h"
#include "streamgen/safetensors.h"

namespace streamgen {
namespace {

// Reads every byte so that lazily mapped pages are really faulted in; the sum keeps the
// compiler from dropping the loop.
std::uint64_t checksum(const void* data, std::size_t nbytes) {
  const auto* p = static_cast<const std::uint64_t*>(data);
  std::uint64_t s = 0;
  for (std::size_t i = 0; i < nbytes / 8; ++i) s += p[i];
  return s;
}

std::uint64_t load_and_touch(const std::filesystem::path& path, LoadMode mode, std::int64_t* zero_copy) {
  const auto file = SafetensorsFile::open(path, mode);
  std::uint64_t sum = 0;
  *zero_copy = 0;
  for (const auto& [name, t] : file.tensors()) {
    sum += checksum(t.data_ptr(), t.nbytes());
    *zero_copy += file.is_zero_copy(name);
  }
  return sum;
}

}  // namespace

std::vector<BenchRow> bench_safetensors(const SafetensorsBenchOptions& options) {
  if (options.size_mb == 0 || options.tensors <= 0) throw Error("bench safetensors: --size-mb and --tensors must be positive");
  const std::int64_t floats_per_tensor =
      static_cast<std::int64_t>(options.size_mb * 1024 * 1024 / 4 / static_cast<std::uint64_t>(options.tensors));
  const auto path = options.dir / ("streamgen-bench-" + std::to_string(::getpid()) + ".safetensors");
  {
    NamedTensors tensors;
    for (std::int64_t i = 0; i < options.tensors; ++i) {
      std::string name = "t";  // built by appending: "t" + to_string trips GCC 12's -Wrestrict false positive
      name += std::to_string(i);
      tensors.emplace_back(std::move(name), torch::full({floats_per_tensor}, static_cast<float>(i)));
    }
    save_safetensors(path, tensors);
  }
  struct Cleanup {
    std::filesystem::path p;
    bool keep;
    ~Cleanup() {
      std::error_code ec;
      if (!keep) std::filesystem::remove(p, ec);
    }
  } cleanup{path, options.keep_file};

  const double gb = static_cast<double>(std::filesystem::file_size(path)) / 1e9;
  const auto topt = fixed_runs(options.runs);

  std::vector<BenchRow> rows;
  auto add_row = [&](const std::string& mode, const Timing& t, double peak_gbps, std::int64_t zero_copy) {
    BenchRow row;
    row["name"] = "safetensors";
    row["mode"] = mode;
    row["size_gb"] = gb;
    row["tensors"] = options.tensors;
    add_timing(row, t);
    row["gb_per_s"] = gb / (t.median_ms / 1e3);
    row["ratio_to_peak"] = peak_gbps > 0 ? row["gb_per_s"].get<double>() / peak_gbps : 1.0;
    if (zero_copy >= 0) row["zero_copy"] = zero_copy;
    rows.push_back(row);
    return row["gb_per_s"].get<double>();
  };

  // The ceiling: the same bytes already resident in memory.
  const auto resident = SafetensorsFile::open(path, LoadMode::Read);
  volatile std::uint64_t sink = 0;
  const double peak = add_row("resident", time_runs([&] { sink = sink + checksum(resident.bytes(), resident.file_size()); }, topt), 0, -1);
  for (const auto& [label, mode] : {std::pair{"mmap", LoadMode::Mmap}, std::pair{"read", LoadMode::Read}}) {
    std::int64_t zero_copy = 0;
    const Timing t = time_runs([&] { sink = sink + load_and_touch(path, mode, &zero_copy); }, topt);
    add_row(label, t, peak, zero_copy);
  }
  return rows;
}

}  // namespace streamgen
