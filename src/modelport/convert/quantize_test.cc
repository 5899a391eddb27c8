// Quantization tests. The block tests pack each expected block by hand from ggml's reference
// formulas (quantize_row_*_ref) on inputs chosen so that the scale is exact, which makes every
// rounding step visible: Q8_0 rounds half away from zero, Q4_0/Q5_0 truncate x/d + 8.5, Q4_1 caps
// at 15 and Q5_1 does not. int8 uses round-half-even, as numpy and ONNX do.
#include "modelport/convert/quantize.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/formats/gguf/quants.h"

namespace mp {
namespace {

std::vector<uint8_t> Blocks(DType dtype, const std::vector<float>& x) {
  std::vector<uint8_t> out(x.size() / 32 * Traits(dtype).block_bytes, 0xEE);
  const Status s = QuantizeBlocks(dtype, x, out.data());
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

std::vector<uint8_t> Half(float v) {
  const uint16_t h = F32ToF16(v);
  return {static_cast<uint8_t>(h), static_cast<uint8_t>(h >> 8)};
}

std::vector<uint8_t> Cat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<uint8_t> U32(uint32_t v) {
  return {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v >> 16),
          static_cast<uint8_t>(v >> 24)};
}

// Nibble bytes: low nibble from q[j], high nibble from q[j + 16].
std::vector<uint8_t> Nibbles(const std::vector<int>& q) {
  std::vector<uint8_t> out(16);
  for (int j = 0; j < 16; ++j) out[j] = static_cast<uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4));
  return out;
}

uint32_t HighBits(const std::vector<int>& q) {
  uint32_t qh = 0;
  for (int j = 0; j < 32; ++j) qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  return qh;
}

TEST(QuantizeBlocks, Q8_0RoundsHalfAwayFromZero) {
  // max |x| = 127, so d = 1 exactly and q = roundf(x).
  std::vector<float> x(32, 0.0f);
  x[0] = -127.0f;
  const float halves[] = {0.5f, -0.5f, 1.5f, 2.5f, -2.5f, 3.49f, 126.5f, -0.49f};
  for (int i = 0; i < 8; ++i) x[1 + i] = halves[i];
  const std::vector<int8_t> q_tail = {1, -1, 2, 3, -3, 3, 127, 0};
  std::vector<uint8_t> want = Half(1.0f);
  want.push_back(static_cast<uint8_t>(-127));
  for (int8_t q : q_tail) want.push_back(static_cast<uint8_t>(q));
  want.resize(34, 0);
  EXPECT_EQ(Blocks(DType::kQ8_0, x), want);
}

TEST(QuantizeBlocks, Q4_0TruncatesAndCapsAt15) {
  // The value of largest magnitude is -8 (first, so a later +8 does not replace it): d = 1.
  std::vector<float> x(32, 0.0f);
  const float head[] = {-8.0f, 8.0f, 7.4f, 7.5f, -0.5f, -0.6f, 0.49f, 3.0f};
  for (int i = 0; i < 8; ++i) x[i] = head[i];
  x[16] = -7.5f;
  x[17] = 6.6f;
  std::vector<int> q(32);
  for (int j = 0; j < 32; ++j) q[j] = std::min(15, static_cast<int>(x[j] + 8.5f));
  // Spelled out: -8 -> 0, 8 -> 15 (capped from 16), 7.4 -> 15, 7.5 -> 15 (16 capped), -0.5 -> 8,
  // -0.6 -> 7, 0.49 -> 8, 3 -> 11, zeros -> 8.
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 15);
  EXPECT_EQ(q[4], 8);
  EXPECT_EQ(q[5], 7);
  EXPECT_EQ(Blocks(DType::kQ4_0, x), Cat(Half(1.0f), Nibbles(q)));
}

TEST(QuantizeBlocks, Q4_0ScaleSignFollowsTheLargestValue) {
  // Largest magnitude +4: d = 4 / -8 = -0.5, so x = 4 maps to q = 0 and x = -3.5 to 15.
  std::vector<float> x(32, 0.0f);
  x[0] = 4.0f;
  x[1] = -3.5f;
  x[2] = 1.0f;
  std::vector<int> q(32, 8);
  q[0] = 0;   // 4 / -0.5 + 8.5 = 0.5
  q[1] = 15;  // -3.5 / -0.5 + 8.5 = 15.5
  q[2] = 6;   // 1 / -0.5 + 8.5 = 6.5
  EXPECT_EQ(Blocks(DType::kQ4_0, x), Cat(Half(-0.5f), Nibbles(q)));
}

TEST(QuantizeBlocks, Q4_1MinAndScale) {
  // min -1, max 14: d = 15 / 15 = 1, m = -1, q = min(15, trunc(x + 1 + 0.5)).
  std::vector<float> x(32, 0.0f);
  x[0] = -1.0f;
  x[1] = 14.0f;
  x[2] = 2.4f;
  x[3] = 2.5f;
  x[20] = 13.6f;
  std::vector<int> q(32, 1);  // zeros: trunc(1.5) = 1
  q[0] = 0;
  q[1] = 15;
  q[2] = 3;    // 3.9
  q[3] = 4;    // 4.0
  q[20] = 15;  // 15.1
  EXPECT_EQ(Blocks(DType::kQ4_1, x), Cat(Cat(Half(1.0f), Half(-1.0f)), Nibbles(q)));
}

