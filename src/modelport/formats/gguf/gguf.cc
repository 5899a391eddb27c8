#include "modelport/formats/gguf/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <regex>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "modelport/core/file.h"
#include "modelport/core/json.h"

namespace mp::gguf {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr std::string_view kAlignmentKey = "general.alignment";
constexpr std::string_view kArchitectureKey = "general.architecture";
constexpr std::string_view kNameKey = "general.name";
constexpr std::string_view kSplitNo = "split.no";
constexpr std::string_view kSplitCount = "split.count";
constexpr std::string_view kSplitTensors = "split.tensors.count";
constexpr std::string_view kDefaultArchitecture = "unknown";
// Smallest encodings, used to refuse counts that cannot fit in the bytes left before any
// allocation: a kv is a key length (8), a type (4) and at least one value byte; a tensor info
// is a name length (8), n_dims (4), a type (4) and an offset (8).
constexpr uint64_t kMinKvBytes = 13;
constexpr uint64_t kMinTensorInfoBytes = 24;
constexpr size_t kWindowBytes = 1 << 20;

// Built by appending: g++ 12 at -O3 misreads `"'" + std::string(s)` (a false -Wrestrict).
std::string Quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.append(1, '\'').append(s).append(1, '\'');
  return out;
}

// ggml_type ids (ggml.h) and the DType each maps to.
struct GgmlType {
  uint32_t id;
  DType dtype;
};
constexpr GgmlType kGgmlTypes[] = {
    {0, DType::kF32},   {1, DType::kF16},   {2, DType::kQ4_0},  {3, DType::kQ4_1},
    {6, DType::kQ5_0},  {7, DType::kQ5_1},  {8, DType::kQ8_0},  {10, DType::kQ2_K},
    {11, DType::kQ3_K}, {12, DType::kQ4_K}, {13, DType::kQ5_K}, {14, DType::kQ6_K},
    {15, DType::kQ8_K}, {24, DType::kI8},   {25, DType::kI16},  {26, DType::kI32},
    {27, DType::kI64},  {28, DType::kF64},  {30, DType::kBF16},
};
// ggml types that exist (or existed) but modelport does not carry.
constexpr std::pair<uint32_t, std::string_view> kOtherGgmlTypes[] = {
    {4, "Q4_2 (removed from ggml)"},
    {5, "Q4_3 (removed from ggml)"},
    {9, "Q8_1"},
    {16, "IQ2_XXS"},
    {17, "IQ2_XS"},
    {18, "IQ3_XXS"},
    {19, "IQ1_S"},
    {20, "IQ4_NL"},
    {21, "IQ3_S"},
    {22, "IQ2_S"},
    {23, "IQ4_XS"},
    {29, "IQ1_M"},
    {31, "Q4_0_4_4"},
    {32, "Q4_0_4_8"},
    {33, "Q4_0_8_8"},
    {34, "TQ1_0"},
    {35, "TQ2_0"},
    {36, "IQ4_NL_4_4"},
    {37, "IQ4_NL_4_8"},
    {38, "IQ4_NL_8_8"},
    {39, "MXFP4"},
};

uint32_t FixedSize(ValueType t) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      return 1;
    case ValueType::kU16:
    case ValueType::kI16:
      return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
      return 8;
    default:
      return 0;
  }
}

bool KnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kF64); }

// The GGUF type of a metadata value: for arrays the element type, and for arrays of arrays the
// type of each element (inner arrays may differ in element type).
struct TypeNode {
  ValueType type = ValueType::kString;
  ValueType elem = ValueType::kU8;
  std::vector<TypeNode> items;
};

std::string TypeText(const TypeNode& node) {
  if (node.type != ValueType::kArray) return std::string(ValueTypeName(node.type));
  if (node.elem != ValueType::kArray) return "[" + std::string(ValueTypeName(node.elem)) + "]";
  if (node.items.empty()) return "[array]";
  return "[" + TypeText(node.items.front()) + "]";
}

// ---------------------------------------------------------------------------------------------
// Reading

// Sequential little-endian reads from a file through a window, so the header is parsed the same
// way from a mapping or with pread, and nothing is allocated before its length is checked
// against the bytes left in the file.
class Cursor {
 public:
  /// `max_header_bytes` caps how far into the file the header may reach, which bounds the
  /// memory its metadata can take.
  Cursor(const InputFile& file, uint64_t max_header_bytes)
      : file_(file), limit_(max_header_bytes) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return file_.size() - pos_; }

  /// LimitExceeded if `n` more bytes (already known to be in the file) would take the header
  /// past the limit. Call before allocating for them.
  Status CheckLimit(uint64_t n, std::string_view what) const {
    if (n > limit_ || pos_ > limit_ - n) {
      return LimitExceeded(std::string(what) + ": the header would exceed the limit of " +
                           std::to_string(limit_) + " bytes (ReadOptions.max_header_bytes)");
    }
    return Status::Ok();
  }

  Status Read(void* dest, uint64_t n, std::string_view what) {
    if (n > remaining()) {
      return Corrupt(std::string(what) + " at offset " + std::to_string(pos_) + " needs " +
                     std::to_string(n) + " bytes but the file ends after " +
                     std::to_string(remaining()));
    }
    MP_RETURN_IF_ERROR(CheckLimit(n, what));
    auto* out = static_cast<uint8_t*>(dest);
    while (n > 0) {
      if (pos_ < window_start_ || pos_ >= window_start_ + window_.size()) {
        const uint64_t take = std::min<uint64_t>(kWindowBytes, file_.size() - pos_);
        window_.resize(static_cast<size_t>(take));
        MP_RETURN_IF_ERROR(file_.ReadInto(pos_, take, window_.data()));
        window_start_ = pos_;
      }
      const uint64_t in_window = window_start_ + window_.size() - pos_;
      const uint64_t k = std::min(n, in_window);
      std::memcpy(out, window_.data() + (pos_ - window_start_), static_cast<size_t>(k));
      out += k;
      pos_ += k;
      n -= k;
    }
    return Status::Ok();
  }

  template <typename T>
  Result<T> Get(std::string_view what) {
    T v;
    MP_RETURN_IF_ERROR(Read(&v, sizeof(T), what));
    return v;
  }

  /// A GGUF string: u64 length, then bytes, which must be UTF-8 and at most `max_len` long.
  Result<std::string> String(std::string_view what, uint64_t max_len) {
    MP_ASSIGN_OR_RETURN(const uint64_t len, Get<uint64_t>(what));
    if (len > remaining()) {
      return Corrupt(std::string(what) + ": length " + std::to_string(len) + " exceeds the " +
                     std::to_string(remaining()) + " bytes left in the file");
    }
    if (len > max_len) {
      return LimitExceeded(std::string(what) + ": length " + std::to_string(len) +
                           " exceeds the limit of " + std::to_string(max_len) + " bytes");
    }
    MP_RETURN_IF_ERROR(CheckLimit(len, what));
    std::string s(static_cast<size_t>(len), '\0');
    MP_RETURN_IF_ERROR(Read(s.data(), len, what));
    if (!IsValidUtf8(s)) return Corrupt(std::string(what) + " is not valid UTF-8");
    return s;
  }

 private:
  const InputFile& file_;
  uint64_t limit_;
  uint64_t pos_ = 0;
  std::vector<uint8_t> window_;
  uint64_t window_start_ = 0;
};

