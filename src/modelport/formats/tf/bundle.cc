#include "modelport/formats/tf/bundle.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <set>

#include "modelport/core/json.h"
#include "modelport/formats/tf/proto.h"

namespace mp::tf {
namespace {

namespace fs = std::filesystem;

std::string Num(uint64_t v) { return std::to_string(v); }

std::string Quote(std::string_view s) {
  std::string out(1, '\'');
  out += s;
  out += '\'';
  return out;
}

constexpr uint64_t kTableMagic = 0xdb4775248b80fb57ull;
constexpr size_t kFooterSize = 48;
constexpr size_t kTrailerSize = 5;
constexpr size_t kRestartInterval = 16;
constexpr size_t kBlockSize = 4096;

uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

void PutLe32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

// ---------------------------------------------------------------------------------------------
// Snappy (github.com/google/snappy format_description.txt): a varint uncompressed length, then
// literal and copy elements.

// `room`: bytes the table may still decode; `limit`: the table's total, for the message.
Result<std::string> SnappyDecompress(std::span<const uint8_t> in, uint64_t room, uint64_t limit) {
  Reader r(in);
  MP_ASSIGN_OR_RETURN(uint64_t length, r.Varint());
  if (length > room) {
    return LimitExceeded("snappy block claims " + Num(length) +
                         " bytes uncompressed, over the limit of " + Num(limit));
  }
  std::string out;
  out.reserve(static_cast<size_t>(std::min<uint64_t>(length, in.size() * 32ull)));
  while (r.left() > 0) {
    MP_ASSIGN_OR_RETURN(auto tag_bytes, r.Bytes(1));
    const uint8_t tag = tag_bytes[0];
    uint64_t len = 0, offset = 0;
    if ((tag & 3) == 0) {
      len = (tag >> 2) + 1;
      if ((tag >> 2) >= 60) {
        const size_t n = (tag >> 2) - 59;
        MP_ASSIGN_OR_RETURN(auto b, r.Bytes(n));
        len = 0;
        for (size_t i = 0; i < n; ++i) len |= uint64_t{b[i]} << (8 * i);
        len += 1;
      }
      if (len > length - out.size()) return Corrupt("snappy literal runs past the block length");
      MP_ASSIGN_OR_RETURN(auto lit, r.Bytes(len));
      out.append(reinterpret_cast<const char*>(lit.data()), lit.size());
      continue;
    }
    if ((tag & 3) == 1) {
      MP_ASSIGN_OR_RETURN(auto b, r.Bytes(1));
      len = ((tag >> 2) & 7) + 4;
      offset = (uint64_t{tag} >> 5) << 8 | b[0];
    } else {
      const size_t n = (tag & 3) == 2 ? 2 : 4;
      MP_ASSIGN_OR_RETURN(auto b, r.Bytes(n));
      len = (tag >> 2) + 1;
      for (size_t i = 0; i < n; ++i) offset |= uint64_t{b[i]} << (8 * i);
    }
    if (offset == 0 || offset > out.size()) {
      return Corrupt("snappy copy offset " + Num(offset) + " is outside the " + Num(out.size()) +
                     " bytes decoded so far");
    }
    if (len > length - out.size()) return Corrupt("snappy copy runs past the block length");
    const size_t from = out.size() - static_cast<size_t>(offset);
    for (uint64_t i = 0; i < len; ++i) out.push_back(out[from + i]);  // may overlap itself
  }
  if (out.size() != length) {
    return Corrupt("snappy block decodes to " + Num(out.size()) + " bytes, its header says " +
                   Num(length));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Table reading

struct Handle {
  uint64_t offset = 0;
  uint64_t size = 0;
};

Result<Handle> DecodeHandle(Reader& r) {
  Handle h;
  MP_ASSIGN_OR_RETURN(h.offset, r.Varint());
  MP_ASSIGN_OR_RETURN(h.size, r.Varint());
  return h;
}

class TableReader {
 public:
  TableReader(std::span<const uint8_t> bytes, uint64_t max_bytes, uint64_t max_entries)
      : bytes_(bytes), max_bytes_(max_bytes), max_entries_(max_entries) {}

  Result<std::vector<TableEntry>> ReadAll() {
    if (bytes_.size() < kFooterSize) {
      return Corrupt("table is " + Num(bytes_.size()) + " bytes, shorter than its " +
                     Num(kFooterSize) + "-byte footer");
    }
    const uint8_t* footer = bytes_.data() + bytes_.size() - kFooterSize;
    uint64_t magic = 0;
    for (int i = 7; i >= 0; --i) magic = magic << 8 | footer[40 + i];
    if (magic != kTableMagic) return Corrupt("table footer has no LevelDB table magic");
    Reader fr(std::span<const uint8_t>(footer, 40));
    auto meta = DecodeHandle(fr);
    if (!meta) return meta.error().WithContext("table footer metaindex handle");
    auto index = DecodeHandle(fr);
    if (!index) return index.error().WithContext("table footer index handle");
    // Writers encode the handles minimally and zero the rest of the footer's 40 handle bytes.
    if (fr.pos() > 0 && fr.pos() < 40 && footer[fr.pos() - 1] == 0 && fr.pos() >= 2 &&
        (footer[fr.pos() - 2] & 0x80) != 0) {
      return Corrupt("table footer index handle is not minimally encoded");
    }
    for (size_t i = fr.pos(); i < 40; ++i) {
      if (footer[i] != 0) return Corrupt("table footer padding is not zero");
    }
    // The metaindex (filter blocks; none in TF bundles) is not needed, but a damaged one means
    // a damaged file.
    MP_ASSIGN_OR_RETURN(std::string meta_block, ReadBlock(*meta));
    std::vector<TableEntry> meta_entries;
    MP_RETURN_IF_ERROR(ParseBlock(meta_block, meta->offset, &meta_entries));
    MP_ASSIGN_OR_RETURN(std::string index_block, ReadBlock(*index));
    std::vector<TableEntry> handles;
    MP_RETURN_IF_ERROR(ParseBlock(index_block, index->offset, &handles));
    std::vector<TableEntry> out;
    for (const auto& [key, value] : handles) {
      Reader hr(AsBytes(value));
      auto h = DecodeHandle(hr);
      if (!h) return h.error().WithContext("index block entry " + Quote(key));
      MP_ASSIGN_OR_RETURN(std::string block, ReadBlock(*h));
      const size_t before = out.size();
      MP_RETURN_IF_ERROR(ParseBlock(block, h->offset, &out));
      if (out.size() > before && (out.back().first > key)) {
        return Corrupt("data block at offset " + Num(h->offset) + " holds keys past its index key");
      }
      if (before > 0 && out.size() > before && out[before].first <= out[before - 1].first) {
        return Corrupt("data block at offset " + Num(h->offset) + " is out of key order");
      }
    }
    return out;
  }

 private:
  static std::span<const uint8_t> AsBytes(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
  }

  Result<std::string> ReadBlock(const Handle& h) {
    const std::string where = "block at offset " + Num(h.offset);
    const uint64_t limit = bytes_.size() - kFooterSize;
    if (h.offset > limit || h.size > limit - h.offset || kTrailerSize > limit - h.offset - h.size) {
      return Corrupt(where + " (" + Num(h.size) + " bytes and trailer) runs past the table's " +
                     Num(limit) + " bytes of blocks");
    }
    const uint8_t* p = bytes_.data() + h.offset;
    const uint8_t type = p[h.size];
    const uint32_t stored = UnmaskCrc(Le32(p + h.size + 1));
    const uint32_t actual = Crc32c({p, static_cast<size_t>(h.size) + 1});
    if (stored != actual) {
      // Corrupt, not ChecksumMismatch: that code is for tensor data; a damaged index is corrupt.
      return Corrupt(where + ": crc32c is " + Num(actual) + ", its trailer says " + Num(stored));
    }
    std::string block;
    if (type == 0) {
      block.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(h.size));
    } else if (type == 1) {
      auto s =
          SnappyDecompress({p, static_cast<size_t>(h.size)}, max_bytes_ - used_bytes_, max_bytes_);
      if (!s) return s.error().WithContext(where);
      block = std::move(*s);
    } else {
      return Unsupported(where + ": compression type " + Num(type) +
                         " (only none and snappy are used by TensorFlow)");
    }
    if (block.size() > max_bytes_ - used_bytes_) {
      return LimitExceeded("table blocks hold more than " + Num(max_bytes_) + " bytes");
    }
    used_bytes_ += block.size();
    return block;
  }

  // Entries are decoded in order from the start; the restart array is only bounds checked (it
  // speeds up seeks, which a full read does not need).
  Status ParseBlock(const std::string& block, uint64_t at, std::vector<TableEntry>* out) {
    const std::string where = "block at offset " + Num(at);
    if (block.size() < 4) return Corrupt(where + " is too short for its restart count");
    const auto* b = reinterpret_cast<const uint8_t*>(block.data());
    const uint64_t restarts = Le32(b + block.size() - 4);
    if (restarts > (block.size() - 4) / 4) {
      return Corrupt(where + " claims " + Num(restarts) + " restart points, more than fit");
    }
    const size_t end = block.size() - 4 - static_cast<size_t>(restarts) * 4;
    Reader r(std::span<const uint8_t>(b, end));
    std::string key;
    bool first = true;
    while (r.left() > 0) {
      MP_ASSIGN_OR_RETURN(uint64_t shared, r.Varint());
      MP_ASSIGN_OR_RETURN(uint64_t non_shared, r.Varint());
      MP_ASSIGN_OR_RETURN(uint64_t value_len, r.Varint());
      if (shared > key.size()) {
        return Corrupt(where + ": entry shares " + Num(shared) + " key bytes, previous key has " +
                       Num(key.size()));
      }
      MP_ASSIGN_OR_RETURN(auto suffix, r.Bytes(non_shared));
      MP_ASSIGN_OR_RETURN(auto value, r.Bytes(value_len));
      if (shared + non_shared > max_bytes_ - used_entry_bytes_) {
        return LimitExceeded("table entries hold more than " + Num(max_bytes_) + " bytes");
      }
      std::string next = key.substr(0, static_cast<size_t>(shared));
      next.append(reinterpret_cast<const char*>(suffix.data()), suffix.size());
      if (!first && next <= key) return Corrupt(where + ": keys are not in increasing order");
      first = false;
      key = std::move(next);
      if (out->size() >= max_entries_) {
        return LimitExceeded("table holds more than " + Num(max_entries_) + " entries");
      }
      // Keys rebuilt from shared prefixes can be far larger than the block: count them too,
      // or a block of long shared keys costs quadratic time.
      const uint64_t entry_bytes = key.size() + value.size();
      if (entry_bytes > max_bytes_ - used_entry_bytes_) {
        return LimitExceeded("table entries hold more than " + Num(max_bytes_) + " bytes");
      }
      used_entry_bytes_ += entry_bytes;
      out->emplace_back(key,
                        std::string(reinterpret_cast<const char*>(value.data()), value.size()));
    }
    return Status::Ok();
  }

  std::span<const uint8_t> bytes_;
  uint64_t max_bytes_;
  uint64_t max_entries_;
  uint64_t used_bytes_ = 0;
  uint64_t used_entry_bytes_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Table writing

class BlockBuilder {
 public:
  void Add(const std::string& key, const std::string& value, size_t interval) {
    size_t shared = 0;
    if (count_ % interval == 0) {
      restarts_.push_back(static_cast<uint32_t>(data_.size()));
    } else {
      while (shared < key.size() && shared < last_.size() && key[shared] == last_[shared]) {
        ++shared;
      }
    }
    PutVarint(&data_, shared);
    PutVarint(&data_, key.size() - shared);
    PutVarint(&data_, value.size());
    data_.append(key, shared);
    data_ += value;
    last_ = key;
    ++count_;
  }
  size_t size() const { return data_.size() + 4 * restarts_.size() + 4; }
  bool empty() const { return count_ == 0; }
  std::string Finish() {
    if (restarts_.empty()) restarts_.push_back(0);
    std::string out = std::move(data_);
    for (uint32_t r : restarts_) PutLe32(&out, r);
    PutLe32(&out, static_cast<uint32_t>(restarts_.size()));
    *this = BlockBuilder();
    return out;
  }

 private:
  std::string data_;
  std::string last_;
  std::vector<uint32_t> restarts_;
  size_t count_ = 0;
};

// Appends `block` with its trailer to `file`; returns its handle encoding.
std::string AppendBlock(std::string* file, const std::string& block) {
  std::string handle;
  PutVarint(&handle, file->size());
  PutVarint(&handle, block.size());
  *file += block;
  file->push_back('\0');  // no compression
  const uint32_t crc =
      Crc32c({reinterpret_cast<const uint8_t*>(file->data()) + file->size() - block.size() - 1,
              block.size() + 1});
  PutLe32(file, MaskCrc(crc));
  return handle;
}

// ---------------------------------------------------------------------------------------------
// dtypes

struct DTypeRow {
  int32_t tf;
  std::string_view name;
  std::optional<DType> dtype;
};

constexpr DTypeRow kDTypes[] = {
    {kDtInvalid, "DT_INVALID", std::nullopt},
    {kDtFloat, "DT_FLOAT", DType::kF32},
    {kDtDouble, "DT_DOUBLE", DType::kF64},
    {kDtInt32, "DT_INT32", DType::kI32},
    {kDtUint8, "DT_UINT8", DType::kU8},
    {kDtInt16, "DT_INT16", DType::kI16},
    {kDtInt8, "DT_INT8", DType::kI8},
    {kDtString, "DT_STRING", std::nullopt},
    {kDtComplex64, "DT_COMPLEX64", DType::kC64},
    {kDtInt64, "DT_INT64", DType::kI64},
    {kDtBool, "DT_BOOL", DType::kBool},
    {11, "DT_QINT8", std::nullopt},
    {12, "DT_QUINT8", std::nullopt},
    {13, "DT_QINT32", std::nullopt},
    {kDtBfloat16, "DT_BFLOAT16", DType::kBF16},
    {15, "DT_QINT16", std::nullopt},
    {16, "DT_QUINT16", std::nullopt},
    {kDtUint16, "DT_UINT16", DType::kU16},
    {kDtComplex128, "DT_COMPLEX128", std::nullopt},
    {kDtHalf, "DT_HALF", DType::kF16},
    {kDtResource, "DT_RESOURCE", std::nullopt},
    {kDtVariant, "DT_VARIANT", std::nullopt},
    {kDtUint32, "DT_UINT32", DType::kU32},
    {kDtUint64, "DT_UINT64", DType::kU64},
    {kDtFloat8E5m2, "DT_FLOAT8_E5M2", DType::kF8E5M2},
    {kDtFloat8E4m3fn, "DT_FLOAT8_E4M3FN", DType::kF8E4M3},
    {26, "DT_FLOAT8_E4M3FNUZ", std::nullopt},
    {27, "DT_FLOAT8_E4M3B11FNUZ", std::nullopt},
    {28, "DT_FLOAT8_E5M2FNUZ", std::nullopt},
    {29, "DT_INT4", std::nullopt},
    {30, "DT_UINT4", std::nullopt},
    {31, "DT_INT2", std::nullopt},
    {32, "DT_UINT2", std::nullopt},
};

Status CheckedEnd(uint64_t offset, uint64_t size, uint64_t* end) {
  if (size > UINT64_MAX - offset) return Corrupt("offset + size overflows");
  *end = offset + size;
  return Status::Ok();
}

}  // namespace

std::string TfDTypeName(int32_t tf_dtype) {
  const bool ref = tf_dtype > 100;
  const int32_t base = ref ? tf_dtype - 100 : tf_dtype;
  for (const auto& row : kDTypes) {
    if (row.tf == base) return std::string(row.name) + (ref ? "_REF" : "");
  }
  return "DT_" + std::to_string(tf_dtype);
}

Result<DType> DTypeFromTf(int32_t tf_dtype) {
  for (const auto& row : kDTypes) {
    if (row.tf == tf_dtype && row.dtype) return *row.dtype;
  }
  return Unsupported("TensorFlow dtype " + TfDTypeName(tf_dtype) + " has no modelport dtype");
}

std::optional<int32_t> TfFromDType(DType dtype) {
  for (const auto& row : kDTypes) {
    if (row.dtype == dtype) return row.tf;
  }
  return std::nullopt;
}

uint32_t Crc32c(std::span<const uint8_t> bytes, uint32_t crc) {
  static const std::array<uint32_t, 256> kTable = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (uint8_t b : bytes) crc = kTable[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t MaskCrc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

uint32_t UnmaskCrc(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

Result<std::vector<TableEntry>> ReadTable(std::span<const uint8_t> bytes, uint64_t max_bytes,
                                          uint64_t max_entries) {
  return TableReader(bytes, max_bytes, max_entries).ReadAll();
}

std::string BuildTable(const std::vector<TableEntry>& entries) {
  std::string file;
  BlockBuilder data, index;
  std::string last_key;
  auto flush = [&] {
    const std::string handle = AppendBlock(&file, data.Finish());
    index.Add(last_key, handle, 1);
  };
  for (const auto& [key, value] : entries) {
    data.Add(key, value, kRestartInterval);
    last_key = key;
    if (data.size() >= kBlockSize) flush();
  }
  if (!data.empty()) flush();
  BlockBuilder meta;
  const std::string meta_handle = AppendBlock(&file, meta.Finish());
  const std::string index_handle = AppendBlock(&file, index.Finish());
  std::string footer = meta_handle + index_handle;
  footer.resize(40, '\0');
  for (int i = 0; i < 8; ++i) footer.push_back(static_cast<char>(kTableMagic >> (8 * i)));
  return file + footer;
}

// ---------------------------------------------------------------------------------------------
// Protos

namespace {

Status ParseShape(std::span<const uint8_t> bytes, uint64_t max_rank, std::vector<int64_t>* dims,
                  bool* unknown_rank) {
  Reader r(bytes);
  while (r.left() > 0) {
    MP_ASSIGN_OR_RETURN(Field f, r.Next());
    if (f.number == 2 && f.wire == kWireLen) {
      if (dims->size() >= max_rank) {
        return LimitExceeded("shape rank is over the limit of " + Num(max_rank));
      }
      Reader d(f.bytes);
      int64_t size = 0;
      while (d.left() > 0) {
        MP_ASSIGN_OR_RETURN(Field df, d.Next());
        if (df.number == 1 && df.wire == kWireVarint) size = static_cast<int64_t>(df.value);
      }
      dims->push_back(size);
    } else if (f.number == 3 && f.wire == kWireVarint) {
      *unknown_rank = f.value != 0;
    }
  }
  return Status::Ok();
}

}  // namespace

Status ParseShapeProto(std::span<const uint8_t> bytes, uint64_t max_rank,
                       std::vector<int64_t>* dims, bool* unknown_rank) {
  return ParseShape(bytes, max_rank, dims, unknown_rank);
}

Result<BundleHeader> ParseHeader(std::span<const uint8_t> bytes) {
  BundleHeader h;
  Reader r(bytes);
  while (r.left() > 0) {
    MP_ASSIGN_OR_RETURN(Field f, r.Next());
    if (f.number == 1 && f.wire == kWireVarint) h.num_shards = static_cast<int64_t>(f.value);
    if (f.number == 2 && f.wire == kWireVarint) h.endianness = static_cast<int64_t>(f.value);
    if (f.number == 3 && f.wire == kWireLen) {
      Reader v(f.bytes);
      while (v.left() > 0) {
        MP_ASSIGN_OR_RETURN(Field vf, v.Next());
        if (vf.number == 1 && vf.wire == kWireVarint) h.producer = static_cast<int64_t>(vf.value);
      }
    }
  }
  return h;
}

Result<BundleEntry> ParseEntry(std::span<const uint8_t> bytes, uint64_t max_rank) {
  BundleEntry e;
  Reader r(bytes);
  while (r.left() > 0) {
    MP_ASSIGN_OR_RETURN(Field f, r.Next());
    switch (f.number) {
      case 1:
        if (f.wire == kWireVarint) e.dtype = static_cast<int32_t>(f.value);
        break;
      case 2:
        if (f.wire == kWireLen) {
          e.dims.clear();
          MP_RETURN_IF_ERROR(ParseShape(f.bytes, max_rank, &e.dims, &e.unknown_rank));
        }
        break;
      case 3:
        if (f.wire == kWireVarint) e.shard_id = static_cast<int64_t>(f.value);
        break;
      case 4:
        if (f.wire == kWireVarint) e.offset = f.value;
        break;
      case 5:
        if (f.wire == kWireVarint) e.size = f.value;
        break;
      case 6:
        if (f.wire == kWireFixed32) e.crc32c = static_cast<uint32_t>(f.value);
        break;
      case 7:
        if (f.wire == kWireLen) ++e.num_slices;
        break;
      default:
        break;
    }
  }
  return e;
}

std::string SerializeHeader(const BundleHeader& header) {
  std::string out;
  if (header.num_shards != 0) PutVarintField(&out, 1, static_cast<uint64_t>(header.num_shards));
  if (header.endianness != 0) PutVarintField(&out, 2, static_cast<uint64_t>(header.endianness));
  std::string version;
  if (header.producer != 0) PutVarintField(&version, 1, static_cast<uint64_t>(header.producer));
  PutLenField(&out, 3, version);
  return out;
}

std::string SerializeEntry(const BundleEntry& entry) {
  std::string out;
  if (entry.dtype != 0) PutVarintField(&out, 1, static_cast<uint64_t>(entry.dtype));
  std::string shape;
  for (int64_t d : entry.dims) {
    std::string dim;
    if (d != 0) PutVarintField(&dim, 1, static_cast<uint64_t>(d));
    PutLenField(&shape, 2, dim);
  }
  PutLenField(&out, 2, shape);
  if (entry.shard_id != 0) PutVarintField(&out, 3, static_cast<uint64_t>(entry.shard_id));
  if (entry.offset != 0) PutVarintField(&out, 4, entry.offset);
  if (entry.size != 0) PutVarintField(&out, 5, entry.size);
  if (entry.crc32c != 0) {
    PutVarint(&out, (6 << 3) | kWireFixed32);
    PutLe32(&out, entry.crc32c);
  }
  return out;
}

std::string DataFileName(const std::string& prefix, int64_t shard, int64_t num_shards) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), ".data-%05lld-of-%05lld", static_cast<long long>(shard),
                static_cast<long long>(num_shards));
  return prefix + buf;
}

Result<std::string> ResolvePrefix(const std::string& path) {
  std::error_code ec;
  if (path.ends_with(".index") && fs::is_regular_file(path, ec)) {
    return path.substr(0, path.size() - 6);
  }
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::is_regular_file(dir / "variables.index", ec)) return (dir / "variables").string();
    if (fs::is_regular_file(dir / "variables" / "variables.index", ec)) {
      return (dir / "variables" / "variables").string();
    }
    std::optional<std::string> found;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().string();
      if (name.ends_with(".index") && entry.is_regular_file(ec)) {
        if (found) return InvalidArgument(path + ": folder holds several *.index bundles");
        found = name.substr(0, name.size() - 6);
      }
    }
    if (found) return *found;
    return NotFound(path + ": folder holds no tensor bundle (*.index)");
  }
  if (fs::is_regular_file(path + ".index", ec)) return path;
  return NotFound(path + ": no tensor bundle (" + path + ".index does not exist)");
}