TEST(QuantizeBlocks, Q5_0HighBits) {
  // Largest magnitude -16: d = 1, q = min(31, trunc(x + 16.5)).
  std::vector<float> x(32, 0.0f);
  x[0] = -16.0f;
  x[1] = 15.0f;
  x[2] = 16.0f;
  x[3] = -0.5f;
  x[17] = 5.2f;
  x[31] = -9.0f;
  std::vector<int> q(32, 16);
  q[0] = 0;
  q[1] = 31;
  q[2] = 31;  // 32 capped
  q[3] = 16;
  q[17] = 21;
  q[31] = 7;
  EXPECT_EQ(Blocks(DType::kQ5_0, x), Cat(Cat(Half(1.0f), U32(HighBits(q))), Nibbles(q)));
}

TEST(QuantizeBlocks, Q5_1IsNotCapped) {
  // min 0, max 31: d = 1, m = 0, q = trunc(x + 0.5).
  std::vector<float> x(32, 0.0f);
  x[0] = 31.0f;
  x[1] = 16.49f;
  x[2] = 16.5f;
  x[18] = 30.7f;
  std::vector<int> q(32, 0);
  q[0] = 31;
  q[1] = 16;
  q[2] = 17;
  q[18] = 31;
  EXPECT_EQ(Blocks(DType::kQ5_1, x),
            Cat(Cat(Cat(Half(1.0f), Half(0.0f)), U32(HighBits(q))), Nibbles(q)));
}

TEST(QuantizeBlocks, AllZeroBlock) {
  const std::vector<float> x(32, 0.0f);
  std::vector<uint8_t> q8 = Half(0.0f);
  q8.resize(34, 0);
  EXPECT_EQ(Blocks(DType::kQ8_0, x), q8);
  // d = 0 / -8 is -0 (the sign bit set, as in the reference), id = 0: every x * id + 8.5
  // truncates to 8.
  EXPECT_EQ(Blocks(DType::kQ4_0, x), Cat(Half(-0.0f), std::vector<uint8_t>(16, 0x88)));
}

TEST(QuantizeBlocks, DequantizedWithinHalfAStepOfTheGrid) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> x(32 * 64);
  for (float& v : x) v = dist(rng);
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1}) {
    const std::vector<uint8_t> blocks = Blocks(t, x);
    std::vector<float> back(x.size());
    ASSERT_TRUE(gguf::DequantizeToF32(t, blocks, back.data()).ok());
    const int levels = t == DType::kQ8_0 ? 254 : t == DType::kQ4_0 || t == DType::kQ4_1 ? 15 : 31;
    for (size_t b = 0; b < x.size() / 32; ++b) {
      float lo = x[b * 32], hi = lo, amax = 0;
      for (int j = 0; j < 32; ++j) {
        lo = std::min(lo, x[b * 32 + j]);
        hi = std::max(hi, x[b * 32 + j]);
        amax = std::max(amax, std::fabs(x[b * 32 + j]));
      }
      // A step of the grid; symmetric types span 2 amax, affine ones max - min. The f16 scale
      // adds up to 2^-11 relative per level used; clamping the symmetric types' top level costs
      // at most one more step on the side opposite the largest value.
      const bool affine = t == DType::kQ4_1 || t == DType::kQ5_1;
      const float step = affine
                             ? (hi - lo) / static_cast<float>(levels)
                             : 2 * amax / static_cast<float>(levels + (t == DType::kQ8_0 ? 0 : 1));
      const float bound =
          (t == DType::kQ8_0 || affine ? 0.5f : 1.0f) * step + (affine ? hi - lo : amax) * 1.0e-3f;
      for (int j = 0; j < 32; ++j) {
        EXPECT_LE(std::fabs(back[b * 32 + j] - x[b * 32 + j]), bound)
            << DTypeName(t) << " block " << b << " element " << j;
      }
    }
  }
}

TEST(QuantizeBlocks, RefusesNonFiniteAndPartialBlocks) {
  std::vector<float> x(64, 1.0f);
  x[40] = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint8_t> out(68);
  const Status s = QuantizeBlocks(DType::kQ8_0, x, out.data());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("NaN at flat index 40"), std::string::npos) << s.message();
  x[40] = std::numeric_limits<float>::infinity();
  EXPECT_NE(QuantizeBlocks(DType::kQ4_0, x, out.data()).message().find("an infinity"),
            std::string::npos);
  EXPECT_EQ(QuantizeBlocks(DType::kQ8_0, std::span<const float>(x.data(), 33), out.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeBlocks(DType::kQ6_K, std::span<const float>(x.data(), 32), out.data()).code(),
            StatusCode::kInvalidArgument);
}

