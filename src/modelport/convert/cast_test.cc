#include "modelport/convert/cast.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"

namespace mp {
namespace {

using ::mp::testing::TempDir;

float F32Bits(uint32_t bits) { return std::bit_cast<float>(bits); }
uint32_t BitsOf(float v) { return std::bit_cast<uint32_t>(v); }
uint64_t BitsOf(double v) { return std::bit_cast<uint64_t>(v); }

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kInfD = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// An independent reference written from the format definitions: decode with ldexp, encode by
// enumerating every finite value of the format and taking the nearest (ties to the even
// encoding). IEEE-like formats treat 2^(emax+1) as one more candidate that encodes infinity;
// e4m3fn saturates everything beyond 448 (infinities included) to 448.

struct Format {
  const char* name;
  int e_bits;
  int m_bits;
  bool fn;  // no infinity; only S.1..1.1..1 is NaN
  uint32_t (*encode32)(float);
  uint32_t (*encode64)(double);
  float (*decode)(uint32_t);

  int total_bits() const { return 1 + e_bits + m_bits; }
  uint32_t sign_bit() const { return 1u << (e_bits + m_bits); }
  uint32_t exp_mask() const { return ((1u << e_bits) - 1) << m_bits; }
  uint32_t man_mask() const { return (1u << m_bits) - 1; }
  int bias() const { return (1 << (e_bits - 1)) - 1; }
  // Largest finite encoding (positive).
  uint32_t max_bits() const { return fn ? (exp_mask() | man_mask()) - 1 : exp_mask() - 1; }
  bool IsNaN(uint32_t bits) const {
    const uint32_t a = bits & ~sign_bit();
    return fn ? a == (exp_mask() | man_mask()) : a > exp_mask();
  }
};

const Format kF16{"f16",
                  5,
                  10,
                  false,
                  [](float v) -> uint32_t { return F32ToF16(v); },
                  [](double v) -> uint32_t { return F64ToF16(v); },
                  [](uint32_t b) { return F16ToF32(static_cast<uint16_t>(b)); }};
const Format kBF16{"bf16",
                   8,
                   7,
                   false,
                   [](float v) -> uint32_t { return F32ToBF16(v); },
                   [](double v) -> uint32_t { return F64ToBF16(v); },
                   [](uint32_t b) { return BF16ToF32(static_cast<uint16_t>(b)); }};
const Format kE4M3{"f8_e4m3",
                   4,
                   3,
                   true,
                   [](float v) -> uint32_t { return F32ToF8E4M3(v); },
                   [](double v) -> uint32_t { return F64ToF8E4M3(v); },
                   [](uint32_t b) { return F8E4M3ToF32(static_cast<uint8_t>(b)); }};
const Format kE5M2{"f8_e5m2",
                   5,
                   2,
                   false,
                   [](float v) -> uint32_t { return F32ToF8E5M2(v); },
                   [](double v) -> uint32_t { return F64ToF8E5M2(v); },
                   [](uint32_t b) { return F8E5M2ToF32(static_cast<uint8_t>(b)); }};
const Format* const kFormats[] = {&kF16, &kBF16, &kE4M3, &kE5M2};

double RefDecode(const Format& f, uint32_t bits) {
  const bool neg = (bits & f.sign_bit()) != 0;
  const uint32_t exp = (bits & f.exp_mask()) >> f.m_bits;
  const uint32_t man = bits & f.man_mask();
  const uint32_t all_ones = (1u << f.e_bits) - 1;
  double v;
  if (f.IsNaN(bits)) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (!f.fn && exp == all_ones) {
    v = kInfD;
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(man), 1 - f.bias() - f.m_bits);
  } else {
    v = std::ldexp(static_cast<double>(man + (1u << f.m_bits)),
                   static_cast<int>(exp) - f.bias() - f.m_bits);
  }
  return neg ? -v : v;
}

// Positive finite values of `f`, indexed by their encoding, plus (IEEE-like) 2^(emax+1).
const std::vector<double>& Candidates(const Format& f) {
  static std::map<const Format*, std::vector<double>> cache;
  auto& v = cache[&f];
  if (v.empty()) {
    for (uint32_t b = 0; b <= f.max_bits(); ++b) v.push_back(RefDecode(f, b));
    if (!f.fn) v.push_back(std::ldexp(1.0, ((1 << f.e_bits) - 1) - f.bias()));
  }
  return v;
}

// Reference encoding; NaN inputs give the format's canonical quiet NaN (compare with IsNaN).
uint32_t RefEncode(const Format& f, double x) {
  const uint32_t sign = std::signbit(x) ? f.sign_bit() : 0;
  if (std::isnan(x)) return sign | (f.fn ? f.exp_mask() | f.man_mask() : f.exp_mask() | 1);
  const double ax = std::fabs(x);
  const std::vector<double>& vals = Candidates(f);
  if (f.fn && ax > vals.back()) return sign | f.max_bits();
  if (ax >= vals.back()) return sign | static_cast<uint32_t>(vals.size() - 1);
  const size_t lo =
      static_cast<size_t>(std::upper_bound(vals.begin(), vals.end(), ax) - vals.begin()) - 1;
  if (vals[lo] == ax) return sign | static_cast<uint32_t>(lo);
  const double dlo = ax - vals[lo];
  const double dhi = vals[lo + 1] - ax;
  size_t pick = dlo < dhi ? lo : lo + 1;
  if (dlo == dhi) pick = (lo % 2 == 0) ? lo : lo + 1;
  return sign | static_cast<uint32_t>(pick);
}

::testing::AssertionResult SameEncoding(const Format& f, uint32_t got, uint32_t want) {
  if (got == want) return ::testing::AssertionSuccess();
  if (f.IsNaN(want) && f.IsNaN(got) && (got & f.sign_bit()) == (want & f.sign_bit())) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << std::hex << "got 0x" << got << ", want 0x" << want;
}

// ---------------------------------------------------------------------------------------------
// Hand-picked edge cases.

struct F32Case {
  float in;
  uint32_t want;
};

TEST(CastEdge, F32ToF16) {
  const F32Case cases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3C00},
      {-2.0f, 0xC000},
      {std::ldexp(1.0f, -24), 0x0001},  // smallest subnormal
      {-std::ldexp(1.0f, -24), 0x8001},
      {std::ldexp(1.0f, -25), 0x0000},  // tie -> even 0
      {-std::ldexp(1.0f, -25), 0x8000},
      {std::nextafter(std::ldexp(1.0f, -25), 1.0f), 0x0001},
      {std::nextafter(std::ldexp(1.0f, -25), 0.0f), 0x0000},
      {std::ldexp(3.0f, -25), 0x0002},         // tie 1|2 -> 2
      {std::ldexp(5.0f, -25), 0x0002},         // tie 2|3 -> 2
      {std::ldexp(1023.0f, -24), 0x03FF},      // largest subnormal
      {std::ldexp(2047.0f, -25), 0x0400},      // tie 0x3FF|0x400
      {std::ldexp(1.0f, -14), 0x0400},         // smallest normal
      {1.0f + std::ldexp(1.0f, -11), 0x3C00},  // tie -> even
      {1.0f + std::ldexp(3.0f, -11), 0x3C02},  // tie -> even (up)
      {1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -23), 0x3C01},
      {2049.0f, 0x6800},
      {2051.0f, 0x6802},
      {65504.0f, 0x7BFF},  // largest finite
      {std::nextafter(65520.0f, 0.0f), 0x7BFF},
      {65520.0f, 0x7C00},  // tie 0x7BFF|inf
      {-65520.0f, 0xFC00},
      {65536.0f, 0x7C00},
      {std::numeric_limits<float>::max(), 0x7C00},
      {kInf, 0x7C00},
      {-kInf, 0xFC00},
      {F32Bits(0x00000001), 0x0000},  // f32 subnormal
      {F32Bits(0x80000001), 0x8000},
      {F32Bits(0x7FC00000), 0x7E00},  // quiet NaN
      {F32Bits(0xFFC00000), 0xFE00},
      {F32Bits(0x7F800001), 0x7E00},  // signalling, low payload
      {F32Bits(0x7FA02000), 0x7F01},  // payload kept, quieted
  };
  for (const auto& c : cases) {
    EXPECT_EQ(F32ToF16(c.in), c.want) << std::hex << "input 0x" << BitsOf(c.in);
    EXPECT_EQ(F64ToF16(static_cast<double>(c.in)) & (std::isnan(c.in) ? 0xFE00 : 0xFFFF),
              c.want & (std::isnan(c.in) ? 0xFE00 : 0xFFFF))
        << std::hex << "f64 input from 0x" << BitsOf(c.in);
  }
}

