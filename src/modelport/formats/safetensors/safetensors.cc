#include "modelport/formats/safetensors/safetensors.h"

namespace mp::safetensors {
Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions&) {
  return Unsupported(path + ": not yet");
}
Status Write(const ModelSource&, const std::string& path, const WriteOptions&) {
  return Unsupported(path + ": not yet");
}
bool Detect(std::span<const uint8_t>, uint64_t) { return false; }
bool DetectDir(const std::string&) { return false; }
}  // namespace mp::safetensors
