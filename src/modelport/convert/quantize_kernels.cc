// The element-level half of quantize.h: scheme names, ggml's reference block quantizers, the
// int8 symmetric kernels and the error statistics.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/convert/quantize.h"

namespace mp {
namespace {

struct SchemeRow {
  QuantScheme scheme;
  std::string_view name;
  DType dtype;
};

constexpr SchemeRow kSchemes[] = {
    {QuantScheme::kF16, "f16", DType::kF16},
    {QuantScheme::kBF16, "bf16", DType::kBF16},
    {QuantScheme::kF8E4M3, "f8_e4m3", DType::kF8E4M3},
    {QuantScheme::kF8E5M2, "f8_e5m2", DType::kF8E5M2},
    {QuantScheme::kInt8, "int8", DType::kI8},
    {QuantScheme::kQ8_0, "q8_0", DType::kQ8_0},
    {QuantScheme::kQ4_0, "q4_0", DType::kQ4_0},
    {QuantScheme::kQ4_1, "q4_1", DType::kQ4_1},
    {QuantScheme::kQ5_0, "q5_0", DType::kQ5_0},
    {QuantScheme::kQ5_1, "q5_1", DType::kQ5_1},
};

constexpr QuantScheme kAllSchemes[] = {
    QuantScheme::kF16,  QuantScheme::kBF16, QuantScheme::kF8E4M3, QuantScheme::kF8E5M2,
    QuantScheme::kInt8, QuantScheme::kQ8_0, QuantScheme::kQ4_0,   QuantScheme::kQ4_1,
    QuantScheme::kQ5_0, QuantScheme::kQ5_1};

constexpr int kBlock = 32;  // elements per block of every type QuantizeBlocks writes

// The hot loops are written with GCC vector types, 8 lanes wide, and compiled twice: for AVX2
// (picked at load time where the CPU has it) and for baseline x86-64 (SSE2: each 8-lane
// operation becomes two). The lanes do the same IEEE operations in the same order in both, so
// the results do not depend on the CPU. No FMA: "avx2" does not enable it, so products and sums
// are rounded separately as the reference formulas are.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define MP_HOT_LOOP __attribute__((target_clones("avx2", "default")))
#else
#define MP_HOT_LOOP
#endif

typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8x8 __attribute__((vector_size(32)));
typedef uint32_t U8x8 __attribute__((vector_size(32)));
typedef double D4 __attribute__((vector_size(32)));
typedef int8_t C32 __attribute__((vector_size(32)));
typedef int8_t C8 __attribute__((vector_size(8)));

constexpr int kLanes = 8;
constexpr int32_t kAbsMask = 0x7FFFFFFF;
constexpr int32_t kExpMask = 0x7F800000;     // all ones: infinity or NaN
constexpr uint32_t kBelowHalf = 0x3EFFFFFF;  // 0.5 - 2^-25, the f32 just below 0.5

#define MP_INLINE inline __attribute__((always_inline))

// The two halves of each pair of f32 lanes widened to double and added.
MP_INLINE void Fold(F8 a, F8 b, D4* lo, D4* hi) {
  *lo += __builtin_convertvector(__builtin_shufflevector(a, a, 0, 1, 2, 3), D4) +
         __builtin_convertvector(__builtin_shufflevector(b, b, 0, 1, 2, 3), D4);
  *hi += __builtin_convertvector(__builtin_shufflevector(a, a, 4, 5, 6, 7), D4) +
         __builtin_convertvector(__builtin_shufflevector(b, b, 4, 5, 6, 7), D4);
}
MP_INLINE F8 Load8(const float* p) {
  F8 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// The low bytes of 8 int32 lanes, stored at `dst`.
MP_INLINE void StoreLowBytes(I8x8 v, void* dst) {
  const C32 bytes = reinterpret_cast<C32>(v);
  const C8 packed = __builtin_shufflevector(bytes, bytes, 0, 4, 8, 12, 16, 20, 24, 28);
  __builtin_memcpy(dst, &packed, sizeof(packed));
}

// clamp(round_half_even(x / s), -127, 127), as floats. Clamping first keeps |v| <= 127, where
// adding and subtracting 1.5 * 2^23 rounds to the nearest integer, ties to even (as numpy's
// round and ONNX QuantizeLinear do), in the default rounding mode.
constexpr float kRoundMagic = 12582912.0f;
MP_INLINE F8 Int8Quotients(F8 x, float s) {
  F8 v = x / s;
  v = v < -127.0f ? -127.0f : v;  // std::max(v, -127.0f)
  v = 127.0f < v ? 127.0f : v;    // std::min(v, 127.0f)
  return (v + kRoundMagic) - kRoundMagic;
}
MP_INLINE int8_t Int8Quotient(float x, float s) {
  const float v = std::min(std::max(x / s, -127.0f), 127.0f);
  return static_cast<int8_t>((v + kRoundMagic) - kRoundMagic);
}

// ErrorStats::Add's sums, fed 16 elements at a time. The squares and products are summed in f32
// within runs of kRun elements, 16 lanes, so each lane sums 8 terms: with terms >= 0 (squares;
// dot's where out keeps ref's sign, as int8 and q8_0 do) each run's sum is within 9 roundings
// (9 * 2^-24 < 6e-7 relative) of the exact one; the runs are then summed in double. out - ref is
// exact in f32 wherever out and ref are within a factor of 2 (Sterbenz), so max_abs is exact for
// every quantized value, and otherwise within half an f32 ulp. Where a lane's sums overflowed,
// or its squares sum below 2^-100 (f32 subnormals lose precision there, and squares of values
// below 2^-75 vanish), Finish refuses and the caller sums the whole call again in double. That
// includes lanes of exact zeros (all-zero rows, exact casts): correct, and as fast as before
// this path existed. The fused quantizers below feed the same sums in the same order as
// AddErrorStats over their dequantized output, so both give the same bits.
constexpr uint64_t kRun = 128;

struct RunStats {
  // The current run's f32 sums, one pair of 8-lane vectors each (elements j..j+7 and
  // j+8..j+15 of each step of 16); the finished runs' sums in double.
  F8 e0{}, e1{}, r0{}, r1{}, o0{}, o1{}, d0{}, d1{};
  D4 se0{}, se1{}, sr0{}, sr1{}, so0{}, so1{}, sd0{}, sd1{};
  F8 mx{};
  I8x8 redo{};

  // 16 elements: ref and out at j (a) and j + 8 (b).
  MP_INLINE void Step(F8 ra, F8 rb, F8 oa, F8 ob) {
    const F8 ea = oa - ra, eb = ob - rb;
    const F8 aa = reinterpret_cast<F8>(reinterpret_cast<I8x8>(ea) & kAbsMask);
    const F8 ab = reinterpret_cast<F8>(reinterpret_cast<I8x8>(eb) & kAbsMask);
    mx = aa > mx ? aa : mx;
    mx = ab > mx ? ab : mx;
    e0 += ea * ea;
    e1 += eb * eb;
    r0 += ra * ra;
    r1 += rb * rb;
    o0 += oa * oa;
    o1 += ob * ob;
    d0 += oa * ra;
    d1 += ob * rb;
  }

  MP_INLINE void EndRun() {
    const F8 ro = (r0 + r1) + (o0 + o1);
    const F8 ee = e0 + e1;
    const F8 all = ro + ee + (d0 + d1);  // NaN or infinite if any sum overflowed
    redo |= ~(all <= FLT_MAX) | (ro < 0x1p-100f) | (ee < 0x1p-100f);
    Fold(e0, e1, &se0, &se1);
    Fold(r0, r1, &sr0, &sr1);
    Fold(o0, o1, &so0, &so1);
    Fold(d0, d1, &sd0, &sd1);
    e0 = e1 = r0 = r1 = o0 = o1 = d0 = d1 = F8{};
  }

  // Adds the finished runs to *max_abs and sums; false (nothing added) when a run needs the
  // double path.
  MP_INLINE bool Finish(double* max_abs, double* sums) const {
    bool exact = true;
    for (int l = 0; l < kLanes; ++l) exact &= redo[l] == 0;
    if (!exact) return false;
    double m = *max_abs;
    for (int l = 0; l < kLanes; ++l) m = std::max(m, static_cast<double>(mx[l]));
    *max_abs = m;
    for (int l = 0; l < kLanes / 2; ++l) {
      sums[0] += se0[l] + se1[l];
      sums[1] += sr0[l] + sr1[l];
      sums[2] += so0[l] + so1[l];
      sums[3] += sd0[l] + sd1[l];
    }
    return true;
  }
};

// One element's terms, in double (the tails, and every element of a call that needs it).
MP_INLINE void AddInDouble(double r, double o, double* max_abs, double* sums) {
  const double e = o - r;
  *max_abs = std::max(*max_abs, std::fabs(e));
  sums[0] += e * e;
  sums[1] += r * r;
  sums[2] += o * o;
  sums[3] += o * r;
}

// Feeds the whole runs of ref/out [i, n) to `st`; returns where the runs end.
MP_INLINE uint64_t StepRuns(RunStats& st, const float* ref, const float* out, uint64_t i,
                            uint64_t n) {
  for (; i + kRun <= n; i += kRun) {
    for (uint64_t j = i; j < i + kRun; j += 2 * kLanes) {
      st.Step(Load8(ref + j), Load8(ref + j + kLanes), Load8(out + j), Load8(out + j + kLanes));
    }
    st.EndRun();
  }
  return i;
}

MP_HOT_LOOP void AddErrorStats(const float* ref, const float* out, uint64_t n, double* max_abs,
                               double* sums) {
  RunStats st;
  uint64_t i = StepRuns(st, ref, out, 0, n);
  if (!st.Finish(max_abs, sums)) i = 0;
  for (; i < n; ++i) AddInDouble(ref[i], out[i], max_abs, sums);
}

// QuantizeInt8Run, DequantizeInt8Run and AddErrorStats in one pass: each 16 values are divided,
// rounded, stored and measured while in registers. False (q written, nothing added) when the
// f32 sums cannot be trusted; the caller then takes the three passes.
MP_HOT_LOOP bool QuantizeInt8MeasuredRun(const float* x, uint64_t n, float s, int8_t* q,
                                         double* max_abs, double* sums) {
  RunStats st;
  uint64_t i = 0;
  for (; i + kRun <= n; i += kRun) {
    for (uint64_t j = i; j < i + kRun; j += 2 * kLanes) {
      F8 v[2], out[2];
      for (int h = 0; h < 2; ++h) {
        v[h] = Load8(x + j + h * kLanes);
        const F8 rounded = Int8Quotients(v[h], s);
        StoreLowBytes(__builtin_convertvector(rounded, I8x8), q + j + h * kLanes);
        out[h] = rounded * s;  // the dequantized value, float(q) * s
      }
      st.Step(v[0], v[1], out[0], out[1]);
    }
    st.EndRun();
  }
  if (!st.Finish(max_abs, sums)) return false;
  for (; i < n; ++i) {
    q[i] = Int8Quotient(x[i], s);
    AddInDouble(x[i], static_cast<float>(q[i]) * s, max_abs, sums);
  }
  return true;
}

// The f32 values of 8 f16 bit patterns that are +0, positive subnormal or normal, or +infinity
// (what d = max|x| / 127 can round to; the sign and NaN cannot occur), as F16ToF32 gives them.
MP_INLINE F8 HalfToFloat(U8x8 h) {
  const U8x8 normal = (h << 13) + (112u << 23);
  const F8 subnormal = __builtin_convertvector(h, F8) * 0x1p-24f;  // mantissa * 2^-24, exact
  const U8x8 is_sub = reinterpret_cast<U8x8>(h < 0x400u);
  const U8x8 is_inf = reinterpret_cast<U8x8>(h == 0x7C00u);
  U8x8 bits = (reinterpret_cast<U8x8>(subnormal) & is_sub) | (normal & ~is_sub);
  bits = (0x7F800000u & is_inf) | (bits & ~is_inf);
  return reinterpret_cast<F8>(bits);
}

// f16 bits, little-endian, as ggml blocks store their scales.
MP_INLINE void PutHalfBits(uint8_t* dst, uint32_t h) {
  dst[0] = static_cast<uint8_t>(h);
  dst[1] = static_cast<uint8_t>(h >> 8);
}

void PutF16(uint8_t* dst, float value) { PutHalfBits(dst, F32ToF16(value)); }

void PutU32(uint8_t* dst, uint32_t v) {
  for (int i = 0; i < 4; ++i) dst[i] = static_cast<uint8_t>(v >> (8 * i));
}

// ggml's reference quantizers, one block each. The float arithmetic is the reference's, step by
// step (f32 products, truncating conversions), so the bytes match llama.cpp's files.

// Q4_0 and Q5_0: d = (the value of largest magnitude) / -2^(bits-1), q = trunc(x/d + 2^(bits-1)
// + 0.5) capped at 2^bits - 1.
template <int kBits>
void SymmetricBlock(const float* x, uint8_t* y) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kBlock; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  constexpr float kHalf = static_cast<float>(1 << (kBits - 1));
  constexpr int kTop = (1 << kBits) - 1;
  const float d = max / -kHalf;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutF16(y, d);
  uint8_t* qs = y + (kBits == 4 ? 2 : 6);
  uint32_t qh = 0;
  for (int j = 0; j < kBlock / 2; ++j) {
    const float x0 = x[j] * id;
    const float x1 = x[kBlock / 2 + j] * id;
    const int xi0 = std::min(kTop, static_cast<int>(x0 + (kHalf + 0.5f)));
    const int xi1 = std::min(kTop, static_cast<int>(x1 + (kHalf + 0.5f)));
    qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= static_cast<uint32_t>((xi0 & 0x10) >> 4) << j;
    qh |= static_cast<uint32_t>((xi1 & 0x10) >> 4) << (j + kBlock / 2);
  }
  if (kBits == 5) PutU32(y + 2, qh);
}

// Q4_1 and Q5_1: d = (max - min) / (2^bits - 1), m = min, q = trunc((x - min)/d + 0.5); Q4_1
// caps q at 15, Q5_1 does not (the reference's asymmetry, kept).
template <int kBits>
void AffineBlock(const float* x, uint8_t* y) {
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < kBlock; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / static_cast<float>((1 << kBits) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutF16(y, d);
  PutF16(y + 2, min);
  uint8_t* qs = y + (kBits == 4 ? 4 : 8);
  uint32_t qh = 0;
  for (int j = 0; j < kBlock / 2; ++j) {
    const float x0 = (x[j] - min) * id;
    const float x1 = (x[kBlock / 2 + j] - min) * id;
    int xi0 = static_cast<int>(x0 + 0.5f);
    int xi1 = static_cast<int>(x1 + 0.5f);
    if (kBits == 4) {
      xi0 = std::min(15, xi0);
      xi1 = std::min(15, xi1);
    } else {
      xi0 &= 0xFF;  // the reference's uint8_t conversion
      xi1 &= 0xFF;
    }
    qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= static_cast<uint32_t>((xi0 & 0x10) >> 4) << j;
    qh |= static_cast<uint32_t>((xi1 & 0x10) >> 4) << (j + kBlock / 2);
  }
  if (kBits == 5) PutU32(y + 4, qh);
}

// Q8_0: d = max|x| / 127, q = roundf(x * (1 / d)) (half away from zero). QuantizeBlocks runs
// Q8Blocks below, the same arithmetic 8 blocks at a time; this one does its last blocks.
void Q8Block(const float* x, uint8_t* y) {
  float amax = 0.0f;
  for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutF16(y, d);
  for (int j = 0; j < kBlock; ++j) {
    y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x[j] * id)));
  }
}