TEST(CastEdge, F16ToF32) {
  EXPECT_EQ(BitsOf(F16ToF32(0x0000)), 0x00000000u);
  EXPECT_EQ(BitsOf(F16ToF32(0x8000)), 0x80000000u);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToF32(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToF32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(F16ToF32(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(F16ToF32(0x3C00), 1.0f);
  EXPECT_EQ(F16ToF32(0x3C01), 1.0f + std::ldexp(1.0f, -10));
  EXPECT_EQ(F16ToF32(0x7BFF), 65504.0f);
  EXPECT_EQ(F16ToF32(0xFBFF), -65504.0f);
  EXPECT_EQ(F16ToF32(0x7C00), kInf);
  EXPECT_EQ(F16ToF32(0xFC00), -kInf);
  EXPECT_EQ(BitsOf(F16ToF32(0x7E00)), 0x7FC00000u);
  EXPECT_EQ(BitsOf(F16ToF32(0xFE00)), 0xFFC00000u);
  EXPECT_EQ(BitsOf(F16ToF32(0x7C01)), 0x7F802000u);  // payload kept exactly
}

TEST(CastEdge, F32ToBF16) {
  const F32Case cases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3F80},
      {-1.0f, 0xBF80},
      {1.0f + std::ldexp(1.0f, -8), 0x3F80},  // tie -> even
      {1.0f + std::ldexp(3.0f, -8), 0x3F82},  // tie -> even (up)
      {1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -23), 0x3F81},
      {F32Bits(0x00000001), 0x0000},  // smallest f32 subnormal
      {F32Bits(0x00010000), 0x0001},  // smallest bf16 subnormal
      {F32Bits(0x00008000), 0x0000},  // tie -> 0
      {F32Bits(0x00008001), 0x0001},
      {F32Bits(0x00018000), 0x0002},  // tie 1|2 -> 2
      {F32Bits(0x80018000), 0x8002},
      {F32Bits(0x007F8000), 0x0080},  // tie largest subnormal | smallest normal
      {F32Bits(0x00800000), 0x0080},  // smallest normal
      {F32Bits(0x7F7F0000), 0x7F7F},  // largest finite bf16
      {F32Bits(0x7F7F7FFF), 0x7F7F},
      {F32Bits(0x7F7F8000), 0x7F80},  // tie 0x7F7F|inf -> inf
      {std::numeric_limits<float>::max(), 0x7F80},
      {-std::numeric_limits<float>::max(), 0xFF80},
      {kInf, 0x7F80},
      {-kInf, 0xFF80},
      {F32Bits(0x7FC00000), 0x7FC0},
      {F32Bits(0xFFC00000), 0xFFC0},
      {F32Bits(0x7F800001), 0x7FC0},  // would truncate to inf without quieting
      {F32Bits(0xFF800001), 0xFFC0},
      {F32Bits(0x7FA50000), 0x7FE5},  // payload kept, quieted
  };
  for (const auto& c : cases) {
    EXPECT_EQ(F32ToBF16(c.in), c.want) << std::hex << "input 0x" << BitsOf(c.in);
  }
  EXPECT_EQ(BitsOf(BF16ToF32(0x7F7F)), 0x7F7F0000u);
  EXPECT_EQ(BitsOf(BF16ToF32(0x8001)), 0x80010000u);
  EXPECT_EQ(BF16ToF32(0xFF80), -kInf);
}

struct F64Case {
  double in;
  uint32_t want;
};