struct ParsedValue {
  Json value;
  TypeNode type;
};

Result<ParsedValue> ParseValue(Cursor& in, ValueType type, int depth, const std::string& what);

Result<Json> ParseScalar(Cursor& in, ValueType type, const std::string& what) {
  switch (type) {
    case ValueType::kU8: {
      MP_ASSIGN_OR_RETURN(const uint8_t v, in.Get<uint8_t>(what));
      return Json(v);
    }
    case ValueType::kI8: {
      MP_ASSIGN_OR_RETURN(const int8_t v, in.Get<int8_t>(what));
      return Json(v);
    }
    case ValueType::kU16: {
      MP_ASSIGN_OR_RETURN(const uint16_t v, in.Get<uint16_t>(what));
      return Json(v);
    }
    case ValueType::kI16: {
      MP_ASSIGN_OR_RETURN(const int16_t v, in.Get<int16_t>(what));
      return Json(v);
    }
    case ValueType::kU32: {
      MP_ASSIGN_OR_RETURN(const uint32_t v, in.Get<uint32_t>(what));
      return Json(v);
    }
    case ValueType::kI32: {
      MP_ASSIGN_OR_RETURN(const int32_t v, in.Get<int32_t>(what));
      return Json(v);
    }
    case ValueType::kU64: {
      MP_ASSIGN_OR_RETURN(const uint64_t v, in.Get<uint64_t>(what));
      return Json(v);
    }
    case ValueType::kI64: {
      MP_ASSIGN_OR_RETURN(const int64_t v, in.Get<int64_t>(what));
      return Json(v);
    }
    case ValueType::kF32: {
      MP_ASSIGN_OR_RETURN(const float v, in.Get<float>(what));
      return Json(static_cast<double>(v));
    }
    case ValueType::kF64: {
      MP_ASSIGN_OR_RETURN(const double v, in.Get<double>(what));
      return Json(v);
    }
    case ValueType::kBool: {
      MP_ASSIGN_OR_RETURN(const uint8_t v, in.Get<uint8_t>(what));
      if (v > 1) return Corrupt(what + ": bool value " + std::to_string(v) + " is not 0 or 1");
      return Json(v == 1);
    }
    case ValueType::kString: {
      // Metadata strings (a 32000-token vocabulary, a chat template) are bounded by the file.
      MP_ASSIGN_OR_RETURN(std::string s, in.String(what, std::numeric_limits<uint64_t>::max()));
      return Json(std::move(s));
    }
    default:
      return Internal(what + ": not a scalar type");
  }
}

Result<ParsedValue> ParseArray(Cursor& in, int depth, const std::string& what) {
  if (depth >= kMaxArrayDepth) {
    return LimitExceeded(what + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
  }
  MP_ASSIGN_OR_RETURN(const uint32_t elem_raw, in.Get<uint32_t>(what + " element type"));
  if (!KnownValueType(elem_raw)) {
    return Corrupt(what + ": unknown array element type " + std::to_string(elem_raw));
  }
  const auto elem = static_cast<ValueType>(elem_raw);
  MP_ASSIGN_OR_RETURN(const uint64_t count, in.Get<uint64_t>(what + " element count"));
  // Strings take at least their 8-byte length, arrays their 12-byte type and count.
  const uint64_t min_size = elem == ValueType::kString  ? 8
                            : elem == ValueType::kArray ? 12
                                                        : FixedSize(elem);
  if (count > in.remaining() / min_size) {
    return Corrupt(what + ": array of " + std::to_string(count) + " " +
                   std::string(ValueTypeName(elem)) + " values cannot fit in the " +
                   std::to_string(in.remaining()) + " bytes left in the file");
  }
  MP_RETURN_IF_ERROR(in.CheckLimit(count * min_size, what));
  ParsedValue out{Json::array(), TypeNode{ValueType::kArray, elem, {}}};
  out.value.get_ref<Json::array_t&>().reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    if (elem == ValueType::kArray) {
      MP_ASSIGN_OR_RETURN(ParsedValue item,
                          ParseArray(in, depth + 1, what + "[" + std::to_string(i) + "]"));
      out.value.push_back(std::move(item.value));
      out.type.items.push_back(std::move(item.type));
    } else {
      MP_ASSIGN_OR_RETURN(Json item, ParseScalar(in, elem, what));
      out.value.push_back(std::move(item));
    }
  }
  return out;
}

Result<ParsedValue> ParseValue(Cursor& in, ValueType type, int depth, const std::string& what) {
  if (type == ValueType::kArray) return ParseArray(in, depth, what);
  MP_ASSIGN_OR_RETURN(Json v, ParseScalar(in, type, what));
  return ParsedValue{std::move(v), TypeNode{type, ValueType::kU8, {}}};
}

struct TensorEntry {
  TensorInfo info;
  uint64_t offset = 0;  // relative to the data section
};

