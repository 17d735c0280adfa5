// The headers every streamgen target precompiles once (CMake target_precompile_headers, reused by
// the CLI, the tests and the benchmarks). LibTorch's torch/torch.h alone is ~20 s of parsing per
// translation unit on a 2-core machine; the rest are the next heaviest headers most files include.
// Files still include what they use: a build with -DSTREAMGEN_PCH=OFF compiles the same.
#pragma once

#include <torch/torch.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>