TEST(CastEdge, F64ToF16RoundsOnce) {
  const F64Case cases[] = {
      {0.0, 0x0000},
      {-0.0, 0x8000},
      // Just above a tie: through f32 these would round to the tie and then to even.
      {std::ldexp(1.0, -25) * (1 + std::ldexp(1.0, -40)), 0x0001},
      {-std::ldexp(1.0, -25) * (1 + std::ldexp(1.0, -40)), 0x8001},
      {1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40), 0x3C01},
      {1.0 + std::ldexp(3.0, -11) - std::ldexp(1.0, -40), 0x3C01},
      {65520.0 - std::ldexp(1.0, -30), 0x7BFF},
      {65520.0, 0x7C00},
      {1e300, 0x7C00},
      {-1e300, 0xFC00},
      {kInfD, 0x7C00},
      {-kInfD, 0xFC00},
      {std::numeric_limits<double>::min(), 0x0000},
      {std::numeric_limits<double>::denorm_min(), 0x0000},
      {-std::numeric_limits<double>::denorm_min(), 0x8000},
      {std::ldexp(1.0, -24), 0x0001},
      {std::ldexp(1023.0, -24), 0x03FF},
      {65504.0, 0x7BFF},
      {std::bit_cast<double>(uint64_t{0x7FF8000000000000}), 0x7E00},
      {std::bit_cast<double>(uint64_t{0xFFF8000000000000}), 0xFE00},
      {std::bit_cast<double>(uint64_t{0x7FF0000000000001}), 0x7E00},
      {std::bit_cast<double>(uint64_t{0x7FF0040000000000}), 0x7E01},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(F64ToF16(c.in), c.want) << std::hex << "input 0x" << BitsOf(c.in);
  }
}

TEST(CastEdge, F64ToBF16RoundsOnce) {
  const F64Case cases[] = {
      {0.0, 0x0000},
      {-0.0, 0x8000},
      {1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40), 0x3F81},
      {1.0 + std::ldexp(1.0, -8), 0x3F80},
      {1.0 + std::ldexp(3.0, -8) - std::ldexp(1.0, -40), 0x3F81},
      {std::ldexp(1.0, -133), 0x0001},  // smallest bf16 subnormal
      {std::ldexp(1.0, -134), 0x0000},  // tie -> 0
      {std::ldexp(1.0, -134) * (1 + std::ldexp(1.0, -30)), 0x0001},
      {std::ldexp(1.0, -140), 0x0000},
      {static_cast<double>(F32Bits(0x7F7F0000)), 0x7F7F},
      {static_cast<double>(F32Bits(0x7F7F8000)), 0x7F80},
      {static_cast<double>(F32Bits(0x7F7F8000)) * (1 - std::ldexp(1.0, -40)), 0x7F7F},
      {std::numeric_limits<double>::max(), 0x7F80},
      {-kInfD, 0xFF80},
      {std::bit_cast<double>(uint64_t{0x7FF0000000000001}), 0x7FC0},
      {std::bit_cast<double>(uint64_t{0xFFF4A00000000000}), 0xFFE5},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(F64ToBF16(c.in), c.want) << std::hex << "input 0x" << BitsOf(c.in);
  }
}

TEST(CastEdge, F8E4M3SaturatesAndKeepsNaN) {
  const F32Case cases[] = {
      {0.0f, 0x00},
      {-0.0f, 0x80},
      {1.0f, 0x38},
      {-1.0f, 0xB8},
      {1.0625f, 0x38},                // tie 1|1.125 -> even
      {1.1875f, 0x3A},                // tie 1.125|1.25 -> even
      {std::ldexp(1.0f, -9), 0x01},   // smallest subnormal
      {std::ldexp(1.0f, -10), 0x00},  // tie -> 0
      {-std::ldexp(1.0f, -10), 0x80},
      {std::nextafter(std::ldexp(1.0f, -10), 1.0f), 0x01},
      {std::ldexp(3.0f, -10), 0x02},   // tie 1|2 -> 2
      {std::ldexp(7.0f, -9), 0x07},    // largest subnormal
      {std::ldexp(15.0f, -10), 0x08},  // tie 0x07|0x08
      {std::ldexp(1.0f, -6), 0x08},    // smallest normal
      {240.0f, 0x77},
      {256.0f, 0x78},  // exponent 1111 is finite in e4m3fn
      {448.0f, 0x7E},  // largest finite
      {-448.0f, 0xFE},
      {464.0f, 0x7E},  // tie with the (missing) 480: saturates
      {480.0f, 0x7E},
      {1e9f, 0x7E},
      {-1e9f, 0xFE},
      {std::numeric_limits<float>::max(), 0x7E},
      {kInf, 0x7E},  // saturating mode: infinities clamp too (OCP FP8 spec, CUDA SATFINITE)
      {-kInf, 0xFE},
      {F32Bits(0x7FC00000), 0x7F},
      {F32Bits(0xFFC00000), 0xFF},
      {F32Bits(0x7F800001), 0x7F},
      {F32Bits(0x00000001), 0x00},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(F32ToF8E4M3(c.in), c.want) << std::hex << "input 0x" << BitsOf(c.in);
    EXPECT_EQ(F64ToF8E4M3(static_cast<double>(c.in)), c.want)
        << std::hex << "f64 input from 0x" << BitsOf(c.in);
  }
  EXPECT_EQ(F8E4M3ToF32(0x7E), 448.0f);
  EXPECT_EQ(F8E4M3ToF32(0xFE), -448.0f);
  EXPECT_EQ(F8E4M3ToF32(0x78), 256.0f);
  EXPECT_EQ(F8E4M3ToF32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(F8E4M3ToF32(0x07), std::ldexp(7.0f, -9));
  EXPECT_EQ(F8E4M3ToF32(0x08), std::ldexp(1.0f, -6));
  EXPECT_EQ(BitsOf(F8E4M3ToF32(0x80)), 0x80000000u);
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0x7F)));
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0xFF)));
  EXPECT_TRUE(std::signbit(F8E4M3ToF32(0xFF)));
  // Just above a tie in f64: rounding through f32 would land on the tie.
  EXPECT_EQ(F64ToF8E4M3(1.0625 + std::ldexp(1.0, -40)), 0x39);
}

