// libFuzzer target for the safetensors reader: the input bytes become a .safetensors file,
// which is detected and opened (through the format table with mmap, and
// directly with pread), every tensor loaded and digested. Any crash, sanitizer
// report, leak or timeout is a bug; rejecting the input with a Status is the expected outcome.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "modelport/core/hash.h"
#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"

namespace {

// One scratch file per fuzzing process, in tmpfs when available (fast, no disk wear).
const std::string& ScratchPath() {
  static const std::string path = [] {
    const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(base) + "/modelport_fuzz." + std::to_string(getpid()) + ".safetensors";
  }();
  return path;
}

bool WriteScratch(const uint8_t* data, size_t size) {
  FILE* f = std::fopen(ScratchPath().c_str(), "wb");
  if (f == nullptr) return false;
  bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  return std::fclose(f) == 0 && ok;
}

// Through the format table (content detection, then open) or straight to the reader.
void OpenAndLoadAll(mp::IoMode mode, bool via_table) {
  mp::ReadOptions options;
  options.io_mode = mode;
  options.max_header_bytes = 1 << 20;  // inputs are far smaller; keeps each run cheap
  auto source = via_table ? mp::OpenModel(ScratchPath(), options)
                          : mp::safetensors::Open(ScratchPath(), options);
  if (!source.has_value()) return;
  for (size_t i = 0; i < (*source)->tensors().size(); ++i) {
    auto tensor = (*source)->Load(i);
    if (!tensor.has_value()) continue;
    // A loaded tensor that disagrees with its own index is a reader bug, not bad input.
    if (tensor->bytes().size() != tensor->info.byte_size) std::abort();
    (void)mp::TensorDigest(*tensor);
  }
  (void)(*source)->TotalBytes();
  (void)(*source)->metadata().dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!WriteScratch(data, size)) std::abort();
  (void)mp::safetensors::Detect({data, size}, size);
  OpenAndLoadAll(mp::IoMode::kMmap, /*via_table=*/true);
  OpenAndLoadAll(mp::IoMode::kPread, /*via_table=*/false);
  std::remove(ScratchPath().c_str());  // libFuzzer may _Exit, skipping atexit handlers
  return 0;
}
