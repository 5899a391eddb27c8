#include "modelport/convert/cast.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <string>
#include <vector>

#include "modelport/formats/gguf/quants.h"

namespace mp {
namespace {

static_assert(std::endian::native == std::endian::little,
              "casts read and write little-endian bytes with memcpy");

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <typename T>
void Store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

// A binary floating-point target narrower than f64: E exponent bits, M stored mantissa bits.
// IEEE-like formats reserve the all-ones exponent for inf/NaN; "fn" formats (e4m3fn) have no
// infinity and only S.1..1.1..1 is NaN, so their largest finite value has an all-ones exponent.
struct NarrowFormat {
  int exp_bits;
  int man_bits;
  bool has_inf;
};

constexpr NarrowFormat kF16Format{5, 10, true};
constexpr NarrowFormat kBF16Format{8, 7, true};
constexpr NarrowFormat kE4M3Format{4, 3, false};
constexpr NarrowFormat kE5M2Format{5, 2, true};

// Rounds `value` once, to nearest with ties to even, into format `f`. Overflow gives inf for
// IEEE-like formats and saturates to the largest finite value for fn formats (OCP FP8
// specification, saturating mode); infinities do the same.
uint32_t NarrowF64(double value, const NarrowFormat& f) {
  const int e_bits = f.exp_bits;
  const int m_bits = f.man_bits;
  const uint64_t x = std::bit_cast<uint64_t>(value);
  const uint32_t sign = static_cast<uint32_t>(x >> 63) << (e_bits + m_bits);
  const uint64_t a = x & ~(uint64_t{1} << 63);
  const uint32_t all_ones_exp = ((1u << e_bits) - 1) << m_bits;
  const uint32_t man_mask = (1u << m_bits) - 1;
  const uint32_t max_finite = f.has_inf ? all_ones_exp - 1 : (all_ones_exp | man_mask) - 1;
  const uint32_t overflow = f.has_inf ? all_ones_exp : max_finite;
  constexpr uint64_t kF64Inf = 0x7FF0000000000000;

  if (a > kF64Inf) {
    if (!f.has_inf) return sign | all_ones_exp | man_mask;
    // Quiet NaN keeping the top payload bits.
    const uint32_t payload = static_cast<uint32_t>(a >> (52 - m_bits)) & man_mask;
    return sign | all_ones_exp | (1u << (m_bits - 1)) | payload;
  }
  if (a == kF64Inf) return sign | overflow;
  if (a == 0) return sign;

  int e = static_cast<int>(a >> 52);
  uint64_t m = a & ((uint64_t{1} << 52) - 1);
  if (e == 0) {
    // f64 subnormal: normalise so that bit 52 is the leading one.
    const int lz = std::countl_zero(m) - 11;
    m <<= lz;
    e = 1 - lz;
  } else {
    m |= uint64_t{1} << 52;
  }
  e -= 1023;  // value = m * 2^(e - 52), m in [2^52, 2^53)

  const int bias = (1 << (e_bits - 1)) - 1;
  const int emin = 1 - bias;
  // The target's spacing at this magnitude is 2^(max(e, emin) - m_bits); drop the bits below.
  const int shift = std::max(e, emin) - m_bits - (e - 52);
  uint64_t r = 0;
  if (shift <= 54) {
    r = m >> shift;
    const uint64_t rem = m & ((uint64_t{1} << shift) - 1);
    const uint64_t half = uint64_t{1} << (shift - 1);
    if (rem > half || (rem == half && (r & 1) != 0)) ++r;
  }  // else value < half the smallest subnormal: rounds to zero.
  // For normals r is in [2^M, 2^(M+1)]; adding it to the exponent field below the implicit
  // bit carries into the exponent when rounding overflows the mantissa.
  const uint64_t bits = e >= emin ? (static_cast<uint64_t>(e - emin) << m_bits) + r : r;
  if (bits > max_finite) return sign | overflow;
  return sign | static_cast<uint32_t>(bits);
}

// The decoded value of every e4m3fn byte, as f32 bits.
constexpr std::array<uint32_t, 256> MakeE4M3Table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t b = 0; b < 256; ++b) {
    const uint32_t sign = (b & 0x80) << 24;
    const uint32_t exp = (b >> 3) & 0xF;
    const uint32_t man = b & 0x7;
    uint32_t bits = 0;
    if (exp == 0xF && man == 0x7) {
      bits = 0x7FC00000;
    } else if (exp != 0) {
      bits = ((exp - 7 + 127) << 23) | (man << 20);
    } else if (man != 0) {
      // man * 2^-9: leading one at bit p gives 2^(p-9) * (1 + rest / 2^p).
      const uint32_t p = man >= 4 ? 2 : (man >= 2 ? 1 : 0);
      bits = ((p - 9 + 127) << 23) | ((man - (1u << p)) << (23 - p));
    }
    t[b] = sign | bits;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kE4M3Table = MakeE4M3Table();

constexpr size_t kChunk = 1024;

// Exact widening of one chunk of a float dtype other than f64 to f32.
void DecodeChunkF32(DType from, const uint8_t* src, size_t n, float* out) {
  switch (from) {
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) out[i] = F16ToF32(Load<uint16_t>(src + 2 * i));
      break;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) out[i] = BF16ToF32(Load<uint16_t>(src + 2 * i));
      break;
    case DType::kF32:
      std::memcpy(out, src, n * sizeof(float));
      break;
    case DType::kF8E4M3:
      for (size_t i = 0; i < n; ++i) out[i] = F8E4M3ToF32(src[i]);
      break;
    case DType::kF8E5M2:
      for (size_t i = 0; i < n; ++i) out[i] = F8E5M2ToF32(src[i]);
      break;
    default:
      break;
  }
}

