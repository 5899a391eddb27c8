#include "modelport/formats/zip/zip.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "modelport/core/parallel.h"

namespace mp::zip {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kDescriptorSig = 0x08074b50;
constexpr uint64_t kLocalSize = 30;
constexpr uint64_t kCentralSize = 46;
constexpr uint64_t kEndSize = 22;
constexpr uint64_t kZip64EndSize = 56;
constexpr uint64_t kZip64LocatorSize = 20;
constexpr uint32_t kMax32 = 0xFFFFFFFF;
constexpr uint16_t kMax16 = 0xFFFF;
constexpr uint16_t kZip64ExtraId = 0x0001;
// PyTorch's padding extra field id ("FB"), filled with 'Z'.
constexpr uint16_t kPaddingExtraId = 0x4246;

constexpr uint16_t kFlagEncrypted = 1u << 0;
constexpr uint16_t kFlagDescriptor = 1u << 3;
constexpr uint16_t kFlagPatched = 1u << 5;
constexpr uint16_t kFlagStrongEncryption = 1u << 6;
constexpr uint16_t kFlagUtf8 = 1u << 11;
constexpr uint16_t kFlagMaskedHeaders = 1u << 13;

// DOS date of 1980-01-01 (day 1, month 1, year 0) at 00:00:00.
constexpr uint16_t kDosDate = (1u << 5) | 1u;
constexpr uint16_t kDosTime = 0;

uint16_t U16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t U32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
uint64_t U64(const uint8_t* p) { return uint64_t{U32(p)} | (uint64_t{U32(p + 4)} << 32); }

std::string Quote(std::string_view s) { return QuoteName(s); }
std::string Num(uint64_t v) { return std::to_string(v); }

// A bounded cursor over an extra-field block.
struct ExtraField {
  uint16_t id;
  const uint8_t* data;
  uint16_t size;
};

Result<std::vector<ExtraField>> ParseExtras(const uint8_t* p, size_t n) {
  std::vector<ExtraField> out;
  size_t at = 0;
  while (at < n) {
    // Fewer than 4 stray bytes (alignment padding by some tools) are ignored, as zipfile does.
    if (n - at < 4) break;
    const uint16_t id = U16(p + at);
    const uint16_t len = U16(p + at + 2);
    if (len > n - at - 4) {
      return Corrupt("extra field " + Num(id) + " of " + Num(len) +
                     " bytes runs past the extra block");
    }
    out.push_back({id, p + at + 4, len});
    at += 4 + len;
  }
  return out;
}

// Replaces the 0xFFFFFFFF (0xFFFF for disk) values among `fields` with those from the ZIP64
// extra field, which holds exactly the sentinel-valued fields in this order.
struct Zip64Fields {
  uint64_t* usize;
  uint64_t* csize;
  uint64_t* offset;  // may be null (local headers)
  uint32_t* disk;    // may be null
};

Status ApplyZip64(const std::vector<ExtraField>& extras, const Zip64Fields& f, bool* present) {
  const ExtraField* z = nullptr;
  for (const auto& e : extras) {
    if (e.id != kZip64ExtraId) continue;
    if (z != nullptr) return Corrupt("two ZIP64 extra fields");
    z = &e;
  }
  *present = z != nullptr;
  size_t at = 0;
  auto take = [&](uint64_t* v, uint64_t sentinel, size_t width, const char* what) -> Status {
    if (v == nullptr || *v != sentinel) return Status::Ok();
    if (z == nullptr || z->size - at < width) {
      return Corrupt(std::string(what) + " is 0x" + (width == 8 ? "FFFFFFFF" : "FFFF") +
                     " but the ZIP64 extra field does not hold it");
    }
    *v = width == 8 ? U64(z->data + at) : U32(z->data + at);
    at += width;
    return Status::Ok();
  };
  MP_RETURN_IF_ERROR(take(f.usize, kMax32, 8, "uncompressed size"));
  MP_RETURN_IF_ERROR(take(f.csize, kMax32, 8, "compressed size"));
  MP_RETURN_IF_ERROR(take(f.offset, kMax32, 8, "local header offset"));
  if (f.disk != nullptr) {
    uint64_t d = *f.disk;
    MP_RETURN_IF_ERROR(take(&d, kMax16, 4, "disk number"));
    *f.disk = static_cast<uint32_t>(d);
  }
  return Status::Ok();
}

bool IsSeparator(char c, bool allow_backslash) {
  return c == '/' || (allow_backslash && c == '\\');
}

// Little-endian byte sink for headers.
class Bytes {
 public:
  void U16(uint16_t v) { Put(v, 2); }
  void U32(uint32_t v) { Put(v, 4); }
  void U64(uint64_t v) { Put(v, 8); }
  void Append(std::string_view s) { b_.insert(b_.end(), s.begin(), s.end()); }
  const std::vector<uint8_t>& data() const { return b_; }

