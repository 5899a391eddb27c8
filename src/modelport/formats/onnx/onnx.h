// ONNX models (spec: https://github.com/onnx/onnx/blob/main/docs/IR.md, docs/ExternalData.md;
// schema: onnx/onnx.proto, installed by libonnx-dev).
//
// A .onnx file is one serialized protobuf ModelProto; every field is [tag varint = field << 3 |
// wire type][value], with length-delimited (wire type 2) values prefixed by a varint length:
//   ModelProto  1 ir_version, 2 producer_name, 3 producer_version, 4 domain, 5 model_version,
//               6 doc_string, 7 graph (GraphProto), 8 opset_import, 14 metadata_props, ...
//   GraphProto  1 node, 2 name, 5 initializer (TensorProto), 11 input, 12 output, 15 sparse_...
//   TensorProto 1 dims, 2 data_type, 3 segment, 4 float_data, 5 int32_data, 6 string_data,
//               7 int64_data, 8 name, 9 raw_data, 10 double_data, 11 uint64_data, 12 doc_string,
//               13 external_data (key/value: location, offset, length, checksum),
//               14 data_location (0 DEFAULT, 1 EXTERNAL)
// Writers put ir_version (field 1, tag byte 0x08) first, which is what detection looks for.
//
// modelport's model view: the tensors are the main graph's initializers, in file order, named as
// in the graph. A small wire-format walker finds them without copying their bytes (raw_data is a
// zero-copy view of the mapped file, realigned only when misaligned); the graph itself (nodes,
// inputs, outputs, opsets) is parsed by libprotobuf from a copy of the model with the
// initializers' payloads left out, so opening a model of any size costs its graph, not its
// weights. External data is read only from regular files inside the model's folder: absolute
// paths, '..', symlinks, hard links, special files and out-of-range offsets are refused.
//
// Metadata: "onnx.ir_version", "onnx.producer_name", "onnx.producer_version", "onnx.domain",
// "onnx.model_version", "onnx.graph_name", "onnx.opset_import" ({"domain": version}, "" for the
// default domain), "onnx.doc_string"; each of ModelProto.metadata_props keeps its own key (a key
// that collides with one of the "onnx." keys above is overridden by the model's field and a note
// says so).
//
// Writing: OnnxSource::Rewrite re-emits a model with its graph bytes untouched and each
// initializer's data placed inline (raw_data) or in one external data file beside the output,
// optionally with values taken from another model (set-weights). `convert` does not write ONNX:
// an ONNX file needs a graph, which only an ONNX model can supply.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "modelport/formats/format.h"

