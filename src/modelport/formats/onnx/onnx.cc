#include "modelport/formats/onnx/onnx.h"

#include <onnx/onnx_pb.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <climits>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "modelport/core/file.h"
#include "modelport/core/hash.h"
#include "modelport/formats/sharded.h"
#include "modelport/formats/zip/zip.h"

namespace mp::onnx {
namespace {

static_assert(std::endian::native == std::endian::little, "modelport assumes a little-endian host");

namespace fs = std::filesystem;

std::string Quote(std::string_view s) { return zip::QuoteName(s); }
std::string Num(uint64_t v) { return std::to_string(v); }

// Protobuf wire types (https://protobuf.dev/programming-guides/encoding/).
enum Wire : uint8_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

// Bounds on per-tensor bookkeeping, so a hostile file cannot make the index grow with its size:
// external_data has four meaningful keys, and writers emit a typed field as one packed run.
constexpr size_t kMaxExternalEntries = 64;
constexpr size_t kMaxTypedRuns = 4096;

// Field numbers from onnx.proto.
constexpr uint32_t kModelGraph = 7;
constexpr uint32_t kGraphInitializer = 5;
constexpr uint32_t kGraphSparseInitializer = 15;
enum TensorField : uint32_t {
  kDims = 1,
  kDataType = 2,
  kSegment = 3,
  kFloatData = 4,
  kInt32Data = 5,
  kStringData = 6,
  kInt64Data = 7,
  kName = 8,
  kRawData = 9,
  kDoubleData = 10,
  kUint64Data = 11,
  kExternalData = 13,
  kDataLocation = 14,
};

// ---------------------------------------------------------------------------------------------
// Element types (TensorProto.DataType) and where each keeps its values when not in raw_data.

struct OnnxType {
  int32_t code;
  std::string_view name;
  std::optional<DType> dtype;  // nullopt: valid ONNX, no modelport dtype
  uint32_t field;              // the typed field the spec stores it in
};

constexpr OnnxType kTypes[] = {
    {1, "FLOAT", DType::kF32, kFloatData},
    {2, "UINT8", DType::kU8, kInt32Data},
    {3, "INT8", DType::kI8, kInt32Data},
    {4, "UINT16", DType::kU16, kInt32Data},
    {5, "INT16", DType::kI16, kInt32Data},
    {6, "INT32", DType::kI32, kInt32Data},
    {7, "INT64", DType::kI64, kInt64Data},
    {8, "STRING", std::nullopt, kStringData},
    {9, "BOOL", DType::kBool, kInt32Data},
    {10, "FLOAT16", DType::kF16, kInt32Data},
    {11, "DOUBLE", DType::kF64, kDoubleData},
    {12, "UINT32", DType::kU32, kUint64Data},
    {13, "UINT64", DType::kU64, kUint64Data},
    {14, "COMPLEX64", DType::kC64, kFloatData},
    {15, "COMPLEX128", std::nullopt, kDoubleData},
    {16, "BFLOAT16", DType::kBF16, kInt32Data},
    {17, "FLOAT8E4M3FN", DType::kF8E4M3, kInt32Data},
    {18, "FLOAT8E4M3FNUZ", std::nullopt, kInt32Data},
    {19, "FLOAT8E5M2", DType::kF8E5M2, kInt32Data},
    {20, "FLOAT8E5M2FNUZ", std::nullopt, kInt32Data},
    {21, "UINT4", std::nullopt, kInt32Data},
    {22, "INT4", std::nullopt, kInt32Data},
    {23, "FLOAT4E2M1", std::nullopt, kInt32Data},
    {24, "FLOAT8E8M0", std::nullopt, kInt32Data},
};

const OnnxType* FindType(int64_t code) {
  for (const OnnxType& t : kTypes) {
    if (t.code == code) return &t;
  }
  return nullptr;
}

Result<const OnnxType*> TypeOf(int64_t code) {
  if (code == 0) return Corrupt("data_type is UNDEFINED (0)");
  const OnnxType* t = FindType(code);
  if (t == nullptr) {
    return Unsupported("data_type " + std::to_string(code) +
                       " is not an ONNX type modelport knows");
  }
  if (!t->dtype) {
    return Unsupported("data_type " + std::string(t->name) + " (" + std::to_string(code) +
                       ") has no modelport dtype");
  }
  return t;
}

// modelport's name for an ONNX element type ("f32"), else the ONNX name in lower case.
std::string ElemTypeName(int32_t code) {
  const OnnxType* t = FindType(code);
  if (t == nullptr) return "type " + std::to_string(code);
  if (t->dtype) return std::string(DTypeName(*t->dtype));
  std::string s(t->name);
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string_view FieldName(uint32_t field) {
  switch (field) {
    case kFloatData:
      return "float_data";
    case kInt32Data:
      return "int32_data";
    case kStringData:
      return "string_data";
    case kInt64Data:
      return "int64_data";
    case kDoubleData:
      return "double_data";
    case kUint64Data:
      return "uint64_data";
    default:
      return "field";
  }
}

// Bytes per value of a typed field when packed as fixed-width (0: varints).
uint32_t FixedWidth(uint32_t field) {
  return field == kFloatData ? 4 : field == kDoubleData ? 8 : 0;
}

// ---------------------------------------------------------------------------------------------
// A forward reader over a byte range of a file: the mapping itself in mmap mode, a refilled
// window of the file in pread mode (so an index walk reads only the bytes around field tags).

class Cursor {
 public:
  Cursor(const InputFile& file, const uint8_t* mapped, uint64_t begin, uint64_t end)
      : file_(file), mapped_(mapped), pos_(begin), end_(end) {}

  uint64_t pos() const { return pos_; }
  uint64_t end() const { return end_; }
  uint64_t left() const { return end_ - pos_; }
  void set_end(uint64_t end) { end_ = end; }

  Result<uint64_t> Varint() {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(10, left()));
    MP_ASSIGN_OR_RETURN(const uint8_t* p, Peek(n));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) {
      v |= static_cast<uint64_t>(p[i] & 0x7f) << (7 * i);
      if ((p[i] & 0x80) == 0) {
        if (i == 9 && p[i] > 1) break;
        pos_ += i + 1;
        return v;
      }
    }
    if (n < 10) return Corrupt("varint at byte " + Num(pos_) + " runs past the end of its message");
    return Corrupt("varint at byte " + Num(pos_) + " is longer than 64 bits");
  }

  Result<uint64_t> Fixed(size_t width) {
    if (left() < width) {
      return Corrupt(Num(width) + "-byte value at byte " + Num(pos_) +
                     " runs past the end of its message");
    }
    MP_ASSIGN_OR_RETURN(const uint8_t* p, Peek(width));
    uint64_t v = 0;
    std::memcpy(&v, p, width);
    pos_ += width;
    return v;
  }

  Status Skip(uint64_t n) {
    if (n > left()) {
      return Corrupt("field of " + Num(n) + " bytes at byte " + Num(pos_) +
                     " runs past the end of its message (" + Num(left()) + " bytes left)");
    }
    pos_ += n;
    return Status::Ok();
  }

  Result<std::string> String(uint64_t n) {
    std::string s(static_cast<size_t>(n), '\0');
    const uint64_t at = pos_;
    MP_RETURN_IF_ERROR(Skip(n));
    MP_RETURN_IF_ERROR(file_.ReadInto(at, n, reinterpret_cast<uint8_t*>(s.data())));
    return s;
  }

 private:
  static constexpr size_t kWindow = 64 * 1024;

