#include "modelport/validate/eval_tensor.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <bit>
#include <optional>

#include "modelport/convert/cast.h"

namespace mp::eval {
namespace {

static_assert(std::endian::native == std::endian::little, "modelport assumes a little-endian host");

constexpr int64_t kMaxElements = int64_t{1} << 40;

}  // namespace

// TensorProto.DataType codes (onnx.proto) and modelport's dtype for each one it has.
std::optional<DType> DTypeFromOnnx(int64_t code) {
  switch (code) {
    case 1:
      return DType::kF32;
    case 2:
      return DType::kU8;
    case 3:
      return DType::kI8;
    case 4:
      return DType::kU16;
    case 5:
      return DType::kI16;
    case 6:
      return DType::kI32;
    case 7:
      return DType::kI64;
    case 9:
      return DType::kBool;
    case 10:
      return DType::kF16;
    case 11:
      return DType::kF64;
    case 12:
      return DType::kU32;
    case 13:
      return DType::kU64;
    case 14:
      return DType::kC64;
    case 16:
      return DType::kBF16;
    case 17:
      return DType::kF8E4M3;
    case 19:
      return DType::kF8E5M2;
    default:
      return std::nullopt;
  }
}

int32_t OnnxFromDType(DType d) {
  for (int32_t code = 1; code <= 19; ++code) {
    if (DTypeFromOnnx(code) == d) return code;
  }
  return 0;
}

namespace {

// Stores `n` values into `dst` as little-endian elements of `size` bytes each (the low bytes of
// each value: how int32_data carries 8- and 16-bit types, and uint64_data carries u32).
template <typename V>
void PackLow(const V* values, int64_t n, size_t size, uint8_t* dst) {
  for (int64_t i = 0; i < n; ++i) {
    uint64_t v = static_cast<uint64_t>(values[i]);
    CopyBytes(dst + i * size, &v, size);
  }
}

}  // namespace

uint64_t& MaxTensorBytes() {
  thread_local uint64_t limit = uint64_t{16} << 30;
  return limit;
}

Tensor Tensor::Zeros(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  const auto n = static_cast<uint64_t>(t.NumElements());
  if (n > MaxTensorBytes() / std::max<uint64_t>(1, ElementSize(dtype))) throw TensorTooLarge();
  t.bytes.assign(static_cast<size_t>(n) * ElementSize(dtype), 0);
  return t;
}

Tensor Tensor::FromF32(std::vector<int64_t> shape, const std::vector<float>& values) {
  Tensor t = Zeros(DType::kF32, std::move(shape));
  if (!values.empty()) {
    CopyBytes(t.bytes.data(), values.data(), std::min(t.bytes.size(), values.size() * 4));
  }
  return t;
}

Tensor Tensor::FromI64(std::vector<int64_t> shape, const std::vector<int64_t>& values) {
  Tensor t = Zeros(DType::kI64, std::move(shape));
  if (!values.empty()) {
    CopyBytes(t.bytes.data(), values.data(), std::min(t.bytes.size(), values.size() * 8));
  }
  return t;
}

int64_t Tensor::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

int64_t Product(const std::vector<int64_t>& v, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= v[i];
  return p;
}

std::string Describe(const Tensor& t) {
  return std::string(DTypeName(t.dtype)) + ShapeString(t.shape);
}

Result<int64_t> CheckedNumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("shape " + ShapeString(shape) + " has a negative dimension");
    if (d != 0 && n > kMaxElements / d) {
      return InvalidArgument("shape " + ShapeString(shape) +
                             " has more than 2^40 elements (too large for the evaluator)");
    }
    n *= d;
  }
  return n;
}

Result<std::vector<int64_t>> BroadcastShapes(const std::vector<int64_t>& a,
                                             const std::vector<int64_t>& b) {
  size_t rank = std::max(a.size(), b.size());
  std::vector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == db || db == 1) {
      out[i] = da;
    } else if (da == 1) {
      out[i] = db;
    } else {
      return InvalidArgument("shapes " + ShapeString(a) + " and " + ShapeString(b) +
                             " do not broadcast");
    }
  }
  return out;
}

std::vector<int64_t> RowMajorStrides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

std::vector<int64_t> BroadcastStrides(const std::vector<int64_t>& shape,
                                      const std::vector<int64_t>& out_shape) {
  std::vector<int64_t> own = RowMajorStrides(shape);
  std::vector<int64_t> strides(out_shape.size(), 0);
  size_t offset = out_shape.size() - shape.size();
  for (size_t i = 0; i < shape.size(); ++i) {
    strides[offset + i] = shape[i] == 1 ? 0 : own[i];
  }
  return strides;
}

Result<Tensor> FromView(const TensorView& view) {
  const TensorInfo& info = view.info;
  if (IsQuantized(info.dtype)) {
    return Unsupported("tensor '" + info.name + "': block-quantized element type " +
                       std::string(DTypeName(info.dtype)) + " is not one the evaluator reads");
  }
  Tensor t;
  t.dtype = info.dtype;
  for (uint64_t d : info.shape.dims()) t.shape.push_back(static_cast<int64_t>(d));
  MP_ASSIGN_OR_RETURN(int64_t n, CheckedNumElements(t.shape));
  if (view.data == nullptr ||
      view.data->size() != static_cast<uint64_t>(n) * ElementSize(t.dtype)) {
    return Internal("tensor '" + info.name + "': data size disagrees with its shape");
  }
  t.bytes.assign(view.data->data(), view.data->data() + view.data->size());
  return t;
}

