#include "modelport/validate/eval_ops.h"

#include <onnx/onnx_pb.h>

namespace mp::eval {
namespace {

using Attr = ::onnx::AttributeProto;

Status WrongType(std::string_view name, const Attr& a, const char* want) {
  return InvalidArgument("attribute '" + std::string(name) + "' has type " +
                         Attr::AttributeType_Name(a.type()) + ", expected " + want);
}

}  // namespace

Result<const Tensor*> OpContext::input(size_t i) const {
  if (!has_input(i)) {
    return InvalidArgument("input " + std::to_string(i) + " of " + node_.op_type() + " is missing");
  }
  return inputs_[i];
}

const ::onnx::AttributeProto* OpContext::attribute(std::string_view name) const {
  for (const Attr& a : node_.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}

Result<int64_t> OpContext::Int(std::string_view name, int64_t def) const {
  const Attr* a = attribute(name);
  if (a == nullptr) return def;
  if (a->type() != Attr::INT) return WrongType(name, *a, "INT");
  return a->i();
}

Result<float> OpContext::Float(std::string_view name, float def) const {
  const Attr* a = attribute(name);
  if (a == nullptr) return def;
  if (a->type() != Attr::FLOAT) return WrongType(name, *a, "FLOAT");
  return a->f();
}

Result<std::string> OpContext::String(std::string_view name, std::string def) const {
  const Attr* a = attribute(name);
  if (a == nullptr) return def;
  if (a->type() != Attr::STRING) return WrongType(name, *a, "STRING");
  return a->s();
}

Result<std::vector<int64_t>> OpContext::Ints(std::string_view name,
                                             std::vector<int64_t> def) const {
  const Attr* a = attribute(name);
  if (a == nullptr) return def;
  if (a->type() != Attr::INTS) return WrongType(name, *a, "INTS");
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

Result<std::vector<float>> OpContext::Floats(std::string_view name, std::vector<float> def) const {
  const Attr* a = attribute(name);
  if (a == nullptr) return def;
  if (a->type() != Attr::FLOATS) return WrongType(name, *a, "FLOATS");
  return std::vector<float>(a->floats().begin(), a->floats().end());
}

Result<std::optional<Tensor>> OpContext::TensorAttr(std::string_view name) const {
  const Attr* a = attribute(name);
  if (a == nullptr) return std::optional<Tensor>();
  if (a->type() != Attr::TENSOR) return WrongType(name, *a, "TENSOR");
  Result<Tensor> t = FromTensorProto(a->t());
  if (!t.ok()) return t.status().WithContext("attribute '" + std::string(name) + "'");
  return std::optional<Tensor>(std::move(t).value());
}

const KernelTable& Kernels() {
  static const KernelTable* table = [] {
    auto* t = new KernelTable();
    AddElementwiseKernels(*t);
    AddShapeKernels(*t);
    AddNnKernels(*t);
    AddQuantKernels(*t);
    return t;
  }();
  return *table;
}

}  // namespace mp::eval