 private:
  void Put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> b_;
};

}  // namespace

uint32_t Crc32(std::span<const uint8_t> data, uint32_t crc) {
  // zlib's CRC runs near 4 GB/s on one core, as slow as the copy it checks: large entries are
  // split across threads and the pieces combined (crc32_combine).
  constexpr size_t kParallelFrom = size_t{16} << 20;
  const unsigned threads = WorkerCount();
  if (data.size() < kParallelFrom || threads < 2) {
    return static_cast<uint32_t>(::crc32_z(crc, data.data(), data.size()));
  }
  const size_t piece = (data.size() + threads - 1) / threads;
  std::vector<uint32_t> crcs(threads, 0);
  (void)ParallelFor(threads, [&](size_t i) {
    const std::span<const uint8_t> part =
        data.subspan(std::min(i * piece, data.size()),
                     std::min(piece, data.size() - std::min(i * piece, data.size())));
    crcs[i] = static_cast<uint32_t>(::crc32_z(i == 0 ? crc : 0, part.data(), part.size()));
    return Status::Ok();
  });
  uint32_t out = crcs[0];
  for (size_t i = 1; i < threads; ++i) {
    const size_t begin = std::min(i * piece, data.size());
    out = Crc32Combine(out, crcs[i], std::min(piece, data.size() - begin));
  }
  return out;
}

uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  // crc32_combine takes a signed length; combine in steps that fit.
  constexpr uint64_t kStep = uint64_t{1} << 62;
  uint32_t zero_crc_of_len = crc_a;
  while (len_b > kStep) {
    zero_crc_of_len =
        static_cast<uint32_t>(::crc32_combine64(zero_crc_of_len, 0, static_cast<z_off64_t>(kStep)));
    len_b -= kStep;
  }
  return static_cast<uint32_t>(
      ::crc32_combine64(zero_crc_of_len, crc_b, static_cast<z_off64_t>(len_b)));
}