// ---------------------------------------------------------------------------------------------
// Reader

Result<std::unique_ptr<BundleSource>> BundleSource::Open(const std::string& path,
                                                         const ReadOptions& options) {
  MP_ASSIGN_OR_RETURN(std::string prefix, ResolvePrefix(path));
  std::unique_ptr<BundleSource> source(new BundleSource());
  Status s = source->Init(prefix, options);
  if (!s.ok()) return std::move(s).WithContext(prefix + ".index");
  return source;
}

Status BundleSource::Init(const std::string& prefix, const ReadOptions& options) {
  prefix_ = prefix;
  MP_ASSIGN_OR_RETURN(std::string index, ReadSmallFile(prefix + ".index", options.max_index_bytes));
  MP_ASSIGN_OR_RETURN(std::vector<TableEntry> table,
                      ReadTable({reinterpret_cast<const uint8_t*>(index.data()), index.size()},
                                options.max_index_bytes, options.max_tensors + 1));
  if (table.empty() || !table[0].first.empty()) {
    return Corrupt("no header entry (key \"\"): not a tensor bundle index");
  }
  auto header = ParseHeader(
      {reinterpret_cast<const uint8_t*>(table[0].second.data()), table[0].second.size()});
  if (!header) return header.error().WithContext("header");
  header_ = *header;
  if (header_.endianness != 0) {
    return Unsupported("bundle is big-endian (only little-endian bundles are read)");
  }
  if (header_.num_shards < 1 || static_cast<uint64_t>(header_.num_shards) > options.max_shards) {
    return Corrupt("header num_shards " + std::to_string(header_.num_shards) +
                   " is not between 1 and " + Num(options.max_shards));
  }
  for (int64_t k = 0; k < header_.num_shards; ++k) {
    MP_ASSIGN_OR_RETURN(
        auto file, InputFile::Open(DataFileName(prefix, k, header_.num_shards), options.io_mode));
    shards_.push_back(std::move(file));
  }

  size_t strings = 0, slice_keys = 0;
  for (size_t i = 1; i < table.size(); ++i) {
    const std::string& name = table[i].first;
    if (name.size() > options.max_name_bytes) {
      return LimitExceeded("tensor name of " + Num(name.size()) + " bytes is over the limit of " +
                           Num(options.max_name_bytes));
    }
    auto entry = ParseEntry(
        {reinterpret_cast<const uint8_t*>(table[i].second.data()), table[i].second.size()},
        options.max_rank);
    if (!entry) return entry.error().WithContext("tensor " + Quote(name));
    BundleEntry e = std::move(*entry);
    e.name = name;
    const std::string where = "tensor " + Quote(name);
    if (e.shard_id < 0 || e.shard_id >= header_.num_shards) {
      return Corrupt(where + ": shard_id " + std::to_string(e.shard_id) +
                     " is not below num_shards " + std::to_string(header_.num_shards));
    }
    uint64_t end = 0;
    MP_RETURN_IF_ERROR(CheckedEnd(e.offset, e.size, &end).WithContext(where));
    const InputFile& shard = *shards_[static_cast<size_t>(e.shard_id)];
    if (end > shard.size()) {
      return Corrupt(where + ": bytes [" + Num(e.offset) + ", " + Num(end) +
                     ") are past the end of " + shard.path() + " (" + Num(shard.size()) +
                     " bytes)");
    }
    entries_.push_back(std::move(e));
    const BundleEntry& be = entries_.back();
    // Slices of partitioned variables are stored under encoded keys starting with a zero byte.
    if (!name.empty() && name[0] == '\0') {
      ++slice_keys;
      continue;
    }
    if (be.num_slices > 0) {
      partitioned_.push_back(name);
      continue;
    }
    if (name == kMetadataKey && be.dtype == kDtString && be.dims.empty()) {
      MP_ASSIGN_OR_RETURN(auto raw, RawBytes(be));
      auto text = DecodeStringScalar(raw->span(), be.crc32c);
      if (!text) return text.error().WithContext(where);
      auto json = ParseStrictJson(*text, "metadata");
      if (!json) return json.error().WithContext(where);
      if (!json->is_object()) return Corrupt(where + ": metadata is not a JSON object");
      metadata_ = std::move(*json);
      continue;
    }
    if (be.dtype == kDtString) {
      ++strings;
      notes_.push_back("string tensor " + Quote(name) + " (" + Num(be.size) +
                       " bytes) is not read: modelport tensors hold numbers");
      continue;
    }
    auto dtype = DTypeFromTf(be.dtype);
    if (!dtype) {
      notes_.push_back(where + " is not read: " + dtype.error().message());
      continue;
    }
    if (be.unknown_rank) return Corrupt(where + ": shape has unknown rank");
    std::vector<uint64_t> dims;
    for (int64_t d : be.dims) {
      if (d < 0) return Corrupt(where + ": shape has negative dimension " + std::to_string(d));
      dims.push_back(static_cast<uint64_t>(d));
    }
    auto info = TensorInfo::Make(name, *dtype, Shape(std::move(dims)));
    if (!info) return info.error().WithContext(where);
    if (info->byte_size != be.size) {
      return Corrupt(where + ": size " + Num(be.size) + " but " + std::string(DTypeName(*dtype)) +
                     " " + info->shape.ToString() + " needs " + Num(info->byte_size));
    }
    infos_.push_back(std::move(*info));
    tensor_entry_.push_back(entries_.size() - 1);
  }
  (void)strings;
  if (!partitioned_.empty()) {
    std::string names;
    for (const auto& n : partitioned_) names += (names.empty() ? "" : ", ") + Quote(n);
    notes_.push_back(Num(partitioned_.size()) + " partitioned (sliced) variable(s) not read: " +
                     names + " (" + Num(slice_keys) + " slice entries)");
  }
  return Status::Ok();
}

