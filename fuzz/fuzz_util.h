// What every fuzz target does around its reader: the input bytes become a scratch file (readers
// take paths), and whatever opens has every tensor loaded and digested. Rejecting an input with
// a Status is the expected outcome; a crash, sanitizer report, leak or timeout is a bug.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "modelport/core/hash.h"
#include "modelport/core/tensor.h"

namespace mp::fuzz {

/// A scratch path for this fuzzing process, in tmpfs when available (fast, no disk wear).
inline std::string ScratchPath(const char* suffix) {
  const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(base) + "/modelport_fuzz." + std::to_string(getpid()) + suffix;
}

/// Writes the input to `path`; aborts if it cannot (the harness is broken, not the reader).
inline void WriteScratch(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  const bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  if (std::fclose(f) != 0 || !ok) std::abort();
}

/// Loads and digests every tensor of an opened source; calls `each` on every loaded tensor.
template <typename Each>
void LoadAll(const ModelSource& source, Each each) {
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    auto tensor = source.Load(i);
    if (!tensor.has_value()) continue;
    // A loaded tensor that disagrees with its own index is a reader bug, not bad input.
    if (tensor->bytes().size() != tensor->info.byte_size) std::abort();
    (void)TensorDigest(*tensor);
    each(*tensor);
  }
  (void)source.TotalBytes();
  (void)source.metadata().dump(-1, ' ', false, Json::error_handler_t::replace);
}
inline void LoadAll(const ModelSource& source) {
  LoadAll(source, [](const TensorView&) {});
}

}  // namespace mp::fuzz
