// The element-level half of quantize.h: scheme names, ggml's reference block quantizers, the
// int8 symmetric kernels and the error statistics.
#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/convert/lanes.h"
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

// The scans below (finite check, maxima, int8 dequantization) are written with GCC vector types,
// 8 lanes wide, and compiled twice: for AVX2 (picked at load time where the CPU has it) and for
// baseline x86-64 (SSE2: each 8-lane operation becomes two). The lanes do the same IEEE
// operations in the same order in both, so the results do not depend on the CPU. No FMA:
// "avx2" does not enable it, so products and sums are rounded separately. The quantizers
// themselves are the lane kernels further down (measured_kernels.inc).
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define MP_HOT_LOOP __attribute__((target_clones("avx2", "default")))
#else
#define MP_HOT_LOOP
#endif

typedef int32_t I8x8 __attribute__((vector_size(32)));

constexpr int kLanes = 8;
constexpr int32_t kAbsMask = 0x7FFFFFFF;
constexpr int32_t kExpMask = 0x7F800000;  // all ones: infinity or NaN

#define MP_INLINE inline __attribute__((always_inline))

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

// The measured kernels' parts (measured_kernels.inc): 16 steps of 16 elements, or 8 q8_0
// blocks; their f32 sums run over up to kPartsPerRun parts.
constexpr uint64_t kPart = 256;
constexpr uint64_t kPartsPerRun = 4;
constexpr int kSteps = static_cast<int>(kPart) / 16;
constexpr uint64_t kQ8Ahead = 32;  // q8_0 groups (32 KiB of input) prefetched ahead
constexpr uint64_t kQ8Staged = 8;  // q8_0 groups (2 KiB of output) staged for a streamed copy
constexpr uint64_t kQ8StagingOffset = 1536;  // the staging area's place after x, modulo 4 KiB

// One element's terms, in double (every element of a call whose f32 sums cannot hold them).
MP_INLINE void AddInDouble(double r, double o, double* max_abs, double* sums) {
  const double e = o - r;
  *max_abs = std::max(*max_abs, std::fabs(e));
  sums[0] += e * e;
  sums[1] += r * r;
  sums[2] += r * e;
}

namespace portable {
using L = lanes::PortableLanes;
constexpr bool kInt8FastDivide = false;  // the definition: always x / s
#include "modelport/convert/measured_kernels.inc"
}  // namespace portable

#ifdef MP_HAVE_AVX2_LANES
// Every function defined between MP_TARGET_PUSH(t) and MP_TARGET_POP is built for target t.
#define MP_PRAGMA(...) _Pragma(#__VA_ARGS__)
#if defined(__clang__)
#define MP_TARGET_PUSH(t) \
  MP_PRAGMA(clang attribute push(__attribute__((target(t))), apply_to = function))
#define MP_TARGET_POP MP_PRAGMA(clang attribute pop)
#else
#define MP_TARGET_PUSH(t) MP_PRAGMA(GCC push_options) MP_PRAGMA(GCC target(t))
#define MP_TARGET_POP MP_PRAGMA(GCC pop_options)
#endif

MP_TARGET_PUSH(MP_AVX2_TARGET)
namespace avx2 {
using L = lanes::Avx2Lanes;
constexpr bool kInt8FastDivide = true;
#include "modelport/convert/measured_kernels.inc"
}  // namespace avx2
MP_TARGET_POP

// Again with AVX-512 (lanes::Avx512Lanes says what for).
MP_TARGET_PUSH(MP_AVX512_TARGET)
namespace avx512 {
using L = lanes::Avx512Lanes;
constexpr bool kInt8FastDivide = true;
#include "modelport/convert/measured_kernels.inc"
}  // namespace avx512
MP_TARGET_POP
#endif

KernelBuild g_kernel_build = KernelBuild::kBest;  // UseKernelBuildForTesting

#ifdef MP_HAVE_AVX2_LANES
bool UseAvx2() { return g_kernel_build != KernelBuild::kPortable && lanes::CpuHasAvx2Lanes(); }
bool UseAvx512() { return g_kernel_build == KernelBuild::kBest && lanes::CpuHasAvx512Lanes(); }
// The kernel `name` of the fastest build this CPU runs: avx512, avx2 or portable.
#define MP_KERNEL(name, ...)               \
  (UseAvx512() ? avx512::name(__VA_ARGS__) \
   : UseAvx2() ? avx2::name(__VA_ARGS__)   \
               : portable::name(__VA_ARGS__))
#else
#define MP_KERNEL(name, ...) portable::name(__VA_ARGS__)
#endif

void AddErrorStats(const float* ref, const float* out, uint64_t n, double* max_abs, double* sums) {
  MP_KERNEL(AddErrorStats, ref, out, n, max_abs, sums);
}

