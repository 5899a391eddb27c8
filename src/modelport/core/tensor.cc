#include "modelport/core/tensor.h"

#include <cstring>

#include "modelport/core/parallel.h"

namespace mp {

Result<TensorInfo> TensorInfo::Make(std::string name, DType dtype, Shape shape) {
  MP_ASSIGN_OR_RETURN(uint64_t bytes, ByteSize(dtype, shape));
  return TensorInfo{std::move(name), dtype, std::move(shape), bytes};
}

std::optional<size_t> ModelSource::Find(std::string_view name) const {
  const auto& infos = tensors();
  for (size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].name == name) return i;
  }
  return std::nullopt;
}

Result<uint64_t> ModelSource::TotalBytes() const {
  uint64_t total = 0;
  for (const auto& t : tensors()) {
    MP_ASSIGN_OR_RETURN(total, CheckedAdd(total, t.byte_size));
  }
  return total;
}

Result<uint64_t> ModelSource::TotalElements() const {
  uint64_t total = 0;
  for (const auto& t : tensors()) {
    MP_ASSIGN_OR_RETURN(uint64_t n, t.shape.NumElements());
    MP_ASSIGN_OR_RETURN(total, CheckedAdd(total, n));
  }
  return total;
}

Status ModelSource::LoadInto(size_t index, std::span<uint8_t> dest) const {
  MP_ASSIGN_OR_RETURN(TensorView t, Load(index));
  if (t.data->size() != dest.size()) {
    return InvalidArgument("tensor '" + t.info.name + "' has " + std::to_string(t.data->size()) +
                           " bytes, destination holds " + std::to_string(dest.size()));
  }
  if (!dest.empty()) std::memcpy(dest.data(), t.data->data(), dest.size());
  return Status::Ok();
}

size_t NaturalAlignment(DType dtype) {
  const DTypeTraits& t = Traits(dtype);
  if (t.block_elems > 1 || dtype == DType::kC64) return 4;
  return t.block_bytes;
}

Result<std::shared_ptr<Buffer>> AlignedFor(DType dtype, std::shared_ptr<Buffer> bytes) {
  if (reinterpret_cast<uintptr_t>(bytes->data()) % NaturalAlignment(dtype) == 0) return bytes;
  MP_ASSIGN_OR_RETURN(auto copy, Buffer::Allocate(bytes->size()));
  if (bytes->size() != 0) std::memcpy(copy->mutable_data(), bytes->data(), bytes->size());
  return copy;
}

Result<TensorView> LoadOwned(const ModelSource& source, size_t index) {
  if (index >= source.tensors().size()) return NotFound("tensor #" + std::to_string(index));
  const TensorInfo& info = source.tensors()[index];
  MP_ASSIGN_OR_RETURN(auto buf, Buffer::Allocate(info.byte_size));
  MP_RETURN_IF_ERROR(
      source.LoadInto(index, std::span<uint8_t>(buf->mutable_data(), info.byte_size)));
  return TensorView{info, std::move(buf)};
}

Status Model::Add(TensorView tensor) {
  if (Find(tensor.info.name)) {
    return AlreadyExists("tensor '" + tensor.info.name + "' is already in the model");
  }
  if (!tensor.data || tensor.data->size() != tensor.info.byte_size) {
    return InvalidArgument("tensor '" + tensor.info.name + "': buffer holds " +
                           std::to_string(tensor.data ? tensor.data->size() : 0) +
                           " bytes but dtype and shape need " +
                           std::to_string(tensor.info.byte_size));
  }
  infos_.push_back(std::move(tensor.info));
  data_.push_back(std::move(tensor.data));
  return Status::Ok();
}

Result<TensorView> Model::Load(size_t index) const {
  if (index >= infos_.size()) return NotFound("tensor #" + std::to_string(index));
  return TensorView{infos_[index], data_[index]};
}

Result<std::unique_ptr<Model>> LoadAll(const ModelSource& source) {
  auto model = std::make_unique<Model>(std::string(source.format()));
  model->mutable_metadata() = source.metadata();
  // Tensors load in parallel: faulting in fresh memory and copying from the page cache are
  // both per-core costs.
  std::vector<TensorView> loaded(source.tensors().size());
  MP_RETURN_IF_ERROR(ParallelFor(loaded.size(), [&](size_t i) -> Status {
    MP_ASSIGN_OR_RETURN(loaded[i], LoadOwned(source, i));
    return Status::Ok();
  }));
  for (TensorView& t : loaded) MP_RETURN_IF_ERROR(model->Add(std::move(t)));
  return model;
}

Result<Json> AliasesOf(const ModelSource& source) {
  const Json& metadata = source.metadata();
  if (!metadata.is_object()) return Json::object();
  auto it = metadata.find(kAliasesMetadataKey);
  if (it == metadata.end()) return Json::object();
  Json aliases = *it;
  if (aliases.is_string()) {
    const std::string& text = it->get_ref<const std::string&>();
    aliases = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  }
  bool valid = aliases.is_object();
  if (valid)
    for (const auto& [alias, target] : aliases.items()) valid = valid && target.is_string();
  if (!valid)
    return Corrupt("metadata " + std::string(kAliasesMetadataKey) +
                   " is not an object of tensor names");
  return aliases;
}

}  // namespace mp