void EncodeChunkFromF32(DType to, const float* in, size_t n, uint8_t* dst) {
  switch (to) {
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) Store(dst + 2 * i, F32ToF16(in[i]));
      break;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) Store(dst + 2 * i, F32ToBF16(in[i]));
      break;
    case DType::kF32:
      std::memcpy(dst, in, n * sizeof(float));
      break;
    case DType::kF64:
      for (size_t i = 0; i < n; ++i) Store(dst + 8 * i, static_cast<double>(in[i]));
      break;
    case DType::kF8E4M3:
      for (size_t i = 0; i < n; ++i) dst[i] = F32ToF8E4M3(in[i]);
      break;
    case DType::kF8E5M2:
      for (size_t i = 0; i < n; ++i) dst[i] = F32ToF8E5M2(in[i]);
      break;
    default:
      break;
  }
}

void EncodeFromF64(DType to, const uint8_t* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) {
    const double v = Load<double>(src + 8 * i);
    switch (to) {
      case DType::kF16:
        Store(dst + 2 * i, F64ToF16(v));
        break;
      case DType::kBF16:
        Store(dst + 2 * i, F64ToBF16(v));
        break;
      case DType::kF32:
        // The hardware conversion rounds to nearest even once, in the default rounding mode.
        Store(dst + 4 * i, static_cast<float>(v));
        break;
      case DType::kF8E4M3:
        dst[i] = F64ToF8E4M3(v);
        break;
      case DType::kF8E5M2:
        dst[i] = F64ToF8E5M2(v);
        break;
      default:
        break;
    }
  }
}

// The hot loops of a model conversion, kept as simple element loops over branch-free
// conversions so the compiler can vectorise them.
void F32ToF16Loop(const uint8_t* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) Store(dst + 2 * i, F32ToF16(Load<float>(src + 4 * i)));
}
void F32ToBF16Loop(const uint8_t* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) Store(dst + 2 * i, F32ToBF16(Load<float>(src + 4 * i)));
}
void F16ToF32Loop(const uint8_t* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) Store(dst + 4 * i, F16ToF32(Load<uint16_t>(src + 2 * i)));
}
void BF16ToF32Loop(const uint8_t* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) Store(dst + 4 * i, BF16ToF32(Load<uint16_t>(src + 2 * i)));
}

