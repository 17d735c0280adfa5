#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "streamgen/system_info.h"

int main(int argc, char** argv) {
  streamgen::upgrade_blas_kernels();  // as the CLI does, so the suites run the kernels users get
  ::testing::InitGoogleTest(&argc, argv);
  spdlog::set_level(spdlog::level::warn);
  return RUN_ALL_TESTS();
}