// d = max |x| / 127, its f16 bits and id = 1 / d (0 for d = 0) of the 8 blocks at `x`, as
// Q8Block computes them: max |x| of each block (exact in any order), then the rest on 8 lanes
// (F32ToF16's arithmetic, lane by lane). False if a value is not finite.
MP_INLINE bool Q8GroupScales(const float* x, F8* id, U8x8* h) {
  // |x| compared as integers (the bits of non-negative floats order as their values), so an
  // infinity or NaN comes out as a maximum at or above kExpMask.
  I8x8 amax_bits;
  for (int k = 0; k < kLanes; ++k) {
    const float* xb = x + k * kBlock;
    I8x8 m = {};
    for (int i = 0; i < kBlock; i += kLanes) {
      I8x8 v;
      __builtin_memcpy(&v, xb + i, sizeof(v));
      const I8x8 a = v & kAbsMask;
      m = a > m ? a : m;
    }
    I8x8 t = __builtin_shufflevector(m, m, 4, 5, 6, 7, 0, 1, 2, 3);
    m = t > m ? t : m;
    t = __builtin_shufflevector(m, m, 2, 3, 0, 1, 6, 7, 4, 5);
    m = t > m ? t : m;
    t = __builtin_shufflevector(m, m, 1, 0, 3, 2, 5, 4, 7, 6);
    m = t > m ? t : m;
    amax_bits[k] = m[0];
  }
  bool finite = true;
  for (int k = 0; k < kLanes; ++k) finite &= amax_bits[k] < kExpMask;
  if (!finite) return false;
  const F8 amax = reinterpret_cast<F8>(amax_bits);
  const F8 d = amax / 127.0f;
  const F8 inv = 1.0f / d;
  *id = d != 0.0f ? inv : F8{};
  // F32ToF16 (convert/cast.cc), the same integer and float steps on 8 lanes.
  const U8x8 xbits = reinterpret_cast<U8x8>(d);
  const U8x8 sign = (xbits >> 16) & 0x8000u;
  const U8x8 a = xbits & 0x7FFFFFFFu;
  const U8x8 normal = (a - (112u << 23) + 0xFFFu + ((a >> 13) & 1u)) >> 13;
  const U8x8 subnormal = reinterpret_cast<U8x8>(reinterpret_cast<F8>(a) + 0.5f) - 0x3F000000u;
  const U8x8 nan = 0x7E00u | ((a >> 13) & 0x1FFu);
  const U8x8 is_sub = reinterpret_cast<U8x8>(a < 0x38800000u);
  const U8x8 is_big = reinterpret_cast<U8x8>(a >= 0x477FF000u);
  const U8x8 is_nan = reinterpret_cast<U8x8>(a > 0x7F800000u);
  U8x8 bits = (subnormal & is_sub) | (normal & ~is_sub);
  bits = (0x7C00u & is_big) | (bits & ~is_big);
  bits = (nan & is_nan) | (bits & ~is_nan);
  *h = bits | sign;
  return true;
}