TEST(Int8, ScalesRoundHalfToEvenAndClamp) {
  // Two channels along axis 0 of [2, 4]: channel 0 max 127 (scale 1), channel 1 all zero.
  const std::vector<float> x = {127.0f, 2.5f, 3.5f, -2.5f, 0.0f, 0.0f, 0.0f, 0.0f};
  const ChannelLayout l = LayoutFor(Shape{2, 4}, 0, false).value();
  EXPECT_EQ(l.outer, 1u);
  EXPECT_EQ(l.channels, 2u);
  EXPECT_EQ(l.inner, 4u);
  float scales[2];
  ASSERT_TRUE(Int8Scales(x.data(), l, scales).ok());
  EXPECT_EQ(scales[0], 1.0f);
  EXPECT_EQ(scales[1], 1.0f);  // all-zero channel
  int8_t q[8];
  QuantizeInt8(x.data(), l, scales, q);
  const int8_t want[8] = {127, 2, 4, -2, 0, 0, 0, 0};
  EXPECT_EQ(std::vector<int8_t>(q, q + 8), std::vector<int8_t>(want, want + 8));
}

TEST(Int8, AxisOneAndPerTensorLayouts) {
  // [2, 3] along axis 1: channel c holds x[0][c] and x[1][c].
  const std::vector<float> x = {1.0f, -2.0f, 0.5f, -4.0f, 1.0f, 0.25f};
  const ChannelLayout l = LayoutFor(Shape{2, 3}, -1, false).value();
  EXPECT_EQ(l.outer, 2u);
  EXPECT_EQ(l.channels, 3u);
  EXPECT_EQ(l.inner, 1u);
  float s[3];
  ASSERT_TRUE(Int8Scales(x.data(), l, s).ok());
  EXPECT_EQ(s[0], 4.0f / 127.0f);
  EXPECT_EQ(s[1], 2.0f / 127.0f);
  EXPECT_EQ(s[2], 0.5f / 127.0f);
  int8_t q[6];
  QuantizeInt8(x.data(), l, s, q);
  EXPECT_EQ(q[3], -127);
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 127);
  float back[6];
  DequantizeInt8(q, l, s, back);
  for (int i = 0; i < 6; ++i) EXPECT_LE(std::fabs(back[i] - x[i]), s[i % 3] / 2) << i;

  const ChannelLayout whole = LayoutFor(Shape{2, 3}, 0, true).value();
  EXPECT_EQ(whole.channels, 1u);
  EXPECT_EQ(whole.elements(), 6u);
  float one;
  ASSERT_TRUE(Int8Scales(x.data(), whole, &one).ok());
  EXPECT_EQ(one, 4.0f / 127.0f);
  EXPECT_EQ(LayoutFor(Shape{2, 3}, 2, false).status().code(), StatusCode::kInvalidArgument);
}

TEST(Int8, NonFiniteNamesItsIndex) {
  std::vector<float> x(8, 1.0f);
  x[6] = -std::numeric_limits<float>::infinity();
  float s[2];
  const Status st = Int8Scales(x.data(), LayoutFor(Shape{2, 4}, 0, false).value(), s);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("an infinity at flat index 6"), std::string::npos) << st.message();
}

TEST(ErrorStats, ExactAndKnownError) {
  const float ref[4] = {1, 2, 3, 4};
  ErrorStats exact;
  exact.Add(ref, ref, 4);
  EXPECT_TRUE(std::isinf(exact.snr_db()));
  EXPECT_TRUE(exact.ToJson()["snr_db"].is_null());
  EXPECT_DOUBLE_EQ(exact.cosine(), 1.0);
  const float out[4] = {1, 2, 3, 5};
  ErrorStats e;
  e.Add(ref, out, 4);
  EXPECT_DOUBLE_EQ(e.max_abs, 1.0);
  EXPECT_DOUBLE_EQ(e.rmse(), 0.5);
  EXPECT_NEAR(e.snr_db(), 10 * std::log10(30.0), 1e-12);
  EXPECT_NEAR(e.cosine(), 34.0 / (std::sqrt(30.0) * std::sqrt(39.0)), 1e-12);
}

void ExpectSameStats(const ErrorStats& a, const ErrorStats& b) {
  EXPECT_EQ(a.count, b.count);
  // Bit for bit: the one-pass kernels add the same terms in the same order.
  EXPECT_EQ(std::memcmp(&a.max_abs, &b.max_abs, sizeof(double)), 0)
      << a.max_abs << " " << b.max_abs;
  EXPECT_EQ(std::memcmp(&a.sum_sq_err, &b.sum_sq_err, sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&a.sum_sq_ref, &b.sum_sq_ref, sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&a.sum_ref_err, &b.sum_ref_err, sizeof(double)), 0);
}

std::vector<float> Normal(size_t n, uint32_t seed, float sigma) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