Result<TensorView> ToView(const std::string& name, const Tensor& t) {
  std::vector<uint64_t> dims(t.shape.begin(), t.shape.end());
  MP_ASSIGN_OR_RETURN(TensorInfo info, TensorInfo::Make(name, t.dtype, Shape(std::move(dims))));
  MP_ASSIGN_OR_RETURN(std::shared_ptr<Buffer> buffer, Buffer::Allocate(t.bytes.size()));
  if (!t.bytes.empty()) CopyBytes(buffer->mutable_data(), t.bytes.data(), t.bytes.size());
  return TensorView{std::move(info), std::move(buffer)};
}

Result<Tensor> FromTensorProto(const ::onnx::TensorProto& proto) {
  const std::string where = "TensorProto '" + proto.name() + "'";
  if (proto.data_location() == ::onnx::TensorProto::EXTERNAL || proto.external_data_size() > 0) {
    return Unsupported(where + ": external data is not read here (open the model file instead)");
  }
  std::optional<DType> dtype = DTypeFromOnnx(proto.data_type());
  if (!dtype) {
    return Unsupported(where + ": data_type " + std::to_string(proto.data_type()) +
                       " has no modelport dtype");
  }
  Tensor t;
  t.dtype = *dtype;
  t.shape.assign(proto.dims().begin(), proto.dims().end());
  MP_ASSIGN_OR_RETURN(int64_t n, CheckedNumElements(t.shape));
  const size_t size = ElementSize(t.dtype);
  const size_t want = static_cast<size_t>(n) * size;
  auto mismatch = [&](const char* field, int64_t have) {
    return Corrupt(where + ": " + field + " holds " + std::to_string(have) + " values, dims " +
                   ShapeString(t.shape) + " need " + std::to_string(n));
  };
  if (proto.has_raw_data()) {
    if (proto.raw_data().size() != want) {
      return Corrupt(where + ": raw_data has " + std::to_string(proto.raw_data().size()) +
                     " bytes, dims " + ShapeString(t.shape) + " of " +
                     std::string(DTypeName(t.dtype)) + " need " + std::to_string(want));
    }
    t.bytes.assign(proto.raw_data().begin(), proto.raw_data().end());
    return t;
  }
  t.bytes.assign(want, 0);
  switch (t.dtype) {
    case DType::kF32:
    case DType::kC64: {
      int64_t count = t.dtype == DType::kC64 ? 2 * n : n;
      if (proto.float_data_size() != count) return mismatch("float_data", proto.float_data_size());
      CopyBytes(t.bytes.data(), proto.float_data().data(), want);
      break;
    }
    case DType::kF64:
      if (proto.double_data_size() != n) return mismatch("double_data", proto.double_data_size());
      CopyBytes(t.bytes.data(), proto.double_data().data(), want);
      break;
    case DType::kI64:
      if (proto.int64_data_size() != n) return mismatch("int64_data", proto.int64_data_size());
      CopyBytes(t.bytes.data(), proto.int64_data().data(), want);
      break;
    case DType::kU32:
    case DType::kU64:
      if (proto.uint64_data_size() != n) return mismatch("uint64_data", proto.uint64_data_size());
      PackLow(proto.uint64_data().data(), n, size, t.bytes.data());
      break;
    default:  // i32 and every narrower type (bool, 8/16-bit ints, f16/bf16/f8 as bits)
      if (proto.int32_data_size() != n) return mismatch("int32_data", proto.int32_data_size());
      PackLow(proto.int32_data().data(), n, size, t.bytes.data());
      break;
  }
  return t;
}

void ToTensorProto(const Tensor& t, const std::string& name, ::onnx::TensorProto* proto) {
  proto->Clear();
  proto->set_name(name);
  proto->set_data_type(OnnxFromDType(t.dtype));
  for (int64_t d : t.shape) proto->add_dims(d);
  proto->set_raw_data(t.bytes.data(), t.bytes.size());
}

double GetAsDouble(const Tensor& t, int64_t i) {
  double v = 0;
  switch (t.dtype) {
    case DType::kF32:
      return t.data<float>()[i];
    case DType::kF64:
      return t.data<double>()[i];
    case DType::kI64:
      return static_cast<double>(t.data<int64_t>()[i]);
    case DType::kI32:
      return t.data<int32_t>()[i];
    case DType::kBool:
      return t.data<uint8_t>()[i] != 0 ? 1.0 : 0.0;
    default:
      // Other plain types (narrow ints, f16/bf16/f8): decode one element.
      if (!DecodeToF64(t.dtype, t.bytes.data() + i * ElementSize(t.dtype), 1, &v).ok()) return 0;
      return v;
  }
}

int64_t GetAsInt64(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::kI64:
      return t.data<int64_t>()[i];
    case DType::kI32:
      return t.data<int32_t>()[i];
    case DType::kBool:
      return t.data<uint8_t>()[i] != 0 ? 1 : 0;
    case DType::kU64: {
      uint64_t v;
      CopyBytes(&v, t.bytes.data() + i * 8, 8);
      return static_cast<int64_t>(v);
    }
    default:
      return static_cast<int64_t>(GetAsDouble(t, i));
  }
}

Result<std::vector<int64_t>> ToInt64Vector(const Tensor& t, const std::string& what) {
  if (t.dtype != DType::kI64 && t.dtype != DType::kI32) {
    return InvalidArgument(what + " must be an integer tensor (i64 or i32), got " + Describe(t));
  }
  std::vector<int64_t> out(static_cast<size_t>(t.NumElements()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = GetAsInt64(t, static_cast<int64_t>(i));
  return out;
}

Result<int64_t> NormalizeAxis(int64_t axis, int64_t rank, const std::string& what) {
  if (axis < -rank || axis >= rank) {
    return InvalidArgument(what + " " + std::to_string(axis) + " is out of range for rank " +
                           std::to_string(rank));
  }
  return axis < 0 ? axis + rank : axis;
}

}  // namespace mp::eval
