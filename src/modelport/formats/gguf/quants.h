// ggml block-quantized types (ggml/src/ggml-common.h for the layouts, ggml/src/ggml-quants.c
// dequantize_row_* for the arithmetic). Each dequantizer reproduces the reference's float
// operations in the reference's order, so its output is bit-identical to ggml's scalar path.
#pragma once

#include <cstdint>
#include <span>

#include "modelport/core/dtype.h"
#include "modelport/core/status.h"

namespace mp::gguf {

/// True if DequantizeToF32 handles `dtype`.
bool CanDequantize(DType dtype);

/// Dequantizes `src` (a whole number of blocks of the quantized `dtype`) into `out`, which
/// must hold src.size() / block_bytes * block_elems floats. InvalidArgument if `src` is not a
/// whole number of blocks; Unsupported for a dtype that is not a supported quantized type.
Status DequantizeToF32(DType dtype, std::span<const uint8_t> src, float* out);

}  // namespace mp::gguf
