#include "modelport/formats/numpy/numpy.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <optional>

#include "modelport/core/file.h"
#include "modelport/formats/zip/zip.h"

namespace mp::numpy {
namespace {

static_assert(std::endian::native == std::endian::little, "modelport assumes a little-endian host");

namespace fs = std::filesystem;

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
constexpr uint64_t kArrayAlign = 64;  // numpy's ARRAY_ALIGN

std::string Quote(std::string_view s) { return zip::QuoteName(s); }
std::string Num(uint64_t v) { return std::to_string(v); }

// numpy's descr for each dtype it shares with modelport.
std::optional<std::string_view> DescrOf(DType d) {
  switch (d) {
    case DType::kBool:
      return "|b1";
    case DType::kU8:
      return "|u1";
    case DType::kI8:
      return "|i1";
    case DType::kI16:
      return "<i2";
    case DType::kU16:
      return "<u2";
    case DType::kF16:
      return "<f2";
    case DType::kI32:
      return "<i4";
    case DType::kU32:
      return "<u4";
    case DType::kF32:
      return "<f4";
    case DType::kF64:
      return "<f8";
    case DType::kI64:
      return "<i8";
    case DType::kU64:
      return "<u8";
    case DType::kC64:
      return "<c8";
    default:
      return std::nullopt;
  }
}

Status NoNumpyDType(DType d) {
  return Unsupported("numpy has no dtype for " + std::string(DTypeName(d)) +
                     " (convert with --dtype f32)");
}

// ---------------------------------------------------------------------------------------------
// The header dict: a strict parser for exactly what numpy writes (its repr of a dict).

struct Descr {
  DType dtype;
  bool big_endian;
};

Result<Descr> ParseDescr(std::string_view s) {
  const std::string shown = "descr " + Quote(s);
  std::string_view rest = s;
  char order = '=';
  if (!rest.empty() && std::string_view("<>|=").find(rest[0]) != std::string_view::npos) {
    order = rest[0];
    rest.remove_prefix(1);
  }
  if (rest.empty()) return Corrupt(shown + " has no type");
  const char kind = rest[0];
  const std::string_view size_text = rest.substr(1);
  if (kind == 'O') {
    return Unsafe(shown + " is an object array: its data is a Python pickle, which modelport " +
                  "never loads");
  }
  if (std::string_view("USaVMm").find(kind) != std::string_view::npos) {
    return Unsupported(shown + ": string, unicode, void and datetime arrays are not supported");
  }
  uint64_t size = 0;
  if (size_text.empty() || size_text.size() > 3) return Corrupt(shown + " is not a numpy dtype");
  for (char c : size_text) {
    if (!std::isdigit(static_cast<unsigned char>(c)))
      return Corrupt(shown + " is not a numpy dtype");
    size = size * 10 + static_cast<uint64_t>(c - '0');
  }
  std::optional<DType> d;
  switch (kind) {
    case 'b':
      if (size == 1) d = DType::kBool;
      break;
    case 'u':
      d = size == 1   ? std::optional(DType::kU8)
          : size == 2 ? std::optional(DType::kU16)
          : size == 4 ? std::optional(DType::kU32)
          : size == 8 ? std::optional(DType::kU64)
                      : std::nullopt;
      break;
    case 'i':
      d = size == 1   ? std::optional(DType::kI8)
          : size == 2 ? std::optional(DType::kI16)
          : size == 4 ? std::optional(DType::kI32)
          : size == 8 ? std::optional(DType::kI64)
                      : std::nullopt;
      break;
    case 'f':
      if (size == 2) d = DType::kF16;
      if (size == 4) d = DType::kF32;
      if (size == 8) d = DType::kF64;
      if (size == 12 || size == 16) return Unsupported(shown + ": long double is not supported");
      break;
    case 'c':
      if (size == 8) d = DType::kC64;
      if (size == 16 || size == 24 || size == 32) {
        return Unsupported(shown + ": complex128 and wider are not supported");
      }
      break;
    default:
      break;
  }
  if (!d) return Corrupt(shown + " is not a numpy dtype");
  if (order == '|' && size != 1) return Corrupt(shown + ": byte order '|' on a multi-byte type");
  return Descr{*d, order == '>' && size > 1};
}

class DictParser {
 public:
  DictParser(std::string_view text, uint64_t max_rank) : t_(text), max_rank_(max_rank) {}

