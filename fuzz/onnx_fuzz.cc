// libFuzzer target for the ONNX reader: the input bytes become model.onnx in a private scratch
// folder that also holds data.bin (4 KiB), so inputs can point external data at it; the model is
// detected, opened through the format table (mmap) and through onnx::Open (pread), its graph
// summarised and every initializer loaded and digested. A model whose initializers all load is
// then rewritten (inline and external) and must reopen with the same tensors: the writer
// re-emits whatever bytes the reader accepted. Rejecting the input with a Status is the
// expected outcome; a crash, sanitizer report, leak, timeout or failed rewrite is a bug. Seeds:
// corpus/onnx (external_data_bin.onnx points at data.bin). The scratch folder is made and
// removed around each input, so no run leaves files behind.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "fuzz_util.h"
#include "modelport/formats/format.h"
#include "modelport/formats/onnx/onnx.h"

namespace {

const std::string& Folder() {
  static const std::string dir = mp::fuzz::ScratchPath(".onnx.d");
  return dir;
}

std::string InFolder(const char* name) { return Folder() + "/" + name; }

const std::string& ModelPath() {
  static const std::string path = InFolder("model.onnx");
  return path;
}

void MakeFolder() {
  ::mkdir(Folder().c_str(), 0700);
  std::vector<uint8_t> data(4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  mp::fuzz::WriteScratch(InFolder("data.bin"), data.data(), data.size());
}

void RemoveFolder() {
  for (const char* name : {"model.onnx", "data.bin", "out.onnx", "out.onnx.data"}) {
    std::remove(InFolder(name).c_str());
  }
  ::rmdir(Folder().c_str());
}

// Rewrites a model whose every initializer loaded, inline and with all data outside, and
// aborts unless each result reopens with exactly the same tensors.
void RewriteAndCompare(const mp::ModelSource& source) {
  const auto* onnx = dynamic_cast<const mp::onnx::OnnxSource*>(&source);
  if (onnx == nullptr) return;  // the format table found another format in the bytes
  for (const auto placement : {mp::onnx::Placement::kInline, mp::onnx::Placement::kExternal}) {
    mp::onnx::RewriteOptions options;
    options.placement = placement;
    options.size_threshold = 0;
    options.write.durable = false;
    auto report = onnx->Rewrite(InFolder("out.onnx"), options);
    if (!report.has_value()) {
      // Tensors in nodes with external data are refused by design; anything else is a bug.
      if (report.error().code() == mp::StatusCode::kUnsupported) return;
      std::abort();
    }
    auto again = mp::onnx::Open(InFolder("out.onnx"), {});
    if (!again.has_value() || (*again)->tensors().size() != source.tensors().size()) std::abort();
    for (size_t i = 0; i < source.tensors().size(); ++i) {
      auto a = source.Load(i);
      auto b = (*again)->Load(i);
      if (!a.has_value() || !b.has_value() || a->info.name != b->info.name ||
          a->info.dtype != b->info.dtype || !(a->info.shape == b->info.shape) ||
          a->bytes().size() != b->bytes().size() ||
          (a->bytes().size() > 0 &&
           std::memcmp(a->bytes().data(), b->bytes().data(), a->bytes().size()) != 0)) {
        std::abort();
      }
    }
  }
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
  size_t loaded = 0;
  mp::fuzz::LoadAll(**source, [&](const mp::TensorView& t) {
    ++loaded;
    // LoadInto must agree with Load.
    std::vector<uint8_t> into(t.info.byte_size);
    const auto index = (*source)->Find(t.info.name);
    if (!index || !(*source)->LoadInto(*index, into).ok()) return;
    if (!into.empty() && std::memcmp(into.data(), t.bytes().data(), into.size()) != 0) {
      std::abort();
    }
  });
  if (via_table && loaded == (*source)->tensors().size()) RewriteAndCompare(**source);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)mp::onnx::Detect({data, size}, size);
  MakeFolder();
  mp::fuzz::WriteScratch(ModelPath(), data, size);
  OpenAndLoadAll(mp::IoMode::kMmap, /*via_table=*/true);
  OpenAndLoadAll(mp::IoMode::kPread, /*via_table=*/false);
  RemoveFolder();  // libFuzzer may _Exit, skipping atexit handlers
  return 0;
}
