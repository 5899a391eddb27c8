// TensorFlow Lite models (.tflite): one FlatBuffer with file identifier "TFL3" whose root is a
// Model table (schema: tensorflow/compiler/mlir/lite/schema/schema.fbs, schema version 3).
// Field ids, which the reader uses through flatbuffers::Table with hand-written accessors:
//   Model          0 version:uint, 1 operator_codes, 2 subgraphs, 3 description, 4 buffers,
//                  5 metadata_buffer:[int], 6 metadata, 7 signature_defs
//   OperatorCode   0 deprecated_builtin_code:byte, 1 custom_code, 2 version:int = 1,
//                  3 builtin_code:int (the larger of the two codes is the operator's)
//   SubGraph       0 tensors, 1 inputs:[int], 2 outputs:[int], 3 operators, 4 name
//   Tensor         0 shape:[int], 1 type:byte, 2 buffer:uint, 3 name, 4 quantization,
//                  5 is_variable:bool, 6 sparsity, 7 shape_signature:[int], 8 has_rank:bool
//   Quantization   0 min:[float], 1 max:[float], 2 scale:[float], 3 zero_point:[long],
//                  4/5 details (union type, value), 6 quantized_dimension:int
//   Operator       0 opcode_index:uint, 1 inputs:[int], 2 outputs:[int], ...
//   Buffer         0 data:[ubyte] (16-byte aligned), 1 offset:ulong, 2 size:ulong
//   Metadata       0 name, 1 buffer:uint
//   SignatureDef   0 inputs:[TensorMap], 1 outputs:[TensorMap], 2 signature_key,
//                  4 subgraph_index:uint;  TensorMap 0 name, 1 tensor_index:uint
// Models over 2 GB keep buffer bytes after the FlatBuffer: Buffer.offset (from the start of the
// file, valid when > 1) and Buffer.size. Buffer 0 is the empty sentinel tensors without data
// point at. A value q of a quantized tensor means scale * (q - zero_point); with several scales
// they run along quantized_dimension.
//
// The model view: every tensor whose buffer holds data, in subgraph then tensor order, is a
// tensor of the ModelSource (zero-copy slices of the mapped file, realigned when misaligned),
// named as in the file (tensors of subgraphs after the first get "<subgraph name>/" in front, a
// name seen before gets "#<subgraph>:<tensor>" after it). Constant tensors modelport cannot
// carry (STRING, INT4, COMPLEX128, RESOURCE, VARIANT) and sparse tensors are listed in notes()
// and in GraphInfo (strings with their values), never silently dropped.
//
// Metadata: "tflite.version", "tflite.description", "tflite.metadata" ({name: its text when the
// buffer is printable ASCII up to 4 KiB, trailing NULs dropped, else {"buffer", "bytes"}}),
// "tflite.quantization" ({tensor: {"scale", "zero_point", "quantized_dimension", "min"?, "max"?,
// "custom"?}} for the tensors of the view that have scales).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/formats/format.h"

namespace mp::tflite {

/// Bytes Detect looks at: the root offset and the file identifier.
inline constexpr size_t kDetectBytes = 8;
/// The FlatBuffer file identifier of TFLite models.
inline constexpr std::string_view kFileIdentifier = "TFL3";
/// The operator code of custom operators (BuiltinOperator CUSTOM).
inline constexpr int32_t kCustomCode = 32;

/// TFLite TensorType values (schema.fbs enum TensorType).
enum class TensorType : int8_t {
  kFloat32 = 0,
  kFloat16 = 1,
  kInt32 = 2,
  kUInt8 = 3,
  kInt64 = 4,
  kString = 5,
  kBool = 6,
  kInt16 = 7,
  kComplex64 = 8,
  kInt8 = 9,
  kFloat64 = 10,
  kComplex128 = 11,
  kUInt64 = 12,
  kResource = 13,
  kVariant = 14,
  kUInt32 = 15,
  kUInt16 = 16,
  kInt4 = 17,
  kBFloat16 = 18,
};

/// "FLOAT32", "INT8", ...; "TYPE_<n>" for values outside the enum.
std::string TensorTypeName(int8_t type);
/// The modelport dtype of a TFLite type, or nullopt for types modelport has no dtype for
/// (STRING, INT4, COMPLEX128, RESOURCE, VARIANT, unknown values).
std::optional<DType> DTypeOf(int8_t type);
/// The BuiltinOperator name of `code` ("ADD", "CONV_2D", "CUSTOM", ...), or "BUILTIN_<n>" for
/// codes newer than this table.
std::string BuiltinOperatorName(int32_t code);

/// Quantization parameters of one tensor: value = scale * (q - zero_point).
struct Quantization {
  std::vector<float> scale;
  std::vector<int64_t> zero_point;
  std::vector<float> min, max;
  int32_t quantized_dimension = 0;
  bool custom = false;  ///< details holds CustomQuantization (scale/zero_point do not apply)

