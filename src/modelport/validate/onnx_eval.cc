#include "modelport/validate/onnx_eval.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <new>
#include <optional>
#include <set>

#include "modelport/formats/format.h"
#include "modelport/formats/onnx/onnx.h"
#include "modelport/validate/eval_ops.h"

namespace mp::eval {
namespace {

bool IsDefaultDomain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

std::string Quoted(const std::string& s) { return "\"" + s + "\""; }

}  // namespace

struct OnnxEvaluator::Impl {
  // One node in execution order; value ids index Impl::values (-1: an omitted optional value).
  struct Step {
    const ::onnx::NodeProto* node;
    Kernel kernel;
    std::string label;  // node "<name>" (<OpType>)
    std::vector<int> inputs;
    std::vector<int> outputs;
  };

  ::onnx::ModelProto model;  // owns the NodeProtos the steps point into
  int64_t opset = 0;
  uint64_t max_tensor_bytes = uint64_t{16} << 30;
  std::vector<std::string> input_names;
  std::vector<std::string> output_names;
  std::vector<std::string> values;       // value id -> name
  std::map<std::string, int> value_ids;  // name -> value id
  std::map<int, Tensor> initializers;    // value id -> constant value
  std::map<int, DType> input_dtypes;     // declared element types of graph inputs
  std::vector<int> input_ids, output_ids;
  std::vector<Step> steps;
  // value id -> index of the last step reading it; kNeverRead for values no step or graph
  // output reads, kGraphOutput for graph outputs.
  static constexpr size_t kNeverRead = SIZE_MAX - 1;
  static constexpr size_t kGraphOutput = SIZE_MAX;
  std::vector<size_t> last_use;

  int Id(const std::string& name) {
    auto [it, inserted] = value_ids.emplace(name, static_cast<int>(values.size()));
    if (inserted) values.push_back(name);
    return it->second;
  }

