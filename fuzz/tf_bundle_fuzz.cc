// libFuzzer target for the TensorFlow tensor bundle reader: the input bytes become a bundle's
// .index file beside a fixed 4 KiB data shard, which is opened (through the format table with
// mmap, and directly with pread) and every tensor loaded, its crc32c checked. The same bytes go
// to the table codec, the BundleEntryProto decoder and the saved_model.pb parser straight from
// memory. Rejecting the input with a Status is the expected outcome; a crash, sanitizer report,
// leak or timeout is a bug.
#include "fuzz_util.h"
#include "modelport/formats/format.h"
#include "modelport/formats/tf/bundle.h"
#include "modelport/formats/tf/saved_model.h"

namespace {

// Leaked on purpose: the atexit handler runs after static destructors would have freed them.
const std::string* shard_path = nullptr;

const std::string& Prefix() {
  static const std::string* prefix = [] {
    auto* p = new std::string(mp::fuzz::ScratchPath(".ckpt"));
    std::string data(4096, '\0');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + 7);
    shard_path = new std::string(mp::tf::DataFileName(*p, 0, 1));
    mp::fuzz::WriteScratch(*shard_path, reinterpret_cast<const uint8_t*>(data.data()), data.size());
    std::atexit([] { std::remove(shard_path->c_str()); });
    return p;
  }();
  return *prefix;
}

void OpenAndLoadAll(mp::IoMode mode, bool via_table) {
  mp::ReadOptions options;
  options.io_mode = mode;
  options.max_index_bytes = 1 << 20;
  options.max_tensors = 10'000;
  const std::string index = Prefix() + ".index";
  auto source = via_table ? mp::OpenModel(index, options) : mp::tf::Open(index, options);
  if (source.has_value()) mp::fuzz::LoadAll(**source);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string index = Prefix() + ".index";
  mp::fuzz::WriteScratch(index, data, size);
  (void)mp::tf::Detect({data, std::min(size, mp::tf::kDetectBytes)}, size);
  (void)mp::tf::ReadTable({data, size}, 1 << 20, 10'000);
  (void)mp::tf::ParseEntry({data, size}, 64);
  (void)mp::tf::ParseSavedModel({data, size});
  OpenAndLoadAll(mp::IoMode::kMmap, /*via_table=*/true);
  OpenAndLoadAll(mp::IoMode::kPread, /*via_table=*/false);
  std::remove(index.c_str());  // libFuzzer may _Exit, skipping atexit handlers
  return 0;
}