// The int32 roundf(p) of 16 products, half away from zero: trunc(p + copysign(0.5 - 2^-25, p))
// in f32. For |p| < 2^23 the sum rounds to at least the next integer exactly when |p|'s fraction
// is >= 0.5 (adding 0.5 itself would push 0.49999997 up to 1). An infinite or NaN p (id
// infinite: d an f32 subnormal) converts to the same 0x80000000 as the reference's cast.
MP_INLINE I8x8 RoundHalfAway(F8 p) {
  const F8 half = reinterpret_cast<F8>((reinterpret_cast<U8x8>(p) & 0x80000000u) | kBelowHalf);
  return __builtin_convertvector(p + half, I8x8);
}

// Q8Block over `nb` blocks, vectorised, 8 blocks at a time. False, with `y` partly written, if a
// value is not finite.
MP_HOT_LOOP bool Q8Blocks(const float* x, size_t nb, uint8_t* y) {
  constexpr size_t kOut = 2 + kBlock;
  size_t b = 0;
  for (; b + kLanes <= nb; b += kLanes) {
    F8 id;
    U8x8 h;
    if (!Q8GroupScales(x + b * kBlock, &id, &h)) return false;
    for (int k = 0; k < kLanes; ++k) {
      const float* xb = x + (b + k) * kBlock;
      uint8_t* yb = y + (b + k) * kOut;
      PutHalfBits(yb, h[k]);
      for (int i = 0; i < kBlock; i += kLanes) {
        StoreLowBytes(RoundHalfAway(Load8(xb + i) * id[k]), yb + 2 + i);
      }
    }
  }
  for (; b < nb; ++b) {
    for (int j = 0; j < kBlock; ++j) {
      if (!std::isfinite(x[b * kBlock + j])) return false;
    }
    Q8Block(x + b * kBlock, y + b * kOut);
  }
  return true;
}

