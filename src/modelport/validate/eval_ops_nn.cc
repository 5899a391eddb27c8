// Neural-network kernels of the ONNX reference evaluator: MatMul Gemm Conv ConvTranspose MaxPool
// AveragePool GlobalAveragePool BatchNormalization LayerNormalization Softmax LogSoftmax
// ReduceMean ReduceSum Pad, as the ONNX operator spec (docs/Operators.md) defines them for every
// opset version. Sums accumulate in double (int64 for integer element types).
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "modelport/validate/eval_ops.h"
#include "modelport/validate/eval_tensor.h"

namespace mp::eval {
namespace {

template <typename T>
using AccumulatorOf = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

// Calls f(T{}) for f32, f64, i64 and i32 (the types MatMul and ReduceSum compute in here).
template <typename F>
Status DispatchArithmetic(DType dtype, const std::string& what, F&& f) {
  switch (dtype) {
    case DType::kI64:
      return f(int64_t{});
    case DType::kI32:
      return f(int32_t{});
    default:
      return DispatchFloat(dtype, what, std::forward<F>(f));
  }
}

// ---------------------------------------------------------------------------------------------
// MatMul and Gemm

// numpy.matmul: a 1-D first operand is a row vector, a 1-D second operand a column vector (the
// added dimension is dropped from the result); leading dimensions broadcast.
Result<std::vector<Tensor>> MatMulKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* a, ctx.input(0));
  MP_ASSIGN_OR_RETURN(const Tensor* b, ctx.input(1));
  if (a->dtype != b->dtype) {
    return ctx.Invalid("inputs have different element types: " + Describe(*a) + " and " +
                       Describe(*b));
  }
  if (a->rank() == 0 || b->rank() == 0) {
    return ctx.Invalid("inputs must have rank >= 1, got " + Describe(*a) + " and " + Describe(*b));
  }
  std::vector<int64_t> as = a->shape, bs = b->shape;
  const bool a_vec = as.size() == 1, b_vec = bs.size() == 1;
  if (a_vec) as.insert(as.begin(), 1);
  if (b_vec) bs.push_back(1);
  const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
  if (bs[bs.size() - 2] != k) {
    return ctx.Invalid("inner dimensions differ: " + Describe(*a) + " x " + Describe(*b));
  }
  const std::vector<int64_t> a_batch(as.begin(), as.end() - 2), b_batch(bs.begin(), bs.end() - 2);
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> batch, BroadcastShapes(a_batch, b_batch));
  std::vector<int64_t> out_shape = batch;
  if (!a_vec) out_shape.push_back(m);
  if (!b_vec) out_shape.push_back(n);
  MP_RETURN_IF_ERROR(CheckedNumElements(out_shape));
  Tensor out = Tensor::Zeros(a->dtype, out_shape);
  const std::vector<int64_t> a_strides = BroadcastStrides(a_batch, batch);
  const std::vector<int64_t> b_strides = BroadcastStrides(b_batch, batch);
  const int64_t batches = Product(batch, 0, batch.size());
  MP_RETURN_IF_ERROR(DispatchArithmetic(a->dtype, "MatMul", [&](auto tag) -> Status {
    using T = decltype(tag);
    using Acc = AccumulatorOf<T>;
    const T* pa = a->data<T>();
    const T* pb = b->data<T>();
    T* po = out.data<T>();
    for (int64_t bi = 0; bi < batches; ++bi) {
      int64_t a_off = 0, b_off = 0, rest = bi;
      for (size_t d = batch.size(); d-- > 0;) {
        const int64_t idx = rest % batch[d];
        rest /= batch[d];
        a_off += idx * a_strides[d];
        b_off += idx * b_strides[d];
      }
      const T* ma = pa + a_off * m * k;
      const T* mb = pb + b_off * k * n;
      T* mo = po + bi * m * n;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          Acc sum = 0;
          for (int64_t t = 0; t < k; ++t) sum += Acc(ma[i * k + t]) * Acc(mb[t * n + j]);
          mo[i * n + j] = static_cast<T>(sum);
        }
      }
    }
    return Status::Ok();
  }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  return outs;
}

// Y = alpha * A' * B' + beta * C, with C unidirectionally broadcast to (M, N).
Result<std::vector<Tensor>> GemmKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* a, ctx.input(0));
  MP_ASSIGN_OR_RETURN(const Tensor* b, ctx.input(1));
  MP_ASSIGN_OR_RETURN(float alpha, ctx.Float("alpha", 1.0f));
  MP_ASSIGN_OR_RETURN(float beta, ctx.Float("beta", 1.0f));
  MP_ASSIGN_OR_RETURN(int64_t trans_a, ctx.Int("transA", 0));
  MP_ASSIGN_OR_RETURN(int64_t trans_b, ctx.Int("transB", 0));
  if (a->rank() != 2 || b->rank() != 2) {
    return ctx.Invalid("A and B must be 2-D, got " + Describe(*a) + " and " + Describe(*b));
  }
  if (a->dtype != b->dtype) {
    return ctx.Invalid("inputs have different element types: " + Describe(*a) + " and " +
                       Describe(*b));
  }
  const int64_t m = trans_a ? a->shape[1] : a->shape[0];
  const int64_t k = trans_a ? a->shape[0] : a->shape[1];
  const int64_t kb = trans_b ? b->shape[1] : b->shape[0];
  const int64_t n = trans_b ? b->shape[0] : b->shape[1];
  if (k != kb) {
    return ctx.Invalid("inner dimensions differ: A " + Describe(*a) +
                       " (transA=" + std::to_string(trans_a) + "), B " + Describe(*b) +
                       " (transB=" + std::to_string(trans_b) + ")");
  }
  const Tensor* c = ctx.has_input(2) ? *ctx.input(2) : nullptr;
  std::vector<int64_t> c_strides;
  if (c != nullptr) {
    if (c->dtype != a->dtype) {
      return ctx.Invalid("C " + Describe(*c) + " has another element type than A " + Describe(*a));
    }
    auto bshape = BroadcastShapes(c->shape, {m, n});
    if (!bshape.ok() || *bshape != std::vector<int64_t>{m, n}) {
      return ctx.Invalid("C " + Describe(*c) + " does not broadcast to the output [" +
                         std::to_string(m) + "," + std::to_string(n) + "]");
    }
    c_strides = BroadcastStrides(c->shape, {m, n});
  }
  Tensor out = Tensor::Zeros(a->dtype, {m, n});
  MP_RETURN_IF_ERROR(DispatchFloat(a->dtype, "Gemm", [&](auto tag) -> Status {
    using T = decltype(tag);
    const T* pa = a->data<T>();
    const T* pb = b->data<T>();
    T* po = out.data<T>();
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0;
        for (int64_t t = 0; t < k; ++t) {
          const double av = trans_a ? pa[t * m + i] : pa[i * k + t];
          const double bv = trans_b ? pb[j * k + t] : pb[t * n + j];
          sum += av * bv;
        }
        double y = double{alpha} * sum;
        if (c != nullptr)
          y += double{beta} * double(c->data<T>()[i * c_strides[0] + j * c_strides[1]]);
        po[i * n + j] = static_cast<T>(y);
      }
    }
    return Status::Ok();
  }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  return outs;
}

// ---------------------------------------------------------------------------------------------
// Sliding-window geometry shared by Conv, ConvTranspose and the pools. Up to 3 spatial
// dimensions; fewer are padded in front with size-1 dimensions (kernel 1, stride 1, no pad), so
// every kernel loops over (d, h, w).