  Status Parse(ArrayHeader& out) {
    SkipSpace();
    if (!Eat('{')) return Corrupt("header is not a dict literal (no '{')");
    bool have_descr = false, have_order = false, have_shape = false;
    Descr descr{};
    std::vector<uint64_t> dims;
    while (true) {
      SkipSpace();
      if (Eat('}')) break;
      MP_ASSIGN_OR_RETURN(std::string key, String("key"));
      SkipSpace();
      if (!Eat(':')) return Corrupt("header: expected ':' after key " + Quote(key));
      SkipSpace();
      bool* seen = key == "descr"           ? &have_descr
                   : key == "fortran_order" ? &have_order
                   : key == "shape"         ? &have_shape
                                            : nullptr;
      if (seen == nullptr) return Corrupt("header has an unknown key " + Quote(key));
      if (*seen) return Corrupt("header has key " + Quote(key) + " twice");
      *seen = true;
      if (key == "descr") {
        if (Peek() == '[' || Peek() == '{') {
          return Unsupported("structured dtypes (records with named fields) are not supported");
        }
        MP_ASSIGN_OR_RETURN(std::string text, String("'descr'"));
        MP_ASSIGN_OR_RETURN(descr, ParseDescr(text));
      } else if (key == "fortran_order") {
        if (EatWord("True")) {
          out.fortran_order = true;
        } else if (EatWord("False")) {
          out.fortran_order = false;
        } else {
          return Corrupt("header: 'fortran_order' is not True or False");
        }
      } else {
        MP_ASSIGN_OR_RETURN(dims, Tuple());
      }
      SkipSpace();
      if (Eat(',')) continue;
      SkipSpace();
      if (Eat('}')) break;
      return Corrupt("header: expected ',' or '}' at byte " + Num(pos_));
    }
    SkipSpace();
    if (pos_ != t_.size()) return Corrupt("header has text after the dict at byte " + Num(pos_));
    if (!have_descr || !have_order || !have_shape) {
      return Corrupt(std::string("header lacks the key ") + (!have_descr   ? "'descr'"
                                                             : !have_order ? "'fortran_order'"
                                                                           : "'shape'"));
    }
    auto info = TensorInfo::Make("", descr.dtype, Shape(std::move(dims)));
    if (!info) return info.error().WithContext("header shape");
    out.info = std::move(*info);
    out.big_endian = descr.big_endian;
    return Status::Ok();
  }

 private:
  char Peek() const { return pos_ < t_.size() ? t_[pos_] : '\0'; }
  bool Eat(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  bool EatWord(std::string_view w) {
    if (t_.substr(pos_, w.size()) != w) return false;
    pos_ += w.size();
    return true;
  }
  void SkipSpace() {
    while (pos_ < t_.size() &&
           (t_[pos_] == ' ' || t_[pos_] == '\t' || t_[pos_] == '\n' || t_[pos_] == '\r')) {
      ++pos_;
    }
  }
  Result<std::string> String(std::string_view what) {
    const char q = Peek();
    if (q != '\'' && q != '"') return Corrupt("header: expected a quoted " + std::string(what));
    const size_t end = t_.find(q, pos_ + 1);
    if (end == std::string_view::npos) return Corrupt("header: unterminated string");
    std::string s(t_.substr(pos_ + 1, end - pos_ - 1));
    if (s.find('\\') != std::string::npos) {
      return Corrupt("header: escapes in strings are not allowed");
    }
    pos_ = end + 1;
    return s;
  }
  Result<std::vector<uint64_t>> Tuple() {
    if (!Eat('(')) return Corrupt("header: 'shape' is not a tuple");
    std::vector<uint64_t> dims;
    bool trailing_comma = false;
    while (true) {
      SkipSpace();
      if (Eat(')')) break;
      if (!std::isdigit(static_cast<unsigned char>(Peek()))) {
        return Corrupt("header: 'shape' holds something other than non-negative integers");
      }
      uint64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(Peek()))) {
        const uint64_t digit = static_cast<uint64_t>(t_[pos_++] - '0');
        if (v > (UINT64_MAX - digit) / 10) return Corrupt("header: a 'shape' dimension overflows");
        v = v * 10 + digit;
      }
      Eat('L');  // Python 2 longs ("(3L, 4L)") in old files
      dims.push_back(v);
      if (dims.size() > max_rank_) {
        return LimitExceeded("header: rank is over the limit of " + Num(max_rank_));
      }
      SkipSpace();
      trailing_comma = Eat(',');
      if (!trailing_comma) {
        SkipSpace();
        if (!Eat(')')) return Corrupt("header: 'shape' tuple is malformed");
        break;
      }
    }
    if (dims.size() == 1 && !trailing_comma) {
      return Corrupt("header: 'shape' (n) is an integer, not a tuple (numpy writes (n,))");
    }
    return dims;
  }