// The scale Quantize gives these elements (one channel).
float Int8ScaleOf(const std::vector<float>& x) {
  float amax = 0.0f, scale = 1.0f;
  for (const float v : x) amax = std::max(amax, std::fabs(v));
  Int8ScalesFromAbsMax(&amax, 1, &scale);
  return scale;
}

// The values of `n` elements with many ties: quotients x / s of exactly k + 0.5 and values
// within an ulp or two of them, where x * (1 / s) can round the other way.
std::vector<float> TieHeavy(size_t n, float scale) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    const float k = static_cast<float>(static_cast<int>(i % 250) - 125) + 0.5f;
    x[i] = k * scale;
    if (i % 3 == 1) x[i] = std::nextafter(x[i], 1.0f);
    if (i % 3 == 2) x[i] = std::nextafter(x[i], -1.0f);
  }
  return x;
}

TEST(Int8, OnePassEqualsQuantizeDequantizeAndMeasure) {
  // Lengths around the 256-element runs and the 32-element steps; tie-heavy inputs too.
  for (const size_t n : {0u, 1u, 15u, 16u, 255u, 256u, 257u, 300u, 2048u, 2047u, 5000u}) {
    for (int variant = 0; variant < 3; ++variant) {
      std::vector<float> x = Normal(n, static_cast<uint32_t>(n) + 7, 0.05f);
      if (variant == 1) {
        for (size_t i = 0; i < n; ++i) x[i] = (static_cast<float>(i % 17) - 8.0f) * 0.125f;
      }
      if (variant == 2) x = TieHeavy(n, 0.0011f);
      const float scale = variant == 2 ? 0.0011f : Int8ScaleOf(x);
      ChannelLayout one;
      one.inner = n;
      std::vector<int8_t> q_two(n), q_one(n, 99);
      std::vector<float> back(n);
      QuantizeInt8Range(x.data(), one, &scale, 0, n, q_two.data());
      DequantizeInt8Range(q_two.data(), one, &scale, 0, n, back.data());
      ErrorStats two, fused;
      two.Add(x.data(), back.data(), n);
      QuantizeInt8Measured(x.data(), n, scale, q_one.data(), &fused);
      EXPECT_EQ(q_one, q_two) << n << " " << variant;
      ExpectSameStats(fused, two);
    }
  }
}

TEST(Int8, OnePassMeasuresInDoubleWhatF32SumsCannotHold) {
  // Squares beyond f32's range and below its normal range: both ways take the double sums.
  for (const float big : {3e20f, 1e-30f}) {
    std::vector<float> x = Normal(300, 5, big);
    const float scale = Int8ScaleOf(x);
    std::vector<int8_t> q_two(x.size()), q_one(x.size());
    std::vector<float> back(x.size());
    ChannelLayout one;
    one.inner = x.size();
    QuantizeInt8Range(x.data(), one, &scale, 0, x.size(), q_two.data());
    DequantizeInt8Range(q_two.data(), one, &scale, 0, x.size(), back.data());
    ErrorStats two, fused;
    two.Add(x.data(), back.data(), x.size());
    QuantizeInt8Measured(x.data(), x.size(), scale, q_one.data(), &fused);
    EXPECT_EQ(q_one, q_two) << big;
    ExpectSameStats(fused, two);
    EXPECT_GT(fused.sum_sq_err, 0.0) << big;              // not lost to f32 underflow
    EXPECT_TRUE(std::isfinite(fused.sum_sq_ref)) << big;  // nor overflow
  }
}

TEST(QuantizeBlocks, Q8_0OnePassEqualsQuantizeDequantizeAndMeasure) {
  for (const size_t blocks : {1u, 3u, 4u, 7u, 8u, 9u, 12u, 16u, 64u, 71u}) {
    const size_t n = blocks * 32;
    std::vector<float> x = Normal(n, static_cast<uint32_t>(blocks), 0.02f);
    for (size_t i = 64; i < std::min<size_t>(n, 96); ++i) x[i] = 0.0f;  // an all-zero block
    if (n >= 128) x[100] = 1e7f;  // a block whose d rounds to f16 infinity
    std::vector<uint8_t> two(blocks * 34), one(blocks * 34, 0xAA);
    ASSERT_TRUE(QuantizeBlocks(DType::kQ8_0, x, two.data()).ok());
    std::vector<float> back(n);
    ASSERT_TRUE(gguf::DequantizeToF32(DType::kQ8_0, two, back.data()).ok());
    ErrorStats separate, fused;
    separate.Add(x.data(), back.data(), n);
    // With x[100]: 1e7 / 127 is above f16's largest, d is stored as infinity and its block
    // dequantizes to NaN (0 * inf) and infinities, which both ways measure in double.
    ASSERT_TRUE(QuantizeQ8_0Measured(x, one.data(), &fused)) << blocks;
    EXPECT_EQ(one, two) << blocks;
    ExpectSameStats(fused, separate);
  }
  for (const size_t blocks : {8u, 64u, 13u}) {
    const size_t n = blocks * 32;
    const std::vector<float> x = Normal(n, 99u + static_cast<uint32_t>(blocks), 1.5f);
    std::vector<uint8_t> two(blocks * 34), one(blocks * 34);
    ASSERT_TRUE(QuantizeBlocks(DType::kQ8_0, x, two.data()).ok());
    std::vector<float> back(n);
    ASSERT_TRUE(gguf::DequantizeToF32(DType::kQ8_0, two, back.data()).ok());
    ErrorStats separate, fused;
    separate.Add(x.data(), back.data(), n);
    ASSERT_TRUE(QuantizeQ8_0Measured(x, one.data(), &fused));
    EXPECT_EQ(one, two);
    ExpectSameStats(fused, separate);
  }
}