Result<std::shared_ptr<Buffer>> BundleSource::RawBytes(const BundleEntry& entry) const {
  return shards_[static_cast<size_t>(entry.shard_id)]->Read(entry.offset, entry.size);
}

Status BundleSource::Verify(size_t index, std::span<const uint8_t> bytes) const {
  const BundleEntry& e = entries_[tensor_entry_[index]];
  const uint32_t actual = Crc32c(bytes);
  const uint32_t stored = UnmaskCrc(e.crc32c);
  if (actual == stored) return Status::Ok();
  return ChecksumMismatch(shards_[static_cast<size_t>(e.shard_id)]->path() + ": tensor " +
                          Quote(e.name) + ": crc32c of its " + Num(bytes.size()) + " bytes is " +
                          Num(actual) + ", the index says " + Num(stored));
}

Result<TensorView> BundleSource::Load(size_t index) const {
  if (index >= infos_.size()) return NotFound("tensor #" + Num(index));
  const TensorInfo& info = infos_[index];
  auto data = RawBytes(entries_[tensor_entry_[index]]);
  if (!data) return data.error().WithContext("tensor " + Quote(info.name));
  MP_RETURN_IF_ERROR(Verify(index, (*data)->span()));
  MP_ASSIGN_OR_RETURN(std::shared_ptr<Buffer> bytes, AlignedFor(info.dtype, std::move(*data)));
  return TensorView{info, std::move(bytes)};
}