  /// True when there is at least one scale (and no custom details): the tensor dequantizes.
  bool has_scale() const { return !scale.empty() && !custom; }
};

/// One tensor of a subgraph.
struct TensorDesc {
  std::string name;
  int8_t type = 0;  ///< TensorType value
  std::vector<int32_t> shape;
  std::vector<int32_t> shape_signature;  ///< -1 for unknown dimensions; empty when absent
  uint32_t buffer = 0;
  uint64_t data_bytes = 0;  ///< bytes of constant data in its buffer (0: none)
  bool is_variable = false;
  bool sparse = false;  ///< has SparsityParameters: the buffer holds compressed values
  std::optional<Quantization> quantization;  ///< only when the file gives scale/zero_point/min/max
  std::optional<size_t> source_index;        ///< its index in tensors(), when it is one
  std::vector<std::string> string_values;    ///< STRING constants: the decoded strings
};

struct OperatorCode {
  int32_t builtin_code = 0;  ///< max(deprecated_builtin_code, builtin_code)
  std::string name;          ///< BuiltinOperatorName(builtin_code)
  std::string custom_code;   ///< custom operators only
  int32_t version = 1;
};

struct Operator {
  uint32_t opcode_index = 0;
  std::vector<int32_t> inputs, outputs;  ///< tensor indices; -1 for an omitted optional input
};

struct Subgraph {
  std::string name;
  std::vector<TensorDesc> tensors;
  std::vector<int32_t> inputs, outputs;  ///< tensor indices
  std::vector<Operator> operators;
};

struct SignatureDef {
  std::string key;
  uint32_t subgraph_index = 0;
  std::vector<std::pair<std::string, uint32_t>> inputs, outputs;  ///< (name, tensor index)
};

struct MetadataEntry {
  std::string name;
  uint32_t buffer = 0;
  uint64_t bytes = 0;
};

/// What `inspect` shows about a TFLite model besides its constant tensors.
struct GraphInfo {
  uint32_t version = 0;
  std::string description;
  std::vector<OperatorCode> operator_codes;
  std::vector<Subgraph> subgraphs;
  uint64_t buffer_count = 0;
  std::vector<MetadataEntry> metadata;
  std::vector<SignatureDef> signature_defs;
};

/// The ModelSource a TFLite file opens as.
class TfliteSource : public ModelSource {
 public:
  virtual const GraphInfo& graph_info() const = 0;
  /// Quantization of tensor `index` of tensors(), or null when it has none.
  virtual const Quantization* quantization(size_t index) const = 0;
};

/// `source` as a TfliteSource, or null when it is another kind of source.
const TfliteSource* AsTflite(const ModelSource& source);

/// Opens a .tflite file: verifies the whole FlatBuffer (bounds, alignment, nesting), then indexes
/// its constant tensors. Corrupt for a malformed FlatBuffer, a wrong file identifier, indices out
/// of range, data whose size does not match its tensor; Unsupported for schema versions before 3;
/// LimitExceeded past `options` limits.
Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options);

/// True when `prefix` holds a root offset inside the file followed by "TFL3".
bool Detect(std::span<const uint8_t> prefix, uint64_t file_size);

/// The model as JSON for `inspect --json`: {"version", "description", "operator_codes":
/// [{"builtin_code", "name", "custom_code"?, "version"}], "subgraphs": [{"name", "inputs",
/// "outputs" (each {"index", "name", "type", "shape", "shape_signature"?}), "operators":
/// count, "op_counts": {op: count}, "tensors": count}], "buffers", "metadata": [{"name",
/// "buffer", "bytes"}], "signature_defs": [{"key", "subgraph_index", "inputs", "outputs"}],
/// "string_constants": {name: [strings]}}.
Json GraphInfoJson(const GraphInfo& info);

/// What `inspect` prints for the graph, one line each: the schema version and description,
/// the operator codes, then per subgraph its operator counts, inputs and outputs (index, name,
/// type, shape, shape signature), signatures, metadata entries and string constants (the first
/// 8 strings of each).
std::vector<std::string> GraphSummary(const GraphInfo& info);

/// The name `inspect` shows for operator code `code`: the custom code of custom operators, the
/// builtin name otherwise.
std::string OperatorName(const OperatorCode& code);

/// Dequantizes `values` (I8, U8, I16 or I32 with `q`'s scales) to f32: (q - zero_point) * scale,
/// computed as float(q - zero_point) * scale in f32, per tensor (one scale) or per axis along
/// q.quantized_dimension (one scale per index of that dimension; zero_point has one entry per
/// scale, one for all, or none for zero). InvalidArgument for another dtype or inconsistent
/// parameters. `out` holds numel floats.
Status DequantizeValues(const TensorView& values, const Quantization& q, std::span<float> out);

/// A view of `source` with every tensor that has scales (and an I8, U8, I16 or I32 dtype) turned
/// into f32 by DequantizeValues, lazily on Load; other tensors pass through. Their entries
/// leave "tflite.quantization". `source` must outlive the view. InvalidArgument naming the
/// first tensor whose parameters do not fit its shape.
Result<std::unique_ptr<ModelSource>> Dequantize(const TfliteSource& source);

}  // namespace mp::tflite