std::string QuoteName(std::string_view name) {
  constexpr size_t kMaxShown = 200;
  std::string out = "'";
  for (size_t i = 0; i < name.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (name.size() > kMaxShown) out += "...";
  return out + "'";
}

Status CheckName(std::string_view name, bool allow_backslash) {
  if (name.empty()) return Unsafe("entry name is empty");
  if (name.find('\0') != std::string_view::npos) {
    return Unsafe("entry name " + Quote(name.substr(0, name.find('\0'))) + "... holds a NUL byte");
  }
  if (!allow_backslash && name.find('\\') != std::string_view::npos) {
    return Unsafe("entry name " + Quote(name) + " holds a backslash (a Windows path separator)");
  }
  if (IsSeparator(name[0], allow_backslash) ||
      (name.size() >= 2 && name[1] == ':' && std::isalpha(static_cast<unsigned char>(name[0])))) {
    return Unsafe("entry name " + Quote(name) + " is an absolute path");
  }
  size_t start = 0;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || IsSeparator(name[i], allow_backslash)) {
      if (name.substr(start, i - start) == "..") {
        return Unsafe("entry name " + Quote(name) + " has a '..' component (escapes its folder)");
      }
      start = i + 1;
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Reader

Result<std::unique_ptr<Reader>> Reader::Open(std::shared_ptr<InputFile> file,
                                             const ReaderOptions& options) {
  std::unique_ptr<Reader> reader(new Reader());
  reader->file_ = std::move(file);
  reader->options_ = options;
  Status s = reader->Parse();
  if (!s.ok()) return std::move(s).WithContext(reader->file_->path());
  return reader;
}

std::optional<size_t> Reader::Find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

Status Reader::Parse() {
  const uint64_t size = file_->size();
  if (size < kEndSize) {
    return Corrupt("file is " + Num(size) + " bytes, too short for a zip end-of-central-" +
                   "directory record");
  }
  // The end record is the last 22 bytes plus a comment of up to 65535 bytes; the record found
  // must account for the rest of the file exactly (a record-like pattern inside the comment does
  // not).
  const uint64_t tail_len = std::min<uint64_t>(size, kEndSize + kMax16);
  const uint64_t tail_start = size - tail_len;
  MP_ASSIGN_OR_RETURN(auto tail, file_->Read(tail_start, tail_len));
  const uint8_t* t = tail->data();
  std::optional<uint64_t> end_at;
  for (uint64_t i = tail_len - kEndSize + 1; i-- > 0;) {
    if (U32(t + i) == kEndSig && U16(t + i + 20) == tail_len - i - kEndSize) {
      end_at = i;
      break;
    }
  }
  if (!end_at) {
    return Corrupt("no zip end-of-central-directory record (not a zip file, or truncated)");
  }
  const uint8_t* end = t + *end_at;
  const uint64_t end_pos = tail_start + *end_at;
  comment_.assign(reinterpret_cast<const char*>(end + kEndSize), U16(end + 20));
  uint32_t disk = U16(end + 4), cd_disk = U16(end + 6);
  uint64_t count_disk = U16(end + 8), count = U16(end + 10);
  uint64_t cd_size = U32(end + 12), cd_offset = U32(end + 16);
  uint64_t dir_end = end_pos;

  if (end_pos >= kZip64LocatorSize) {
    uint8_t loc[kZip64LocatorSize];
    MP_RETURN_IF_ERROR(file_->ReadInto(end_pos - kZip64LocatorSize, kZip64LocatorSize, loc));
    if (U32(loc) == kZip64LocatorSig) {
      const uint64_t loc_pos = end_pos - kZip64LocatorSize;
      const uint64_t rec_pos = U64(loc + 8);
      if (U32(loc + 4) != 0 || U32(loc + 16) > 1) {
        return Unsupported("multi-disk (spanned) zip archives are not supported");
      }
      if (rec_pos > loc_pos || loc_pos - rec_pos < kZip64EndSize) {
        return Corrupt("ZIP64 end record offset " + Num(rec_pos) + " is out of range");
      }
      uint8_t rec[kZip64EndSize];
      MP_RETURN_IF_ERROR(file_->ReadInto(rec_pos, kZip64EndSize, rec));
      if (U32(rec) != kZip64EndSig) {
        return Corrupt("no ZIP64 end record at offset " + Num(rec_pos) +
                       " where the locator points");
      }
      if (U64(rec + 4) != loc_pos - rec_pos - 12) {
        return Corrupt("ZIP64 end record size " + Num(U64(rec + 4)) +
                       " does not reach the locator");
      }
      const uint32_t disk64 = U32(rec + 16), cd_disk64 = U32(rec + 20);
      const uint64_t count_disk64 = U64(rec + 24), count64 = U64(rec + 32);
      const uint64_t cd_size64 = U64(rec + 40), cd_offset64 = U64(rec + 48);
      // A 32-bit field either repeats the ZIP64 value or holds the sentinel.
      auto agree = [](uint64_t v32, uint64_t v64, uint64_t sentinel) {
        return v32 == sentinel || v32 == v64;
      };
      if (!agree(count, count64, kMax16) || !agree(count_disk, count_disk64, kMax16) ||
          !agree(cd_size, cd_size64, kMax32) || !agree(cd_offset, cd_offset64, kMax32)) {
        return Corrupt("end record and ZIP64 end record disagree about the central directory");
      }
      disk = disk64;
      cd_disk = cd_disk64;
      count_disk = count_disk64;
      count = count64;
      cd_size = cd_size64;
      cd_offset = cd_offset64;
      dir_end = rec_pos;
    }
  }
  if (disk != 0 || cd_disk != 0 || count_disk != count) {
    return Unsupported("multi-disk (spanned) zip archives are not supported");
  }
  if (count > options_.max_entries) {
    return LimitExceeded(Num(count) + " entries is over the limit of " + Num(options_.max_entries));
  }
  if (cd_offset > dir_end || cd_size != dir_end - cd_offset) {
    return Corrupt("central directory at offset " + Num(cd_offset) + " of " + Num(cd_size) +
                   " bytes does not end where the end record begins (" + Num(dir_end) + ")");
  }
  if (count > cd_size / kCentralSize) {
    return Corrupt(Num(count) + " entries cannot fit a central directory of " + Num(cd_size) +
                   " bytes");
  }
  return ParseCentral(cd_offset, cd_size, count);
}

Status Reader::EntryError(const Entry& e, Status s) const {
  return std::move(s).WithContext("entry " + Quote(e.name));
}

Status Reader::ParseCentral(uint64_t cd_offset, uint64_t cd_size, uint64_t count) {
  MP_ASSIGN_OR_RETURN(auto cd, file_->Read(cd_offset, cd_size));
  const uint8_t* p = cd->data();
  // Pass 1, structure: every record in bounds and the records fill the directory exactly, so a
  // damaged length is reported as damage before any name is judged.
  std::vector<uint32_t> disks;
  uint64_t at = 0;
  entries_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    const std::string where = "central directory record #" + Num(i);
    if (cd_size - at < kCentralSize || U32(p + at) != kCentralSig) {
      return Corrupt(where + " at offset " + Num(cd_offset + at) + " is missing or truncated");
    }
    const uint8_t* r = p + at;
    Entry e;
    e.flags = U16(r + 8);
    e.method = U16(r + 10);
    e.crc32 = U32(r + 16);
    e.compressed_size = U32(r + 20);
    e.size = U32(r + 24);
    const uint64_t name_len = U16(r + 28), extra_len = U16(r + 30), comment_len = U16(r + 32);
    uint32_t disk = U16(r + 34);
    e.local_header_offset = U32(r + 42);
    if (cd_size - at - kCentralSize < name_len + extra_len + comment_len) {
      return Corrupt(where + " runs past the central directory");
    }
    if (name_len > options_.max_name_bytes) {
      return LimitExceeded(where + ": name of " + Num(name_len) + " bytes is over the limit of " +
                           Num(options_.max_name_bytes));
    }
    e.name.assign(reinterpret_cast<const char*>(r + kCentralSize), name_len);
    auto extras = ParseExtras(r + kCentralSize + name_len, extra_len);
    if (!extras) return EntryError(e, extras.error());
    bool zip64 = false;
    Status s =
        ApplyZip64(*extras, {&e.size, &e.compressed_size, &e.local_header_offset, &disk}, &zip64);
    if (!s.ok()) return EntryError(e, std::move(s));
    at += kCentralSize + name_len + extra_len + comment_len;
    disks.push_back(disk);
    entries_.push_back(std::move(e));
  }
  if (at != cd_size) {
    return Corrupt("central directory has " + Num(cd_size - at) + " bytes after its " + Num(count) +
                   " records");
  }
  // Pass 2, meaning: names, features, and agreement with the local headers.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (size_t i = 0; i < entries_.size(); ++i) {
    Entry& e = entries_[i];
    MP_RETURN_IF_ERROR(CheckEntryName(e.name));
    if (!by_name_.emplace(e.name, i).second) {
      return Unsafe("entry name " + Quote(e.name) + " appears twice (readers disagree on which " +
                    "one counts)");
    }
    if (e.flags & (kFlagEncrypted | kFlagStrongEncryption | kFlagMaskedHeaders)) {
      return EntryError(e, Unsupported("entry is encrypted"));
    }
    if (e.flags & kFlagPatched) return EntryError(e, Unsupported("entry is patched data"));
    if (e.method != kStored && e.method != kDeflated) {
      return EntryError(e, Unsupported("compression method " + Num(e.method) +
                                       " is not supported (only stored and deflate)"));
    }
    if (disks[i] != 0) return EntryError(e, Unsupported("entry starts on disk " + Num(disks[i])));
    if (e.method == kStored && e.compressed_size != e.size) {
      return EntryError(e, Corrupt("stored entry has compressed size " + Num(e.compressed_size) +
                                   " but size " + Num(e.size)));
    }
    uint64_t entry_end = 0;
    Status s = CheckLocal(e, entry_end);
    if (!s.ok()) return EntryError(e, std::move(s));
    if (entry_end > cd_offset) {
      return EntryError(
          e, Corrupt("data ends at " + Num(entry_end) + ", inside the central directory (offset " +
                     Num(cd_offset) + ")"));
    }
    ranges.emplace_back(e.local_header_offset, entry_end);
  }
  return CheckLayout(ranges);
}