// Where the CPU has AVX-512 or AVX2 (with FMA and F16C) the kernels run intrinsics; elsewhere
// the portable build. All must give the same bytes and the same report bits.
TEST(QuantizeKernels, IntrinsicBuildsEqualPortable) {
  struct Result {
    std::vector<int8_t> q, values;  // measured, and not (QuantizeInt8)
    std::vector<uint8_t> blocks;
    ErrorStats int8, q8, cast;
  };
  const auto run = [](const std::vector<float>& x, float scale, KernelBuild build) {
    UseKernelBuildForTesting(build);
    Result r;
    r.q.resize(x.size());
    QuantizeInt8Measured(x.data(), x.size(), scale, r.q.data(), &r.int8);
    r.values.resize(x.size());
    ChannelLayout one_channel;
    one_channel.inner = x.size();
    QuantizeInt8(x.data(), one_channel, &scale, r.values.data());
    const size_t whole = x.size() / 32 * 32;
    r.blocks.resize(whole / 32 * 34);
    const std::span<const float> head(x.data(), whole);
    EXPECT_TRUE(QuantizeBlocks(DType::kQ8_0, head, r.blocks.data()).ok());
    EXPECT_TRUE(QuantizeQ8_0Measured(head, r.blocks.data(), &r.q8));
    std::vector<float> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = F16ToF32(F32ToF16(x[i]));  // an f16 cast
    r.cast.Add(x.data(), out.data(), x.size());
    UseKernelBuildForTesting(KernelBuild::kBest);
    return r;
  };
  int cases = 0;
  for (const size_t n : {31u, 256u, 777u, 4096u, 65536u + 96u}) {
    for (int variant = 0; variant < 4; ++variant) {
      std::vector<float> x = Normal(n, static_cast<uint32_t>(n * 4 + variant), 0.02f);
      if (variant == 1) x = TieHeavy(n, 0.0011f);
      if (variant == 2) {
        for (size_t i = 0; i < n; i += 7) x[i] = 0.0f;  // pruned weights and a zero block
        for (size_t i = 0; i < std::min<size_t>(n, 32); ++i) x[i] = 0.0f;
      }
      if (variant == 3) {
        for (size_t i = 0; i < n; ++i) x[i] *= (i % 64 < 32) ? 1e-20f : 1e15f;  // f32 edges
      }
      const float scale = variant == 1 ? 0.0011f : Int8ScaleOf(x);
      const Result a = run(x, scale, KernelBuild::kPortable);
      for (const KernelBuild build : {KernelBuild::kAvx2, KernelBuild::kBest}) {
        const Result b = run(x, scale, build);
        EXPECT_EQ(a.q, b.q) << n << " " << variant;
        EXPECT_EQ(a.values, b.values) << n << " " << variant;
        EXPECT_EQ(a.values, a.q) << n << " " << variant;
        EXPECT_EQ(a.blocks, b.blocks) << n << " " << variant;
        ExpectSameStats(a.int8, b.int8);
        ExpectSameStats(a.q8, b.q8);
        ExpectSameStats(a.cast, b.cast);
      }
      ++cases;
    }
  }
  EXPECT_EQ(cases, 20);
}

// ggml's quantize_row_q8_0_ref, element by element: d = max |x| / 127 stored as f16, q =
// roundf(x * (1 / d)).
std::vector<uint8_t> Q8_0ByTheFormula(const float* x, size_t blocks) {
  std::vector<uint8_t> out;
  for (size_t b = 0; b < blocks; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out = Cat(out, Half(d));
    for (int j = 0; j < 32; ++j) {
      out.push_back(static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x[b * 32 + j] * id))));
    }
  }
  return out;
}