void Int8Values(const float* x, uint64_t n, float scale, int8_t* q) {
  MP_KERNEL(Int8Values, x, n, scale, q);
}

void Int8Measured(const float* x, uint64_t n, float scale, int8_t* q, double* max_abs, double* sums,
                  const float* next) {
  MP_KERNEL(Int8Measured, x, n, scale, q, max_abs, sums, next);
}

bool Q8Blocks(const float* x, size_t nb, uint8_t* y) { return MP_KERNEL(Q8Blocks, x, nb, y); }

bool Q8BlocksMeasured(const float* x, size_t nb, uint64_t more, uint8_t* y, double* max_abs,
                      double* sums) {
  return MP_KERNEL(Q8BlocksMeasured, x, nb, more, y, max_abs, sums);
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
  if (!AllFinite(src.data(), src.size())) {
    return NonFiniteAt(src.data(), FirstNonFinite(src.data(), src.size()));
  }
  const size_t nb = src.size() / kBlock;
  // Q8_0 runs vectorised, but for a d that is an f32 subnormal (which only the reference's
  // own arithmetic stores as it does).
  if (dtype == DType::kQ8_0 && Q8Blocks(src.data(), nb, out)) return Status::Ok();
  const uint32_t block_bytes = Traits(dtype).block_bytes;
  for (size_t b = 0; b < nb; ++b) fn(src.data() + b * kBlock, out + b * block_bytes);
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

// max(m, max |x[0, n)|) into *m; false (and *m untouched) if a value is not finite. |x| is
// compared as integers (the bits of non-negative floats order as their values), so an infinity
// or NaN comes out as a maximum at or above kExpMask.
MP_HOT_LOOP bool AbsMaxRun(const float* x, uint64_t n, float* m) {
  I8x8 m0 = {}, m1 = {};
  uint64_t k = 0;
  for (; k + 2 * kLanes <= n; k += 2 * kLanes) {
    I8x8 a, b;
    __builtin_memcpy(&a, x + k, sizeof(a));
    __builtin_memcpy(&b, x + k + kLanes, sizeof(b));
    a &= kAbsMask;
    b &= kAbsMask;
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  int32_t top = 0;
  for (int l = 0; l < kLanes; ++l) top = std::max({top, m0[l], m1[l]});
  for (; k < n; ++k) {
    int32_t bits;
    std::memcpy(&bits, x + k, sizeof(bits));
    top = std::max(top, bits & kAbsMask);
  }
  if (top >= kExpMask) return false;
  float r;
  std::memcpy(&r, &top, sizeof(r));
  *m = std::max(*m, r);
  return true;
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
    Int8Values(x + i, j - i, scales[c], q + i);
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

void QuantizeInt8Measured(const float* x, uint64_t n, float scale, int8_t* q, ErrorStats* stats,
                          const float* next) {
  double max_abs = stats->max_abs;
  double sums[3] = {stats->sum_sq_err, stats->sum_sq_ref, stats->sum_ref_err};
  Int8Measured(x, n, scale, q, &max_abs, sums, next);
  stats->SetSums(max_abs, sums, n);
}

bool QuantizeQ8_0Measured(std::span<const float> src, uint8_t* out, ErrorStats* stats,
                          uint64_t more) {
  if (src.size() % kBlock != 0) return false;
  double max_abs = stats->max_abs;
  double sums[3] = {stats->sum_sq_err, stats->sum_sq_ref, stats->sum_ref_err};
  if (!Q8BlocksMeasured(src.data(), src.size() / kBlock, more, out, &max_abs, sums)) return false;
  stats->SetSums(max_abs, sums, src.size());
  return true;
}

void UseKernelBuildForTesting(KernelBuild build) { g_kernel_build = build; }

void ErrorStats::SetSums(double max, const double* sums, uint64_t added) {
  max_abs = max;
  sum_sq_err = sums[0];
  sum_sq_ref = sums[1];
  sum_ref_err = sums[2];
  count += added;
}

void ErrorStats::Add(const float* ref, const float* out, uint64_t n) {
  double sums[3] = {sum_sq_err, sum_sq_ref, sum_ref_err};
  double max = max_abs;
  AddErrorStats(ref, out, n, &max, sums);
  SetSums(max, sums, n);
}

void ErrorStats::Merge(const ErrorStats& other) {
  count += other.count;
  max_abs = std::max(max_abs, other.max_abs);
  sum_sq_err += other.sum_sq_err;
  sum_sq_ref += other.sum_sq_ref;
  sum_ref_err += other.sum_ref_err;
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
  // out = ref + e: out . ref = sum ref^2 + sum ref * e, |out|^2 = that + sum ref * e + sum e^2.
  const double dot = sum_sq_ref + sum_ref_err;
  const double sum_sq_out = std::max(0.0, dot + sum_ref_err + sum_sq_err);
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