void CastElements(DType from, DType to, const uint8_t* src, size_t n, uint8_t* dst) {
  if (from == DType::kF32 && to == DType::kF16) return F32ToF16Loop(src, n, dst);
  if (from == DType::kF32 && to == DType::kBF16) return F32ToBF16Loop(src, n, dst);
  if (from == DType::kF16 && to == DType::kF32) return F16ToF32Loop(src, n, dst);
  if (from == DType::kBF16 && to == DType::kF32) return BF16ToF32Loop(src, n, dst);
  if (from == DType::kF64) return EncodeFromF64(to, src, n, dst);
  // Every other float widens to f32 exactly, so going through f32 rounds only once.
  const size_t in_size = ElementSize(from);
  const size_t out_size = ElementSize(to);
  std::array<float, kChunk> tmp;
  for (size_t done = 0; done < n; done += kChunk) {
    const size_t k = std::min(kChunk, n - done);
    DecodeChunkF32(from, src + done * in_size, k, tmp.data());
    EncodeChunkFromF32(to, tmp.data(), k, dst + done * out_size);
  }
}

// Floats, and block-quantized types (dequantized), are what a float cast applies to.
bool Castable(DType d) { return IsFloat(d) || gguf::CanDequantize(d); }

class CastSource final : public ModelSource {
 public:
  CastSource(const ModelSource& source, DType to) : source_(source), to_(to) {
    infos_ = source.tensors();
    errors_.resize(infos_.size());
    for (size_t i = 0; i < infos_.size(); ++i) {
      TensorInfo& info = infos_[i];
      if (!Castable(info.dtype) || !IsFloat(to) || info.dtype == to) continue;
      Result<TensorInfo> cast = TensorInfo::Make(info.name, to, info.shape);
      if (cast.has_value()) {
        info = std::move(cast).value();
      } else {
        errors_[i] = cast.status().WithContext("tensor '" + info.name + "': cast to " +
                                               std::string(DTypeName(to)));
      }
    }
  }

  std::string_view format() const override { return source_.format(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return source_.metadata(); }

  Result<TensorView> Load(size_t index) const override {
    if (index >= infos_.size()) {
      return InvalidArgument("tensor index " + std::to_string(index) + " is out of range (" +
                             std::to_string(infos_.size()) + " tensors)");
    }
    if (!errors_[index].ok()) return errors_[index];
    MP_ASSIGN_OR_RETURN(TensorView tensor, source_.Load(index));
    if (!Castable(tensor.info.dtype)) return tensor;
    return CastTensor(tensor, to_);
  }

 private:
  const ModelSource& source_;
  DType to_;
  std::vector<TensorInfo> infos_;
  std::vector<Status> errors_;
};

}  // namespace

uint16_t F32ToF16(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t a = x & 0x7FFFFFFF;
  // Normal results: rebias the exponent (127 - 15 = 112) and round the 13 dropped bits to
  // nearest even; a mantissa carry moves into the exponent, up to infinity at 65520.
  const uint32_t normal = (a - (112u << 23) + 0xFFF + ((a >> 13) & 1)) >> 13;
  // Below 2^-14 the result is a multiple of 2^-24: adding 0.5 (whose f32 spacing is 2^-24)
  // makes the FPU round to nearest even there; the low bits are then the f16 subnormal. This
  // is exact for every f32 input, and f32 subnormals (which DAZ would zero) round to 0 anyway.
  const uint32_t subnormal = std::bit_cast<uint32_t>(std::bit_cast<float>(a) + 0.5f) - 0x3F000000;
  const uint32_t nan = 0x7E00 | ((a >> 13) & 0x1FF);
  // Selects by masks rather than ?: so the float addition is not a conditional operation
  // (which -ftrapping-math forbids the vectoriser to speculate).
  const uint32_t is_sub = 0u - static_cast<uint32_t>(a < 0x38800000);
  // 65520 and above overflow (65520 is a tie whose even neighbour is infinity).
  const uint32_t is_big = 0u - static_cast<uint32_t>(a >= 0x477FF000);
  const uint32_t is_nan = 0u - static_cast<uint32_t>(a > 0x7F800000);
  uint32_t r = (subnormal & is_sub) | (normal & ~is_sub);
  r = (0x7C00 & is_big) | (r & ~is_big);
  r = (nan & is_nan) | (r & ~is_nan);
  return static_cast<uint16_t>(sign | r);
}

