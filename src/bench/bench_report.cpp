#include <algorithm>
#include <cstdio>
#include <ostream>
#include <string>

#include "streamgen/bench.h"

namespace streamgen {

void add_timing(BenchRow& row, const Timing& t) {
  row["median_ms"] = t.median_ms;
  row["p10_ms"] = t.p10_ms;
  row["p90_ms"] = t.p90_ms;
  row["runs"] = t.runs;
}

namespace {
std::string cell(const nlohmann::ordered_json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    char buf[32];
    std::snprintf(buf, sizeof buf, std::abs(d) >= 100 ? "%.1f" : (std::abs(d) >= 1 ? "%.2f" : "%.3f"), d);
    return buf;
  }
  if (v.is_null()) return "";
  return v.dump();
}
}  // namespace

void print_bench_rows(std::ostream& out, const std::vector<BenchRow>& rows, bool as_json) {
  if (as_json) {
    for (const auto& r : rows) out << r.dump() << "\n";
    out.flush();
    return;
  }
  std::vector<std::string> columns;  // in order of first appearance
  for (const auto& r : rows)
    for (const auto& [k, _] : r.items())
      if (std::find(columns.begin(), columns.end(), k) == columns.end()) columns.push_back(k);
  std::vector<std::size_t> width(columns.size());
  for (std::size_t c = 0; c < columns.size(); ++c) {
    width[c] = columns[c].size();
    for (const auto& r : rows)
      if (r.contains(columns[c])) width[c] = std::max(width[c], cell(r[columns[c]]).size());
  }
  auto print_line = [&](auto get) {
    for (std::size_t c = 0; c < columns.size(); ++c) {
      const std::string s = get(c);
      out << (c ? "  " : "") << std::string(width[c] - s.size(), ' ') << s;
    }
    out << "\n";
  };
  print_line([&](std::size_t c) { return columns[c]; });
  for (const auto& r : rows) print_line([&](std::size_t c) { return r.contains(columns[c]) ? cell(r[columns[c]]) : ""; });
  out.flush();
}

}  // namespace streamgen