// One parsed .gguf file.
struct ParsedFile {
  std::shared_ptr<InputFile> file;
  uint32_t version = 0;
  uint64_t alignment = kDefaultAlignment;
  Json metadata = Json::object();
  std::vector<std::pair<std::string, TypeNode>> types;
  std::vector<TensorEntry> tensors;
  uint64_t data_start = 0;
};

Result<uint64_t> AlignUp(uint64_t v, uint64_t alignment) {
  MP_ASSIGN_OR_RETURN(const uint64_t bumped, CheckedAdd(v, alignment - 1));
  return bumped / alignment * alignment;
}

Status ParseTensorInfos(Cursor& in, uint64_t n_tensors, const ReadOptions& options,
                        ParsedFile& out) {
  std::unordered_set<std::string> names;
  out.tensors.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const std::string where = "tensor info #" + std::to_string(i);
    MP_ASSIGN_OR_RETURN(std::string name, in.String(where + " name", options.max_name_bytes));
    const std::string tensor = "tensor " + Quote(name);
    if (!names.insert(name).second) return Corrupt("duplicate " + tensor);
    MP_ASSIGN_OR_RETURN(const uint32_t n_dims, in.Get<uint32_t>(tensor + " n_dims"));
    if (n_dims > kMaxDims) {
      return Corrupt(tensor + ": n_dims " + std::to_string(n_dims) + " exceeds the maximum of " +
                     std::to_string(kMaxDims));
    }
    std::vector<uint64_t> dims(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      MP_ASSIGN_OR_RETURN(dims[n_dims - 1 - d], in.Get<uint64_t>(tensor + " dimension"));
      // ggml keeps dimensions as int64_t.
      if (dims[n_dims - 1 - d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Corrupt(tensor + ": dimension " + std::to_string(dims[n_dims - 1 - d]) +
                       " exceeds 2^63 - 1");
      }
    }
    MP_ASSIGN_OR_RETURN(const uint32_t type, in.Get<uint32_t>(tensor + " type"));
    MP_ASSIGN_OR_RETURN(const uint64_t offset, in.Get<uint64_t>(tensor + " offset"));
    Result<DType> dtype = DTypeFromGgml(type);
    if (!dtype) return dtype.status().WithContext(tensor);
    const uint32_t block = Traits(*dtype).block_elems;
    if (block > 1 && (dims.empty() || dims.back() % block != 0)) {
      return Corrupt(tensor + ": innermost dimension " +
                     (dims.empty() ? std::string("(none)") : std::to_string(dims.back())) +
                     " is not a multiple of the " + std::string(DTypeName(*dtype)) +
                     " block size " + std::to_string(block));
    }
    Result<TensorInfo> info = TensorInfo::Make(name, *dtype, Shape(std::move(dims)));
    if (!info) return info.status().WithContext(tensor);
    out.tensors.push_back({std::move(info).value(), offset});
  }
  return Status::Ok();
}

// Offsets: aligned, inside the data section, not overlapping; the data section must reach the
// padded end of the last tensor, as gguf.cpp reads it.
Status CheckLayout(ParsedFile& out) {
  const uint64_t file_size = out.file->size();
  if (out.tensors.empty()) return Status::Ok();
  if (out.data_start > file_size) {
    return Corrupt("the data section would start at " + std::to_string(out.data_start) +
                   ", past the end of the file (" + std::to_string(file_size) + " bytes)");
  }
  const uint64_t data_size = file_size - out.data_start;
  std::vector<size_t> order(out.tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (const TensorEntry& t : out.tensors) {
    const std::string tensor = "tensor " + Quote(t.info.name);
    if (t.offset % out.alignment != 0) {
      return Corrupt(tensor + ": offset " + std::to_string(t.offset) +
                     " is not a multiple of the alignment " + std::to_string(out.alignment));
    }
    Result<uint64_t> end = CheckedAdd(t.offset, t.info.byte_size);
    if (!end || *end > data_size) {
      return Corrupt(tensor + ": data [" + std::to_string(t.offset) + ", +" +
                     std::to_string(t.info.byte_size) + ") runs past the end of the " +
                     std::to_string(data_size) + "-byte data section");
    }
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return out.tensors[a].offset < out.tensors[b].offset;
  });
  uint64_t prev_end = 0;
  const TensorEntry* prev = nullptr;
  for (size_t i : order) {
    const TensorEntry& t = out.tensors[i];
    if (t.info.byte_size == 0) continue;
    if (prev != nullptr && t.offset < prev_end) {
      return Corrupt("tensor " + Quote(t.info.name) + " at offset " + std::to_string(t.offset) +
                     " overlaps tensor " + Quote(prev->info.name) + " (which ends at " +
                     std::to_string(prev_end) + ")");
    }
    prev_end = t.offset + t.info.byte_size;
    prev = &t;
  }
  MP_ASSIGN_OR_RETURN(const uint64_t padded_end, AlignUp(prev_end, out.alignment));
  if (padded_end > data_size) {
    return Corrupt("the data section is " + std::to_string(data_size) +
                   " bytes but the tensors need " + std::to_string(padded_end) +
                   " (the last one padded to the alignment " + std::to_string(out.alignment) + ")");
  }
  return Status::Ok();
}