constexpr int kMaxSpatial = 3;

struct Window {
  int spatial = 0;  // number of real spatial dimensions
  // Indexed [0, 3): the real dimensions occupy the last `spatial` slots.
  int64_t in[kMaxSpatial] = {1, 1, 1};
  int64_t kernel[kMaxSpatial] = {1, 1, 1};
  int64_t stride[kMaxSpatial] = {1, 1, 1};
  int64_t dilation[kMaxSpatial] = {1, 1, 1};
  int64_t pad_begin[kMaxSpatial] = {0, 0, 0};
  int64_t pad_end[kMaxSpatial] = {0, 0, 0};
  int64_t out[kMaxSpatial] = {1, 1, 1};
  std::string auto_pad = "NOTSET";

  int64_t InSize() const { return in[0] * in[1] * in[2]; }
  int64_t OutSize() const { return out[0] * out[1] * out[2]; }
  std::vector<int64_t> OutSpatial() const {
    return std::vector<int64_t>(out + kMaxSpatial - spatial, out + kMaxSpatial);
  }
};

// Reads kernel_shape (or takes `kernel_from_weights`), strides, dilations, pads and auto_pad,
// checking their lengths and values. `in_spatial` are the input's spatial dimensions.
Result<Window> ReadWindow(const OpContext& ctx, const std::vector<int64_t>& in_spatial,
                          const std::vector<int64_t>* kernel_from_weights) {
  Window w;
  const size_t n = in_spatial.size();
  if (n == 0 || n > kMaxSpatial) {
    return ctx.NotSupported(std::to_string(n) +
                            " spatial dimensions (the evaluator implements 1 to 3)");
  }
  w.spatial = static_cast<int>(n);
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> kernel, ctx.Ints("kernel_shape"));
  if (kernel_from_weights != nullptr) {
    if (!kernel.empty() && kernel != *kernel_from_weights) {
      return ctx.Invalid("kernel_shape " + ShapeString(kernel) +
                         " disagrees with the weights' spatial shape " +
                         ShapeString(*kernel_from_weights));
    }
    kernel = *kernel_from_weights;
  } else if (kernel.empty()) {
    return ctx.Invalid("the kernel_shape attribute is required");
  }
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> strides,
                      ctx.Ints("strides", std::vector<int64_t>(n, 1)));
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> dilations,
                      ctx.Ints("dilations", std::vector<int64_t>(n, 1)));
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> pads, ctx.Ints("pads", std::vector<int64_t>(2 * n, 0)));
  MP_ASSIGN_OR_RETURN(w.auto_pad, ctx.String("auto_pad", "NOTSET"));
  if (kernel.size() != n || strides.size() != n || dilations.size() != n || pads.size() != 2 * n) {
    return ctx.Invalid("kernel_shape " + ShapeString(kernel) + ", strides " + ShapeString(strides) +
                       ", dilations " + ShapeString(dilations) + " and pads " + ShapeString(pads) +
                       " must have " + std::to_string(n) + " (pads " + std::to_string(2 * n) +
                       ") entries for an input with " + std::to_string(n) + " spatial dimensions");
  }
  if (w.auto_pad != "NOTSET" && w.auto_pad != "SAME_UPPER" && w.auto_pad != "SAME_LOWER" &&
      w.auto_pad != "VALID") {
    return ctx.Invalid("auto_pad '" + w.auto_pad +
                       "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
  }
  const size_t off = kMaxSpatial - n;
  for (size_t i = 0; i < n; ++i) {
    if (kernel[i] < 1 || strides[i] < 1 || dilations[i] < 1 || pads[i] < 0 || pads[i + n] < 0) {
      return ctx.Invalid("kernel_shape " + ShapeString(kernel) + ", strides " +
                         ShapeString(strides) + " and dilations " + ShapeString(dilations) +
                         " must be positive and pads " + ShapeString(pads) + " non-negative");
    }
    w.in[off + i] = in_spatial[i];
    w.kernel[off + i] = kernel[i];
    w.stride[off + i] = strides[i];
    w.dilation[off + i] = dilations[i];
    if (w.auto_pad == "NOTSET") {
      w.pad_begin[off + i] = pads[i];
      w.pad_end[off + i] = pads[i + n];
    }
  }
  return w;
}

// Output size and pads of a forward window (Conv and the pools). SAME_*: output
// ceil(in / stride), the total padding split evenly with the odd one at the end (UPPER) or the
// beginning (LOWER); VALID: no padding. ceil_mode rounds the output size up, dropping a last
// window that would start in the end padding (as onnxruntime and PyTorch do).
Status ForwardGeometry(const OpContext& ctx, bool ceil_mode, Window& w) {
  for (int i = kMaxSpatial - w.spatial; i < kMaxSpatial; ++i) {
    const int64_t span = w.dilation[i] * (w.kernel[i] - 1) + 1;
    if (w.auto_pad == "SAME_UPPER" || w.auto_pad == "SAME_LOWER") {
      w.out[i] = (w.in[i] + w.stride[i] - 1) / w.stride[i];
      const int64_t total = std::max<int64_t>(0, (w.out[i] - 1) * w.stride[i] + span - w.in[i]);
      w.pad_begin[i] = w.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      w.pad_end[i] = total - w.pad_begin[i];
      continue;
    }
    const int64_t padded = w.in[i] + w.pad_begin[i] + w.pad_end[i];
    if (padded < span) {
      return ctx.Invalid("the window (kernel " + std::to_string(w.kernel[i]) + ", dilation " +
                         std::to_string(w.dilation[i]) + ") is larger than the padded input (" +
                         std::to_string(padded) + ")");
    }
    if (ceil_mode) {
      w.out[i] = (padded - span + w.stride[i] - 1) / w.stride[i] + 1;
      if ((w.out[i] - 1) * w.stride[i] >= w.in[i] + w.pad_begin[i]) --w.out[i];
    } else {
      w.out[i] = (padded - span) / w.stride[i] + 1;
    }
  }
  return Status::Ok();
}

// N, C and the spatial dimensions of a rank >= 3 input.
Status CheckBatchChannelInput(const OpContext& ctx, const Tensor& x) {
  if (x.rank() < 3) {
    return ctx.Invalid("input X " + Describe(x) +
                       " must have rank >= 3 (N, C and at least one spatial dimension)");
  }
  return Status::Ok();
}

std::vector<int64_t> SpatialDims(const Tensor& x) {
  return std::vector<int64_t>(x.shape.begin() + 2, x.shape.end());
}

std::vector<int64_t> OutputShape(int64_t n, int64_t c, const Window& w) {
  std::vector<int64_t> shape = {n, c};
  for (int64_t d : w.OutSpatial()) shape.push_back(d);
  return shape;
}

// ---------------------------------------------------------------------------------------------
// Conv and ConvTranspose

struct ConvInputs {
  const Tensor* x = nullptr;
  const Tensor* w = nullptr;
  const Tensor* b = nullptr;
  int64_t group = 1;
};