TEST(CastEdge, F8E5M2OverflowsToInfinity) {
  const F32Case cases[] = {
      {0.0f, 0x00},
      {-0.0f, 0x80},
      {1.0f, 0x3C},
      {1.125f, 0x3C},                 // tie 1|1.25 -> even
      {1.375f, 0x3E},                 // tie 1.25|1.5 -> even
      {std::ldexp(1.0f, -16), 0x01},  // smallest subnormal
      {std::ldexp(1.0f, -17), 0x00},  // tie -> 0
      {std::ldexp(3.0f, -17), 0x02},
      {std::ldexp(3.0f, -16), 0x03},  // largest subnormal
      {std::ldexp(7.0f, -17), 0x04},  // tie 0x03|0x04
      {std::ldexp(1.0f, -14), 0x04},  // smallest normal
      {57344.0f, 0x7B},               // largest finite
      {61439.0f, 0x7B},
      {61440.0f, 0x7C},  // tie 0x7B|inf -> inf
      {-61440.0f, 0xFC},
      {1e9f, 0x7C},
      {kInf, 0x7C},
      {-kInf, 0xFC},
      {F32Bits(0x7FC00000), 0x7E},
      {F32Bits(0xFFC00000), 0xFE},
      {F32Bits(0x7FE00000), 0x7F},  // payload kept
  };
  for (const auto& c : cases) {
    EXPECT_EQ(F32ToF8E5M2(c.in), c.want) << std::hex << "input 0x" << BitsOf(c.in);
    EXPECT_EQ(F64ToF8E5M2(static_cast<double>(c.in)), c.want)
        << std::hex << "f64 input from 0x" << BitsOf(c.in);
  }
  EXPECT_EQ(F8E5M2ToF32(0x7B), 57344.0f);
  EXPECT_EQ(F8E5M2ToF32(0x7C), kInf);
  EXPECT_EQ(F8E5M2ToF32(0xFC), -kInf);
  EXPECT_EQ(F8E5M2ToF32(0x01), std::ldexp(1.0f, -16));
  EXPECT_TRUE(std::isnan(F8E5M2ToF32(0x7D)));
  EXPECT_TRUE(std::isnan(F8E5M2ToF32(0xFF)));
}

// ---------------------------------------------------------------------------------------------
// Exhaustive checks over every encoding of every narrow format.

TEST(CastExhaustive, DecodeMatchesDefinitionAndRoundTrips) {
  for (const Format* f : kFormats) {
    SCOPED_TRACE(f->name);
    int failures = 0;
    for (uint32_t bits = 0; bits < (1u << f->total_bits()) && failures < 10; ++bits) {
      const float v = f->decode(bits);
      const double want = RefDecode(*f, bits);
      if (!std::isnan(want) && BitsOf(static_cast<double>(v)) != BitsOf(want)) {
        ADD_FAILURE() << std::hex << "decode 0x" << bits << ": got " << v << ", want " << want;
        ++failures;
      }
      if (f->IsNaN(bits) && !std::isnan(v)) {
        ADD_FAILURE() << std::hex << "decode 0x" << bits << " is not NaN";
        ++failures;
      }
      const auto back32 = f->encode32(v);
      const auto back64 = f->encode64(static_cast<double>(v));
      if (f->IsNaN(bits)) {
        // A NaN stays a NaN of the same sign (e4m3fn has exactly one per sign).
        const bool ok32 = f->IsNaN(back32) && (back32 & f->sign_bit()) == (bits & f->sign_bit());
        const bool ok64 = f->IsNaN(back64) && (back64 & f->sign_bit()) == (bits & f->sign_bit());
        if (!ok32 || !ok64) {
          ADD_FAILURE() << std::hex << "NaN 0x" << bits << " came back as 0x" << back32 << " / 0x"
                        << back64;
          ++failures;
        }
        if (f->fn && (back32 != bits || back64 != bits)) {
          ADD_FAILURE() << std::hex << "e4m3fn NaN 0x" << bits << " came back as 0x" << back32;
          ++failures;
        }
      } else if (back32 != bits || back64 != bits) {
        ADD_FAILURE() << std::hex << "0x" << bits << " -> " << v << " -> 0x" << back32 << " / 0x"
                      << back64;
        ++failures;
      }
    }
  }
}

// Every pair of neighbouring values (and the largest finite value with the overflow point):
// the exact midpoint goes to the even encoding, one f32/f64 step either side to the nearer one.
TEST(CastExhaustive, TiesAtEveryBoundary) {
  for (const Format* f : kFormats) {
    SCOPED_TRACE(f->name);
    const std::vector<double>& vals = Candidates(*f);
    int failures = 0;
    for (size_t lo = 0; lo + 1 < vals.size() && failures < 10; ++lo) {
      const double mid = (vals[lo] + vals[lo + 1]) / 2;  // exact: few significant bits
      const uint32_t even = static_cast<uint32_t>(lo % 2 == 0 ? lo : lo + 1);
      const uint32_t want_mid = even;
      const uint32_t want_above = static_cast<uint32_t>(lo + 1);
      for (const double sign : {1.0, -1.0}) {
        const uint32_t s = sign < 0 ? f->sign_bit() : 0;
        const float mid32 = static_cast<float>(sign * mid);
        ASSERT_EQ(static_cast<double>(mid32), sign * mid);
        const float below32 = std::nextafter(mid32, 0.0f);
        const float above32 = std::nextafter(mid32, static_cast<float>(sign) * kInf);
        const double below64 = std::nextafter(sign * mid, 0.0);
        const double above64 = std::nextafter(sign * mid, sign * kInfD);
        const struct {
          uint32_t got;
          uint32_t want;
          const char* what;
        } checks[] = {
            {f->encode32(mid32), s | want_mid, "f32 midpoint"},
            {f->encode32(below32), s | static_cast<uint32_t>(lo), "f32 below midpoint"},
            {f->encode32(above32), s | want_above, "f32 above midpoint"},
            {f->encode64(sign * mid), s | want_mid, "f64 midpoint"},
            {f->encode64(below64), s | static_cast<uint32_t>(lo), "f64 below midpoint"},
            {f->encode64(above64), s | want_above, "f64 above midpoint"},
        };
        for (const auto& c : checks) {
          if (c.got != c.want) {
            ADD_FAILURE() << c.what << " between 0x" << std::hex << lo << " and 0x" << lo + 1
                          << " (" << sign * mid << "): got 0x" << c.got << ", want 0x" << c.want;
            ++failures;
          }
        }
      }
    }
  }
  // e4m3fn: the midpoint between 448 and the would-be 480 and everything above saturate.
  EXPECT_EQ(F32ToF8E4M3(464.0f), 0x7E);
  EXPECT_EQ(F32ToF8E4M3(std::nextafter(464.0f, kInf)), 0x7E);
  EXPECT_EQ(F32ToF8E4M3(std::nextafter(464.0f, 0.0f)), 0x7E);
}

