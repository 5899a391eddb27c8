// Shape kernels: ops that move, select or create elements without arithmetic on them. Data is
// copied as bytes, so these work for every plain element type. Spec: onnx docs/Operators.md.
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "modelport/validate/eval_ops.h"

namespace mp::eval {
namespace {

using Outputs = Result<std::vector<Tensor>>;

// `x`'s bytes under a new shape of the same element count.
Tensor WithShape(const Tensor& x, std::vector<int64_t> shape) {
  Tensor out;
  out.dtype = x.dtype;
  out.shape = std::move(shape);
  out.bytes = x.bytes;
  return out;
}

// An integer list that is an attribute before opset `input_from` and input `index` after it
// (Squeeze/Unsqueeze axes, Split's split); nullopt when absent.
Result<std::optional<std::vector<int64_t>>> AttrOrInput(const OpContext& ctx,
                                                        const std::string& name, int64_t input_from,
                                                        size_t index) {
  if (ctx.opset() < input_from) {
    if (!ctx.has_attribute(name)) return std::optional<std::vector<int64_t>>();
    MP_ASSIGN_OR_RETURN(std::vector<int64_t> v, ctx.Ints(name));
    return std::optional<std::vector<int64_t>>(std::move(v));
  }
  if (!ctx.has_input(index)) return std::optional<std::vector<int64_t>>();
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> v, ToInt64Vector(*ctx.input(index).value(), name));
  return std::optional<std::vector<int64_t>>(std::move(v));
}

// Normalizes every axis against `rank`, refusing duplicates.
Result<std::vector<int64_t>> NormalizeAxes(const std::vector<int64_t>& axes, int64_t rank) {
  std::vector<int64_t> out;
  for (int64_t a : axes) {
    MP_ASSIGN_OR_RETURN(int64_t n, NormalizeAxis(a, rank, "axis"));
    if (std::find(out.begin(), out.end(), n) != out.end()) {
      return InvalidArgument("axis " + std::to_string(a) + " is repeated in " + ShapeString(axes));
    }
    out.push_back(n);
  }
  return out;
}

// A tensor of `out_shape` whose element at index (i0, i1, ...) is x's element at
// base + sum(ik * strides[k]) (Slice and Transpose; strides may be negative).
Tensor StridedCopy(const Tensor& x, const std::vector<int64_t>& out_shape, int64_t base,
                   const std::vector<int64_t>& strides) {
  Tensor out = Tensor::Zeros(x.dtype, out_shape);
  const size_t size = ElementSize(x.dtype);
  std::array<std::vector<int64_t>, 1> s = {strides};
  ForEachBroadcast<1>(out_shape, s, [&](int64_t i, const std::array<int64_t, 1>& off) {
    CopyBytes(out.bytes.data() + i * size, x.bytes.data() + (base + off[0]) * size, size);
  });
  return out;
}

// Reshape: 0 copies the input's dimension (unless allowzero, opset 14), -1 is inferred.
Outputs Reshape(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  std::vector<int64_t> shape;
  if (ctx.opset() < 5) {
    MP_ASSIGN_OR_RETURN(shape, ctx.Ints("shape"));
  } else {
    MP_ASSIGN_OR_RETURN(const Tensor* s, ctx.input(1));
    MP_ASSIGN_OR_RETURN(shape, ToInt64Vector(*s, "shape"));
  }
  MP_ASSIGN_OR_RETURN(int64_t allowzero, ctx.Int("allowzero", 0));
  int64_t infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0 && allowzero == 0) {
      if (i >= x->shape.size()) {
        return ctx.Invalid("shape " + ShapeString(shape) + " copies dimension " +
                           std::to_string(i) + " that input " + Describe(*x) + " lacks");
      }
      shape[i] = x->shape[i];
    }
    if (shape[i] == -1) {
      if (infer >= 0) return ctx.Invalid("shape " + ShapeString(shape) + " has more than one -1");
      infer = static_cast<int64_t>(i);
    } else if (shape[i] < 0) {
      return ctx.Invalid("shape " + ShapeString(shape) + " has a negative dimension");
    } else {
      known *= shape[i];
    }
  }
  const int64_t n = x->NumElements();
  if (infer >= 0) {
    if (known == 0 || n % known != 0) {
      return ctx.Invalid("cannot infer -1 in shape " + ShapeString(shape) + " for " + Describe(*x));
    }
    shape[infer] = n / known;
  }
  MP_ASSIGN_OR_RETURN(int64_t count, CheckedNumElements(shape));
  if (count != n) {
    return ctx.Invalid("cannot reshape " + Describe(*x) + " to " + ShapeString(shape));
  }
  return std::vector<Tensor>{WithShape(*x, std::move(shape))};
}

