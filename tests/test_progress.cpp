#include <gtest/gtest.h>

#include <sstream>

#include "streamgen/progress.h"

namespace streamgen {
namespace {

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

TEST(Progress, PlainOutputPrintsEachTenthWithRateAndEta) {
  std::ostringstream out;
  {
    ProgressBar bar("train", 200, "step", &out, /*tty=*/false);
    for (int i = 0; i < 200; ++i) bar.advance();
    bar.set_postfix("loss=0.5");
  }
  const auto text = out.str();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(count_lines(text), 11) << text;  // 0%, then 10% .. 100%
  EXPECT_NE(text.find("train 100% |########################| 200/200"), std::string::npos) << text;
  EXPECT_NE(text.find("step/s]"), std::string::npos) << text;
  EXPECT_NE(text.find(" 50% "), std::string::npos) << text;
}

TEST(Progress, TerminalOutputRedrawsOneLine) {
  std::ostringstream out;
  {
    ProgressBar bar("x", 3, "it", &out, /*tty=*/true);
    bar.advance(3);
  }
  const auto text = out.str();
  EXPECT_EQ(count_lines(text), 1) << text;
  EXPECT_NE(text.find('\r'), std::string::npos);
  EXPECT_NE(text.find("3/3"), std::string::npos);
}

TEST(Progress, UnknownTotalAndSlowRates) {
  std::ostringstream out;
  ProgressBar bar("frames", 0, "frame", &out, false);
  bar.advance(5);
  const auto line = bar.line();
  EXPECT_NE(line.find("frames 5 ["), std::string::npos) << line;
  EXPECT_EQ(line.find('%'), std::string::npos) << line;
}

TEST(Progress, AResumedRunCountsOnlyItsOwnWorkInTheRate) {
  // A run resumed at step 1000 of 2000 showed 21,621,855 step/s and an ETA of seconds: the steps
  // done before the resume went into the rate.
  std::ostringstream out;
  ProgressBar bar("train", 2000, "step", &out, false);
  bar.start_at(1000);
  const auto line = bar.line();
  EXPECT_NE(line.find(" 50% "), std::string::npos) << line;
  EXPECT_NE(line.find("1000/2000"), std::string::npos) << line;
  EXPECT_NE(line.find("0.00 step/s"), std::string::npos) << line;  // nothing done yet in this run
  EXPECT_NE(line.find("<--:--"), std::string::npos) << line;       // so no ETA either
}

TEST(Progress, DisabledPrintsNothing) {
  std::ostringstream out;
  set_progress_enabled(false);
  {
    ProgressBar bar("quiet", 10, "it", &out, false);
    bar.advance(10);
  }
  set_progress_enabled(true);
  EXPECT_TRUE(out.str().empty());
}

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(format_duration(0), "00:00");
  EXPECT_EQ(format_duration(65), "01:05");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "--:--");
}

}  // namespace
}  // namespace streamgen