Result<ParsedFile> ParseFile(const std::string& path, const ReadOptions& options) {
  ParsedFile out;
  MP_ASSIGN_OR_RETURN(out.file, InputFile::Open(path, options.io_mode));
  Cursor in(*out.file, options.max_header_bytes);
  char magic[4];
  MP_RETURN_IF_ERROR(in.Read(magic, 4, "magic"));
  if (std::memcmp(magic, kMagic, 4) != 0) return Corrupt("not a GGUF file (no \"GGUF\" magic)");
  MP_ASSIGN_OR_RETURN(out.version, in.Get<uint32_t>("version"));
  if (out.version != 2 && out.version != 3) {
    if (out.version == 1) {
      return Unsupported("GGUF version 1 (32-bit counts, 2023) is not supported; only 2 and 3");
    }
    const uint32_t swapped = __builtin_bswap32(out.version);
    if ((out.version & 0xFFFF) == 0 && swapped <= 3) {
      return Unsupported("big-endian GGUF (version " + std::to_string(swapped) +
                         ") is not supported");
    }
    return Unsupported("GGUF version " + std::to_string(out.version) +
                       " is not supported; only 2 and 3");
  }
  MP_ASSIGN_OR_RETURN(const uint64_t n_tensors, in.Get<uint64_t>("tensor count"));
  MP_ASSIGN_OR_RETURN(const uint64_t n_kv, in.Get<uint64_t>("metadata count"));
  if (n_tensors > options.max_tensors) {
    return LimitExceeded("tensor count " + std::to_string(n_tensors) + " exceeds the limit of " +
                         std::to_string(options.max_tensors));
  }
  if (n_tensors > in.remaining() / kMinTensorInfoBytes) {
    return Corrupt("tensor count " + std::to_string(n_tensors) + " cannot fit in the " +
                   std::to_string(in.remaining()) + " bytes left in the file");
  }
  if (n_kv > in.remaining() / kMinKvBytes) {
    return Corrupt("metadata count " + std::to_string(n_kv) + " cannot fit in the " +
                   std::to_string(in.remaining()) + " bytes left in the file");
  }
  MP_RETURN_IF_ERROR(in.CheckLimit(n_tensors * kMinTensorInfoBytes, "tensor infos"));
  MP_RETURN_IF_ERROR(in.CheckLimit(n_kv * kMinKvBytes, "metadata"));

  std::unordered_map<std::string, size_t> seen;
  for (uint64_t i = 0; i < n_kv; ++i) {
    MP_ASSIGN_OR_RETURN(std::string key,
                        in.String("metadata key #" + std::to_string(i), options.max_name_bytes));
    const std::string what = "metadata " + Quote(key);
    if (seen.count(key) != 0) return Corrupt("duplicate " + what);
    MP_ASSIGN_OR_RETURN(const uint32_t type, in.Get<uint32_t>(what + " type"));
    if (!KnownValueType(type)) {
      return Corrupt(what + ": unknown value type " + std::to_string(type));
    }
    MP_ASSIGN_OR_RETURN(ParsedValue v, ParseValue(in, static_cast<ValueType>(type), 0, what));
    seen.emplace(key, out.types.size());
    out.metadata[key] = std::move(v.value);
    out.types.emplace_back(std::move(key), std::move(v.type));
  }

  if (auto it = seen.find(std::string(kAlignmentKey)); it != seen.end()) {
    const TypeNode& t = out.types[it->second].second;
    if (t.type != ValueType::kU32) {
      return Corrupt("metadata 'general.alignment' must be u32, not " + TypeText(t));
    }
    const uint64_t a = out.metadata[std::string(kAlignmentKey)].get<uint64_t>();
    if (a == 0 || !std::has_single_bit(a)) {
      return Corrupt("metadata 'general.alignment' " + std::to_string(a) +
                     " is not a non-zero power of two");
    }
    out.alignment = a;
  }

  MP_RETURN_IF_ERROR(ParseTensorInfos(in, n_tensors, options, out));
  MP_ASSIGN_OR_RETURN(out.data_start, AlignUp(in.pos(), out.alignment));
  MP_RETURN_IF_ERROR(CheckLayout(out));
  return out;
}

// The typed value of an integer metadata key, if present with that type.
std::optional<uint64_t> IntKey(const ParsedFile& f, std::string_view key, ValueType type) {
  for (const auto& [k, t] : f.types) {
    if (k == key) {
      if (t.type != type) return std::nullopt;
      const Json& v = f.metadata[std::string(key)];
      if (v.is_number_unsigned()) return v.get<uint64_t>();
      if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<uint64_t>();
      return std::nullopt;
    }
  }
  return std::nullopt;
}

class GgufModel final : public ModelSource {
 public:
  std::string_view format() const override { return "gguf"; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }

  Result<TensorView> Load(size_t index) const override {
    if (index >= infos_.size()) {
      return InvalidArgument("tensor index " + std::to_string(index) + " is out of range (" +
                             std::to_string(infos_.size()) + " tensors)");
    }
    const TensorInfo& info = infos_[index];
    const Location& loc = locations_[index];
    const InputFile& file = *files_[loc.file];
    Result<std::shared_ptr<Buffer>> bytes = file.Read(loc.offset, info.byte_size);
    if (!bytes) return bytes.status().WithContext("tensor " + Quote(info.name));
    // A file with general.alignment 1 may place tensors anywhere.
    MP_ASSIGN_OR_RETURN(std::shared_ptr<Buffer> aligned,
                        AlignedFor(info.dtype, std::move(bytes).value()));
    return TensorView{info, std::move(aligned)};
  }

  Status LoadInto(size_t index, std::span<uint8_t> dest) const override {
    if (index >= infos_.size() || dest.size() != infos_[index].byte_size) {
      return InvalidArgument("LoadInto: bad tensor index or destination size");
    }
    const Location& loc = locations_[index];
    Status s = files_[loc.file]->ReadInto(loc.offset, dest.size(), dest.data());
    if (!s.ok()) return s.WithContext("tensor " + Quote(infos_[index].name));
    return Status::Ok();
  }

  ModelFiles files() const override {
    ModelFiles f;
    for (const auto& file : files_) f.files.push_back(file->path());
    return f;
  }

  const TypeNode* TypeOf(std::string_view key) const {
    auto it = types_.find(std::string(key));
    return it == types_.end() ? nullptr : &it->second;
  }

  struct Location {
    size_t file;
    uint64_t offset;  // absolute, in the file
  };
  std::vector<TensorInfo> infos_;
  std::vector<Location> locations_;
  std::vector<std::shared_ptr<InputFile>> files_;
  Json metadata_ = Json::object();
  std::unordered_map<std::string, TypeNode> types_;
};

bool IsSplitKey(std::string_view key) {
  return key == kSplitNo || key == kSplitCount || key == kSplitTensors;
}

// "dir/name-00002-of-00003.gguf" -> {"dir/name", 2, 3}.
struct SplitName {
  std::string prefix;
  uint32_t no = 0;
  uint32_t count = 0;
};
std::optional<SplitName> ParseSplitName(const std::string& path) {
  static const std::regex kPattern(R"((.*)-(\d{5})-of-(\d{5})\.gguf)");
  std::smatch m;
  if (!std::regex_match(path, m, kPattern)) return std::nullopt;
  SplitName s{m[1].str(), static_cast<uint32_t>(std::stoul(m[2].str())),
              static_cast<uint32_t>(std::stoul(m[3].str()))};
  if (s.no == 0 || s.count == 0 || s.no > s.count) return std::nullopt;
  return s;
}

