// One enum for every element type any format has, and one traits table describing them.
// Per-format names live in the table so adding a dtype is a one-line change here plus the
// formats that can carry it.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "modelport/core/status.h"

namespace mp {

enum class DType : uint8_t {
  kBool,
  kU8,
  kI8,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
  kC64,     ///< complex64: two little-endian f32 (real, imaginary)
  kF8E4M3,  ///< float8 e4m3fn: no infinities, NaN is S.1111.111, max 448
  kF8E5M2,  ///< float8 e5m2: IEEE-like, max 57344
  // Block-quantized types: elements come in blocks of block_elems stored in block_bytes.
  kQ8_0,  ///< ggml Q8_0: f16 scale + 32 x i8
  kQ4_0,  ///< ggml Q4_0: f16 scale + 16 bytes of nibbles
  kQ4_1,  ///< ggml Q4_1: f16 scale, f16 min + 16 bytes of nibbles
  kQ5_0,  ///< ggml Q5_0: f16 scale + u32 of fifth bits + 16 bytes of nibbles
  kQ5_1,  ///< ggml Q5_1: f16 scale, f16 min + u32 of fifth bits + 16 bytes of nibbles
  kQ2_K,  ///< ggml Q2_K: 256-element super-block, 2-bit quants, 4-bit scales and mins
  kQ3_K,  ///< ggml Q3_K: 256-element super-block, 3-bit quants, 6-bit scales
  kQ4_K,  ///< ggml Q4_K: 256-element super-block, 4-bit quants, 6-bit scales and mins
  kQ5_K,  ///< ggml Q5_K: 256-element super-block, 5-bit quants, 6-bit scales and mins
  kQ6_K,  ///< ggml Q6_K: 256-element super-block, 6-bit quants, 8-bit scales
  kQ8_K,  ///< ggml Q8_K: f32 scale + 256 x i8 + 16 x i16 block sums
  kCount,
};

enum class DTypeKind : uint8_t { kBool, kUnsigned, kSigned, kFloat, kComplex, kQuantized };

struct DTypeTraits {
  DType dtype;
  std::string_view name;              ///< canonical lower-case name used by the CLI: "f32"
  std::string_view safetensors_name;  ///< "F32"; empty when safetensors cannot carry it
  DTypeKind kind;
  uint32_t block_elems;  ///< elements per block: 1 for plain types
  uint32_t block_bytes;  ///< bytes per block: the element size for plain types
};

/// The traits of `dtype`. `dtype` must be a valid enumerator below kCount.
const DTypeTraits& Traits(DType dtype);

/// All rows of the table, in enum order.
std::span<const DTypeTraits> AllDTypes();

inline std::string_view DTypeName(DType d) { return Traits(d).name; }
inline bool IsFloat(DType d) { return Traits(d).kind == DTypeKind::kFloat; }
inline bool IsQuantized(DType d) { return Traits(d).kind == DTypeKind::kQuantized; }
/// Size of one element in bytes; only meaningful for non-block types.
inline uint32_t ElementSize(DType d) { return Traits(d).block_bytes; }

/// Parses a canonical name ("f16", "bf16", ...). Case-insensitive; also accepts the common
/// spellings "float16", "half", "bfloat16", "float32", "float", "float64", "double".
Result<DType> ParseDType(std::string_view name);

/// Parses a safetensors dtype string ("F32"). Known-but-unsupported names (F8_E8M0, F4, F6_*)
/// give Unsupported; anything else gives Corrupt.
Result<DType> DTypeFromSafetensors(std::string_view name);

}  // namespace mp
