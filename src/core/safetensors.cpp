#include "streamgen/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "streamgen/error.h"

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts would need byte swapping");

namespace streamgen {

using safetensors::DType;
using safetensors::TensorEntry;

namespace {

std::string errno_text() { return std::strerror(errno); }

// Closes a file descriptor on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void read_fully(int fd, std::uint8_t* dst, std::uint64_t n, const std::filesystem::path& path) {
  std::uint64_t done = 0;
  while (done < n) {
    const ssize_t got = ::read(fd, dst + done, static_cast<std::size_t>(std::min<std::uint64_t>(n - done, 1u << 30)));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw Error("cannot read '" + path.string() + "': " + errno_text());
    if (got == 0) throw Error("cannot read '" + path.string() + "': file shrank while reading");
    done += static_cast<std::uint64_t>(got);
  }
}

void write_fully(int fd, const void* src, std::uint64_t n, const std::filesystem::path& path) {
  const auto* p = static_cast<const std::uint8_t*>(src);
  std::uint64_t done = 0;
  while (done < n) {
    const ssize_t put = ::write(fd, p + done, static_cast<std::size_t>(std::min<std::uint64_t>(n - done, 1u << 30)));
    if (put < 0 && errno == EINTR) continue;
    if (put < 0) throw Error("cannot write '" + path.string() + "': " + errno_text());
    done += static_cast<std::uint64_t>(put);
  }
}

}  // namespace

torch::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::F64: return torch::kFloat64;
    case DType::F32: return torch::kFloat32;
    case DType::F16: return torch::kFloat16;
    case DType::BF16: return torch::kBFloat16;
    case DType::I64: return torch::kInt64;
    case DType::I32: return torch::kInt32;
    case DType::I16: return torch::kInt16;
    case DType::I8: return torch::kInt8;
    case DType::U8: return torch::kUInt8;
    case DType::BOOL: return torch::kBool;
  }
  throw Error("unreachable dtype");
}

DType from_scalar_type(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat64: return DType::F64;
    case torch::kFloat32: return DType::F32;
    case torch::kFloat16: return DType::F16;
    case torch::kBFloat16: return DType::BF16;
    case torch::kInt64: return DType::I64;
    case torch::kInt32: return DType::I32;
    case torch::kInt16: return DType::I16;
    case torch::kInt8: return DType::I8;
    case torch::kUInt8: return DType::U8;
    case torch::kBool: return DType::BOOL;
    default:
      throw Error(std::string("dtype ") + c10::toString(dtype) + " cannot be stored in safetensors (supported: " +
                  safetensors::supported_dtypes() + ")");
  }
}

// The file's bytes: a private copy-on-write mapping, or a heap buffer filled by read(2).
struct SafetensorsFile::Storage {
  std::uint8_t* data = nullptr;
  std::uint64_t size = 0;
  bool mapped = false;
  ~Storage() {
    if (mapped && data) ::munmap(data, size);
    if (!mapped) std::free(data);
  }
};

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path, LoadMode mode) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw Error("cannot open '" + path.string() + "': " + errno_text());
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) throw Error("cannot stat '" + path.string() + "': " + errno_text());
  if (S_ISDIR(st.st_mode)) throw Error("'" + path.string() + "' is a directory, expected a .safetensors file");
  if (!S_ISREG(st.st_mode)) throw Error("'" + path.string() + "' is not a regular file");

  SafetensorsFile file;
  file.path_ = path;
  file.storage_ = std::make_shared<Storage>();
  Storage& s = *file.storage_;
  s.size = static_cast<std::uint64_t>(st.st_size);
  if (s.size > 0) {
    if (mode == LoadMode::Mmap) {
      void* p = ::mmap(nullptr, s.size, PROT_READ | PROT_WRITE, MAP_PRIVATE, f.fd, 0);
      if (p == MAP_FAILED) throw Error("cannot map '" + path.string() + "': " + errno_text());
      s.data = static_cast<std::uint8_t*>(p);
      s.mapped = true;
    } else {
      // 64-byte alignment keeps every tensor whose offset is aligned zero-copy in this mode too.
      const std::uint64_t padded = (s.size + 63) / 64 * 64;
      s.data = static_cast<std::uint8_t*>(std::aligned_alloc(64, padded));
      if (!s.data) throw Error("cannot allocate " + std::to_string(s.size) + " bytes for '" + path.string() + "'");
      read_fully(f.fd, s.data, s.size, path);
    }
  }
  file.header_ = safetensors::parse_header(s.data, s.size, path.string());
  for (std::size_t i = 0; i < file.header_.tensors.size(); ++i) file.index_.emplace(file.header_.tensors[i].name, i);
  return file;
}

