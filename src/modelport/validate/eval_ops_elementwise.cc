// Elementwise kernels: numpy-broadcasting binary ops, comparisons, unary math, Clip, Where, Cast,
// Identity and Dropout (inference). Spec: onnx docs/Operators.md.
#include <onnx/onnx_pb.h>

#include <array>
#include <cmath>
#include <limits>
#include <type_traits>

#include "modelport/convert/cast.h"
#include "modelport/validate/eval_ops.h"

namespace mp::eval {
namespace {

using Outputs = Result<std::vector<Tensor>>;

// Like DispatchNumeric, plus the narrow and unsigned integer types the arithmetic ops also take
// (Add on uint8, Clip on int8, ...); bool is refused since arithmetic on it is not defined.
template <typename F>
Status DispatchArith(DType dtype, const std::string& what, F&& f) {
  switch (dtype) {
    case DType::kU8:
      return f(uint8_t{});
    case DType::kI8:
      return f(int8_t{});
    case DType::kU16:
      return f(uint16_t{});
    case DType::kI16:
      return f(int16_t{});
    case DType::kU32:
      return f(uint32_t{});
    case DType::kU64:
      return f(uint64_t{});
    case DType::kBool:
      return Unsupported(what + ": arithmetic on bool is not defined");
    default:
      return DispatchNumeric(dtype, what, f);
  }
}

// out[i] = f(a[i], b[i]) with a and b broadcast (element types A and B, result R).
template <typename A, typename B, typename R, typename F>
Result<Tensor> Binary(const Tensor& a, const Tensor& b, DType out_dtype, F&& f) {
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> shape, BroadcastShapes(a.shape, b.shape));
  MP_RETURN_IF_ERROR(CheckedNumElements(shape));
  Tensor out = Tensor::Zeros(out_dtype, shape);
  const A* pa = a.data<A>();
  const B* pb = b.data<B>();
  R* po = out.data<R>();
  std::array<std::vector<int64_t>, 2> strides = {BroadcastStrides(a.shape, shape),
                                                 BroadcastStrides(b.shape, shape)};
  ForEachBroadcast<2>(shape, strides, [&](int64_t i, const std::array<int64_t, 2>& off) {
    po[i] = f(pa[off[0]], pb[off[1]]);
  });
  return out;
}

// out[i] = f(x[i]) with the same element type.
template <typename T, typename F>
Tensor Unary(const Tensor& x, F&& f) {
  Tensor out = Tensor::Zeros(x.dtype, x.shape);
  const T* px = x.data<T>();
  T* po = out.data<T>();
  for (int64_t i = 0, n = x.NumElements(); i < n; ++i) po[i] = f(px[i]);
  return out;
}

Status SameType(const OpContext& ctx, const Tensor& a, const Tensor& b) {
  if (a.dtype == b.dtype) return Status::Ok();
  return ctx.Invalid("inputs must have the same element type, got " + Describe(a) + " and " +
                     Describe(b));
}

// Add Sub Mul Div: both inputs of one type, numpy broadcasting, result of that type.
template <typename Op>
Outputs ArithKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* a, ctx.input(0));
  MP_ASSIGN_OR_RETURN(const Tensor* b, ctx.input(1));
  MP_RETURN_IF_ERROR(SameType(ctx, *a, *b));
  Tensor out;
  MP_RETURN_IF_ERROR(DispatchArith(a->dtype, ctx.node().op_type(), [&](auto tag) -> Status {
    using T = decltype(tag);
    if constexpr (Op::kCheckZero && std::is_integral_v<T>) {
      for (int64_t i = 0, n = b->NumElements(); i < n; ++i) {
        if (b->data<T>()[i] == 0) return ctx.Invalid("integer division by zero");
      }
    }
    MP_ASSIGN_OR_RETURN(out, (Binary<T, T, T>(*a, *b, a->dtype, Op())));
    return Status::Ok();
  }));
  return std::vector<Tensor>{std::move(out)};
}

// Integer results wrap to the type's width, as the ONNX reference (numpy) does: computed in
// uint64 (two's complement), where overflow is defined, then truncated.
template <typename T, typename F>
T Wrapping(T x, T y, F f) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(f(static_cast<uint64_t>(x), static_cast<uint64_t>(y)));
  } else {
    return f(x, y);
  }
}

