// libFuzzer target for the TFLite reader: the input bytes become a scratch .tflite, opened with
// both I/O modes; whatever opens has its graph summarised, every constant tensor loaded and
// digested, and its dequantized view built and loaded (a refused view must be InvalidArgument,
// a loaded one f32 of the declared size). Rejecting the input with a Status is the expected
// outcome; a crash, sanitizer report, leak or timeout is a bug. Seeds: corpus/tflite (the golden
// parse_example model and small hand-built quantized models).
#include <cstdio>
#include <cstdlib>

#include "fuzz_util.h"
#include "modelport/formats/tflite/tflite.h"

namespace {

const std::string& ModelPath() {
  static const std::string path = mp::fuzz::ScratchPath(".tflite");
  return path;
}

void OpenAndLoadAll(mp::IoMode mode) {
  mp::ReadOptions options;
  options.io_mode = mode;
  auto source = mp::tflite::Open(ModelPath(), options);
  if (!source.has_value()) return;
  const mp::tflite::TfliteSource* tfl = mp::tflite::AsTflite(**source);
  if (tfl == nullptr) std::abort();
  (void)mp::tflite::GraphInfoJson(tfl->graph_info())
      .dump(-1, ' ', false, mp::Json::error_handler_t::replace);
  mp::fuzz::LoadAll(**source);
  auto view = mp::tflite::Dequantize(*tfl);
  if (!view.has_value()) {
    if (view.error().code() != mp::StatusCode::kInvalidArgument) std::abort();
    return;
  }
  mp::fuzz::LoadAll(**view);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)mp::tflite::Detect(
      {data, size < mp::tflite::kDetectBytes ? size : mp::tflite::kDetectBytes}, size);
  mp::fuzz::WriteScratch(ModelPath(), data, size);
  OpenAndLoadAll(mp::IoMode::kMmap);
  OpenAndLoadAll(mp::IoMode::kPread);
  std::remove(ModelPath().c_str());  // libFuzzer may _Exit, skipping atexit handlers
  return 0;
}
