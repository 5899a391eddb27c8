// Dequantizer tests: each block is packed here from its parts (quants, scales, mins) following
// the layout in ggml-common.h, and each expected value is computed from those parts with the
// reference formula in the reference's float operation order, so the comparison is bit-exact.
#include "modelport/formats/gguf/quants.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "modelport/convert/cast.h"

namespace mp::gguf {
namespace {

// An f16 scale: a random finite half (including negative values and subnormals).
uint16_t RandomHalf(std::mt19937& rng) {
  for (;;) {
    const auto h = static_cast<uint16_t>(rng());
    if ((h & 0x7C00) != 0x7C00) return h;
  }
}

void PutHalf(std::vector<uint8_t>& b, size_t at, uint16_t h) {
  b[at] = static_cast<uint8_t>(h);
  b[at + 1] = static_cast<uint8_t>(h >> 8);
}

std::vector<float> Dequant(DType dtype, const std::vector<uint8_t>& block) {
  std::vector<float> out(Traits(dtype).block_elems * (block.size() / Traits(dtype).block_bytes));
  const Status s = DequantizeToF32(dtype, block, out.data());
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

void ExpectBitEqual(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t g, w;
    std::memcpy(&g, &got[i], 4);
    std::memcpy(&w, &want[i], 4);
    ASSERT_EQ(g, w) << "element " << i << ": got " << got[i] << ", want " << want[i];
  }
}

constexpr int kTrials = 50;

TEST(Dequantize, Q8_0) {
  std::mt19937 rng(1);
  for (int t = 0; t < kTrials; ++t) {
    std::vector<uint8_t> b(34);
    const uint16_t dh = RandomHalf(rng);
    PutHalf(b, 0, dh);
    std::vector<float> want(32);
    for (int i = 0; i < 32; ++i) {
      const auto q = static_cast<int8_t>(rng());
      b[2 + i] = static_cast<uint8_t>(q);
      want[i] = q * F16ToF32(dh);
    }
    ExpectBitEqual(Dequant(DType::kQ8_0, b), want);
  }
}

TEST(Dequantize, Q4_0AndQ4_1) {
  std::mt19937 rng(2);
  for (int t = 0; t < kTrials; ++t) {
    int q[32];
    for (int& v : q) v = static_cast<int>(rng() % 16);
    const uint16_t dh = RandomHalf(rng), mh = RandomHalf(rng);
    const float d = F16ToF32(dh), m = F16ToF32(mh);
    // Byte j holds element j in its low nibble and element j + 16 in its high nibble.
    std::vector<uint8_t> b0(18), b1(20);
    PutHalf(b0, 0, dh);
    PutHalf(b1, 0, dh);
    PutHalf(b1, 2, mh);
    for (int j = 0; j < 16; ++j) {
      b0[2 + j] = b1[4 + j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
    }
    std::vector<float> want0(32), want1(32);
    for (int i = 0; i < 32; ++i) {
      want0[i] = (q[i] - 8) * d;
      want1[i] = q[i] * d + m;
    }
    ExpectBitEqual(Dequant(DType::kQ4_0, b0), want0);
    ExpectBitEqual(Dequant(DType::kQ4_1, b1), want1);
  }
}

TEST(Dequantize, Q5_0AndQ5_1) {
  std::mt19937 rng(3);
  for (int t = 0; t < kTrials; ++t) {
    int q[32];
    for (int& v : q) v = static_cast<int>(rng() % 32);
    const uint16_t dh = RandomHalf(rng), mh = RandomHalf(rng);
    const float d = F16ToF32(dh), m = F16ToF32(mh);
    // qh (u32 LE): bit i is the fifth bit of element i; low nibbles as in Q4.
    uint32_t qh = 0;
    for (int i = 0; i < 32; ++i) qh |= static_cast<uint32_t>(q[i] >> 4) << i;
    std::vector<uint8_t> b0(22), b1(24);
    PutHalf(b0, 0, dh);
    PutHalf(b1, 0, dh);
    PutHalf(b1, 2, mh);
    for (int k = 0; k < 4; ++k) b0[2 + k] = b1[4 + k] = static_cast<uint8_t>(qh >> (8 * k));
    for (int j = 0; j < 16; ++j) {
      b0[6 + j] = b1[8 + j] = static_cast<uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4));
    }
    std::vector<float> want0(32), want1(32);
    for (int i = 0; i < 32; ++i) {
      want0[i] = (q[i] - 16) * d;
      want1[i] = q[i] * d + m;
    }
    ExpectBitEqual(Dequant(DType::kQ5_0, b0), want0);
    ExpectBitEqual(Dequant(DType::kQ5_1, b1), want1);
  }
}

TEST(Dequantize, Q2_K) {
  std::mt19937 rng(4);
  for (int t = 0; t < kTrials; ++t) {
    int q[256], sc[16], mn[16];
    for (int& v : q) v = static_cast<int>(rng() % 4);
    for (int i = 0; i < 16; ++i) {
      sc[i] = static_cast<int>(rng() % 16);
      mn[i] = static_cast<int>(rng() % 16);
    }
    const uint16_t dh = RandomHalf(rng), mh = RandomHalf(rng);
    // {scales[16]: scale | min << 4, qs[64], d, dmin}. Element e: half n = e / 128, shift group
    // j = (e % 128) / 32 at bits 2j of byte n * 32 + e % 32; sub-block e / 16.
    std::vector<uint8_t> b(84, 0);
    for (int i = 0; i < 16; ++i) b[i] = static_cast<uint8_t>(sc[i] | (mn[i] << 4));
    for (int e = 0; e < 256; ++e) {
      const int n = e / 128, j = (e % 128) / 32, l = e % 32;
      b[16 + n * 32 + l] |= static_cast<uint8_t>(q[e] << (2 * j));
    }
    PutHalf(b, 80, dh);
    PutHalf(b, 82, mh);
    const float d = F16ToF32(dh), dmin = F16ToF32(mh);
    std::vector<float> want(256);
    for (int e = 0; e < 256; ++e) {
      const float dl = d * sc[e / 16], ml = dmin * mn[e / 16];
      want[e] = dl * q[e] - ml;
    }
    ExpectBitEqual(Dequant(DType::kQ2_K, b), want);
  }
}

TEST(Dequantize, Q3_K) {
  std::mt19937 rng(5);
  for (int t = 0; t < kTrials; ++t) {
    int q[256], sc[16];  // q in -4..3, sc in 0..63 (stored biased: value sc - 32)
    for (int& v : q) v = static_cast<int>(rng() % 8) - 4;
    for (int& v : sc) v = static_cast<int>(rng() % 64);
    const uint16_t dh = RandomHalf(rng);
    // {hmask[32], qs[64], scales[12], d}. Low 2 bits as in Q2_K; the high bit, set when q >= 0
    // (a clear bit subtracts 4), is bit n * 4 + j of hmask[e % 32].
    std::vector<uint8_t> b(110, 0);
    for (int e = 0; e < 256; ++e) {
      const int n = e / 128, j = (e % 128) / 32, l = e % 32;
      const int u = q[e] + 4;  // 0..7
      b[32 + n * 32 + l] |= static_cast<uint8_t>((u & 3) << (2 * j));
      if (u & 4) b[l] |= static_cast<uint8_t>(1 << (n * 4 + j));
    }
    // Scale s: low 4 bits in byte s (s < 8, low nibble) or s - 8 (high nibble); high 2 bits in
    // byte 8 + s % 4 at bit 2 * (s / 4).
    for (int s = 0; s < 16; ++s) {
      const int lo = sc[s] & 15, hi = sc[s] >> 4;
      if (s < 8) {
        b[96 + s] |= static_cast<uint8_t>(lo);
      } else {
        b[96 + s - 8] |= static_cast<uint8_t>(lo << 4);
      }
      b[96 + 8 + s % 4] |= static_cast<uint8_t>(hi << (2 * (s / 4)));
    }
    PutHalf(b, 108, dh);
    const float d = F16ToF32(dh);
    std::vector<float> want(256);
    for (int e = 0; e < 256; ++e) {
      const float dl = d * (sc[e / 16] - 32);
      want[e] = dl * q[e];
    }
    ExpectBitEqual(Dequant(DType::kQ3_K, b), want);
  }
}

// The 12-byte packing of eight 6-bit scales and mins shared by Q4_K and Q5_K.
void PackScaleMin(const int* sc, const int* mn, uint8_t* out) {
  std::memset(out, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      out[j] |= static_cast<uint8_t>(sc[j]);
      out[j + 4] |= static_cast<uint8_t>(mn[j]);
    } else {
      out[j + 4] = static_cast<uint8_t>((sc[j] & 15) | ((mn[j] & 15) << 4));
      out[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
      out[j] |= static_cast<uint8_t>((mn[j] >> 4) << 6);
    }
  }
}

TEST(Dequantize, Q4_KAndQ5_K) {
  std::mt19937 rng(6);
  for (int t = 0; t < kTrials; ++t) {
    int q[256], sc[8], mn[8];
    for (int& v : q) v = static_cast<int>(rng() % 32);
    for (int j = 0; j < 8; ++j) {
      sc[j] = static_cast<int>(rng() % 64);
      mn[j] = static_cast<int>(rng() % 64);
    }
    const uint16_t dh = RandomHalf(rng), mh = RandomHalf(rng);
    const float d = F16ToF32(dh), dmin = F16ToF32(mh);
    // Element e: chunk c = e / 64 uses byte c * 32 + e % 32, low nibble for sub-block 2c (the
    // first 32), high nibble for 2c + 1. Q5_K's fifth bit is bit e / 32 of qh[e % 32].
    std::vector<uint8_t> b4(144, 0), b5(176, 0);
    PutHalf(b4, 0, dh);
    PutHalf(b4, 2, mh);
    PutHalf(b5, 0, dh);
    PutHalf(b5, 2, mh);
    PackScaleMin(sc, mn, &b4[4]);
    PackScaleMin(sc, mn, &b5[4]);
    for (int e = 0; e < 256; ++e) {
      const int c = e / 64, high = (e % 64) / 32, l = e % 32;
      b4[16 + c * 32 + l] |= static_cast<uint8_t>((q[e] & 15) << (4 * high));
      b5[48 + c * 32 + l] |= static_cast<uint8_t>((q[e] & 15) << (4 * high));
      if (q[e] & 16) b5[16 + l] |= static_cast<uint8_t>(1 << (e / 32));
    }
    std::vector<float> want4(256), want5(256);
    for (int e = 0; e < 256; ++e) {
      const float d1 = d * sc[e / 32], m1 = dmin * mn[e / 32];
      want4[e] = d1 * (q[e] & 15) - m1;
      want5[e] = d1 * q[e] - m1;
    }
    ExpectBitEqual(Dequant(DType::kQ4_K, b4), want4);
    ExpectBitEqual(Dequant(DType::kQ5_K, b5), want5);
  }
}

TEST(Dequantize, Q6_K) {
  std::mt19937 rng(7);
  for (int t = 0; t < kTrials; ++t) {
    int q[256], sc[16];  // q in -32..31, sc any int8
    for (int& v : q) v = static_cast<int>(rng() % 64) - 32;
    for (int& v : sc) v = static_cast<int8_t>(rng());
    const uint16_t dh = RandomHalf(rng);
    // {ql[128], qh[64], scales[16], d}. Element e: half n = e / 128, quarter k = (e % 128) / 32,
    // l = e % 32. Low 4 bits: ql[n * 64 + l + 32 * (k % 2)], low nibble for k < 2 else high;
    // high 2 bits: qh[n * 32 + l] at bit 2k; scale n * 8 + l / 16 + 2k.
    std::vector<uint8_t> b(210, 0);
    for (int e = 0; e < 256; ++e) {
      const int n = e / 128, k = (e % 128) / 32, l = e % 32;
      const int u = q[e] + 32;
      b[n * 64 + l + 32 * (k % 2)] |= static_cast<uint8_t>((u & 15) << (k < 2 ? 0 : 4));
      b[128 + n * 32 + l] |= static_cast<uint8_t>((u >> 4) << (2 * k));
    }
    for (int s = 0; s < 16; ++s) b[192 + s] = static_cast<uint8_t>(sc[s]);
    PutHalf(b, 208, dh);
    const float d = F16ToF32(dh);
    std::vector<float> want(256);
    for (int e = 0; e < 256; ++e) {
      const int n = e / 128, k = (e % 128) / 32, l = e % 32;
      want[e] = d * sc[n * 8 + l / 16 + 2 * k] * q[e];
    }
    ExpectBitEqual(Dequant(DType::kQ6_K, b), want);
  }
}

TEST(Dequantize, Q8_K) {
  std::mt19937 rng(8);
  std::vector<uint8_t> b(292, 0);
  const float d = -0.03125f * 3;
  std::memcpy(b.data(), &d, 4);
  std::vector<float> want(256);
  for (int i = 0; i < 256; ++i) {
    const auto q = static_cast<int8_t>(rng());
    b[4 + i] = static_cast<uint8_t>(q);
    want[i] = d * q;
  }
  ExpectBitEqual(Dequant(DType::kQ8_K, b), want);
}

TEST(Dequantize, SeveralBlocksInARow) {
  // Two Q4_0 blocks: d = 1 and d = -2, all nibbles 9 (value 1).
  std::vector<uint8_t> b(36, 0x99);
  PutHalf(b, 0, F32ToF16(1.0f));
  PutHalf(b, 18, F32ToF16(-2.0f));
  const std::vector<float> got = Dequant(DType::kQ4_0, b);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(got[i], 1.0f);
  for (int i = 32; i < 64; ++i) EXPECT_EQ(got[i], -2.0f);
}

TEST(Dequantize, RefusesPartialBlocksAndPlainTypes) {
  std::vector<uint8_t> b(35);
  float out[64];
  Status s = DequantizeToF32(DType::kQ8_0, b, out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "q8_0 data of 35 bytes is not a whole number of 34-byte blocks");
  s = DequantizeToF32(DType::kF16, b, out);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_EQ(s.message(), "cannot dequantize f16: not a supported block-quantized type");
}

TEST(Dequantize, CastTensorDequantizesAndRoundsOnce) {
  // Q8_0 with d = 0.1 (as f16) and q = 1..32; cast to f16 and bf16 must equal rounding the f32
  // dequantized value once.
  std::vector<uint8_t> block(34);
  const uint16_t dh = F32ToF16(0.1f);
  PutHalf(block, 0, dh);
  for (int i = 0; i < 32; ++i) block[2 + i] = static_cast<uint8_t>(i + 1);
  auto buf = Buffer::Allocate(34);
  ASSERT_TRUE(buf.ok());
  std::memcpy((*buf)->mutable_data(), block.data(), 34);
  auto info = TensorInfo::Make("w", DType::kQ8_0, Shape{32});
  ASSERT_TRUE(info.ok());
  const TensorView q{*info, *buf};
  for (DType to : {DType::kF32, DType::kF16, DType::kBF16}) {
    auto cast = CastTensor(q, to);
    ASSERT_TRUE(cast.ok()) << cast.status().ToString();
    EXPECT_EQ(cast->info.dtype, to);
    EXPECT_EQ(cast->info.shape, Shape{32});
    for (int i = 0; i < 32; ++i) {
      const float want = static_cast<int8_t>(i + 1) * F16ToF32(dh);
      const uint8_t* p = cast->bytes().data();
      if (to == DType::kF32) {
        float got;
        std::memcpy(&got, p + 4 * i, 4);
        EXPECT_EQ(got, want);
      } else {
        const uint16_t got = static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8));
        EXPECT_EQ(got, to == DType::kF16 ? F32ToF16(want) : F32ToBF16(want)) << i;
      }
    }
  }
  // Integer targets stay refused.
  auto bad = CastTensor(q, DType::kI32);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mp::gguf
