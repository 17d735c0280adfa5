#include <gtest/gtest.h>

#include "streamgen/bench.h"
#include "streamgen/timing.h"

namespace streamgen {
namespace {

TEST(Timing, PercentilesMatchNumpyLinear) {
  // numpy.percentile([4, 1, 3, 2], [10, 50, 90]) == [1.3, 2.5, 3.7]
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 10), 1.3);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 90), 3.7);
  EXPECT_DOUBLE_EQ(percentile({7}, 90), 7);
  const auto t = summarize({5, 1, 3});
  EXPECT_EQ(t.runs, 3);
  EXPECT_DOUBLE_EQ(t.median_ms, 3);
}

TEST(Timing, RunCountsRespectTheBounds) {
  int calls = 0;
  TimingOptions o;
  o.warmup = 2;
  o.min_runs = 4;
  o.max_runs = 4;
  o.min_seconds = 0;
  const auto t = time_runs([&] { ++calls; }, o);
  EXPECT_EQ(t.runs, 4);
  EXPECT_EQ(calls, 6);
}

TEST(BenchReport, JsonLinesAndTable) {
  BenchRow row;
  row["name"] = "demo";
  row["n"] = 8;
  add_timing(row, summarize({1.0, 2.0, 3.0}));
  std::ostringstream json, table;
  print_bench_rows(json, {row}, true);
  const auto parsed = nlohmann::json::parse(json.str());
  EXPECT_EQ(parsed["name"], "demo");
  EXPECT_DOUBLE_EQ(parsed["median_ms"].get<double>(), 2.0);
  EXPECT_EQ(parsed["runs"], 3);
  print_bench_rows(table, {row}, false);
  EXPECT_NE(table.str().find("median_ms"), std::string::npos);
  EXPECT_NE(table.str().find("demo"), std::string::npos);
}

TEST(BenchMatmul, ReportsPositiveGflops) {
  MatmulBenchOptions o;
  o.sizes = {64};
  o.seconds = 0.01;
  const auto rows = bench_matmul(o);
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& r : rows) {
    EXPECT_GT(r["gflops"].get<double>(), 0);
    EXPECT_GE(r["runs"].get<int>(), 3);
  }
}

TEST(BenchSafetensors, ThreeModesWithZeroCopyCounts) {
  SafetensorsBenchOptions o;
  o.size_mb = 4;
  o.tensors = 8;
  o.runs = 2;
  const auto rows = bench_safetensors(o);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["mode"], "resident");
  EXPECT_EQ(rows[1]["mode"], "mmap");
  EXPECT_EQ(rows[1]["zero_copy"], 8);
  EXPECT_EQ(rows[2]["mode"], "read");
  for (const auto& r : rows) EXPECT_GT(r["gb_per_s"].get<double>(), 0);
}

}  // namespace
}  // namespace streamgen