  std::string_view t_;
  uint64_t max_rank_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------------
// NumPy's own limit on dimensions (NPY_MAXDIMS in numpy 2); no .npy can have more.
constexpr size_t kMaxRank = 64;
uint64_t MaxRank(const ReadOptions& options) {
  return std::min<uint64_t>(options.max_rank, kMaxRank);
}

// From file layout to modelport's (little-endian, C order).

bool IsPlain(const ArrayHeader& h) {
  return !h.big_endian && (!h.fortran_order || h.info.shape.rank() <= 1);
}

template <size_t kSize>
void Transpose(const uint8_t* src, uint8_t* dst, const std::vector<uint64_t>& dims,
               uint64_t count) {
  // Fixed arrays, not vectors: g++ 12 at -O3 reports false -Wfree-nonheap-object on the
  // vectors' frees once this loop is inlined. Rank is at most kMaxRank (checked on parse).
  const size_t rank = dims.size();
  std::array<uint64_t, kMaxRank> idx{}, stride{};
  stride[0] = 1;
  for (size_t k = 1; k < rank; ++k) stride[k] = stride[k - 1] * dims[k - 1];
  uint64_t from = 0;
  for (uint64_t out = 0; out < count; ++out) {
    std::memcpy(dst + out * kSize, src + from * kSize, kSize);
    for (size_t k = rank; k-- > 0;) {
      from += stride[k];
      if (++idx[k] < dims[k]) break;
      from -= stride[k] * dims[k];
      idx[k] = 0;
    }
  }
}

// Fortran order (first index fastest) to C order (last index fastest).
void FortranToC(const uint8_t* src, uint8_t* dst, const TensorInfo& info) {
  const uint64_t count = info.byte_size / ElementSize(info.dtype);
  const auto& dims = info.shape.dims();
  switch (ElementSize(info.dtype)) {
    case 1:
      return Transpose<1>(src, dst, dims, count);
    case 2:
      return Transpose<2>(src, dst, dims, count);
    case 4:
      return Transpose<4>(src, dst, dims, count);
    default:
      return Transpose<8>(src, dst, dims, count);
  }
}

void SwapInPlace(uint8_t* p, uint64_t bytes, size_t width) {
  for (uint64_t i = 0; i + width <= bytes; i += width) std::reverse(p + i, p + i + width);
}

// The tensor in modelport's layout: `raw` itself when it already is (and aligned), else a copy.
Result<std::shared_ptr<Buffer>> Canonical(std::shared_ptr<Buffer> raw, const ArrayHeader& h) {
  if (IsPlain(h) &&
      reinterpret_cast<uintptr_t>(raw->data()) % NaturalAlignment(h.info.dtype) == 0) {
    return raw;
  }
  MP_ASSIGN_OR_RETURN(auto out, Buffer::Allocate(raw->size()));
  if (h.fortran_order && h.info.shape.rank() > 1) {
    FortranToC(raw->data(), out->mutable_data(), h.info);
  } else if (raw->size() != 0) {
    std::memcpy(out->mutable_data(), raw->data(), raw->size());
  }
  if (h.big_endian) {
    // complex64 is two float32s, each swapped on its own.
    const size_t width = h.info.dtype == DType::kC64 ? 4 : ElementSize(h.info.dtype);
    SwapInPlace(out->mutable_data(), out->size(), width);
  }
  return out;
}

// Length of the whole preamble from its first bytes (the length field), checked against the cap.
Result<uint64_t> PreambleLength(std::span<const uint8_t> b, uint64_t max_header_bytes) {
  const size_t shown = std::min(b.size(), kMagicSize);
  if (shown == 0 || std::memcmp(b.data(), kMagic.data(), shown) != 0) {
    return Corrupt("not a .npy file (no \\x93NUMPY magic)");
  }
  if (b.size() < kMagicSize + 2) {
    return Corrupt(".npy file is truncated (" + Num(b.size()) + " bytes)");
  }
  const uint8_t major = b[6], minor = b[7];
  if (major < 1 || major > 3 || minor != 0) {
    return Unsupported(".npy version " + Num(major) + "." + Num(minor) +
                       " is not supported (1.0, 2.0, 3.0 are)");
  }
  const size_t len_bytes = major == 1 ? 2 : 4;
  const size_t fixed = kMagicSize + 2 + len_bytes;
  if (b.size() < fixed) return Corrupt(".npy preamble is truncated");
  uint64_t n = 0;
  for (size_t i = len_bytes; i-- > 0;) n = (n << 8) | b[8 + i];
  if (n > max_header_bytes) {
    return LimitExceeded(".npy header of " + Num(n) + " bytes is over the limit of " +
                         Num(max_header_bytes));
  }
  return fixed + n;
}

uint64_t HeaderCap(const ReadOptions& o) { return std::min(kMaxHeaderBytes, o.max_header_bytes); }

void Tick(const WriteOptions& options, uint64_t done, uint64_t total, uint64_t bytes_done,
          uint64_t bytes_total) {
  if (options.progress) options.progress(done, total, bytes_done, bytes_total);
}

// ---------------------------------------------------------------------------------------------
// .npy

class NpyReader final : public ModelSource {
 public:
  static Result<std::unique_ptr<NpyReader>> Open(const std::string& path,
                                                 const ReadOptions& options) {
    MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path, options.io_mode));
    std::unique_ptr<NpyReader> r(new NpyReader());
    r->file_ = std::move(file);
    Status s = r->Parse(path, options);
    if (!s.ok()) return std::move(s).WithContext(path);
    return r;
  }

