// Every way a safetensors file can be broken is refused with a message that names the file, the
// tensor where there is one, and what was expected.
#include <gtest/gtest.h>

#include "streamgen/error.h"
#include "streamgen/safetensors.h"
#include "test_util.h"

namespace streamgen {
namespace {

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A file with the given header text and `data_bytes` zero bytes of data.
std::string with_header(const std::string& header, std::size_t data_bytes) {
  return le64(header.size()) + header + std::string(data_bytes, '\0');
}

struct Case {
  std::string label;
  std::string bytes;
  std::string expected;  // substring of the error message
};

std::vector<Case> malformed_cases() {
  const std::string w16 = R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
  return {
      {"empty file", "", "file is empty"},
      {"truncated before the header length", std::string("\x10\x00\x00", 3), "too short for a safetensors file"},
      {"header length past EOF", le64(64) + R"({"a":1})", "runs past the end of the file"},
      {"header length over the limit", le64(200'000'000) + "{}", "exceeds the 100 MB limit"},
      {"not JSON", with_header("this is not json", 0), "header is not valid JSON"},
      {"JSON but not an object", with_header("[1,2,3]", 0), "header must be a JSON object, found array"},
      {"unknown dtype", with_header(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1),
       "tensor 'w': unknown dtype 'F8_E4M3' (supported: F64, F32"},
      {"negative shape", with_header(R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", 8),
       "tensor 'w': shape [2,-1] has a negative dimension"},
      {"fractional shape", with_header(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8),
       "must hold non-negative integers"},
      {"overflowing shape",
       with_header(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       "tensor 'w': shape [4294967296, 4294967296] overflows"},
      {"byte count overflow", with_header(R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       "overflows a 64-bit byte count"},
      {"offsets past the data section", with_header("{" + w16 + "}", 8),
       "tensor 'w': data_offsets [0, 16] run past the end of the data section (8 bytes)"},
      {"offsets not ordered", with_header(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[16,8]}})", 16),
       "data_offsets [16, 8] are not ordered"},
      {"offsets not a pair", with_header(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
       "'data_offsets' must be [begin, end]"},
      {"size mismatch", with_header(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 16),
       "tensor 'w': data_offsets [0, 12] span 12 bytes, expected 16 (F32, shape [2, 2] = 4 elements x 4 bytes)"},
      {"overlapping ranges",
       with_header("{" + w16 + R"(,"v":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16),
       "tensors 'w' [0, 16) and 'v' [8, 16) overlap"},
      {"duplicate names", with_header("{" + w16 + "," + w16 + "}", 16), "tensor name 'w' appears more than once"},
      {"metadata value not a string", with_header(R"({"__metadata__":{"format":1}})", 0),
       "__metadata__ must map strings to strings; key 'format' holds a number"},
      {"metadata not an object", with_header(R"({"__metadata__":"pt"})", 0), "__metadata__ must be an object"},
      {"entry without dtype", with_header(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), "tensor 'w': entry has no 'dtype'"},
      {"entry not an object", with_header(R"({"w":[1,2]})", 0), "tensor 'w': entry must be an object"},
      {"dtype not a string", with_header(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4), "'dtype' must be a string"},
      {"duplicate key inside an entry",
       with_header(R"({"w":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,4]}})", 4),
       "key 'dtype' appears more than once"},
      {"absurd nesting", with_header(R"({"w":[[[[[[[[[[[[1]]]]]]]]]]]]})", 0), "nests deeper than"},
      {"data section truncated", with_header("{" + w16 + "}", 0), "run past the end of the data section (0 bytes)"},
      // Hostile bytes reach the message escaped: the parser's "last read" text carries the raw byte.
      {"a name that is not UTF-8", with_header("{\"w\xff\":1}", 0), "ill-formed UTF-8 byte; last read: '\"w\\xff'"},
      {"a terminal escape in a name", with_header(R"({"\u001b[2Jw":{"dtype":"F9","shape":[1],"data_offsets":[0,1]}})", 1),
       "tensor '\\x1b[2Jw': unknown dtype 'F9'"},
  };
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.label; }

class Malformed : public ::testing::TestWithParam<Case> {};

TEST_P(Malformed, IsRejectedWithItsSpecificMessage) {
  const Case& c = GetParam();
  test::TempDir dir;
  const auto path = dir / "broken.safetensors";
  test::write_bytes(path, c.bytes);
  for (auto mode : {LoadMode::Mmap, LoadMode::Read}) {
    try {
      SafetensorsFile::open(path, mode);
      ADD_FAILURE() << c.label << ": accepted";
    } catch (const FormatError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(c.expected), std::string::npos) << c.label << "\n  got: " << msg << "\n  want: " << c.expected;
      EXPECT_EQ(msg.rfind(path.string(), 0), 0u) << "the message starts with the file: " << msg;
      EXPECT_EQ(msg, printable(msg)) << "the message is safe to print as it is";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Files, Malformed, ::testing::ValuesIn(malformed_cases()), [](const auto& info) {
  std::string name;
  for (char ch : info.param.label) name += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return name;
});

TEST(MalformedPath, DirectoryIsRefusedByName) {
  test::TempDir dir;
  try {
    SafetensorsFile::open(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos);
  }
}

TEST(MalformedPath, EmptyTensorsMayShareAnOffset) {
  test::TempDir dir;
  test::write_bytes(dir / "z.safetensors",
                    with_header(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"I8","shape":[0,3],"data_offsets":[0,0]},"c":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 2));
  const auto f = SafetensorsFile::open(dir / "z.safetensors");
  EXPECT_EQ(f.tensor("a").numel(), 0);
  EXPECT_EQ(f.tensor("b").sizes(), (std::vector<std::int64_t>{0, 3}));
  EXPECT_EQ(f.tensor("c").numel(), 2);
}

}  // namespace
}  // namespace streamgen

namespace streamgen {
namespace {

TEST(Printable, KeepsUtf8AndEscapesWhatIsNot) {
  EXPECT_EQ(printable("plain text\nline two\ttab"), "plain text\nline two\ttab");
  EXPECT_EQ(printable("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x8e\xa8"), "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x8e\xa8");  // é ✓ 🎨 stay
  EXPECT_EQ(printable("a\xff\xfe"), "a\\xff\\xfe");
  EXPECT_EQ(printable(std::string("nul\0!", 5)), "nul\\x00!");
  EXPECT_EQ(printable("\x1b[31mred\x7f"), "\\x1b[31mred\\x7f");
  EXPECT_EQ(printable("\xc2\x9b"), "\\xc2\\x9b");                 // C1 control (CSI)
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");                 // overlong '/'
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");        // a UTF-16 surrogate
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(printable("\xe2\x9c"), "\\xe2\\x9c");                 // truncated sequence
}

}  // namespace
}  // namespace streamgen