// Q8Blocks, gguf's dequantization and AddErrorStats in one pass over the `nb` blocks at `x`.
// False (y partly written, nothing added) for a value that is not finite, a block whose d is an
// f32 subnormal (its stored bytes are not the rounded values) and sums the f32 runs cannot
// hold: the caller then takes the three passes, which report or measure those.
MP_HOT_LOOP bool Q8BlocksMeasured(const float* x, size_t nb, uint8_t* y, double* max_abs,
                                  double* sums) {
  constexpr size_t kOut = 2 + kBlock;
  constexpr int kBlocksPerRun = kRun / kBlock;
  RunStats st;
  size_t b = 0;
  for (; b + kLanes <= nb; b += kLanes) {
    F8 id;
    U8x8 h;
    if (!Q8GroupScales(x + b * kBlock, &id, &h)) return false;
    bool finite = true;
    for (int k = 0; k < kLanes; ++k) finite &= id[k] <= FLT_MAX;
    if (!finite) return false;
    const F8 dh = HalfToFloat(h);  // the d a reader sees
    for (int k = 0; k < kLanes; ++k) {
      const float* xb = x + (b + k) * kBlock;
      uint8_t* yb = y + (b + k) * kOut;
      PutHalfBits(yb, h[k]);
      for (int i = 0; i < kBlock; i += 2 * kLanes) {
        F8 v[2], out[2];
        for (int h2 = 0; h2 < 2; ++h2) {
          v[h2] = Load8(xb + i + h2 * kLanes);
          const I8x8 q = RoundHalfAway(v[h2] * id[k]);
          StoreLowBytes(q, yb + 2 + i + h2 * kLanes);
          out[h2] = __builtin_convertvector(q, F8) * dh[k];
        }
        st.Step(v[0], v[1], out[0], out[1]);
      }
      if (k % kBlocksPerRun == kBlocksPerRun - 1) st.EndRun();
    }
  }
  // The last blocks (fewer than 8) one at a time, measured from their dequantized values.
  const float* rest = x + b * kBlock;
  const uint64_t n = (nb - b) * kBlock;
  float back[kLanes * kBlock];
  for (uint64_t j = 0; j < n; ++j) {
    if (!std::isfinite(rest[j])) return false;
  }
  for (size_t k = 0; b + k < nb; ++k) {
    uint8_t* yb = y + (b + k) * kOut;
    Q8Block(rest + k * kBlock, yb);
    const float dk = F16ToF32(static_cast<uint16_t>(yb[0] | (yb[1] << 8)));
    for (int j = 0; j < kBlock; ++j) back[k * kBlock + j] = static_cast<int8_t>(yb[2 + j]) * dk;
  }
  uint64_t i = StepRuns(st, rest, back, 0, n);
  if (!st.Finish(max_abs, sums)) return false;
  for (; i < n; ++i) AddInDouble(rest[i], back[i], max_abs, sums);
  return true;
}