// Every length around the kernels' groups of 8 blocks and their streamed batches of 64, written
// at every alignment the kernels treat apart (streamed where 16- or 32-byte aligned): the
// formula's bytes, and not one byte outside the output.
TEST(QuantizeBlocks, Q8_0EqualsTheFormulaAtEveryLengthAndAlignment) {
  const std::vector<float> x = Normal(32 * 200, 12, 0.3f);
  for (const size_t blocks : {1u, 7u, 8u, 9u, 63u, 64u, 65u, 71u, 128u, 129u, 200u}) {
    const std::vector<uint8_t> want = Q8_0ByTheFormula(x.data(), blocks);
    const std::span<const float> in(x.data(), blocks * 32);
    for (const size_t offset : {0u, 1u, 2u, 16u, 32u}) {
      for (const bool measured : {false, true}) {
        alignas(64) static uint8_t area[200 * 34 + 128];
        std::memset(area, 0xEE, sizeof(area));
        uint8_t* out = area + offset;
        ErrorStats stats;
        if (measured) {
          ASSERT_TRUE(QuantizeQ8_0Measured(in, out, &stats));
          EXPECT_EQ(stats.count, blocks * 32);
        } else {
          ASSERT_TRUE(QuantizeBlocks(DType::kQ8_0, in, out).ok());
        }
        EXPECT_EQ(std::vector<uint8_t>(out, out + want.size()), want)
            << blocks << " blocks at offset " << offset << (measured ? ", measured" : "");
        for (size_t i = 0; i < sizeof(area); ++i) {
          if (i < offset || i >= offset + want.size()) ASSERT_EQ(area[i], 0xEE) << i;
        }
      }
    }
  }
}

TEST(QuantizeBlocks, Q8_0OnePassRefusesWhatTheSeparatePassesHandle) {
  std::vector<float> x(256, 0.5f);
  std::vector<uint8_t> out(8 * 34);
  ErrorStats stats;
  x[200] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(QuantizeQ8_0Measured(x, out.data(), &stats));
  x[200] = 0.5f;
  for (size_t i = 32; i < 64; ++i) x[i] = 1e-40f;  // d an f32 subnormal: 1 / d is infinite
  EXPECT_FALSE(QuantizeQ8_0Measured(x, out.data(), &stats));
  EXPECT_FALSE(QuantizeQ8_0Measured(std::span<const float>(x.data(), 33), out.data(), &stats));
  EXPECT_EQ(stats.count, 0u);
}

// --- Whole models -----------------------------------------------------------------------------

TensorView F32Tensor(const std::string& name, Shape shape, uint32_t seed, float scale = 0.1f) {
  const uint64_t n = shape.NumElements().value();
  auto buf = Buffer::Allocate(n * 4).value();
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  auto* f = reinterpret_cast<float*>(buf->mutable_data());
  for (uint64_t i = 0; i < n; ++i) f[i] = dist(rng);
  return TensorView{TensorInfo::Make(name, DType::kF32, std::move(shape)).value(), buf};
}

TensorView I64Tensor(const std::string& name, std::vector<int64_t> v) {
  auto buf = Buffer::Allocate(v.size() * 8).value();
  std::memcpy(buf->mutable_data(), v.data(), v.size() * 8);
  return TensorView{TensorInfo::Make(name, DType::kI64, Shape{v.size()}).value(), buf};
}

std::unique_ptr<Model> SmallModel() {
  auto m = std::make_unique<Model>();
  EXPECT_TRUE(m->Add(F32Tensor("fc.weight", Shape{64, 32}, 1)).ok());
  EXPECT_TRUE(m->Add(F32Tensor("fc.bias", Shape{64}, 2)).ok());
  EXPECT_TRUE(m->Add(F32Tensor("emb.weight", Shape{40, 48}, 3)).ok());
  EXPECT_TRUE(m->Add(F32Tensor("tiny.weight", Shape{4, 8}, 4)).ok());
  EXPECT_TRUE(m->Add(I64Tensor("steps", {1, 2, 3})).ok());
  m->mutable_metadata()["format"] = "pt";
  return m;
}

const float* Floats(const TensorView& v) { return reinterpret_cast<const float*>(v.data->data()); }

