// ZIP archives (PKWARE APPNOTE.TXT 6.3.10,
// https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT), the container of .npz and of
// PyTorch checkpoints. Little-endian throughout.
//
//   [local header 30 B + name + extra][data][data descriptor?]  ... one per entry
//   [central directory: one 46 B record + name + extra + comment per entry]
//   [ZIP64 end of central directory record 56 B + ext][ZIP64 locator 20 B]   (when needed)
//   [end of central directory record 22 B + comment (<= 65535 B)]
//
// Local header:   sig 0x04034b50, version, flags, method, time, date, crc32, csize, usize,
//                 name_len, extra_len. Central record: sig 0x02014b50, made_by, version, flags,
//                 method, time, date, crc32, csize, usize, name_len, extra_len, comment_len,
//                 disk, int_attr, ext_attr, local_header_offset. Sizes or offsets of 0xFFFFFFFF
//                 are in the ZIP64 extra field (id 0x0001), in the order usize, csize, offset.
// Flags: bit 0 encrypted, bit 3 sizes and CRC in a data descriptor after the data
//        ([0x08074b50]? crc32 csize usize, sizes 8 bytes each in ZIP64 entries), bit 11 UTF-8.
// Methods: 0 stored, 8 deflate (raw, RFC 1951).
//
// The reader trusts nothing: the central directory and every local header must agree, entry
// data may not overlap other entries or the central directory, names may not escape a folder,
// and inflation is bounded by a size cap and an expansion-ratio cap (zip bombs).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "modelport/core/buffer.h"
#include "modelport/core/file.h"
#include "modelport/core/status.h"

namespace mp::zip {

inline constexpr uint16_t kStored = 0;
inline constexpr uint16_t kDeflated = 8;

/// Safety limits of the reader. Defaults are safe for hostile input.
struct ReaderOptions {
  uint64_t max_entries = 1'000'000;
  uint64_t max_name_bytes = 64 * 1024;
  /// Largest uncompressed size of one deflated entry that Read will inflate.
  uint64_t max_inflated_bytes = uint64_t{64} << 30;
  /// Largest uncompressed/compressed ratio of a deflated entry over 1 MiB. Deflate itself tops
  /// out near 1032:1; real weights compress by a few percent, all-zero arrays by ~1000:1.
  uint64_t max_expansion_ratio = 250;
  /// Backslashes in names are refused by default (a Windows path separator: "..\\x" escapes a
  /// folder). Containers whose names are keys, never paths (.npz), may allow them; '..' and
  /// absolute-path checks then treat '\\' as a separator too.
  bool allow_backslash = false;
};

/// One entry as the central directory (cross-checked with its local header) describes it.
struct Entry {
  std::string name;
  uint16_t method = kStored;
  uint16_t flags = 0;
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;  ///< uncompressed
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  ///< absolute file offset of the (compressed) data
};

/// Reads an archive. Safe to use from several threads at once after Open.
class Reader {
 public:
  /// Parses and validates the whole directory (not the entry data). Errors name the file, the
  /// entry and the reason: Corrupt, Unsafe (names), LimitExceeded, Unsupported (encryption,
  /// methods, multi-disk).
  static Result<std::unique_ptr<Reader>> Open(std::shared_ptr<InputFile> file,
                                              const ReaderOptions& options = {});

  const std::vector<Entry>& entries() const { return entries_; }
  /// The archive comment (raw bytes).
  const std::string& comment() const { return comment_; }
  const InputFile& file() const { return *file_; }
  std::optional<size_t> Find(std::string_view name) const;

  /// The uncompressed bytes of entry `index`, CRC-32 verified. Stored entries are zero-copy
  /// slices of a mapped file; deflated ones are inflated into owned memory.
  Result<std::shared_ptr<Buffer>> Read(size_t index) const;
  /// Copies the uncompressed bytes of entry `index` into `dest` (exactly `size` bytes), CRC-32
  /// verified.
  Status ReadInto(size_t index, std::span<uint8_t> dest) const;
  /// The first min(n, size) uncompressed bytes of entry `index`, not CRC-checked (the CRC covers
  /// the whole entry): for peeking at headers without inflating everything.
  Result<std::shared_ptr<Buffer>> ReadPrefix(size_t index, uint64_t n) const;
  /// Copies bytes [offset, offset + dest.size()) of a stored entry into `dest`, unchecked; the
  /// caller verifies the CRC of the whole entry (see Crc32, Crc32Combine).
  Status ReadStoredRange(size_t index, uint64_t offset, std::span<uint8_t> dest) const;

 private:
  Reader() = default;
  Status Parse();
  Status CheckEntryName(const std::string& name) const;
  Status ParseCentral(uint64_t cd_offset, uint64_t cd_size, uint64_t count);
  Status CheckLocal(Entry& e, uint64_t& end) const;
  Status CheckLayout(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) const;
  Status Inflate(const Entry& e, std::span<uint8_t> dest, bool whole) const;
  Status EntryError(const Entry& e, Status s) const;

  std::shared_ptr<InputFile> file_;
  ReaderOptions options_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
  std::string comment_;
};

struct WriterOptions {
  /// Write ZIP64 records even when no size or offset needs them (tests, and readers that want
  /// them always).
  bool force_zip64 = false;
  /// Archive comment (<= 65535 bytes).
  std::string comment;
  /// Accept backslashes in names (see ReaderOptions::allow_backslash).
  bool allow_backslash = false;
};

/// Streams an archive of stored entries into an AtomicFile: nothing appears at the destination
/// until Finish(). Timestamps are fixed (1980-01-01 00:00) so equal input gives equal bytes.
class Writer {
 public:
  static Result<std::unique_ptr<Writer>> Create(const std::string& path,
                                                WriterOptions options = {});

  /// Adds a stored entry whose data is the concatenation of `parts`, placed so that its data
  /// starts at a multiple of `alignment` bytes from the start of the file (padding goes into a
  /// local-header extra field, as PyTorch does). Names must pass the reader's checks.
  Status AddStored(std::string_view name, std::span<const std::span<const uint8_t>> parts,
                   uint64_t alignment = 1);
  /// Writes the central directory and commits the file.
  Status Finish(bool durable = true);

  uint64_t bytes_written() const;

 private:
  struct Written {
    std::string name;
    uint32_t crc32;
    uint64_t size;
    uint64_t local_header_offset;
  };
  Writer() = default;
  std::unique_ptr<AtomicFile> out_;
  WriterOptions options_;
  std::vector<Written> written_;
  std::unordered_map<std::string, size_t> names_;
};

/// CRC-32 (ISO 3309, zlib's) of `data`, continuing from `crc`.
uint32_t Crc32(std::span<const uint8_t> data, uint32_t crc = 0);
/// CRC-32 of A||B from crc(A), crc(B) and len(B).
uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

/// `name` in single quotes for an error message: control bytes escaped as \xNN, cut after 200
/// bytes, so a hostile name cannot break the message's one line.
std::string QuoteName(std::string_view name);

/// Checks a name the way the reader does (for writers to refuse what could not be read back).
Status CheckName(std::string_view name, bool allow_backslash);

}  // namespace mp::zip
