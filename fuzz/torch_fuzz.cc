// libFuzzer target for the PyTorch checkpoint reader: the input bytes become a .pt file (zip
// checkpoint, TorchScript archive or legacy file), opened through the format table with mmap and
// through torch::Open with pread, every tensor loaded and digested. Rejecting the input with a
// Status is the expected outcome; any crash, sanitizer report, leak or timeout is a bug.
#include "fuzz_util.h"
#include "modelport/formats/format.h"
#include "modelport/formats/torch/torch.h"

namespace {

const std::string& ScratchPath() {
  static const std::string path = mp::fuzz::ScratchPath(".pt");
  return path;
}

void OpenAndLoadAll(mp::IoMode mode, bool via_table) {
  mp::ReadOptions options;
  options.io_mode = mode;
  auto source =
      via_table ? mp::OpenModel(ScratchPath(), options) : mp::torch::Open(ScratchPath(), options);
  if (source.has_value()) mp::fuzz::LoadAll(**source);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)mp::torch::Detect({data, size}, size);
  mp::fuzz::WriteScratch(ScratchPath(), data, size);
  OpenAndLoadAll(mp::IoMode::kMmap, /*via_table=*/true);
  OpenAndLoadAll(mp::IoMode::kPread, /*via_table=*/false);
  std::remove(ScratchPath().c_str());  // libFuzzer may _Exit, skipping atexit handlers
  return 0;
}
