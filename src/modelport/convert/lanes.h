// Eight f32 lanes, twice: in plain C++ (PortableLanes, which defines the results) and with AVX2,
// FMA and F16C intrinsics (Avx2Lanes). The quantize kernels are written once over either; each
// operation is the same IEEE operation, lane by lane, in both, so the kernels give the same bits
// on every CPU. Only convert/quantize_kernels.cc includes this, and it is built with
// -ffp-contract=off: a product and a sum written apart must stay two roundings.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "modelport/convert/cast.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define MP_HAVE_AVX2_LANES 1
#endif

namespace mp::lanes {

constexpr int kLanes = 8;
constexpr uint32_t kBelowHalf = 0x3EFFFFFF;  // 0.5 - 2^-25, the f32 just below 0.5

#define MP_LANE inline __attribute__((always_inline))

struct PortableLanes {
  struct F {
    float v[kLanes];
  };
  struct I {
    int32_t v[kLanes];
  };
  struct D {  // four doubles
    double v[kLanes / 2];
  };

  template <class Fn>
  MP_LANE static F Map(Fn fn) {
    F r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = fn(l);
    return r;
  }
  MP_LANE static F Load(const float* p) {
    F r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  MP_LANE static void Store(F a, float* p) { std::memcpy(p, a.v, sizeof(a.v)); }
  MP_LANE static F Splat(float x) {
    return Map([&](int) { return x; });
  }
  MP_LANE static F Add(F a, F b) {
    return Map([&](int l) { return a.v[l] + b.v[l]; });
  }
  MP_LANE static F Sub(F a, F b) {
    return Map([&](int l) { return a.v[l] - b.v[l]; });
  }
  MP_LANE static F Mul(F a, F b) {
    return Map([&](int l) { return a.v[l] * b.v[l]; });
  }
  MP_LANE static F Div(F a, F b) {
    return Map([&](int l) { return a.v[l] / b.v[l]; });
  }
  /// a * b + c, rounded once.
  MP_LANE static F Fma(F a, F b, F c) {
    return Map([&](int l) { return std::fma(a.v[l], b.v[l], c.v[l]); });
  }
  /// a * b - c, rounded once.
  MP_LANE static F MulSub(F a, F b, F c) {
    return Map([&](int l) { return std::fma(a.v[l], b.v[l], -c.v[l]); });
  }
  /// a > b ? a : b (b where either is NaN), as x86's max does.
  MP_LANE static F Max(F a, F b) {
    return Map([&](int l) { return a.v[l] > b.v[l] ? a.v[l] : b.v[l]; });
  }
  /// a < b ? a : b.
  MP_LANE static F Min(F a, F b) {
    return Map([&](int l) { return a.v[l] < b.v[l] ? a.v[l] : b.v[l]; });
  }
  MP_LANE static F Abs(F a) {
    return Map([&](int l) { return std::fabs(a.v[l]); });
  }
  /// Max(Abs(b), a) for a >= 0 (the running maximum of |b|; NaN aside).
  MP_LANE static F MaxAbs(F a, F b) { return Max(Abs(b), a); }
  /// Max(Abs(a), Abs(b)) (NaN aside).
  MP_LANE static F AbsMax2(F a, F b) { return Max(Abs(a), Abs(b)); }
  /// a where test is not zero, else 0.
  MP_LANE static F KeepWhereNonzero(F a, F test) {
    return Map([&](int l) { return test.v[l] != 0.0f ? a.v[l] : 0.0f; });
  }
  /// To the nearest integer, ties to even (the default rounding mode).
  MP_LANE static F RoundEven(F a) {
    return Map([&](int l) { return std::nearbyint(a.v[l]); });
  }
  /// p + copysign(0.5 - 2^-25, p): truncated, roundf(p) for |p| < 2^23.
  MP_LANE static F AddBelowHalf(F p) {
    float half;
    const uint32_t bits = kBelowHalf;
    std::memcpy(&half, &bits, sizeof(half));
    return Map([&](int l) { return p.v[l] + std::copysign(half, p.v[l]); });
  }
  /// Integral values to int32 (exact).
  MP_LANE static I ToInt(F a) {
    I r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = static_cast<int32_t>(a.v[l]);
    return r;
  }
  /// Toward zero; NaN and values outside int32 give INT32_MIN, as x86's cvttps2dq does.
  MP_LANE static I Truncate(F a) {
    I r;
    for (int l = 0; l < kLanes; ++l) {
      const float x = a.v[l];
      r.v[l] = x > -2147483904.0f && x < 2147483648.0f ? static_cast<int32_t>(x) : INT32_MIN;
    }
    return r;
  }
  MP_LANE static F ToFloat(I a) {
    return Map([&](int l) { return static_cast<float>(a.v[l]); });
  }
  /// The 32 lanes of a..d, saturated to int8, stored in order.
  MP_LANE static void StoreInt8(I a, I b, I c, I d, int8_t* dst) {
    const I* parts[4] = {&a, &b, &c, &d};
    for (int k = 0; k < 4; ++k) {
      for (int l = 0; l < kLanes; ++l) {
        const int32_t v = parts[k]->v[l];
        dst[k * kLanes + l] = static_cast<int8_t>(v < -128 ? -128 : v > 127 ? 127 : v);
      }
    }
  }
  /// lo += lanes 0-3 of a, hi += lanes 4-7, in double.
  MP_LANE static void Widen(F a, D* lo, D* hi) {
    for (int l = 0; l < kLanes / 2; ++l) {
      lo->v[l] += static_cast<double>(a.v[l]);
      hi->v[l] += static_cast<double>(a.v[l + kLanes / 2]);
    }
  }
  /// n bytes (a multiple of 16) from src (16-byte aligned) to dst (16-byte aligned), past the
  /// caches where the CPU can; StreamFence orders them before later stores.
  MP_LANE static void Stream(const uint8_t* src, size_t n, uint8_t* dst) {
    std::memcpy(dst, src, n);
  }
  MP_LANE static void StreamFence() {}
  MP_LANE static double Lane(D a, int l) { return a.v[l]; }
  MP_LANE static float Lane(F a, int l) { return a.v[l]; }
  /// Bit l set where lane l of a <= b (of a == b, a >= b); none for NaN.
  template <class Cmp>
  MP_LANE static unsigned Mask(F a, F b, Cmp cmp) {
    unsigned bits = 0;
    for (int l = 0; l < kLanes; ++l) bits |= cmp(a.v[l], b.v[l]) ? 1u << l : 0u;
    return bits;
  }
  MP_LANE static unsigned Le(F a, F b) {
    return Mask(a, b, [](float x, float y) { return x <= y; });
  }
  MP_LANE static unsigned Eq(F a, F b) {
    return Mask(a, b, [](float x, float y) { return x == y; });
  }
  MP_LANE static unsigned Ge(F a, F b) {
    return Mask(a, b, [](float x, float y) { return x >= y; });
  }
  /// Lane k of the result: the largest of a[k]'s lanes (Max's order, so NaN alike).
  MP_LANE static F MaxOfEach(const F* a) {
    return Map([&](int k) {
      float m = a[k].v[0];
      for (int l = 1; l < kLanes; ++l) m = a[k].v[l] > m ? a[k].v[l] : m;
      return m;
    });
  }
  /// f16 bits of each lane (IEEE round to nearest even) and their values back in f32.
  MP_LANE static void ToHalf(F a, uint16_t* bits, F* back) {
    for (int l = 0; l < kLanes; ++l) {
      bits[l] = F32ToF16(a.v[l]);
      back->v[l] = F16ToF32(bits[l]);
    }
  }
};

#ifdef MP_HAVE_AVX2_LANES
#define MP_AVX2_TARGET "avx2,fma,f16c"
#define MP_AVX512_TARGET "avx2,fma,f16c,avx512f,avx512vl,avx512dq"
#define MP_AVX2 __attribute__((target(MP_AVX2_TARGET)))
#define MP_AVX2_LANE MP_AVX2 MP_LANE

struct Avx2Lanes {
  using F = __m256;
  using I = __m256i;
  using D = __m256d;

