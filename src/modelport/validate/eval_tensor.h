// The dense tensor the ONNX reference evaluator computes with, and the helpers every kernel
// shares: dtype dispatch, broadcasting (numpy rules, as ONNX's Broadcasting.md defines them),
// conversion from/to modelport's TensorView and ONNX's TensorProto.
//
// The evaluator is a correctness reference, not a fast runtime: kernels are plain loops over
// row-major data, accumulating in double where a sum is involved.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "modelport/core/dtype.h"
#include "modelport/core/status.h"
#include "modelport/core/tensor.h"

namespace onnx {
class TensorProto;
}

namespace mp::eval {

/// A dense row-major tensor. Element types the evaluator computes in: f32, f64, i64, i32 and
/// bool (one byte, 0 or 1); others are refused by name where a kernel meets them. A rank-0
/// tensor (scalar) has an empty shape and one element.
struct Tensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  /// NumElements() * ElementSize(dtype) bytes. std::vector<uint8_t>'s storage comes from
  /// operator new, aligned for any of the element types above.
  std::vector<uint8_t> bytes;

  /// A zero-filled tensor (no overflow checks: callers pass shapes they validated).
  static Tensor Zeros(DType dtype, std::vector<int64_t> shape);
  /// A rank-0 or rank-1 tensor holding `values`.
  static Tensor FromF32(std::vector<int64_t> shape, const std::vector<float>& values);
  static Tensor FromI64(std::vector<int64_t> shape, const std::vector<int64_t>& values);

  int64_t NumElements() const;
  int64_t rank() const { return static_cast<int64_t>(shape.size()); }

  template <typename T>
  T* data() {
    return reinterpret_cast<T*>(bytes.data());
  }
  template <typename T>
  const T* data() const {
    return reinterpret_cast<const T*>(bytes.data());
  }
};

/// What Tensor::Zeros throws for a tensor over MaxTensorBytes(); OnnxEvaluator::Run catches it
/// (and std::bad_alloc) and reports LimitExceeded naming the node, so a hostile graph asking for
/// a huge tensor (ConstantOfShape, Expand, Range) is refused instead of exhausting memory.
class TensorTooLarge : public std::bad_alloc {
 public:
  const char* what() const noexcept override { return "tensor over the evaluator's size limit"; }
};

/// The largest tensor (bytes) Tensor::Zeros makes on this thread; OnnxEvaluator::Run sets it
/// from its own limit for the duration of a run.
uint64_t& MaxTensorBytes();

/// memcpy that accepts n == 0 with null pointers (an empty tensor's data() may be null, and
/// memcpy from null is undefined even for zero bytes).
inline void CopyBytes(void* dst, const void* src, size_t n) {
  if (n != 0) std::memcpy(dst, src, n);
}

/// "[2,3]": a shape or any integer list, for messages.
std::string ShapeString(const std::vector<int64_t>& shape);

/// The product of v[begin, end) (1 when empty): a tensor seen as [outer, dim, inner] around an
/// axis. Callers pass dimensions of a tensor that exists, so the product cannot overflow.
int64_t Product(const std::vector<int64_t>& v, size_t begin, size_t end);

/// "f32[2,3]": the dtype and shape, for messages.
std::string Describe(const Tensor& t);

/// Element count of `shape` (1 for rank 0). InvalidArgument for a negative dimension or a
/// product over 2^40 elements (the evaluator is for validation-sized models).
Result<int64_t> CheckedNumElements(const std::vector<int64_t>& shape);

/// The broadcast shape of `a` and `b` (numpy rules: trailing dimensions equal, or one of them
/// 1). InvalidArgument naming both shapes when they do not broadcast.
Result<std::vector<int64_t>> BroadcastShapes(const std::vector<int64_t>& a,
                                             const std::vector<int64_t>& b);

/// Strides (in elements) to read a tensor of `shape` as if it had `out_shape` (its broadcast):
/// one entry per output dimension, 0 where `shape` is broadcast (missing or 1). `shape` must
/// broadcast to `out_shape`.
std::vector<int64_t> BroadcastStrides(const std::vector<int64_t>& shape,
                                      const std::vector<int64_t>& out_shape);

/// Row-major strides of `shape` (last dimension 1).
std::vector<int64_t> RowMajorStrides(const std::vector<int64_t>& shape);

