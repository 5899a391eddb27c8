// Content-addressed, immutable blob storage: the bytes of every tensor, asset and manifest the
// registry holds, each stored once under its SHA-256.
//
// Layout under the store's root:
//   blobs/sha256/<first 2 hex digits>/<remaining 62 hex digits>   one immutable file per blob
//   tmp/                                                          blobs being written
// A blob is written to tmp/, fsync'd, renamed into blobs/ and its folder fsync'd: it is visible
// only once durable, and a crash leaves at most a stray file in tmp/ (removed by gc). Blob files
// are read-only (0444). Digests are "sha256:<64 lowercase hex>"; names never come from users.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/core/buffer.h"
#include "modelport/core/status.h"

namespace mp::registry {

struct BlobInfo {
  std::string digest;  ///< "sha256:<hex>"
  uint64_t size = 0;
  bool written = false;  ///< false when the store already held it (deduplicated)
  /// XXH3-128 of the bytes (core/hash.h), computed with the SHA-256: what verified reads of
  /// the blob check, ten times faster. "" for blobs described before modelport kept it.
  std::string xxh3;
};

/// True for "sha256:" followed by exactly 64 lowercase hex digits.
bool IsDigest(std::string_view digest);

class BlobStore {
 public:
  /// Opens the store under `root`; with `create`, makes the folders when missing. NotFound
  /// when `root` holds no store and `create` is false.
  static Result<std::unique_ptr<BlobStore>> Open(const std::string& root, bool create);
  ~BlobStore();

  const std::string& root() const;

  /// Stores `bytes` (hashing them first: an existing blob is not written again) and returns
  /// its digest; durable on return. `durable` false skips the fsyncs (tests and benchmarks).
  Result<BlobInfo> Put(std::span<const uint8_t> bytes, bool durable = true);
  /// Same, for bytes whose SHA-256 the caller already computed ("sha256:<hex>"); the digest is
  /// trusted for the existence check and re-checked while writing a new blob.
  Result<BlobInfo> PutHashed(std::span<const uint8_t> bytes, const std::string& digest,
                             bool durable = true);
  /// Stores a whole file, streaming it (memory bounded), hashing while copying.
  Result<BlobInfo> PutFile(const std::string& path, bool durable = true);

  /// Blobs written now and made visible together by Publish(), with one filesystem sync for
  /// all of them instead of one fsync each (a push of hundreds of tensors). Nothing is visible
  /// before Publish; destroying an unpublished batch removes its temporaries. Put is
  /// thread-safe.
  class Batch {
   public:
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;
    /// Hashes `bytes`; a blob already stored (or already in this batch) is not written again.
    Result<BlobInfo> Put(std::span<const uint8_t> bytes);
    /// Renames the written temporaries into place; when durable, syncs them first (one
    /// syncfs; their writeback started as each was written) and fsyncs each changed folder
    /// once after.
    Status Publish();

   private:
    friend class BlobStore;
    struct State;
    explicit Batch(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
  };
  /// `durable` false skips every sync (tests and benchmarks).
  std::unique_ptr<Batch> NewBatch(bool durable = true);

  bool Contains(const std::string& digest) const;
  /// The blob's size; NotFound when absent.
  Result<uint64_t> Size(const std::string& digest) const;
  /// The blob's path (for mapping it); InvalidArgument for a malformed digest.
  Result<std::string> PathOf(const std::string& digest) const;

  /// The blob's bytes, mapped (zero-copy). With `verify`, checked first: against `xxh3`, its
  /// BlobInfo::xxh3 as recorded when it was stored (a manifest keeps it), or, when `xxh3` is
  /// "", re-hashed with SHA-256 against its name. ChecksumMismatch when they no longer match.
  Result<std::shared_ptr<Buffer>> Read(const std::string& digest, bool verify = true,
                                       std::string_view xxh3 = {}) const;
  /// Read's check alone (with `xxh3` "", fsck's): Ok, ChecksumMismatch or NotFound.
  Status Verify(const std::string& digest, std::string_view xxh3 = {}) const;

  /// Every blob in the store with its size and modification time (seconds since the epoch).
  struct Entry {
    std::string digest;
    uint64_t size = 0;
    int64_t mtime = 0;
  };
  Result<std::vector<Entry>> List() const;
  /// Removes a blob (gc). NotFound when absent.
  Status Remove(const std::string& digest);
  /// Removes files in tmp/ older than `older_than_seconds` (left by crashed writers); returns
  /// how many.
  Result<uint64_t> RemoveStaleTemporaries(int64_t older_than_seconds);

 private:
  BlobStore() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mp::registry