  std::string_view format() const override { return "numpy"; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  ModelFiles files() const override { return {{}, {file_->path()}}; }

  Result<TensorView> Load(size_t index) const override {
    if (index != 0) return NotFound("tensor #" + Num(index));
    auto raw = file_->Read(header_.data_offset, header_.info.byte_size);
    if (!raw) return raw.error().WithContext("tensor " + Quote(infos_[0].name));
    MP_ASSIGN_OR_RETURN(auto data, Canonical(std::move(*raw), header_));
    return TensorView{infos_[0], std::move(data)};
  }

  Status LoadInto(size_t index, std::span<uint8_t> dest) const override {
    if (index != 0 || !IsPlain(header_)) return ModelSource::LoadInto(index, dest);
    if (dest.size() != header_.info.byte_size) {
      return InvalidArgument("tensor " + Quote(infos_[0].name) + ": destination holds " +
                             Num(dest.size()) + " bytes, tensor has " +
                             Num(header_.info.byte_size));
    }
    return file_->ReadInto(header_.data_offset, dest.size(), dest.data());
  }

 private:
  NpyReader() = default;

  Status Parse(const std::string& path, const ReadOptions& options) {
    const uint64_t size = file_->size();
    uint8_t head[12] = {};
    const uint64_t got = std::min<uint64_t>(size, sizeof head);
    MP_RETURN_IF_ERROR(file_->ReadInto(0, got, head));
    MP_ASSIGN_OR_RETURN(uint64_t preamble, PreambleLength({head, got}, HeaderCap(options)));
    if (preamble > size) {
      return Corrupt(".npy header of " + Num(preamble) + " bytes runs past the end of the file (" +
                     Num(size) + " bytes)");
    }
    MP_ASSIGN_OR_RETURN(auto bytes, file_->Read(0, preamble));
    MP_ASSIGN_OR_RETURN(header_, ParseHeader(bytes->span(), HeaderCap(options), MaxRank(options)));
    const uint64_t data = size - header_.data_offset;
    if (data != header_.info.byte_size) {
      return Corrupt("data is " + Num(data) + " bytes but " +
                     std::string(DTypeName(header_.info.dtype)) + " " +
                     header_.info.shape.ToString() + " needs " + Num(header_.info.byte_size));
    }
    std::string stem = fs::path(path).stem().string();
    header_.info.name = stem.empty() ? "array" : stem;
    infos_ = {header_.info};
    return Status::Ok();
  }

  std::shared_ptr<InputFile> file_;
  ArrayHeader header_;
  std::vector<TensorInfo> infos_;
  Json metadata_ = Json::object();
};

// ---------------------------------------------------------------------------------------------
// .npz

class NpzReader final : public ModelSource {
 public:
  static Result<std::unique_ptr<NpzReader>> Open(const std::string& path,
                                                 const ReadOptions& options) {
    MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path, options.io_mode));
    zip::ReaderOptions zo;
    zo.max_entries = options.max_tensors;
    zo.max_name_bytes = options.max_name_bytes;
    zo.allow_backslash = true;  // member names are tensor names, never extracted as paths
    MP_ASSIGN_OR_RETURN(auto archive, zip::Reader::Open(std::move(file), zo));
    std::unique_ptr<NpzReader> r(new NpzReader());
    r->zip_ = std::move(archive);
    Status s = r->Parse(options);
    if (s.ok()) return r;
    // Errors from the zip reader's entry reads already name the file.
    if (s.message().rfind(path + ": ", 0) == 0) return s;
    return std::move(s).WithContext(path);
  }

  std::string_view format() const override { return "numpy"; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  ModelFiles files() const override { return {{}, {zip_->file().path()}}; }

  Result<TensorView> Load(size_t index) const override {
    if (index >= members_.size()) return NotFound("tensor #" + Num(index));
    const Member& m = members_[index];
    MP_ASSIGN_OR_RETURN(auto whole, zip_->Read(m.entry));
    auto data = Canonical(whole->Slice(m.header.data_offset, m.header.info.byte_size), m.header);
    if (!data) return data.error().WithContext(zip_->file().path());
    return TensorView{infos_[index], std::move(*data)};
  }

  Status LoadInto(size_t index, std::span<uint8_t> dest) const override {
    if (index >= members_.size()) return NotFound("tensor #" + Num(index));
    const Member& m = members_[index];
    const zip::Entry& e = zip_->entries()[m.entry];
    if (!IsPlain(m.header) || e.method != zip::kStored) return ModelSource::LoadInto(index, dest);
    const std::string where = zip_->file().path() + ": entry " + Quote(e.name);
    if (dest.size() != m.header.info.byte_size) {
      return InvalidArgument(where + ": destination holds " + Num(dest.size()) +
                             " bytes, tensor has " + Num(m.header.info.byte_size));
    }
    MP_RETURN_IF_ERROR(zip_->ReadStoredRange(m.entry, m.header.data_offset, dest));
    // The archive's CRC covers the .npy header and the data.
    const uint32_t crc = zip::Crc32Combine(m.header_crc, zip::Crc32(dest), dest.size());
    if (crc != e.crc32) {
      return Corrupt(where + ": CRC-32 of the data does not match the archive's record");
    }
    return Status::Ok();
  }

 private:
  struct Member {
    size_t entry;
    ArrayHeader header;
    uint32_t header_crc;
  };
  NpzReader() = default;

  Status Parse(const ReadOptions& options) {
    const std::string& comment = zip_->comment();
    if (comment.starts_with(kMetadataComment)) {
      const std::string_view text = std::string_view(comment).substr(kMetadataComment.size());
      Json parsed = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
      if (parsed.is_discarded() || !parsed.is_object()) {
        return Corrupt("archive comment's metadata is not a JSON object");
      }
      metadata_ = std::move(parsed);
    }
    const auto& entries = zip_->entries();
    for (size_t i = 0; i < entries.size(); ++i) {
      const zip::Entry& e = entries[i];
      const std::string where = "entry " + Quote(e.name);
      if (!e.name.ends_with(".npy")) {
        return Unsupported(where + " is not a .npy array (a .npz holds only NAME.npy members)");
      }
      // The preamble's length field, then the whole preamble.
      MP_ASSIGN_OR_RETURN(auto head, zip_->ReadPrefix(i, 12));
      auto preamble = PreambleLength(head->span(), HeaderCap(options));
      if (!preamble) return preamble.error().WithContext(where);
      if (*preamble > e.size) {
        return Corrupt(where + ": .npy header of " + Num(*preamble) + " bytes is longer than " +
                       "the member (" + Num(e.size) + " bytes)");
      }
      MP_ASSIGN_OR_RETURN(auto bytes, zip_->ReadPrefix(i, *preamble));
      auto header = ParseHeader(bytes->span(), HeaderCap(options), MaxRank(options));
      if (!header) return header.error().WithContext(where);
      if (e.size - header->data_offset != header->info.byte_size) {
        return Corrupt(where + ": data is " + Num(e.size - header->data_offset) + " bytes but " +
                       std::string(DTypeName(header->info.dtype)) + " " +
                       header->info.shape.ToString() + " needs " + Num(header->info.byte_size));
      }
      header->info.name = e.name.substr(0, e.name.size() - 4);
      infos_.push_back(header->info);
      members_.push_back({i, std::move(*header), zip::Crc32(bytes->span())});
    }
    return Status::Ok();
  }

  std::unique_ptr<zip::Reader> zip_;
  std::vector<Member> members_;
  std::vector<TensorInfo> infos_;
  Json metadata_ = Json::object();
};

