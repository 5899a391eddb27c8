// libFuzzer target for the GGUF reader and writer: the input bytes become a .gguf file, which
// is detected and opened (through the format table with mmap, and directly with pread), every
// tensor loaded, digested and dequantized where possible; what opens is written back as GGUF
// (exercising the typed-metadata writer) and the copy must open again. Any crash, sanitizer
// report, leak or timeout is a bug; rejecting the input with a Status is the expected outcome.
#include <vector>

#include "fuzz_util.h"
#include "modelport/formats/format.h"
#include "modelport/formats/gguf/gguf.h"
#include "modelport/formats/gguf/quants.h"

namespace {

void OpenAndLoadAll(const std::string& path, mp::IoMode mode, bool via_table, bool write_back) {
  mp::ReadOptions options;
  options.io_mode = mode;
  auto source = via_table ? mp::OpenModel(path, options) : mp::gguf::Open(path, options);
  if (!source.has_value()) return;
  mp::fuzz::LoadAll(**source, [](const mp::TensorView& tensor) {
    const mp::DType dtype = tensor.info.dtype;
    if (mp::gguf::CanDequantize(dtype) && tensor.info.byte_size <= (1u << 20)) {
      const mp::DTypeTraits& t = mp::Traits(dtype);
      std::vector<float> out(tensor.info.byte_size / t.block_bytes * t.block_elems);
      if (!mp::gguf::DequantizeToF32(dtype, tensor.bytes(), out.data()).ok()) std::abort();
    }
  });
  if (!write_back) return;
  const std::string copy = mp::fuzz::ScratchPath(".copy.gguf");
  mp::WriteOptions wo;
  wo.durable = false;
  if (mp::gguf::Write(**source, copy, wo).ok()) {
    // What modelport wrote from a file it accepted must be accepted again.
    if (!mp::gguf::Open(copy, options).has_value()) std::abort();
  }
  std::remove(copy.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = mp::fuzz::ScratchPath(".gguf");
  mp::fuzz::WriteScratch(path, data, size);
  (void)mp::gguf::Detect({data, size}, size);
  OpenAndLoadAll(path, mp::IoMode::kMmap, /*via_table=*/true, /*write_back=*/true);
  OpenAndLoadAll(path, mp::IoMode::kPread, /*via_table=*/false, /*write_back=*/false);
  std::remove(path.c_str());  // libFuzzer may _Exit, skipping atexit handlers
  return 0;
}