// Random inputs across all exponents against the reference encoder.
TEST(CastExhaustive, RandomInputsMatchReference) {
  std::mt19937_64 rng(20261126);
  for (const Format* f : kFormats) {
    SCOPED_TRACE(f->name);
    int failures = 0;
    for (int i = 0; i < 60000 && failures < 10; ++i) {
      uint32_t b32 = static_cast<uint32_t>(rng());
      if (i % 2 == 0) {
        // Concentrate on the format's range: exponents from below its subnormals to above max.
        const int emax = (1 << f->e_bits) - f->bias();
        const int emin = 1 - f->bias() - f->m_bits - 3;
        const uint32_t e = static_cast<uint32_t>(
            127 + emin + static_cast<int>(rng() % static_cast<uint64_t>(emax - emin + 2)));
        b32 = (b32 & 0x807FFFFF) | (e << 23);
        if (i % 6 == 0) b32 &= ~((1u << (23 - f->m_bits - 1)) - 1);  // exact ties
      }
      const float x = F32Bits(b32);
      if (!SameEncoding(*f, f->encode32(x), RefEncode(*f, x))) {
        ADD_FAILURE() << std::hex << "f32 0x" << b32 << " (" << x << "): got 0x" << f->encode32(x)
                      << ", want 0x" << RefEncode(*f, x);
        ++failures;
      }
      uint64_t b64 = rng();
      if (i % 2 == 0) {
        const uint64_t e = (b32 >> 23) & 0xFF;
        b64 = (b64 & 0x800FFFFFFFFFFFFF) | ((e - 127 + 1023) << 52);
        if (i % 4 == 0) {
          // A tie in the target plus or minus a few f64 ulps: the double-rounding traps.
          b64 &= ~((uint64_t{1} << (52 - f->m_bits - 1)) - 1);
          b64 |= uint64_t{1} << (52 - f->m_bits - 1);
          b64 += (rng() % 5) - 2;
        }
      }
      const double d = std::bit_cast<double>(b64);
      if (!SameEncoding(*f, f->encode64(d), RefEncode(*f, d))) {
        ADD_FAILURE() << std::hex << "f64 0x" << b64 << " (" << d << "): got 0x" << f->encode64(d)
                      << ", want 0x" << RefEncode(*f, d);
        ++failures;
      }
    }
  }
}