TEST(QuantizeModel, Int8PerChannelViewAndReport) {
  auto m = SmallModel();
  QuantizeOptions o;
  o.scheme = QuantScheme::kInt8;
  QuantReport report;
  auto q = Quantize(*m, o, &report).value();
  std::vector<std::string> names;
  for (const auto& t : q->tensors())
    names.push_back(t.name + ":" + std::string(DTypeName(t.dtype)) + t.shape.ToString());
  EXPECT_EQ(names, (std::vector<std::string>{"fc.weight:i8[64, 32]", "fc.weight_scale:f32[64, 1]",
                                             "fc.bias:f32[64]", "emb.weight:i8[40, 48]",
                                             "emb.weight_scale:f32[40, 1]", "tiny.weight:f32[4, 8]",
                                             "steps:i64[3]"}));
  ASSERT_EQ(report.tensors.size(), 5u);
  EXPECT_TRUE(report.tensors[0].quantized);
  EXPECT_EQ(report.tensors[0].axis, 0);
  EXPECT_EQ(report.tensors[0].bytes_after, 64u * 32 + 64 * 4);
  EXPECT_EQ(report.tensors[1].reason, "rank 1 (bias, norm or scalar)");
  EXPECT_EQ(report.tensors[3].reason, "32 elements < --min-size 1024");
  EXPECT_EQ(report.tensors[4].reason, "not floating point (i64)");
  const Json& config = q->metadata()[std::string(kQuantizationConfigKey)];
  EXPECT_EQ(config["quant_method"], "compressed-tensors");
  EXPECT_EQ(config["config_groups"]["group_0"]["weights"]["strategy"], "channel");
  EXPECT_EQ(config["config_groups"]["group_0"]["targets"],
            Json::array({"fc.weight", "emb.weight"}));
  EXPECT_EQ(q->metadata()["format"], "pt");

  // Values: q * scale within half a scale step of the original, and the report measured it.
  const TensorView w = m->Load(0).value();
  const TensorView qw = q->Load(0).value();
  const TensorView qs = q->Load(1).value();
  ASSERT_TRUE(report.tensors[0].measured);
  double max_err = 0;
  for (int r = 0; r < 64; ++r) {
    float amax = 0;
    for (int c = 0; c < 32; ++c) amax = std::max(amax, std::fabs(Floats(w)[r * 32 + c]));
    EXPECT_EQ(Floats(qs)[r], amax / 127.0f);
    for (int c = 0; c < 32; ++c) {
      const float v =
          static_cast<float>(reinterpret_cast<const int8_t*>(qw.data->data())[r * 32 + c]) *
          Floats(qs)[r];
      const double err = std::fabs(v - Floats(w)[r * 32 + c]);
      EXPECT_LE(err, Floats(qs)[r] / 2 * (1 + 1e-6));
      max_err = std::max(max_err, err);
    }
  }
  EXPECT_DOUBLE_EQ(report.tensors[0].error.max_abs, max_err);
  EXPECT_GT(report.tensors[0].error.cosine(), 0.999);

  // Dequantize pairs them up again: names, dtypes and values q * scale.
  auto d = Dequantize(*q, DType::kF32).value();
  ASSERT_EQ(d->tensors().size(), 5u);
  EXPECT_EQ(d->tensors()[0].name, "fc.weight");
  EXPECT_EQ(d->tensors()[0].dtype, DType::kF32);
  EXPECT_FALSE(d->metadata().contains(std::string(kQuantizationConfigKey)));
  const TensorView dw = d->Load(0).value();
  for (int i = 0; i < 64 * 32; ++i) {
    ASSERT_EQ(Floats(dw)[i],
              static_cast<float>(reinterpret_cast<const int8_t*>(qw.data->data())[i]) *
                  Floats(qs)[i / 32]);
  }
  // Kept tensors come back bit-identical; integers pass through.
  EXPECT_EQ(std::memcmp(d->Load(1).value().data->data(), m->Load(1).value().data->data(), 256), 0);
  EXPECT_EQ(d->tensors()[4].dtype, DType::kI64);
}

TEST(QuantizeModel, PerTensorIncludeExcludeAndMinSize) {
  auto m = SmallModel();
  QuantizeOptions o;
  o.per_tensor = true;
  o.min_elements = 16;
  o.exclude = {"emb.*"};
  QuantReport report;
  auto q = Quantize(*m, o, &report).value();
  EXPECT_EQ(q->tensors()[1].shape, (Shape{1}));
  EXPECT_EQ(report.tensors[2].reason, "excluded by 'emb.*'");
  EXPECT_TRUE(report.tensors[3].quantized);  // tiny.weight: 32 >= 16
  EXPECT_EQ(q->metadata()[std::string(kQuantizationConfigKey)]["config_groups"]["group_0"]
                         ["weights"]["strategy"],
            "tensor");
  o.exclude.clear();
  o.include = {"emb.*"};
  QuantReport r2;
  auto q2 = Quantize(*m, o, &r2).value();
  EXPECT_EQ(r2.quantized_count(), 1u);
  EXPECT_EQ(r2.tensors[0].reason, "matches no --include pattern");
  // Per-tensor pairs dequantize too.
  auto d = Dequantize(*q, DType::kF32).value();
  EXPECT_EQ(d->tensors().size(), 5u);
}

TEST(QuantizeModel, BlocksKeepRowsThatAreNotWholeBlocks) {
  auto m = SmallModel();
  QuantizeOptions o;
  o.scheme = QuantScheme::kQ8_0;
  o.output_format = "gguf";
  QuantReport report;
  auto q = Quantize(*m, o, &report).value();
  EXPECT_EQ(q->tensors()[0].dtype, DType::kQ8_0);
  EXPECT_EQ(q->tensors()[2].dtype, DType::kF32);
  EXPECT_EQ(report.tensors[2].reason,
            "last dimension 48 is not a multiple of the 32-element block");
  EXPECT_EQ(q->metadata()["general.file_type"], 7);
  EXPECT_EQ(q->metadata()["general.quantization_version"], 2);
  EXPECT_FALSE(q->metadata().contains(std::string(kQuantizationConfigKey)));
  // The bytes are exactly QuantizeBlocks' over the tensor.
  const TensorView w = m->Load(0).value();
  const TensorView b = q->Load(0).value();
  std::vector<uint8_t> want(b.data->size());
  ASSERT_TRUE(
      QuantizeBlocks(DType::kQ8_0, std::span<const float>(Floats(w), 64 * 32), want.data()).ok());
  EXPECT_EQ(std::vector<uint8_t>(b.bytes().begin(), b.bytes().end()), want);
  auto d = Dequantize(*q, DType::kF32).value();
  EXPECT_EQ(d->tensors()[0].dtype, DType::kF32);
  EXPECT_EQ(d->metadata()["general.file_type"], 0);
  EXPECT_FALSE(d->metadata().contains("general.quantization_version"));
}