std::string SplitPath(const std::string& prefix, uint64_t no, uint64_t count) {
  char tail[48];
  std::snprintf(tail, sizeof tail, "-%05llu-of-%05llu.gguf", static_cast<unsigned long long>(no),
                static_cast<unsigned long long>(count));
  return prefix + tail;
}

Status AddFile(GgufModel& model, ParsedFile&& f, std::unordered_set<std::string>& names) {
  const size_t file_index = model.files_.size();
  for (TensorEntry& t : f.tensors) {
    if (!names.insert(t.info.name).second) {
      return Corrupt("tensor " + Quote(t.info.name) + " is also in an earlier split");
    }
    model.locations_.push_back({file_index, f.data_start + t.offset});
    model.infos_.push_back(std::move(t.info));
  }
  model.files_.push_back(std::move(f.file));
  return Status::Ok();
}

Result<std::unique_ptr<ModelSource>> OpenSplits(const SplitName& split,
                                                const ReadOptions& options) {
  if (split.count > options.max_shards) {
    return LimitExceeded(std::to_string(split.count) + " splits exceed the limit of " +
                         std::to_string(options.max_shards));
  }
  auto model = std::make_unique<GgufModel>();
  std::unordered_set<std::string> names;
  uint64_t expected_tensors = 0;
  bool have_expected = false;
  for (uint32_t k = 1; k <= split.count; ++k) {
    const std::string path = SplitPath(split.prefix, k, split.count);
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      return NotFound(path + ": split " + std::to_string(k) + " of " + std::to_string(split.count) +
                      " is missing");
    }
    Result<ParsedFile> parsed = ParseFile(path, options);
    if (!parsed) return parsed.status().WithContext(path);
    const auto no = IntKey(*parsed, kSplitNo, ValueType::kU16);
    const auto count = IntKey(*parsed, kSplitCount, ValueType::kU16);
    if (!no || !count || *no != k - 1 || *count != split.count) {
      return Corrupt(path + ": split.no (u16) and split.count (u16) must be " +
                     std::to_string(k - 1) + " and " + std::to_string(split.count) +
                     " for this file name");
    }
    if (k == 1) {
      if (const auto total = IntKey(*parsed, kSplitTensors, ValueType::kI32)) {
        expected_tensors = *total;
        have_expected = true;
      }
      for (auto& [key, type] : parsed->types) {
        if (IsSplitKey(key)) continue;
        model->metadata_[key] = parsed->metadata[key];
        model->types_.emplace(key, type);
      }
    }
    Status s = AddFile(*model, std::move(parsed).value(), names);
    if (!s.ok()) return s.WithContext(path);
  }
  if (have_expected && expected_tensors != model->infos_.size()) {
    return Corrupt(SplitPath(split.prefix, 1, split.count) + ": split.tensors.count is " +
                   std::to_string(expected_tensors) + " but the splits hold " +
                   std::to_string(model->infos_.size()) + " tensors");
  }
  return std::unique_ptr<ModelSource>(std::move(model));
}

Result<std::string> FindModelInDir(const std::string& dir) {
  std::vector<std::string> firsts, singles;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string p = entry.path().string();
    if (!p.ends_with(".gguf")) continue;
    if (auto s = ParseSplitName(p)) {
      const std::string first = SplitPath(s->prefix, 1, s->count);
      if (std::find(firsts.begin(), firsts.end(), first) == firsts.end()) firsts.push_back(first);
    } else {
      singles.push_back(p);
    }
  }
  if (ec) return IoError(dir + ": cannot list the folder: " + ec.message());
  if (firsts.size() + singles.size() == 1) return firsts.empty() ? singles[0] : firsts[0];
  if (firsts.empty() && singles.empty()) return NotFound(dir + ": no .gguf file in the folder");
  return InvalidArgument(dir + ": the folder holds several GGUF models; name one file");
}

// ---------------------------------------------------------------------------------------------
// Writing

class Bytes {
 public:
  std::vector<uint8_t>& data() { return data_; }
  template <typename T>
  void Put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    data_.insert(data_.end(), p, p + sizeof(T));
  }
  void PutString(std::string_view s) {
    Put<uint64_t>(s.size());
    data_.insert(data_.end(), s.begin(), s.end());
  }

 private:
  std::vector<uint8_t> data_;
};

bool FitsScalar(const Json& v, ValueType t) {
  auto in_range = [&v](int64_t lo, uint64_t hi) {
    if (v.is_number_unsigned()) return v.get<uint64_t>() <= hi;
    if (v.is_number_integer()) {
      const int64_t x = v.get<int64_t>();
      return x >= lo && (x < 0 || static_cast<uint64_t>(x) <= hi);
    }
    return false;
  };
  switch (t) {
    case ValueType::kU8:
      return in_range(0, UINT8_MAX);
    case ValueType::kI8:
      return in_range(INT8_MIN, INT8_MAX);
    case ValueType::kU16:
      return in_range(0, UINT16_MAX);
    case ValueType::kI16:
      return in_range(INT16_MIN, INT16_MAX);
    case ValueType::kU32:
      return in_range(0, UINT32_MAX);
    case ValueType::kI32:
      return in_range(INT32_MIN, INT32_MAX);
    case ValueType::kU64:
      return in_range(0, UINT64_MAX);
    case ValueType::kI64:
      return in_range(INT64_MIN, INT64_MAX);
    case ValueType::kF32:
    case ValueType::kF64:
      return v.is_number();
    case ValueType::kBool:
      return v.is_boolean();
    case ValueType::kString:
      return v.is_string();
    default:
      return false;
  }
}