Result<ConvInputs> ReadConvInputs(const OpContext& ctx) {
  ConvInputs in;
  MP_ASSIGN_OR_RETURN(in.x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(in.w, ctx.input(1));
  if (ctx.has_input(2)) {
    MP_ASSIGN_OR_RETURN(in.b, ctx.input(2));
  }
  MP_ASSIGN_OR_RETURN(in.group, ctx.Int("group", 1));
  MP_RETURN_IF_ERROR(CheckBatchChannelInput(ctx, *in.x));
  if (in.w->rank() != in.x->rank()) {
    return ctx.Invalid("weights W " + Describe(*in.w) + " must have the rank of X " +
                       Describe(*in.x));
  }
  if (in.w->dtype != in.x->dtype || (in.b != nullptr && in.b->dtype != in.x->dtype)) {
    return ctx.Invalid("X, W and B must share an element type");
  }
  if (in.group < 1) return ctx.Invalid("group " + std::to_string(in.group) + " must be >= 1");
  return in;
}

Result<std::vector<Tensor>> ConvKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(ConvInputs in, ReadConvInputs(ctx));
  const Tensor& x = *in.x;
  const Tensor& wt = *in.w;
  const int64_t batch = x.shape[0], channels = x.shape[1], m = wt.shape[0];
  const int64_t group = in.group;
  if (channels % group != 0 || m % group != 0 || wt.shape[1] * group != channels) {
    return ctx.Invalid("X " + Describe(x) + " and W " + Describe(wt) + " do not agree with group " +
                       std::to_string(group) + " (W must be [M, C/group, k...], M % group == 0)");
  }
  if (in.b != nullptr && (in.b->rank() != 1 || in.b->shape[0] != m)) {
    return ctx.Invalid("bias B " + Describe(*in.b) + " must be 1-D with " + std::to_string(m) +
                       " elements");
  }
  const std::vector<int64_t> kernel = SpatialDims(wt);
  MP_ASSIGN_OR_RETURN(Window w, ReadWindow(ctx, SpatialDims(x), &kernel));
  MP_RETURN_IF_ERROR(ForwardGeometry(ctx, false, w));
  const std::vector<int64_t> out_shape = OutputShape(batch, m, w);
  MP_RETURN_IF_ERROR(CheckedNumElements(out_shape));
  Tensor out = Tensor::Zeros(x.dtype, out_shape);
  const int64_t cg = channels / group, mg = m / group;
  const int64_t ksize = w.kernel[0] * w.kernel[1] * w.kernel[2];
  MP_RETURN_IF_ERROR(DispatchFloat(x.dtype, "Conv", [&](auto tag) -> Status {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pw = wt.data<T>();
    T* po = out.data<T>();
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t oc = 0; oc < m; ++oc) {
        const int64_t g = oc / mg;
        const double bias = in.b != nullptr ? double(in.b->data<T>()[oc]) : 0.0;
        T* dst = po + (n * m + oc) * w.OutSize();
        for (int64_t od = 0; od < w.out[0]; ++od) {
          for (int64_t oh = 0; oh < w.out[1]; ++oh) {
            for (int64_t ow = 0; ow < w.out[2]; ++ow) {
              double sum = bias;
              for (int64_t ic = 0; ic < cg; ++ic) {
                const T* src = px + (n * channels + g * cg + ic) * w.InSize();
                const T* ker = pw + (oc * cg + ic) * ksize;
                for (int64_t kd = 0; kd < w.kernel[0]; ++kd) {
                  const int64_t id = od * w.stride[0] - w.pad_begin[0] + kd * w.dilation[0];
                  if (id < 0 || id >= w.in[0]) continue;
                  for (int64_t kh = 0; kh < w.kernel[1]; ++kh) {
                    const int64_t ih = oh * w.stride[1] - w.pad_begin[1] + kh * w.dilation[1];
                    if (ih < 0 || ih >= w.in[1]) continue;
                    for (int64_t kw = 0; kw < w.kernel[2]; ++kw) {
                      const int64_t iw = ow * w.stride[2] - w.pad_begin[2] + kw * w.dilation[2];
                      if (iw < 0 || iw >= w.in[2]) continue;
                      sum += double(src[(id * w.in[1] + ih) * w.in[2] + iw]) *
                             double(ker[(kd * w.kernel[1] + kh) * w.kernel[2] + kw]);
                    }
                  }
                }
              }
              dst[(od * w.out[1] + oh) * w.out[2] + ow] = static_cast<T>(sum);
            }
          }
        }
      }
    }
    return Status::Ok();
  }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  return outs;
}

// ConvTranspose's output size and pads (Operators.md, ConvTranspose): without output_shape the
// output is stride * (in - 1) + output_padding + span - pads (SAME_*: in * stride, the total
// padding split with the odd one at the end for SAME_UPPER, at the beginning otherwise). With
// output_shape the pads follow from it; a negative total (output larger than the unpadded
// result) leaves the extra positions at the end holding only the bias, as onnxruntime does.
Status TransposeGeometry(const OpContext& ctx, Window& w) {
  const int n = w.spatial;
  const int off = kMaxSpatial - n;
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> output_padding,
                      ctx.Ints("output_padding", std::vector<int64_t>(n, 0)));
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> output_shape, ctx.Ints("output_shape"));
  if (output_padding.size() != static_cast<size_t>(n)) {
    return ctx.Invalid("output_padding " + ShapeString(output_padding) + " must have " +
                       std::to_string(n) + " entries");
  }
  if (output_shape.size() == static_cast<size_t>(n) + 2) {
    output_shape.erase(output_shape.begin(), output_shape.begin() + 2);  // N and C given too
  }
  if (!output_shape.empty() && output_shape.size() != static_cast<size_t>(n)) {
    return ctx.Invalid("output_shape " + ShapeString(output_shape) + " must have " +
                       std::to_string(n) + " entries");
  }
  for (int i = 0; i < n; ++i) {
    const int s = off + i;
    if (output_padding[i] < 0 || output_padding[i] >= std::max(w.stride[s], w.dilation[s])) {
      return ctx.Invalid("output_padding " + ShapeString(output_padding) +
                         " must be non-negative and smaller than the stride or dilation");
    }
    const int64_t span = w.dilation[s] * (w.kernel[s] - 1) + 1;
    const int64_t full = w.stride[s] * (w.in[s] - 1) + output_padding[i] + span;
    const bool same = w.auto_pad == "SAME_UPPER" || w.auto_pad == "SAME_LOWER";
    if (!output_shape.empty() || same) {
      const int64_t target = !output_shape.empty() ? output_shape[i] : w.in[s] * w.stride[s];
      if (target < 1) {
        return ctx.Invalid("output_shape " + ShapeString(output_shape) + " must be positive");
      }
      const int64_t total = full - target;
      if (total >= 0) {
        w.pad_begin[s] = w.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      } else {
        w.pad_begin[s] = 0;
      }
      w.pad_end[s] = total - w.pad_begin[s];
      w.out[s] = target;
    } else {
      if (w.auto_pad == "VALID") w.pad_begin[s] = w.pad_end[s] = 0;
      w.out[s] = full - w.pad_begin[s] - w.pad_end[s];
      if (w.out[s] < 1) {
        return ctx.Invalid("pads are larger than the output (" + std::to_string(full) + ")");
      }
    }
  }
  return Status::Ok();
}

