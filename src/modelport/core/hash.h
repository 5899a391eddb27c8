// SHA-256 (libcrypto, which uses SHA-NI where the CPU has it) and the canonical tensor digest.
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

/// Lower-case hex of a digest.
std::string ToHex(const Digest& digest);

/// SHA-256 of a whole file, streamed in chunks ("<hex>").
Result<std::string> FileSha256(const std::string& path);

/// The canonical tensor digest described above, as "<hex>".
std::string TensorDigest(const TensorView& tensor);

/// Loads every tensor of `source` and digests it, on `threads` threads (0: WorkerCount()).
/// Element i is the digest of tensor i. Stops at the first load error.
Result<std::vector<std::string>> TensorDigests(const ModelSource& source, unsigned threads = 0);

}  // namespace mp