// True if `v` can be written with type `t` without changing its value.
bool Fits(const Json& v, const TypeNode& t) {
  if (t.type != ValueType::kArray) return FitsScalar(v, t.type);
  if (!v.is_array()) return false;
  if (t.elem == ValueType::kArray) {
    if (t.items.size() != v.size()) return false;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!Fits(v[i], t.items[i])) return false;
    }
    return true;
  }
  for (const Json& item : v) {
    if (!FitsScalar(item, t.elem)) return false;
  }
  return true;
}

bool ExactF32(double d) { return std::isnan(d) || static_cast<double>(static_cast<float>(d)) == d; }

// The GGUF type a JSON value gets when no GGUF type was recorded for it: unsigned integers u32
// (u64 beyond), negative integers i32 (i64 beyond), floats f32 when exact (f64 otherwise),
// arrays of integers i32 when every element fits (as llama.cpp's token types), else i64/u64.
// nullopt: not representable (objects, null, mixed arrays); the writer stores its JSON text.
std::optional<TypeNode> Infer(const Json& v) {
  if (v.is_string()) return TypeNode{ValueType::kString, ValueType::kU8, {}};
  if (v.is_boolean()) return TypeNode{ValueType::kBool, ValueType::kU8, {}};
  if (v.is_number_float()) {
    return TypeNode{
        ExactF32(v.get<double>()) ? ValueType::kF32 : ValueType::kF64, ValueType::kU8, {}};
  }
  if (v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0)) {
    return TypeNode{
        FitsScalar(v, ValueType::kU32) ? ValueType::kU32 : ValueType::kU64, ValueType::kU8, {}};
  }
  if (v.is_number_integer()) {
    return TypeNode{
        FitsScalar(v, ValueType::kI32) ? ValueType::kI32 : ValueType::kI64, ValueType::kU8, {}};
  }
  if (!v.is_array()) return std::nullopt;
  TypeNode node{ValueType::kArray, ValueType::kString, {}};
  if (v.empty()) return node;
  auto all = [&v](auto pred) { return std::all_of(v.begin(), v.end(), pred); };
  if (all([](const Json& x) { return x.is_string(); })) return node;
  if (all([](const Json& x) { return x.is_boolean(); })) {
    node.elem = ValueType::kBool;
    return node;
  }
  if (all([](const Json& x) { return x.is_number_integer(); })) {
    for (ValueType t : {ValueType::kI32, ValueType::kI64, ValueType::kU64}) {
      if (all([t](const Json& x) { return FitsScalar(x, t); })) {
        node.elem = t;
        return node;
      }
    }
    return std::nullopt;
  }
  if (all([](const Json& x) { return x.is_number(); })) {
    node.elem = all([](const Json& x) { return ExactF32(x.get<double>()); }) ? ValueType::kF32
                                                                             : ValueType::kF64;
    return node;
  }
  if (all([](const Json& x) { return x.is_array(); })) {
    node.elem = ValueType::kArray;
    for (const Json& x : v) {
      std::optional<TypeNode> item = Infer(x);
      if (!item) return std::nullopt;
      node.items.push_back(std::move(*item));
    }
    return node;
  }
  return std::nullopt;
}

void PutScalar(Bytes& out, const Json& v, ValueType t) {
  switch (t) {
    case ValueType::kU8:
      out.Put(v.get<uint8_t>());
      break;
    case ValueType::kI8:
      out.Put(v.get<int8_t>());
      break;
    case ValueType::kU16:
      out.Put(v.get<uint16_t>());
      break;
    case ValueType::kI16:
      out.Put(v.get<int16_t>());
      break;
    case ValueType::kU32:
      out.Put(v.get<uint32_t>());
      break;
    case ValueType::kI32:
      out.Put(v.get<int32_t>());
      break;
    case ValueType::kU64:
      out.Put(v.get<uint64_t>());
      break;
    case ValueType::kI64:
      out.Put(v.get<int64_t>());
      break;
    case ValueType::kF32:
      out.Put(static_cast<float>(v.get<double>()));
      break;
    case ValueType::kF64:
      out.Put(v.get<double>());
      break;
    case ValueType::kBool:
      out.Put<uint8_t>(v.get<bool>() ? 1 : 0);
      break;
    case ValueType::kString:
      out.PutString(v.get_ref<const std::string&>());
      break;
    default:
      break;
  }
}

void PutValue(Bytes& out, const Json& v, const TypeNode& t) {
  if (t.type != ValueType::kArray) {
    PutScalar(out, v, t.type);
    return;
  }
  out.Put(static_cast<uint32_t>(t.elem));
  out.Put<uint64_t>(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (t.elem == ValueType::kArray) {
      PutValue(out, v[i], t.items[i]);
    } else {
      PutScalar(out, v[i], t.elem);
    }
  }
}

struct MetaEntry {
  std::string key;
  Json value;
  TypeNode type;
};

// The metadata to write: the source's keys in order (split.* dropped: they describe a layout,
// and the writer sets its own), with general.architecture and general.name first when a
// non-GGUF source lacks them.
Result<std::vector<MetaEntry>> BuildMetadata(const ModelSource& source, const std::string& name) {
  const auto* gguf = dynamic_cast<const GgufModel*>(&source);
  const bool from_gguf = source.format() == "gguf";
  const Json& meta = source.metadata();
  std::vector<MetaEntry> out;
  const bool has_meta = meta.is_object();
  // A GGUF source is copied as it is; models from other formats get the keys runtimes expect.
  if (!from_gguf && (!has_meta || !meta.contains(kArchitectureKey))) {
    out.push_back({std::string(kArchitectureKey), Json(kDefaultArchitecture),
                   TypeNode{ValueType::kString, ValueType::kU8, {}}});
  }
  if (!from_gguf && (!has_meta || !meta.contains(kNameKey))) {
    out.push_back(
        {std::string(kNameKey), Json(name), TypeNode{ValueType::kString, ValueType::kU8, {}}});
  }
  if (!has_meta) return out;
  for (const auto& [key, raw] : meta.items()) {
    if (IsSplitKey(key)) continue;
    if (!IsValidUtf8(key)) return InvalidArgument("metadata key is not valid UTF-8");
    Json value = raw;
    // Other formats (safetensors) keep metadata as strings holding the JSON text of non-string
    // values; such a string becomes its value again.
    if (!from_gguf && value.is_string()) {
      Json parsed = Json::parse(value.get_ref<const std::string&>(), nullptr, false);
      if (!parsed.is_discarded() &&
          (parsed.is_number() || parsed.is_boolean() || parsed.is_array()) && Infer(parsed)) {
        value = std::move(parsed);
      }
    }
    const TypeNode* stored = gguf != nullptr ? gguf->TypeOf(key) : nullptr;
    std::optional<TypeNode> type;
    if (key == kAlignmentKey) {
      type = TypeNode{ValueType::kU32, ValueType::kU8, {}};
      if (!FitsScalar(value, ValueType::kU32) || value.get<uint64_t>() == 0 ||
          !std::has_single_bit(value.get<uint64_t>())) {
        return InvalidArgument("metadata 'general.alignment' " + value.dump() +
                               " is not a u32 non-zero power of two");
      }
    } else if (stored != nullptr && Fits(value, *stored)) {
      type = *stored;
    } else {
      type = Infer(value);
    }
    if (!type) {
      value = Json(value.dump(-1, ' ', false, Json::error_handler_t::replace));
      type = TypeNode{ValueType::kString, ValueType::kU8, {}};
    } else if (value.is_string() && !IsValidUtf8(value.get_ref<const std::string&>())) {
      return InvalidArgument("metadata " + Quote(key) + ": value is not valid UTF-8");
    }
    out.push_back({key, std::move(value), std::move(*type)});
  }
  return out;
}