Status Reader::CheckEntryName(const std::string& name) const {
  return CheckName(name, options_.allow_backslash);
}

Status Reader::CheckLocal(Entry& e, uint64_t& end) const {
  const uint64_t size = file_->size();
  const uint64_t lho = e.local_header_offset;
  if (lho > size || size - lho < kLocalSize) {
    return Corrupt("local header offset " + Num(lho) + " is out of range (file is " + Num(size) +
                   " bytes)");
  }
  uint8_t h[kLocalSize];
  MP_RETURN_IF_ERROR(file_->ReadInto(lho, kLocalSize, h));
  if (U32(h) != kLocalSig) return Corrupt("no local header at offset " + Num(lho));
  const uint16_t flags = U16(h + 6), method = U16(h + 8);
  const uint64_t name_len = U16(h + 26), extra_len = U16(h + 28);
  if (size - lho - kLocalSize < name_len + extra_len) {
    return Corrupt("local header at offset " + Num(lho) + " runs past the end of the file");
  }
  MP_ASSIGN_OR_RETURN(auto var, file_->Read(lho + kLocalSize, name_len + extra_len));
  const std::string_view local_name(reinterpret_cast<const char*>(var->data()), name_len);
  if (local_name != e.name) {
    return Corrupt("local header names it " + Quote(local_name) +
                   " (central directory and local header disagree)");
  }
  if (method != e.method) {
    return Corrupt("local header says method " + Num(method) + ", central directory says " +
                   Num(e.method));
  }
  // The central directory was checked already: an encryption bit set only here is tampering.
  if (flags & (kFlagEncrypted | kFlagStrongEncryption | kFlagMaskedHeaders)) {
    return Corrupt("local header says encrypted, central directory does not (they disagree)");
  }
  if ((flags & kFlagDescriptor) != (e.flags & kFlagDescriptor)) {
    return Corrupt("local header and central directory disagree about the data descriptor flag");
  }
  MP_ASSIGN_OR_RETURN(auto extras, ParseExtras(var->data() + name_len, extra_len));
  uint64_t csize = U32(h + 18), usize = U32(h + 22);
  bool zip64 = false;
  MP_RETURN_IF_ERROR(ApplyZip64(extras, {&usize, &csize, nullptr, nullptr}, &zip64));
  e.data_offset = lho + kLocalSize + name_len + extra_len;
  if (!(flags & kFlagDescriptor)) {
    if (U32(h + 14) != e.crc32 || csize != e.compressed_size || usize != e.size) {
      return Corrupt("local header (crc " + Num(U32(h + 14)) + ", sizes " + Num(csize) + "/" +
                     Num(usize) + ") disagrees with the central directory (crc " + Num(e.crc32) +
                     ", sizes " + Num(e.compressed_size) + "/" + Num(e.size) + ")");
    }
  }
  if (e.compressed_size > size - e.data_offset) {
    return Corrupt("data of " + Num(e.compressed_size) + " bytes at offset " + Num(e.data_offset) +
                   " runs past the end of the file (" + Num(size) + " bytes)");
  }
  end = e.data_offset + e.compressed_size;
  if (flags & kFlagDescriptor) {
    // [signature]? crc32 csize usize; sizes are 8 bytes when the local header used ZIP64.
    const uint64_t width = zip64 ? 8 : 4;
    uint8_t d[4 + 4 + 16] = {};
    const uint64_t avail = std::min<uint64_t>(sizeof d, size - end);
    MP_RETURN_IF_ERROR(file_->ReadInto(end, avail, d));
    const uint64_t sig = avail >= 4 && U32(d) == kDescriptorSig ? 4 : 0;
    const uint64_t need = sig + 4 + 2 * width;
    if (avail < need) return Corrupt("data descriptor runs past the end of the file");
    const uint8_t* q = d + sig;
    const uint64_t dc = width == 8 ? U64(q + 4) : U32(q + 4);
    const uint64_t du = width == 8 ? U64(q + 4 + width) : U32(q + 4 + width);
    if (U32(q) != e.crc32 || dc != e.compressed_size || du != e.size) {
      return Corrupt("data descriptor (crc " + Num(U32(q)) + ", sizes " + Num(dc) + "/" + Num(du) +
                     ") disagrees with the central directory (crc " + Num(e.crc32) + ", sizes " +
                     Num(e.compressed_size) + "/" + Num(e.size) + ")");
    }
    end += need;
  }
  return Status::Ok();
}