  MP_AVX2_LANE static F Load(const float* p) { return _mm256_loadu_ps(p); }
  MP_AVX2_LANE static void Store(F a, float* p) { _mm256_storeu_ps(p, a); }
  MP_AVX2_LANE static F Splat(float x) { return _mm256_set1_ps(x); }
  MP_AVX2_LANE static F Add(F a, F b) { return _mm256_add_ps(a, b); }
  MP_AVX2_LANE static F Sub(F a, F b) { return _mm256_sub_ps(a, b); }
  MP_AVX2_LANE static F Mul(F a, F b) { return _mm256_mul_ps(a, b); }
  MP_AVX2_LANE static F Div(F a, F b) { return _mm256_div_ps(a, b); }
  MP_AVX2_LANE static F Fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  MP_AVX2_LANE static F MulSub(F a, F b, F c) { return _mm256_fmsub_ps(a, b, c); }
  MP_AVX2_LANE static F Max(F a, F b) { return _mm256_max_ps(a, b); }
  MP_AVX2_LANE static F Min(F a, F b) { return _mm256_min_ps(a, b); }
  MP_AVX2_LANE static F Abs(F a) {
    return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
  }
  MP_AVX2_LANE static F MaxAbs(F a, F b) { return Max(Abs(b), a); }
  MP_AVX2_LANE static F AbsMax2(F a, F b) { return Max(Abs(a), Abs(b)); }
  MP_AVX2_LANE static F KeepWhereNonzero(F a, F test) {
    return _mm256_andnot_ps(_mm256_cmp_ps(test, _mm256_setzero_ps(), _CMP_EQ_OQ), a);
  }
  MP_AVX2_LANE static F RoundEven(F a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  MP_AVX2_LANE static F AddBelowHalf(F p) {
    const F sign = _mm256_and_ps(p, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN)));
    const F half = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(kBelowHalf)));
    return _mm256_add_ps(p, _mm256_or_ps(sign, half));
  }
  MP_AVX2_LANE static I ToInt(F a) { return _mm256_cvtps_epi32(a); }
  MP_AVX2_LANE static I Truncate(F a) { return _mm256_cvttps_epi32(a); }
  MP_AVX2_LANE static F ToFloat(I a) { return _mm256_cvtepi32_ps(a); }
  MP_AVX2_LANE static void StoreInt8(I a, I b, I c, I d, int8_t* dst) {
    // The packs work within 128-bit halves; the permutation puts the 32 bytes back in order.
    const I bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    const I order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _mm256_storeu_si256(reinterpret_cast<I*>(dst), _mm256_permutevar8x32_epi32(bytes, order));
  }
  MP_AVX2_LANE static void Widen(F a, D* lo, D* hi) {
    *lo = _mm256_add_pd(*lo, _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
    *hi = _mm256_add_pd(*hi, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
  }
  MP_AVX2_LANE static void Stream(const uint8_t* src, size_t n, uint8_t* dst) {
    size_t i = 0;
    const auto stream16 = [&] {
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i),
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
      i += 16;
    };
    if (reinterpret_cast<uintptr_t>(dst) % 32 != 0 && i < n) stream16();
    for (; i + 32 <= n; i += 32) {  // 32 bytes a store where dst is 32-byte aligned
      _mm256_stream_si256(reinterpret_cast<I*>(dst + i),
                          _mm256_loadu_si256(reinterpret_cast<const I*>(src + i)));
    }
    if (i < n) stream16();
  }
  MP_AVX2_LANE static void StreamFence() { _mm_sfence(); }
  MP_AVX2_LANE static double Lane(D a, int l) {
    alignas(32) double v[4];
    _mm256_store_pd(v, a);
    return v[l];
  }
  MP_AVX2_LANE static float Lane(F a, int l) {
    alignas(32) float v[8];
    _mm256_store_ps(v, a);
    return v[l];
  }
  MP_AVX2_LANE static unsigned Le(F a, F b) {
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LE_OQ)));
  }
  MP_AVX2_LANE static unsigned Eq(F a, F b) {
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)));
  }
  MP_AVX2_LANE static unsigned Ge(F a, F b) {
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GE_OQ)));
  }
  MP_AVX2_LANE static F MaxOfEach(const F* a) {
    // Three rounds of pairing lanes (each result lane takes the maximum of two lanes of the
    // same input vector); max is exact, so only NaN could tell the order apart, and a NaN
    // input is refused by its caller either way.
    F m4[4], m2[2];
    for (int k = 0; k < 4; ++k) {
      m4[k] = _mm256_max_ps(_mm256_unpacklo_ps(a[2 * k], a[2 * k + 1]),
                            _mm256_unpackhi_ps(a[2 * k], a[2 * k + 1]));
    }
    for (int k = 0; k < 2; ++k) {
      const D x = _mm256_castps_pd(m4[2 * k]), y = _mm256_castps_pd(m4[2 * k + 1]);
      m2[k] = _mm256_max_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(x, y)),
                            _mm256_castpd_ps(_mm256_unpackhi_pd(x, y)));
    }
    // m2[0] lanes: a0 a1 a2 a3 (low halves) | a0 a1 a2 a3 (high halves); m2[1] the same for a4-7.
    return _mm256_max_ps(_mm256_permute2f128_ps(m2[0], m2[1], 0x20),
                         _mm256_permute2f128_ps(m2[0], m2[1], 0x31));
  }
  MP_AVX2_LANE static void ToHalf(F a, uint16_t* bits, F* back) {
    const __m128i h = _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bits), h);
    *back = _mm256_cvtph_ps(h);
  }
};

#define MP_AVX512 __attribute__((target(MP_AVX512_TARGET)))

/// Avx2Lanes where AVX-512 (F, VL, DQ) is there too: 32 registers instead of 16 (the kernels
/// keep 13 sums and constants live; with 16 they spill, and the sums' dependency chains then
/// run through memory), and the largest magnitude of two vectors in one instruction (vrangeps)
/// instead of two per vector. Same values: max |x| is exact; only NaN, which the kernels refuse or
/// measure in double, could tell them apart.
struct Avx512Lanes : Avx2Lanes {
  MP_AVX512 MP_LANE static F MaxAbs(F a, F b) { return _mm256_range_ps(a, b, 0x0B); }
  MP_AVX512 MP_LANE static F AbsMax2(F a, F b) { return _mm256_range_ps(a, b, 0x0B); }
};

/// True where the CPU runs Avx512Lanes.
inline bool CpuHasAvx512Lanes() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512dq");
  return has;
}

/// True where the CPU runs Avx2Lanes (AVX2, FMA and F16C).
inline bool CpuHasAvx2Lanes() {
  // F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know it.
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & (1u << 29)) != 0;
    return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}
#endif

}  // namespace mp::lanes
