// TensorFlow tensor bundles (tensorflow/core/util/tensor_bundle/): the checkpoint format of
// tf.train.Saver / tf.train.Checkpoint and the variables/ folder of a SavedModel.
//
//   PREFIX.index                  a LevelDB-format table (SSTable), keys sorted bytewise
//   PREFIX.data-0000K-of-0000N    raw tensor bytes, little-endian, row-major, no padding
//
// Table key "" holds a BundleHeaderProto {num_shards = 1, endianness = 2, version = 3}; every
// other key is a tensor name holding a BundleEntryProto {dtype = 1, shape = 2, shard_id = 3,
// offset = 4, size = 5, crc32c = 6 (fixed32, masked as LevelDB masks), slices = 7}.
// Table layout (LevelDB table_format.md): blocks of prefix-compressed entries followed by a
// uint32 restart array and its count; each block has a 5-byte trailer (compression type, masked
// crc32c of block + type byte); a 48-byte footer holds the metaindex and index block handles
// and the magic 0xdb4775248b80fb57. Blocks may be snappy-compressed (older TF wrote them so).
//
// The table codec is written here rather than taken from libleveldb: it reads from memory
// (the fuzz target and tests feed bytes, not files), bounds every allocation by ReadOptions
// (libleveldb allocates whatever a snappy block claims, up to 4 GiB), and gives errors that
// name the file and block. Tests cross-check it against libleveldb's Table in both directions.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "modelport/core/file.h"
#include "modelport/formats/format.h"

namespace mp::tf {

/// TensorFlow's DataType enum values (tensorflow/core/framework/types.proto).
enum TfDataType : int32_t {
  kDtInvalid = 0,
  kDtFloat = 1,
  kDtDouble = 2,
  kDtInt32 = 3,
  kDtUint8 = 4,
  kDtInt16 = 5,
  kDtInt8 = 6,
  kDtString = 7,
  kDtComplex64 = 8,
  kDtInt64 = 9,
  kDtBool = 10,
  kDtBfloat16 = 14,
  kDtUint16 = 17,
  kDtComplex128 = 18,
  kDtHalf = 19,
  kDtResource = 20,
  kDtVariant = 21,
  kDtUint32 = 22,
  kDtUint64 = 23,
  kDtFloat8E5m2 = 24,
  kDtFloat8E4m3fn = 25,
};

/// "DT_FLOAT" for 1, "DT_FLOAT_REF" for 101, "DT_<n>" for values this table does not name.
std::string TfDTypeName(int32_t tf_dtype);
/// The modelport dtype of a TF dtype; Unsupported (naming the TF dtype) when there is none.
Result<DType> DTypeFromTf(int32_t tf_dtype);
/// The TF dtype of a modelport dtype; nullopt for dtypes TF has no match for (block quants).
std::optional<int32_t> TfFromDType(DType dtype);

/// CRC-32C (Castagnoli) of `bytes`, continuing from `crc` (0 to start).
uint32_t Crc32c(std::span<const uint8_t> bytes, uint32_t crc = 0);
/// LevelDB's mask of a stored crc32c (rotate right 15, add 0xa282ead8) and its inverse.
uint32_t MaskCrc(uint32_t crc);
uint32_t UnmaskCrc(uint32_t masked);

/// One key/value pair of a table.
using TableEntry = std::pair<std::string, std::string>;

/// Reads every entry of a LevelDB-format table held in `bytes`, in key order. Block checksums
/// are verified (ChecksumMismatch); snappy blocks are decompressed; `max_bytes` caps the
/// decompressed total and `max_entries` the entry count (LimitExceeded). Corrupt for anything
/// else malformed, naming the block offset.
Result<std::vector<TableEntry>> ReadTable(std::span<const uint8_t> bytes, uint64_t max_bytes,
                                          uint64_t max_entries);
/// A LevelDB-format table of `entries` (sorted by key, unique), blocks uncompressed, restart
/// interval 16, empty metaindex: what TensorFlow's and LevelDB's table readers read.
std::string BuildTable(const std::vector<TableEntry>& entries);

/// BundleHeaderProto.
struct BundleHeader {
  int64_t num_shards = 0;
  int64_t endianness = 0;  ///< 0 little, 1 big
  int64_t producer = 0;    ///< version.producer
};

/// BundleEntryProto, with its key.
struct BundleEntry {
  std::string name;
  int32_t dtype = 0;
  std::vector<int64_t> dims;
  bool unknown_rank = false;
  int64_t shard_id = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint32_t crc32c = 0;  ///< as stored: masked
  size_t num_slices = 0;
};

/// Parses a BundleHeaderProto / BundleEntryProto (entry.name is left empty).
Result<BundleHeader> ParseHeader(std::span<const uint8_t> bytes);
Result<BundleEntry> ParseEntry(std::span<const uint8_t> bytes, uint64_t max_rank);
/// Serializes them as TensorFlow does (fields in number order, defaults omitted).
std::string SerializeHeader(const BundleHeader& header);
std::string SerializeEntry(const BundleEntry& entry);

/// "PREFIX.data-0000K-of-0000N" (K counts from 0).
std::string DataFileName(const std::string& prefix, int64_t shard, int64_t num_shards);

/// The bundle prefix `path` names: "X.index" -> "X"; a folder holding variables.index ->
/// folder/variables; a SavedModel folder -> folder/variables/variables; a folder with exactly
/// one *.index -> that; otherwise `path` itself when `path`.index exists. NotFound otherwise.
Result<std::string> ResolvePrefix(const std::string& path);

/// A bundle open for reading: numeric tensors as a ModelSource (zero-copy slices of the mapped
/// data shards; every crc32c verified on Load), plus every entry of the index.
class BundleSource final : public ModelSource {
 public:
  /// Opens the bundle `path` names (see ResolvePrefix).
  static Result<std::unique_ptr<BundleSource>> Open(const std::string& path,
                                                    const ReadOptions& options);

