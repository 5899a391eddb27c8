// libFuzzer target for sharded safetensors: the input bytes become model.safetensors.index.json
// in a scratch folder that holds two valid shards (s1: tensor "a", s2: tensor "b"), a symbolic
// link to s1 and a subfolder, so the shard-name rules (plain names only, no links, no escape)
// and the index/shard agreement checks all get exercised. Opening must fail cleanly or give a
// model whose every tensor loads.
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "modelport/core/hash.h"
#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"

namespace {

namespace fs = std::filesystem;

std::string g_dir;  // the scratch folder

void WriteFile(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  bool ok = bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) std::abort();
}

// A one-tensor safetensors file: `name` as U8 [4].
std::string OneTensorFile(std::string_view name) {
  std::string header =
      "{\"" + std::string(name) + R"(":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file;
  for (int i = 0; i < 8; ++i) file.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  return file + header + "\x01\x02\x03\x04";
}

void LoadEveryTensor(const mp::ModelSource& source) {
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    auto tensor = source.Load(i);
    if (tensor.has_value()) (void)mp::TensorDigest(*tensor);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string tmpl = std::string(base) + "/modelport_index_fuzz.XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) std::abort();
  g_dir = tmpl;
  WriteFile(g_dir + "/s1.safetensors", OneTensorFile("a"));
  WriteFile(g_dir + "/s2.safetensors", OneTensorFile("b"));
  fs::create_directory(g_dir + "/sub");
  WriteFile(g_dir + "/sub/s3.safetensors", OneTensorFile("c"));
  fs::create_symlink("s1.safetensors", g_dir + "/link.safetensors");
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(g_dir, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string index = g_dir + "/" + std::string(mp::safetensors::kIndexName);
  WriteFile(index, std::string_view(reinterpret_cast<const char*>(data), size));
  mp::ReadOptions options;
  options.max_index_bytes = 1 << 20;
  // By the index path, and by the folder (through the format table's folder detection).
  if (auto source = mp::safetensors::Open(index, options); source.has_value())
    LoadEveryTensor(**source);
  if (auto source = mp::OpenModel(g_dir, options); source.has_value()) LoadEveryTensor(**source);
  return 0;
}
