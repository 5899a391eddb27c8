// libFuzzer target for the safetensors reader: the input bytes become a .safetensors file,
// which is detected and opened (through the format table with mmap, and
// directly with pread), every tensor loaded and digested. Any crash, sanitizer
// report, leak or timeout is a bug; rejecting the input with a Status is the expected outcome.
#include "fuzz_util.h"
#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"

namespace {

const std::string& ScratchPath() {
  static const std::string path = mp::fuzz::ScratchPath(".safetensors");
  return path;
}

// Through the format table (content detection, then open) or straight to the reader.
void OpenAndLoadAll(mp::IoMode mode, bool via_table) {
  mp::ReadOptions options;
  options.io_mode = mode;
  options.max_header_bytes = 1 << 20;  // inputs are far smaller; keeps each run cheap
  auto source = via_table ? mp::OpenModel(ScratchPath(), options)
                          : mp::safetensors::Open(ScratchPath(), options);
  if (source.has_value()) mp::fuzz::LoadAll(**source);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mp::fuzz::WriteScratch(ScratchPath(), data, size);
  (void)mp::safetensors::Detect({data, size}, size);
  OpenAndLoadAll(mp::IoMode::kMmap, /*via_table=*/true);
  OpenAndLoadAll(mp::IoMode::kPread, /*via_table=*/false);
  std::remove(ScratchPath().c_str());  // libFuzzer may _Exit, skipping atexit handlers
  return 0;
}
