// libFuzzer target for the TensorFlow.js reader and writer: the input bytes are a model.json whose
// manifest may name a fixed set of in-memory shards (below; the seeds in corpus/tfjs use them).
// Whatever opens has every tensor loaded and digested, is written back as a TF.js folder in
// scratch space (which must succeed: every dtype the reader gives is one the writer holds) and
// read again, tensor for tensor the same. Rejecting the input with a Status is the expected
// outcome; a crash, sanitizer report, leak, timeout or failed round trip is a bug.
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "modelport/formats/tfjs/tfjs.h"

namespace {

std::shared_ptr<mp::Buffer> Pattern(size_t size, uint8_t seed) {
  auto buf = *mp::Buffer::Allocate(size);
  for (size_t i = 0; i < size; ++i) buf->mutable_data()[i] = static_cast<uint8_t>(seed + 7 * i);
  return buf;
}

/// The shards a fuzzed manifest may name: TF.js's names for one and two shards, a 7-byte one to
/// cut tensors oddly, and strings ("ab", "", "xyz" as u32 length + bytes).
const std::map<std::string, std::shared_ptr<mp::Buffer>>& Shards() {
  static const auto* shards = [] {
    auto* m = new std::map<std::string, std::shared_ptr<mp::Buffer>>();
    (*m)["group1-shard1of1.bin"] = Pattern(256, 1);
    (*m)["group1-shard1of2.bin"] = Pattern(100, 2);
    (*m)["group1-shard2of2.bin"] = Pattern(60, 3);
    (*m)["a.bin"] = Pattern(7, 4);
    const uint8_t strings[] = {2, 0, 0, 0, 'a', 'b', 0, 0, 0, 0, 3, 0, 0, 0, 'x', 'y', 'z'};
    auto s = *mp::Buffer::Allocate(sizeof strings);
    std::copy(strings, strings + sizeof strings, s->mutable_data());
    (*m)["s.bin"] = s;
    return m;
  }();
  return *shards;
}

const std::string& OutDir() {
  static const std::string path = mp::fuzz::ScratchPath(".tfjs");
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)mp::tfjs::Detect({data, size < mp::tfjs::kDetectBytes ? size : mp::tfjs::kDetectBytes},
                         size);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto source = mp::tfjs::OpenFromMemory(text, Shards(), {});
  if (!source.has_value()) return 0;
  std::vector<std::string> digests;
  mp::fuzz::LoadAll(**source,
                    [&](const mp::TensorView& t) { digests.push_back(mp::TensorDigest(t)); });
  if (digests.size() != (*source)->tensors().size()) return 0;  // a tensor failed to load

  std::error_code ec;
  std::filesystem::remove_all(OutDir(), ec);
  mp::WriteOptions options;
  options.durable = false;
  options.shard_size = 64;
  if (!mp::tfjs::Write(**source, OutDir(), options).ok()) std::abort();
  auto back = mp::tfjs::Open(OutDir(), {});
  if (!back.has_value() || (*back)->tensors().size() != digests.size()) std::abort();
  size_t k = 0;
  mp::fuzz::LoadAll(**back, [&](const mp::TensorView& t) {
    if (mp::TensorDigest(t) != digests[k++]) std::abort();
  });
  if (k != digests.size()) std::abort();
  std::filesystem::remove_all(OutDir(), ec);
  return 0;
}