struct AddOp {
  static constexpr bool kCheckZero = false;
  template <typename T>
  T operator()(T x, T y) const {
    return Wrapping(x, y, [](auto a, auto b) { return a + b; });
  }
};
struct SubOp {
  static constexpr bool kCheckZero = false;
  template <typename T>
  T operator()(T x, T y) const {
    return Wrapping(x, y, [](auto a, auto b) { return a - b; });
  }
};
struct MulOp {
  static constexpr bool kCheckZero = false;
  template <typename T>
  T operator()(T x, T y) const {
    return Wrapping(x, y, [](auto a, auto b) { return a * b; });
  }
};
// Integer Div truncates toward zero (onnx's reference divides and casts back, as C++ does);
// the one overflowing case, lowest / -1, wraps to lowest like numpy.
struct DivOp {
  static constexpr bool kCheckZero = true;
  template <typename T>
  T operator()(T x, T y) const {
    if constexpr (std::is_signed_v<T> && std::is_integral_v<T>) {
      if (y == T(-1)) return Wrapping(T(0), x, [](auto a, auto b) { return a - b; });
    }
    return static_cast<T>(x / y);
  }
};

// `v` as T: floats round as C does; integers saturate to T's range (NaN gives 0), so no
// conversion is undefined behaviour.
template <typename T>
T FromDouble(double v) {
  if constexpr (std::is_integral_v<T>) {
    if (std::isnan(v)) return T(0);
    if (v <= static_cast<double>(std::numeric_limits<T>::lowest())) {
      return std::numeric_limits<T>::lowest();
    }
    if (v >= static_cast<double>(std::numeric_limits<T>::max())) {
      return std::numeric_limits<T>::max();
    }
  }
  return static_cast<T>(v);
}

// Pow(X: T, Y: T1) -> T; computed in double and converted to T (integers saturate).
Outputs Pow(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* a, ctx.input(0));
  MP_ASSIGN_OR_RETURN(const Tensor* b, ctx.input(1));
  Tensor exponent = Tensor::Zeros(DType::kF64, b->shape);
  MP_RETURN_IF_ERROR(DispatchArith(b->dtype, "Pow exponent", [&](auto) { return Status::Ok(); }));
  for (int64_t i = 0, n = b->NumElements(); i < n; ++i) {
    exponent.data<double>()[i] = GetAsDouble(*b, i);
  }
  Tensor out;
  MP_RETURN_IF_ERROR(DispatchArith(a->dtype, "Pow", [&](auto tag) -> Status {
    using T = decltype(tag);
    MP_ASSIGN_OR_RETURN(out, (Binary<T, double, T>(*a, exponent, a->dtype, [](T x, double y) {
                          return FromDouble<T>(std::pow(static_cast<double>(x), y));
                        })));
    return Status::Ok();
  }));
  return std::vector<Tensor>{std::move(out)};
}

// Equal Less Greater: same-type inputs, bool result.
template <typename Op>
Outputs CompareKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* a, ctx.input(0));
  MP_ASSIGN_OR_RETURN(const Tensor* b, ctx.input(1));
  MP_RETURN_IF_ERROR(SameType(ctx, *a, *b));
  Tensor out;
  auto body = [&](auto tag) -> Status {
    using T = decltype(tag);
    MP_ASSIGN_OR_RETURN(out, (Binary<T, T, uint8_t>(*a, *b, DType::kBool, [](T x, T y) {
                          return static_cast<uint8_t>(Op()(x, y) ? 1 : 0);
                        })));
    return Status::Ok();
  };
  if (a->dtype == DType::kBool) {
    MP_RETURN_IF_ERROR(body(uint8_t{}));
  } else {
    MP_RETURN_IF_ERROR(DispatchArith(a->dtype, ctx.node().op_type(), body));
  }
  return std::vector<Tensor>{std::move(out)};
}

// Float unary ops: f computes in double, the result is rounded to the input's type.
template <double (*F)(double)>
Outputs FloatUnaryKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  Tensor out;
  MP_RETURN_IF_ERROR(DispatchFloat(x->dtype, ctx.node().op_type(), [&](auto tag) {
    using T = decltype(tag);
    out = Unary<T>(*x, [](T v) { return static_cast<T>(F(static_cast<double>(v))); });
    return Status::Ok();
  }));
  return std::vector<Tensor>{std::move(out)};
}