// The branch-free f32 fast paths agree with the general rounding routine on a wide sweep of
// f32 bit patterns (every 509th pattern: all exponents, all mantissa phases).
TEST(CastExhaustive, FastPathsMatchGeneralRounding) {
  int failures = 0;
  for (uint64_t b = 0; b <= 0xFFFFFFFF && failures < 10; b += 509) {
    const float x = F32Bits(static_cast<uint32_t>(b));
    const double d = static_cast<double>(x);
    if (!SameEncoding(kF16, F32ToF16(x), F64ToF16(d)) ||
        !SameEncoding(kBF16, F32ToBF16(x), F64ToBF16(d))) {
      ADD_FAILURE() << std::hex << "0x" << b << ": f16 0x" << F32ToF16(x) << " vs 0x" << F64ToF16(d)
                    << ", bf16 0x" << F32ToBF16(x) << " vs 0x" << F64ToBF16(d);
      ++failures;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Oracle: numpy and torch (Debian's, via /usr/bin/python3).

template <typename T>
void WriteValues(const std::string& path, const std::vector<T>& v) {
  std::vector<uint8_t> bytes(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(bytes.data(), v.data(), bytes.size());
  mp::testing::WriteBytes(path, bytes);
}

std::vector<uint16_t> ReadU16(const std::string& path) {
  const std::vector<uint8_t> bytes = mp::testing::ReadBytes(path);
  std::vector<uint16_t> v(bytes.size() / 2);
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * 2);
  return v;
}

TEST(CastOracle, MatchesNumpyAndTorchBitForBit) {
  if (!mp::testing::PythonHas("numpy torch")) {
    GTEST_SKIP() << "/usr/bin/python3 with numpy and torch is not available";
  }
  std::mt19937_64 rng(7);
  std::vector<float> f32;
  std::vector<double> f64;
  const uint32_t special32[] = {0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x33000000,
                                0x33000001, 0x337FFFFF, 0x387FE000, 0x387FF000, 0x38800000,
                                0x3F801000, 0x3F803000, 0x3F808000, 0x3F818000, 0x477FEFFF,
                                0x477FF000, 0x477FF001, 0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF,
                                0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001,
                                0x7FA00000, 0x00008000, 0x00018000, 0x007F8000};
  for (uint32_t b : special32) f32.push_back(F32Bits(b));
  while (f32.size() < 100000) {
    uint32_t b = static_cast<uint32_t>(rng());
    switch (f32.size() % 4) {
      case 0:  // any bit pattern
        break;
      case 1:  // f16 range, from below its subnormals to above its max
        b = (b & 0x807FFFFF) | static_cast<uint32_t>(98 + rng() % 47) << 23;
        break;
      case 2:  // exact f16 ties
        b = ((b & 0x807FFFFF) | static_cast<uint32_t>(98 + rng() % 47) << 23) & ~0xFFFu;
        b |= 0x1000;
        break;
      case 3:  // exact bf16 ties
        b = (b & 0xFFFF0000) | 0x8000;
        break;
    }
    f32.push_back(F32Bits(b));
  }
  while (f64.size() < 100000) {
    uint64_t b = rng();
    if (f64.size() % 2 == 1) {
      b = (b & 0x800FFFFFFFFFFFFF) | (uint64_t{1023 - 28 + rng() % 46} << 52);
      if (f64.size() % 4 == 1) {
        // An f16 tie nudged by a few f64 ulps: rounding through f32 would get these wrong.
        b = (b & ~((uint64_t{1} << 42) - 1)) | (uint64_t{1} << 41);
        b += (rng() % 5) - 2;
      }
    }
    f64.push_back(std::bit_cast<double>(b));
  }

  TempDir dir;
  WriteValues(dir.File("in32.bin"), f32);
  WriteValues(dir.File("in64.bin"), f64);
  const std::string script = (mp::testing::SourceDir() / "tests/oracle/cast_oracle.py").string();
  const auto run =
      mp::testing::Run("/usr/bin/python3 '" + script + "' '" + dir.File("in32.bin") + "' '" +
                       dir.File("in64.bin") + "' '" + dir.path().string() + "'");
  ASSERT_EQ(run.exit_code, 0) << run.err;

  const auto np_f16 = ReadU16(dir.File("np_f32_f16.bin"));
  const auto torch_f16 = ReadU16(dir.File("torch_f32_f16.bin"));
  const auto torch_bf16 = ReadU16(dir.File("torch_f32_bf16.bin"));
  const auto np_f64_f16 = ReadU16(dir.File("np_f64_f16.bin"));
  ASSERT_EQ(np_f16.size(), f32.size());
  ASSERT_EQ(torch_f16.size(), f32.size());
  ASSERT_EQ(torch_bf16.size(), f32.size());
  ASSERT_EQ(np_f64_f16.size(), f64.size());

  int failures = 0;
  for (size_t i = 0; i < f32.size() && failures < 20; ++i) {
    const uint32_t in = BitsOf(f32[i]);
    const struct {
      const Format& f;
      uint32_t ours;
      uint32_t theirs;
      const char* who;
    } checks[] = {
        {kF16, F32ToF16(f32[i]), np_f16[i], "numpy float32->float16"},
        {kF16, F32ToF16(f32[i]), torch_f16[i], "torch float32->float16"},
        {kBF16, F32ToBF16(f32[i]), torch_bf16[i], "torch float32->bfloat16"},
    };
    for (const auto& c : checks) {
      // NaN: both NaN (peers do not agree on payloads or sign).
      const bool ok = c.ours == c.theirs || (c.f.IsNaN(c.ours) && c.f.IsNaN(c.theirs));
      if (!ok) {
        ADD_FAILURE() << c.who << " of 0x" << std::hex << in << ": ours 0x" << c.ours
                      << ", theirs 0x" << c.theirs;
        ++failures;
      }
    }
  }
  for (size_t i = 0; i < f64.size() && failures < 20; ++i) {
    const uint16_t ours = F64ToF16(f64[i]);
    if (ours != np_f64_f16[i] && !(kF16.IsNaN(ours) && kF16.IsNaN(np_f64_f16[i]))) {
      ADD_FAILURE() << "numpy float64->float16 of 0x" << std::hex << BitsOf(f64[i]) << ": ours 0x"
                    << ours << ", numpy 0x" << np_f64_f16[i];
      ++failures;
    }
  }
}

// Every dtype of the golden safetensors file (written by the real safetensors 0.8 from torch
// 2.11, float8 included) decodes to the values recorded beside it.
TEST(CastGolden, DecodeMatchesSafetensorsGolden) {
  const auto golden = mp::testing::GoldenDir() / "safetensors";
  const std::string file = (golden / "all_dtypes.safetensors").string();
  const std::string expected_path = (golden / "all_dtypes.expected.json").string();
  const std::vector<uint8_t> expected_bytes = mp::testing::ReadBytes(expected_path);
  ASSERT_FALSE(expected_bytes.empty()) << expected_path;
  const nlohmann::json expected = nlohmann::json::parse(
      expected_bytes.begin(), expected_bytes.end(), nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(expected.is_discarded());
  const mp::testing::RawSafetensors raw = mp::testing::ReadRawSafetensors(file);
  ASSERT_TRUE(raw.header.is_object());

  int checked = 0;
  bool saw_e4m3 = false;
  bool saw_e5m2 = false;
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    const auto dtype = DTypeFromSafetensors(raw.header.at(name).at("dtype").get<std::string>());
    ASSERT_TRUE(dtype.has_value()) << dtype.status().ToString();
    const std::vector<uint8_t> bytes = raw.TensorBytes(name);
    const size_t count = bytes.size() / ElementSize(*dtype);
    std::vector<double> got(count * DecodedWidth(*dtype));
    ASSERT_TRUE(DecodeToF64(*dtype, bytes.data(), count, got.data()).ok());
    std::vector<double> want_values;
    for (const auto& v : want.at("values")) {
      if (v.is_array()) {
        for (const auto& part : v) want_values.push_back(part.get<double>());
      } else {
        want_values.push_back(v.get<double>());
      }
    }
    ASSERT_EQ(got.size(), want_values.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(BitsOf(got[i]), BitsOf(want_values[i]))
          << "element " << i << ": " << got[i] << " vs " << want_values[i];
    }
    if (*dtype == DType::kF8E4M3 || *dtype == DType::kF8E5M2) {
      (*dtype == DType::kF8E4M3 ? saw_e4m3 : saw_e5m2) = true;
      for (size_t i = 0; i < count; ++i) {
        const float v = static_cast<float>(want_values[i]);
        const uint8_t encoded = *dtype == DType::kF8E4M3 ? F32ToF8E4M3(v) : F32ToF8E5M2(v);
        EXPECT_EQ(encoded, bytes[i]) << "encoding element " << i << " (" << v << ")";
      }
    }
    ++checked;
  }
  EXPECT_TRUE(saw_e4m3);
  EXPECT_TRUE(saw_e5m2);
  EXPECT_GE(checked, 16);
}

// ---------------------------------------------------------------------------------------------
// DecodeToF64.

TEST(DecodeToF64, EveryPlainDType) {
  struct Case {
    DType dtype;
    std::vector<uint8_t> bytes;
    std::vector<double> want;
  };
  const Case cases[] = {
      {DType::kBool, {0, 1, 2, 255}, {0, 1, 1, 1}},
      {DType::kU8, {0, 7, 255}, {0, 7, 255}},
      {DType::kI8, {0, 0x7F, 0x80, 0xFF}, {0, 127, -128, -1}},
      {DType::kI16, {0xF3, 0xFF, 0xFF, 0x7F, 0x00, 0x80}, {-13, 32767, -32768}},
      {DType::kU16, {0xFF, 0xFF, 0x34, 0x12}, {65535, 0x1234}},
      {DType::kI32, {0x00, 0x00, 0x00, 0x80, 0xFF, 0xFF, 0xFF, 0x7F}, {-2147483648.0, 2147483647}},
      {DType::kU32, {0xFF, 0xFF, 0xFF, 0xFF}, {4294967295.0}},
      {DType::kI64,
       {0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0xE0, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0x80},
       {-9007199254740991.0, -9223372036854775808.0}},
      {DType::kU64, {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, {18446744073709551616.0}},
      {DType::kF16, {0x00, 0x3C, 0x01, 0x00, 0x00, 0xFC}, {1.0, std::ldexp(1.0, -24), -kInfD}},
      {DType::kBF16, {0x80, 0x3F, 0x80, 0xC0}, {1.0, -4.0}},
      {DType::kF32, {0x00, 0x00, 0x20, 0x40, 0x01, 0x00, 0x00, 0x00}, {2.5, std::ldexp(1.0, -149)}},
      {DType::kF64, {0, 0, 0, 0, 0, 0, 0xF0, 0xBF}, {-1.0}},
      {DType::kC64, {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0}, {1.0, -2.0}},
      {DType::kF8E4M3, {0x38, 0x7E, 0x81}, {1.0, 448.0, -std::ldexp(1.0, -9)}},
      {DType::kF8E5M2, {0x3C, 0x7B, 0xFC}, {1.0, 57344.0, -kInfD}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(DTypeName(c.dtype)));
    const size_t count = c.bytes.size() / ElementSize(c.dtype);
    EXPECT_EQ(DecodedWidth(c.dtype), c.dtype == DType::kC64 ? 2u : 1u);
    // Offset by one byte so every multi-byte load is misaligned.
    std::vector<uint8_t> src(c.bytes.size() + 1);
    std::memcpy(src.data() + 1, c.bytes.data(), c.bytes.size());
    std::vector<double> got(count * DecodedWidth(c.dtype), -12345.0);
    ASSERT_TRUE(DecodeToF64(c.dtype, src.data() + 1, count, got.data()).ok());
    ASSERT_EQ(got.size(), c.want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], c.want[i]) << "element " << i;
  }
  double nan_out[2];
  const uint8_t nan_bytes[] = {0x7F, 0xFF};
  ASSERT_TRUE(DecodeToF64(DType::kF8E4M3, nan_bytes, 2, nan_out).ok());
  EXPECT_TRUE(std::isnan(nan_out[0]));
  EXPECT_TRUE(std::isnan(nan_out[1]));
}

TEST(DecodeToF64, QuantizedIsUnsupported) {
  uint8_t block[34] = {};
  double out[32];
  const Status s = DecodeToF64(DType::kQ8_0, block, 32, out);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_EQ(s.message(), "cannot decode q8_0 element by element: it is a block-quantized type");
  EXPECT_EQ(DecodeToF64(DType::kQ4_0, block, 32, out).code(), StatusCode::kUnsupported);
}

// ---------------------------------------------------------------------------------------------
// CastTensor and CastFloats.

TensorView F32Tensor(const std::string& name, Shape shape, const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return mp::testing::BytesTensor(name, DType::kF32, std::move(shape), bytes);
}

template <typename T>
std::vector<T> Elements(const TensorView& t) {
  std::vector<T> v(t.data->size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), t.data->data(), t.data->size());
  return v;
}

TEST(CastTensor, F32ToF16AndBF16) {
  const TensorView t = F32Tensor("w", {2, 3}, {1.0f, -2.0f, 65520.0f, 0.0f, -0.0f, 1e-8f});
  auto h = CastTensor(t, DType::kF16);
  ASSERT_TRUE(h.has_value()) << h.status().ToString();
  EXPECT_EQ(h->info.name, "w");
  EXPECT_EQ(h->info.dtype, DType::kF16);
  EXPECT_EQ(h->info.shape, (Shape{2, 3}));
  EXPECT_EQ(h->info.byte_size, 12u);
  EXPECT_EQ(Elements<uint16_t>(*h),
            (std::vector<uint16_t>{0x3C00, 0xC000, 0x7C00, 0x0000, 0x8000, 0x0000}));
  auto b = CastTensor(t, DType::kBF16);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(Elements<uint16_t>(*b),
            (std::vector<uint16_t>{0x3F80, 0xC000, 0x4780, 0x0000, 0x8000, 0x322C}));
  auto back = CastTensor(*b, DType::kF32);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(Elements<uint32_t>(*back),
            (std::vector<uint32_t>{0x3F800000, 0xC0000000, 0x47800000, 0, 0x80000000, 0x322C0000}));
}

TEST(CastTensor, EveryFloatPairMatchesScalarConversions) {
  // 2500 elements: more than one internal chunk, and not a multiple of it.
  const DType floats[] = {DType::kF16, DType::kBF16,   DType::kF32,
                          DType::kF64, DType::kF8E4M3, DType::kF8E5M2};
  std::mt19937 rng(3);
  std::vector<double> values(2500);
  for (auto& v : values)
    v = std::ldexp(static_cast<double>(static_cast<int32_t>(rng())),
                   -31 + static_cast<int>(rng() % 24) - 12);
  values[0] = 0.0;
  values[1] = -0.0;
  values[2] = std::numeric_limits<double>::quiet_NaN();
  values[3] = -kInfD;
  std::vector<uint8_t> f64_bytes(values.size() * 8);
  std::memcpy(f64_bytes.data(), values.data(), f64_bytes.size());
  const TensorView src64 = mp::testing::BytesTensor("x", DType::kF64, {50, 50}, f64_bytes);
  for (DType from : floats) {
    // Build the source by scalar conversion from f64.
    auto src = CastTensor(src64, from);
    ASSERT_TRUE(src.has_value()) << src.status().ToString();
    std::vector<double> decoded(values.size());
    ASSERT_TRUE(DecodeToF64(from, src->data->data(), values.size(), decoded.data()).ok());
    for (DType to : floats) {
      SCOPED_TRACE(std::string(DTypeName(from)) + " -> " + std::string(DTypeName(to)));
      auto out = CastTensor(*src, to);
      ASSERT_TRUE(out.has_value()) << out.status().ToString();
      ASSERT_EQ(out->info.dtype, to);
      ASSERT_EQ(out->data->size(), values.size() * ElementSize(to));
      if (from == to) {
        EXPECT_EQ(out->data.get(), src->data.get());  // unchanged, same buffer
        continue;
      }
      for (size_t i = 0; i < values.size(); ++i) {
        const double d = decoded[i];
        const uint8_t* p = out->data->data() + i * ElementSize(to);
        uint64_t got = 0;
        std::memcpy(&got, p, ElementSize(to));
        uint64_t want = 0;
        switch (to) {
          case DType::kF16:
            want = F64ToF16(d);
            break;
          case DType::kBF16:
            want = F64ToBF16(d);
            break;
          case DType::kF32:
            want = BitsOf(static_cast<float>(d));
            break;
          case DType::kF64:
            want = BitsOf(d);
            break;
          case DType::kF8E4M3:
            want = F64ToF8E4M3(d);
            break;
          case DType::kF8E5M2:
            want = F64ToF8E5M2(d);
            break;
          default:
            break;
        }
        if (std::isnan(d)) {
          double back = 0;
          ASSERT_TRUE(DecodeToF64(to, p, 1, &back).ok());
          EXPECT_TRUE(std::isnan(back)) << "element " << i;
        } else {
          ASSERT_EQ(got, want) << "element " << i << " = " << d;
        }
      }
    }
  }
}

TEST(CastTensor, RejectsNonFloat) {
  const TensorView ints = mp::testing::PatternTensor("ids", DType::kI32, {4}, 1);
  auto r = CastTensor(ints, DType::kF16);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.error().message(),
            "tensor 'ids': cannot cast i32 to f16: only float to float casts are supported");
  const TensorView f = F32Tensor("w", {1}, {1.0f});
  auto r2 = CastTensor(f, DType::kI8);
  ASSERT_FALSE(r2.has_value());
  EXPECT_EQ(r2.error().message(),
            "tensor 'w': cannot cast f32 to i8: only float to float casts are supported");
  // Same dtype is returned unchanged even for non-floats.
  auto same = CastTensor(ints, DType::kI32);
  ASSERT_TRUE(same.has_value());
  EXPECT_EQ(same->data.get(), ints.data.get());
}

TEST(CastTensor, RejectsSizeMismatchAndHandlesEmpty) {
  TensorView bad = F32Tensor("w", {2}, {1.0f, 2.0f});
  bad.info.shape = Shape{3};
  bad.info.byte_size = 12;
  auto r = CastTensor(bad, DType::kF16);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "tensor 'w': data is 8 bytes but f32 [3] needs 12");

  const TensorView empty = F32Tensor("e", {0, 3}, {});
  auto e = CastTensor(empty, DType::kBF16);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->info.byte_size, 0u);
  EXPECT_EQ(e->data->size(), 0u);
  EXPECT_EQ(e->info.shape, (Shape{0, 3}));
}