// True when every x[0, n) is finite (exponent not all ones).
MP_HOT_LOOP bool AllFinite(const float* x, uint64_t n) {
  I8x8 bad = {};
  uint64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    I8x8 b;
    __builtin_memcpy(&b, x + i, sizeof(b));
    bad |= (b & kExpMask) == kExpMask;
  }
  bool ok = true;
  for (int l = 0; l < kLanes; ++l) ok &= bad[l] == 0;
  for (; i < n; ++i) ok &= std::isfinite(x[i]);
  return ok;
}

using BlockFn = void (*)(const float*, uint8_t*);

BlockFn BlockQuantizer(DType dtype) {
  switch (dtype) {
    case DType::kQ8_0:
      return Q8Block;
    case DType::kQ4_0:
      return SymmetricBlock<4>;
    case DType::kQ5_0:
      return SymmetricBlock<5>;
    case DType::kQ4_1:
      return AffineBlock<4>;
    case DType::kQ5_1:
      return AffineBlock<5>;
    default:
      return nullptr;
  }
}

}  // namespace

uint64_t FirstNonFinite(const float* x, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return i;
  }
  return n;
}

Status NonFiniteAt(const float* x, uint64_t index) {
  return InvalidArgument(std::string(std::isnan(x[index]) ? "NaN" : "an infinity") +
                         " at flat index " + std::to_string(index) +
                         ": a quantized format cannot hold it");
}