TEST(QuantizeModel, CastsReportTheRoundingError) {
  auto m = SmallModel();
  QuantizeOptions o;
  o.scheme = QuantScheme::kF16;
  QuantReport report;
  auto q = Quantize(*m, o, &report).value();
  const TensorView h = q->Load(0).value();
  EXPECT_EQ(h.info.dtype, DType::kF16);
  const TensorView w = m->Load(0).value();
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(h.data->data());
  for (int i = 0; i < 64 * 32; ++i) ASSERT_EQ(bits[i], F32ToF16(Floats(w)[i]));
  EXPECT_GT(report.tensors[0].error.snr_db(), 60);
  EXPECT_FALSE(q->metadata().contains(std::string(kQuantizationConfigKey)));
}

TEST(QuantizeModel, ErrorsNameTheTensor) {
  auto m = std::make_unique<Model>();
  TensorView bad = F32Tensor("w", Shape{32, 64}, 9);
  reinterpret_cast<float*>(bad.data->mutable_data())[100] = std::nanf("");
  ASSERT_TRUE(m->Add(bad).ok());
  for (QuantScheme s : {QuantScheme::kInt8, QuantScheme::kQ4_0}) {
    QuantizeOptions o;
    o.scheme = s;
    QuantReport report;
    auto q = Quantize(*m, o, &report).value();
    const Status st = q->Load(0).status();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("tensor 'w'"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("NaN at flat index 100"), std::string::npos) << st.message();
  }
  // A name the scale would take is refused up front.
  auto clash = std::make_unique<Model>();
  ASSERT_TRUE(clash->Add(F32Tensor("w", Shape{32, 64}, 1)).ok());
  ASSERT_TRUE(clash->Add(F32Tensor("w_scale", Shape{32, 1}, 2)).ok());
  QuantReport report;
  const Status st = Quantize(*clash, QuantizeOptions{}, &report).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'w_scale'"), std::string::npos) << st.message();
  QuantizeOptions axis;
  axis.axis = 5;
  EXPECT_EQ(Quantize(*m, axis, &report).status().code(), StatusCode::kInvalidArgument);
}

TEST(DequantizeModel, TorchStyleOneDimensionalAndBf16Scales) {
  auto m = std::make_unique<Model>();
  auto q = Buffer::Allocate(6).value();
  const int8_t qv[6] = {1, -2, 3, 127, -127, 0};
  std::memcpy(q->mutable_data(), qv, 6);
  ASSERT_TRUE(m->Add({TensorInfo::Make("w", DType::kI8, Shape{2, 3}).value(), q}).ok());
  auto s = Buffer::Allocate(4).value();
  const uint16_t sv[2] = {F32ToBF16(0.5f), F32ToBF16(2.0f)};
  std::memcpy(s->mutable_data(), sv, 4);
  ASSERT_TRUE(m->Add({TensorInfo::Make("w_scale", DType::kBF16, Shape{2}).value(), s}).ok());
  auto d = Dequantize(*m, DType::kF32).value();
  ASSERT_EQ(d->tensors().size(), 1u);
  const TensorView v = d->Load(0).value();
  const float want[6] = {0.5f, -1.0f, 1.5f, 254.0f, -254.0f, 0.0f};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(Floats(v)[i], want[i]);
  // A scale that fits no layout leaves both tensors alone.
  auto odd = std::make_unique<Model>();
  ASSERT_TRUE(odd->Add({TensorInfo::Make("w", DType::kI8, Shape{2, 3}).value(), q}).ok());
  auto s5 = Buffer::Allocate(20).value();
  std::memset(s5->mutable_data(), 0, 20);
  ASSERT_TRUE(odd->Add({TensorInfo::Make("w_scale", DType::kF32, Shape{5}).value(), s5}).ok());
  auto d2 = Dequantize(*odd, DType::kF32).value();
  ASSERT_EQ(d2->tensors().size(), 2u);
  EXPECT_EQ(d2->tensors()[0].dtype, DType::kI8);
  EXPECT_EQ(Dequantize(*odd, DType::kI8).status().code(), StatusCode::kInvalidArgument);
}

TEST(QuantScheme, NamesRoundTrip) {
  for (QuantScheme s : AllSchemes()) EXPECT_EQ(ParseQuantScheme(SchemeName(s)).value(), s);
  EXPECT_EQ(ParseQuantScheme("Q8_0").value(), QuantScheme::kQ8_0);
  const auto bad = ParseQuantScheme("int4");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("q5_1"), std::string::npos);
}

}  // namespace
}  // namespace mp
