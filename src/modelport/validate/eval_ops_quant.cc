// Quantization kernels of the ONNX reference evaluator: DequantizeLinear, as the operator spec
// defines it (docs/Operators.md, DequantizeLinear-10/13/19/21):
//   y = (x - x_zero_point) * x_scale, computed in f32,
// with x int8, uint8 or int32 (int32 only with a zero point of 0 or none), x_scale f32 and
// x_zero_point of x's type. Opset 10 takes a scalar scale only; from 13 a 1-D scale of x's size
// along `axis` (default 1, negative counts from the end) dequantizes per axis. Blocked
// quantization (opset 21's block_size), float8 inputs and f16/bf16 scales (opset 19) are
// refused as unsupported.
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <vector>

#include "modelport/validate/eval_ops.h"
#include "modelport/validate/eval_tensor.h"

namespace mp::eval {
namespace {

int64_t ReadInteger(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::kI8:
      return t.data<int8_t>()[i];
    case DType::kU8:
      return t.data<uint8_t>()[i];
    default:
      return t.data<int32_t>()[i];
  }
}

Result<std::vector<Tensor>> DequantizeLinearKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(const Tensor* scale, ctx.input(1));
  const Tensor* zero = nullptr;
  if (ctx.has_input(2)) {
    MP_ASSIGN_OR_RETURN(zero, ctx.input(2));
  }
  if (x->dtype != DType::kI8 && x->dtype != DType::kU8 && x->dtype != DType::kI32) {
    return ctx.NotSupported("input x is " + Describe(*x) + "; int8, uint8 and int32 are supported");
  }
  if (scale->dtype != DType::kF32) {
    return ctx.NotSupported("x_scale is " + Describe(*scale) + "; f32 is supported");
  }
  MP_ASSIGN_OR_RETURN(const int64_t block_size, ctx.Int("block_size", 0));
  if (block_size != 0)
    return ctx.NotSupported("blocked quantization (block_size " + std::to_string(block_size) + ")");
  if (zero != nullptr && zero->dtype != x->dtype) {
    return ctx.Invalid("x_zero_point is " + Describe(*zero) + " but x is " + Describe(*x));
  }
  const int64_t scale_count = scale->NumElements();
  if (zero != nullptr && (zero->shape != scale->shape)) {
    return ctx.Invalid("x_zero_point " + Describe(*zero) + " and x_scale " + Describe(*scale) +
                       " differ in shape");
  }
  // A scalar (or, as onnxruntime accepts, a one-element 1-D) scale is per tensor.
  const bool per_tensor = scale->rank() == 0 || (scale->rank() == 1 && scale_count == 1);
  if (!per_tensor && (ctx.opset() < 13 || scale->rank() != 1)) {
    return ctx.Invalid("x_scale " + Describe(*scale) + " must be a scalar" +
                       (ctx.opset() < 13 ? " before opset 13" : " or 1-D"));
  }
  int64_t outer = x->NumElements(), channels = 1, inner = 1;
  if (!per_tensor) {
    MP_ASSIGN_OR_RETURN(const int64_t axis_attr, ctx.Int("axis", 1));
    MP_ASSIGN_OR_RETURN(const int64_t axis, NormalizeAxis(axis_attr, x->rank(), "axis"));
    channels = x->shape[static_cast<size_t>(axis)];
    if (channels != scale_count) {
      return ctx.Invalid("x_scale " + Describe(*scale) + " does not match dimension " +
                         std::to_string(axis) + " of x " + Describe(*x));
    }
    outer = Product(x->shape, 0, static_cast<size_t>(axis));
    inner = Product(x->shape, static_cast<size_t>(axis) + 1, x->shape.size());
  } else {
    outer = 1;
    inner = x->NumElements();
  }
  if (x->dtype == DType::kI32 && zero != nullptr) {
    for (int64_t c = 0; c < scale_count; ++c) {
      if (ReadInteger(*zero, c) != 0) return ctx.Invalid("an int32 x needs a zero point of 0");
    }
  }
  Tensor y = Tensor::Zeros(DType::kF32, x->shape);
  float* out = y.data<float>();
  const float* s = scale->data<float>();
  int64_t i = 0;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t z = zero != nullptr ? ReadInteger(*zero, c) : 0;
      for (int64_t k = 0; k < inner; ++k, ++i) {
        out[i] = static_cast<float>(ReadInteger(*x, i) - z) * s[c];
      }
    }
  }
  std::vector<Tensor> result;
  result.push_back(std::move(y));
  return result;
}

}  // namespace

void AddQuantKernels(KernelTable& table) { table["DequantizeLinear"] = DequantizeLinearKernel; }

}  // namespace mp::eval