  Result<const uint8_t*> Peek(size_t n) {
    if (mapped_ != nullptr) return mapped_ + pos_;
    if (pos_ < window_start_ || pos_ + n > window_start_ + window_.size()) {
      window_.resize(static_cast<size_t>(std::min<uint64_t>(kWindow, file_.size() - pos_)));
      MP_RETURN_IF_ERROR(file_.ReadInto(pos_, window_.size(), window_.data()));
      window_start_ = pos_;
    }
    return window_.data() + (pos_ - window_start_);
  }

  const InputFile& file_;
  const uint8_t* mapped_;
  uint64_t pos_;
  uint64_t end_;
  std::vector<uint8_t> window_;
  uint64_t window_start_ = 0;
};

struct Field {
  uint32_t number = 0;
  uint8_t wire = 0;
  uint64_t start = 0;   // file offset of the tag
  uint64_t value = 0;   // varint or fixed value; for kLen, the payload length
  uint64_t offset = 0;  // for kLen: file offset of the payload (the cursor stands there)
};

std::string_view WireName(uint8_t wire) {
  switch (wire) {
    case kVarint:
      return "varint";
    case kFixed64:
      return "fixed64";
    case kLen:
      return "length-delimited";
    case kFixed32:
      return "fixed32";
    default:
      return "group";
  }
}

// Reads one field's tag and value; a length-delimited payload is left for the caller to skip or
// descend into (its length is already checked against the message).
Result<Field> NextField(Cursor& c) {
  Field f;
  f.start = c.pos();
  MP_ASSIGN_OR_RETURN(const uint64_t tag, c.Varint());
  f.number = static_cast<uint32_t>(std::min<uint64_t>(tag >> 3, UINT32_MAX));
  f.wire = static_cast<uint8_t>(tag & 7);
  if (f.number == 0 || (tag >> 3) > 0x1fffffff) {
    return Corrupt("invalid field number " + Num(tag >> 3) + " at byte " + Num(f.start));
  }
  switch (f.wire) {
    case kVarint: {
      MP_ASSIGN_OR_RETURN(f.value, c.Varint());
      break;
    }
    case kFixed64: {
      MP_ASSIGN_OR_RETURN(f.value, c.Fixed(8));
      break;
    }
    case kFixed32: {
      MP_ASSIGN_OR_RETURN(f.value, c.Fixed(4));
      break;
    }
    case kLen: {
      MP_ASSIGN_OR_RETURN(f.value, c.Varint());
      f.offset = c.pos();
      if (f.value > c.left()) {
        return Corrupt("field " + Num(f.number) + " at byte " + Num(f.start) + " claims " +
                       Num(f.value) + " bytes but its message has " + Num(c.left()) + " left");
      }
      break;
    }
    default:
      return Corrupt("field " + Num(f.number) + " at byte " + Num(f.start) + " has wire type " +
                     Num(f.wire) + " (groups and reserved types are not valid in ONNX)");
  }
  return f;
}

Status ExpectWire(const Field& f, uint8_t wire, std::string_view name) {
  if (f.wire == wire) return Status::Ok();
  return Corrupt(std::string(name) + " (field " + Num(f.number) + ") at byte " + Num(f.start) +
                 " is " + std::string(WireName(f.wire)) + ", expected " +
                 std::string(WireName(wire)));
}

void AppendVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// The bytes of a length-delimited field's tag and length: what precedes its `length` bytes.
std::string LenPrefix(uint32_t field, uint64_t length) {
  std::string out;
  AppendVarint(&out, (static_cast<uint64_t>(field) << 3) | kLen);
  AppendVarint(&out, length);
  return out;
}

// Where a re-emitted model goes: a string (the graph for libprotobuf) or a file.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual Status Put(std::span<const uint8_t> bytes) = 0;
  Status Put(std::string_view text) {
    return Put({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  }
};

class StringSink final : public Sink {
 public:
  explicit StringSink(std::string* out) : out_(out) {}
  using Sink::Put;
  Status Put(std::span<const uint8_t> bytes) override {
    out_->append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return Status::Ok();
  }

 private:
  std::string* out_;
};

// Gathers the many small pieces of a graph into large writes; large payloads go straight
// through.
class FileSink final : public Sink {
 public:
  explicit FileSink(AtomicFile& file) : file_(file) {}
  using Sink::Put;
  Status Put(std::span<const uint8_t> bytes) override {
    if (buffer_.size() + bytes.size() > kBuffer) MP_RETURN_IF_ERROR(Flush());
    if (bytes.size() >= kBuffer) return file_.Write(bytes.data(), bytes.size());
    buffer_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return Status::Ok();
  }
  Status Flush() {
    Status s = file_.Write(buffer_.data(), buffer_.size());
    buffer_.clear();
    return s;
  }

 private:
  static constexpr size_t kBuffer = 1 << 20;
  AtomicFile& file_;
  std::string buffer_;
};

uint64_t RoundUp(uint64_t v, uint64_t align) { return (v + align - 1) / align * align; }

// A StringStringEntryProto (key 1, value 2) as an external_data field of a TensorProto.
void AppendExternalEntry(std::string* out, std::string_view key, std::string_view value) {
  std::string entry = LenPrefix(1, key.size());
  entry += key;
  entry += LenPrefix(2, value.size());
  entry += value;
  *out += LenPrefix(kExternalData, entry.size());
  *out += entry;
}

// A data file name for RewriteOptions::data_file: one plain name in the output's folder.
Status CheckDataFileName(const std::string& name, const std::string& model_name) {
  const std::string what = "external data file name " + Quote(name);
  if (name.empty() || name == "." || name == "..")
    return InvalidArgument(what + " is not a file name");
  if (name.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos) {
    return InvalidArgument(what + " must be a plain file name in the model's folder");
  }
  if (name == model_name) return InvalidArgument(what + " is the model's own name");
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// The initializer index.

// A stretch of one typed field's occurrences (packed or not), contiguous in the file.
struct TypedRun {
  uint32_t field;
  uint64_t begin;
  uint64_t end;
};

enum class DataKind { kNone, kRaw, kTyped, kExternal };

// A byte range of the model file copied verbatim when the model is re-emitted.
struct Range {
  uint64_t begin;
  uint64_t end;
};

// Adds [begin, end) to `ranges`, merging it into the last range when they touch.
void AddRange(std::vector<Range>* ranges, uint64_t begin, uint64_t end) {
  if (!ranges->empty() && ranges->back().end == begin) {
    ranges->back().end = end;
  } else {
    ranges->push_back({begin, end});
  }
}

// One piece of a message being re-emitted: a verbatim range of the file, or (slot >= 0) a
// sub-message rebuilt by the writer (the graph in ModelProto, initializer `slot` in GraphProto).
struct Piece {
  Range range{0, 0};
  int64_t slot = -1;
};

struct Entry {
  TensorInfo info;
  DataKind kind = DataKind::kNone;
  size_t file = 0;  // index into files_ (0: the model) for kRaw and kExternal
  uint64_t offset = 0;
  uint64_t length = 0;
  std::string checksum;  // SHA-1 hex (external data only), empty when absent
  std::vector<TypedRun> runs;
  // The TensorProto's fields other than its data (typed fields, raw_data, external_data,
  // data_location): name, dims, data_type, doc_string and fields modelport does not know.
  std::vector<Range> head;
};

// What the walker gathers about a TensorProto before it is checked.
struct RawTensor {
  std::string name;
  int64_t data_type = 0;
  std::vector<uint64_t> dims;
  std::optional<std::pair<uint64_t, uint64_t>> raw;  // offset, length
  std::vector<TypedRun> runs;
  bool has_strings = false;
  std::vector<std::pair<std::string, std::string>> external;
  int64_t data_location = 0;
  std::vector<Range> head;
};

Result<uint64_t> ParseDecimal(const std::string& text, std::string_view key) {
  if (text.empty() || text.size() > 20) {
    return Corrupt("external_data " + std::string(key) + " " + Quote(text) +
                   " is not a non-negative integer");
  }
  uint64_t v = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9') {
      return Corrupt("external_data " + std::string(key) + " " + Quote(text) +
                     " is not a non-negative integer");
    }
    const uint64_t digit = static_cast<uint64_t>(ch - '0');
    if (v > (UINT64_MAX - digit) / 10) {
      return Corrupt("external_data " + std::string(key) + " " + Quote(text) + " overflows");
    }
    v = v * 10 + digit;
  }
  return v;
}

Result<std::string> Sha1Hex(std::span<const uint8_t> bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha1(), nullptr) != 1) {
    return Internal("OpenSSL SHA-1 failed");
  }
  return ToHex(std::span<const uint8_t>(md, len));
}

