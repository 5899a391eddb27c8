// Quantized ONNX models: weight-only QDQ int8 and float casts written as graph rewrites, so every
// runtime that runs ONNX runs the result (docs/FORMATS.md, "Quantization").
//
// int8 (ONNX's own QDQ form, as onnxruntime's quantizer writes it for weights): an initializer W
// becomes
//   W_quantized   int8, W's shape
//   W_scale       f32, [C] per channel (C = W's size along the scale axis) or a scalar
//   W_zero_point  int8 zeros, the scale's shape
//   DequantizeLinear(W_quantized, W_scale, W_zero_point) -> W   (axis attribute per channel)
// with the node placed first in the graph, so every consumer of W still reads a float W.
// DequantizeLinear computes (q - zero_point) * scale in f32 (opset 10; per-axis scales from
// opset 13), which is exactly mp::DequantizeInt8's q * scale.
//
// Casts (f16, bf16, f8_e4m3, f8_e5m2): W is stored as that dtype under "W_<scheme>" and a
// Cast(to = FLOAT) node outputs W. BFLOAT16 Cast needs opset 13, FLOAT8 Cast opset 19.
//
// GGUF block types have no ONNX element type: they are refused.
#pragma once

#include <string>

#include "modelport/convert/quantize.h"
#include "modelport/core/dtype.h"
#include "modelport/core/status.h"
#include "modelport/formats/format.h"
#include "modelport/formats/onnx/onnx.h"

namespace mp {

/// The suffixes QuantizeOnnx gives the initializers it adds for a weight W (a number is added
/// after the suffix when the name is taken: "W_scale_1").
inline constexpr std::string_view kOnnxQuantizedSuffix = "_quantized";
inline constexpr std::string_view kOnnxScaleSuffix = "_scale";
inline constexpr std::string_view kOnnxZeroPointSuffix = "_zero_point";

/// Writes the ONNX model `source` to `out` with `options.scheme` applied to its candidate
/// initializers: f32 initializers of rank >= 2 with at least options.min_elements elements
/// whose names pass options.include / options.exclude (fnmatch globs). Initializers of another
/// float dtype (f16, f64) are kept, with the reason in the report.
///
/// int8: per channel (unless options.per_tensor) along the output-channel axis its consumers
/// imply: Conv -> 0, ConvTranspose -> 1, Gemm input B -> 0 with transB = 1 else 1, MatMul input
/// B -> the last axis, Gather input 0 (an embedding) -> 0, anything else -> options.axis (the
/// first consumer that decides wins). Scales and values come from mp::Int8Scales and
/// mp::QuantizeInt8, the kernels every other format uses. Needs default-domain opset >= 13
/// (per-axis DequantizeLinear): InvalidArgument otherwise (the opset is not raised, since that
/// could change other ops' semantics).
/// f16 / bf16 / f8_e4m3 / f8_e5m2: a Cast node; bf16 needs opset >= 13, f8 opset >= 19.
/// q8_0 ... q5_1: Unsupported (no ONNX element type holds ggml blocks).
///
/// The report has one entry per initializer (graph order) with the error of what was stored
/// (dequantized in f32) against the original. Placement: every tensor inline when the source
/// had no external data and the result stays under protobuf's 2 GiB; otherwise tensors of at
/// least 1 KiB go to "<out file name>.data" beside `out`. Both files are written atomically
/// (nothing is left behind on failure); write.no_overwrite refuses an existing output
/// (AlreadyExists). write.shard_size must be 0.
Result<QuantReport> QuantizeOnnx(const onnx::OnnxSource& source, const std::string& out,
                                 const QuantizeOptions& options, const WriteOptions& write);

/// The inverse of QuantizeOnnx: every DequantizeLinear (default domain) whose input 0 is an
/// int8 or uint8 initializer and whose scale (f32) and zero point (if given) are initializers,
/// and every Cast to FLOAT whose input is a float initializer, is folded into an f32
/// initializer named as the node's output ((q - zero_point) * scale in f32, or the exact
/// widening); the node goes, and so do the helper initializers nothing else reads. Graphs
/// without such nodes are written unchanged (same placement rules as QuantizeOnnx).
/// `to` must be f32 (InvalidArgument otherwise): those nodes output f32, so a folded
/// initializer of another dtype would not type-check against their consumers.
Status DequantizeOnnx(const onnx::OnnxSource& source, const std::string& out, DType to,
                      const WriteOptions& write);

}  // namespace mp
