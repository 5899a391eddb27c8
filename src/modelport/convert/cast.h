// Element type casts. Float narrowing rounds to nearest, ties to even, as numpy's astype and
// torch's .to() do; float8 conversions saturate where the format has no infinity (e4m3fn).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "modelport/core/status.h"
#include "modelport/core/tensor.h"

namespace mp {

uint16_t F32ToF16(float value);
float F16ToF32(uint16_t bits);
uint16_t F32ToBF16(float value);
float BF16ToF32(uint16_t bits);
/// f64 -> f16 rounded once from the double (no double rounding through f32).
uint16_t F64ToF16(double value);
uint16_t F64ToBF16(double value);
uint8_t F32ToF8E4M3(float value);  ///< saturates to +-448; NaN stays NaN
float F8E4M3ToF32(uint8_t bits);
uint8_t F32ToF8E5M2(float value);  ///< IEEE-like: overflow rounds to infinity
float F8E5M2ToF32(uint8_t bits);

/// Decodes `count` elements of `dtype` starting at `src` (little-endian) into `out`.
/// Complex c64 decodes 2 doubles per element (re, im). Quantized types give Unsupported.
Status DecodeToF64(DType dtype, const uint8_t* src, size_t count, double* out);

/// Number of doubles DecodeToF64 writes for `count` elements (2x for complex).
size_t DecodedWidth(DType dtype);

/// `tensor` converted to `to` (a float dtype); the result owns new memory. Only float -> float
/// casts are allowed (InvalidArgument otherwise); a cast to the same dtype returns the input.
Result<TensorView> CastTensor(const TensorView& tensor, DType to);

/// A view of `source` whose floating-point tensors are cast to `to` as they are loaded;
/// integer, bool and complex tensors pass through untouched. `source` must outlive the view.
std::unique_ptr<ModelSource> CastFloats(const ModelSource& source, DType to);

}  // namespace mp
