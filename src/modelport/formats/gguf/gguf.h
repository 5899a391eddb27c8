// GGUF (ggml-org/ggml docs/gguf.md; ggml/src/gguf.cpp), versions 2 and 3, little-endian:
//
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv
//   n_kv x  { string key, u32 value type, value }
//   n_tensors x { string name, u32 n_dims, n_dims x u64 dim (innermost first), u32 ggml type,
//                 u64 offset (from the data section, a multiple of the alignment) }
//   zero padding to general.alignment (u32, default 32), then the data section.
//
// A string is a u64 byte count and UTF-8 bytes; an array is a u32 element type, a u64 count and
// the elements (arrays nest). Split models are name-0000k-of-0000N.gguf with split.no (u16),
// split.count (u16) and split.tensors.count (i32).
//
// Metadata is presented as a JSON object in file order: integers and floats as JSON numbers,
// bools, strings, arrays as JSON arrays. The reader remembers each key's GGUF value type, and
// the writer reuses those types when it writes a model read from GGUF, so a GGUF -> GGUF copy is
// byte-identical. Values from other sources get the type their JSON value implies (see
// docs/FORMATS.md, "GGUF").
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "modelport/formats/format.h"

namespace mp::gguf {

/// GGUF metadata value types (gguf.md, gguf_type).
enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

/// "u32", "string", "array", ...; "unknown" for values outside the enum.
std::string_view ValueTypeName(ValueType type);

inline constexpr uint32_t kDefaultAlignment = 32;
/// GGML_MAX_DIMS: a tensor has at most this many dimensions.
inline constexpr uint32_t kMaxDims = 4;
/// Arrays nested deeper than this are refused (bounds the parser's recursion).
inline constexpr int kMaxArrayDepth = 16;

/// The ggml type id that stores `dtype`, if GGUF can carry it.
std::optional<uint32_t> GgmlTypeOf(DType dtype);
/// The DType for ggml type id `type`: Corrupt for ids ggml never defined, Unsupported for ggml
/// types modelport does not carry (IQ*, Q8_1, ...).
Result<DType> DTypeFromGgml(uint32_t type);

/// Opens a .gguf file, any shard of a split model (the whole model is opened), or a folder
/// holding one model.
Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options);

/// Writes `source` to `path` (a .gguf file, or a folder: `model.gguf` in it). With
/// options.shard_size > 0, writes `<stem>-0000k-of-0000N.gguf` splits of at most that many
/// tensor bytes each (a larger tensor gets a split of its own).
Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options);

/// The GGUF type a GGUF reader recorded for metadata `key` ("u32", "[f32]", "[[u8]]"), or
/// nullopt when `source` is not a GGUF reader or has no such key.
std::optional<std::string> StoredValueType(const ModelSource& source, std::string_view key);

bool Detect(std::span<const uint8_t> prefix, uint64_t file_size);
bool DetectDir(const std::string& dir);

}  // namespace mp::gguf
