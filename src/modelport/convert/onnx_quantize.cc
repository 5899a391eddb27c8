#include "modelport/convert/onnx_quantize.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/core/buffer.h"
#include "modelport/core/file.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using ::onnx::GraphProto;
using ::onnx::ModelProto;
using ::onnx::NodeProto;
using ::onnx::TensorProto;

// TensorProto.DataType codes (onnx/onnx.proto).
int32_t OnnxType(DType d) {
  switch (d) {
    case DType::kF32:
      return TensorProto::FLOAT;
    case DType::kU8:
      return TensorProto::UINT8;
    case DType::kI8:
      return TensorProto::INT8;
    case DType::kF16:
      return TensorProto::FLOAT16;
    case DType::kF64:
      return TensorProto::DOUBLE;
    case DType::kBF16:
      return TensorProto::BFLOAT16;
    case DType::kF8E4M3:
      return 17;  // FLOAT8E4M3FN (onnx 1.14+; the installed onnx.proto may predate it)
    case DType::kF8E5M2:
      return 19;  // FLOAT8E5M2
    default:
      return 0;
  }
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

bool IsDefaultDomain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

int64_t DefaultOpset(const ModelProto& m) {
  for (const auto& o : m.opset_import()) {
    if (IsDefaultDomain(o.domain())) return o.version();
  }
  return 0;
}

// Names already used anywhere in the main graph, so added initializers never collide.
class Names {
 public:
  explicit Names(const GraphProto& g) {
    for (const auto& t : g.initializer()) taken_.insert(t.name());
    for (const auto& v : g.input()) taken_.insert(v.name());
    for (const auto& v : g.output()) taken_.insert(v.name());
    for (const auto& v : g.value_info()) taken_.insert(v.name());
    for (const auto& n : g.node()) {
      taken_.insert(n.name());
      for (const auto& s : n.input()) taken_.insert(s);
      for (const auto& s : n.output()) taken_.insert(s);
    }
  }
  std::string Unique(const std::string& base) {
    std::string name = base;
    for (int k = 1; taken_.count(name) != 0; ++k) name = base + "_" + std::to_string(k);
    taken_.insert(name);
    return name;
  }

 private:
  std::set<std::string> taken_;
};

TensorProto Head(const std::string& name, DType dtype, const std::vector<int64_t>& dims) {
  TensorProto t;
  t.set_name(name);
  t.set_data_type(OnnxType(dtype));
  for (int64_t d : dims) t.add_dims(d);
  return t;
}

std::vector<int64_t> DimsOf(const Shape& shape) {
  std::vector<int64_t> dims;
  for (uint64_t d : shape.dims()) dims.push_back(static_cast<int64_t>(d));
  return dims;
}

// The initializers of the output in order, grouped by the computation that makes them: a
// group's `produce` fills one buffer per head (of exactly `sizes[k]` bytes).
struct Group {
  std::vector<TensorProto> heads;  // name, dims, data_type (and any other non-data fields)
  std::vector<uint64_t> sizes;
  std::function<Status(std::vector<std::shared_ptr<Buffer>>*)> produce;
};

Group CopyGroup(const onnx::OnnxSource& source, size_t index, TensorProto head) {
  Group g;
  g.heads.push_back(std::move(head));
  g.sizes.push_back(source.tensors()[index].byte_size);
  g.produce = [&source, index](std::vector<std::shared_ptr<Buffer>>* out) -> Status {
    MP_ASSIGN_OR_RETURN(TensorView view, source.Load(index));
    out->push_back(view.data);
    return Status::Ok();
  };
  return g;
}

// The source tensor `index` (f32) as floats, copied only when the view is misaligned. The
// pair keeps the floats alive (moving the vector keeps its buffer, so `*data` stays valid).
Result<std::pair<TensorView, std::vector<float>>> LoadF32(const onnx::OnnxSource& source,
                                                          size_t index, const float** data) {
  MP_ASSIGN_OR_RETURN(TensorView view, source.Load(index));
  std::vector<float> copy;
  if (reinterpret_cast<uintptr_t>(view.data->data()) % alignof(float) != 0) {
    copy.resize(view.data->size() / sizeof(float));
    if (!copy.empty()) std::memcpy(copy.data(), view.data->data(), view.data->size());
    *data = copy.data();
  } else {
    *data = reinterpret_cast<const float*>(view.data->data());
  }
  return std::make_pair(std::move(view), std::move(copy));
}

// Writes `model` (initializers cleared) with `groups` as its initializers to `out`: inline when
// `allow_inline` and the result fits protobuf's 2 GiB, else tensors of >= 1 KiB in
// "<out>.data". Atomic: the data file is renamed into place just before the model.
Status WriteModel(ModelProto model, std::vector<Group>& groups, bool allow_inline,
                  const std::string& out, const WriteOptions& write) {
  if (write.shard_size != 0) return InvalidArgument("ONNX models are not written in shards");
  constexpr uint64_t kThreshold = 1024;
  uint64_t estimate = model.ByteSizeLong(), external_bytes = 0;
  for (const Group& g : groups) {
    for (size_t k = 0; k < g.heads.size(); ++k) {
      estimate += g.heads[k].ByteSizeLong() + g.sizes[k] + 32;
      if (g.sizes[k] >= kThreshold) external_bytes += g.sizes[k];
    }
  }
  const bool external = !allow_inline || estimate > INT_MAX;
  const fs::path out_path(out);
  const std::string data_name = out_path.filename().string() + ".data";
  const std::string data_path = (out_path.parent_path() / data_name).string();
  const bool has_data = external && external_bytes > 0;
  std::error_code ec;
  if (write.no_overwrite) {
    if (fs::exists(fs::symlink_status(out, ec))) return AlreadyExists(out + ": exists");
    if (has_data && fs::exists(fs::symlink_status(data_path, ec))) {
      return AlreadyExists(data_path + ": exists");
    }
  }
  std::unique_ptr<AtomicFile> data;
  if (has_data) {
    MP_ASSIGN_OR_RETURN(data, AtomicFile::Create(data_path));
  }
  GraphProto* graph = model.mutable_graph();
  for (Group& g : groups) {
    std::vector<std::shared_ptr<Buffer>> buffers;
    MP_RETURN_IF_ERROR(g.produce(&buffers));
    if (buffers.size() != g.heads.size()) {
      return Internal("initializer " + Quote(g.heads[0].name()) + ": produced " +
                      std::to_string(buffers.size()) + " tensors, expected " +
                      std::to_string(g.heads.size()));
    }
    for (size_t k = 0; k < g.heads.size(); ++k) {
      TensorProto* t = graph->add_initializer();
      *t = std::move(g.heads[k]);
      const Buffer& b = *buffers[k];
      if (b.size() != g.sizes[k]) {
        return Internal("initializer " + Quote(t->name()) + ": " + std::to_string(b.size()) +
                        " bytes, expected " + std::to_string(g.sizes[k]));
      }
      if (data && b.size() >= kThreshold) {
        const uint64_t align =
            b.size() >= onnx::kPageAlignFrom ? onnx::kPageAlign : onnx::kExternalAlign;
        const uint64_t at = (data->bytes_written() + align - 1) / align * align;
        MP_RETURN_IF_ERROR(data->WriteZeros(at - data->bytes_written()));
        MP_RETURN_IF_ERROR(data->Write(b.data(), b.size()));
        auto add = [t](const std::string& key, const std::string& value) {
          auto* e = t->add_external_data();
          e->set_key(key);
          e->set_value(value);
        };
        add("location", data_name);
        add("offset", std::to_string(at));
        add("length", std::to_string(b.size()));
        t->set_data_location(TensorProto::EXTERNAL);
      } else {
        t->set_raw_data(b.data(), b.size());
      }
    }
    buffers.clear();
  }
  const size_t size = model.ByteSizeLong();
  if (size > INT_MAX) {
    return InvalidArgument("the model would be " + std::to_string(size) +
                           " bytes, over protobuf's 2 GiB limit for one message");
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) return Internal("protobuf could not serialize the model");
  MP_ASSIGN_OR_RETURN(auto file, AtomicFile::Create(out));
  MP_RETURN_IF_ERROR(file->Write(bytes.data(), bytes.size()));
  if (data) MP_RETURN_IF_ERROR(data->Commit(write.durable));
  return file->Commit(write.durable);
}

Result<ModelProto> ParseGraph(const onnx::OnnxSource& source) {
  ModelProto model;
  if (!model.ParseFromString(source.graph_proto())) {
    return Corrupt("libprotobuf could not parse the model's graph");
  }
  return model;
}

// The output-channel axis of weight `name` judged from its first consumer that decides it.
int JudgeAxis(const GraphProto& g, const std::string& name, int rank, int fallback) {
  for (const NodeProto& n : g.node()) {
    if (!IsDefaultDomain(n.domain())) continue;
    for (int i = 0; i < n.input_size(); ++i) {
      if (n.input(i) != name) continue;
      const std::string& op = n.op_type();
      if (op == "Conv" && i == 1) return 0;
      if (op == "ConvTranspose" && i == 1) return 1;
      if (op == "Gemm" && i == 1) {
        int64_t trans_b = 0;
        for (const auto& a : n.attribute()) {
          if (a.name() == "transB") trans_b = a.i();
        }
        return trans_b != 0 ? 0 : 1;
      }
      if (op == "MatMul" && i == 1) return rank - 1;
      if (op == "Gather" && i == 0) return 0;
    }
  }
  return fallback;
}

Result<QuantReport> QuantizeImpl(const onnx::OnnxSource& source, const std::string& out,
                                 const QuantizeOptions& options, const WriteOptions& write) {
  const QuantScheme scheme = options.scheme;
  const DType stored = SchemeDType(scheme);
  if (IsQuantized(stored)) {
    return Unsupported("ONNX has no ggml block types (scheme " + std::string(SchemeName(scheme)) +
                       "); write GGUF");
  }
  MP_ASSIGN_OR_RETURN(ModelProto model, ParseGraph(source));
  const int64_t opset = DefaultOpset(model);
  const int64_t need = scheme == QuantScheme::kInt8 || scheme == QuantScheme::kBF16 ? 13
                       : stored == DType::kF8E4M3 || stored == DType::kF8E5M2       ? 19
                                                                                    : 6;
  if (opset < need) {
    const std::string what = scheme == QuantScheme::kInt8
                                 ? "per-axis DequantizeLinear"
                                 : "Cast to " + std::string(DTypeName(stored));
    return InvalidArgument("the model imports default-domain opset " + std::to_string(opset) +
                           "; scheme " + std::string(SchemeName(scheme)) +
                           " needs opset >= " + std::to_string(need) + " (" + what +
                           "); re-export the model with a newer opset");
  }

  GraphProto* graph = model.mutable_graph();
  std::vector<TensorProto> heads(graph->initializer().begin(), graph->initializer().end());
  Names names(*graph);
  graph->clear_initializer();
  std::set<std::string> graph_inputs;
  for (const auto& v : graph->input()) graph_inputs.insert(v.name());

  QuantReport report;
  report.scheme = scheme;
  std::vector<Group> groups;
  std::vector<NodeProto> new_nodes;
  std::set<std::string> replaced;
  for (TensorProto& head : heads) {
    const std::optional<size_t> found = source.Find(head.name());
    if (!found) return Internal("initializer " + Quote(head.name()) + " is not in the index");
    const size_t index = *found;
    const TensorInfo& info = source.tensors()[index];
    MP_ASSIGN_OR_RETURN(const uint64_t elements, info.shape.NumElements());
    TensorQuantReport tr;
    tr.name = info.name;
    tr.from = tr.to = info.dtype;
    tr.elements = elements;
    tr.bytes_before = tr.bytes_after = info.byte_size;
    tr.reason = KeepReason(info, options);
    if (tr.reason.empty() && info.dtype != DType::kF32) {
      tr.reason = std::string(DTypeName(info.dtype)) + " weights are kept (only f32 is quantized)";
    }
    if (!tr.reason.empty()) {
      report.tensors.push_back(std::move(tr));
      groups.push_back(CopyGroup(source, index, std::move(head)));
      continue;
    }
    const std::string name = info.name;
    const std::vector<int64_t> dims = DimsOf(info.shape);
    const size_t slot = report.tensors.size();
    tr.quantized = true;
    tr.to = stored;
    NodeProto node;
    Group g;
    if (scheme == QuantScheme::kInt8) {
      const int rank = static_cast<int>(info.shape.rank());
      const int axis = options.per_tensor ? -1 : JudgeAxis(*graph, name, rank, options.axis);
      MP_ASSIGN_OR_RETURN(const ChannelLayout layout,
                          LayoutFor(info.shape, axis, options.per_tensor));
      tr.axis = options.per_tensor ? -1 : (axis < 0 ? axis + rank : axis);
      const std::vector<int64_t> scale_dims =
          options.per_tensor ? std::vector<int64_t>{}
                             : std::vector<int64_t>{static_cast<int64_t>(layout.channels)};
      const std::string q_name = names.Unique(name + std::string(kOnnxQuantizedSuffix));
      const std::string s_name = names.Unique(name + std::string(kOnnxScaleSuffix));
      const std::string z_name = names.Unique(name + std::string(kOnnxZeroPointSuffix));
      g.heads = {Head(q_name, DType::kI8, dims), Head(s_name, DType::kF32, scale_dims),
                 Head(z_name, DType::kI8, scale_dims)};
      g.sizes = {elements, layout.channels * 4, layout.channels};
      tr.bytes_after = elements + layout.channels * 5;
      g.produce = [&source, &report, index, slot,
                   layout](std::vector<std::shared_ptr<Buffer>>* bufs) -> Status {
        const std::string& tname = source.tensors()[index].name;
        const float* x = nullptr;
        MP_ASSIGN_OR_RETURN(auto loaded, LoadF32(source, index, &x));
        MP_ASSIGN_OR_RETURN(auto q, Buffer::Allocate(layout.elements()));
        MP_ASSIGN_OR_RETURN(auto s, Buffer::Allocate(layout.channels * sizeof(float)));
        MP_ASSIGN_OR_RETURN(auto z, Buffer::Allocate(layout.channels));
        std::vector<float> scales(layout.channels);
        Status st = Int8Scales(x, layout, scales.data());
        if (!st.ok()) return std::move(st).WithContext("initializer " + Quote(tname));
        auto* qd = reinterpret_cast<int8_t*>(q->mutable_data());
        QuantizeInt8(x, layout, scales.data(), qd);
        std::memcpy(s->mutable_data(), scales.data(), scales.size() * sizeof(float));
        std::memset(z->mutable_data(), 0, layout.channels);
        std::vector<float> back(layout.elements());
        DequantizeInt8(qd, layout, scales.data(), back.data());
        TensorQuantReport& r = report.tensors[slot];
        r.error = ErrorStats();
        r.error.Add(x, back.data(), layout.elements());
        r.measured = true;
        *bufs = {q, s, z};
        return Status::Ok();
      };
      node.set_op_type("DequantizeLinear");
      node.add_input(q_name);
      node.add_input(s_name);
      node.add_input(z_name);
      if (!options.per_tensor) {
        auto* a = node.add_attribute();
        a->set_name("axis");
        a->set_type(::onnx::AttributeProto::INT);
        a->set_i(tr.axis);
      }
    } else {
      const std::string c_name = names.Unique(name + "_" + std::string(SchemeName(scheme)));
      g.heads = {Head(c_name, stored, dims)};
      g.sizes = {elements * ElementSize(stored)};
      tr.bytes_after = g.sizes[0];
      g.produce = [&source, &report, index, slot,
                   stored](std::vector<std::shared_ptr<Buffer>>* bufs) -> Status {
        const std::string& tname = source.tensors()[index].name;
        MP_ASSIGN_OR_RETURN(TensorView view, source.Load(index));
        auto cast = CastTensor(view, stored);
        if (!cast) return cast.error().WithContext("initializer " + Quote(tname));
        const uint64_t n = view.data->size() / sizeof(float);
        std::vector<double> wide(n);
        MP_RETURN_IF_ERROR(DecodeToF64(stored, cast->data->data(), n, wide.data()));
        std::vector<float> back(wide.begin(), wide.end()), x(n);
        if (n != 0) std::memcpy(x.data(), view.data->data(), n * sizeof(float));
        TensorQuantReport& r = report.tensors[slot];
        r.error = ErrorStats();
        r.error.Add(x.data(), back.data(), n);
        r.measured = true;
        *bufs = {cast->data};
        return Status::Ok();
      };
      node.set_op_type("Cast");
      node.add_input(c_name);
      auto* a = node.add_attribute();
      a->set_name("to");
      a->set_type(::onnx::AttributeProto::INT);
      a->set_i(TensorProto::FLOAT);
    }
    node.set_name(names.Unique(name + "_" + node.op_type()));
    node.add_output(name);
    new_nodes.push_back(std::move(node));
    replaced.insert(name);
    report.tensors.push_back(std::move(tr));
    groups.push_back(std::move(g));
  }

  // A value produced by a node cannot also be a graph input (models of IR < 4 list their
  // initializers as inputs too).
  auto* inputs = graph->mutable_input();
  inputs->erase(std::remove_if(
                    inputs->begin(), inputs->end(),
                    [&](const ::onnx::ValueInfoProto& v) { return replaced.count(v.name()) != 0; }),
                inputs->end());
  // The new nodes go first: the graph stays topologically sorted.
  google::protobuf::RepeatedPtrField<NodeProto> nodes;
  for (auto& n : new_nodes) *nodes.Add() = std::move(n);
  for (auto& n : *graph->mutable_node()) *nodes.Add() = std::move(n);
  graph->mutable_node()->Swap(&nodes);

  const bool allow_inline = source.files().files.size() <= 1;
  MP_RETURN_IF_ERROR(WriteModel(std::move(model), groups, allow_inline, out, write));
  return report;
}

Status DequantizeImpl(const onnx::OnnxSource& source, const std::string& out, DType to,
                      const WriteOptions& write) {
  if (to != DType::kF32) {
    // The folded nodes output f32 and their consumers expect f32: an initializer of another
    // dtype in their place would not type-check.
    return InvalidArgument("dequantize to " + std::string(DTypeName(to)) +
                           ": an ONNX model's DequantizeLinear and Cast outputs are f32, so "
                           "the weights are folded back to f32 (for f16 weights, quantize "
                           "with --scheme f16)");
  }
  MP_ASSIGN_OR_RETURN(ModelProto model, ParseGraph(source));
  GraphProto* graph = model.mutable_graph();
  std::vector<TensorProto> heads(graph->initializer().begin(), graph->initializer().end());
  graph->clear_initializer();
  std::map<std::string, size_t> init;  // initializer name -> source index
  for (const TensorProto& h : heads) {
    const std::optional<size_t> found = source.Find(h.name());
    if (!found) return Internal("initializer " + Quote(h.name()) + " is not in the index");
    init[h.name()] = *found;
  }
  std::map<std::string, int> uses;
  for (const NodeProto& n : graph->node()) {
    for (const auto& s : n.input()) ++uses[s];
  }
  for (const auto& v : graph->output()) ++uses[v.name()];
  auto dtype_of = [&](const std::string& name) -> std::optional<DType> {
    auto it = init.find(name);
    if (it == init.end()) return std::nullopt;
    return source.tensors()[it->second].dtype;
  };

  struct Fold {
    size_t node;
    bool dq;
  };
  std::map<std::string, std::vector<Fold>> folds;  // by input-0 initializer
  std::set<size_t> removed;
  std::set<std::string> maybe_unused;
  for (int i = 0; i < graph->node_size(); ++i) {
    const NodeProto& n = graph->node(i);
    if (!IsDefaultDomain(n.domain()) || n.output_size() != 1 || n.input_size() < 1) continue;
    const auto x = dtype_of(n.input(0));
    if (!x) continue;
    bool dq = false;
    if (n.op_type() == "DequantizeLinear") {
      if (*x != DType::kI8 && *x != DType::kU8) continue;
      if (n.input_size() < 2 || dtype_of(n.input(1)) != DType::kF32) continue;
      if (n.input_size() >= 3 && !n.input(2).empty() && dtype_of(n.input(2)) != *x) continue;
      bool blocked = false;
      for (const auto& a : n.attribute()) blocked |= a.name() == "block_size" && a.i() != 0;
      if (blocked) continue;
      dq = true;
    } else if (n.op_type() == "Cast" && IsFloat(*x)) {
      // Only casts to FLOAT (what QuantizeOnnx writes): folding a cast to another type into
      // `to` would change the type its consumers see.
      int64_t cast_to = 0;
      for (const auto& a : n.attribute()) {
        if (a.name() == "to") cast_to = a.i();
      }
      if (cast_to != TensorProto::FLOAT) continue;
    } else {
      continue;
    }
    folds[n.input(0)].push_back({static_cast<size_t>(i), dq});
    removed.insert(static_cast<size_t>(i));
    for (const auto& s : n.input()) {
      if (s.empty()) continue;
      --uses[s];
      maybe_unused.insert(s);
    }
  }

  std::vector<Group> groups;
  for (TensorProto& head : heads) {
    const std::string name = head.name();
    const size_t index = init[name];
    const auto f = folds.find(name);
    if (!(maybe_unused.count(name) != 0 && uses[name] <= 0)) {
      groups.push_back(CopyGroup(source, index, std::move(head)));
    }
    if (f == folds.end()) continue;
    for (const Fold& fold : f->second) {
      const NodeProto& n = graph->node(static_cast<int>(fold.node));
      const TensorInfo& info = source.tensors()[index];
      MP_ASSIGN_OR_RETURN(const uint64_t elements, info.shape.NumElements());
      Group g;
      g.heads = {Head(n.output(0), to, DimsOf(info.shape))};
      g.sizes = {elements * ElementSize(to)};
      if (!fold.dq) {
        g.produce = [&source, index, to](std::vector<std::shared_ptr<Buffer>>* bufs) -> Status {
          MP_ASSIGN_OR_RETURN(TensorView view, source.Load(index));
          auto cast = CastTensor(view, to);
          if (!cast) return cast.error().WithContext("initializer " + Quote(view.info.name));
          *bufs = {cast->data};
          return Status::Ok();
        };
        groups.push_back(std::move(g));
        continue;
      }
      int64_t axis = 1;  // DequantizeLinear's default
      for (const auto& a : n.attribute()) {
        if (a.name() == "axis") axis = a.i();
      }
      const size_t s_index = init.at(n.input(1));
      const std::optional<size_t> z_index = n.input_size() >= 3 && !n.input(2).empty()
                                                ? std::optional<size_t>(init.at(n.input(2)))
                                                : std::nullopt;
      MP_ASSIGN_OR_RETURN(const uint64_t scale_count,
                          source.tensors()[s_index].shape.NumElements());
      const bool per_tensor = scale_count == 1 && source.tensors()[s_index].shape.rank() <= 1;
      const std::string where = "node " + Quote(n.name()) + " (DequantizeLinear)";
      auto layout = LayoutFor(info.shape, static_cast<int>(axis), per_tensor);
      if (!layout) return layout.error().WithContext(where);
      if (layout->channels != scale_count) {
        return InvalidArgument(where + ": scale " + Quote(n.input(1)) + " has " +
                               std::to_string(scale_count) + " elements but axis " +
                               std::to_string(axis) + " of " + Quote(name) + " has " +
                               std::to_string(layout->channels));
      }
      if (z_index) {
        MP_ASSIGN_OR_RETURN(const uint64_t zc, source.tensors()[*z_index].shape.NumElements());
        if (zc != scale_count) {
          return InvalidArgument(where + ": zero point " + Quote(n.input(2)) + " has " +
                                 std::to_string(zc) + " elements, the scale " +
                                 std::to_string(scale_count));
        }
      }
      const ChannelLayout l = *layout;
      const std::string out_name = n.output(0);
      g.produce = [&source, index, s_index, z_index, l, to,
                   out_name](std::vector<std::shared_ptr<Buffer>>* bufs) -> Status {
        MP_ASSIGN_OR_RETURN(TensorView q, source.Load(index));
        MP_ASSIGN_OR_RETURN(TensorView s, source.Load(s_index));
        std::vector<float> scales(l.channels);
        std::memcpy(scales.data(), s.data->data(), l.channels * sizeof(float));
        std::vector<int32_t> zero(l.channels, 0);
        const bool is_signed = q.info.dtype == DType::kI8;
        if (z_index) {
          MP_ASSIGN_OR_RETURN(TensorView z, source.Load(*z_index));
          for (uint64_t c = 0; c < l.channels; ++c) {
            const uint8_t b = z.data->data()[c];
            zero[c] = is_signed ? static_cast<int8_t>(b) : b;
          }
        }
        std::vector<float> values(l.elements());
        const uint8_t* qd = q.data->data();
        uint64_t i = 0;
        for (uint64_t o = 0; o < l.outer; ++o) {
          for (uint64_t c = 0; c < l.channels; ++c) {
            for (uint64_t k = 0; k < l.inner; ++k, ++i) {
              const int32_t v = is_signed ? static_cast<int8_t>(qd[i]) : qd[i];
              values[i] = static_cast<float>(v - zero[c]) * scales[c];
            }
          }
        }
        MP_ASSIGN_OR_RETURN(auto buf, Buffer::Allocate(values.size() * sizeof(float)));
        if (!values.empty()) std::memcpy(buf->mutable_data(), values.data(), buf->size());
        MP_ASSIGN_OR_RETURN(TensorInfo info, TensorInfo::Make(out_name, DType::kF32, q.info.shape));
        auto cast = CastTensor(TensorView{std::move(info), buf}, to);
        if (!cast) return cast.error().WithContext("initializer " + Quote(out_name));
        *bufs = {cast->data};
        return Status::Ok();
      };
      groups.push_back(std::move(g));
    }
  }
  google::protobuf::RepeatedPtrField<NodeProto> nodes;
  for (int i = 0; i < graph->node_size(); ++i) {
    if (removed.count(static_cast<size_t>(i)) == 0)
      *nodes.Add() = std::move(*graph->mutable_node(i));
  }
  graph->mutable_node()->Swap(&nodes);
  const bool allow_inline = source.files().files.size() <= 1;
  return WriteModel(std::move(model), groups, allow_inline, out, write);
}

}  // namespace

Result<QuantReport> QuantizeOnnx(const onnx::OnnxSource& source, const std::string& out,
                                 const QuantizeOptions& options, const WriteOptions& write) {
  auto report = QuantizeImpl(source, out, options, write);
  if (!report) return report.error().WithContext(out);
  return report;
}

Status DequantizeOnnx(const onnx::OnnxSource& source, const std::string& out, DType to,
                      const WriteOptions& write) {
  Status s = DequantizeImpl(source, out, to, write);
  if (!s.ok()) return std::move(s).WithContext(out);
  return s;
}

}  // namespace mp