const TensorEntry* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

const TensorEntry& SafetensorsFile::entry(std::string_view name) const {
  if (const auto* e = find(name)) return *e;
  throw Error(path_.string() + ": no tensor named '" + std::string(name) + "' (the file holds " +
              std::to_string(entries().size()) + " tensors)");
}

const std::uint8_t* SafetensorsFile::data_of(const TensorEntry& e) const {
  return storage_->data + header_.data_start + e.begin;
}

bool SafetensorsFile::is_zero_copy(std::string_view name) const {
  const auto& e = entry(name);
  return reinterpret_cast<std::uintptr_t>(data_of(e)) % safetensors::itemsize(e.dtype) == 0;
}

torch::Tensor SafetensorsFile::tensor(std::string_view name) const {
  const auto& e = entry(name);
  const auto options = torch::TensorOptions().dtype(to_scalar_type(e.dtype));
  auto* src = const_cast<std::uint8_t*>(data_of(e));
  if (e.nbytes() == 0) return torch::empty(e.shape, options);
  if (is_zero_copy(name)) {
    auto keep_alive = storage_;
    return torch::from_blob(src, e.shape, [keep_alive](void*) {}, options);
  }
  auto out = torch::empty(e.shape, options);
  std::memcpy(out.data_ptr(), src, e.nbytes());
  return out;
}

std::map<std::string, torch::Tensor> SafetensorsFile::tensors() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& e : entries()) out.emplace(e.name, tensor(e.name));
  return out;
}

const std::uint8_t* SafetensorsFile::bytes() const { return storage_->data; }
std::uint64_t SafetensorsFile::file_size() const { return storage_->size; }

void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  struct Item {
    std::string name;
    torch::Tensor data;  // CPU, contiguous
    DType dtype;
  };
  std::vector<Item> items;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw Error("cannot save '" + path.string() + "': '__metadata__' is reserved, not a tensor name");
    if (!seen.insert(name).second) throw Error("cannot save '" + path.string() + "': tensor name '" + name + "' given twice");
    if (!t.defined()) throw Error("cannot save '" + path.string() + "': tensor '" + name + "' is undefined");
    DType dtype;
    try {
      dtype = from_scalar_type(t.scalar_type());
    } catch (const Error& e) {
      throw Error("cannot save '" + path.string() + "': tensor '" + name + "': " + e.what());
    }
    items.push_back({name, t.detach().to(torch::kCPU).contiguous(), dtype});
  }
  // Widest dtypes first keeps every tensor naturally aligned with no padding between them.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    const auto sa = safetensors::itemsize(a.dtype), sb = safetensors::itemsize(b.dtype);
    return sa != sb ? sa > sb : a.name < b.name;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& it : items) {
    const auto nbytes = static_cast<std::uint64_t>(it.data.numel()) * safetensors::itemsize(it.dtype);
    header[it.name] = {{"dtype", std::string(safetensors::dtype_name(it.dtype))},
                       {"shape", it.data.sizes().vec()},
                       {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data section starts 8-byte aligned
  std::uint8_t len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(text.size()) >> (8 * i));

  const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::random_device rd;
  const auto tmp = dir / ("." + path.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  Fd f;
  f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (f.fd < 0) throw Error("cannot save '" + path.string() + "': cannot create '" + tmp.string() + "': " + errno_text());
  try {
    write_fully(f.fd, len_le, 8, tmp);
    write_fully(f.fd, text.data(), text.size(), tmp);
    for (const auto& it : items)
      write_fully(f.fd, it.data.data_ptr(), static_cast<std::uint64_t>(it.data.numel()) * safetensors::itemsize(it.dtype), tmp);
    if (::fsync(f.fd) != 0) throw Error("cannot flush '" + tmp.string() + "': " + errno_text());
    ::close(f.fd);
    f.fd = -1;
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw Error("cannot save '" + path.string() + "': rename from '" + tmp.string() + "' failed: " + errno_text());
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  Fd d;
  d.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d.fd >= 0) ::fsync(d.fd);  // make the rename itself durable; best effort
}

void save_safetensors(const std::filesystem::path& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, NamedTensors(tensors.begin(), tensors.end()), metadata);
}

}  // namespace streamgen
