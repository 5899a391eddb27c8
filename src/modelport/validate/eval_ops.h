// The ONNX reference evaluator's kernel interface. Each kernel implements one op of the default
// ("" / "ai.onnx") domain as the ONNX operator spec defines it (docs/Operators.md), for every
// opset version from 1 to the newest one the spec has, reading the model's opset where an op's
// behaviour changed between versions (e.g. Softmax's axis semantics before and after 13, inputs
// that were attributes before 13: Split's split, Squeeze/Unsqueeze axes, ReduceSum axes; Clip's
// min/max before 11).
//
// Kernels never guess: an attribute value, input combination or element type they do not
// implement is an Unsupported error naming it; malformed input (wrong rank, shapes that do not
// broadcast, an axis out of range) is InvalidArgument. The evaluator prefixes every error with
// the node's name and op type.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/core/status.h"
#include "modelport/validate/eval_tensor.h"

namespace onnx {
class NodeProto;
class AttributeProto;
}  // namespace onnx

namespace mp::eval {

/// What a kernel sees of one node: its attributes, its inputs and the model's opset.
class OpContext {
 public:
  OpContext(const ::onnx::NodeProto& node, int64_t opset, std::vector<const Tensor*> inputs,
            size_t output_count)
      : node_(node), opset_(opset), inputs_(std::move(inputs)), output_count_(output_count) {}

  const ::onnx::NodeProto& node() const { return node_; }
  /// The model's opset version for the default domain.
  int64_t opset() const { return opset_; }

  /// Number of inputs the node lists (omitted optional inputs, named "", included).
  size_t input_count() const { return inputs_.size(); }
  /// True when input `i` exists and is not an omitted optional input.
  bool has_input(size_t i) const { return i < inputs_.size() && inputs_[i] != nullptr; }
  /// Input `i`; InvalidArgument naming the op when it is missing.
  Result<const Tensor*> input(size_t i) const;
  /// Number of outputs the node lists (kernels fill exactly this many; an optional output
  /// named "" still gets a value, which the evaluator drops).
  size_t output_count() const { return output_count_; }

  /// The attribute called `name`, or nullptr.
  const ::onnx::AttributeProto* attribute(std::string_view name) const;
  bool has_attribute(std::string_view name) const { return attribute(name) != nullptr; }
  /// Typed attribute reads: the default when the attribute is absent; InvalidArgument when it
  /// is present with another type.
  Result<int64_t> Int(std::string_view name, int64_t def) const;
  Result<float> Float(std::string_view name, float def) const;
  Result<std::string> String(std::string_view name, std::string def) const;
  Result<std::vector<int64_t>> Ints(std::string_view name, std::vector<int64_t> def = {}) const;
  Result<std::vector<float>> Floats(std::string_view name, std::vector<float> def = {}) const;
  /// A tensor-valued attribute (Constant's value, ConstantOfShape's value); nullopt if absent.
  Result<std::optional<Tensor>> TensorAttr(std::string_view name) const;

  /// InvalidArgument / Unsupported with `why` (the evaluator adds the node's name and op).
  Status Invalid(std::string why) const { return InvalidArgument(std::move(why)); }
  Status NotSupported(std::string why) const { return Unsupported(std::move(why)); }

 private:
  const ::onnx::NodeProto& node_;
  int64_t opset_;
  std::vector<const Tensor*> inputs_;
  size_t output_count_;
};

/// A kernel computes a node's outputs (exactly ctx.output_count() of them, in order).
using Kernel = Result<std::vector<Tensor>> (*)(const OpContext& ctx);

/// Op type -> kernel, default domain only.
using KernelTable = std::map<std::string, Kernel, std::less<>>;

/// Each file of kernels adds its ops to the table.
/// eval_ops_elementwise.cc: Add Sub Mul Div Pow Sqrt Exp Log Neg Abs Erf Tanh Sigmoid Relu
///   LeakyRelu Gelu Clip Where Equal Less Greater Cast Identity Dropout
void AddElementwiseKernels(KernelTable& table);
/// eval_ops_shape.cc: Reshape Transpose Flatten Squeeze Unsqueeze Concat Split Slice Gather
///   Expand Shape Constant ConstantOfShape Range
void AddShapeKernels(KernelTable& table);
/// eval_ops_nn.cc: MatMul Gemm Conv ConvTranspose MaxPool AveragePool GlobalAveragePool Pad
///   BatchNormalization LayerNormalization Softmax LogSoftmax ReduceMean ReduceSum
void AddNnKernels(KernelTable& table);
/// eval_ops_quant.cc: DequantizeLinear
void AddQuantKernels(KernelTable& table);

/// The table with every kernel above (built once).
const KernelTable& Kernels();

}  // namespace mp::eval