Result<std::vector<Tensor>> ConvTransposeKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(ConvInputs in, ReadConvInputs(ctx));
  const Tensor& x = *in.x;
  const Tensor& wt = *in.w;
  const int64_t batch = x.shape[0], channels = x.shape[1], group = in.group;
  if (wt.shape[0] != channels || channels % group != 0) {
    return ctx.Invalid("X " + Describe(x) + " and W " + Describe(wt) + " do not agree with group " +
                       std::to_string(group) + " (W must be [C, M/group, k...], C % group == 0)");
  }
  const int64_t mg = wt.shape[1], m = mg * group, cg = channels / group;
  if (in.b != nullptr && (in.b->rank() != 1 || in.b->shape[0] != m)) {
    return ctx.Invalid("bias B " + Describe(*in.b) + " must be 1-D with " + std::to_string(m) +
                       " elements");
  }
  const std::vector<int64_t> kernel = SpatialDims(wt);
  MP_ASSIGN_OR_RETURN(Window w, ReadWindow(ctx, SpatialDims(x), &kernel));
  MP_RETURN_IF_ERROR(TransposeGeometry(ctx, w));
  const std::vector<int64_t> out_shape = OutputShape(batch, m, w);
  MP_RETURN_IF_ERROR(CheckedNumElements(out_shape));
  Tensor out = Tensor::Zeros(x.dtype, out_shape);
  const int64_t ksize = w.kernel[0] * w.kernel[1] * w.kernel[2];
  MP_RETURN_IF_ERROR(DispatchFloat(x.dtype, "ConvTranspose", [&](auto tag) -> Status {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pw = wt.data<T>();
    std::vector<double> acc(static_cast<size_t>(w.OutSize()));
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t oc = 0; oc < m; ++oc) {
        const int64_t g = oc / mg, oc_in_group = oc % mg;
        std::fill(acc.begin(), acc.end(), in.b != nullptr ? double(in.b->data<T>()[oc]) : 0.0);
        // Scatter: input position i contributes to output i * stride - pad_begin + k * dilation.
        for (int64_t ic = 0; ic < cg; ++ic) {
          const int64_t c = g * cg + ic;
          const T* src = px + (n * channels + c) * w.InSize();
          const T* ker = pw + (c * mg + oc_in_group) * ksize;
          for (int64_t id = 0; id < w.in[0]; ++id) {
            for (int64_t ih = 0; ih < w.in[1]; ++ih) {
              for (int64_t iw = 0; iw < w.in[2]; ++iw) {
                const double v = double(src[(id * w.in[1] + ih) * w.in[2] + iw]);
                for (int64_t kd = 0; kd < w.kernel[0]; ++kd) {
                  const int64_t od = id * w.stride[0] - w.pad_begin[0] + kd * w.dilation[0];
                  if (od < 0 || od >= w.out[0]) continue;
                  for (int64_t kh = 0; kh < w.kernel[1]; ++kh) {
                    const int64_t oh = ih * w.stride[1] - w.pad_begin[1] + kh * w.dilation[1];
                    if (oh < 0 || oh >= w.out[1]) continue;
                    for (int64_t kw = 0; kw < w.kernel[2]; ++kw) {
                      const int64_t ow = iw * w.stride[2] - w.pad_begin[2] + kw * w.dilation[2];
                      if (ow < 0 || ow >= w.out[2]) continue;
                      acc[(od * w.out[1] + oh) * w.out[2] + ow] +=
                          v * double(ker[(kd * w.kernel[1] + kh) * w.kernel[2] + kw]);
                    }
                  }
                }
              }
            }
          }
        }
        T* dst = out.data<T>() + (n * m + oc) * w.OutSize();
        for (size_t i = 0; i < acc.size(); ++i) dst[i] = static_cast<T>(acc[i]);
      }
    }
    return Status::Ok();
  }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  return outs;
}

// ---------------------------------------------------------------------------------------------
// Pools

// Calls f(T{}) for the element types MaxPool takes: floats and 8/32/64-bit integers.
template <typename F>
Status DispatchMaxPool(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kU8:
      return f(uint8_t{});
    case DType::kI8:
      return f(int8_t{});
    case DType::kI32:
      return f(int32_t{});
    case DType::kI64:
      return f(int64_t{});
    default:
      return DispatchFloat(dtype, "MaxPool", std::forward<F>(f));
  }
}

