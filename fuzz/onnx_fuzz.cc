// libFuzzer target for the ONNX reader: the input bytes become model.onnx in a private scratch
// folder that also holds data.bin (4 KiB), so inputs can point external data at it; the model is
// detected, opened through the format table (mmap) and through onnx::Open (pread), its graph
// summarised and every initializer loaded and digested. Rejecting the input with a Status is the
// expected outcome; a crash, sanitizer report, leak or timeout is a bug. Seeds: corpus/onnx
// (external_data_bin.onnx points at data.bin).
#include <sys/stat.h>

#include <cstring>
#include <vector>

#include "fuzz_util.h"
#include "modelport/formats/format.h"
#include "modelport/formats/onnx/onnx.h"

namespace {

const std::string& Folder() {
  static const std::string dir = [] {
    std::string d = mp::fuzz::ScratchPath(".onnx.d");
    ::mkdir(d.c_str(), 0700);
    std::vector<uint8_t> data(4096);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
    mp::fuzz::WriteScratch(d + "/data.bin", data.data(), data.size());
    return d;
  }();
  return dir;
}

const std::string& ModelPath() {
  static const std::string path = Folder() + "/model.onnx";
  return path;
}

void OpenAndLoadAll(mp::IoMode mode, bool via_table) {
  mp::ReadOptions options;
  options.io_mode = mode;
  auto source =
      via_table ? mp::OpenModel(ModelPath(), options) : mp::onnx::Open(ModelPath(), options);
  if (!source.has_value()) return;
  if (const auto* o = dynamic_cast<const mp::onnx::OnnxSource*>(source->get())) {
    (void)mp::onnx::GraphInfoJson(o->graph_info())
        .dump(-1, ' ', false, mp::Json::error_handler_t::replace);
  }
  mp::fuzz::LoadAll(**source, [&](const mp::TensorView& t) {
    // LoadInto must agree with Load.
    std::vector<uint8_t> into(t.info.byte_size);
    const auto index = (*source)->Find(t.info.name);
    if (!index || !(*source)->LoadInto(*index, into).ok()) return;
    if (!into.empty() && std::memcmp(into.data(), t.bytes().data(), into.size()) != 0) {
      std::abort();
    }
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)mp::onnx::Detect({data, size}, size);
  mp::fuzz::WriteScratch(ModelPath(), data, size);
  OpenAndLoadAll(mp::IoMode::kMmap, /*via_table=*/true);
  OpenAndLoadAll(mp::IoMode::kPread, /*via_table=*/false);
  std::remove(ModelPath().c_str());  // libFuzzer may _Exit, skipping atexit handlers
  return 0;
}