Outputs Transpose(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  const int64_t rank = x->rank();
  std::vector<int64_t> reversed(rank);
  for (int64_t i = 0; i < rank; ++i) reversed[i] = rank - 1 - i;
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> perm, ctx.Ints("perm", reversed));
  if (static_cast<int64_t>(perm.size()) != rank) {
    return ctx.Invalid("perm " + ShapeString(perm) + " does not match " + Describe(*x));
  }
  MP_ASSIGN_OR_RETURN(perm, NormalizeAxes(perm, rank));
  std::vector<int64_t> in_strides = RowMajorStrides(x->shape);
  std::vector<int64_t> shape(rank), strides(rank);
  for (int64_t i = 0; i < rank; ++i) {
    shape[i] = x->shape[perm[i]];
    strides[i] = in_strides[perm[i]];
  }
  return std::vector<Tensor>{StridedCopy(*x, shape, 0, strides)};
}

Outputs Flatten(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(int64_t axis, ctx.Int("axis", 1));
  // axis is in [-rank, rank]: rank makes the whole tensor the outer dimension.
  if (axis < 0) axis += x->rank();
  if (axis < 0 || axis > x->rank()) {
    return ctx.Invalid("axis " + std::to_string(axis) + " is out of range for " + Describe(*x));
  }
  int64_t outer = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= x->shape[i];
  int64_t inner = 1;
  for (int64_t i = axis; i < x->rank(); ++i) inner *= x->shape[i];
  return std::vector<Tensor>{WithShape(*x, {outer, inner})};
}

Outputs Squeeze(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> axes, AttrOrInput(ctx, "axes", 13, 1));
  std::vector<int64_t> shape;
  if (!axes) {
    for (int64_t d : x->shape) {
      if (d != 1) shape.push_back(d);
    }
    return std::vector<Tensor>{WithShape(*x, std::move(shape))};
  }
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> norm, NormalizeAxes(*axes, x->rank()));
  for (int64_t i = 0; i < x->rank(); ++i) {
    if (std::find(norm.begin(), norm.end(), i) == norm.end()) {
      shape.push_back(x->shape[i]);
    } else if (x->shape[i] != 1) {
      return ctx.Invalid("cannot squeeze axis " + std::to_string(i) + " of " + Describe(*x) +
                         ": its size is not 1");
    }
  }
  return std::vector<Tensor>{WithShape(*x, std::move(shape))};
}

Outputs Unsqueeze(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> axes, AttrOrInput(ctx, "axes", 13, 1));
  if (!axes) return ctx.Invalid("Unsqueeze needs axes");
  const int64_t rank = x->rank() + static_cast<int64_t>(axes->size());
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> norm, NormalizeAxes(*axes, rank));
  std::vector<int64_t> shape;
  size_t next = 0;
  for (int64_t i = 0; i < rank; ++i) {
    if (std::find(norm.begin(), norm.end(), i) != norm.end()) {
      shape.push_back(1);
    } else {
      shape.push_back(x->shape[next++]);
    }
  }
  return std::vector<Tensor>{WithShape(*x, std::move(shape))};
}

Outputs Concat(const OpContext& ctx) {
  if (!ctx.has_attribute("axis")) return ctx.Invalid("Concat needs the 'axis' attribute");
  MP_ASSIGN_OR_RETURN(int64_t axis, ctx.Int("axis", 0));
  MP_ASSIGN_OR_RETURN(const Tensor* first, ctx.input(0));
  MP_ASSIGN_OR_RETURN(axis, NormalizeAxis(axis, first->rank(), "axis"));
  std::vector<int64_t> shape = first->shape;
  shape[axis] = 0;
  for (size_t i = 0; i < ctx.input_count(); ++i) {
    MP_ASSIGN_OR_RETURN(const Tensor* in, ctx.input(i));
    bool ok = in->dtype == first->dtype && in->rank() == first->rank();
    for (int64_t d = 0; ok && d < in->rank(); ++d) {
      ok = d == axis || in->shape[d] == first->shape[d];
    }
    if (!ok) {
      return ctx.Invalid("input " + std::to_string(i) + " " + Describe(*in) +
                         " does not concatenate with " + Describe(*first) + " on axis " +
                         std::to_string(axis));
    }
    shape[axis] += in->shape[axis];
  }
  Tensor out = Tensor::Zeros(first->dtype, shape);
  const int64_t outer = Product(shape, 0, axis);
  const int64_t inner = Product(shape, axis + 1, shape.size()) * ElementSize(first->dtype);
  uint8_t* dst = out.bytes.data();
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t i = 0; i < ctx.input_count(); ++i) {
      const Tensor& in = *ctx.input(i).value();
      const int64_t chunk = in.shape[axis] * inner;
      CopyBytes(dst, in.bytes.data() + o * chunk, chunk);
      dst += chunk;
    }
  }
  return std::vector<Tensor>{std::move(out)};
}

