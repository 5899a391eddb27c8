// libFuzzer target for the zip reader (shared by .npz and PyTorch checkpoints): the input bytes
// become a file that zip::Reader opens (mmap and pread); every entry is read whole, into a
// buffer and by prefix, then the file is opened as a .npz. Inflation is capped small so a bomb
// costs little. Rejecting the input with a Status is the expected outcome.
#include <vector>

#include "fuzz_util.h"
#include "modelport/formats/numpy/numpy.h"
#include "modelport/formats/zip/zip.h"

namespace {

const std::string& ScratchPath() {
  static const std::string path = mp::fuzz::ScratchPath(".zip");
  return path;
}

void ReadEverything(mp::IoMode mode) {
  auto file = mp::InputFile::Open(ScratchPath(), mode);
  if (!file.has_value()) return;
  mp::zip::ReaderOptions options;
  options.max_inflated_bytes = 16 << 20;
  auto reader = mp::zip::Reader::Open(*file, options);
  if (!reader.has_value()) return;
  for (size_t i = 0; i < (*reader)->entries().size(); ++i) {
    const mp::zip::Entry& e = (*reader)->entries()[i];
    auto whole = (*reader)->Read(i);
    if (whole.has_value() && (*whole)->size() != e.size) std::abort();
    auto prefix = (*reader)->ReadPrefix(i, 16);
    if (prefix.has_value() && (*prefix)->size() > 16) std::abort();
    if (e.size <= options.max_inflated_bytes) {
      std::vector<uint8_t> dest(e.size);
      (void)(*reader)->ReadInto(i, dest);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mp::fuzz::WriteScratch(ScratchPath(), data, size);
  ReadEverything(mp::IoMode::kMmap);
  ReadEverything(mp::IoMode::kPread);
  auto npz = mp::numpy::Open(ScratchPath(), {});
  if (npz.has_value()) mp::fuzz::LoadAll(**npz);
  std::remove(ScratchPath().c_str());
  return 0;
}