  std::string_view format() const override { return "tf_bundle"; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  Result<TensorView> Load(size_t index) const override;
  Status LoadInto(size_t index, std::span<uint8_t> dest) const override;
  ModelFiles files() const override;
  /// String tensors, partitioned variables and dtypes modelport cannot carry, named.
  std::vector<std::string> notes() const override { return notes_; }

  const std::string& prefix() const { return prefix_; }
  const BundleHeader& header() const { return header_; }
  /// Every entry of the index but the header, in key order (strings and slices included).
  const std::vector<BundleEntry>& entries() const { return entries_; }
  /// Names of partitioned (sliced) variables.
  const std::vector<std::string>& partitioned() const { return partitioned_; }
  /// The stored bytes of `entry` (any dtype), bounds checked, crc32c not verified.
  Result<std::shared_ptr<Buffer>> RawBytes(const BundleEntry& entry) const;

 private:
  BundleSource() = default;
  Status Init(const std::string& prefix, const ReadOptions& options);
  Status Verify(size_t index, std::span<const uint8_t> bytes) const;

  std::string prefix_;
  BundleHeader header_;
  std::vector<std::shared_ptr<InputFile>> shards_;
  std::vector<BundleEntry> entries_;
  std::vector<size_t> tensor_entry_;  // tensors() index -> entries_ index
  std::vector<TensorInfo> infos_;
  std::vector<std::string> notes_;
  std::vector<std::string> partitioned_;
  Json metadata_ = Json::object();
};

/// One tensor for WriteBundle.
struct BundleItem {
  std::string name;
  int32_t dtype = kDtFloat;
  std::vector<int64_t> dims;
  /// Stored size in bytes (what `load` gives; shards are planned from it).
  uint64_t bytes = 0;
  /// The stored bytes (size must match dtype and shape for numeric dtypes).
  std::function<Result<std::shared_ptr<Buffer>>()> load;
  /// Stored crc32c (masked) to keep instead of computing one: string tensors, whose TF crc
  /// covers their length fields in a way raw bytes do not give.
  std::optional<uint32_t> keep_crc32c;
};

/// Writes `items` as PREFIX.index + PREFIX.data-0000K-of-0000N, atomically: the data files are
/// committed before the index. One shard unless options.shard_size > 0 (then Hugging Face's
/// greedy split in key order). Names must be unique and non-empty. Parent folders are not
/// created.
Status WriteBundle(const std::string& prefix, std::vector<BundleItem> items,
                   const WriteOptions& options);

/// Key of the string scalar holding a source's metadata as JSON (written only when the
/// metadata is non-empty; read back into metadata()).
inline constexpr std::string_view kMetadataKey = "_MODELPORT_METADATA";

/// A DT_STRING scalar as TF stores it in a bundle (varint length, masked crc32c of the length,
/// the bytes) and the entry's crc32c (`*crc`, masked) as TF computes it.
std::string EncodeStringScalar(std::string_view value, uint32_t* crc);
/// The inverse; ChecksumMismatch when `stored_crc` or the length checksum disagree.
Result<std::string> DecodeStringScalar(std::span<const uint8_t> bytes, uint32_t stored_crc);

/// Opens a bundle (format table entry).
Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options);
/// Writes `source` as a bundle. `path`: "X.index" (prefix X) or a folder (prefix
/// folder/variables). options.shard_size splits the data into shards. Non-empty metadata is
/// stored under kMetadataKey. Unsupported for dtypes TF has no match for.
Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options);
/// Content check of an index file: its first block starts with the header entry (key "").
bool Detect(std::span<const uint8_t> prefix, uint64_t file_size);
inline constexpr size_t kDetectBytes = 16;
/// A folder holding variables.index, or exactly one *.index with its data files.
bool DetectDir(const std::string& dir);

}  // namespace mp::tf