float F16ToF32(uint16_t bits) {
  const uint32_t h = bits;
  const uint32_t sign = (h & 0x8000) << 16;
  const uint32_t a = h & 0x7FFF;
  uint32_t normal = (a << 13) + (112u << 23);
  normal = a >= 0x7C00 ? normal + (112u << 23) : normal;  // inf/NaN: exponent to all ones
  // a * 2^-24 exactly, built as (0.5 + a * 2^-24) - 0.5 with normal f32 arithmetic.
  const uint32_t subnormal = std::bit_cast<uint32_t>(std::bit_cast<float>(0x3F000000 | a) - 0.5f);
  const uint32_t is_sub = 0u - static_cast<uint32_t>(a < 0x0400);  // mask: see F32ToF16
  return std::bit_cast<float>(sign | (subnormal & is_sub) | (normal & ~is_sub));
}

uint16_t F32ToBF16(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  // bf16 is the top half of an f32: round the low 16 bits to nearest even. Subnormals, the
  // carry into the exponent and overflow to infinity all fall out of the integer addition.
  const uint32_t rounded = (x + 0x7FFF + ((x >> 16) & 1)) >> 16;
  const uint32_t nan = (x >> 16) | 0x0040;
  return static_cast<uint16_t>((x & 0x7FFFFFFF) > 0x7F800000 ? nan : rounded);
}

float BF16ToF32(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t F64ToF16(double value) { return static_cast<uint16_t>(NarrowF64(value, kF16Format)); }
uint16_t F64ToBF16(double value) { return static_cast<uint16_t>(NarrowF64(value, kBF16Format)); }
uint8_t F64ToF8E4M3(double value) { return static_cast<uint8_t>(NarrowF64(value, kE4M3Format)); }
uint8_t F64ToF8E5M2(double value) { return static_cast<uint8_t>(NarrowF64(value, kE5M2Format)); }

// f32 -> f64 is exact (a signalling NaN only gains its quiet bit), so these round once.
uint8_t F32ToF8E4M3(float value) { return F64ToF8E4M3(static_cast<double>(value)); }
uint8_t F32ToF8E5M2(float value) { return F64ToF8E5M2(static_cast<double>(value)); }

float F8E4M3ToF32(uint8_t bits) { return std::bit_cast<float>(kE4M3Table[bits]); }

// e5m2 is binary16 with the low 8 mantissa bits dropped.
float F8E5M2ToF32(uint8_t bits) { return F16ToF32(static_cast<uint16_t>(bits << 8)); }

size_t DecodedWidth(DType dtype) { return Traits(dtype).kind == DTypeKind::kComplex ? 2 : 1; }

Status DecodeToF64(DType dtype, const uint8_t* src, size_t count, double* out) {
  switch (dtype) {
    case DType::kBool:
      for (size_t i = 0; i < count; ++i) out[i] = src[i] != 0 ? 1.0 : 0.0;
      return Status::Ok();
    case DType::kU8:
      for (size_t i = 0; i < count; ++i) out[i] = src[i];
      return Status::Ok();
    case DType::kI8:
      for (size_t i = 0; i < count; ++i) out[i] = static_cast<int8_t>(src[i]);
      return Status::Ok();
    case DType::kI16:
      for (size_t i = 0; i < count; ++i) out[i] = Load<int16_t>(src + 2 * i);
      return Status::Ok();
    case DType::kU16:
      for (size_t i = 0; i < count; ++i) out[i] = Load<uint16_t>(src + 2 * i);
      return Status::Ok();
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) out[i] = F16ToF32(Load<uint16_t>(src + 2 * i));
      return Status::Ok();
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) out[i] = BF16ToF32(Load<uint16_t>(src + 2 * i));
      return Status::Ok();
    case DType::kI32:
      for (size_t i = 0; i < count; ++i) out[i] = Load<int32_t>(src + 4 * i);
      return Status::Ok();
    case DType::kU32:
      for (size_t i = 0; i < count; ++i) out[i] = Load<uint32_t>(src + 4 * i);
      return Status::Ok();
    case DType::kF32:
      for (size_t i = 0; i < count; ++i) out[i] = Load<float>(src + 4 * i);
      return Status::Ok();
    case DType::kF64:
      std::memcpy(out, src, count * sizeof(double));
      return Status::Ok();
    // 64-bit integers beyond 2^53 round to the nearest double.
    case DType::kI64:
      for (size_t i = 0; i < count; ++i) out[i] = static_cast<double>(Load<int64_t>(src + 8 * i));
      return Status::Ok();
    case DType::kU64:
      for (size_t i = 0; i < count; ++i) out[i] = static_cast<double>(Load<uint64_t>(src + 8 * i));
      return Status::Ok();
    case DType::kC64:
      for (size_t i = 0; i < 2 * count; ++i) out[i] = Load<float>(src + 4 * i);
      return Status::Ok();
    case DType::kF8E4M3:
      for (size_t i = 0; i < count; ++i) out[i] = F8E4M3ToF32(src[i]);
      return Status::Ok();
    case DType::kF8E5M2:
      for (size_t i = 0; i < count; ++i) out[i] = F8E5M2ToF32(src[i]);
      return Status::Ok();
    default:
      return Unsupported("cannot decode " + std::string(DTypeName(dtype)) +
                         " element by element: it is a block-quantized type");
  }
}