Result<std::vector<Tensor>> MaxPoolKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_RETURN_IF_ERROR(CheckBatchChannelInput(ctx, *x));
  MP_ASSIGN_OR_RETURN(int64_t ceil_mode, ctx.Int("ceil_mode", 0));
  MP_ASSIGN_OR_RETURN(int64_t storage_order, ctx.Int("storage_order", 0));
  if (storage_order != 0 && storage_order != 1) {
    return ctx.Invalid("storage_order " + std::to_string(storage_order) + " is not 0 or 1");
  }
  MP_ASSIGN_OR_RETURN(Window w, ReadWindow(ctx, SpatialDims(*x), nullptr));
  MP_RETURN_IF_ERROR(ForwardGeometry(ctx, ceil_mode != 0, w));
  const int64_t batch = x->shape[0], channels = x->shape[1];
  const std::vector<int64_t> out_shape = OutputShape(batch, channels, w);
  MP_RETURN_IF_ERROR(CheckedNumElements(out_shape));
  Tensor out = Tensor::Zeros(x->dtype, out_shape);
  const bool want_indices = ctx.output_count() > 1;
  Tensor indices = Tensor::Zeros(DType::kI64, want_indices ? out_shape : std::vector<int64_t>{0});
  MP_RETURN_IF_ERROR(DispatchMaxPool(x->dtype, [&](auto tag) -> Status {
    using T = decltype(tag);
    const T* px = x->data<T>();
    T* po = out.data<T>();
    int64_t* pi = indices.data<int64_t>();
    for (int64_t plane = 0; plane < batch * channels; ++plane) {
      const T* src = px + plane * w.InSize();
      int64_t o = plane * w.OutSize();
      for (int64_t od = 0; od < w.out[0]; ++od) {
        for (int64_t oh = 0; oh < w.out[1]; ++oh) {
          for (int64_t ow = 0; ow < w.out[2]; ++ow, ++o) {
            T best = std::numeric_limits<T>::lowest();
            int64_t best_at = -1, bd = 0, bh = 0, bw = 0;
            for (int64_t kd = 0; kd < w.kernel[0]; ++kd) {
              const int64_t id = od * w.stride[0] - w.pad_begin[0] + kd * w.dilation[0];
              if (id < 0 || id >= w.in[0]) continue;
              for (int64_t kh = 0; kh < w.kernel[1]; ++kh) {
                const int64_t ih = oh * w.stride[1] - w.pad_begin[1] + kh * w.dilation[1];
                if (ih < 0 || ih >= w.in[1]) continue;
                for (int64_t kw = 0; kw < w.kernel[2]; ++kw) {
                  const int64_t iw = ow * w.stride[2] - w.pad_begin[2] + kw * w.dilation[2];
                  if (iw < 0 || iw >= w.in[2]) continue;
                  const int64_t at = (id * w.in[1] + ih) * w.in[2] + iw;
                  if (best_at < 0 || src[at] > best) {
                    best = src[at];
                    best_at = at;
                    bd = id;
                    bh = ih;
                    bw = iw;
                  }
                }
              }
            }
            po[o] = best;
            if (want_indices) {
              // Indices into the flattened input (N and C included); storage_order 1 orders
              // the spatial dimensions column-major.
              const int64_t local =
                  storage_order == 0 ? best_at : bh + w.in[1] * (bw + w.in[2] * bd);
              pi[o] = best_at < 0 ? -1 : plane * w.InSize() + local;
            }
          }
        }
      }
    }
    return Status::Ok();
  }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  if (want_indices) outs.push_back(std::move(indices));
  return outs;
}

Result<std::vector<Tensor>> AveragePoolKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_RETURN_IF_ERROR(CheckBatchChannelInput(ctx, *x));
  MP_ASSIGN_OR_RETURN(int64_t ceil_mode, ctx.Int("ceil_mode", 0));
  MP_ASSIGN_OR_RETURN(int64_t count_include_pad, ctx.Int("count_include_pad", 0));
  MP_ASSIGN_OR_RETURN(Window w, ReadWindow(ctx, SpatialDims(*x), nullptr));
  MP_RETURN_IF_ERROR(ForwardGeometry(ctx, ceil_mode != 0, w));
  const int64_t batch = x->shape[0], channels = x->shape[1];
  const std::vector<int64_t> out_shape = OutputShape(batch, channels, w);
  MP_RETURN_IF_ERROR(CheckedNumElements(out_shape));
  Tensor out = Tensor::Zeros(x->dtype, out_shape);
  // With count_include_pad the divisor counts padded positions too, but not the part of a
  // ceil_mode window that hangs past the end padding.
  auto counted = [&](int s, int64_t pos) {
    return count_include_pad ? pos >= -w.pad_begin[s] && pos < w.in[s] + w.pad_end[s]
                             : pos >= 0 && pos < w.in[s];
  };
  MP_RETURN_IF_ERROR(DispatchFloat(x->dtype, "AveragePool", [&](auto tag) -> Status {
    using T = decltype(tag);
    const T* px = x->data<T>();
    T* po = out.data<T>();
    for (int64_t plane = 0; plane < batch * channels; ++plane) {
      const T* src = px + plane * w.InSize();
      int64_t o = plane * w.OutSize();
      for (int64_t od = 0; od < w.out[0]; ++od) {
        for (int64_t oh = 0; oh < w.out[1]; ++oh) {
          for (int64_t ow = 0; ow < w.out[2]; ++ow, ++o) {
            double sum = 0;
            int64_t count = 0;
            for (int64_t kd = 0; kd < w.kernel[0]; ++kd) {
              const int64_t id = od * w.stride[0] - w.pad_begin[0] + kd * w.dilation[0];
              if (!counted(0, id)) continue;
              for (int64_t kh = 0; kh < w.kernel[1]; ++kh) {
                const int64_t ih = oh * w.stride[1] - w.pad_begin[1] + kh * w.dilation[1];
                if (!counted(1, ih)) continue;
                for (int64_t kw = 0; kw < w.kernel[2]; ++kw) {
                  const int64_t iw = ow * w.stride[2] - w.pad_begin[2] + kw * w.dilation[2];
                  if (!counted(2, iw)) continue;
                  ++count;
                  if (id >= 0 && id < w.in[0] && ih >= 0 && ih < w.in[1] && iw >= 0 &&
                      iw < w.in[2]) {
                    sum += double(src[(id * w.in[1] + ih) * w.in[2] + iw]);
                  }
                }
              }
            }
            po[o] = static_cast<T>(count > 0 ? sum / double(count)
                                             : std::numeric_limits<double>::quiet_NaN());
          }
        }
      }
    }
    return Status::Ok();
  }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  return outs;
}

Result<std::vector<Tensor>> GlobalAveragePoolKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_RETURN_IF_ERROR(CheckBatchChannelInput(ctx, *x));
  const int64_t planes = x->shape[0] * x->shape[1];
  const int64_t size = Product(x->shape, 2, x->shape.size());
  std::vector<int64_t> out_shape(x->shape.size(), 1);
  out_shape[0] = x->shape[0];
  out_shape[1] = x->shape[1];
  Tensor out = Tensor::Zeros(x->dtype, out_shape);
  MP_RETURN_IF_ERROR(DispatchFloat(x->dtype, "GlobalAveragePool", [&](auto tag) -> Status {
    using T = decltype(tag);
    for (int64_t p = 0; p < planes; ++p) {
      double sum = 0;
      for (int64_t i = 0; i < size; ++i) sum += double(x->data<T>()[p * size + i]);
      out.data<T>()[p] = static_cast<T>(sum / double(size));
    }
    return Status::Ok();
  }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  return outs;
}

// ---------------------------------------------------------------------------------------------
// Normalization

// Y = (X - mean) / sqrt(var + epsilon) * scale + B per channel (dimension 1). In inference mode
// mean and var are the inputs. In training mode they are the batch's own statistics over every
// dimension but 1, the variance being the population one (the spec's ReduceVar; onnx's
// _batchnorm_training_mode uses numpy's var), and the running statistics are
// input * momentum + batch * (1 - momentum).
//
// Which mode: from opset 14 the training_mode attribute (outputs Y, running_mean, running_var);
// before it, output case #1 of the spec (Y, mean, var, saved_mean, saved_var: training) against
// case #2 (Y alone: inference), and before opset 7 also is_test (0, the default, is training).
// saved_var is refused: the spec leaves its content open ("used during training to speed up
// gradient computation"; implementations store the variance or its inverse square root).
Result<std::vector<Tensor>> BatchNormalizationKernel(const OpContext& ctx) {
  const size_t outputs = ctx.output_count();
  bool training = false;
  if (ctx.opset() >= 14) {
    MP_ASSIGN_OR_RETURN(int64_t training_mode, ctx.Int("training_mode", 0));
    if (training_mode != 0 && training_mode != 1) {
      return ctx.Invalid("training_mode " + std::to_string(training_mode) + " is not 0 or 1");
    }
    training = training_mode == 1;
    if (outputs > 3) {
      return ctx.Invalid(std::to_string(outputs) +
                         " outputs (from opset 14 there are at most 3: Y, running_mean, "
                         "running_var)");
    }
    if (!training && outputs > 1) {
      return ctx.Invalid("outputs running_mean and running_var exist only with training_mode=1");
    }
  } else {
    if (outputs > 5) {
      return ctx.Invalid(std::to_string(outputs) +
                         " outputs (before opset 14 there are at most 5: Y, mean, var, "
                         "saved_mean, saved_var)");
    }
    training = outputs > 1;
    if (ctx.opset() < 7) {
      MP_ASSIGN_OR_RETURN(int64_t is_test, ctx.Int("is_test", 0));
      if (is_test != 0 && training) {
        return ctx.Invalid("is_test=" + std::to_string(is_test) + " with " +
                           std::to_string(outputs) +
                           " outputs (the statistics outputs exist in training mode only)");
      }
      training = is_test == 0;
    }
    if (outputs == 5) {
      return ctx.NotSupported(
          "output saved_var (the spec does not define its content: implementations store the "
          "batch variance or its inverse square root)");
    }
  }
  if (ctx.opset() < 9) {
    MP_ASSIGN_OR_RETURN(int64_t spatial, ctx.Int("spatial", 1));
    if (spatial != 1) return ctx.NotSupported("spatial=0 (per-activation statistics)");
  }
  MP_ASSIGN_OR_RETURN(float epsilon, ctx.Float("epsilon", 1e-5f));
  MP_ASSIGN_OR_RETURN(float momentum, ctx.Float("momentum", 0.9f));
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  if (x->rank() < 2) return ctx.Invalid("input X " + Describe(*x) + " must have rank >= 2");
  const int64_t channels = x->shape[1];
  const char* names[] = {"scale", "B", "input_mean", "input_var"};
  const Tensor* params[4];
  for (size_t i = 0; i < 4; ++i) {
    MP_ASSIGN_OR_RETURN(params[i], ctx.input(i + 1));
    if (params[i]->shape != std::vector<int64_t>{channels}) {
      return ctx.Invalid(std::string(names[i]) + " " + Describe(*params[i]) + " must be [" +
                         std::to_string(channels) + "] (one value per channel of X " +
                         Describe(*x) + ")");
    }
    // The parameters may be another float type than X (T1/T2 since opset 15).
    if (params[i]->dtype != DType::kF32 && params[i]->dtype != DType::kF64) {
      return ctx.NotSupported(std::string(names[i]) + " " + Describe(*params[i]) +
                              " (f32 and f64 parameters are implemented)");
    }
  }
  const int64_t batch = x->shape[0], size = Product(x->shape, 2, x->shape.size());
  Tensor out = Tensor::Zeros(x->dtype, x->shape);
  // Running mean and variance (opset 14: running_mean, running_var; before: mean, var) and
  // the batch mean (saved_mean), in the dtypes of input_mean and input_var.
  Tensor running_mean = Tensor::Zeros(params[2]->dtype, {channels});
  Tensor running_var = Tensor::Zeros(params[3]->dtype, {channels});
  Tensor saved_mean = Tensor::Zeros(params[2]->dtype, {channels});
  auto set = [](Tensor& t, int64_t i, double v) {
    if (t.dtype == DType::kF32) {
      t.data<float>()[i] = static_cast<float>(v);
    } else {
      t.data<double>()[i] = v;
    }
  };
  MP_RETURN_IF_ERROR(DispatchFloat(x->dtype, "BatchNormalization", [&](auto tag) -> Status {
    using T = decltype(tag);
    const T* px = x->data<T>();
    T* po = out.data<T>();
    for (int64_t c = 0; c < channels; ++c) {
      const double scale = GetAsDouble(*params[0], c), bias = GetAsDouble(*params[1], c);
      double mean = GetAsDouble(*params[2], c), var = GetAsDouble(*params[3], c);
      if (training) {
        const double count = double(batch) * double(size);
        double sum = 0;
        for (int64_t n = 0; n < batch; ++n) {
          const int64_t base = (n * channels + c) * size;
          for (int64_t i = 0; i < size; ++i) sum += double(px[base + i]);
        }
        const double batch_mean = sum / count;
        double squares = 0;
        for (int64_t n = 0; n < batch; ++n) {
          const int64_t base = (n * channels + c) * size;
          for (int64_t i = 0; i < size; ++i) {
            const double d = double(px[base + i]) - batch_mean;
            squares += d * d;
          }
        }
        const double batch_var = squares / count;
        set(running_mean, c, mean * double{momentum} + batch_mean * (1.0 - double{momentum}));
        set(running_var, c, var * double{momentum} + batch_var * (1.0 - double{momentum}));
        set(saved_mean, c, batch_mean);
        mean = batch_mean;
        var = batch_var;
      }
      const double factor = scale / std::sqrt(var + double{epsilon});
      for (int64_t n = 0; n < batch; ++n) {
        const int64_t base = (n * channels + c) * size;
        for (int64_t i = 0; i < size; ++i) {
          po[base + i] = static_cast<T>((double(px[base + i]) - mean) * factor + bias);
        }
      }
    }
    return Status::Ok();
  }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  if (outputs > 1) outs.push_back(std::move(running_mean));
  if (outputs > 2) outs.push_back(std::move(running_var));
  if (outputs > 3) outs.push_back(std::move(saved_mean));
  return outs;
}

// Normalizes over the dimensions from `axis` on; Scale and B broadcast to X.shape[axis:].
// Mean and InvStdDev have X's leading dimensions and 1 for the normalized ones, in the
// stash_type's precision (1: f32, 11: f64).
Result<std::vector<Tensor>> LayerNormalizationKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(const Tensor* scale, ctx.input(1));
  const Tensor* bias = ctx.has_input(2) ? *ctx.input(2) : nullptr;
  MP_ASSIGN_OR_RETURN(int64_t axis_attr, ctx.Int("axis", -1));
  MP_ASSIGN_OR_RETURN(float epsilon, ctx.Float("epsilon", 1e-5f));
  MP_ASSIGN_OR_RETURN(int64_t stash_type, ctx.Int("stash_type", 1));
  DType stash_dtype;
  if (stash_type == 1) {
    stash_dtype = DType::kF32;
  } else if (stash_type == 11) {
    stash_dtype = DType::kF64;
  } else {
    return ctx.NotSupported("stash_type " + std::to_string(stash_type) +
                            " (1 = float and 11 = double are implemented)");
  }
  MP_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(axis_attr, x->rank(), "axis"));
  const std::vector<int64_t> norm_shape(x->shape.begin() + axis, x->shape.end());
  for (const Tensor* p : {scale, bias}) {
    if (p == nullptr) continue;
    auto b = BroadcastShapes(p->shape, norm_shape);
    if (!b.ok() || *b != norm_shape || p->dtype != x->dtype) {
      return ctx.Invalid(Describe(*p) + " does not broadcast to the normalized dimensions " +
                         ShapeString(norm_shape) + " of X " + Describe(*x) +
                         " with its element type");
    }
  }
  const std::vector<int64_t> scale_strides = BroadcastStrides(scale->shape, norm_shape);
  const std::vector<int64_t> bias_strides =
      bias != nullptr ? BroadcastStrides(bias->shape, norm_shape) : std::vector<int64_t>{};
  const int64_t rows = Product(x->shape, 0, axis);
  const int64_t cols = Product(x->shape, axis, x->shape.size());
  std::vector<int64_t> stat_shape = x->shape;
  for (size_t i = axis; i < stat_shape.size(); ++i) stat_shape[i] = 1;
  Tensor y = Tensor::Zeros(x->dtype, x->shape);
  Tensor mean_out = Tensor::Zeros(stash_dtype, stat_shape);
  Tensor inv_out = Tensor::Zeros(stash_dtype, stat_shape);
  // Offset of element j (row-major over norm_shape) in a broadcast parameter.
  auto param_offset = [&](const std::vector<int64_t>& strides, int64_t j) {
    int64_t off = 0;
    for (size_t d = norm_shape.size(); d-- > 0;) {
      off += (j % norm_shape[d]) * strides[d];
      j /= norm_shape[d];
    }
    return off;
  };
  MP_RETURN_IF_ERROR(DispatchFloat(x->dtype, "LayerNormalization", [&](auto tag) -> Status {
    using T = decltype(tag);
    const T* px = x->data<T>();
    T* py = y.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = px + r * cols;
      double mean = 0;
      for (int64_t j = 0; j < cols; ++j) mean += double(row[j]);
      mean /= double(cols);
      double var = 0;
      for (int64_t j = 0; j < cols; ++j) var += (double(row[j]) - mean) * (double(row[j]) - mean);
      var /= double(cols);
      const double inv = 1.0 / std::sqrt(var + double{epsilon});
      for (int64_t j = 0; j < cols; ++j) {
        double v = (double(row[j]) - mean) * inv *
                   double(scale->data<T>()[param_offset(scale_strides, j)]);
        if (bias != nullptr) v += double(bias->data<T>()[param_offset(bias_strides, j)]);
        py[r * cols + j] = static_cast<T>(v);
      }
      if (stash_dtype == DType::kF32) {
        mean_out.data<float>()[r] = static_cast<float>(mean);
        inv_out.data<float>()[r] = static_cast<float>(inv);
      } else {
        mean_out.data<double>()[r] = mean;
        inv_out.data<double>()[r] = inv;
      }
    }
    return Status::Ok();
  }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(y));
  if (ctx.output_count() > 1) outs.push_back(std::move(mean_out));
  if (ctx.output_count() > 2) outs.push_back(std::move(inv_out));
  return outs;
}

// ---------------------------------------------------------------------------------------------
// Softmax and LogSoftmax

// Before opset 13 the input is coerced to 2-D [prod(shape[:axis]), prod(shape[axis:])] and each
// row normalized (default axis 1); from 13 on the op runs along the single dimension `axis`
// (default -1).
Result<std::vector<Tensor>> SoftmaxLike(const OpContext& ctx, bool log) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  const bool coerce = ctx.opset() < 13;
  MP_ASSIGN_OR_RETURN(int64_t axis_attr, ctx.Int("axis", coerce ? 1 : -1));
  int64_t axis = axis_attr;
  if (coerce && axis_attr == x->rank()) {
    axis = x->rank();  // every dimension is in the outer part: rows of one element
  } else {
    MP_ASSIGN_OR_RETURN(axis, NormalizeAxis(axis_attr, x->rank(), "axis"));
  }
  const int64_t outer = Product(x->shape, 0, axis);
  const int64_t n = coerce ? Product(x->shape, axis, x->shape.size()) : x->shape[axis];
  const int64_t inner = coerce ? 1 : Product(x->shape, axis + 1, x->shape.size());
  Tensor out = Tensor::Zeros(x->dtype, x->shape);
  MP_RETURN_IF_ERROR(
      DispatchFloat(x->dtype, log ? "LogSoftmax" : "Softmax", [&](auto tag) -> Status {
        using T = decltype(tag);
        const T* px = x->data<T>();
        T* po = out.data<T>();
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t i = 0; i < inner; ++i) {
            const int64_t base = o * n * inner + i;
            double max = -std::numeric_limits<double>::infinity();
            for (int64_t j = 0; j < n; ++j) max = std::max(max, double(px[base + j * inner]));
            double sum = 0;
            for (int64_t j = 0; j < n; ++j) sum += std::exp(double(px[base + j * inner]) - max);
            const double log_sum = std::log(sum);
            for (int64_t j = 0; j < n; ++j) {
              const double shifted = double(px[base + j * inner]) - max;
              po[base + j * inner] =
                  static_cast<T>(log ? shifted - log_sum : std::exp(shifted) / sum);
            }
          }
        }
        return Status::Ok();
      }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  return outs;
}

Result<std::vector<Tensor>> SoftmaxKernel(const OpContext& ctx) { return SoftmaxLike(ctx, false); }
Result<std::vector<Tensor>> LogSoftmaxKernel(const OpContext& ctx) {
  return SoftmaxLike(ctx, true);
}

// ---------------------------------------------------------------------------------------------
// Pad

// Where each output index along one axis reads from: an input index, or -1 for the constant.
// `n` is the input's size along the axis. Negative pads crop first, keeping input
// [max(0, -begin), n - max(0, -end)); the positive ones then pad that kept part (as
// onnxruntime does). reflect mirrors about the edge element without repeating it and edge
// repeats it (numpy.pad's modes, which onnx's reference implementation calls; pads longer than
// the axis keep reflecting, as numpy does); wrap continues the kept part periodically.
Result<std::vector<int64_t>> PadAxisMap(const OpContext& ctx, const std::string& mode, size_t axis,
                                        int64_t n, int64_t begin, int64_t end) {
  const int64_t lo = std::max<int64_t>(0, -begin);
  const int64_t kept = n - lo - std::max<int64_t>(0, -end);
  const std::string where = "axis " + std::to_string(axis) + " (size " + std::to_string(n) +
                            ", pads " + std::to_string(begin) + " and " + std::to_string(end) + ")";
  if (kept < 0) return ctx.Invalid("negative pads crop more than the input has on " + where);
  const int64_t out = kept + std::max<int64_t>(0, begin) + std::max<int64_t>(0, end);
  if (kept == 0 && out > 0 && mode != "constant") {
    return ctx.Invalid("mode '" + mode + "' cannot pad an empty " + where);
  }
  std::vector<int64_t> map(static_cast<size_t>(out));
  for (int64_t j = 0; j < out; ++j) {
    int64_t k = j - std::max<int64_t>(0, begin);  // index into the kept part
    if (k < 0 || k >= kept) {
      if (mode == "constant") {
        map[j] = -1;
        continue;
      }
      if (mode == "edge") {
        k = std::clamp<int64_t>(k, 0, kept - 1);
      } else if (mode == "wrap") {
        k = (k % kept + kept) % kept;
      } else if (kept == 1) {  // reflect
        k = 0;
      } else {
        const int64_t period = 2 * (kept - 1);
        k = (k % period + period) % period;
        if (k >= kept) k = period - k;
      }
    }
    map[j] = lo + k;
  }
  return map;
}

// Pads (or, with negative pads, crops) every axis. pads lists the beginnings then the ends:
// an attribute before opset 11 (`paddings` in opset 1, `pads` after), the second input from 11;
// the constant is the float attribute `value` before 11, the optional scalar third input from
// 11 (default 0); from opset 18 the optional fourth input names the axes pads is for.
Result<std::vector<Tensor>> PadKernel(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(std::string mode, ctx.String("mode", "constant"));
  if (mode != "constant" && mode != "reflect" && mode != "edge" && mode != "wrap") {
    return ctx.Invalid("mode '" + mode + "' is not one of constant, reflect, edge, wrap");
  }
  if (mode == "wrap" && ctx.opset() < 19) {
    return ctx.Invalid("mode 'wrap' exists from opset 19 (the model's opset is " +
                       std::to_string(ctx.opset()) + ")");
  }
  const size_t rank = x->shape.size();
  std::vector<int64_t> pads;
  float value_attr = 0;
  const Tensor* value_input = nullptr;
  std::vector<int64_t> axes;
  if (ctx.opset() < 11) {
    const char* name = ctx.opset() < 2 ? "paddings" : "pads";
    if (!ctx.has_attribute(name)) {
      return ctx.Invalid(std::string("the ") + name + " attribute is required");
    }
    MP_ASSIGN_OR_RETURN(pads, ctx.Ints(name));
    MP_ASSIGN_OR_RETURN(value_attr, ctx.Float("value", 0.0f));
  } else {
    MP_ASSIGN_OR_RETURN(const Tensor* p, ctx.input(1));
    if (p->rank() != 1) return ctx.Invalid("pads " + Describe(*p) + " must be 1-D");
    MP_ASSIGN_OR_RETURN(pads, ToInt64Vector(*p, "pads"));
    if (ctx.has_input(2)) {
      MP_ASSIGN_OR_RETURN(value_input, ctx.input(2));
      if (value_input->NumElements() != 1 || value_input->rank() > 1 ||
          value_input->dtype != x->dtype) {
        return ctx.Invalid("constant_value " + Describe(*value_input) +
                           " must be one value of the element type of data " + Describe(*x));
      }
    }
    if (ctx.opset() >= 18 && ctx.has_input(3)) {
      MP_ASSIGN_OR_RETURN(const Tensor* a, ctx.input(3));
      if (a->rank() != 1) return ctx.Invalid("axes " + Describe(*a) + " must be 1-D");
      MP_ASSIGN_OR_RETURN(axes, ToInt64Vector(*a, "axes"));
    }
  }
  std::vector<bool> listed(rank, false);
  std::vector<size_t> pad_axes;
  if (axes.empty()) {
    for (size_t d = 0; d < rank; ++d) pad_axes.push_back(d);
  }
  for (int64_t a : axes) {
    MP_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(a, x->rank(), "axes"));
    if (listed[axis]) return ctx.Invalid("axes " + ShapeString(axes) + " repeat an axis");
    listed[axis] = true;
    pad_axes.push_back(static_cast<size_t>(axis));
  }
  if (pads.size() != 2 * pad_axes.size()) {
    return ctx.Invalid("pads " + ShapeString(pads) + " must have " +
                       std::to_string(2 * pad_axes.size()) +
                       " entries (a beginning and an end for " +
                       (axes.empty() ? "each dimension of data " + Describe(*x)
                                     : "each of axes " + ShapeString(axes)) +
                       ")");
  }
  std::vector<int64_t> begin(rank, 0), end(rank, 0);
  for (size_t i = 0; i < pad_axes.size(); ++i) {
    begin[pad_axes[i]] = pads[i];
    end[pad_axes[i]] = pads[i + pad_axes.size()];
  }
  std::vector<std::vector<int64_t>> maps(rank);
  std::vector<int64_t> out_shape(rank);
  for (size_t d = 0; d < rank; ++d) {
    MP_ASSIGN_OR_RETURN(maps[d], PadAxisMap(ctx, mode, d, x->shape[d], begin[d], end[d]));
    out_shape[d] = static_cast<int64_t>(maps[d].size());
  }
  MP_ASSIGN_OR_RETURN(int64_t total, CheckedNumElements(out_shape));
  Tensor out = Tensor::Zeros(x->dtype, out_shape);
  const std::vector<int64_t> in_strides = RowMajorStrides(x->shape);
  MP_RETURN_IF_ERROR(DispatchNumeric(x->dtype, "Pad", [&](auto tag) -> Status {
    using T = decltype(tag);
    T constant;
    if (value_input != nullptr) {
      constant = value_input->data<T>()[0];
    } else if constexpr (std::is_same_v<T, uint8_t>) {
      constant = value_attr != 0.0f ? 1 : 0;  // bool
    } else {
      constant = static_cast<T>(value_attr);
    }
    const T* px = x->data<T>();
    T* po = out.data<T>();
    std::vector<int64_t> idx(rank, 0);
    for (int64_t i = 0; i < total; ++i) {
      int64_t src = 0;
      for (size_t d = 0; d < rank && src >= 0; ++d) {
        const int64_t s = maps[d][idx[d]];
        src = s < 0 ? -1 : src + s * in_strides[d];
      }
      po[i] = src < 0 ? constant : px[src];
      for (size_t d = rank; d-- > 0;) {
        if (++idx[d] < out_shape[d]) break;
        idx[d] = 0;
      }
    }
    return Status::Ok();
  }));
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  return outs;
}

// ---------------------------------------------------------------------------------------------
// ReduceSum and ReduceMean

// `axes_input_since`: the opset from which axes is the optional second input instead of an
// attribute (ReduceSum 13, ReduceMean 18); noop_with_empty_axes exists from then on too.
Result<std::vector<Tensor>> Reduce(const OpContext& ctx, bool mean, int64_t axes_input_since) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(int64_t keepdims, ctx.Int("keepdims", 1));
  MP_ASSIGN_OR_RETURN(int64_t noop, ctx.Int("noop_with_empty_axes", 0));
  std::vector<int64_t> axes;
  if (ctx.opset() >= axes_input_since) {
    if (ctx.has_input(1)) {
      MP_ASSIGN_OR_RETURN(const Tensor* a, ctx.input(1));
      MP_ASSIGN_OR_RETURN(axes, ToInt64Vector(*a, "axes"));
    }
  } else {
    MP_ASSIGN_OR_RETURN(axes, ctx.Ints("axes"));
  }
  std::vector<bool> reduced(x->shape.size(), false);
  if (axes.empty()) {
    if (noop != 0) {
      std::vector<Tensor> outs;
      outs.push_back(*x);
      return outs;
    }
    reduced.assign(x->shape.size(), true);
  }
  for (int64_t a : axes) {
    MP_ASSIGN_OR_RETURN(int64_t axis, NormalizeAxis(a, x->rank(), "axes"));
    if (reduced[axis]) return ctx.Invalid("axes " + ShapeString(axes) + " repeat an axis");
    reduced[axis] = true;
  }
  // Each input element adds to the output element whose index is its own with the reduced
  // dimensions zeroed: out_strides holds 0 for the reduced dimensions.
  std::vector<int64_t> kept_shape, out_shape;
  int64_t count = 1;
  for (size_t d = 0; d < x->shape.size(); ++d) {
    if (reduced[d]) {
      count *= x->shape[d];
      if (keepdims) out_shape.push_back(1);
    } else {
      kept_shape.push_back(x->shape[d]);
      out_shape.push_back(x->shape[d]);
    }
  }
  const std::vector<int64_t> kept_strides = RowMajorStrides(kept_shape);
  std::vector<int64_t> out_strides(x->shape.size(), 0);
  for (size_t d = 0, k = 0; d < x->shape.size(); ++d) {
    if (!reduced[d]) out_strides[d] = kept_strides[k++];
  }
  const int64_t total = x->NumElements();
  const int64_t out_count = Product(kept_shape, 0, kept_shape.size());
  Tensor out = Tensor::Zeros(x->dtype, out_shape);
  auto body = [&](auto tag) -> Status {
    using T = decltype(tag);
    using Acc = AccumulatorOf<T>;
    std::vector<Acc> acc(static_cast<size_t>(out_count), Acc{0});
    const T* px = x->data<T>();
    std::vector<int64_t> idx(x->shape.size(), 0);
    int64_t o = 0;
    for (int64_t i = 0; i < total; ++i) {
      acc[o] += Acc(px[i]);
      for (size_t d = x->shape.size(); d-- > 0;) {  // odometer step, tracking o
        o += out_strides[d];
        if (++idx[d] < x->shape[d]) break;
        o -= out_strides[d] * idx[d];
        idx[d] = 0;
      }
    }
    for (int64_t j = 0; j < out_count; ++j) {
      out.data<T>()[j] = static_cast<T>(mean ? Acc(acc[j] / Acc(count)) : acc[j]);
    }
    return Status::Ok();
  };
  if (mean) {
    MP_RETURN_IF_ERROR(DispatchFloat(x->dtype, "ReduceMean", body));
  } else {
    MP_RETURN_IF_ERROR(DispatchArithmetic(x->dtype, "ReduceSum", body));
  }
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  return outs;
}

Result<std::vector<Tensor>> ReduceSumKernel(const OpContext& ctx) { return Reduce(ctx, false, 13); }
Result<std::vector<Tensor>> ReduceMeanKernel(const OpContext& ctx) { return Reduce(ctx, true, 18); }

}  // namespace

void AddNnKernels(KernelTable& table) {
  table["MatMul"] = MatMulKernel;
  table["Gemm"] = GemmKernel;
  table["Conv"] = ConvKernel;
  table["ConvTranspose"] = ConvTransposeKernel;
  table["MaxPool"] = MaxPoolKernel;
  table["AveragePool"] = AveragePoolKernel;
  table["GlobalAveragePool"] = GlobalAveragePoolKernel;
  table["BatchNormalization"] = BatchNormalizationKernel;
  table["LayerNormalization"] = LayerNormalizationKernel;
  table["Softmax"] = SoftmaxKernel;
  table["LogSoftmax"] = LogSoftmaxKernel;
  table["ReduceMean"] = ReduceMeanKernel;
  table["ReduceSum"] = ReduceSumKernel;
  table["Pad"] = PadKernel;
}

}  // namespace mp::eval