// Split: sizes from the split attribute (before opset 13) or input (13 on); else equal parts,
// the last one smaller when num_outputs (opset 18) does not divide the dimension.
Outputs Split(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(int64_t axis, ctx.Int("axis", 0));
  MP_ASSIGN_OR_RETURN(axis, NormalizeAxis(axis, x->rank(), "axis"));
  const int64_t dim = x->shape[axis];
  const int64_t parts = static_cast<int64_t>(ctx.output_count());
  MP_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> split, AttrOrInput(ctx, "split", 13, 1));
  std::vector<int64_t> sizes;
  if (split) {
    sizes = *split;
    int64_t sum = 0;
    bool negative = false;
    for (int64_t s : sizes) {
      negative |= s < 0;
      sum += s;
    }
    if (static_cast<int64_t>(sizes.size()) != parts || negative || sum != dim) {
      return ctx.Invalid("split " + ShapeString(sizes) + " does not divide dimension " +
                         std::to_string(dim) + " of " + Describe(*x) + " into " +
                         std::to_string(parts) + " outputs");
    }
  } else {
    MP_ASSIGN_OR_RETURN(int64_t num_outputs, ctx.Int("num_outputs", parts));
    if (num_outputs != parts || parts == 0) {
      return ctx.Invalid("num_outputs " + std::to_string(num_outputs) + " but the node has " +
                         std::to_string(parts) + " outputs");
    }
    const bool uneven_allowed = ctx.opset() >= 18 && ctx.has_attribute("num_outputs");
    if (dim % parts != 0 && !uneven_allowed) {
      return ctx.Invalid("dimension " + std::to_string(dim) + " of " + Describe(*x) +
                         " does not split into " + std::to_string(parts) + " equal parts");
    }
    const int64_t chunk = (dim + parts - 1) / parts;
    for (int64_t i = 0; i < parts; ++i) sizes.push_back(std::min(chunk, dim - i * chunk));
  }
  const int64_t outer = Product(x->shape, 0, axis);
  const int64_t inner = Product(x->shape, axis + 1, x->shape.size()) * ElementSize(x->dtype);
  std::vector<Tensor> outs;
  int64_t offset = 0;
  for (int64_t size : sizes) {
    std::vector<int64_t> shape = x->shape;
    shape[axis] = size;
    Tensor out = Tensor::Zeros(x->dtype, shape);
    for (int64_t o = 0; o < outer; ++o) {
      CopyBytes(out.bytes.data() + o * size * inner, x->bytes.data() + (o * dim + offset) * inner,
                size * inner);
    }
    offset += size;
    outs.push_back(std::move(out));
  }
  return outs;
}