// Where an external_data location may be read from: a regular file, reached through real
// folders only, inside `dir`. Returns its path and its (device, inode) as checked.
struct SafePath {
  std::string path;
  dev_t dev;
  ino_t ino;
};

Result<SafePath> ResolveLocation(const fs::path& dir, const std::string& location) {
  const std::string where = "external_data location " + Quote(location);
  if (location.empty()) return Corrupt(where + " is empty");
  if (location.find('\0') != std::string::npos) return Unsafe(where + " holds a NUL byte");
  if (location[0] == '/' || location[0] == '\\' || (location.size() >= 2 && location[1] == ':')) {
    return Unsafe(where + " is an absolute path; it must be relative to the model's folder");
  }
  std::vector<std::string> parts;
  size_t begin = 0;
  while (begin <= location.size()) {
    const size_t end = std::min(location.find_first_of("/\\", begin), location.size());
    std::string part = location.substr(begin, end - begin);
    if (part == "..") return Unsafe(where + " has '..': it would leave the model's folder");
    if (!part.empty() && part != ".") parts.push_back(std::move(part));
    begin = end + 1;
  }
  if (parts.empty()) return Corrupt(where + " names no file");
  fs::path p = dir;
  struct stat st {};
  for (size_t i = 0; i < parts.size(); ++i) {
    p /= parts[i];
    if (::lstat(p.c_str(), &st) != 0) {
      return NotFound(where + ": " + Quote(p.string()) + " does not exist");
    }
    if (S_ISLNK(st.st_mode)) {
      return Unsafe(where + ": " + Quote(p.string()) + " is a symbolic link (never followed)");
    }
    const bool last = i + 1 == parts.size();
    if (!last && !S_ISDIR(st.st_mode))
      return Corrupt(where + ": " + Quote(p.string()) + " is not a folder");
  }
  if (!S_ISREG(st.st_mode))
    return Unsafe(where + ": " + Quote(p.string()) + " is not a regular file");
  if (st.st_nlink > 1) {
    return Unsafe(where + ": " + Quote(p.string()) + " has " + Num(st.st_nlink) +
                  " hard links (its other names may be outside the model's folder)");
  }
  return SafePath{p.string(), st.st_dev, st.st_ino};
}

// ---------------------------------------------------------------------------------------------

