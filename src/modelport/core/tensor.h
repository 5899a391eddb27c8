// TensorInfo (what a reader knows before touching data), TensorView (a tensor with its bytes)
// and ModelSource: the one interface every reader, transform and in-memory model offers, and
// every writer consumes. Writers pull tensors one at a time, so conversion holds at most one
// tensor in memory.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/core/buffer.h"
#include "modelport/core/dtype.h"
#include "modelport/core/shape.h"
#include "modelport/core/status.h"

namespace mp {

using Json = nlohmann::ordered_json;

/// Metadata key of tied tensors, {"alias name": "name of the tensor stored"}: a reader whose
/// format shares storage (PyTorch) lists a tied tensor once and records the others here;
/// writers that can share storage tie them again, the others keep the key as metadata.
inline constexpr std::string_view kAliasesMetadataKey = "modelport.aliases";

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t byte_size = 0;  ///< ByteSize(dtype, shape)

  /// Builds an info with byte_size computed (checked). Errors do not name the tensor: callers
  /// add that context.
  static Result<TensorInfo> Make(std::string name, DType dtype, Shape shape);
};

/// A tensor and its little-endian, row-major bytes. `data` keeps the bytes alive (a slice of a
/// mapped file for zero-copy readers) and data->size() == info.byte_size.
struct TensorView {
  TensorInfo info;
  std::shared_ptr<Buffer> data;

  std::span<const uint8_t> bytes() const { return data->span(); }
};

/// The files a model is read from: an index (sharded models) and the data files, in order.
struct ModelFiles {
  std::string index;               ///< empty when the model has no separate index
  std::vector<std::string> files;  ///< data files, paths as opened
};

class ModelSource {
 public:
  virtual ~ModelSource() = default;

  /// Format name of where the tensors come from ("safetensors", "memory", ...).
  virtual std::string_view format() const = 0;
  /// Tensors in file order.
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  /// Typed metadata: a JSON object (empty when the source has none).
  virtual const Json& metadata() const = 0;
  /// The bytes of tensor `index` (< tensors().size()); zero-copy where the source allows.
  /// Safe to call from several threads at once.
  virtual Result<TensorView> Load(size_t index) const = 0;
  /// Copies the bytes of tensor `index` into `dest` (exactly byte_size bytes). File readers
  /// override this to read straight from the file (pread), skipping page faults on a mapping.
  virtual Status LoadInto(size_t index, std::span<uint8_t> dest) const;

  /// The files behind the model (empty for in-memory sources).
  virtual ModelFiles files() const { return {}; }
  /// What a user should know about how the file was read, one sentence each (e.g. "TorchScript
  /// archive: its code was not run"; tensors that share storage). Empty for most sources.
  virtual std::vector<std::string> notes() const { return {}; }

  /// Index of the tensor called `name`, if any.
  std::optional<size_t> Find(std::string_view name) const;
  /// Sum of byte_size over all tensors (checked).
  Result<uint64_t> TotalBytes() const;
  /// Sum of element counts over all tensors (checked).
  Result<uint64_t> TotalElements() const;
};

/// An in-memory model: ordered tensors plus typed metadata.
class Model final : public ModelSource {
 public:
  explicit Model(std::string format = "memory") : format_(std::move(format)) {}

  /// Appends a tensor. AlreadyExists for a duplicate name; InvalidArgument if the buffer's size
  /// does not match the info.
  Status Add(TensorView tensor);
  Json& mutable_metadata() { return metadata_; }

  std::string_view format() const override { return format_; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  Result<TensorView> Load(size_t index) const override;

 private:
  std::string format_;
  std::vector<TensorInfo> infos_;
  std::vector<std::shared_ptr<Buffer>> data_;
  Json metadata_ = Json::object();
};

/// The tied-tensor map of `source`'s metadata[kAliasesMetadataKey] as a JSON object of strings:
/// an object as readers give it, or the same JSON encoded in a string (formats whose metadata
/// values are strings, like safetensors, carry it that way). Empty when absent; Corrupt when it
/// is neither.
Result<Json> AliasesOf(const ModelSource& source);

/// Alignment a typed read of `dtype` needs: the element size (complex64 is two f32: 4;
/// block-quantized types start with f16/f32 fields: 4).
size_t NaturalAlignment(DType dtype);

/// `bytes` itself when it is naturally aligned for `dtype`, else an aligned copy. Readers pass
/// file views through this, so nothing reads a multi-byte value through a misaligned pointer
/// (formats without padding rules may place tensors anywhere).
Result<std::shared_ptr<Buffer>> AlignedFor(DType dtype, std::shared_ptr<Buffer> bytes);

/// Tensor `index` of `source` in freshly allocated memory the caller owns (not a view of a file).
Result<TensorView> LoadOwned(const ModelSource& source, size_t index);

/// Copies a whole source into owned memory, tensors loaded in parallel.
Result<std::unique_ptr<Model>> LoadAll(const ModelSource& source);

}  // namespace mp