/// Visits every element of `out_shape` in row-major order, calling f(i, off) with i the output
/// element and off[k] the element of input k read through strides[k] (BroadcastStrides, or any
/// strides with one entry per output dimension).
template <size_t N, typename F>
void ForEachBroadcast(const std::vector<int64_t>& out_shape,
                      const std::array<std::vector<int64_t>, N>& strides, F&& f) {
  int64_t total = 1;
  for (int64_t d : out_shape) total *= d;
  const size_t rank = out_shape.size();
  std::vector<int64_t> index(rank, 0);
  std::array<int64_t, N> off{};
  for (int64_t i = 0; i < total; ++i) {
    f(i, off);
    for (size_t d = rank; d-- > 0;) {
      for (size_t k = 0; k < N; ++k) off[k] += strides[k][d];
      if (++index[d] < out_shape[d]) break;
      for (size_t k = 0; k < N; ++k) off[k] -= strides[k][d] * out_shape[d];
      index[d] = 0;
    }
  }
}

/// Calls f(T{}) with T the C++ type of `dtype` among float, double, int64_t, int32_t and bool
/// (stored as uint8_t: f gets uint8_t). Returns Unsupported naming `what` and the dtype for
/// others.
template <typename F>
Status DispatchNumeric(DType dtype, const std::string& what, F&& f) {
  switch (dtype) {
    case DType::kF32:
      return f(float{});
    case DType::kF64:
      return f(double{});
    case DType::kI64:
      return f(int64_t{});
    case DType::kI32:
      return f(int32_t{});
    case DType::kBool:
      return f(uint8_t{});
    default:
      return Unsupported(what + ": element type " + std::string(DTypeName(dtype)) +
                         " is not one the reference evaluator computes in (f32, f64, i64, i32, "
                         "bool)");
  }
}

/// Same as DispatchNumeric, for float (f32) and double (f64) only.
template <typename F>
Status DispatchFloat(DType dtype, const std::string& what, F&& f) {
  switch (dtype) {
    case DType::kF32:
      return f(float{});
    case DType::kF64:
      return f(double{});
    default:
      return Unsupported(what + ": element type " + std::string(DTypeName(dtype)) +
                         " is not supported here (f32 and f64 are)");
  }
}

/// modelport's dtype for an ONNX TensorProto.DataType code (1 FLOAT, 7 INT64, ...); nullopt for
/// codes it has no dtype for (STRING, COMPLEX128, ...) and unknown ones.
std::optional<DType> DTypeFromOnnx(int64_t code);
/// The ONNX TensorProto.DataType code of `dtype`; 0 (UNDEFINED) for dtypes ONNX lacks.
int32_t OnnxFromDType(DType dtype);

/// Copies a modelport tensor (any plain dtype) into an evaluator tensor.
Result<Tensor> FromView(const TensorView& view);
/// The evaluator tensor as a modelport TensorView called `name` (a copy of the bytes).
Result<TensorView> ToView(const std::string& name, const Tensor& t);

/// Decodes a TensorProto held in memory (a Constant's value, an initializer without external
/// data, an ONNX test's input_N.pb): raw_data or the typed fields (float_data, int32_data,
/// int64_data, double_data, uint64_data), as the element type says. Corrupt when the data's
/// size disagrees with dims; Unsupported for external data or element types modelport has no
/// dtype for.
Result<Tensor> FromTensorProto(const ::onnx::TensorProto& proto);
/// Encodes `t` as a TensorProto with raw_data (for writing test inputs/outputs).
void ToTensorProto(const Tensor& t, const std::string& name, ::onnx::TensorProto* proto);

/// Reads element `i` of `t` as a double (any of the evaluator's dtypes).
double GetAsDouble(const Tensor& t, int64_t i);
/// Reads element `i` of `t` as an int64 (integer and bool dtypes; floats are truncated).
int64_t GetAsInt64(const Tensor& t, int64_t i);
/// The elements of an integer tensor (i64 or i32) as int64, e.g. a shape or axes input.
/// InvalidArgument naming `what` for other dtypes.
Result<std::vector<int64_t>> ToInt64Vector(const Tensor& t, const std::string& what);

/// `axis` in [-rank, rank) made non-negative; InvalidArgument naming `what` otherwise.
Result<int64_t> NormalizeAxis(int64_t axis, int64_t rank, const std::string& what);

}  // namespace mp::eval