// ---------------------------------------------------------------------------------------------
// Writers

// Every tensor must have a numpy dtype; checked before anything is written.
Status CheckDTypes(const ModelSource& source) {
  for (const TensorInfo& t : source.tensors()) {
    if (!DescrOf(t.dtype)) return NoNumpyDType(t.dtype).WithContext("tensor " + Quote(t.name));
  }
  return Status::Ok();
}

Result<TensorView> LoadChecked(const ModelSource& source, size_t i) {
  MP_ASSIGN_OR_RETURN(TensorView t, source.Load(i));
  const TensorInfo& want = source.tensors()[i];
  if (t.info.dtype != want.dtype || t.data->size() != want.byte_size) {
    return Internal("tensor " + Quote(want.name) +
                    " loaded with another dtype or size than its index says");
  }
  return t;
}

Status WriteNpy(const ModelSource& source, const std::string& path, const WriteOptions& options) {
  const auto& infos = source.tensors();
  if (infos.size() != 1) {
    return InvalidArgument(path + ": a .npy file holds exactly one array but the model has " +
                           Num(infos.size()) + " tensors (write a .npz instead)");
  }
  MP_RETURN_IF_ERROR(CheckDTypes(source));
  MP_ASSIGN_OR_RETURN(std::string header, BuildHeader(infos[0].dtype, infos[0].shape));
  MP_ASSIGN_OR_RETURN(auto out, AtomicFile::Create(path));
  MP_ASSIGN_OR_RETURN(TensorView t, LoadChecked(source, 0));
  MP_RETURN_IF_ERROR(out->Write(header.data(), header.size()));
  MP_RETURN_IF_ERROR(out->Write(t.data->data(), t.data->size()));
  MP_RETURN_IF_ERROR(out->Commit(options.durable));
  Tick(options, 1, 1, t.data->size(), t.data->size());
  return Status::Ok();
}

