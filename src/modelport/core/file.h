// Reading and writing files. Input goes through InputFile: a read-only mapping (zero-copy views,
// madvise hints) or, where mmap is slow or unavailable (some network filesystems), pread into
// owned memory. Output goes through AtomicFile: a temporary file beside the destination,
// fsync'd and renamed into place, so a failure or Ctrl-C never leaves a partial file there.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "modelport/core/buffer.h"
#include "modelport/core/status.h"

namespace mp {

enum class IoMode {
  kMmap,   ///< map the file; reads are zero-copy slices of the mapping
  kPread,  ///< pread each requested range into owned memory
};

/// How a reader expects to touch the bytes; becomes an madvise hint on mapped files.
/// How a mapped range will be read. kPopulate: all of it, now: its pages are mapped in one call
/// (MADV_POPULATE_READ, reading from disk what the page cache lacks) instead of a page fault
/// per 64 KiB as it is touched; a write() from a mapping takes about half as long so.
enum class AccessHint { kNormal, kSequential, kWillNeed, kRandom, kPopulate };

class InputFile {
 public:
  /// Opens `path` for reading. Directories and non-regular files are refused (InvalidArgument).
  static Result<std::shared_ptr<InputFile>> Open(const std::string& path,
                                                 IoMode mode = IoMode::kMmap);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  /// Device and inode of the opened file (fstat of the descriptor): what was really opened,
  /// whatever the path names by now.
  uint64_t device() const { return device_; }
  uint64_t inode() const { return inode_; }
  IoMode mode() const { return mode_; }

  /// Bytes [offset, offset + length). Zero-copy for mapped files. Corrupt if out of bounds
  /// (the message names the file and the range).
  Result<std::shared_ptr<Buffer>> Read(uint64_t offset, uint64_t length) const;

  /// Copies [offset, offset + length) into `dest` (pread; memcpy from the mapping when small).
  Status ReadInto(uint64_t offset, uint64_t length, uint8_t* dest) const;

  /// Hint for the range (no-op for pread files).
  void Advise(uint64_t offset, uint64_t length, AccessHint hint) const;

 private:
  InputFile() = default;
  Status CheckRange(uint64_t offset, uint64_t length) const;

  std::string path_;
  IoMode mode_ = IoMode::kMmap;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t device_ = 0;
  uint64_t inode_ = 0;
  std::shared_ptr<const void> mapping_;  // keeps the mapping alive while any slice lives
  const uint8_t* base_ = nullptr;
};

/// A file written to `<dest>.tmp.<pid>.<n>` in the destination's folder and renamed onto
/// `dest` by Commit() after fsync (the folder is fsync'd too). Destroying it uncommitted
/// removes the temporary file. Temporary files are also removed on SIGINT/SIGTERM.
class AtomicFile {
 public:
  static Result<std::unique_ptr<AtomicFile>> Create(const std::string& dest);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  Status Write(const void* data, size_t size);
  /// Writes `size` zero bytes.
  Status WriteZeros(size_t size);
  uint64_t bytes_written() const { return written_; }
  const std::string& dest() const { return dest_; }

  /// fsync (when `durable`), rename onto the destination, fsync the folder (when `durable`).
  Status Commit(bool durable = true);

 private:
  AtomicFile() = default;
  std::string dest_;
  std::string tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
  bool committed_ = false;
};

/// fsync of a folder, so entries renamed or created in it survive a crash.
Status FsyncDir(const std::string& dir);

/// Creates `dir` and its parents if missing.
Status MakeDirs(const std::string& dir);

/// Reads a whole small file (index JSON, configs) into a string; LimitExceeded above max_bytes.
Result<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes);

}  // namespace mp
