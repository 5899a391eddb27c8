// libFuzzer target for quantize and dequantize over hostile models: the input bytes become a
// .safetensors file; when it opens, Dequantize (which pairs int8 tensors with NAME_scale tensors
// of any shape and dtype the file claims) and Quantize with a scheme picked from the input's size
// load every tensor. Rejections are Statuses; a crash, sanitizer report or leak is a bug.
#include "fuzz_util.h"
#include "modelport/convert/quantize.h"
#include "modelport/formats/format.h"

namespace {

const std::string& ScratchPath() {
  static const std::string path = mp::fuzz::ScratchPath(".safetensors");
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mp::fuzz::WriteScratch(ScratchPath(), data, size);
  mp::ReadOptions options;
  options.max_header_bytes = 1 << 20;
  auto source = mp::OpenModel(ScratchPath(), options);
  if (source.has_value()) {
    if (auto d = mp::Dequantize(**source, mp::DType::kF32); d.has_value()) mp::fuzz::LoadAll(**d);
    mp::QuantizeOptions q;
    const auto schemes = mp::AllSchemes();
    q.scheme = schemes[size % schemes.size()];
    q.per_tensor = (size / schemes.size()) % 2 == 1;
    q.min_elements = 1;
    q.threads = 1;
    mp::QuantReport report;
    if (auto v = mp::Quantize(**source, q, &report); v.has_value()) {
      mp::fuzz::LoadAll(**v);
      (void)report.ToJson().dump(-1, ' ', false, mp::Json::error_handler_t::replace);
    }
  }
  std::remove(ScratchPath().c_str());  // libFuzzer may _Exit, skipping atexit handlers
  return 0;
}