// Slice: starts/ends/axes attributes before opset 10; inputs starts, ends, axes, steps after.
// Negative starts/ends count from the end; both are then clamped to [0, dim] for positive steps
// and [-1, dim - 1] for negative ones (Operators.md, Slice).
Outputs Slice(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  const int64_t rank = x->rank();
  std::vector<int64_t> starts, ends, axes, steps;
  if (ctx.opset() < 10) {
    MP_ASSIGN_OR_RETURN(starts, ctx.Ints("starts"));
    MP_ASSIGN_OR_RETURN(ends, ctx.Ints("ends"));
    MP_ASSIGN_OR_RETURN(axes, ctx.Ints("axes"));
  } else {
    MP_ASSIGN_OR_RETURN(const Tensor* s, ctx.input(1));
    MP_ASSIGN_OR_RETURN(const Tensor* e, ctx.input(2));
    MP_ASSIGN_OR_RETURN(starts, ToInt64Vector(*s, "starts"));
    MP_ASSIGN_OR_RETURN(ends, ToInt64Vector(*e, "ends"));
    if (ctx.has_input(3)) {
      MP_ASSIGN_OR_RETURN(axes, ToInt64Vector(*ctx.input(3).value(), "axes"));
    }
    if (ctx.has_input(4)) {
      MP_ASSIGN_OR_RETURN(steps, ToInt64Vector(*ctx.input(4).value(), "steps"));
    }
  }
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return ctx.Invalid("starts " + ShapeString(starts) + ", ends " + ShapeString(ends) + ", axes " +
                       ShapeString(axes) + " and steps " + ShapeString(steps) +
                       " differ in length");
  }
  MP_ASSIGN_OR_RETURN(axes, NormalizeAxes(axes, rank));
  std::vector<int64_t> shape = x->shape;
  std::vector<int64_t> strides = RowMajorStrides(x->shape);
  int64_t base = 0;
  for (size_t i = 0; i < axes.size(); ++i) {
    const int64_t a = axes[i], dim = x->shape[a], step = steps[i];
    if (step == 0) return ctx.Invalid("steps must not be 0");
    int64_t start = starts[i] < 0 ? starts[i] + dim : starts[i];
    int64_t end = ends[i] < 0 ? ends[i] + dim : ends[i];
    int64_t count;
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      count = end > start ? (end - start + step - 1) / step : 0;
    } else {
      start = std::clamp<int64_t>(start, -1, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      count = start > end ? (start - end - step - 1) / -step : 0;
    }
    shape[a] = count;
    if (count > 0) base += start * strides[a];
    strides[a] *= step;
  }
  bool empty = std::find(shape.begin(), shape.end(), 0) != shape.end();
  if (empty) return std::vector<Tensor>{Tensor::Zeros(x->dtype, shape)};
  return std::vector<Tensor>{StridedCopy(*x, shape, base, strides)};
}

Outputs Gather(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(const Tensor* idx, ctx.input(1));
  MP_ASSIGN_OR_RETURN(int64_t axis, ctx.Int("axis", 0));
  MP_ASSIGN_OR_RETURN(axis, NormalizeAxis(axis, x->rank(), "axis"));
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> indices, ToInt64Vector(*idx, "indices"));
  const int64_t dim = x->shape[axis];
  for (int64_t& i : indices) {
    if (i < -dim || i >= dim) {
      return ctx.Invalid("index " + std::to_string(i) + " is out of range for axis " +
                         std::to_string(axis) + " of " + Describe(*x));
    }
    if (i < 0) i += dim;
  }
  std::vector<int64_t> shape(x->shape.begin(), x->shape.begin() + axis);
  shape.insert(shape.end(), idx->shape.begin(), idx->shape.end());
  shape.insert(shape.end(), x->shape.begin() + axis + 1, x->shape.end());
  MP_RETURN_IF_ERROR(CheckedNumElements(shape));
  Tensor out = Tensor::Zeros(x->dtype, shape);
  const int64_t outer = Product(x->shape, 0, axis);
  const int64_t inner = Product(x->shape, axis + 1, x->shape.size()) * ElementSize(x->dtype);
  uint8_t* dst = out.bytes.data();
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i : indices) {
      CopyBytes(dst, x->bytes.data() + (o * dim + i) * inner, inner);
      dst += inner;
    }
  }
  return std::vector<Tensor>{std::move(out)};
}

Outputs Expand(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  MP_ASSIGN_OR_RETURN(const Tensor* s, ctx.input(1));
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> target, ToInt64Vector(*s, "shape"));
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> shape, BroadcastShapes(x->shape, target));
  MP_RETURN_IF_ERROR(CheckedNumElements(shape));
  return std::vector<Tensor>{StridedCopy(*x, shape, 0, BroadcastStrides(x->shape, shape))};
}

// Shape: start/end (opset 15) select dimensions, negative from the end, clamped to [0, rank].
Outputs ShapeOp(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* x, ctx.input(0));
  const int64_t rank = x->rank();
  MP_ASSIGN_OR_RETURN(int64_t start, ctx.Int("start", 0));
  MP_ASSIGN_OR_RETURN(int64_t end, ctx.Int("end", rank));
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, 0, rank);
  std::vector<int64_t> dims;
  for (int64_t i = start; i < end; ++i) dims.push_back(x->shape[i]);
  return std::vector<Tensor>{Tensor::FromI64({static_cast<int64_t>(dims.size())}, dims)};
}