Status WriteNpz(const ModelSource& source, const std::string& path, const WriteOptions& options) {
  const auto& infos = source.tensors();
  MP_RETURN_IF_ERROR(CheckDTypes(source));
  for (const TensorInfo& t : infos) {
    Status s = zip::CheckName(t.name + ".npy", /*allow_backslash=*/true);
    if (!s.ok()) {
      return InvalidArgument(path + ": tensor name " + Quote(t.name) +
                             " cannot be a .npz member: " + s.message());
    }
  }
  zip::WriterOptions zo;
  zo.allow_backslash = true;
  if (!source.metadata().empty()) {
    try {
      zo.comment = std::string(kMetadataComment) + source.metadata().dump();
    } catch (const Json::exception& e) {
      return InvalidArgument(path + ": metadata is not valid UTF-8: " + e.what());
    }
    if (zo.comment.size() > 0xFFFF) {
      return Unsupported(path + ": metadata of " + Num(zo.comment.size()) + " bytes does not " +
                         "fit the 65535-byte zip comment where .npz keeps it");
    }
  }
  MP_ASSIGN_OR_RETURN(uint64_t total, source.TotalBytes());
  MP_ASSIGN_OR_RETURN(auto out, zip::Writer::Create(path, std::move(zo)));
  uint64_t done = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    MP_ASSIGN_OR_RETURN(std::string header, BuildHeader(infos[i].dtype, infos[i].shape));
    MP_ASSIGN_OR_RETURN(TensorView t, LoadChecked(source, i));
    const std::span<const uint8_t> parts[] = {
        {reinterpret_cast<const uint8_t*>(header.data()), header.size()}, t.bytes()};
    // Header lengths are multiples of 64, so 64-aligned members give 64-aligned arrays.
    MP_RETURN_IF_ERROR(out->AddStored(infos[i].name + ".npy", parts, kArrayAlign));
    done += t.data->size();
    Tick(options, i + 1, infos.size(), done, total);
  }
  return out->Finish(options.durable);
}

}  // namespace