struct PlannedTensor {
  size_t index;  // in the source
  uint32_t ggml_type;
  uint64_t offset = 0;  // in its file's data section
};

Result<std::vector<PlannedTensor>> PlanTensors(const ModelSource& source) {
  std::vector<PlannedTensor> out;
  const auto& infos = source.tensors();
  for (size_t i = 0; i < infos.size(); ++i) {
    const TensorInfo& t = infos[i];
    const std::string tensor = "tensor " + Quote(t.name);
    const std::optional<uint32_t> type = GgmlTypeOf(t.dtype);
    if (!type) {
      return Unsupported(tensor + ": GGUF has no " + std::string(DTypeName(t.dtype)) +
                         " tensor type");
    }
    if (t.shape.rank() > kMaxDims) {
      return Unsupported(tensor + ": rank " + std::to_string(t.shape.rank()) +
                         " exceeds GGUF's maximum of " + std::to_string(kMaxDims));
    }
    const uint32_t block = Traits(t.dtype).block_elems;
    if (block > 1 && (t.shape.rank() == 0 || t.shape.dims().back() % block != 0)) {
      return InvalidArgument(tensor + ": innermost dimension is not a multiple of the " +
                             std::string(DTypeName(t.dtype)) + " block size " +
                             std::to_string(block));
    }
    if (!IsValidUtf8(t.name)) return InvalidArgument(tensor + ": name is not valid UTF-8");
    out.push_back({i, *type, 0});
  }
  return out;
}

// One output file: its path, metadata and tensors (offsets filled in).
struct PlannedFile {
  std::string path;
  std::vector<MetaEntry> metadata;
  std::vector<PlannedTensor> tensors;
};

Status WriteFile(const ModelSource& source, PlannedFile& plan, uint64_t alignment,
                 const WriteOptions& options, uint64_t& tensors_done, uint64_t& bytes_done,
                 uint64_t tensors_total, uint64_t bytes_total,
                 std::vector<std::unique_ptr<AtomicFile>>& pending) {
  const auto& infos = source.tensors();
  Bytes header;
  header.data().reserve(4096);
  for (char c : kMagic) header.Put<uint8_t>(static_cast<uint8_t>(c));
  header.Put<uint32_t>(3);
  header.Put<uint64_t>(plan.tensors.size());
  header.Put<uint64_t>(plan.metadata.size());
  for (const MetaEntry& e : plan.metadata) {
    header.PutString(e.key);
    header.Put(static_cast<uint32_t>(e.type.type));
    PutValue(header, e.value, e.type);
  }
  uint64_t offset = 0;
  for (PlannedTensor& t : plan.tensors) {
    const TensorInfo& info = infos[t.index];
    header.PutString(info.name);
    header.Put(static_cast<uint32_t>(info.shape.rank()));
    for (size_t d = info.shape.rank(); d-- > 0;) header.Put<uint64_t>(info.shape[d]);
    header.Put(t.ggml_type);
    t.offset = offset;
    header.Put<uint64_t>(offset);
    MP_ASSIGN_OR_RETURN(offset, AlignUp(offset + info.byte_size, alignment));
  }
  MP_ASSIGN_OR_RETURN(const uint64_t header_end, AlignUp(header.data().size(), alignment));
  header.data().resize(static_cast<size_t>(header_end), 0);

  if (options.no_overwrite) {
    std::error_code ec;
    if (fs::exists(fs::symlink_status(plan.path, ec))) {
      return AlreadyExists(plan.path + ": already exists (refusing to overwrite)");
    }
  }
  MP_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(plan.path));
  MP_RETURN_IF_ERROR(file->Write(header.data().data(), header.data().size()));
  for (const PlannedTensor& t : plan.tensors) {
    const TensorInfo& info = infos[t.index];
    Result<TensorView> view = source.Load(t.index);
    if (!view) return view.status();  // sources name the tensor, as the other writers expect
    if (view->data == nullptr || view->data->size() != info.byte_size) {
      return Internal("tensor " + Quote(info.name) + ": loaded " +
                      std::to_string(view->data ? view->data->size() : 0) + " bytes, expected " +
                      std::to_string(info.byte_size));
    }
    MP_RETURN_IF_ERROR(file->Write(view->data->data(), view->data->size()));
    const uint64_t pad = (alignment - info.byte_size % alignment) % alignment;
    MP_RETURN_IF_ERROR(file->WriteZeros(static_cast<size_t>(pad)));
    ++tensors_done;
    bytes_done += info.byte_size;
    if (options.progress) options.progress(tensors_done, tensors_total, bytes_done, bytes_total);
  }
  pending.push_back(std::move(file));
  return Status::Ok();
}

TypeNode U16Type() { return TypeNode{ValueType::kU16, ValueType::kU8, {}}; }

}  // namespace