Status BundleSource::LoadInto(size_t index, std::span<uint8_t> dest) const {
  if (index >= infos_.size()) return NotFound("tensor #" + Num(index));
  const TensorInfo& info = infos_[index];
  if (dest.size() != info.byte_size) {
    return InvalidArgument("tensor " + Quote(info.name) + ": destination holds " +
                           Num(dest.size()) + " bytes, tensor has " + Num(info.byte_size));
  }
  const BundleEntry& e = entries_[tensor_entry_[index]];
  MP_RETURN_IF_ERROR(
      shards_[static_cast<size_t>(e.shard_id)]->ReadInto(e.offset, e.size, dest.data()));
  return Verify(index, dest);
}

ModelFiles BundleSource::files() const {
  ModelFiles f;
  f.index = prefix_ + ".index";
  for (const auto& s : shards_) f.files.push_back(s->path());
  return f;
}

// ---------------------------------------------------------------------------------------------
// Writer

Status WriteBundle(const std::string& prefix, std::vector<BundleItem> items,
                   const WriteOptions& options) {
  std::sort(items.begin(), items.end(),
            [](const BundleItem& a, const BundleItem& b) { return a.name < b.name; });
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].name.empty()) return InvalidArgument("a tensor bundle entry needs a name");
    if (i > 0 && items[i].name == items[i - 1].name) {
      return InvalidArgument("tensor " + Quote(items[i].name) + " is given twice");
    }
  }
  // Shards: greedy in key order, a new one when the next tensor would push a non-empty shard
  // past shard_size (a larger tensor gets a shard of its own).
  std::vector<int64_t> shard_of(items.size(), 0);
  int64_t num_shards = 1;
  uint64_t in_shard = 0, bytes_total = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (options.shard_size > 0 && in_shard > 0 && items[i].bytes > options.shard_size - in_shard) {
      ++num_shards;
      in_shard = 0;
    }
    in_shard += std::min(items[i].bytes, options.shard_size > 0 ? options.shard_size : UINT64_MAX);
    shard_of[i] = num_shards - 1;
    bytes_total += items[i].bytes;
  }
  const std::string index_path = prefix + ".index";
  std::error_code ec;
  if (options.no_overwrite && fs::exists(index_path, ec)) {
    return AlreadyExists(index_path + ": exists");
  }
  std::vector<std::unique_ptr<AtomicFile>> shards;
  for (int64_t k = 0; k < num_shards; ++k) {
    const std::string path = DataFileName(prefix, k, num_shards);
    if (options.no_overwrite && fs::exists(path, ec)) return AlreadyExists(path + ": exists");
    MP_ASSIGN_OR_RETURN(auto file, AtomicFile::Create(path));
    shards.push_back(std::move(file));
  }
  std::vector<TableEntry> table;
  BundleHeader header;
  header.num_shards = num_shards;
  header.producer = 1;
  table.emplace_back("", SerializeHeader(header));
  uint64_t bytes_done = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    BundleItem& item = items[i];
    auto bytes = item.load();
    if (!bytes) return bytes.error().WithContext("tensor " + Quote(item.name));
    if ((*bytes)->size() != item.bytes) {
      return Internal("tensor " + Quote(item.name) + " loaded " + Num((*bytes)->size()) +
                      " bytes, " + Num(item.bytes) + " expected");
    }
    AtomicFile& data = *shards[static_cast<size_t>(shard_of[i])];
    BundleEntry e;
    e.dtype = item.dtype;
    e.dims = item.dims;
    e.shard_id = shard_of[i];
    e.offset = data.bytes_written();
    e.size = (*bytes)->size();
    e.crc32c = item.keep_crc32c ? *item.keep_crc32c : MaskCrc(Crc32c((*bytes)->span()));
    MP_RETURN_IF_ERROR(data.Write((*bytes)->data(), (*bytes)->size()));
    bytes_done += e.size;
    table.emplace_back(item.name, SerializeEntry(e));
    if (options.progress) options.progress(i + 1, items.size(), bytes_done, bytes_total);
  }
  const std::string index_bytes = BuildTable(table);
  MP_ASSIGN_OR_RETURN(auto index, AtomicFile::Create(index_path));
  MP_RETURN_IF_ERROR(index->Write(index_bytes.data(), index_bytes.size()));
  // Data first, index last: a reader never sees an index whose shards are not in place.
  for (auto& shard : shards) MP_RETURN_IF_ERROR(shard->Commit(options.durable));
  return index->Commit(options.durable);
}