std::string_view SchemeName(QuantScheme scheme) {
  for (const SchemeRow& row : kSchemes) {
    if (row.scheme == scheme) return row.name;
  }
  return "?";
}

DType SchemeDType(QuantScheme scheme) {
  for (const SchemeRow& row : kSchemes) {
    if (row.scheme == scheme) return row.dtype;
  }
  return DType::kF32;
}

std::span<const QuantScheme> AllSchemes() { return kAllSchemes; }

Result<QuantScheme> ParseQuantScheme(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string names;
  for (const SchemeRow& row : kSchemes) {
    if (row.name == lower) return row.scheme;
    names += (names.empty() ? "" : ", ") + std::string(row.name);
  }
  return InvalidArgument("unknown quantization scheme '" + std::string(name) + "' (one of " +
                         names + ")");
}

Status QuantizeBlocks(DType dtype, std::span<const float> src, uint8_t* out) {
  const BlockFn fn = BlockQuantizer(dtype);
  if (fn == nullptr) {
    return InvalidArgument(std::string(DTypeName(dtype)) + " is not a block type modelport writes");
  }
  if (src.size() % kBlock != 0) {
    return InvalidArgument(std::to_string(src.size()) + " elements are not a whole number of " +
                           std::to_string(kBlock) + "-element blocks");
  }
  // Q8_0 finds a non-finite value in its own pass; the others check first.
  if (dtype == DType::kQ8_0 ? !Q8Blocks(src.data(), src.size() / kBlock, out)
                            : !AllFinite(src.data(), src.size())) {
    const uint64_t bad = FirstNonFinite(src.data(), src.size());
    return NonFiniteAt(src.data(), bad);
  }
  if (dtype == DType::kQ8_0) return Status::Ok();
  const uint32_t block_bytes = Traits(dtype).block_bytes;
  for (size_t b = 0; b < src.size() / kBlock; ++b)
    fn(src.data() + b * kBlock, out + b * block_bytes);
  return Status::Ok();
}

