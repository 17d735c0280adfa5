#include <gtest/gtest.h>
#include <torch/torch.h>

#include "streamgen/error.h"
#include "streamgen/safetensors.h"
#include "test_util.h"

namespace streamgen {
namespace {

using test::TempDir;

torch::Tensor random_tensor(torch::ScalarType dtype, torch::IntArrayRef shape) {
  if (dtype == torch::kBool) return torch::rand(shape) > 0.5;
  if (c10::isFloatingType(dtype)) return torch::randn(shape).to(dtype);
  if (dtype == torch::kUInt8) return torch::randint(0, 256, shape).to(dtype);
  return torch::randint(-100, 100, shape).to(dtype);
}

const std::vector<torch::ScalarType> kAllDtypes = {torch::kFloat64, torch::kFloat32, torch::kFloat16, torch::kBFloat16,
                                                   torch::kInt64,   torch::kInt32,   torch::kInt16,   torch::kInt8,
                                                   torch::kUInt8,   torch::kBool};

class RoundTrip : public ::testing::TestWithParam<LoadMode> {};

TEST_P(RoundTrip, EveryDtypeShapeAndMetadata) {
  TempDir dir;
  NamedTensors tensors;
  for (auto dtype : kAllDtypes) {
    const std::string name = c10::toString(dtype);
    tensors.emplace_back(name + ".matrix", random_tensor(dtype, {3, 5}));
    tensors.emplace_back(name + ".odd", random_tensor(dtype, {7}));  // odd sizes break alignment of what follows
    tensors.emplace_back(name + ".scalar", random_tensor(dtype, {}));
    tensors.emplace_back(name + ".empty", random_tensor(dtype, {0, 4}));
  }
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"description", "round trip, ünïcode"}};
  save_safetensors(dir / "all.safetensors", tensors, meta);

  const auto file = SafetensorsFile::open(dir / "all.safetensors", GetParam());
  EXPECT_EQ(file.metadata(), meta);
  ASSERT_EQ(file.size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    SCOPED_TRACE(name);
    const auto got = file.tensor(name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type());
    EXPECT_EQ(got.sizes(), expected.sizes());
    EXPECT_TRUE(torch::equal(got, expected));
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, RoundTrip, ::testing::Values(LoadMode::Mmap, LoadMode::Read),
                         [](const auto& info) { return std::string(info.param == LoadMode::Mmap ? "mmap" : "read"); });

TEST(Safetensors, WriterAlignsEveryTensorSoMmapIsZeroCopy) {
  TempDir dir;
  NamedTensors tensors;
  for (auto dtype : kAllDtypes) tensors.emplace_back(c10::toString(dtype), random_tensor(dtype, {3}));
  save_safetensors(dir / "a.safetensors", tensors);
  const auto file = SafetensorsFile::open(dir / "a.safetensors");
  const auto* lo = file.bytes();
  const auto* hi = lo + file.file_size();
  for (const auto& [name, _] : tensors) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(file.is_zero_copy(name));
    const auto t = file.tensor(name);
    const auto* p = static_cast<const std::uint8_t*>(t.data_ptr());
    EXPECT_GE(p, lo);  // the data pointer lies inside the mapping: no copy was made
    EXPECT_LE(p + t.nbytes(), hi);
  }
}

// A file whose F32 tensor starts at an odd offset, as some writers produce.
std::string unaligned_file() {
  const std::string header = R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"f":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((padded.size() >> (8 * i)) & 0xff);
  bytes += padded;
  bytes += '\x07';
  const float values[2] = {1.5f, -2.25f};
  bytes.append(reinterpret_cast<const char*>(values), sizeof values);
  return bytes;
}