double SqrtD(double x) { return std::sqrt(x); }
double ExpD(double x) { return std::exp(x); }
double LogD(double x) { return std::log(x); }
double ErfD(double x) { return std::erf(x); }
double TanhD(double x) { return std::tanh(x); }
double SigmoidD(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Neg Abs Relu: any numeric type, computed in the type itself.
template <typename Op>
Outputs NumericUnaryKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  Tensor out;
  MP_RETURN_IF_ERROR(DispatchArith(x->dtype, ctx.node().op_type(), [&](auto tag) {
    using T = decltype(tag);
    out = Unary<T>(*x, [](T v) { return Op()(v); });
    return Status::Ok();
  }));
  return std::vector<Tensor>{std::move(out)};
}

struct NegOp {
  template <typename T>
  T operator()(T v) const {
    return Wrapping(T(0), v, [](auto a, auto b) { return a - b; });
  }
};
struct AbsOp {
  template <typename T>
  T operator()(T v) const {
    if constexpr (std::is_unsigned_v<T>) {
      return v;
    } else {
      return v < T(0) ? NegOp()(v) : v;
    }
  }
};
struct ReluOp {
  template <typename T>
  T operator()(T v) const {
    return v < T(0) ? T(0) : v;  // NaN stays NaN, as numpy.maximum(x, 0) gives
  }
};

Outputs LeakyRelu(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(float alpha, ctx.Float("alpha", 0.01f));
  Tensor out;
  MP_RETURN_IF_ERROR(DispatchFloat(x->dtype, "LeakyRelu", [&](auto tag) {
    using T = decltype(tag);
    out = Unary<T>(*x, [alpha](T v) { return v >= T(0) ? v : static_cast<T>(alpha * v); });
    return Status::Ok();
  }));
  return std::vector<Tensor>{std::move(out)};
}

// Gelu (opset 20): approximate "none" is x * Phi(x); "tanh" is the tanh approximation.
Outputs Gelu(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(std::string approximate, ctx.String("approximate", "none"));
  if (approximate != "none" && approximate != "tanh") {
    return ctx.NotSupported("Gelu approximate \"" + approximate + "\" (none and tanh are)");
  }
  const bool use_tanh = approximate == "tanh";
  Tensor out;
  MP_RETURN_IF_ERROR(DispatchFloat(x->dtype, "Gelu", [&](auto tag) {
    using T = decltype(tag);
    out = Unary<T>(*x, [use_tanh](T tv) {
      double v = tv;
      if (use_tanh) {
        const double k = std::sqrt(2.0 / M_PI);
        return static_cast<T>(0.5 * v * (1.0 + std::tanh(k * (v + 0.044715 * v * v * v))));
      }
      return static_cast<T>(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))));
    });
    return Status::Ok();
  }));
  return std::vector<Tensor>{std::move(out)};
}

// Clip: min/max are float attributes before opset 11, optional scalar inputs of the input's
// type from 11 on. min is applied first, so min > max gives max everywhere (as numpy.clip).
Outputs Clip(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  Tensor out;
  MP_RETURN_IF_ERROR(DispatchArith(x->dtype, "Clip", [&](auto tag) -> Status {
    using T = decltype(tag);
    T lo = std::numeric_limits<T>::lowest();
    T hi = std::numeric_limits<T>::max();
    if (ctx.opset() < 11) {
      MP_ASSIGN_OR_RETURN(float min, ctx.Float("min", -std::numeric_limits<float>::max()));
      MP_ASSIGN_OR_RETURN(float max, ctx.Float("max", std::numeric_limits<float>::max()));
      lo = FromDouble<T>(min);
      hi = FromDouble<T>(max);
    } else {
      for (size_t i : {1, 2}) {
        if (!ctx.has_input(i)) continue;
        const Tensor& bound = *ctx.input(i).value();
        if (bound.dtype != x->dtype || bound.NumElements() != 1) {
          return ctx.Invalid(std::string(i == 1 ? "min" : "max") + " must be a scalar of the " +
                             "input's type " + std::string(DTypeName(x->dtype)) + ", got " +
                             Describe(bound));
        }
        (i == 1 ? lo : hi) = bound.data<T>()[0];
      }
    }
    out = Unary<T>(*x, [lo, hi](T v) {
      if (v < lo) v = lo;
      if (v > hi) v = hi;
      return v;
    });
    return Status::Ok();
  }));
  return std::vector<Tensor>{std::move(out)};
}