Status Reader::CheckLayout(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) const {
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  for (size_t k = 1; k < order.size(); ++k) {
    const auto& prev = ranges[order[k - 1]];
    const auto& cur = ranges[order[k]];
    if (cur.first < prev.second) {
      return Corrupt("entry " + Quote(entries_[order[k]].name) + " (bytes " + Num(cur.first) +
                     ".." + Num(cur.second) + ") overlaps entry " +
                     Quote(entries_[order[k - 1]].name) + " (bytes " + Num(prev.first) + ".." +
                     Num(prev.second) + ")");
    }
  }
  return Status::Ok();
}

Status Reader::Inflate(const Entry& e, std::span<uint8_t> dest, bool whole) const {
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) return Internal("zlib inflateInit2 failed");
  struct End {
    z_stream* zs;
    ~End() { inflateEnd(zs); }
  } end{&zs};
  constexpr uint64_t kChunk = uint64_t{4} << 20;
  uint64_t in_done = 0, out_done = 0;
  std::shared_ptr<Buffer> in;
  uint8_t overflow = 0;
  while (true) {
    if (zs.avail_in == 0 && in_done < e.compressed_size) {
      const uint64_t n = std::min(kChunk, e.compressed_size - in_done);
      MP_ASSIGN_OR_RETURN(in, file_->Read(e.data_offset + in_done, n));
      zs.next_in = const_cast<Bytef*>(in->data());
      zs.avail_in = static_cast<uInt>(n);
      in_done += n;
    }
    const uint64_t room = dest.size() - out_done;
    if (room == 0 && !whole) return Status::Ok();
    zs.next_out = room == 0 ? &overflow : dest.data() + out_done;
    zs.avail_out = room == 0 ? 1 : static_cast<uInt>(std::min<uint64_t>(room, uint64_t{1} << 30));
    const uInt before = zs.avail_out;
    const int ret = inflate(&zs, Z_NO_FLUSH);
    const uint64_t produced = before - zs.avail_out;
    if (room == 0 && produced > 0) {
      return Corrupt("deflate data inflates to more than the " + Num(e.size) +
                     " bytes the central directory declares");
    }
    out_done += produced;
    if (ret == Z_STREAM_END) {
      if (out_done != dest.size()) {
        return Corrupt("deflate data inflates to " + Num(out_done) + " bytes, the central " +
                       "directory declares " + Num(e.size));
      }
      const uint64_t left = zs.avail_in + (e.compressed_size - in_done);
      if (left != 0) return Corrupt(Num(left) + " bytes follow the end of the deflate stream");
      return Status::Ok();
    }
    if (ret == Z_BUF_ERROR && zs.avail_in == 0 && in_done == e.compressed_size) {
      return Corrupt("deflate stream is truncated (no end-of-stream marker)");
    }
    if (ret != Z_OK && ret != Z_BUF_ERROR) {
      return Corrupt(std::string("deflate data is invalid: ") + (zs.msg ? zs.msg : "zlib error"));
    }
  }
}