// A source that counts loads, to show CastFloats is lazy.
class CountingSource final : public ModelSource {
 public:
  explicit CountingSource(const Model& model) : model_(model) {}
  std::string_view format() const override { return "counting"; }
  const std::vector<TensorInfo>& tensors() const override { return model_.tensors(); }
  const Json& metadata() const override { return model_.metadata(); }
  Result<TensorView> Load(size_t index) const override {
    loads.push_back(index);
    return model_.Load(index);
  }
  mutable std::vector<size_t> loads;

 private:
  const Model& model_;
};

TEST(CastFloats, CastsFloatTensorsLazilyAndPassesOthersThrough) {
  Model model;
  ASSERT_TRUE(model.Add(F32Tensor("w", {2}, {1.0f, 3.0f})).ok());
  ASSERT_TRUE(model.Add(mp::testing::PatternTensor("ids", DType::kI64, {3}, 5)).ok());
  ASSERT_TRUE(model.Add(mp::testing::BytesTensor("h", DType::kF16, {1}, {0x00, 0x3C})).ok());
  ASSERT_TRUE(model.Add(mp::testing::PatternTensor("mask", DType::kBool, {4}, 6)).ok());
  ASSERT_TRUE(model.Add(mp::testing::PatternTensor("z", DType::kC64, {2}, 7)).ok());
  ASSERT_TRUE(model.Add(mp::testing::BytesTensor("q", DType::kF8E4M3, {2}, {0x38, 0x7E})).ok());
  model.mutable_metadata()["format"] = "pt";
  model.mutable_metadata()["n"] = 3;
  const CountingSource counting(model);

  const auto cast = CastFloats(counting, DType::kBF16);
  EXPECT_TRUE(counting.loads.empty());
  EXPECT_EQ(cast->format(), "counting");
  EXPECT_EQ(cast->metadata(), model.metadata());
  const auto& infos = cast->tensors();
  ASSERT_EQ(infos.size(), 6u);
  const DType want_dtypes[] = {DType::kBF16, DType::kI64, DType::kBF16,
                               DType::kBool, DType::kC64, DType::kBF16};
  const uint64_t want_sizes[] = {4, 24, 2, 4, 16, 4};
  for (size_t i = 0; i < infos.size(); ++i) {
    EXPECT_EQ(infos[i].name, model.tensors()[i].name);
    EXPECT_EQ(infos[i].dtype, want_dtypes[i]) << infos[i].name;
    EXPECT_EQ(infos[i].byte_size, want_sizes[i]) << infos[i].name;
    EXPECT_EQ(infos[i].shape, model.tensors()[i].shape);
  }

  auto w = cast->Load(0);
  ASSERT_TRUE(w.has_value()) << w.status().ToString();
  EXPECT_EQ(counting.loads, (std::vector<size_t>{0}));
  EXPECT_EQ(w->info.dtype, DType::kBF16);
  EXPECT_EQ(Elements<uint16_t>(*w), (std::vector<uint16_t>{0x3F80, 0x4040}));

  auto ids = cast->Load(1);
  ASSERT_TRUE(ids.has_value());
  EXPECT_EQ(ids->info.dtype, DType::kI64);
  EXPECT_EQ(ids->data.get(), model.Load(1)->data.get());  // passed through untouched

  auto q = cast->Load(5);
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(Elements<uint16_t>(*q), (std::vector<uint16_t>{0x3F80, 0x43E0}));
  EXPECT_EQ(counting.loads, (std::vector<size_t>{0, 1, 5}));

  auto out_of_range = cast->Load(6);
  ASSERT_FALSE(out_of_range.has_value());
  EXPECT_EQ(out_of_range.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(out_of_range.error().message(), "tensor index 6 is out of range (6 tensors)");
}

TEST(CastFloats, NonFloatTargetFailsOnFloatLoads) {
  Model model;
  ASSERT_TRUE(model.Add(F32Tensor("w", {1}, {1.0f})).ok());
  ASSERT_TRUE(model.Add(mp::testing::PatternTensor("ids", DType::kI32, {1}, 1)).ok());
  const auto cast = CastFloats(model, DType::kI8);
  EXPECT_EQ(cast->tensors()[0].dtype, DType::kF32);
  auto w = cast->Load(0);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().message(),
            "tensor 'w': cannot cast f32 to i8: only float to float casts are supported");
  EXPECT_TRUE(cast->Load(1).has_value());
}

}  // namespace
}  // namespace mp