Result<TensorView> CastTensor(const TensorView& tensor, DType to) {
  const TensorInfo& info = tensor.info;
  const DType from = info.dtype;
  if (from == to) return tensor;
  if (!Castable(from) || !IsFloat(to)) {
    return InvalidArgument("tensor '" + info.name + "': cannot cast " +
                           std::string(DTypeName(from)) + " to " + std::string(DTypeName(to)) +
                           ": only float to float casts are supported");
  }
  const size_t size = tensor.data == nullptr ? 0 : tensor.data->size();
  if (size != info.byte_size) {
    return InvalidArgument("tensor '" + info.name + "': data is " + std::to_string(size) +
                           " bytes but " + std::string(DTypeName(from)) + " " +
                           info.shape.ToString() + " needs " + std::to_string(info.byte_size));
  }
  Result<TensorInfo> out_info = TensorInfo::Make(info.name, to, info.shape);
  if (!out_info.has_value()) {
    return out_info.status().WithContext("tensor '" + info.name + "': cast to " +
                                         std::string(DTypeName(to)));
  }
  Result<std::shared_ptr<Buffer>> out = Buffer::Allocate(out_info->byte_size);
  if (!out.has_value()) return out.status().WithContext("tensor '" + info.name + "'");
  if (IsQuantized(from)) {
    // Dequantize to f32 (the reference's output type), then round once to the target.
    const size_t n = static_cast<size_t>(out_info->byte_size / ElementSize(to));
    std::vector<float> f32(to == DType::kF32 ? 0 : n);
    float* dest = to == DType::kF32 ? reinterpret_cast<float*>((*out)->mutable_data()) : f32.data();
    Status s = gguf::DequantizeToF32(from, tensor.bytes(), dest);
    if (!s.ok()) return s.WithContext("tensor '" + info.name + "'");
    if (to != DType::kF32 && n > 0) {
      CastElements(DType::kF32, to, reinterpret_cast<const uint8_t*>(f32.data()), n,
                   (*out)->mutable_data());
    }
    return TensorView{std::move(out_info).value(), std::move(out).value()};
  }
  const size_t n = size / ElementSize(from);
  if (n > 0) CastElements(from, to, tensor.data->data(), n, (*out)->mutable_data());
  return TensorView{std::move(out_info).value(), std::move(out).value()};
}

std::unique_ptr<ModelSource> CastFloats(const ModelSource& source, DType to) {
  return std::make_unique<CastSource>(source, to);
}

}  // namespace mp