// Where(condition, X, Y): broadcast over all three; elements are copied as bytes, so any type.
Outputs Where(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* c, ctx.input(0));
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(1));
  MP_ASSIGN_OR_RETURN(const Tensor* y, ctx.input(2));
  if (c->dtype != DType::kBool) return ctx.Invalid("condition must be bool, got " + Describe(*c));
  MP_RETURN_IF_ERROR(SameType(ctx, *x, *y));
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> shape, BroadcastShapes(c->shape, x->shape));
  MP_ASSIGN_OR_RETURN(shape, BroadcastShapes(shape, y->shape));
  MP_RETURN_IF_ERROR(CheckedNumElements(shape));
  Tensor out = Tensor::Zeros(x->dtype, shape);
  const size_t size = ElementSize(x->dtype);
  std::array<std::vector<int64_t>, 3> strides = {BroadcastStrides(c->shape, shape),
                                                 BroadcastStrides(x->shape, shape),
                                                 BroadcastStrides(y->shape, shape)};
  ForEachBroadcast<3>(shape, strides, [&](int64_t i, const std::array<int64_t, 3>& off) {
    const uint8_t* src = c->data<uint8_t>()[off[0]] != 0 ? x->bytes.data() + off[1] * size
                                                         : y->bytes.data() + off[2] * size;
    CopyBytes(out.bytes.data() + i * size, src, size);
  });
  return std::vector<Tensor>{std::move(out)};
}

bool IsIntegerOrBool(DType d) {
  DTypeKind k = Traits(d).kind;
  return k == DTypeKind::kBool || k == DTypeKind::kSigned || k == DTypeKind::kUnsigned;
}

// Writes `v` into element i of `out` (any plain non-complex dtype). Float -> integer truncates
// toward zero, as C and numpy's astype do; integers narrow by wrapping.
template <typename V>
void Store(Tensor& out, int64_t i, V v) {
  uint8_t* dst = out.bytes.data() + i * ElementSize(out.dtype);
  auto put = [dst](auto value) { CopyBytes(dst, &value, sizeof(value)); };
  auto as_int = [](V x) -> int64_t {
    if constexpr (std::is_floating_point_v<V>) {
      if (!std::isfinite(x) || std::fabs(x) >= 9.2e18) return std::numeric_limits<int64_t>::min();
    }
    return static_cast<int64_t>(x);
  };
  switch (out.dtype) {
    case DType::kF32:
      return put(static_cast<float>(v));
    case DType::kF64:
      return put(static_cast<double>(v));
    case DType::kF16:
      return put(F64ToF16(static_cast<double>(v)));
    case DType::kBF16:
      return put(F64ToBF16(static_cast<double>(v)));
    case DType::kBool:
      return put(static_cast<uint8_t>(v != V(0) ? 1 : 0));
    case DType::kU64:
      if constexpr (std::is_floating_point_v<V>) {
        if (v >= 9.2e18 && v < 1.8e19) return put(static_cast<uint64_t>(v));
      }
      return put(static_cast<uint64_t>(as_int(v)));
    default: {  // narrower integers: the low bytes of the int64 (two's complement wrap)
      int64_t w = as_int(v);
      CopyBytes(dst, &w, ElementSize(out.dtype));
      return;
    }
  }
}

