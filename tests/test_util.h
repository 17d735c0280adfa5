#pragma once
#include <ftw.h>
#include <stdio.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>

#include "streamgen/error.h"
#include "image_bytes.h"

namespace streamgen::test {

// The project's parity bound for fp32 results against the reference outputs (relative error).
inline constexpr double kFp32Tol = 1e-4;

// `fn` must throw a streamgen::Error whose message contains `want`.
inline void expect_error_mentions(const std::function<void()>& fn, const std::string& want) {
  try {
    fn();
    ADD_FAILURE() << "no error; wanted one containing: " << want;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
  }
}


inline std::filesystem::path data_path(const std::string& name) { return std::filesystem::path(STREAMGEN_TEST_DATA) / name; }

// A fresh folder under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("streamgen-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  // Removed with POSIX nftw rather than std::filesystem::remove_all: PyTorch 2.x's libtorch.so
  // exports its own copy of remove_all, which interposes libstdc++'s and jumps to a null
  // pointer (seen with torch 2.11 and GCC 13 on the GPU machine).
  ~TempDir() {
    ::nftw(path_.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16, FTW_DEPTH | FTW_PHYS);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace streamgen::test