class OnnxReader final : public OnnxSource {
 public:
  static Result<std::unique_ptr<ModelSource>> Open(const std::string& path,
                                                   const ReadOptions& options) {
    MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path, options.io_mode));
    std::unique_ptr<OnnxReader> r(new OnnxReader());
    r->options_ = options;
    r->dir_ = fs::path(path).parent_path();
    if (r->dir_.empty()) r->dir_ = ".";
    r->files_.push_back(std::move(file));
    Status s = r->Parse();
    if (!s.ok()) return std::move(s).WithContext(path);
    return std::unique_ptr<ModelSource>(std::move(r));
  }

  std::string_view format() const override { return "onnx"; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  const GraphInfo& graph_info() const override { return graph_; }
  const std::string& graph_proto() const override { return skeleton_; }
  std::vector<std::string> notes() const override { return notes_; }

  ModelFiles files() const override {
    ModelFiles out;
    for (const auto& f : files_) out.files.push_back(f->path());
    return out;
  }

  Result<TensorView> Load(size_t index) const override {
    if (index >= entries_.size()) return NotFound("tensor #" + Num(index));
    const Entry& e = entries_[index];
    auto data = LoadData(e);
    if (!data) return data.error().WithContext(Where(e));
    return TensorView{e.info, std::move(*data)};
  }

  Status LoadInto(size_t index, std::span<uint8_t> dest) const override {
    if (index >= entries_.size()) return NotFound("tensor #" + Num(index));
    const Entry& e = entries_[index];
    if (e.kind != DataKind::kRaw && e.kind != DataKind::kExternal) {
      return ModelSource::LoadInto(index, dest);
    }
    if (dest.size() != e.info.byte_size) {
      return InvalidArgument(Where(e) + ": destination holds " + Num(dest.size()) +
                             " bytes, tensor has " + Num(e.info.byte_size));
    }
    Status s = files_[e.file]->ReadInto(e.offset, e.length, dest.data());
    if (s.ok()) s = VerifyChecksum(e, dest);
    return s.ok() ? s : std::move(s).WithContext(Where(e));
  }

 private:
  OnnxReader() = default;

  std::string Where(const Entry& e) const {
    return files_[0]->path() + ": initializer " + Quote(e.info.name);
  }

  Result<std::shared_ptr<Buffer>> LoadData(const Entry& e) const {
    switch (e.kind) {
      case DataKind::kNone:
        return Buffer::Allocate(0);
      case DataKind::kTyped: {
        MP_ASSIGN_OR_RETURN(auto out, Buffer::Allocate(e.info.byte_size));
        const size_t width = e.info.dtype == DType::kC64 ? 4 : ElementSize(e.info.dtype);
        uint64_t count = 0;
        MP_RETURN_IF_ERROR(
            DecodeTyped(e.info.dtype, e.runs, out->mutable_data(), out->size() / width, &count));
        if (count * width != out->size()) {
          return Corrupt("typed data holds fewer values than when it was opened");
        }
        return out;
      }
      case DataKind::kRaw:
      case DataKind::kExternal:
        break;
    }
    MP_ASSIGN_OR_RETURN(auto raw, files_[e.file]->Read(e.offset, e.length));
    MP_RETURN_IF_ERROR(VerifyChecksum(e, raw->span()));
    return AlignedFor(e.info.dtype, std::move(raw));
  }

  static Status VerifyChecksum(const Entry& e, std::span<const uint8_t> bytes) {
    if (e.checksum.empty()) return Status::Ok();
    MP_ASSIGN_OR_RETURN(std::string got, Sha1Hex(bytes));
    if (got != e.checksum) {
      return ChecksumMismatch("external_data checksum is SHA-1 " + e.checksum +
                              " but the data hashes to " + got);
    }
    return Status::Ok();
  }

  const uint8_t* Mapping(const InputFile& f) {
    if (f.mode() != IoMode::kMmap || f.size() == 0) return nullptr;
    auto whole = f.Read(0, f.size());
    if (!whole) return nullptr;
    keep_ = std::move(*whole);
    return keep_->data();
  }

  // Walks (or, with dest null, only counts) the values of `runs` into `dest` as `dtype`
  // elements; `count` gets the number of values seen.
  // `capacity` is the number of values `dest` holds.
  Status DecodeTyped(DType dtype, const std::vector<TypedRun>& runs, uint8_t* dest,
                     uint64_t capacity, uint64_t* count) const {
    const InputFile& f = *files_[0];
    const size_t width = dtype == DType::kC64 ? 4 : ElementSize(dtype);
    uint64_t n = 0;
    auto put = [&](uint64_t v) {
      if (dest != nullptr) {
        if (n >= capacity) return Corrupt("typed data holds more values than when it was opened");
        if (dtype == DType::kBool) v = v != 0;
        std::memcpy(dest + n * width, &v, width);
      }
      ++n;
      return Status::Ok();
    };
    for (const TypedRun& run : runs) {
      const uint32_t fixed = FixedWidth(run.field);
      Cursor r(f, mapped_, run.begin, run.end);
      while (r.left() > 0) {
        MP_ASSIGN_OR_RETURN(Field fl, NextField(r));
        if (fl.wire != kLen) {
          MP_RETURN_IF_ERROR(put(fl.value));
          continue;
        }
        Cursor packed(f, mapped_, fl.offset, fl.offset + fl.value);
        MP_RETURN_IF_ERROR(r.Skip(fl.value));
        if (fixed != 0 && fl.value % fixed != 0) {
          return Corrupt(std::string(FieldName(run.field)) + " at byte " + Num(fl.start) + " has " +
                         Num(fl.value) + " bytes, not a multiple of " + Num(fixed));
        }
        while (packed.left() > 0) {
          MP_ASSIGN_OR_RETURN(uint64_t v, fixed != 0 ? packed.Fixed(fixed) : packed.Varint());
          MP_RETURN_IF_ERROR(put(v));
        }
      }
    }
    *count = n;
    return Status::Ok();
  }

  Status Parse() {
    const InputFile& f = *files_[0];
    mapped_ = Mapping(f);
    Cursor c(f, mapped_, 0, f.size());
    bool seen_graph = false;
    while (c.left() > 0) {
      MP_ASSIGN_OR_RETURN(Field fl, NextField(c));
      if (fl.number == kModelGraph) {
        MP_RETURN_IF_ERROR(ExpectWire(fl, kLen, "graph"));
        if (seen_graph) return Corrupt("the model has two graph fields (7)");
        seen_graph = true;
        c.set_end(fl.offset + fl.value);
        MP_RETURN_IF_ERROR(WalkGraph(c));
        c.set_end(f.size());
        model_pieces_.push_back({{0, 0}, 0});
        continue;
      }
      if (fl.wire == kLen) MP_RETURN_IF_ERROR(c.Skip(fl.value));
      AddPiece(&model_pieces_, fl.start, c.pos());
    }
    if (!seen_graph) return Corrupt("the model has no graph (ModelProto field 7)");
    // The graph for libprotobuf: the model with its initializers' data left out.
    if (EmittedSize([](size_t) { return uint64_t{0}; }) > INT_MAX) {
      return LimitExceeded("the graph without its initializers' data is over 2 GiB");
    }
    StringSink sink(&skeleton_);
    MP_RETURN_IF_ERROR(Emit(
        sink, [](size_t) { return uint64_t{0}; }, [](size_t, Sink&) { return Status::Ok(); }));
    return ParseGraphInfo(skeleton_);
  }

  // ---- Re-emitting the model: its bytes as read, with each initializer's data fields
  // supplied by the caller (none for the graph libprotobuf parses; raw_data or external_data
  // for a rewrite). `tail(i)` is the size of initializer i's data fields, `put` writes them.
  using TailSize = std::function<uint64_t(size_t)>;
  using PutTail = std::function<Status(size_t, Sink&)>;

  uint64_t TensorSize(size_t i, const TailSize& tail) const {
    uint64_t n = tail(i);
    for (const Range& r : entries_[i].head) n += r.end - r.begin;
    return n;
  }

  uint64_t GraphSize(const TailSize& tail) const {
    uint64_t n = 0;
    for (const Piece& p : graph_pieces_) {
      if (p.slot < 0) {
        n += p.range.end - p.range.begin;
      } else {
        const uint64_t t = TensorSize(static_cast<size_t>(p.slot), tail);
        n += LenPrefix(kGraphInitializer, t).size() + t;
      }
    }
    return n;
  }

  uint64_t EmittedSize(const TailSize& tail) const {
    uint64_t n = 0;
    for (const Piece& p : model_pieces_) {
      if (p.slot < 0) {
        n += p.range.end - p.range.begin;
      } else {
        const uint64_t g = GraphSize(tail);
        n += LenPrefix(kModelGraph, g).size() + g;
      }
    }
    return n;
  }

  Status CopyRange(const Range& r, Sink& out) const {
    constexpr uint64_t kChunk = 8 << 20;  // bounds memory in pread mode
    for (uint64_t at = r.begin; at < r.end; at += kChunk) {
      MP_ASSIGN_OR_RETURN(auto bytes, files_[0]->Read(at, std::min(kChunk, r.end - at)));
      MP_RETURN_IF_ERROR(out.Put(bytes->span()));
    }
    return Status::Ok();
  }

  Status Emit(Sink& out, const TailSize& tail, const PutTail& put) const {
    for (const Piece& p : model_pieces_) {
      if (p.slot < 0) {
        MP_RETURN_IF_ERROR(CopyRange(p.range, out));
        continue;
      }
      MP_RETURN_IF_ERROR(out.Put(LenPrefix(kModelGraph, GraphSize(tail))));
      for (const Piece& g : graph_pieces_) {
        if (g.slot < 0) {
          MP_RETURN_IF_ERROR(CopyRange(g.range, out));
          continue;
        }
        const size_t i = static_cast<size_t>(g.slot);
        MP_RETURN_IF_ERROR(out.Put(LenPrefix(kGraphInitializer, TensorSize(i, tail))));
        for (const Range& r : entries_[i].head) MP_RETURN_IF_ERROR(CopyRange(r, out));
        MP_RETURN_IF_ERROR(put(i, out));
      }
    }
    return Status::Ok();
  }

 public:
  Result<RewriteReport> Rewrite(const std::string& out,
                                const RewriteOptions& options) const override {
    auto report = RewriteModel(out, options);
    if (!report) return report.error().WithContext(out);
    return report;
  }

 private:
  // Which model and tensor supply each initializer's values: this model's own, or a
  // replacement from `weights` matched by name.
  using Supplier = std::pair<const ModelSource*, size_t>;

  Status MatchWeights(const ModelSource& weights, bool allow_unused, std::vector<Supplier>* from,
                      RewriteReport* report) const {
    std::map<std::string, size_t> by_name;
    for (size_t j = 0; j < weights.tensors().size(); ++j) by_name[weights.tensors()[j].name] = j;
    MP_ASSIGN_OR_RETURN(const Json aliases, AliasesOf(weights));
    for (const auto& [alias, target] : aliases.items()) {
      if (!target.is_string()) continue;
      auto it = by_name.find(target.get<std::string>());
      if (it != by_name.end()) by_name.emplace(alias, it->second);
    }
    std::vector<bool> used(weights.tensors().size(), false);
    for (size_t i = 0; i < entries_.size(); ++i) {
      const TensorInfo& mine = entries_[i].info;
      auto it = by_name.find(mine.name);
      if (it == by_name.end()) continue;
      const TensorInfo& theirs = weights.tensors()[it->second];
      if (theirs.dtype != mine.dtype || !(theirs.shape == mine.shape)) {
        return InvalidArgument("initializer " + Quote(mine.name) + " is " +
                               std::string(DTypeName(mine.dtype)) + " " + mine.shape.ToString() +
                               " but the new weights give " + std::string(DTypeName(theirs.dtype)) +
                               " " + theirs.shape.ToString());
      }
      (*from)[i] = {&weights, it->second};
      used[it->second] = true;
      report->replaced.push_back(mine.name);
    }
    for (size_t j = 0; j < used.size(); ++j) {
      if (!used[j]) report->unused.push_back(weights.tensors()[j].name);
    }
    if (report->replaced.empty()) {
      return NotFound("none of the " + Num(weights.tensors().size()) +
                      " new weights has the name of an initializer of the model");
    }
    if (!report->unused.empty() && !allow_unused) {
      std::string names;
      for (size_t j = 0; j < report->unused.size() && j < 3; ++j) {
        names += (j ? ", " : "") + Quote(report->unused[j]);
      }
      if (report->unused.size() > 3) names += ", ...";
      return NotFound(Num(report->unused.size()) +
                      " new weight(s) match no initializer of the model (" + names +
                      "); allow them to be left out with --allow-unused");
    }
    return Status::Ok();
  }

  Result<RewriteReport> RewriteModel(const std::string& out, const RewriteOptions& opt) const {
    if (opt.write.shard_size != 0) return InvalidArgument("ONNX models are not written in shards");
    if (nested_external_ > 0) {
      return Unsupported(Num(nested_external_) +
                         " tensor(s) inside nodes or sparse initializers keep their data in " +
                         "external files; rewriting such a model is not supported");
    }
    const size_t n = entries_.size();
    RewriteReport report;
    std::vector<Supplier> from(n);
    for (size_t i = 0; i < n; ++i) from[i] = {this, i};
    if (opt.weights != nullptr) {
      MP_RETURN_IF_ERROR(MatchWeights(*opt.weights, opt.allow_unused_weights, &from, &report));
    }

    const fs::path out_path(out);
    const std::string data_name =
        opt.data_file.empty() ? out_path.filename().string() + ".data" : opt.data_file;
    MP_RETURN_IF_ERROR(CheckDataFileName(data_name, out_path.filename().string()));
    const std::string data_path = (out_path.parent_path() / data_name).string();

    // Where each tensor goes: an offset in the data file, or inline (-1).
    std::vector<int64_t> offset(n, -1);
    std::vector<std::string> external_fields(n);
    uint64_t data_size = 0, total = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint64_t bytes = entries_[i].info.byte_size;
      total += bytes;
      const bool external =
          bytes > 0 &&
          (opt.placement == Placement::kExternal ? bytes >= opt.size_threshold
           : opt.placement == Placement::kKeep   ? entries_[i].kind == DataKind::kExternal
                                                 : false);
      if (!external) {
        ++report.inline_tensors;
        report.inline_bytes += bytes;
        continue;
      }
      data_size = RoundUp(data_size, bytes >= kPageAlignFrom ? kPageAlign : kExternalAlign);
      offset[i] = static_cast<int64_t>(data_size);
      AppendExternalEntry(&external_fields[i], "location", data_name);
      AppendExternalEntry(&external_fields[i], "offset", Num(data_size));
      AppendExternalEntry(&external_fields[i], "length", Num(bytes));
      AppendVarint(&external_fields[i], (kDataLocation << 3) | kVarint);
      AppendVarint(&external_fields[i], 1);
      data_size += bytes;
      ++report.external_tensors;
      report.external_bytes += bytes;
    }
    const TailSize tail = [&](size_t i) -> uint64_t {
      if (offset[i] >= 0) return external_fields[i].size();
      const uint64_t bytes = entries_[i].info.byte_size;
      return LenPrefix(kRawData, bytes).size() + bytes;
    };
    report.model_bytes = EmittedSize(tail);
    if (report.model_bytes > INT_MAX) {
      return InvalidArgument("the model would be " + Num(report.model_bytes) +
                             " bytes, over protobuf's 2 GiB limit for one message; put its "
                             "weights in an external data file (--external-data)");
    }
    std::error_code ec;
    if (opt.write.no_overwrite) {
      if (fs::exists(fs::symlink_status(out, ec))) return AlreadyExists(out + ": exists");
      if (opt.write_data && report.external_tensors > 0 &&
          fs::exists(fs::symlink_status(data_path, ec))) {
        return AlreadyExists(data_path + ": exists");
      }
    }

    WriteProgress progress{&opt.write.progress, n, total};
    auto load = [&](size_t i) -> Result<TensorView> {
      auto view = from[i].first->Load(from[i].second);
      if (!view) return view.error().WithContext("initializer " + Quote(entries_[i].info.name));
      if (view->data->size() != entries_[i].info.byte_size) {
        return Internal("initializer " + Quote(entries_[i].info.name) + " loaded " +
                        Num(view->data->size()) + " bytes");
      }
      return view;
    };
    std::unique_ptr<AtomicFile> data;
    if (opt.write_data && report.external_tensors > 0) {
      MP_ASSIGN_OR_RETURN(data, AtomicFile::Create(data_path));
      for (size_t i = 0; i < n; ++i) {
        if (offset[i] < 0) continue;
        MP_RETURN_IF_ERROR(
            data->WriteZeros(static_cast<uint64_t>(offset[i]) - data->bytes_written()));
        MP_ASSIGN_OR_RETURN(TensorView view, load(i));
        MP_RETURN_IF_ERROR(data->Write(view.data->data(), view.data->size()));
        progress.Tick(view.data->size());
      }
      report.data_path = data_path;
    }
    MP_ASSIGN_OR_RETURN(auto model, AtomicFile::Create(out));
    FileSink sink(*model);
    MP_RETURN_IF_ERROR(Emit(sink, tail, [&](size_t i, Sink& s) -> Status {
      if (offset[i] >= 0) return s.Put(external_fields[i]);
      MP_ASSIGN_OR_RETURN(TensorView view, load(i));
      MP_RETURN_IF_ERROR(s.Put(LenPrefix(kRawData, view.data->size())));
      MP_RETURN_IF_ERROR(s.Put(view.data->span()));
      progress.Tick(view.data->size());
      return Status::Ok();
    }));
    MP_RETURN_IF_ERROR(sink.Flush());
    if (model->bytes_written() != report.model_bytes) {
      return Internal("wrote " + Num(model->bytes_written()) + " bytes of a " +
                      Num(report.model_bytes) + "-byte model");
    }
    if (data) MP_RETURN_IF_ERROR(data->Commit(opt.write.durable));
    MP_RETURN_IF_ERROR(model->Commit(opt.write.durable));
    return report;
  }

  static void AddPiece(std::vector<Piece>* pieces, uint64_t begin, uint64_t end) {
    if (!pieces->empty() && pieces->back().slot < 0 && pieces->back().range.end == begin) {
      pieces->back().range.end = end;
    } else {
      pieces->push_back({{begin, end}, -1});
    }
  }

  Status WalkGraph(Cursor& c) {
    while (c.left() > 0) {
      MP_ASSIGN_OR_RETURN(Field fl, NextField(c));
      if (fl.number == kGraphInitializer) {
        MP_RETURN_IF_ERROR(ExpectWire(fl, kLen, "initializer"));
        if (entries_.size() >= options_.max_tensors) {
          return LimitExceeded("more initializers than the limit of " + Num(options_.max_tensors));
        }
        const uint64_t end = c.end();
        c.set_end(fl.offset + fl.value);
        RawTensor raw;
        Status s = WalkTensor(c, &raw);
        if (raw.name.empty()) raw.name = NameOf(fl.offset, fl.offset + fl.value);
        const std::string name = raw.name.empty() ? "#" + Num(entries_.size()) : Quote(raw.name);
        if (s.ok()) s = AddEntry(std::move(raw));
        if (!s.ok()) return std::move(s).WithContext("initializer " + name);
        c.set_end(end);
        graph_pieces_.push_back({{0, 0}, static_cast<int64_t>(entries_.size() - 1)});
        continue;
      }
      if (fl.number == kGraphSparseInitializer && fl.wire == kLen) ++sparse_;
      if (fl.wire == kLen) MP_RETURN_IF_ERROR(c.Skip(fl.value));
      AddPiece(&graph_pieces_, fl.start, c.pos());
    }
    return Status::Ok();
  }

  // The name of the TensorProto at [begin, end), best effort: errors name the tensor even when
  // they are found before its name field (writers put dims and data_type first).
  std::string NameOf(uint64_t begin, uint64_t end) const {
    Cursor c(*files_[0], mapped_, begin, end);
    std::string name;
    while (c.left() > 0) {
      auto fl = NextField(c);
      if (!fl) break;
      if (fl->wire != kLen) continue;
      if (fl->number == kName && fl->value <= options_.max_name_bytes) {
        auto s = c.String(fl->value);
        if (!s) break;
        name = std::move(*s);
      } else if (!c.Skip(fl->value).ok()) {
        break;
      }
    }
    return name;
  }

  // Reads one TensorProto into `t`; `t->head` gets the ranges of its fields other than data.
  Status WalkTensor(Cursor& c, RawTensor* t) {
    while (c.left() > 0) {
      MP_ASSIGN_OR_RETURN(Field fl, NextField(c));
      bool keep = true;
      switch (fl.number) {
        case kDims:
          if (fl.wire == kLen) {
            Cursor packed(*files_[0], mapped_, fl.offset, fl.offset + fl.value);
            while (packed.left() > 0) {
              MP_ASSIGN_OR_RETURN(uint64_t d, packed.Varint());
              MP_RETURN_IF_ERROR(AddDim(t, d));
            }
          } else {
            MP_RETURN_IF_ERROR(ExpectWire(fl, kVarint, "dims"));
            MP_RETURN_IF_ERROR(AddDim(t, fl.value));
          }
          break;
        case kDataType:
          MP_RETURN_IF_ERROR(ExpectWire(fl, kVarint, "data_type"));
          t->data_type = static_cast<int32_t>(fl.value);
          break;
        case kSegment:
          return Unsupported("segmented tensors (TensorProto.segment) are not supported");
        case kFloatData:
        case kInt32Data:
        case kInt64Data:
        case kDoubleData:
        case kUint64Data: {
          const uint32_t fixed = FixedWidth(fl.number);
          const uint8_t unpacked = fixed == 4 ? kFixed32 : fixed == 8 ? kFixed64 : kVarint;
          if (fl.wire != kLen) MP_RETURN_IF_ERROR(ExpectWire(fl, unpacked, FieldName(fl.number)));
          keep = false;
          break;
        }
        case kStringData:
          MP_RETURN_IF_ERROR(ExpectWire(fl, kLen, "string_data"));
          t->has_strings = true;
          keep = false;
          break;
        case kName: {
          MP_RETURN_IF_ERROR(ExpectWire(fl, kLen, "name"));
          if (fl.value > options_.max_name_bytes) {
            return LimitExceeded("name of " + Num(fl.value) + " bytes is over the limit of " +
                                 Num(options_.max_name_bytes));
          }
          Cursor s(*files_[0], mapped_, fl.offset, fl.offset + fl.value);
          MP_ASSIGN_OR_RETURN(t->name, s.String(fl.value));
          break;
        }
        case kRawData:
          MP_RETURN_IF_ERROR(ExpectWire(fl, kLen, "raw_data"));
          t->raw = {fl.offset, fl.value};  // a repeated singular field: the last one wins
          keep = false;
          break;
        case kExternalData: {
          MP_RETURN_IF_ERROR(ExpectWire(fl, kLen, "external_data"));
          Cursor entry(*files_[0], mapped_, fl.offset, fl.offset + fl.value);
          MP_RETURN_IF_ERROR(ReadKeyValue(entry, t));
          keep = false;
          break;
        }
        case kDataLocation:
          MP_RETURN_IF_ERROR(ExpectWire(fl, kVarint, "data_location"));
          t->data_location = static_cast<int64_t>(fl.value);
          keep = false;
          break;
        default:
          break;
      }
      if (fl.wire == kLen) MP_RETURN_IF_ERROR(c.Skip(fl.value));
      const bool typed = fl.number == kFloatData || fl.number == kInt32Data ||
                         fl.number == kInt64Data || fl.number == kDoubleData ||
                         fl.number == kUint64Data;
      if (typed) {
        if (!t->runs.empty() && t->runs.back().field == fl.number &&
            t->runs.back().end == fl.start) {
          t->runs.back().end = c.pos();
        } else {
          if (t->runs.size() >= kMaxTypedRuns) {
            return LimitExceeded("typed data is split into more than " + Num(kMaxTypedRuns) +
                                 " pieces");
          }
          t->runs.push_back({fl.number, fl.start, c.pos()});
        }
      }
      if (keep) AddRange(&t->head, fl.start, c.pos());
      if (t->head.size() > kMaxTypedRuns) {
        return LimitExceeded("the tensor's fields are split into more than " + Num(kMaxTypedRuns) +
                             " pieces");
      }
    }
    return Status::Ok();
  }

  Status AddDim(RawTensor* t, uint64_t d) const {
    if (d > static_cast<uint64_t>(INT64_MAX)) {
      return Corrupt("dims holds a negative dimension " + std::to_string(static_cast<int64_t>(d)));
    }
    if (t->dims.size() >= options_.max_rank) {
      return LimitExceeded("rank is over the limit of " + Num(options_.max_rank));
    }
    t->dims.push_back(d);
    return Status::Ok();
  }

  Status ReadKeyValue(Cursor& c, RawTensor* t) const {
    if (t->external.size() >= kMaxExternalEntries) {
      return LimitExceeded("external_data has more than " + Num(kMaxExternalEntries) + " entries");
    }
    std::string key, value;
    while (c.left() > 0) {
      MP_ASSIGN_OR_RETURN(Field fl, NextField(c));
      if (fl.wire == kLen && (fl.number == 1 || fl.number == 2)) {
        if (fl.value > options_.max_name_bytes) {
          return LimitExceeded("external_data entry of " + Num(fl.value) +
                               " bytes is over the limit of " + Num(options_.max_name_bytes));
        }
        MP_ASSIGN_OR_RETURN(std::string s, c.String(fl.value));
        (fl.number == 1 ? key : value) = std::move(s);
      } else if (fl.wire == kLen) {
        MP_RETURN_IF_ERROR(c.Skip(fl.value));
      }
    }
    t->external.emplace_back(std::move(key), std::move(value));
    return Status::Ok();
  }

  Status AddEntry(RawTensor t) {
    if (t.name.empty()) return Corrupt("initializer has no name");
    if (!names_.insert(t.name).second) return Corrupt("a second initializer has this name");
    if (t.has_strings || t.data_type == 8) {
      return Unsupported("STRING tensors have no modelport dtype");
    }
    MP_ASSIGN_OR_RETURN(const OnnxType* type, TypeOf(t.data_type));
    Entry e;
    MP_ASSIGN_OR_RETURN(e.info, TensorInfo::Make(t.name, *type->dtype, Shape(std::move(t.dims))));
    e.head = std::move(t.head);
    const uint64_t bytes = e.info.byte_size;
    if (t.data_location != 0 && t.data_location != 1) {
      return Corrupt("data_location " + std::to_string(t.data_location) +
                     " is neither DEFAULT (0) nor EXTERNAL (1)");
    }
    if (t.data_location == 1) {
      if (t.raw || !t.runs.empty()) {
        return Corrupt("data_location is EXTERNAL but the tensor also holds data inline");
      }
      MP_RETURN_IF_ERROR(ResolveExternal(t.external, &e));
    } else if (!t.external.empty()) {
      return Corrupt("external_data is set but data_location is not EXTERNAL (1)");
    } else if (t.raw) {
      if (!t.runs.empty()) {
        return Corrupt("raw_data and " + std::string(FieldName(t.runs[0].field)) + " are both set");
      }
      if (t.raw->second != bytes) {
        return Corrupt("raw_data is " + Num(t.raw->second) + " bytes but " +
                       std::string(DTypeName(e.info.dtype)) + " " + e.info.shape.ToString() +
                       " needs " + Num(bytes));
      }
      e.kind = DataKind::kRaw;
      e.offset = t.raw->first;
      e.length = t.raw->second;
    } else if (!t.runs.empty()) {
      for (const TypedRun& run : t.runs) {
        if (run.field != type->field) {
          return Corrupt(std::string(FieldName(run.field)) + " cannot hold " +
                         std::string(type->name) + " values (the spec puts them in " +
                         std::string(FieldName(type->field)) + ")");
        }
      }
      uint64_t count = 0;
      MP_RETURN_IF_ERROR(DecodeTyped(e.info.dtype, t.runs, nullptr, 0, &count));
      MP_ASSIGN_OR_RETURN(uint64_t want, e.info.shape.NumElements());
      if (e.info.dtype == DType::kC64) want *= 2;  // real and imaginary parts
      if (count != want) {
        return Corrupt(std::string(FieldName(type->field)) + " holds " + Num(count) +
                       " values but " + e.info.shape.ToString() + " needs " + Num(want));
      }
      e.kind = DataKind::kTyped;
      e.runs = std::move(t.runs);
    } else if (bytes != 0) {
      return Corrupt("the tensor has no data (no raw_data, typed field or external_data) for " +
                     e.info.shape.ToString());
    }
    infos_.push_back(e.info);
    entries_.push_back(std::move(e));
    return Status::Ok();
  }

  Status ResolveExternal(const std::vector<std::pair<std::string, std::string>>& kv, Entry* e) {
    std::optional<std::string> location, offset, length, checksum;
    for (const auto& [key, value] : kv) {
      std::optional<std::string>* slot = key == "location"   ? &location
                                         : key == "offset"   ? &offset
                                         : key == "length"   ? &length
                                         : key == "checksum" ? &checksum
                                                             : nullptr;
      if (slot == nullptr) continue;  // other keys (basepath) are runtime hints
      if (*slot) return Corrupt("external_data has the key " + Quote(key) + " twice");
      *slot = value;
    }
    if (!location) return Corrupt("data_location is EXTERNAL but external_data has no location");
    MP_ASSIGN_OR_RETURN(e->file, OpenExternal(*location));
    const InputFile& f = *files_[e->file];
    const std::string where =
        "external_data of " + Quote(*location) + " (" + Num(f.size()) + " bytes): ";
    uint64_t off = 0;
    if (offset) {
      MP_ASSIGN_OR_RETURN(off, ParseDecimal(*offset, "offset"));
    }
    if (off > f.size()) return Corrupt(where + "offset " + Num(off) + " is past the end");
    uint64_t len = f.size() - off;
    if (length) {
      MP_ASSIGN_OR_RETURN(len, ParseDecimal(*length, "length"));
    }
    if (len > f.size() - off) {
      return Corrupt(where + "offset " + Num(off) + " + length " + Num(len) + " runs past the end");
    }
    if (len != e->info.byte_size) {
      return Corrupt(where + "length " + Num(len) + " but " +
                     std::string(DTypeName(e->info.dtype)) + " " + e->info.shape.ToString() +
                     " needs " + Num(e->info.byte_size));
    }
    if (checksum) {
      std::string hex = *checksum;
      std::transform(hex.begin(), hex.end(), hex.begin(),
                     [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
      if (hex.size() != 40 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
        return Corrupt("external_data checksum " + Quote(*checksum) + " is not a SHA-1 hex digest");
      }
      e->checksum = std::move(hex);
    }
    e->kind = DataKind::kExternal;
    e->offset = off;
    e->length = len;
    return Status::Ok();
  }

  Result<size_t> OpenExternal(const std::string& location) {
    if (auto it = external_.find(location); it != external_.end()) return it->second;
    if (files_.size() > options_.max_shards) {
      return LimitExceeded("more external data files than the limit of " +
                           Num(options_.max_shards));
    }
    MP_ASSIGN_OR_RETURN(SafePath safe, ResolveLocation(dir_, location));
    MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(safe.path, options_.io_mode));
    // The checks ran on the path; the descriptor opened must be the inode checked (a path
    // swapped for a symlink or another file between the check and the open is refused).
    if (file->device() != static_cast<uint64_t>(safe.dev) ||
        file->inode() != static_cast<uint64_t>(safe.ino)) {
      return Unsafe("external_data location " + Quote(location) +
                    " changed while it was being opened");
    }
    files_.push_back(std::move(file));
    external_[location] = files_.size() - 1;
    return files_.size() - 1;
  }

  Status ParseGraphInfo(const std::string& skeleton) {
    ::onnx::ModelProto m;
    if (!m.ParseFromArray(skeleton.data(), static_cast<int>(skeleton.size()))) {
      return Corrupt("libprotobuf cannot parse the model's graph (malformed or too deeply nested)");
    }
    graph_.ir_version = m.ir_version();
    graph_.producer_name = m.producer_name();
    graph_.producer_version = m.producer_version();
    graph_.graph_name = m.graph().name();
    Json opsets = Json::object();
    for (const auto& op : m.opset_import()) {
      graph_.opsets.emplace_back(op.domain(), op.version());
      opsets[op.domain()] = op.version();
    }
    std::set<std::string> initializers(names_.begin(), names_.end());
    for (const auto& in : m.graph().input()) {
      if (!initializers.count(in.name())) graph_.inputs.push_back(ToValueInfo(in));
    }
    for (const auto& out : m.graph().output()) graph_.outputs.push_back(ToValueInfo(out));
    std::map<std::string, uint64_t> ops;
    for (const auto& node : m.graph().node()) {
      const bool standard = node.domain().empty() || node.domain() == "ai.onnx";
      ++ops[standard ? node.op_type() : node.domain() + "." + node.op_type()];
    }
    graph_.node_count = static_cast<uint64_t>(m.graph().node_size());
    graph_.op_counts.assign(ops.begin(), ops.end());

    metadata_ = Json::object();
    metadata_["onnx.ir_version"] = m.ir_version();
    if (m.has_producer_name()) metadata_["onnx.producer_name"] = m.producer_name();
    if (m.has_producer_version()) metadata_["onnx.producer_version"] = m.producer_version();
    if (m.has_domain()) metadata_["onnx.domain"] = m.domain();
    if (m.has_model_version()) metadata_["onnx.model_version"] = m.model_version();
    if (m.has_doc_string()) metadata_["onnx.doc_string"] = m.doc_string();
    if (m.graph().has_name()) metadata_["onnx.graph_name"] = m.graph().name();
    metadata_["onnx.opset_import"] = std::move(opsets);
    std::set<std::string> seen;
    for (const auto& prop : m.metadata_props()) {
      if (!seen.insert(prop.key()).second) {
        return Corrupt("metadata_props has the key " + Quote(prop.key()) + " twice");
      }
      graph_.metadata_props.emplace_back(prop.key(), prop.value());
      if (metadata_.contains(prop.key())) {
        notes_.push_back("metadata_props key " + Quote(prop.key()) +
                         " is shadowed by the model's own field of that name");
        continue;
      }
      metadata_[prop.key()] = prop.value();
    }
    nested_external_ = CountNestedExternal(m.graph(), /*main=*/true);
    for (const auto& function : m.functions()) {
      for (const auto& node : function.node()) nested_external_ += CountNestedExternal(node);
    }
    if (nested_external_ > 0) {
      notes_.push_back(Num(nested_external_) + " tensor(s) inside nodes or sparse initializers " +
                       "keep their data in external files; modelport does not read them");
    }
    if (sparse_ > 0) {
      notes_.push_back(Num(sparse_) + " sparse initializer(s) are not read (modelport lists " +
                       "dense initializers only)");
    }
    return Status::Ok();
  }

  static bool IsExternal(const ::onnx::TensorProto& t) {
    return t.data_location() == ::onnx::TensorProto::EXTERNAL;
  }
  static uint64_t CountNestedExternal(const ::onnx::SparseTensorProto& t) {
    return uint64_t{IsExternal(t.values())} + uint64_t{IsExternal(t.indices())};
  }
  // Tensors with external data outside the main graph's initializers (which are indexed):
  // subgraph initializers, sparse initializers and tensor-valued node attributes.
  static uint64_t CountNestedExternal(const ::onnx::GraphProto& g, bool main) {
    uint64_t n = 0;
    if (!main) {
      for (const auto& t : g.initializer()) n += IsExternal(t);
    }
    for (const auto& t : g.sparse_initializer()) n += CountNestedExternal(t);
    for (const auto& node : g.node()) n += CountNestedExternal(node);
    return n;
  }
  static uint64_t CountNestedExternal(const ::onnx::NodeProto& node) {
    uint64_t n = 0;
    for (const auto& a : node.attribute()) {
      if (a.has_t()) n += IsExternal(a.t());
      for (const auto& t : a.tensors()) n += IsExternal(t);
      if (a.has_sparse_tensor()) n += CountNestedExternal(a.sparse_tensor());
      for (const auto& t : a.sparse_tensors()) n += CountNestedExternal(t);
      if (a.has_g()) n += CountNestedExternal(a.g(), false);
      for (const auto& g : a.graphs()) n += CountNestedExternal(g, false);
    }
    return n;
  }

  static ValueInfo ToValueInfo(const ::onnx::ValueInfoProto& v) {
    ValueInfo out;
    out.name = v.name();
    const auto& type = v.type();
    switch (type.value_case()) {
      case ::onnx::TypeProto::kTensorType: {
        out.type = ElemTypeName(type.tensor_type().elem_type());
        if (type.tensor_type().has_shape()) {
          out.has_shape = true;
          for (const auto& d : type.tensor_type().shape().dim()) {
            out.dims.push_back(d.has_dim_value()   ? std::to_string(d.dim_value())
                               : d.has_dim_param() ? d.dim_param()
                                                   : "?");
          }
        }
        break;
      }
      case ::onnx::TypeProto::kSequenceType:
        out.type = "sequence";
        break;
      case ::onnx::TypeProto::kMapType:
        out.type = "map";
        break;
      case ::onnx::TypeProto::kOptionalType:
        out.type = "optional";
        break;
      case ::onnx::TypeProto::kSparseTensorType:
        out.type = "sparse_tensor";
        break;
      default:
        out.type = "unknown";
        break;
    }
    return out;
  }

  ReadOptions options_;
  fs::path dir_;
  std::vector<std::shared_ptr<InputFile>> files_;  // [0] the model, then external data files
  std::map<std::string, size_t> external_;         // location -> index into files_
  std::shared_ptr<Buffer> keep_;                   // the model's mapping (mmap mode)
  const uint8_t* mapped_ = nullptr;
  std::vector<Piece> model_pieces_;  // ModelProto fields; slot 0: the graph
  std::vector<Piece> graph_pieces_;  // GraphProto fields; slot i: initializer i
  std::vector<Entry> entries_;
  std::vector<TensorInfo> infos_;
  std::set<std::string> names_;
  uint64_t sparse_ = 0;
  uint64_t nested_external_ = 0;  // tensors in nodes or sparse initializers with external data
  GraphInfo graph_;
  std::string skeleton_;  // the model without its initializers' data, for libprotobuf
  Json metadata_ = Json::object();
  std::vector<std::string> notes_;
};