std::string_view ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kU8:
      return "u8";
    case ValueType::kI8:
      return "i8";
    case ValueType::kU16:
      return "u16";
    case ValueType::kI16:
      return "i16";
    case ValueType::kU32:
      return "u32";
    case ValueType::kI32:
      return "i32";
    case ValueType::kF32:
      return "f32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kU64:
      return "u64";
    case ValueType::kI64:
      return "i64";
    case ValueType::kF64:
      return "f64";
  }
  return "unknown";
}

std::optional<uint32_t> GgmlTypeOf(DType dtype) {
  for (const GgmlType& t : kGgmlTypes) {
    if (t.dtype == dtype) return t.id;
  }
  return std::nullopt;
}

Result<DType> DTypeFromGgml(uint32_t type) {
  for (const GgmlType& t : kGgmlTypes) {
    if (t.id == type) return t.dtype;
  }
  for (const auto& [id, name] : kOtherGgmlTypes) {
    if (id == type) {
      return Unsupported("ggml type " + std::to_string(type) + " (" + std::string(name) +
                         ") is not supported");
    }
  }
  return Corrupt("unknown ggml type " + std::to_string(type));
}

std::optional<std::string> StoredValueType(const ModelSource& source, std::string_view key) {
  const auto* gguf = dynamic_cast<const GgufModel*>(&source);
  if (gguf == nullptr) return std::nullopt;
  const TypeNode* t = gguf->TypeOf(key);
  if (t == nullptr) return std::nullopt;
  return TypeText(*t);
}

bool Detect(std::span<const uint8_t> prefix, uint64_t /*file_size*/) {
  return prefix.size() >= 4 && std::memcmp(prefix.data(), kMagic, 4) == 0;
}

bool DetectDir(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".gguf") return true;
  }
  return false;
}

Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options) {
  std::string file = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    MP_ASSIGN_OR_RETURN(file, FindModelInDir(path));
  }
  if (const std::optional<SplitName> split = ParseSplitName(file)) {
    return OpenSplits(*split, options);
  }
  Result<ParsedFile> parsed = ParseFile(file, options);
  if (!parsed) return parsed.status().WithContext(file);
  if (const auto count = IntKey(*parsed, kSplitCount, ValueType::kU16); count && *count > 1) {
    return Unsupported(file + ": this is one split of a " + std::to_string(*count) +
                       "-file model, but its name does not follow name-0000k-of-0000N.gguf");
  }
  auto model = std::make_unique<GgufModel>();
  model->metadata_ = std::move(parsed->metadata);
  for (auto& [key, type] : parsed->types) model->types_.emplace(key, std::move(type));
  std::unordered_set<std::string> names;
  MP_RETURN_IF_ERROR(AddFile(*model, std::move(parsed).value(), names));
  return std::unique_ptr<ModelSource>(std::move(model));
}

Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options) {
  std::error_code ec;
  const bool to_folder = fs::is_directory(path, ec);
  // Destination stem: "dir/model" for a folder, "dir/name" for "dir/name.gguf".
  std::string stem = to_folder ? (fs::path(path) / "model").string() : path;
  if (!to_folder && stem.ends_with(".gguf")) stem.resize(stem.size() - 5);
  const std::string name = fs::path(stem).filename().string();

  MP_ASSIGN_OR_RETURN(std::vector<MetaEntry> metadata, BuildMetadata(source, name));
  uint64_t alignment = kDefaultAlignment;
  for (const MetaEntry& e : metadata) {
    if (e.key == kAlignmentKey) alignment = e.value.get<uint64_t>();
  }
  MP_ASSIGN_OR_RETURN(std::vector<PlannedTensor> tensors, PlanTensors(source));
  const auto& infos = source.tensors();

  // Greedy split by tensor bytes, in model order.
  std::vector<std::vector<PlannedTensor>> groups(1);
  uint64_t group_bytes = 0;
  for (const PlannedTensor& t : tensors) {
    const uint64_t size = infos[t.index].byte_size;
    if (options.shard_size > 0 && !groups.back().empty() &&
        group_bytes + size > options.shard_size) {
      groups.emplace_back();
      group_bytes = 0;
    }
    groups.back().push_back(t);
    group_bytes += size;
  }

  std::vector<PlannedFile> files;
  if (groups.size() == 1) {
    files.push_back({to_folder ? stem + ".gguf" : path, std::move(metadata), std::move(groups[0])});
  } else {
    if (groups.size() > 99999) {
      return InvalidArgument("splitting into " + std::to_string(groups.size()) +
                             " files exceeds the 99999 a split name can number");
    }
    const uint64_t n = groups.size();
    for (uint64_t k = 0; k < n; ++k) {
      PlannedFile f{SplitPath(stem, k + 1, n), {}, std::move(groups[k])};
      if (k == 0) {
        f.metadata = metadata;
      } else if (alignment != kDefaultAlignment) {
        f.metadata.push_back({std::string(kAlignmentKey), Json(alignment),
                              TypeNode{ValueType::kU32, ValueType::kU8, {}}});
      }
      f.metadata.push_back({std::string(kSplitNo), Json(k), U16Type()});
      f.metadata.push_back({std::string(kSplitCount), Json(n), U16Type()});
      if (k == 0) {
        f.metadata.push_back({std::string(kSplitTensors), Json(tensors.size()),
                              TypeNode{ValueType::kI32, ValueType::kU8, {}}});
      }
      files.push_back(std::move(f));
    }
    if (tensors.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return InvalidArgument("too many tensors for split.tensors.count (i32)");
    }
  }

  uint64_t bytes_total = 0;
  for (const TensorInfo& t : infos) bytes_total += t.byte_size;
  uint64_t tensors_done = 0, bytes_done = 0;
  std::vector<std::unique_ptr<AtomicFile>> pending;
  for (PlannedFile& f : files) {
    MP_RETURN_IF_ERROR(WriteFile(source, f, alignment, options, tensors_done, bytes_done,
                                 infos.size(), bytes_total, pending));
  }
  for (auto& f : pending) MP_RETURN_IF_ERROR(f->Commit(options.durable));
  return Status::Ok();
}

}  // namespace mp::gguf