  Status Prepare(const ModelSource* source);
  Status SortNodes();
};

Status OnnxEvaluator::Impl::Prepare(const ModelSource* source) {
  bool has_opset = false;
  for (const auto& op : model.opset_import()) {
    if (IsDefaultDomain(op.domain())) {
      opset = op.version();
      has_opset = true;
    }
  }
  if (!has_opset) return InvalidArgument("the model imports no opset of the default domain");
  const ::onnx::GraphProto& graph = model.graph();
  if (graph.sparse_initializer_size() > 0) {
    return Unsupported("sparse initializers are not supported by the reference evaluator");
  }

  // Every op is checked before anything else, so one error names all missing ones.
  const KernelTable& kernels = Kernels();
  std::map<std::string, int> missing;
  for (const auto& node : graph.node()) {
    std::string op =
        IsDefaultDomain(node.domain()) ? node.op_type() : node.domain() + "::" + node.op_type();
    bool subgraph = false;
    for (const auto& a : node.attribute()) {
      subgraph |=
          a.type() == ::onnx::AttributeProto::GRAPH || a.type() == ::onnx::AttributeProto::GRAPHS;
    }
    if (!IsDefaultDomain(node.domain()) || subgraph || kernels.find(op) == kernels.end()) {
      ++missing[op];
    }
  }
  if (!missing.empty()) {
    std::string list;
    for (const auto& [op, count] : missing) {
      list += (list.empty() ? "" : ", ") + op + " (" + std::to_string(count) + ")";
    }
    return Unsupported("the reference evaluator has no kernel for " + list);
  }

  for (const auto& init : graph.initializer()) {
    const int id = Id(init.name());
    Result<Tensor> value = Internal("unset");
    std::optional<size_t> index = source ? source->Find(init.name()) : std::nullopt;
    if (index) {
      Result<TensorView> view = source->Load(*index);
      value = view.ok() ? FromView(*view) : Result<Tensor>(view.status());
    } else {
      value = FromTensorProto(init);
    }
    if (!value.ok()) return value.status().WithContext("initializer " + Quoted(init.name()));
    initializers[id] = std::move(value).value();
  }
  for (const auto& in : graph.input()) {
    const int id = Id(in.name());
    if (initializers.count(id)) continue;
    input_names.push_back(in.name());
    input_ids.push_back(id);
    if (in.type().has_tensor_type()) {
      std::optional<DType> d = DTypeFromOnnx(in.type().tensor_type().elem_type());
      if (d) input_dtypes[id] = *d;
    }
  }
  for (const auto& out : graph.output()) {
    output_names.push_back(out.name());
    output_ids.push_back(Id(out.name()));
  }
  return SortNodes();
}

// Orders the nodes so each runs after the producers of its inputs (Kahn's algorithm, keeping
// graph order among ready nodes), and records each value's last reader.
Status OnnxEvaluator::Impl::SortNodes() {
  const ::onnx::GraphProto& graph = model.graph();
  const int n = graph.node_size();
  std::map<int, int> producer;  // value id -> node index
  for (int i = 0; i < n; ++i) {
    for (const std::string& out : graph.node(i).output()) {
      if (out.empty()) continue;
      const int id = Id(out);
      if (initializers.count(id) ||
          std::find(input_ids.begin(), input_ids.end(), id) != input_ids.end()) {
        return InvalidArgument("value " + Quoted(out) + " is produced by node " +
                               Quoted(graph.node(i).name()) +
                               " but is also a graph input or initializer");
      }
      if (!producer.emplace(id, i).second) {
        return InvalidArgument("value " + Quoted(out) + " is produced by two nodes");
      }
    }
  }
  std::vector<int> pending(n, 0);
  std::vector<std::vector<int>> readers(n);
  for (int i = 0; i < n; ++i) {
    const auto& node = graph.node(i);
    for (const std::string& in : node.input()) {
      if (in.empty()) continue;
      const int id = Id(in);
      auto p = producer.find(id);
      if (p != producer.end()) {
        ++pending[i];
        readers[p->second].push_back(i);
      } else if (!initializers.count(id) &&
                 std::find(input_ids.begin(), input_ids.end(), id) == input_ids.end()) {
        return InvalidArgument("value " + Quoted(in) + " read by node " + Quoted(node.name()) +
                               " (" + node.op_type() +
                               ") is not produced by any node, graph input or initializer");
      }
    }
  }
  for (size_t k = 0; k < output_ids.size(); ++k) {
    const int id = output_ids[k];
    if (!producer.count(id) && !initializers.count(id) &&
        std::find(input_ids.begin(), input_ids.end(), id) == input_ids.end()) {
      return InvalidArgument("graph output " + Quoted(output_names[k]) +
                             " is not produced by any node, graph input or initializer");
    }
  }
  std::set<int> ready;
  for (int i = 0; i < n; ++i) {
    if (pending[i] == 0) ready.insert(i);
  }
  const KernelTable& kernels = Kernels();
  while (!ready.empty()) {
    const int i = *ready.begin();
    ready.erase(ready.begin());
    const auto& node = graph.node(i);
    Step step{&node, kernels.find(node.op_type())->second, "", {}, {}};
    std::string name = node.name().empty() ? "#" + std::to_string(i) : node.name();
    step.label = "node " + Quoted(name) + " (" + node.op_type() + ")";
    for (const std::string& in : node.input()) step.inputs.push_back(in.empty() ? -1 : Id(in));
    for (const std::string& out : node.output()) {
      step.outputs.push_back(out.empty() ? -1 : Id(out));
    }
    steps.push_back(std::move(step));
    for (int r : readers[i]) {
      if (--pending[r] == 0) ready.insert(r);
    }
  }
  if (static_cast<int>(steps.size()) != n) {
    std::string cycle;
    for (int i = 0; i < n; ++i) {
      if (pending[i] > 0) cycle += (cycle.empty() ? "" : ", ") + Quoted(graph.node(i).name());
    }
    return InvalidArgument("the graph has a cycle through nodes " + cycle);
  }
  last_use.assign(values.size(), kNeverRead);
  for (size_t s = 0; s < steps.size(); ++s) {
    for (int id : steps[s].inputs) {
      if (id >= 0) last_use[id] = s;
    }
  }
  for (int id : output_ids) last_use[id] = kGraphOutput;
  return Status::Ok();
}

OnnxEvaluator::OnnxEvaluator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OnnxEvaluator::~OnnxEvaluator() = default;

Result<std::unique_ptr<OnnxEvaluator>> OnnxEvaluator::Open(const std::string& path) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> source, OpenModel(path));
  const auto* onnx_source = dynamic_cast<const onnx::OnnxSource*>(source.get());
  if (onnx_source == nullptr) {
    return InvalidArgument(path + ": not an ONNX model (opened as " +
                           std::string(source->format()) + ")");
  }
  Result<std::unique_ptr<OnnxEvaluator>> evaluator = FromSource(*onnx_source);
  if (!evaluator.ok()) return evaluator.status().WithContext(path);
  return evaluator;
}

Result<std::unique_ptr<OnnxEvaluator>> OnnxEvaluator::FromSource(const onnx::OnnxSource& source) {
  ::onnx::ModelProto model;
  const std::string& bytes = source.graph_proto();
  if (!model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Corrupt("the graph does not parse as an ONNX ModelProto");
  }
  return FromProto(model, &source);
}

Result<std::unique_ptr<OnnxEvaluator>> OnnxEvaluator::FromProto(const ::onnx::ModelProto& model,
                                                                const ModelSource* initializers) {
  auto impl = std::make_unique<Impl>();
  impl->model = model;
  MP_RETURN_IF_ERROR(impl->Prepare(initializers));
  return std::unique_ptr<OnnxEvaluator>(new OnnxEvaluator(std::move(impl)));
}