namespace {
Status CheckInflateLimits(const Entry& e, const ReaderOptions& o) {
  if (e.size > o.max_inflated_bytes) {
    return LimitExceeded("inflates to " + Num(e.size) + " bytes, over the limit of " +
                         Num(o.max_inflated_bytes));
  }
  constexpr uint64_t kRatioFloor = uint64_t{1} << 20;
  if (e.size > kRatioFloor &&
      e.size / std::max<uint64_t>(e.compressed_size, 1) >= o.max_expansion_ratio) {
    return LimitExceeded("expands " + Num(e.compressed_size) + " bytes to " + Num(e.size) +
                         " (ratio over the limit of " + Num(o.max_expansion_ratio) +
                         ":1; a zip bomb?)");
  }
  return Status::Ok();
}

Status CheckCrc(const Entry& e, uint32_t got) {
  if (got == e.crc32) return Status::Ok();
  char buf[96];
  std::snprintf(buf, sizeof buf, "CRC-32 of the data is %08x, the archive records %08x", got,
                e.crc32);
  return Corrupt(buf);
}
}  // namespace

Result<std::shared_ptr<Buffer>> Reader::Read(size_t index) const {
  if (index >= entries_.size()) return NotFound("zip entry #" + Num(index));
  const Entry& e = entries_[index];
  auto run = [&]() -> Result<std::shared_ptr<Buffer>> {
    if (e.method == kStored) {
      MP_ASSIGN_OR_RETURN(auto data, file_->Read(e.data_offset, e.size));
      MP_RETURN_IF_ERROR(CheckCrc(e, Crc32(data->span())));
      return data;
    }
    MP_RETURN_IF_ERROR(CheckInflateLimits(e, options_));
    MP_ASSIGN_OR_RETURN(auto out, Buffer::Allocate(e.size));
    MP_RETURN_IF_ERROR(Inflate(e, {out->mutable_data(), e.size}, true));
    MP_RETURN_IF_ERROR(CheckCrc(e, Crc32(out->span())));
    return out;
  };
  auto r = run();
  if (!r) return EntryError(e, r.error()).WithContext(file_->path());
  return r;
}

