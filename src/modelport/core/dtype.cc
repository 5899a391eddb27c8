#include "modelport/core/dtype.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>

namespace mp {
namespace {

using K = DTypeKind;

constexpr std::array<DTypeTraits, static_cast<size_t>(DType::kCount)> kTable = {{
    {DType::kBool, "bool", "BOOL", K::kBool, 1, 1},
    {DType::kU8, "u8", "U8", K::kUnsigned, 1, 1},
    {DType::kI8, "i8", "I8", K::kSigned, 1, 1},
    {DType::kI16, "i16", "I16", K::kSigned, 1, 2},
    {DType::kU16, "u16", "U16", K::kUnsigned, 1, 2},
    {DType::kF16, "f16", "F16", K::kFloat, 1, 2},
    {DType::kBF16, "bf16", "BF16", K::kFloat, 1, 2},
    {DType::kI32, "i32", "I32", K::kSigned, 1, 4},
    {DType::kU32, "u32", "U32", K::kUnsigned, 1, 4},
    {DType::kF32, "f32", "F32", K::kFloat, 1, 4},
    {DType::kF64, "f64", "F64", K::kFloat, 1, 8},
    {DType::kI64, "i64", "I64", K::kSigned, 1, 8},
    {DType::kU64, "u64", "U64", K::kUnsigned, 1, 8},
    {DType::kC64, "c64", "C64", K::kComplex, 1, 8},
    {DType::kF8E4M3, "f8_e4m3", "F8_E4M3", K::kFloat, 1, 1},
    {DType::kF8E5M2, "f8_e5m2", "F8_E5M2", K::kFloat, 1, 1},
    {DType::kQ8_0, "q8_0", "", K::kQuantized, 32, 34},
    {DType::kQ4_0, "q4_0", "", K::kQuantized, 32, 18},
    {DType::kQ4_1, "q4_1", "", K::kQuantized, 32, 20},
    {DType::kQ5_0, "q5_0", "", K::kQuantized, 32, 22},
    {DType::kQ5_1, "q5_1", "", K::kQuantized, 32, 24},
    {DType::kQ2_K, "q2_k", "", K::kQuantized, 256, 84},
    {DType::kQ3_K, "q3_k", "", K::kQuantized, 256, 110},
    {DType::kQ4_K, "q4_k", "", K::kQuantized, 256, 144},
    {DType::kQ5_K, "q5_k", "", K::kQuantized, 256, 176},
    {DType::kQ6_K, "q6_k", "", K::kQuantized, 256, 210},
    {DType::kQ8_K, "q8_k", "", K::kQuantized, 256, 292},
}};

// The table is indexed by the enum: every row must sit at its own enumerator's position.
constexpr bool TableInEnumOrder() {
  for (size_t i = 0; i < kTable.size(); ++i) {
    if (static_cast<size_t>(kTable[i].dtype) != i) return false;
  }
  return true;
}
static_assert(TableInEnumOrder(), "kTable rows must follow the DType enum order");

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

const DTypeTraits& Traits(DType dtype) { return kTable[static_cast<size_t>(dtype)]; }

std::span<const DTypeTraits> AllDTypes() { return kTable; }

Result<DType> ParseDType(std::string_view name) {
  const std::string lower = Lower(name);
  for (const auto& t : kTable) {
    if (t.name == lower) return t.dtype;
  }
  static constexpr std::pair<std::string_view, DType> kAliases[] = {
      {"float16", DType::kF16}, {"half", DType::kF16},  {"bfloat16", DType::kBF16},
      {"float32", DType::kF32}, {"float", DType::kF32}, {"float64", DType::kF64},
      {"double", DType::kF64},  {"fp16", DType::kF16},  {"fp32", DType::kF32},
  };
  for (const auto& [alias, dtype] : kAliases) {
    if (alias == lower) return dtype;
  }
  return InvalidArgument("unknown dtype '" + std::string(name) +
                         "' (expected one of bool u8 i8 i16 u16 f16 bf16 i32 u32 f32 f64 i64 "
                         "u64 c64 f8_e4m3 f8_e5m2)");
}

Result<DType> DTypeFromSafetensors(std::string_view name) {
  for (const auto& t : kTable) {
    if (!t.safetensors_name.empty() && t.safetensors_name == name) return t.dtype;
  }
  static constexpr std::string_view kKnownUnsupported[] = {"F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"};
  for (auto known : kKnownUnsupported) {
    if (known == name) {
      return Unsupported("safetensors dtype " + std::string(name) +
                         " (sub-byte / scale types) is not supported yet");
    }
  }
  return Corrupt("unknown safetensors dtype '" + std::string(name) + "'");
}

}  // namespace mp
