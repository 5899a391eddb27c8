// A reference evaluator for ONNX graphs: runs a model's main graph on given inputs in plain C++
// (f32, f64, i64, i32 and bool), so `modelport validate` can check a model's outputs without
// an external runtime. Correctness is measured against the ONNX node conformance tests
// (libonnx-testdata) and onnxruntime; see docs/VALIDATION.md for the supported ops and counts.
//
// Only the default domain is supported, with no subgraphs (If/Loop/Scan are unsupported ops).
// A model whose graph uses any op without a kernel is refused when prepared, every missing op
// named, never guessed.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "modelport/core/status.h"
#include "modelport/core/tensor.h"
#include "modelport/validate/eval_tensor.h"

namespace onnx {
class ModelProto;
}
namespace mp::onnx {
class OnnxSource;
}

namespace mp::eval {

/// A named tensor: a graph input given to Run or an output it returns.
using NamedTensor = std::pair<std::string, Tensor>;

class OnnxEvaluator {
 public:
  /// Opens `path` with modelport's ONNX reader (so external data stays confined to the model's
  /// folder and every initializer is bounds-checked) and prepares its main graph. Unsupported
  /// naming every op without a kernel (and non-default domains, subgraphs); InvalidArgument for
  /// a graph that is not a DAG or uses a value nothing produces.
  static Result<std::unique_ptr<OnnxEvaluator>> Open(const std::string& path);

  /// Prepares the graph of a model already opened with modelport's ONNX reader (what Open does
  /// after opening `path`).
  static Result<std::unique_ptr<OnnxEvaluator>> FromSource(const onnx::OnnxSource& source);

  /// Prepares `model`, taking initializer values from `initializers` by name (tensors the
  /// proto itself carries inline are used when `initializers` lacks them; may be nullptr).
  static Result<std::unique_ptr<OnnxEvaluator>> FromProto(const ::onnx::ModelProto& model,
                                                          const ModelSource* initializers);

  ~OnnxEvaluator();

  /// The graph inputs that are not initializers, in graph order.
  const std::vector<std::string>& input_names() const;
  /// The graph outputs, in graph order.
  const std::vector<std::string>& output_names() const;
  /// The model's default-domain opset version.
  int64_t opset() const;

  /// The largest tensor a run may compute, in bytes (default 16 GiB); a node asking for more
  /// fails with LimitExceeded.
  void set_max_tensor_bytes(uint64_t bytes);

  /// Runs the graph. Every input in input_names() must be given, by name (an input that is
  /// also an initializer may be given to override it); extra names are InvalidArgument. The
  /// outputs come back in output_names() order. Errors name the failing node.
  Result<std::vector<NamedTensor>> Run(const std::vector<NamedTensor>& inputs) const;

 private:
  struct Impl;
  explicit OnnxEvaluator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// The op types the evaluator implements, sorted.
std::vector<std::string> SupportedOps();

}  // namespace mp::eval
