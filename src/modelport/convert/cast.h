// Element type casts. Float narrowing rounds to nearest, ties to even, as numpy's astype and
// torch's .to() do, rounding exactly once from the source value. Subnormals are exact, signed
// zero is kept, and a NaN stays a quiet NaN keeping as much of its payload as fits.
//
// float8 e4m3fn has no infinity. Casts to it use the OCP FP8 specification's saturating mode
// (as CUDA's __NV_SATFINITE does): finite values beyond the largest finite 448 and infinities
// become +-448, NaN stays NaN (S.1111.111). torch's and ml_dtypes' plain casts use the
// non-saturating mode instead, which turns |x| >= 480 and infinities into NaN; modelport prefers
// keeping a finite weight finite. float8 e5m2 has infinities and behaves like IEEE binary16:
// values that round beyond 57344 become +-inf.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "modelport/core/status.h"
#include "modelport/core/tensor.h"

namespace mp {

/// f32 -> IEEE binary16 bits, round to nearest even; overflow gives +-inf.
uint16_t F32ToF16(float value);
/// IEEE binary16 bits -> f32 (exact).
float F16ToF32(uint16_t bits);
/// f32 -> bfloat16 bits, round to nearest even; overflow gives +-inf.
uint16_t F32ToBF16(float value);
/// bfloat16 bits -> f32 (exact).
float BF16ToF32(uint16_t bits);
/// f64 -> f16 rounded once from the double (no double rounding through f32).
uint16_t F64ToF16(double value);
/// f64 -> bf16 rounded once from the double (no double rounding through f32).
uint16_t F64ToBF16(double value);
uint8_t F32ToF8E4M3(float value);  ///< saturates to +-448 (infinities too); NaN stays NaN
float F8E4M3ToF32(uint8_t bits);   ///< exact; 0x7F/0xFF decode to NaN
uint8_t F32ToF8E5M2(float value);  ///< IEEE-like: overflow rounds to infinity
float F8E5M2ToF32(uint8_t bits);   ///< exact
/// f64 -> f8 e4m3fn rounded once from the double; same saturation as F32ToF8E4M3.
uint8_t F64ToF8E4M3(double value);
/// f64 -> f8 e5m2 rounded once from the double.
uint8_t F64ToF8E5M2(double value);

/// Decodes `count` elements of `dtype` starting at `src` (little-endian) into `out`.
/// Complex c64 decodes 2 doubles per element (re, im). Quantized types give Unsupported.
/// `src` needs no alignment; bool decodes any non-zero byte as 1.
Status DecodeToF64(DType dtype, const uint8_t* src, size_t count, double* out);

/// Number of doubles DecodeToF64 writes for `count` elements (2x for complex).
size_t DecodedWidth(DType dtype);

/// `tensor` converted to `to` (a float dtype); the result owns new memory. Only float -> float
/// casts and dequantization of ggml block types (q4_0 ... q6_k, to f32 exactly as ggml does,
/// then rounded once to `to`) are allowed (InvalidArgument otherwise); a cast to the same dtype
/// returns the input.
Result<TensorView> CastTensor(const TensorView& tensor, DType to);

/// A view of `source` whose floating-point and block-quantized tensors are cast to `to` as they
/// are loaded; integer, bool and complex tensors pass through untouched. `source` must outlive the
/// view. `to` must be a float dtype; otherwise every Load of a float tensor gives InvalidArgument.
std::unique_ptr<ModelSource> CastFloats(const ModelSource& source, DType to);

}  // namespace mp