// Cast: between the plain dtypes modelport has (no strings, no complex; float8 only as a
// source). Integer sources go
// through int64 so large values keep every bit; float sources through double.
Outputs Cast(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  if (!ctx.has_attribute("to")) return ctx.Invalid("Cast needs the 'to' attribute");
  MP_ASSIGN_OR_RETURN(int64_t to_code, ctx.Int("to", 0));
  std::optional<DType> to = DTypeFromOnnx(to_code);
  if (!to || *to == DType::kC64) {
    return ctx.NotSupported("Cast to ONNX data type " + std::to_string(to_code) +
                            " (strings and complex numbers are not computed in)");
  }
  if (*to == DType::kF8E4M3 || *to == DType::kF8E5M2) {
    // Cast-19's saturate attribute decides infinities and overflow per float8 type; the
    // evaluator does not implement those rules, so it does not guess.
    return ctx.NotSupported("Cast to float8 (" + std::string(DTypeName(*to)) + ")");
  }
  if (x->dtype == DType::kC64 || IsQuantized(x->dtype)) {
    return ctx.NotSupported("Cast from " + std::string(DTypeName(x->dtype)));
  }
  Tensor out = Tensor::Zeros(*to, x->shape);
  const bool integer_source = IsIntegerOrBool(x->dtype) && x->dtype != DType::kU64;
  for (int64_t i = 0, n = x->NumElements(); i < n; ++i) {
    if (x->dtype == DType::kU64) {
      uint64_t v;
      CopyBytes(&v, x->bytes.data() + i * 8, 8);
      if (IsFloat(*to)) {
        Store(out, i, static_cast<double>(v));
      } else {
        Store(out, i, static_cast<int64_t>(v));
      }
    } else if (integer_source) {
      Store(out, i, GetAsInt64(*x, i));
    } else {
      Store(out, i, GetAsDouble(*x, i));
    }
  }
  return std::vector<Tensor>{std::move(out)};
}

Outputs Identity(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  return std::vector<Tensor>{*x};
}

// Dropout in inference is the identity; the optional mask output is all true. Training mode
// (opset 12+ input 2) with a non-zero ratio draws random numbers, which a reference cannot
// reproduce.
Outputs Dropout(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  if (ctx.opset() >= 12 && ctx.has_input(2)) {
    const Tensor& training = *ctx.input(2).value();
    if (training.NumElements() != 1) return ctx.Invalid("training_mode must be a scalar");
    double ratio = 0.5;
    if (ctx.has_input(1)) {
      const Tensor& r = *ctx.input(1).value();
      if (r.NumElements() != 1) return ctx.Invalid("ratio must be a scalar");
      ratio = GetAsDouble(r, 0);
    }
    if (GetAsInt64(training, 0) != 0 && ratio != 0) {
      return ctx.NotSupported("Dropout in training mode with ratio " + std::to_string(ratio) +
                              " is random");
    }
  }
  if (ctx.opset() < 7) {
    MP_ASSIGN_OR_RETURN(int64_t is_test, ctx.Int("is_test", 0));
    if (is_test == 0) return ctx.NotSupported("Dropout with is_test=0 (training) is random");
  }
  std::vector<Tensor> outs{*x};
  if (ctx.output_count() > 1) {
    Tensor mask = Tensor::Zeros(DType::kBool, x->shape);
    std::fill(mask.bytes.begin(), mask.bytes.end(), 1);
    outs.push_back(std::move(mask));
  }
  return outs;
}

}  // namespace

void AddElementwiseKernels(KernelTable& table) {
  table["Add"] = ArithKernel<AddOp>;
  table["Sub"] = ArithKernel<SubOp>;
  table["Mul"] = ArithKernel<MulOp>;
  table["Div"] = ArithKernel<DivOp>;
  table["Pow"] = Pow;
  table["Sqrt"] = FloatUnaryKernel<SqrtD>;
  table["Exp"] = FloatUnaryKernel<ExpD>;
  table["Log"] = FloatUnaryKernel<LogD>;
  table["Erf"] = FloatUnaryKernel<ErfD>;
  table["Tanh"] = FloatUnaryKernel<TanhD>;
  table["Sigmoid"] = FloatUnaryKernel<SigmoidD>;
  table["Neg"] = NumericUnaryKernel<NegOp>;
  table["Abs"] = NumericUnaryKernel<AbsOp>;
  table["Relu"] = NumericUnaryKernel<ReluOp>;
  table["LeakyRelu"] = LeakyRelu;
  table["Gelu"] = Gelu;
  table["Clip"] = Clip;
  table["Where"] = Where;
  table["Equal"] = CompareKernel<std::equal_to<>>;
  table["Less"] = CompareKernel<std::less<>>;
  table["Greater"] = CompareKernel<std::greater<>>;
  table["Cast"] = Cast;
  table["Identity"] = Identity;
  table["Dropout"] = Dropout;
}

}  // namespace mp::eval
