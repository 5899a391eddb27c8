#include "modelport/core/dtype.h"

#include <gtest/gtest.h>

#include "modelport/core/shape.h"

namespace mp {
namespace {

TEST(DType, EverySafetensorsNameRoundTrips) {
  int carried = 0;
  for (const DTypeTraits& t : AllDTypes()) {
    if (t.safetensors_name.empty()) continue;
    ++carried;
    auto d = DTypeFromSafetensors(t.safetensors_name);
    ASSERT_TRUE(d.ok()) << t.safetensors_name;
    EXPECT_EQ(*d, t.dtype);
    EXPECT_EQ(*ParseDType(t.name), t.dtype);
  }
  EXPECT_EQ(carried, 16);  // BOOL U8 I8 I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64 C64 F8 x2
}

TEST(DType, UnknownAndUnsupportedNamesAreDistinguished) {
  EXPECT_EQ(DTypeFromSafetensors("F8_E8M0").status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(DTypeFromSafetensors("F4").status().code(), StatusCode::kUnsupported);
  auto bad = DTypeFromSafetensors("F31");
  EXPECT_EQ(bad.status().code(), StatusCode::kCorrupt);
  EXPECT_EQ(bad.status().message(), "unknown safetensors dtype 'F31'");
  EXPECT_EQ(ParseDType("float16").value(), DType::kF16);
  EXPECT_EQ(ParseDType("BF16").value(), DType::kBF16);
  EXPECT_EQ(ParseDType("f17").status().code(), StatusCode::kInvalidArgument);
}

TEST(DType, SizesAndBlocks) {
  EXPECT_EQ(ElementSize(DType::kC64), 8u);
  EXPECT_EQ(ElementSize(DType::kBF16), 2u);
  EXPECT_EQ(*ByteSize(DType::kQ8_0, Shape{4, 64}), 8u * 34);
  EXPECT_EQ(ByteSize(DType::kQ4_0, Shape{33}).status().code(), StatusCode::kInvalidArgument);
}

TEST(Shape, CheckedArithmetic) {
  EXPECT_EQ(*Shape{}.NumElements(), 1u);
  EXPECT_EQ(*Shape({0, 3}).NumElements(), 0u);
  EXPECT_EQ(Shape({1ull << 32, 1ull << 32}).NumElements().status().code(),
            StatusCode::kLimitExceeded);
  // Elements fit in 64 bits but bytes do not.
  auto bytes = ByteSize(DType::kF64, Shape{1ull << 62});
  EXPECT_EQ(bytes.status().code(), StatusCode::kLimitExceeded);
  EXPECT_EQ(Shape({2, 3}).ToString(), "[2, 3]");
  EXPECT_EQ(CheckedAdd(~0ull, 1).status().code(), StatusCode::kLimitExceeded);
}

}  // namespace
}  // namespace mp
