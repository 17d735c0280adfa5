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

// A PNG of a few dozen bytes whose header claims width x height, with no image data after it: what a
// decompression bomb shows a decoder that trusts the header.
inline std::string png_header_claiming(std::uint32_t width, std::uint32_t height) {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  const auto be32 = [&](std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) png.push_back(static_cast<char>((v >> shift) & 0xffu));
  };
  be32(13);
  png += "IHDR";
  be32(width);
  be32(height);
  png += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB, deflate, no filter, no interlace
  be32(0);                                             // CRC (decoders skip it)
  return png;
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