std::string EncodeStringScalar(std::string_view value, uint32_t* crc) {
  std::string out;
  PutVarint(&out, value.size());
  // TF's checksum covers each length as a fixed-width integer (4 bytes while it fits), then
  // the stored masked length checksum, then the string bytes.
  uint8_t len[8];
  const size_t width = value.size() <= UINT32_MAX ? 4 : 8;
  for (size_t i = 0; i < width; ++i)
    len[i] = static_cast<uint8_t>(uint64_t{value.size()} >> (8 * i));
  uint32_t c = Crc32c({len, width});
  PutLe32(&out, MaskCrc(c));
  c = Crc32c({reinterpret_cast<const uint8_t*>(out.data()) + out.size() - 4, 4}, c);
  out += value;
  c = Crc32c({reinterpret_cast<const uint8_t*>(value.data()), value.size()}, c);
  *crc = MaskCrc(c);
  return out;
}

Result<std::string> DecodeStringScalar(std::span<const uint8_t> bytes, uint32_t stored_crc) {
  Reader r(bytes);
  MP_ASSIGN_OR_RETURN(uint64_t length, r.Varint());
  MP_ASSIGN_OR_RETURN(auto length_crc, r.Bytes(4));
  MP_ASSIGN_OR_RETURN(auto value, r.Bytes(length));
  if (r.left() != 0) return Corrupt("string tensor has " + Num(r.left()) + " bytes past its end");
  uint32_t check = 0;
  std::string text = EncodeStringScalar(AsString(value), &check);
  if (check != stored_crc ||
      std::memcmp(text.data() + text.size() - value.size() - 4, length_crc.data(), 4) != 0) {
    return ChecksumMismatch("string tensor's crc32c does not match its bytes");
  }
  return AsString(value);
}

Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options) {
  return BundleSource::Open(path, options);
}

Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options) {
  std::string prefix = path;
  std::error_code ec;
  if (path.ends_with(".index")) {
    prefix = path.substr(0, path.size() - 6);
  } else if (fs::is_directory(path, ec) || path.ends_with("/")) {
    prefix = (fs::path(path) / "variables").string();
  }
  std::vector<BundleItem> items;
  const auto& infos = source.tensors();
  for (size_t i = 0; i < infos.size(); ++i) {
    const TensorInfo& info = infos[i];
    const auto tf = TfFromDType(info.dtype);
    if (!tf) {
      return Unsupported("tensor " + Quote(info.name) + ": a tensor bundle cannot store dtype " +
                         std::string(DTypeName(info.dtype)) +
                         (IsQuantized(info.dtype) ? "; dequantize it first" : ""));
    }
    BundleItem item;
    item.name = info.name;
    item.dtype = *tf;
    item.bytes = info.byte_size;
    for (uint64_t d : info.shape.dims()) item.dims.push_back(static_cast<int64_t>(d));
    item.load = [&source, i]() -> Result<std::shared_ptr<Buffer>> {
      MP_ASSIGN_OR_RETURN(TensorView t, source.Load(i));
      if (t.data->size() != source.tensors()[i].byte_size) {
        return Internal("loaded with another size than its index says");
      }
      return t.data;
    };
    items.push_back(std::move(item));
  }
  // Metadata rides along as a string scalar, as TF keeps its object graph; TF's restore
  // ignores keys no variable asks for.
  if (source.metadata().is_object() && !source.metadata().empty()) {
    std::string json;
    try {
      json = source.metadata().dump(-1, ' ', false, Json::error_handler_t::strict);
    } catch (const Json::exception& e) {
      return InvalidArgument("metadata is not valid UTF-8: " + std::string(e.what()));
    }
    BundleItem item;
    item.name = std::string(kMetadataKey);
    item.dtype = kDtString;
    uint32_t crc = 0;
    auto bytes = std::make_shared<std::string>(EncodeStringScalar(json, &crc));
    item.bytes = bytes->size();
    item.keep_crc32c = crc;
    item.load = [bytes]() -> Result<std::shared_ptr<Buffer>> {
      return Buffer::Wrap(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size(), bytes);
    };
    items.push_back(std::move(item));
  }
  return WriteBundle(prefix, std::move(items), options);
}