TEST(Safetensors, UnalignedDataIsCopiedCorrectly) {
  TempDir dir;
  test::write_bytes(dir / "u.safetensors", unaligned_file());
  const auto file = SafetensorsFile::open(dir / "u.safetensors");
  EXPECT_FALSE(file.is_zero_copy("f"));
  const auto f = file.tensor("f");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(f.data_ptr()) % 4, 0u);
  EXPECT_FLOAT_EQ(f[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(f[1].item<float>(), -2.25f);
  EXPECT_EQ(file.tensor("b").item<std::uint8_t>(), 7);
}

TEST(Safetensors, TensorOutlivesTheFileObject) {
  TempDir dir;
  const auto ref = torch::arange(1000, torch::kFloat32);
  save_safetensors(dir / "x.safetensors", NamedTensors{{"x", ref}});
  torch::Tensor t;
  {
    const auto file = SafetensorsFile::open(dir / "x.safetensors");
    t = file.tensor("x");
  }
  EXPECT_TRUE(torch::equal(t, ref));
}

TEST(Safetensors, WritingToAMappedTensorNeverChangesTheFile) {
  TempDir dir;
  save_safetensors(dir / "x.safetensors", NamedTensors{{"x", torch::zeros({16})}});
  const auto before = test::read_bytes(dir / "x.safetensors");
  {
    const auto file = SafetensorsFile::open(dir / "x.safetensors");
    auto t = file.tensor("x");
    ASSERT_TRUE(file.is_zero_copy("x"));
    t.fill_(3.0f);  // copy-on-write pages: private to this process
  }
  EXPECT_EQ(test::read_bytes(dir / "x.safetensors"), before);
}

TEST(Safetensors, NonContiguousAndGpuFreeInputsAreWrittenAsValues) {
  TempDir dir;
  const auto m = torch::arange(12, torch::kFloat32).reshape({3, 4});
  save_safetensors(dir / "t.safetensors", NamedTensors{{"t", m.t()}, {"s", m.slice(1, 1, 3)}});
  const auto file = SafetensorsFile::open(dir / "t.safetensors");
  EXPECT_TRUE(torch::equal(file.tensor("t"), m.t()));
  EXPECT_TRUE(torch::equal(file.tensor("s"), m.slice(1, 1, 3)));
}

TEST(Safetensors, FailedWriteLeavesTheOldFileAndNoTemporaries) {
  TempDir dir;
  const auto path = dir / "model.safetensors";
  save_safetensors(path, NamedTensors{{"a", torch::ones({4})}});
  const auto before = test::read_bytes(path);
  EXPECT_THROW(save_safetensors(path, NamedTensors{{"a", torch::ones({4})}, {"c", torch::ones({2}, torch::kComplexFloat)}}), Error);
  EXPECT_THROW(save_safetensors(path, NamedTensors{{"a", torch::ones({4})}, {"a", torch::ones({4})}}), Error);
  EXPECT_THROW(save_safetensors(path, NamedTensors{{"u", torch::Tensor()}}), Error);
  EXPECT_EQ(test::read_bytes(path), before);
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1);
}

TEST(Safetensors, UnsupportedDtypeErrorNamesTensorAndSupportedList) {
  TempDir dir;
  try {
    save_safetensors(dir / "c.safetensors", NamedTensors{{"cplx", torch::ones({2}, torch::kComplexFloat)}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cplx"), std::string::npos) << msg;
    EXPECT_NE(msg.find("BF16"), std::string::npos) << msg;
  }
}

TEST(Safetensors, MissingFileAndMissingTensorErrorsNameThem) {
  TempDir dir;
  try {
    SafetensorsFile::open(dir / "nope.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.safetensors"), std::string::npos);
  }
  save_safetensors(dir / "x.safetensors", NamedTensors{{"x", torch::ones({1})}});
  const auto file = SafetensorsFile::open(dir / "x.safetensors");
  try {
    file.tensor("y");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'y'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("x.safetensors"), std::string::npos);
  }
}

TEST(Safetensors, ReadsTheGoldenUnetCaseFile) {
  const auto file = SafetensorsFile::open(test::data_path("tiny-sd21_unet.safetensors"));
  const auto out = file.tensor("case0.out");
  EXPECT_EQ(out.scalar_type(), torch::kFloat32);
  EXPECT_EQ(out.sizes(), (std::vector<std::int64_t>{2, 4, 16, 16}));
  EXPECT_EQ(file.tensor("case0.timestep").scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  EXPECT_TRUE(file.metadata().count("description"));
}

}  // namespace
}  // namespace streamgen