namespace mp::onnx {

/// Bytes Detect looks at: the first few ModelProto fields.
inline constexpr size_t kDetectBytes = 64;

/// A graph input or output: its name, element type and dimensions.
struct ValueInfo {
  std::string name;
  /// "f32", "i64", ... for tensors; the ONNX name for types modelport has no dtype for
  /// ("string", "complex128"); "sequence", "map", "optional", "sparse_tensor" for non-tensors.
  std::string type;
  /// Each dimension: its value, its symbolic name ("batch") or "?" when unknown. Empty with
  /// `has_shape` false when the model gives no shape at all.
  std::vector<std::string> dims;
  bool has_shape = false;
};

/// What `inspect` shows about an ONNX model's graph, besides its initializers.
struct GraphInfo {
  int64_t ir_version = 0;
  std::string producer_name;
  std::string producer_version;
  std::string graph_name;
  std::vector<std::pair<std::string, int64_t>> opsets;  ///< (domain, version), file order
  std::vector<ValueInfo> inputs;                        ///< graph inputs that are not initializers
  std::vector<ValueInfo> outputs;                       ///< graph outputs
  uint64_t node_count = 0;
  std::vector<std::pair<std::string, uint64_t>> op_counts;  ///< (op type, count), by op type
  std::vector<std::pair<std::string, std::string>> metadata_props;  ///< file order
};

/// Where Rewrite puts each initializer's data.
enum class Placement {
  kKeep,      ///< external stays external (in the output's data file), inline stays inline
  kInline,    ///< everything in raw_data (the whole model must stay under protobuf's 2 GiB)
  kExternal,  ///< tensors of at least `size_threshold` bytes in the data file, the rest inline
};

/// External data written by Rewrite starts at multiples of 64 bytes; tensors of at least
/// kPageAlignFrom bytes start on a 4 KiB page, so each can be mapped on its own.
inline constexpr uint64_t kExternalAlign = 64;
inline constexpr uint64_t kPageAlign = 4096;
inline constexpr uint64_t kPageAlignFrom = 1 << 20;

struct RewriteOptions {
  Placement placement = Placement::kKeep;
  /// The external data file's name, in the output's folder; empty: "<output file name>.data"
  /// (model.onnx -> model.onnx.data). A plain file name: no folders.
  std::string data_file;
  /// With kExternal, tensors smaller than this stay inline (onnx's own default: 1024).
  uint64_t size_threshold = 1024;
  /// Values to put in place of the model's: each of its tensors replaces the initializer of
  /// the same name (or of a name it is an alias of), which must have the same dtype and shape.
  const ModelSource* weights = nullptr;
  /// Allow tensors of `weights` that match no initializer (listed in the report); otherwise
  /// they are an error, since a silently ignored weight is a fine-tune lost.
  bool allow_unused_weights = false;
  WriteOptions write;  ///< no_overwrite, durable and progress; shard_size must be 0
  /// False: write only the model file, its external data references naming `data_file` as if
  /// it were written (the registry keeps an ONNX graph this way, the weights being stored as
  /// tensors).
  bool write_data = true;
};

struct RewriteReport {
  std::vector<std::string> replaced;  ///< initializers given new values, in model order
  std::vector<std::string> unused;    ///< weights that matched no initializer
  uint64_t inline_tensors = 0, inline_bytes = 0;
  uint64_t external_tensors = 0, external_bytes = 0;
  uint64_t model_bytes = 0;  ///< size of the .onnx written
  std::string data_path;     ///< the external data file written; empty when none was needed
};

/// The ModelSource an ONNX file opens as; `inspect` asks it for the graph.
class OnnxSource : public ModelSource {
 public:
  virtual const GraphInfo& graph_info() const = 0;
  /// The serialized ModelProto with every initializer's data fields left out (raw_data, typed
  /// data, external_data): what libprotobuf parses for the graph. Initializer values come from
  /// Load, by name.
  virtual const std::string& graph_proto() const = 0;

  /// Writes this model to `out` (atomically; the data file, when any, is renamed into place
  /// just before the model). The output may replace the input, its data file too: the input
  /// stays open until the end. InvalidArgument for weights whose dtype or shape differ, for
  /// a bad data file name and for an inline model over 2 GiB; NotFound for unused weights;
  /// Unsupported when tensors inside nodes or sparse initializers use external data (their
  /// locations would no longer resolve); AlreadyExists with no_overwrite.
  virtual Result<RewriteReport> Rewrite(const std::string& out,
                                        const RewriteOptions& options) const = 0;
};

/// Opens an ONNX model: indexes the main graph's initializers and parses the graph. Corrupt for
/// malformed protobuf or tensors, Unsupported for element types modelport has no dtype for
/// (naming the tensor), Unsafe for external data outside the model's folder, LimitExceeded past
/// `options` limits.
Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options);

/// True when `prefix` starts like a serialized ModelProto: ir_version (field 1) first, followed
/// by well-formed ModelProto fields as far as the prefix reaches.
bool Detect(std::span<const uint8_t> prefix, uint64_t file_size);

/// The graph as JSON for `inspect --json`: {"ir_version", "producer_name", "producer_version",
/// "graph_name", "opset_import", "inputs", "outputs", "node_count", "op_counts",
/// "metadata_props"}.
Json GraphInfoJson(const GraphInfo& info);

}  // namespace mp::onnx