Status Reader::ReadInto(size_t index, std::span<uint8_t> dest) const {
  if (index >= entries_.size()) return NotFound("zip entry #" + Num(index));
  const Entry& e = entries_[index];
  auto run = [&]() -> Status {
    if (dest.size() != e.size) {
      return InvalidArgument("destination holds " + Num(dest.size()) + " bytes, entry has " +
                             Num(e.size));
    }
    if (e.method == kStored) {
      MP_RETURN_IF_ERROR(file_->ReadInto(e.data_offset, e.size, dest.data()));
    } else {
      MP_RETURN_IF_ERROR(CheckInflateLimits(e, options_));
      MP_RETURN_IF_ERROR(Inflate(e, dest, true));
    }
    return CheckCrc(e, Crc32(dest));
  };
  Status s = run();
  return s.ok() ? s : EntryError(e, std::move(s)).WithContext(file_->path());
}

Result<std::shared_ptr<Buffer>> Reader::ReadPrefix(size_t index, uint64_t n) const {
  if (index >= entries_.size()) return NotFound("zip entry #" + Num(index));
  const Entry& e = entries_[index];
  const uint64_t len = std::min(n, e.size);
  auto run = [&]() -> Result<std::shared_ptr<Buffer>> {
    if (e.method == kStored) return file_->Read(e.data_offset, len);
    MP_RETURN_IF_ERROR(CheckInflateLimits(e, options_));
    MP_ASSIGN_OR_RETURN(auto out, Buffer::Allocate(len));
    MP_RETURN_IF_ERROR(Inflate(e, {out->mutable_data(), len}, len == e.size));
    return out;
  };
  auto r = run();
  if (!r) return EntryError(e, r.error()).WithContext(file_->path());
  return r;
}

Status Reader::ReadStoredRange(size_t index, uint64_t offset, std::span<uint8_t> dest) const {
  if (index >= entries_.size()) return NotFound("zip entry #" + Num(index));
  const Entry& e = entries_[index];
  if (e.method != kStored) return InvalidArgument("entry " + Quote(e.name) + " is not stored");
  if (offset > e.size || dest.size() > e.size - offset) {
    return InvalidArgument("range " + Num(offset) + "+" + Num(dest.size()) + " is outside entry " +
                           Quote(e.name) + " (" + Num(e.size) + " bytes)");
  }
  return file_->ReadInto(e.data_offset + offset, dest.size(), dest.data());
}

// ---------------------------------------------------------------------------------------------
// Writer

Result<std::unique_ptr<Writer>> Writer::Create(const std::string& path, WriterOptions options) {
  if (options.comment.size() > kMax16) {
    return InvalidArgument(path + ": zip comment of " + Num(options.comment.size()) +
                           " bytes is over the format's 65535");
  }
  std::unique_ptr<Writer> w(new Writer());
  MP_ASSIGN_OR_RETURN(w->out_, AtomicFile::Create(path));
  w->options_ = std::move(options);
  return w;
}

uint64_t Writer::bytes_written() const { return out_->bytes_written(); }

namespace {
bool NeedsUtf8Flag(std::string_view name) {
  return std::any_of(name.begin(), name.end(), [](char c) { return (c & 0x80) != 0; });
}
}  // namespace

Status Writer::AddStored(std::string_view name, std::span<const std::span<const uint8_t>> parts,
                         uint64_t alignment) {
  const std::string where = out_->dest() + ": entry " + Quote(name);
  Status s = CheckName(name, options_.allow_backslash);
  if (!s.ok()) return InvalidArgument(where + ": " + s.message());
  if (name.size() > kMax16) return InvalidArgument(where + ": name is over 65535 bytes");
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > 4096) {
    return InvalidArgument(where + ": alignment " + Num(alignment) +
                           " is not a power of two up to 4096");
  }
  if (!names_.emplace(std::string(name), written_.size()).second) {
    return InvalidArgument(where + ": name is already in the archive");
  }
  uint64_t size = 0;
  uint32_t crc = 0;
  for (const auto& part : parts) {
    crc = Crc32Combine(crc, Crc32(part), part.size());
    size += part.size();
  }
  const uint64_t lho = out_->bytes_written();
  const bool zip64 = options_.force_zip64 || size >= kMax32;
  Bytes h;
  h.U32(kLocalSig);
  h.U16(zip64 ? 45 : 20);
  h.U16(NeedsUtf8Flag(name) ? kFlagUtf8 : 0);
  h.U16(kStored);
  h.U16(kDosTime);
  h.U16(kDosDate);
  h.U32(crc);
  h.U32(zip64 ? kMax32 : static_cast<uint32_t>(size));
  h.U32(zip64 ? kMax32 : static_cast<uint32_t>(size));
  h.U16(static_cast<uint16_t>(name.size()));
  const uint64_t fixed = lho + kLocalSize + name.size() + (zip64 ? 20 : 0);
  uint64_t pad = (alignment - fixed % alignment) % alignment;
  while (pad != 0 && pad < 4) pad += alignment;  // an extra field needs 4 bytes of header
  h.U16(static_cast<uint16_t>((zip64 ? 20 : 0) + pad));
  h.Append(name);
  if (zip64) {
    h.U16(kZip64ExtraId);
    h.U16(16);
    h.U64(size);
    h.U64(size);
  }
  if (pad != 0) {
    h.U16(kPaddingExtraId);
    h.U16(static_cast<uint16_t>(pad - 4));
    h.Append(std::string(pad - 4, 'Z'));
  }
  MP_RETURN_IF_ERROR(out_->Write(h.data().data(), h.data().size()));
  for (const auto& part : parts) {
    if (!part.empty()) MP_RETURN_IF_ERROR(out_->Write(part.data(), part.size()));
  }
  written_.push_back({std::string(name), crc, size, lho});
  return Status::Ok();
}