Result<ChannelLayout> LayoutFor(const Shape& shape, int axis, bool per_tensor) {
  ChannelLayout layout;
  const int rank = static_cast<int>(shape.rank());
  if (per_tensor) {
    MP_ASSIGN_OR_RETURN(layout.inner, shape.NumElements());
    return layout;
  }
  const int a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) {
    return InvalidArgument("axis " + std::to_string(axis) + " is out of range for shape " +
                           shape.ToString());
  }
  for (int i = 0; i < rank; ++i) {
    const uint64_t d = shape.dims()[static_cast<size_t>(i)];
    if (i < a) layout.outer *= d;
    if (i == a) layout.channels = d;
    if (i > a) layout.inner *= d;
  }
  return layout;
}

namespace {

// Calls fn(channel, i, j) for each run [i, j) of [begin, end) that lies within one channel.
template <class Fn>
void ForEachRun(const ChannelLayout& l, uint64_t begin, uint64_t end, Fn fn) {
  uint64_t i = begin;
  while (i < end) {
    const uint64_t row = i / l.inner;
    const uint64_t stop = std::min(end, (row + 1) * l.inner);
    fn(row % l.channels, i, stop);
    i = stop;
  }
}

// max(m, max |x[0, n)|) into *m; false (and *m untouched) if a value is not finite.
MP_HOT_LOOP bool AbsMaxRun(const float* x, uint64_t n, float* m) {
  F8 mv = {};
  I8x8 bad = {};
  uint64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    I8x8 b;
    __builtin_memcpy(&b, x + k, sizeof(b));
    const I8x8 a = b & kAbsMask;
    bad |= a >= kExpMask;  // |x| bits at or above infinity's: infinity or NaN
    const F8 v = reinterpret_cast<F8>(a);
    mv = v > mv ? v : mv;
  }
  float r = *m;
  bool finite = true;
  for (int l = 0; l < kLanes; ++l) {
    finite &= bad[l] == 0;
    r = std::max(r, mv[l]);
  }
  for (; k < n; ++k) {
    const float v = std::fabs(x[k]);
    finite &= v <= FLT_MAX;  // false for NaN and infinities
    r = std::max(r, v);
  }
  if (finite) *m = r;
  return finite;
}

// q = clamp(round_half_even(x / s), -127, 127) over x[0, n) (Int8Quotients).
MP_HOT_LOOP void QuantizeInt8Run(const float* x, uint64_t n, float s, int8_t* q) {
  uint64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    StoreLowBytes(__builtin_convertvector(Int8Quotients(Load8(x + k), s), I8x8), q + k);
  }
  for (; k < n; ++k) q[k] = Int8Quotient(x[k], s);
}

MP_HOT_LOOP void DequantizeInt8Run(const int8_t* __restrict q, uint64_t n, float s,
                                   float* __restrict out) {
  for (uint64_t k = 0; k < n; ++k) out[k] = static_cast<float>(q[k]) * s;
}

}  // namespace

uint64_t Int8AbsMaxRange(const float* x, const ChannelLayout& l, uint64_t begin, uint64_t end,
                         float* amax) {
  uint64_t bad = end;
  ForEachRun(l, begin, end, [&](uint64_t c, uint64_t i, uint64_t j) {
    if (bad != end) return;
    if (!AbsMaxRun(x + i, j - i, &amax[c])) bad = i + FirstNonFinite(x + i, j - i);
  });
  return bad;
}

void Int8ScalesFromAbsMax(const float* amax, uint64_t channels, float* scales) {
  for (uint64_t c = 0; c < channels; ++c) scales[c] = amax[c] > 0.0f ? amax[c] / 127.0f : 1.0f;
}