// ModelProto fields and the wire type each must have.
std::optional<uint8_t> ModelFieldWire(uint64_t number) {
  switch (number) {
    case 1:  // ir_version
    case 5:  // model_version
      return kVarint;
    case 2:   // producer_name
    case 3:   // producer_version
    case 4:   // domain
    case 6:   // doc_string
    case 7:   // graph
    case 8:   // opset_import
    case 14:  // metadata_props
    case 20:  // training_info
    case 25:  // functions
      return kLen;
    default:
      return std::nullopt;
  }
}

}  // namespace

Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options) {
  return OnnxReader::Open(path, options);
}

bool Detect(std::span<const uint8_t> prefix, uint64_t file_size) {
  size_t pos = 0;
  // Returns false when the varint does not end inside the prefix.
  auto varint = [&](uint64_t* v) {
    *v = 0;
    for (size_t i = 0; i < 10 && pos < prefix.size(); ++i) {
      const uint8_t b = prefix[pos++];
      *v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) return true;
    }
    return false;
  };
  uint64_t tag = 0, value = 0;
  // ir_version first: IR versions so far run from 1 to 11.
  if (prefix.empty() || prefix[0] != 0x08) return false;
  pos = 1;
  if (!varint(&value) || value == 0 || value > 64) return false;
  while (pos < prefix.size()) {
    if (!varint(&tag)) return true;  // the prefix ends inside a tag
    const auto wire = ModelFieldWire(tag >> 3);
    if (!wire || *wire != (tag & 7)) return false;
    if (!varint(&value)) return true;
    if (*wire == kLen) {
      if (value > file_size - std::min<uint64_t>(pos, file_size)) return false;
      if (value >= prefix.size() - pos) return true;
      pos += value;
    }
  }
  return true;
}