const std::vector<std::string>& OnnxEvaluator::input_names() const { return impl_->input_names; }
const std::vector<std::string>& OnnxEvaluator::output_names() const { return impl_->output_names; }
int64_t OnnxEvaluator::opset() const { return impl_->opset; }

void OnnxEvaluator::set_max_tensor_bytes(uint64_t bytes) { impl_->max_tensor_bytes = bytes; }

Result<std::vector<NamedTensor>> OnnxEvaluator::Run(const std::vector<NamedTensor>& inputs) const {
  const Impl& m = *impl_;
  // Values by id: pointers to initializers and given inputs, owned storage for node outputs.
  std::vector<const Tensor*> value(m.values.size(), nullptr);
  std::vector<std::optional<Tensor>> computed(m.values.size());
  for (const auto& [id, t] : m.initializers) value[id] = &t;
  for (const auto& [name, t] : inputs) {
    auto it = m.value_ids.find(name);
    const bool is_input =
        it != m.value_ids.end() &&
        (m.initializers.count(it->second) ||
         std::find(m.input_ids.begin(), m.input_ids.end(), it->second) != m.input_ids.end());
    if (!is_input) return InvalidArgument("input " + Quoted(name) + " is not a graph input");
    Result<int64_t> count = CheckedNumElements(t.shape);
    if (!count.ok()) return count.status().WithContext("input " + Quoted(name));
    if (IsQuantized(t.dtype) ||
        t.bytes.size() != static_cast<uint64_t>(*count) * ElementSize(t.dtype)) {
      return InvalidArgument("input " + Quoted(name) + " " + Describe(t) + " holds " +
                             std::to_string(t.bytes.size()) + " bytes, its shape needs " +
                             std::to_string(*count * ElementSize(t.dtype)));
    }
    auto declared = m.input_dtypes.find(it->second);
    if (declared != m.input_dtypes.end() && declared->second != t.dtype) {
      return InvalidArgument("input " + Quoted(name) + " is " + Describe(t) + ", the graph " +
                             "declares " + std::string(DTypeName(declared->second)));
    }
    value[it->second] = &t;
  }
  for (size_t k = 0; k < m.input_ids.size(); ++k) {
    if (value[m.input_ids[k]] == nullptr) {
      return InvalidArgument("input " + Quoted(m.input_names[k]) + " is not given");
    }
  }
  for (size_t s = 0; s < m.steps.size(); ++s) {
    const Impl::Step& step = m.steps[s];
    std::vector<const Tensor*> args;
    for (int id : step.inputs) args.push_back(id < 0 ? nullptr : value[id]);
    OpContext ctx(*step.node, m.opset, std::move(args), step.outputs.size());
    Result<std::vector<Tensor>> outs = Internal("unset");
    try {
      struct Limit {
        uint64_t saved = MaxTensorBytes();
        explicit Limit(uint64_t bytes) { MaxTensorBytes() = bytes; }
        ~Limit() { MaxTensorBytes() = saved; }
      } limit(m.max_tensor_bytes);
      outs = step.kernel(ctx);
    } catch (const TensorTooLarge&) {
      return LimitExceeded(step.label + ": an output would be over the evaluator's limit of " +
                           std::to_string(m.max_tensor_bytes) + " bytes per tensor");
    } catch (const std::bad_alloc&) {
      // A graph may ask for a huge tensor (ConstantOfShape, Expand, Range); refusing it here
      // keeps the exception from crossing the library boundary.
      return LimitExceeded(step.label + ": out of memory computing the node's outputs");
    }
    if (!outs.ok()) return outs.status().WithContext(step.label);
    if (outs->size() != step.outputs.size()) {
      return Internal(step.label + ": the kernel returned " + std::to_string(outs->size()) +
                      " outputs, the node has " + std::to_string(step.outputs.size()));
    }
    for (size_t k = 0; k < step.outputs.size(); ++k) {
      const int id = step.outputs[k];
      if (id < 0 || m.last_use[id] == Impl::kNeverRead) continue;
      computed[id] = std::move((*outs)[k]);
      value[id] = &*computed[id];
    }
    // Free what no later step reads (graph outputs are kept).
    for (int id : step.inputs) {
      if (id >= 0 && m.last_use[id] == s && computed[id]) {
        computed[id].reset();
        value[id] = nullptr;
      }
    }
  }
  std::vector<NamedTensor> result;
  for (size_t k = 0; k < m.output_ids.size(); ++k) {
    const Tensor* t = value[m.output_ids[k]];
    if (t == nullptr) return Internal("graph output " + Quoted(m.output_names[k]) + " was lost");
    result.emplace_back(m.output_names[k], *t);
  }
  return result;
}

std::vector<std::string> SupportedOps() {
  std::vector<std::string> ops;
  for (const auto& [op, kernel] : Kernels()) ops.push_back(op);
  return ops;
}

}  // namespace mp::eval