Result<ArrayHeader> ParseHeader(std::span<const uint8_t> bytes, uint64_t max_header_bytes,
                                uint64_t max_rank) {
  MP_ASSIGN_OR_RETURN(uint64_t preamble, PreambleLength(bytes, max_header_bytes));
  if (bytes.size() < preamble) return Corrupt(".npy header is truncated");
  ArrayHeader h;
  h.major_version = bytes[6];
  h.data_offset = preamble;
  const size_t start = h.major_version == 1 ? 10 : 12;
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + start,
                              preamble - start);
  if (text.find('\0') != std::string_view::npos) return Corrupt(".npy header holds a NUL byte");
  DictParser parser(text, max_rank);
  MP_RETURN_IF_ERROR(parser.Parse(h));
  return h;
}

Result<std::string> BuildHeader(DType dtype, const Shape& shape) {
  const auto descr = DescrOf(dtype);
  if (!descr) return NoNumpyDType(dtype);
  std::string dict = "{'descr': '" + std::string(*descr) + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.rank(); ++i) {
    dict += (i ? ", " : "") + Num(shape[i]);
  }
  dict += shape.rank() == 1 ? ",), }" : "), }";
  // Version 1 when the padded header fits its 16-bit length, else 2.
  for (int major : {1, 2}) {
    const size_t fixed = kMagicSize + 2 + (major == 1 ? 2 : 4);
    const size_t total = (fixed + dict.size() + 1 + kArrayAlign - 1) / kArrayAlign * kArrayAlign;
    const uint64_t n = total - fixed;
    if (major == 1 && n > 0xFFFF) continue;
    std::string out(kMagic);
    out += static_cast<char>(major);
    out += '\0';
    for (size_t i = 0; i < fixed - 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xFF);
    out += dict;
    out.append(total - out.size() - 1, ' ');
    out += '\n';
    return out;
  }
  return Internal("unreachable");
}

Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options) {
  MP_ASSIGN_OR_RETURN(auto probe, InputFile::Open(path, IoMode::kPread));
  uint8_t head[kMagicSize] = {};
  const uint64_t got = std::min<uint64_t>(probe->size(), kMagicSize);
  MP_RETURN_IF_ERROR(probe->ReadInto(0, got, head));
  // By content (a short file by a prefix of the magic), then by extension.
  const bool npy = got > 0 && std::memcmp(head, kMagic.data(), got) == 0;
  const bool zip = got >= 2 && head[0] == 'P' && head[1] == 'K';
  if (npy || (!zip && path.ends_with(".npy"))) return NpyReader::Open(path, options);
  return NpzReader::Open(path, options);
}

Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options) {
  std::error_code ec;
  if (options.no_overwrite && fs::exists(path, ec)) return AlreadyExists(path + ": exists");
  if (path.ends_with(".npy")) return WriteNpy(source, path, options);
  return WriteNpz(source, path, options);
}

bool Detect(std::span<const uint8_t> prefix, uint64_t /*file_size*/) {
  if (prefix.size() >= kMagicSize && std::memcmp(prefix.data(), kMagic.data(), kMagicSize) == 0) {
    return true;
  }
  // A zip whose first local header names a .npy member (torch checkpoints start with
  // "<folder>/data.pkl" and are not claimed).
  if (prefix.size() < 30 || prefix[0] != 'P' || prefix[1] != 'K' || prefix[2] != 3 ||
      prefix[3] != 4) {
    return false;
  }
  const size_t name_len = prefix[26] | (prefix[27] << 8);
  if (name_len < 4 || prefix.size() < 30 + name_len) return false;
  const std::string_view name(reinterpret_cast<const char*>(prefix.data()) + 30, name_len);
  return name.ends_with(".npy");
}

}  // namespace mp::numpy
