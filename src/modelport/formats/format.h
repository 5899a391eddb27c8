// The format table: one FormatDescriptor per format modelport speaks, held in one explicit
// array (formats/registry.cc) rather than registered by static initialisers. Detection is by
// content first (magic bytes, header shape) and by extension second.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/core/file.h"
#include "modelport/core/status.h"
#include "modelport/core/tensor.h"

namespace mp {

/// Safety limits and I/O choices for every reader. Defaults are safe for hostile input.
struct ReadOptions {
  IoMode io_mode = IoMode::kMmap;
  uint64_t max_header_bytes = 100'000'000;  ///< safetensors JSON header cap (the reference's)
  uint64_t max_tensors = 1'000'000;
  uint64_t max_rank = 64;
  uint64_t max_name_bytes = 64 * 1024;
  uint64_t max_index_bytes = 100'000'000;  ///< sharded index JSON
  uint64_t max_shards = 100'000;
  /// Checkpoints that nest their tensors (PyTorch {"state_dict": ..., "optimizer": ...}): the
  /// dotted key path of the object whose tensors to read. Empty: the reader picks the state
  /// dict itself and says so in ModelSource::notes().
  std::string select_key;
};

/// Called after each tensor is written: (tensors done, tensors total, bytes done, bytes total).
using ProgressFn = std::function<void(uint64_t, uint64_t, uint64_t, uint64_t)>;

struct WriteOptions {
  /// 0: one file. Otherwise split into shards of at most this many tensor bytes (a tensor larger
  /// than the cap gets a shard of its own) and write the Hugging Face index beside them.
  uint64_t shard_size = 0;
  /// Refuse to replace an existing destination.
  bool no_overwrite = false;
  /// fsync each file (and its folder) before and after renaming it into place, so a crash
  /// or power loss leaves the old file or the complete new one. Off only for scratch output.
  bool durable = true;
  ProgressFn progress;
};

/// What a format can do.
struct FormatCaps {
  bool read = false;
  bool write = false;
  bool zero_copy = false;  ///< reads hand out views into the mapped file
  bool sharded = false;    ///< reads and writes multi-file models
};

struct FormatDescriptor {
  std::string_view name;                     ///< "safetensors"
  std::vector<std::string_view> extensions;  ///< ".safetensors"
  FormatCaps caps;
  /// Bytes from the start of a file that Detect needs.
  size_t detect_bytes;
  /// True if `prefix` (the first min(detect_bytes, size) bytes of a file of `file_size` bytes)
  /// looks like this format.
  bool (*detect)(std::span<const uint8_t> prefix, uint64_t file_size);
  /// True if `dir` holds a model of this format (e.g. a sharded index); may be null.
  bool (*detect_dir)(const std::string& dir);
  /// Opens a file or folder for reading: parses only the index, tensor bytes are loaded lazily.
  Result<std::unique_ptr<ModelSource>> (*open)(const std::string& path, const ReadOptions&);
  /// Writes `source` to `path`, atomically: no partial file at the destination on failure.
  Status (*write)(const ModelSource& source, const std::string& path, const WriteOptions&);
};

/// Every format, in detection order.
std::span<const FormatDescriptor> Formats();

/// The descriptor called `name`, or NotFound.
Result<const FormatDescriptor*> FindFormat(std::string_view name);

/// Detects the format of a file (by content, then extension) or folder.
Result<const FormatDescriptor*> DetectFormat(const std::string& path);

/// The format to write `path` in: `to` if given, else from the extension.
Result<const FormatDescriptor*> FormatForOutput(const std::string& path, std::string_view to = {});

/// DetectFormat + open.
Result<std::unique_ptr<ModelSource>> OpenModel(const std::string& path,
                                               const ReadOptions& options = {});

}  // namespace mp