Json GraphInfoJson(const GraphInfo& info) {
  auto values = [](const std::vector<ValueInfo>& list) {
    Json out = Json::array();
    for (const ValueInfo& v : list) {
      Json item = {{"name", v.name}, {"type", v.type}};
      item["shape"] = v.has_shape ? Json(v.dims) : Json(nullptr);
      out.push_back(std::move(item));
    }
    return out;
  };
  Json doc = Json::object();
  doc["ir_version"] = info.ir_version;
  doc["producer_name"] = info.producer_name;
  doc["producer_version"] = info.producer_version;
  doc["graph_name"] = info.graph_name;
  Json opsets = Json::array();
  for (const auto& [domain, version] : info.opsets) {
    opsets.push_back({{"domain", domain}, {"version", version}});
  }
  doc["opset_import"] = std::move(opsets);
  doc["inputs"] = values(info.inputs);
  doc["outputs"] = values(info.outputs);
  doc["node_count"] = info.node_count;
  Json ops = Json::object();
  for (const auto& [op, n] : info.op_counts) ops[op] = n;
  doc["op_counts"] = std::move(ops);
  Json props = Json::object();
  for (const auto& [k, v] : info.metadata_props) props[k] = v;
  doc["metadata_props"] = std::move(props);
  return doc;
}

}  // namespace mp::onnx