Status Writer::Finish(bool durable) {
  const uint64_t cd_offset = out_->bytes_written();
  const bool force = options_.force_zip64;
  for (const Written& w : written_) {
    const bool big = force || w.size >= kMax32;
    const bool far = force || w.local_header_offset >= kMax32;
    const uint16_t extra =
        (big || far) ? static_cast<uint16_t>(4 + (big ? 16 : 0) + (far ? 8 : 0)) : 0;
    Bytes c;
    c.U32(kCentralSig);
    c.U16((3u << 8) | ((big || far) ? 45 : 20));  // made by Unix
    c.U16((big || far) ? 45 : 20);
    c.U16(NeedsUtf8Flag(w.name) ? kFlagUtf8 : 0);
    c.U16(kStored);
    c.U16(kDosTime);
    c.U16(kDosDate);
    c.U32(w.crc32);
    c.U32(big ? kMax32 : static_cast<uint32_t>(w.size));
    c.U32(big ? kMax32 : static_cast<uint32_t>(w.size));
    c.U16(static_cast<uint16_t>(w.name.size()));
    c.U16(extra);
    c.U16(0);               // comment
    c.U16(0);               // disk
    c.U16(0);               // internal attributes
    c.U32(0100644u << 16);  // external attributes: regular file, rw-r--r--
    c.U32(far ? kMax32 : static_cast<uint32_t>(w.local_header_offset));
    c.Append(w.name);
    if (extra != 0) {
      c.U16(kZip64ExtraId);
      c.U16(static_cast<uint16_t>(extra - 4));
      if (big) {
        c.U64(w.size);
        c.U64(w.size);
      }
      if (far) c.U64(w.local_header_offset);
    }
    MP_RETURN_IF_ERROR(out_->Write(c.data().data(), c.data().size()));
  }
  const uint64_t cd_size = out_->bytes_written() - cd_offset;
  const uint64_t count = written_.size();
  const bool zip64 = force || count >= kMax16 || cd_size >= kMax32 || cd_offset >= kMax32;
  Bytes t;
  if (zip64) {
    const uint64_t rec_pos = out_->bytes_written();
    t.U32(kZip64EndSig);
    t.U64(kZip64EndSize - 12);
    t.U16((3u << 8) | 45);
    t.U16(45);
    t.U32(0);
    t.U32(0);
    t.U64(count);
    t.U64(count);
    t.U64(cd_size);
    t.U64(cd_offset);
    t.U32(kZip64LocatorSig);
    t.U32(0);
    t.U64(rec_pos);
    t.U32(1);
  }
  t.U32(kEndSig);
  t.U16(0);
  t.U16(0);
  t.U16(zip64 ? kMax16 : static_cast<uint16_t>(count));
  t.U16(zip64 ? kMax16 : static_cast<uint16_t>(count));
  t.U32(zip64 ? kMax32 : static_cast<uint32_t>(cd_size));
  t.U32(zip64 ? kMax32 : static_cast<uint32_t>(cd_offset));
  t.U16(static_cast<uint16_t>(options_.comment.size()));
  t.Append(options_.comment);
  MP_RETURN_IF_ERROR(out_->Write(t.data().data(), t.data().size()));
  return out_->Commit(durable);
}

}  // namespace mp::zip
