// SHA-256 (libcrypto, which uses SHA-NI where the CPU has it), the canonical tensor digest and
// the XXH3 checksum.
//
// Tensor digest encoding (docs/FORMATS.md): SHA-256 over
//   "modelport.tensor.v1\n" + dtype name ("f32") + "\n" + decimal dims joined by "," + "\n"
//   + the tensor's little-endian row-major bytes.
// The name is not hashed, so the same weights give the same digest in every container and
// under every name.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "modelport/core/status.h"
#include "modelport/core/tensor.h"

namespace mp {

using Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::span<const uint8_t> bytes);
  void Update(std::string_view text);
  Digest Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// XXH3-128 (xxHash 0.8), a non-cryptographic checksum about ten times as fast as SHA-256 here:
/// it catches damage (flipped bits, torn or truncated files) with certainty short of 2^-128, but
/// not someone who can write the data and wants a collision. The registry keeps it beside each
/// blob's SHA-256 for verified reads; identity and `fsck` stay SHA-256.
class Xxh3 {
 public:
  Xxh3();
  ~Xxh3();
  Xxh3(const Xxh3&) = delete;
  Xxh3& operator=(const Xxh3&) = delete;

  void Update(std::span<const uint8_t> bytes);
  /// The checksum as 32 lower-case hex digits (xxHash's canonical, big-endian form).
  std::string FinishHex();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// True when every character is a lower-case hex digit (0-9, a-f).
bool IsLowerHex(std::string_view text);
/// True for exactly 32 lower-case hex digits (an Xxh3 checksum).
bool IsXxh3Hex(std::string_view text);

/// Lower-case hex of bytes (a Digest, a checksum).
std::string ToHex(std::span<const uint8_t> bytes);

/// SHA-256 of a whole file, streamed in chunks ("<hex>").
Result<std::string> FileSha256(const std::string& path);

/// The canonical tensor digest described above, as "<hex>".
std::string TensorDigest(const TensorView& tensor);

/// Loads every tensor of `source` and digests it, on `threads` threads (0: WorkerCount()).
/// Element i is the digest of tensor i. Stops at the first load error.
Result<std::vector<std::string>> TensorDigests(const ModelSource& source, unsigned threads = 0);

}  // namespace mp