bool Detect(std::span<const uint8_t> prefix, uint64_t file_size) {
  // The first entry of the first block is the header: shared 0, key length 0, a short value
  // starting with field 1 (num_shards) or 3 (version). Snappy blocks start with their length
  // and a literal holding the same bytes.
  if (file_size < kFooterSize + kTrailerSize || prefix.size() < 6) return false;
  auto header_entry = [](std::span<const uint8_t> p) {
    return p.size() >= 4 && p[0] == 0 && p[1] == 0 && p[2] > 0 && p[2] < 64 &&
           (p[3] == 0x08 || p[3] == 0x10 || p[3] == 0x1a);
  };
  if (header_entry(prefix)) return true;
  size_t pos = 0;
  while (pos < prefix.size() && pos < 5 && (prefix[pos] & 0x80)) ++pos;
  ++pos;  // past the varint's last byte
  if (pos >= prefix.size() || (prefix[pos] & 3) != 0) return false;
  const size_t skip = (prefix[pos] >> 2) >= 60 ? (prefix[pos] >> 2) - 59 : 0;
  pos += 1 + skip;
  return pos < prefix.size() && header_entry(prefix.subspan(pos));
}

bool DetectDir(const std::string& dir) {
  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / "saved_model.pb", ec)) return false;
  return ResolvePrefix(dir).has_value();
}

}  // namespace mp::tf