Status Int8Scales(const float* x, const ChannelLayout& l, float* scales) {
  std::vector<float> amax(l.channels, 0.0f);
  const uint64_t n = l.elements();
  const uint64_t bad = Int8AbsMaxRange(x, l, 0, n, amax.data());
  if (bad < n) return NonFiniteAt(x, bad);
  Int8ScalesFromAbsMax(amax.data(), l.channels, scales);
  return Status::Ok();
}

void QuantizeInt8Range(const float* x, const ChannelLayout& l, const float* scales, uint64_t begin,
                       uint64_t end, int8_t* q) {
  ForEachRun(l, begin, end, [&](uint64_t c, uint64_t i, uint64_t j) {
    QuantizeInt8Run(x + i, j - i, scales[c], q + i);
  });
}

void DequantizeInt8Range(const int8_t* q, const ChannelLayout& l, const float* scales,
                         uint64_t begin, uint64_t end, float* out) {
  ForEachRun(l, begin, end, [&](uint64_t c, uint64_t i, uint64_t j) {
    DequantizeInt8Run(q + i, j - i, scales[c], out + i);
  });
}

void QuantizeInt8(const float* x, const ChannelLayout& l, const float* scales, int8_t* q) {
  QuantizeInt8Range(x, l, scales, 0, l.elements(), q);
}

void DequantizeInt8(const int8_t* q, const ChannelLayout& l, const float* scales, float* out) {
  DequantizeInt8Range(q, l, scales, 0, l.elements(), out);
}

bool QuantizeInt8Measured(const float* x, uint64_t n, float scale, int8_t* q, ErrorStats* stats) {
  double max_abs = stats->max_abs;
  double sums[4] = {stats->sum_sq_err, stats->sum_sq_ref, stats->sum_sq_out, stats->dot};
  if (!QuantizeInt8MeasuredRun(x, n, scale, q, &max_abs, sums)) return false;
  stats->SetSums(max_abs, sums, n);
  return true;
}

bool QuantizeQ8_0Measured(std::span<const float> src, uint8_t* out, ErrorStats* stats) {
  if (src.size() % kBlock != 0) return false;
  double max_abs = stats->max_abs;
  double sums[4] = {stats->sum_sq_err, stats->sum_sq_ref, stats->sum_sq_out, stats->dot};
  if (!Q8BlocksMeasured(src.data(), src.size() / kBlock, out, &max_abs, sums)) return false;
  stats->SetSums(max_abs, sums, src.size());
  return true;
}

void ErrorStats::SetSums(double max, const double* sums, uint64_t added) {
  max_abs = max;
  sum_sq_err = sums[0];
  sum_sq_ref = sums[1];
  sum_sq_out = sums[2];
  dot = sums[3];
  count += added;
}

void ErrorStats::Add(const float* ref, const float* out, uint64_t n) {
  double sums[4] = {sum_sq_err, sum_sq_ref, sum_sq_out, dot};
  double max = max_abs;
  AddErrorStats(ref, out, n, &max, sums);
  SetSums(max, sums, n);
}

void ErrorStats::Merge(const ErrorStats& other) {
  count += other.count;
  max_abs = std::max(max_abs, other.max_abs);
  sum_sq_err += other.sum_sq_err;
  sum_sq_ref += other.sum_sq_ref;
  sum_sq_out += other.sum_sq_out;
  dot += other.dot;
}

double ErrorStats::rmse() const {
  return count == 0 ? 0.0 : std::sqrt(sum_sq_err / static_cast<double>(count));
}

double ErrorStats::snr_db() const {
  if (count == 0) return 0.0;
  if (sum_sq_err == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(sum_sq_ref / sum_sq_err);
}

double ErrorStats::cosine() const {
  if (sum_sq_ref == 0 && sum_sq_out == 0) return 1.0;
  if (sum_sq_ref == 0 || sum_sq_out == 0) return 0.0;
  return dot / (std::sqrt(sum_sq_ref) * std::sqrt(sum_sq_out));
}

Json ErrorStats::ToJson() const {
  Json doc = Json::object();
  doc["max_abs"] = max_abs;
  doc["rmse"] = rmse();
  const double snr = snr_db();
  doc["snr_db"] = std::isinf(snr) ? Json(nullptr) : Json(snr);
  doc["cosine"] = cosine();
  return doc;
}

}  // namespace mp