Outputs Constant(const OpContext& ctx) {
  const auto& attrs = ctx.node().attribute();
  if (attrs.size() != 1) {
    return ctx.Invalid("Constant needs exactly one value attribute, has " +
                       std::to_string(attrs.size()));
  }
  const std::string& name = attrs.Get(0).name();
  if (name == "value") {
    MP_ASSIGN_OR_RETURN(std::optional<Tensor> t, ctx.TensorAttr("value"));
    if (!t) return ctx.Invalid("Constant's value attribute holds no tensor");
    return std::vector<Tensor>{std::move(*t)};
  }
  if (name == "value_float") {
    MP_ASSIGN_OR_RETURN(float v, ctx.Float(name, 0));
    return std::vector<Tensor>{Tensor::FromF32({}, {v})};
  }
  if (name == "value_floats") {
    MP_ASSIGN_OR_RETURN(std::vector<float> v, ctx.Floats(name));
    return std::vector<Tensor>{Tensor::FromF32({static_cast<int64_t>(v.size())}, v)};
  }
  if (name == "value_int") {
    MP_ASSIGN_OR_RETURN(int64_t v, ctx.Int(name, 0));
    return std::vector<Tensor>{Tensor::FromI64({}, {v})};
  }
  if (name == "value_ints") {
    MP_ASSIGN_OR_RETURN(std::vector<int64_t> v, ctx.Ints(name));
    return std::vector<Tensor>{Tensor::FromI64({static_cast<int64_t>(v.size())}, v)};
  }
  return ctx.NotSupported("Constant attribute '" + name + "' (strings and sparse tensors)");
}

Outputs ConstantOfShape(const OpContext& ctx) {
  MP_ASSIGN_OR_RETURN(const Tensor* s, ctx.input(0));
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> shape, ToInt64Vector(*s, "shape"));
  MP_RETURN_IF_ERROR(CheckedNumElements(shape));
  MP_ASSIGN_OR_RETURN(std::optional<Tensor> value, ctx.TensorAttr("value"));
  if (!value) value = Tensor::FromF32({1}, {0.0f});
  if (value->NumElements() != 1) {
    return ctx.Invalid("value must hold one element, got " + Describe(*value));
  }
  Tensor out = Tensor::Zeros(value->dtype, shape);
  const size_t size = value->bytes.size();
  for (int64_t i = 0, n = out.NumElements(); i < n; ++i) {
    CopyBytes(out.bytes.data() + i * size, value->bytes.data(), size);
  }
  return std::vector<Tensor>{std::move(out)};
}

// Range: max(ceil((limit - start) / delta), 0) elements start + i * delta.
Outputs Range(const OpContext& ctx) {
  const Tensor* in[3];
  for (size_t i = 0; i < 3; ++i) {
    MP_ASSIGN_OR_RETURN(in[i], ctx.input(i));
    if (in[i]->NumElements() != 1 || in[i]->dtype != in[0]->dtype) {
      return ctx.Invalid("start, limit and delta must be scalars of one type, got " +
                         Describe(*in[i]));
    }
  }
  Tensor out;
  MP_RETURN_IF_ERROR(DispatchNumeric(in[0]->dtype, "Range", [&](auto tag) -> Status {
    using T = decltype(tag);
    const T start = in[0]->data<T>()[0], limit = in[1]->data<T>()[0], delta = in[2]->data<T>()[0];
    if (delta == T(0)) return ctx.Invalid("delta must not be 0");
    double n = std::ceil((static_cast<double>(limit) - static_cast<double>(start)) /
                         static_cast<double>(delta));
    MP_ASSIGN_OR_RETURN(int64_t count,
                        CheckedNumElements({static_cast<int64_t>(std::max(n, 0.0))}));
    out = Tensor::Zeros(in[0]->dtype, {count});
    for (int64_t i = 0; i < count; ++i) {
      out.data<T>()[i] = static_cast<T>(start + static_cast<T>(i) * delta);
    }
    return Status::Ok();
  }));
  return std::vector<Tensor>{std::move(out)};
}

}  // namespace

void AddShapeKernels(KernelTable& table) {
  table["Reshape"] = Reshape;
  table["Transpose"] = Transpose;
  table["Flatten"] = Flatten;
  table["Squeeze"] = Squeeze;
  table["Unsqueeze"] = Unsqueeze;
  table["Concat"] = Concat;
  table["Split"] = Split;
  table["Slice"] = Slice;
  table["Gather"] = Gather;
  table["Expand"] = Expand;
  table["Shape"] = ShapeOp;
  table["Constant"] = Constant;
  table["ConstantOfShape"] = ConstantOfShape;
  table["Range"] = Range;
}

}  // namespace mp::eval
