#include "modelport/formats/tflite/tflite.h"

#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <unordered_set>

#include "modelport/core/file.h"
#include "modelport/formats/zip/zip.h"

namespace mp::tflite {
namespace {

using flatbuffers::Offset;
using flatbuffers::String;
using flatbuffers::Vector;
using flatbuffers::Verifier;
using flatbuffers::voffset_t;

std::string Quote(std::string_view s) { return zip::QuoteName(s); }
std::string Num(uint64_t v) { return std::to_string(v); }

// The vtable slot of field `id` (FlatBuffers: 4 bytes of vtable header, 2 bytes per field).
constexpr voffset_t Slot(int id) { return static_cast<voffset_t>(4 + 2 * id); }

// ---------------------------------------------------------------------------------------------
// Hand-written table accessors: each mirrors one table of the schema (field ids in tflite.h) and
// verifies exactly the fields it reads, as flatc's generated Verify methods do.

template <typename T>
const Vector<T>* VecField(const flatbuffers::Table* t, voffset_t slot) {
  return t->GetPointer<const Vector<T>*>(slot);
}

struct CustomQuantizationT : private flatbuffers::Table {
  bool Verify(Verifier& v) const {
    return VerifyTableStart(v) && VerifyOffset(v, Slot(0)) &&
           v.VerifyVector(VecField<uint8_t>(this, Slot(0))) && v.EndTable();
  }
};

struct QuantizationT : private flatbuffers::Table {
  const Vector<float>* min() const { return VecField<float>(this, Slot(0)); }
  const Vector<float>* max() const { return VecField<float>(this, Slot(1)); }
  const Vector<float>* scale() const { return VecField<float>(this, Slot(2)); }
  const Vector<int64_t>* zero_point() const { return VecField<int64_t>(this, Slot(3)); }
  uint8_t details_type() const { return GetField<uint8_t>(Slot(4), 0); }
  int32_t quantized_dimension() const { return GetField<int32_t>(Slot(6), 0); }
  bool Verify(Verifier& v) const {
    if (!(VerifyTableStart(v) && VerifyOffset(v, Slot(0)) && v.VerifyVector(min()) &&
          VerifyOffset(v, Slot(1)) && v.VerifyVector(max()) && VerifyOffset(v, Slot(2)) &&
          v.VerifyVector(scale()) && VerifyOffset(v, Slot(3)) && v.VerifyVector(zero_point()) &&
          VerifyField<uint8_t>(v, Slot(4), 1) && VerifyOffset(v, Slot(5)) &&
          VerifyField<int32_t>(v, Slot(6), 4))) {
      return false;
    }
    // Union member 1 is CustomQuantization; unknown members are skipped (never read).
    if (details_type() == 1 && !v.VerifyTable(GetPointer<const CustomQuantizationT*>(Slot(5)))) {
      return false;
    }
    return v.EndTable();
  }
};

struct TensorT : private flatbuffers::Table {
  const Vector<int32_t>* shape() const { return VecField<int32_t>(this, Slot(0)); }
  int8_t type() const { return GetField<int8_t>(Slot(1), 0); }
  uint32_t buffer() const { return GetField<uint32_t>(Slot(2), 0); }
  const String* name() const { return GetPointer<const String*>(Slot(3)); }
  const QuantizationT* quantization() const { return GetPointer<const QuantizationT*>(Slot(4)); }
  bool is_variable() const { return GetField<uint8_t>(Slot(5), 0) != 0; }
  bool has_sparsity() const { return CheckField(Slot(6)); }
  const Vector<int32_t>* shape_signature() const { return VecField<int32_t>(this, Slot(7)); }
  bool Verify(Verifier& v) const {
    // Sparsity is only checked for presence: its contents are never read.
    return VerifyTableStart(v) && VerifyOffset(v, Slot(0)) && v.VerifyVector(shape()) &&
           VerifyField<int8_t>(v, Slot(1), 1) && VerifyField<uint32_t>(v, Slot(2), 4) &&
           VerifyOffset(v, Slot(3)) && v.VerifyString(name()) && VerifyOffset(v, Slot(4)) &&
           v.VerifyTable(quantization()) && VerifyField<uint8_t>(v, Slot(5), 1) &&
           VerifyOffset(v, Slot(7)) && v.VerifyVector(shape_signature()) && v.EndTable();
  }
};

struct OperatorT : private flatbuffers::Table {
  uint32_t opcode_index() const { return GetField<uint32_t>(Slot(0), 0); }
  const Vector<int32_t>* inputs() const { return VecField<int32_t>(this, Slot(1)); }
  const Vector<int32_t>* outputs() const { return VecField<int32_t>(this, Slot(2)); }
  bool Verify(Verifier& v) const {
    return VerifyTableStart(v) && VerifyField<uint32_t>(v, Slot(0), 4) &&
           VerifyOffset(v, Slot(1)) && v.VerifyVector(inputs()) && VerifyOffset(v, Slot(2)) &&
           v.VerifyVector(outputs()) && v.EndTable();
  }
};

struct SubGraphT : private flatbuffers::Table {
  const Vector<Offset<TensorT>>* tensors() const {
    return VecField<Offset<TensorT>>(this, Slot(0));
  }
  const Vector<int32_t>* inputs() const { return VecField<int32_t>(this, Slot(1)); }
  const Vector<int32_t>* outputs() const { return VecField<int32_t>(this, Slot(2)); }
  const Vector<Offset<OperatorT>>* operators() const {
    return VecField<Offset<OperatorT>>(this, Slot(3));
  }
  const String* name() const { return GetPointer<const String*>(Slot(4)); }
  bool Verify(Verifier& v) const {
    return VerifyTableStart(v) && VerifyOffset(v, Slot(0)) && v.VerifyVector(tensors()) &&
           v.VerifyVectorOfTables(tensors()) && VerifyOffset(v, Slot(1)) &&
           v.VerifyVector(inputs()) && VerifyOffset(v, Slot(2)) && v.VerifyVector(outputs()) &&
           VerifyOffset(v, Slot(3)) && v.VerifyVector(operators()) &&
           v.VerifyVectorOfTables(operators()) && VerifyOffset(v, Slot(4)) &&
           v.VerifyString(name()) && v.EndTable();
  }
};

struct OperatorCodeT : private flatbuffers::Table {
  int8_t deprecated_builtin_code() const { return GetField<int8_t>(Slot(0), 0); }
  const String* custom_code() const { return GetPointer<const String*>(Slot(1)); }
  int32_t version() const { return GetField<int32_t>(Slot(2), 1); }
  int32_t builtin_code() const { return GetField<int32_t>(Slot(3), 0); }
  bool Verify(Verifier& v) const {
    return VerifyTableStart(v) && VerifyField<int8_t>(v, Slot(0), 1) && VerifyOffset(v, Slot(1)) &&
           v.VerifyString(custom_code()) && VerifyField<int32_t>(v, Slot(2), 4) &&
           VerifyField<int32_t>(v, Slot(3), 4) && v.EndTable();
  }
};

struct BufferT : private flatbuffers::Table {
  const Vector<uint8_t>* data() const { return VecField<uint8_t>(this, Slot(0)); }
  uint64_t offset() const { return GetField<uint64_t>(Slot(1), 0); }
  uint64_t size() const { return GetField<uint64_t>(Slot(2), 0); }
  bool Verify(Verifier& v) const {
    return VerifyTableStart(v) && VerifyOffset(v, Slot(0)) && v.VerifyVector(data()) &&
           VerifyField<uint64_t>(v, Slot(1), 8) && VerifyField<uint64_t>(v, Slot(2), 8) &&
           v.EndTable();
  }
};

struct MetadataT : private flatbuffers::Table {
  const String* name() const { return GetPointer<const String*>(Slot(0)); }
  uint32_t buffer() const { return GetField<uint32_t>(Slot(1), 0); }
  bool Verify(Verifier& v) const {
    return VerifyTableStart(v) && VerifyOffset(v, Slot(0)) && v.VerifyString(name()) &&
           VerifyField<uint32_t>(v, Slot(1), 4) && v.EndTable();
  }
};

struct TensorMapT : private flatbuffers::Table {
  const String* name() const { return GetPointer<const String*>(Slot(0)); }
  uint32_t tensor_index() const { return GetField<uint32_t>(Slot(1), 0); }
  bool Verify(Verifier& v) const {
    return VerifyTableStart(v) && VerifyOffset(v, Slot(0)) && v.VerifyString(name()) &&
           VerifyField<uint32_t>(v, Slot(1), 4) && v.EndTable();
  }
};

struct SignatureDefT : private flatbuffers::Table {
  const Vector<Offset<TensorMapT>>* inputs() const {
    return VecField<Offset<TensorMapT>>(this, Slot(0));
  }
  const Vector<Offset<TensorMapT>>* outputs() const {
    return VecField<Offset<TensorMapT>>(this, Slot(1));
  }
  const String* signature_key() const { return GetPointer<const String*>(Slot(2)); }
  uint32_t subgraph_index() const { return GetField<uint32_t>(Slot(4), 0); }
  bool Verify(Verifier& v) const {
    return VerifyTableStart(v) && VerifyOffset(v, Slot(0)) && v.VerifyVector(inputs()) &&
           v.VerifyVectorOfTables(inputs()) && VerifyOffset(v, Slot(1)) &&
           v.VerifyVector(outputs()) && v.VerifyVectorOfTables(outputs()) &&
           VerifyOffset(v, Slot(2)) && v.VerifyString(signature_key()) &&
           VerifyField<uint32_t>(v, Slot(4), 4) && v.EndTable();
  }
};

struct ModelT : private flatbuffers::Table {
  uint32_t version() const { return GetField<uint32_t>(Slot(0), 0); }
  const Vector<Offset<OperatorCodeT>>* operator_codes() const {
    return VecField<Offset<OperatorCodeT>>(this, Slot(1));
  }
  const Vector<Offset<SubGraphT>>* subgraphs() const {
    return VecField<Offset<SubGraphT>>(this, Slot(2));
  }
  const String* description() const { return GetPointer<const String*>(Slot(3)); }
  const Vector<Offset<BufferT>>* buffers() const {
    return VecField<Offset<BufferT>>(this, Slot(4));
  }
  const Vector<Offset<MetadataT>>* metadata() const {
    return VecField<Offset<MetadataT>>(this, Slot(6));
  }
  const Vector<Offset<SignatureDefT>>* signature_defs() const {
    return VecField<Offset<SignatureDefT>>(this, Slot(7));
  }
  bool Verify(Verifier& v) const {
    return VerifyTableStart(v) && VerifyField<uint32_t>(v, Slot(0), 4) &&
           VerifyOffset(v, Slot(1)) && v.VerifyVector(operator_codes()) &&
           v.VerifyVectorOfTables(operator_codes()) && VerifyOffset(v, Slot(2)) &&
           v.VerifyVector(subgraphs()) && v.VerifyVectorOfTables(subgraphs()) &&
           VerifyOffset(v, Slot(3)) && v.VerifyString(description()) && VerifyOffset(v, Slot(4)) &&
           v.VerifyVector(buffers()) && v.VerifyVectorOfTables(buffers()) &&
           VerifyOffset(v, Slot(6)) && v.VerifyVector(metadata()) &&
           v.VerifyVectorOfTables(metadata()) && VerifyOffset(v, Slot(7)) &&
           v.VerifyVector(signature_defs()) && v.VerifyVectorOfTables(signature_defs()) &&
           v.EndTable();
  }
};

// ---------------------------------------------------------------------------------------------
// Decoding helpers

std::string Str(const String* s) { return s ? s->str() : std::string(); }

// Vectors shared by many tables (a FlatBuffer may be a DAG) could make decoding far more work
// than the file's size; every element decoded is charged against a budget proportional to it.
class Budget {
 public:
  explicit Budget(uint64_t file_size) : left_(file_size + (1u << 20)) {}
  Status Charge(uint64_t n) {
    if (n > left_) {
      return LimitExceeded("the model refers to more elements than its size allows (vectors " +
                           std::string("shared between tables)"));
    }
    left_ -= n;
    return Status::Ok();
  }

 private:
  uint64_t left_;
};

// Elements are copied out with memcpy: the verifier checks a vector's 4-byte length field for
// alignment, not 8-byte elements.
template <typename T>
Result<std::vector<T>> ReadVec(const Vector<T>* v, Budget& budget) {
  std::vector<T> out;
  if (!v) return out;
  MP_RETURN_IF_ERROR(budget.Charge(v->size()));
  out.resize(v->size());
  if (!out.empty()) std::memcpy(out.data(), v->Data(), out.size() * sizeof(T));
  return out;
}

constexpr std::array<std::string_view, 19> kTypeNames = {
    "FLOAT32", "FLOAT16",   "INT32",  "UINT8",   "INT64",      "STRING", "BOOL",
    "INT16",   "COMPLEX64", "INT8",   "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE",
    "VARIANT", "UINT32",    "UINT16", "INT4",    "BFLOAT16"};

// BuiltinOperator names, indexed by code (schema.fbs enum BuiltinOperator).
constexpr std::string_view kOpNames[] = {"ADD",
                                         "AVERAGE_POOL_2D",
                                         "CONCATENATION",
                                         "CONV_2D",
                                         "DEPTHWISE_CONV_2D",
                                         "DEPTH_TO_SPACE",
                                         "DEQUANTIZE",
                                         "EMBEDDING_LOOKUP",
                                         "FLOOR",
                                         "FULLY_CONNECTED",
                                         "HASHTABLE_LOOKUP",
                                         "L2_NORMALIZATION",
                                         "L2_POOL_2D",
                                         "LOCAL_RESPONSE_NORMALIZATION",
                                         "LOGISTIC",
                                         "LSH_PROJECTION",
                                         "LSTM",
                                         "MAX_POOL_2D",
                                         "MUL",
                                         "RELU",
                                         "RELU_N1_TO_1",
                                         "RELU6",
                                         "RESHAPE",
                                         "RESIZE_BILINEAR",
                                         "RNN",
                                         "SOFTMAX",
                                         "SPACE_TO_DEPTH",
                                         "SVDF",
                                         "TANH",
                                         "CONCAT_EMBEDDINGS",
                                         "SKIP_GRAM",
                                         "CALL",
                                         "CUSTOM",
                                         "EMBEDDING_LOOKUP_SPARSE",
                                         "PAD",
                                         "UNIDIRECTIONAL_SEQUENCE_RNN",
                                         "GATHER",
                                         "BATCH_TO_SPACE_ND",
                                         "SPACE_TO_BATCH_ND",
                                         "TRANSPOSE",
                                         "MEAN",
                                         "SUB",
                                         "DIV",
                                         "SQUEEZE",
                                         "UNIDIRECTIONAL_SEQUENCE_LSTM",
                                         "STRIDED_SLICE",
                                         "BIDIRECTIONAL_SEQUENCE_RNN",
                                         "EXP",
                                         "TOPK_V2",
                                         "SPLIT",
                                         "LOG_SOFTMAX",
                                         "DELEGATE",
                                         "BIDIRECTIONAL_SEQUENCE_LSTM",
                                         "CAST",
                                         "PRELU",
                                         "MAXIMUM",
                                         "ARG_MAX",
                                         "MINIMUM",
                                         "LESS",
                                         "NEG",
                                         "PADV2",
                                         "GREATER",
                                         "GREATER_EQUAL",
                                         "LESS_EQUAL",
                                         "SELECT",
                                         "SLICE",
                                         "SIN",
                                         "TRANSPOSE_CONV",
                                         "SPARSE_TO_DENSE",
                                         "TILE",
                                         "EXPAND_DIMS",
                                         "EQUAL",
                                         "NOT_EQUAL",
                                         "LOG",
                                         "SUM",
                                         "SQRT",
                                         "RSQRT",
                                         "SHAPE",
                                         "POW",
                                         "ARG_MIN",
                                         "FAKE_QUANT",
                                         "REDUCE_PROD",
                                         "REDUCE_MAX",
                                         "PACK",
                                         "LOGICAL_OR",
                                         "ONE_HOT",
                                         "LOGICAL_AND",
                                         "LOGICAL_NOT",
                                         "UNPACK",
                                         "REDUCE_MIN",
                                         "FLOOR_DIV",
                                         "REDUCE_ANY",
                                         "SQUARE",
                                         "ZEROS_LIKE",
                                         "FILL",
                                         "FLOOR_MOD",
                                         "RANGE",
                                         "RESIZE_NEAREST_NEIGHBOR",
                                         "LEAKY_RELU",
                                         "SQUARED_DIFFERENCE",
                                         "MIRROR_PAD",
                                         "ABS",
                                         "SPLIT_V",
                                         "UNIQUE",
                                         "CEIL",
                                         "REVERSE_V2",
                                         "ADD_N",
                                         "GATHER_ND",
                                         "COS",
                                         "WHERE",
                                         "RANK",
                                         "ELU",
                                         "REVERSE_SEQUENCE",
                                         "MATRIX_DIAG",
                                         "QUANTIZE",
                                         "MATRIX_SET_DIAG",
                                         "ROUND",
                                         "HARD_SWISH",
                                         "IF",
                                         "WHILE",
                                         "NON_MAX_SUPPRESSION_V4",
                                         "NON_MAX_SUPPRESSION_V5",
                                         "SCATTER_ND",
                                         "SELECT_V2",
                                         "DENSIFY",
                                         "SEGMENT_SUM",
                                         "BATCH_MATMUL",
                                         "PLACEHOLDER_FOR_GREATER_OP_CODES",
                                         "CUMSUM",
                                         "CALL_ONCE",
                                         "BROADCAST_TO",
                                         "RFFT2D",
                                         "CONV_3D",
                                         "IMAG",
                                         "REAL",
                                         "COMPLEX_ABS",
                                         "HASHTABLE",
                                         "HASHTABLE_FIND",
                                         "HASHTABLE_IMPORT",
                                         "HASHTABLE_SIZE",
                                         "REDUCE_ALL",
                                         "CONV_3D_TRANSPOSE",
                                         "VAR_HANDLE",
                                         "READ_VARIABLE",
                                         "ASSIGN_VARIABLE",
                                         "BROADCAST_ARGS",
                                         "RANDOM_STANDARD_NORMAL",
                                         "BUCKETIZE",
                                         "RANDOM_UNIFORM",
                                         "MULTINOMIAL",
                                         "GELU",
                                         "DYNAMIC_UPDATE_SLICE",
                                         "RELU_0_TO_1",
                                         "UNSORTED_SEGMENT_PROD",
                                         "UNSORTED_SEGMENT_MAX",
                                         "UNSORTED_SEGMENT_SUM",
                                         "ATAN2",
                                         "UNSORTED_SEGMENT_MIN",
                                         "SIGN",
                                         "BITCAST",
                                         "BITWISE_XOR",
                                         "RIGHT_SHIFT",
                                         "STABLEHLO_LOGISTIC",
                                         "STABLEHLO_ADD",
                                         "STABLEHLO_DIVIDE",
                                         "STABLEHLO_MULTIPLY",
                                         "STABLEHLO_MAXIMUM",
                                         "STABLEHLO_RESHAPE",
                                         "STABLEHLO_CLAMP",
                                         "STABLEHLO_CONCATENATE",
                                         "STABLEHLO_BROADCAST_IN_DIM",
                                         "STABLEHLO_CONVOLUTION",
                                         "STABLEHLO_SLICE",
                                         "STABLEHLO_CUSTOM_CALL",
                                         "STABLEHLO_REDUCE",
                                         "STABLEHLO_ABS",
                                         "STABLEHLO_AND",
                                         "STABLEHLO_COSINE",
                                         "STABLEHLO_EXPONENTIAL",
                                         "STABLEHLO_FLOOR",
                                         "STABLEHLO_LOG",
                                         "STABLEHLO_MINIMUM",
                                         "STABLEHLO_NEGATE",
                                         "STABLEHLO_OR",
                                         "STABLEHLO_POWER",
                                         "STABLEHLO_REMAINDER",
                                         "STABLEHLO_RSQRT",
                                         "STABLEHLO_SELECT",
                                         "STABLEHLO_SUBTRACT",
                                         "STABLEHLO_TANH",
                                         "STABLEHLO_SCATTER",
                                         "STABLEHLO_COMPARE",
                                         "STABLEHLO_CONVERT",
                                         "STABLEHLO_DYNAMIC_SLICE",
                                         "STABLEHLO_DYNAMIC_UPDATE_SLICE",
                                         "STABLEHLO_PAD",
                                         "STABLEHLO_IOTA",
                                         "STABLEHLO_DOT_GENERAL",
                                         "STABLEHLO_REDUCE_WINDOW",
                                         "STABLEHLO_SORT",
                                         "STABLEHLO_WHILE",
                                         "STABLEHLO_GATHER",
                                         "STABLEHLO_TRANSPOSE",
                                         "DILATE",
                                         "STABLEHLO_RNG_BIT_GENERATOR",
                                         "REDUCE_WINDOW",
                                         "STABLEHLO_COMPOSITE",
                                         "COMPLEX"};
static_assert(std::size(kOpNames) == 208, "BuiltinOperator runs from ADD = 0 to COMPLEX = 207");

// Where a buffer's bytes are, as a range of the file.
struct ByteRange {
  uint64_t offset = 0;
  uint64_t size = 0;
};

// Metadata text when the buffer is printable (trailing NULs dropped), else nothing.
std::optional<std::string> PrintableText(std::span<const uint8_t> bytes) {
  size_t n = bytes.size();
  while (n > 0 && bytes[n - 1] == 0) --n;
  if (n > 4096) return std::nullopt;
  for (size_t i = 0; i < n; ++i) {
    if (bytes[i] < 0x20 || bytes[i] > 0x7e) return std::nullopt;
  }
  return std::string(reinterpret_cast<const char*>(bytes.data()), n);
}

Json QuantizationJson(const Quantization& q) {
  Json j = Json::object();
  j["scale"] = q.scale;
  j["zero_point"] = q.zero_point;
  j["quantized_dimension"] = q.quantized_dimension;
  if (!q.min.empty()) j["min"] = q.min;
  if (!q.max.empty()) j["max"] = q.max;
  if (q.custom) j["custom"] = true;
  return j;
}

// A TFLite string tensor's buffer: i32 count n, n + 1 i32 offsets from the buffer's start
// (non-decreasing, the last one the end of the data), then the bytes.
Result<std::vector<std::string>> DecodeStrings(std::span<const uint8_t> b, uint64_t expected) {
  auto i32 = [&](size_t pos) {
    int32_t v;
    std::memcpy(&v, b.data() + pos, 4);
    return v;
  };
  if (b.size() < 4) return Corrupt("string buffer of " + Num(b.size()) + " bytes has no count");
  const int32_t count = i32(0);
  if (count < 0 || static_cast<uint64_t>(count) != expected) {
    return Corrupt("string buffer holds " + std::to_string(count) + " strings, the shape needs " +
                   Num(expected));
  }
  const uint64_t header = 4 + 4 * (static_cast<uint64_t>(count) + 1);
  if (header > b.size()) {
    return Corrupt("string buffer of " + Num(b.size()) + " bytes is too short for " + Num(count) +
                   " offsets");
  }
  std::vector<std::string> out;
  out.reserve(count);
  int64_t prev = i32(4);
  if (prev < 0 || static_cast<uint64_t>(prev) < header) {
    return Corrupt("string buffer: first offset " + std::to_string(prev) + " is inside the header");
  }
  for (int32_t k = 0; k < count; ++k) {
    const int64_t next = i32(8 + 4 * static_cast<size_t>(k));
    if (next < prev || static_cast<uint64_t>(next) > b.size()) {
      return Corrupt("string buffer: offset " + std::to_string(next) + " of string " + Num(k) +
                     " is out of order or past the end (" + Num(b.size()) + " bytes)");
    }
    out.emplace_back(reinterpret_cast<const char*>(b.data() + prev), next - prev);
    prev = next;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The reader

struct Entry {
  ByteRange range;
  size_t subgraph = 0, tensor = 0;
  std::optional<Quantization> quantization;
};

class Reader final : public TfliteSource {
 public:
  static Result<std::unique_ptr<ModelSource>> Open(const std::string& path,
                                                   const ReadOptions& options) {
    MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path, options.io_mode));
    std::unique_ptr<Reader> reader(new Reader());
    reader->file_ = std::move(file);
    Status s = reader->Parse(options);
    if (!s.ok()) return std::move(s).WithContext(path);
    return std::unique_ptr<ModelSource>(std::move(reader));
  }

  std::string_view format() const override { return "tflite"; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  ModelFiles files() const override { return {{}, {file_->path()}}; }
  std::vector<std::string> notes() const override { return notes_; }
  const GraphInfo& graph_info() const override { return graph_; }
  const Quantization* quantization(size_t index) const override {
    if (index >= entries_.size() || !entries_[index].quantization) return nullptr;
    return &*entries_[index].quantization;
  }

  Result<TensorView> Load(size_t index) const override {
    if (index >= infos_.size()) return NotFound("tensor #" + Num(index));
    const TensorInfo& info = infos_[index];
    auto bytes = Bytes(entries_[index].range);
    if (!bytes) return bytes.error().WithContext("tensor " + Quote(info.name));
    MP_ASSIGN_OR_RETURN(std::shared_ptr<Buffer> aligned, AlignedFor(info.dtype, std::move(*bytes)));
    return TensorView{info, std::move(aligned)};
  }

 private:
  Reader() = default;

  Result<std::shared_ptr<Buffer>> Bytes(const ByteRange& r) const {
    if (r.offset + r.size <= fb_->size()) return fb_->Slice(r.offset, r.size);
    return file_->Read(r.offset, r.size);
  }

  Status Parse(const ReadOptions& options) {
    const uint64_t size = file_->size();
    if (size < 8) return Corrupt("file is " + Num(size) + " bytes, too short for a FlatBuffer");
    // A FlatBuffer addresses at most 2 GiB; larger models keep buffers after it.
    const uint64_t fb_size = std::min<uint64_t>(size, FLATBUFFERS_MAX_BUFFER_SIZE - 1);
    MP_ASSIGN_OR_RETURN(fb_, file_->Read(0, fb_size));
    if (std::memcmp(fb_->data() + 4, kFileIdentifier.data(), 4) != 0) {
      return Corrupt("file identifier is not \"TFL3\"");
    }
    Verifier::Options vopts;
    vopts.max_tables = static_cast<flatbuffers::uoffset_t>(
        std::min<uint64_t>(options.max_tensors * 4 + 1024, 100'000'000));
    Verifier verifier(fb_->data(), fb_->size(), vopts);
    if (!verifier.VerifyBuffer<ModelT>(kFileIdentifier.data())) {
      return Corrupt(
          "the FlatBuffer does not verify (an offset, vector or table lies outside the " +
          std::string("file, is misaligned, or tables nest too deep or too many)"));
    }
    const ModelT* model = flatbuffers::GetRoot<ModelT>(fb_->data());
    Budget budget(size);

    graph_.version = model->version();
    if (graph_.version < 3) {
      return Unsupported("schema version " + Num(graph_.version) +
                         " (before 3, buffers lived in tensors); only version 3 is read");
    }
    if (graph_.version > 3) {
      notes_.push_back("schema version " + Num(graph_.version) + " is newer than 3, read as 3");
    }
    graph_.description = Str(model->description());

    // Buffers: where each one's bytes are.
    const auto* buffers = model->buffers();
    const size_t nbuf = buffers ? buffers->size() : 0;
    MP_RETURN_IF_ERROR(budget.Charge(nbuf));
    graph_.buffer_count = nbuf;
    std::vector<ByteRange> ranges(nbuf);
    for (size_t b = 0; b < nbuf; ++b) {
      const BufferT* buf = buffers->Get(static_cast<flatbuffers::uoffset_t>(b));
      const Vector<uint8_t>* data = buf->data();
      if (data && data->size() > 0) {
        ranges[b] = {static_cast<uint64_t>(data->Data() - fb_->data()), data->size()};
      } else if (buf->offset() > 1) {
        if (buf->offset() > size || buf->size() > size - buf->offset()) {
          return Corrupt("buffer " + Num(b) + ": bytes [" + Num(buf->offset()) + ", +" +
                         Num(buf->size()) + ") lie past the end of the file (" + Num(size) +
                         " bytes)");
        }
        ranges[b] = {buf->offset(), buf->size()};
      }
    }

    MP_RETURN_IF_ERROR(ParseOperatorCodes(model, budget));
    MP_RETURN_IF_ERROR(ParseMetadata(model, ranges, budget));
    MP_RETURN_IF_ERROR(ParseSubgraphs(model, ranges, budget, options));
    MP_RETURN_IF_ERROR(ParseSignatures(model, budget));

    metadata_["tflite.version"] = graph_.version;
    if (!graph_.description.empty()) metadata_["tflite.description"] = graph_.description;
    if (!graph_.metadata.empty()) {
      Json meta = Json::object();
      for (const MetadataEntry& m : graph_.metadata) {
        std::optional<std::string> text;
        if (m.buffer < ranges.size() && ranges[m.buffer].size <= 4096) {
          MP_RETURN_IF_ERROR(budget.Charge(ranges[m.buffer].size));
          MP_ASSIGN_OR_RETURN(auto bytes, Bytes(ranges[m.buffer]));
          text = PrintableText(bytes->span());
        }
        if (text) {
          meta[m.name] = *text;
        } else {
          meta[m.name] = Json{{"buffer", m.buffer}, {"bytes", m.bytes}};
        }
      }
      metadata_["tflite.metadata"] = std::move(meta);
    }
    Json quant = Json::object();
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (entries_[i].quantization) {
        quant[infos_[i].name] = QuantizationJson(*entries_[i].quantization);
      }
    }
    if (!quant.empty()) metadata_["tflite.quantization"] = std::move(quant);
    return Status::Ok();
  }

  Status ParseOperatorCodes(const ModelT* model, Budget& budget) {
    const auto* codes = model->operator_codes();
    if (!codes) return Status::Ok();
    MP_RETURN_IF_ERROR(budget.Charge(codes->size()));
    for (const OperatorCodeT* c : *codes) {
      OperatorCode oc;
      // Writers since schema 3a fill both fields; older ones only the deprecated byte.
      oc.builtin_code = std::max<int32_t>(c->deprecated_builtin_code(), c->builtin_code());
      oc.name = BuiltinOperatorName(oc.builtin_code);
      oc.custom_code = Str(c->custom_code());
      MP_RETURN_IF_ERROR(budget.Charge(oc.custom_code.size()));
      oc.version = c->version();
      graph_.operator_codes.push_back(std::move(oc));
    }
    return Status::Ok();
  }

  Status ParseMetadata(const ModelT* model, const std::vector<ByteRange>& ranges, Budget& budget) {
    const auto* meta = model->metadata();
    if (!meta) return Status::Ok();
    MP_RETURN_IF_ERROR(budget.Charge(meta->size()));
    for (const MetadataT* m : *meta) {
      MetadataEntry e{Str(m->name()), m->buffer(), 0};
      MP_RETURN_IF_ERROR(budget.Charge(e.name.size()));
      if (e.buffer >= ranges.size()) {
        return Corrupt("metadata " + Quote(e.name) + ": buffer " + Num(e.buffer) +
                       " is out of range (" + Num(ranges.size()) + " buffers)");
      }
      e.bytes = ranges[e.buffer].size;
      graph_.metadata.push_back(std::move(e));
    }
    return Status::Ok();
  }

  Status ParseSignatures(const ModelT* model, Budget& budget) {
    const auto* sigs = model->signature_defs();
    if (!sigs) return Status::Ok();
    MP_RETURN_IF_ERROR(budget.Charge(sigs->size()));
    for (const SignatureDefT* s : *sigs) {
      SignatureDef d;
      d.key = Str(s->signature_key());
      d.subgraph_index = s->subgraph_index();
      if (d.subgraph_index >= graph_.subgraphs.size()) {
        return Corrupt("signature " + Quote(d.key) + ": subgraph " + Num(d.subgraph_index) +
                       " is out of range (" + Num(graph_.subgraphs.size()) + " subgraphs)");
      }
      const size_t ntensors = graph_.subgraphs[d.subgraph_index].tensors.size();
      for (int side = 0; side < 2; ++side) {
        const auto* maps = side == 0 ? s->inputs() : s->outputs();
        if (!maps) continue;
        MP_RETURN_IF_ERROR(budget.Charge(maps->size()));
        for (const TensorMapT* m : *maps) {
          std::string name = Str(m->name());
          MP_RETURN_IF_ERROR(budget.Charge(name.size()));
          if (m->tensor_index() >= ntensors) {
            return Corrupt("signature " + Quote(d.key) + ": " + Quote(name) + " names tensor " +
                           Num(m->tensor_index()) + " of " + Num(ntensors));
          }
          (side == 0 ? d.inputs : d.outputs).emplace_back(std::move(name), m->tensor_index());
        }
      }
      graph_.signature_defs.push_back(std::move(d));
    }
    return Status::Ok();
  }

  static Status CheckIndices(const std::vector<int32_t>& indices, size_t ntensors,
                             bool allow_omitted, std::string_view what) {
    for (int32_t i : indices) {
      if (allow_omitted && i == -1) continue;
      if (i < 0 || static_cast<size_t>(i) >= ntensors) {
        return Corrupt(std::string(what) + " names tensor " + std::to_string(i) + " of " +
                       Num(ntensors));
      }
    }
    return Status::Ok();
  }

  Status ParseSubgraphs(const ModelT* model, const std::vector<ByteRange>& ranges, Budget& budget,
                        const ReadOptions& options) {
    const auto* subgraphs = model->subgraphs();
    if (!subgraphs || subgraphs->size() == 0) return Corrupt("the model has no subgraph");
    MP_RETURN_IF_ERROR(budget.Charge(subgraphs->size()));
    uint64_t total_tensors = 0;
    std::unordered_set<std::string> names;
    std::vector<std::string> unsupported, sparse;
    for (size_t k = 0; k < subgraphs->size(); ++k) {
      const SubGraphT* sg = subgraphs->Get(static_cast<flatbuffers::uoffset_t>(k));
      Subgraph g;
      g.name = Str(sg->name());
      MP_RETURN_IF_ERROR(budget.Charge(g.name.size()));
      const std::string where = "subgraph " + Num(k);
      const auto* tensors = sg->tensors();
      const size_t nt = tensors ? tensors->size() : 0;
      total_tensors += nt;
      if (total_tensors > options.max_tensors) {
        return LimitExceeded(Num(total_tensors) + " tensors is over the limit of " +
                             Num(options.max_tensors));
      }
      for (size_t i = 0; i < nt; ++i) {
        const TensorT* t = tensors->Get(static_cast<flatbuffers::uoffset_t>(i));
        auto desc = ParseTensor(t, ranges, budget, options);
        if (!desc) {
          return desc.error().WithContext(where + ", tensor " + Num(i) +
                                          (t->name() ? " " + Quote(t->name()->string_view()) : ""));
        }
        g.tensors.push_back(std::move(*desc));
      }
      MP_ASSIGN_OR_RETURN(g.inputs, ReadVec(sg->inputs(), budget));
      MP_ASSIGN_OR_RETURN(g.outputs, ReadVec(sg->outputs(), budget));
      MP_RETURN_IF_ERROR(CheckIndices(g.inputs, nt, false, where + " input"));
      MP_RETURN_IF_ERROR(CheckIndices(g.outputs, nt, false, where + " output"));
      if (const auto* ops = sg->operators()) {
        MP_RETURN_IF_ERROR(budget.Charge(ops->size()));
        for (size_t o = 0; o < ops->size(); ++o) {
          const OperatorT* op = ops->Get(static_cast<flatbuffers::uoffset_t>(o));
          Operator x;
          x.opcode_index = op->opcode_index();
          const std::string owhere = where + ", operator " + Num(o);
          if (x.opcode_index >= graph_.operator_codes.size()) {
            return Corrupt(owhere + ": opcode_index " + Num(x.opcode_index) + " is out of range (" +
                           Num(graph_.operator_codes.size()) + " operator codes)");
          }
          MP_ASSIGN_OR_RETURN(x.inputs, ReadVec(op->inputs(), budget));
          MP_ASSIGN_OR_RETURN(x.outputs, ReadVec(op->outputs(), budget));
          MP_RETURN_IF_ERROR(CheckIndices(x.inputs, nt, true, owhere + " input"));
          MP_RETURN_IF_ERROR(CheckIndices(x.outputs, nt, true, owhere + " output"));
          g.operators.push_back(std::move(x));
        }
      }
      // The view's tensors: those holding constant data.
      for (size_t i = 0; i < g.tensors.size(); ++i) {
        TensorDesc& d = g.tensors[i];
        if (d.data_bytes == 0) continue;
        std::string name = d.name.empty() ? "tensor_" + Num(i) : d.name;
        if (k > 0) name = (g.name.empty() ? "subgraph_" + Num(k) : g.name) + "/" + name;
        const std::optional<DType> dtype = DTypeOf(d.type);
        if (d.sparse || !dtype) {
          (d.sparse ? sparse : unsupported)
              .push_back(Quote(name) + " (" + TensorTypeName(d.type) + ")");
          continue;
        }
        while (!names.insert(name).second) name += "#" + Num(k) + ":" + Num(i);
        std::vector<uint64_t> dims(d.shape.begin(), d.shape.end());
        auto info = TensorInfo::Make(name, *dtype, Shape(std::move(dims)));
        if (!info) return info.error().WithContext(where + ", tensor " + Quote(name));
        d.source_index = infos_.size();
        infos_.push_back(std::move(*info));
        entries_.push_back(Entry{ranges[d.buffer], k, i, d.quantization});
        if (entries_.back().quantization && !entries_.back().quantization->has_scale()) {
          entries_.back().quantization.reset();  // min/max only: nothing to dequantize with
        }
      }
      graph_.subgraphs.push_back(std::move(g));
    }
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size() && i < 20; ++i) s += (i ? ", " : "") + v[i];
      if (v.size() > 20) s += ", ... (" + Num(v.size() - 20) + " more)";
      return s;
    };
    if (!unsupported.empty()) {
      notes_.push_back(Num(unsupported.size()) +
                       " constant tensor(s) of types modelport has no dtype for are not in the "
                       "tensor list (strings are shown by inspect): " +
                       list(unsupported));
    }
    if (!sparse.empty()) {
      notes_.push_back(Num(sparse.size()) +
                       " sparse constant tensor(s) are not in the tensor list (their buffers hold "
                       "compressed values): " +
                       list(sparse));
    }
    return Status::Ok();
  }

  Result<TensorDesc> ParseTensor(const TensorT* t, const std::vector<ByteRange>& ranges,
                                 Budget& budget, const ReadOptions& options) {
    TensorDesc d;
    d.name = Str(t->name());
    if (d.name.size() > options.max_name_bytes) {
      return LimitExceeded("name of " + Num(d.name.size()) + " bytes is over the limit of " +
                           Num(options.max_name_bytes));
    }
    MP_RETURN_IF_ERROR(budget.Charge(d.name.size()));
    d.type = t->type();
    if (t->shape() && t->shape()->size() > options.max_rank) {
      return LimitExceeded("rank " + Num(t->shape()->size()) + " is over the limit of " +
                           Num(options.max_rank));
    }
    MP_ASSIGN_OR_RETURN(d.shape, ReadVec(t->shape(), budget));
    if (t->shape_signature() && t->shape_signature()->size() > options.max_rank) {
      return LimitExceeded("shape_signature rank " + Num(t->shape_signature()->size()) +
                           " is over the limit of " + Num(options.max_rank));
    }
    MP_ASSIGN_OR_RETURN(d.shape_signature, ReadVec(t->shape_signature(), budget));
    d.buffer = t->buffer();
    d.is_variable = t->is_variable();
    d.sparse = t->has_sparsity();
    if (d.buffer >= ranges.size() && !(d.buffer == 0 && ranges.empty())) {
      return Corrupt("buffer " + Num(d.buffer) + " is out of range (" + Num(ranges.size()) +
                     " buffers)");
    }
    if (const QuantizationT* q = t->quantization()) {
      Quantization p;
      MP_ASSIGN_OR_RETURN(p.scale, ReadVec(q->scale(), budget));
      MP_ASSIGN_OR_RETURN(p.zero_point, ReadVec(q->zero_point(), budget));
      MP_ASSIGN_OR_RETURN(p.min, ReadVec(q->min(), budget));
      MP_ASSIGN_OR_RETURN(p.max, ReadVec(q->max(), budget));
      p.quantized_dimension = q->quantized_dimension();
      p.custom = q->details_type() != 0;
      if (!p.scale.empty() || !p.zero_point.empty() || !p.min.empty() || !p.max.empty() ||
          p.custom) {
        d.quantization = std::move(p);
      }
    }
    const ByteRange range = d.buffer < ranges.size() ? ranges[d.buffer] : ByteRange{};
    d.data_bytes = range.size;
    if (d.data_bytes == 0 || d.sparse) return d;

    // Constant data must match the shape exactly.
    for (int32_t dim : d.shape) {
      if (dim < 0) return Corrupt("constant tensor has dimension " + std::to_string(dim));
    }
    uint64_t numel = 1;
    for (int32_t dim : d.shape) {
      MP_ASSIGN_OR_RETURN(numel, CheckedMul(numel, static_cast<uint64_t>(dim)));
    }
    if (d.type == static_cast<int8_t>(TensorType::kString)) {
      MP_RETURN_IF_ERROR(budget.Charge(range.size));
      MP_ASSIGN_OR_RETURN(auto bytes, Bytes(range));
      auto strings = DecodeStrings(bytes->span(), numel);
      if (!strings) return strings.error();
      d.string_values = std::move(*strings);
      return d;
    }
    if (const std::optional<DType> dtype = DTypeOf(d.type)) {
      MP_ASSIGN_OR_RETURN(uint64_t need, CheckedMul(numel, ElementSize(*dtype)));
      if (need != range.size) {
        return Corrupt("buffer " + Num(d.buffer) + " holds " + Num(range.size) + " bytes but " +
                       TensorTypeName(d.type) + " " +
                       Shape(std::vector<uint64_t>(d.shape.begin(), d.shape.end())).ToString() +
                       " needs " + Num(need));
      }
    }
    return d;
  }

  std::shared_ptr<InputFile> file_;
  std::shared_ptr<Buffer> fb_;  // the FlatBuffer: the file's first min(size, 2 GiB - 1) bytes
  GraphInfo graph_;
  std::vector<TensorInfo> infos_;
  std::vector<Entry> entries_;
  Json metadata_ = Json::object();
  std::vector<std::string> notes_;
};

// ---------------------------------------------------------------------------------------------
// Dequantization

bool DequantizableDType(DType d) {
  return d == DType::kI8 || d == DType::kU8 || d == DType::kI16 || d == DType::kI32;
}

// [outer, channels, inner] around the quantized dimension; channels 1 for one scale.
struct Layout {
  uint64_t outer = 1, channels = 1, inner = 1;
};

Result<Layout> LayoutOf(const TensorInfo& info, const Quantization& q) {
  if (!DequantizableDType(info.dtype)) {
    return InvalidArgument("dtype " + std::string(DTypeName(info.dtype)) +
                           " does not dequantize (i8, u8, i16 or i32 only)");
  }
  if (!q.has_scale()) return InvalidArgument("no scale to dequantize with");
  const size_t n = q.scale.size();
  if (!q.zero_point.empty() && q.zero_point.size() != 1 && q.zero_point.size() != n) {
    return InvalidArgument(Num(q.zero_point.size()) + " zero points for " + Num(n) + " scales");
  }
  for (int64_t zp : q.zero_point) {
    // Keeps q - zero_point exact in int64 for every dtype dequantized.
    if (zp < INT32_MIN || zp > INT32_MAX) {
      return InvalidArgument("zero point " + std::to_string(zp) + " is outside the 32-bit range");
    }
  }
  Layout l;
  const auto& dims = info.shape.dims();
  MP_ASSIGN_OR_RETURN(uint64_t numel, info.shape.NumElements());
  if (n == 1) {
    l.inner = numel;
    return l;
  }
  const int32_t axis = q.quantized_dimension;
  if (axis < 0 || static_cast<size_t>(axis) >= dims.size()) {
    return InvalidArgument("quantized_dimension " + std::to_string(axis) + " is out of range for " +
                           info.shape.ToString());
  }
  if (dims[axis] != n) {
    return InvalidArgument(Num(n) + " scales for dimension " + std::to_string(axis) + " of " +
                           info.shape.ToString());
  }
  for (int32_t i = 0; i < axis; ++i) l.outer *= dims[i];
  l.channels = n;
  for (size_t i = axis + 1; i < dims.size(); ++i) l.inner *= dims[i];
  return l;
}

template <typename T>
void DequantizeTyped(const uint8_t* data, const Layout& l, const Quantization& q, float* out) {
  const T* v = reinterpret_cast<const T*>(data);
  uint64_t k = 0;
  for (uint64_t o = 0; o < l.outer; ++o) {
    for (uint64_t c = 0; c < l.channels; ++c) {
      const float scale = q.scale[c];
      const int64_t zp = q.zero_point.empty()       ? 0
                         : q.zero_point.size() == 1 ? q.zero_point[0]
                                                    : q.zero_point[c];
      for (uint64_t i = 0; i < l.inner; ++i, ++k) {
        out[k] = static_cast<float>(static_cast<int64_t>(v[k]) - zp) * scale;
      }
    }
  }
}

class DequantizedView final : public ModelSource {
 public:
  DequantizedView(const TfliteSource& source, std::vector<TensorInfo> infos,
                  std::vector<std::optional<Layout>> layouts, Json metadata,
                  std::vector<std::string> notes)
      : source_(source),
        infos_(std::move(infos)),
        layouts_(std::move(layouts)),
        metadata_(std::move(metadata)),
        notes_(std::move(notes)) {}

  std::string_view format() const override { return source_.format(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  ModelFiles files() const override { return source_.files(); }
  std::vector<std::string> notes() const override { return notes_; }

  Result<TensorView> Load(size_t index) const override {
    if (index >= infos_.size()) return NotFound("tensor #" + Num(index));
    MP_ASSIGN_OR_RETURN(TensorView q, source_.Load(index));
    if (!layouts_[index]) return q;
    MP_ASSIGN_OR_RETURN(auto out, Buffer::Allocate(infos_[index].byte_size));
    std::span<float> floats(reinterpret_cast<float*>(out->mutable_data()),
                            infos_[index].byte_size / sizeof(float));
    Status s = DequantizeValues(q, *source_.quantization(index), floats);
    if (!s.ok()) return std::move(s).WithContext("tensor " + Quote(infos_[index].name));
    return TensorView{infos_[index], std::move(out)};
  }

 private:
  const TfliteSource& source_;
  std::vector<TensorInfo> infos_;
  std::vector<std::optional<Layout>> layouts_;
  Json metadata_;
  std::vector<std::string> notes_;
};

}  // namespace

std::string TensorTypeName(int8_t type) {
  if (type >= 0 && static_cast<size_t>(type) < kTypeNames.size()) {
    return std::string(kTypeNames[type]);
  }
  return "TYPE_" + std::to_string(type);
}

std::optional<DType> DTypeOf(int8_t type) {
  switch (static_cast<TensorType>(type)) {
    case TensorType::kFloat32:
      return DType::kF32;
    case TensorType::kFloat16:
      return DType::kF16;
    case TensorType::kInt32:
      return DType::kI32;
    case TensorType::kUInt8:
      return DType::kU8;
    case TensorType::kInt64:
      return DType::kI64;
    case TensorType::kBool:
      return DType::kBool;
    case TensorType::kInt16:
      return DType::kI16;
    case TensorType::kComplex64:
      return DType::kC64;
    case TensorType::kInt8:
      return DType::kI8;
    case TensorType::kFloat64:
      return DType::kF64;
    case TensorType::kUInt64:
      return DType::kU64;
    case TensorType::kUInt32:
      return DType::kU32;
    case TensorType::kUInt16:
      return DType::kU16;
    case TensorType::kBFloat16:
      return DType::kBF16;
    default:
      return std::nullopt;
  }
}

std::string BuiltinOperatorName(int32_t code) {
  if (code >= 0 && static_cast<size_t>(code) < std::size(kOpNames)) {
    return std::string(kOpNames[code]);
  }
  return "BUILTIN_" + std::to_string(code);
}

std::string OperatorName(const OperatorCode& code) {
  return code.builtin_code == kCustomCode && !code.custom_code.empty() ? code.custom_code
                                                                       : code.name;
}

const TfliteSource* AsTflite(const ModelSource& source) {
  return dynamic_cast<const TfliteSource*>(&source);
}

Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options) {
  return Reader::Open(path, options);
}

bool Detect(std::span<const uint8_t> prefix, uint64_t file_size) {
  if (prefix.size() < 8 || file_size < 16) return false;
  if (std::memcmp(prefix.data() + 4, kFileIdentifier.data(), 4) != 0) return false;
  const uint32_t root = static_cast<uint32_t>(prefix[0]) | static_cast<uint32_t>(prefix[1]) << 8 |
                        static_cast<uint32_t>(prefix[2]) << 16 |
                        static_cast<uint32_t>(prefix[3]) << 24;
  return root >= 8 && root < file_size && root % 4 == 0;
}

Json GraphInfoJson(const GraphInfo& info) {
  Json j = Json::object();
  j["version"] = info.version;
  j["description"] = info.description;
  Json codes = Json::array();
  for (const OperatorCode& c : info.operator_codes) {
    Json o = {{"builtin_code", c.builtin_code}, {"name", c.name}};
    if (!c.custom_code.empty()) o["custom_code"] = c.custom_code;
    o["version"] = c.version;
    codes.push_back(std::move(o));
  }
  j["operator_codes"] = std::move(codes);
  Json subgraphs = Json::array();
  Json strings = Json::object();
  for (size_t k = 0; k < info.subgraphs.size(); ++k) {
    const Subgraph& g = info.subgraphs[k];
    auto io = [&](const std::vector<int32_t>& indices) {
      Json arr = Json::array();
      for (int32_t i : indices) {
        const TensorDesc& t = g.tensors[i];
        Json e = {
            {"index", i}, {"name", t.name}, {"type", TensorTypeName(t.type)}, {"shape", t.shape}};
        if (!t.shape_signature.empty()) e["shape_signature"] = t.shape_signature;
        arr.push_back(std::move(e));
      }
      return arr;
    };
    std::map<std::string, uint64_t> counts;
    for (const Operator& op : g.operators) {
      ++counts[OperatorName(info.operator_codes[op.opcode_index])];
    }
    Json s = {{"name", g.name},
              {"inputs", io(g.inputs)},
              {"outputs", io(g.outputs)},
              {"operators", g.operators.size()},
              {"tensors", g.tensors.size()}};
    Json op_counts = Json::object();
    for (const auto& [name, n] : counts) op_counts[name] = n;
    s["op_counts"] = std::move(op_counts);
    subgraphs.push_back(std::move(s));
    for (const TensorDesc& t : g.tensors) {
      if (t.type == static_cast<int8_t>(TensorType::kString) && t.data_bytes > 0) {
        strings[k == 0 ? t.name : g.name + "/" + t.name] = t.string_values;
      }
    }
  }
  j["subgraphs"] = std::move(subgraphs);
  j["buffers"] = info.buffer_count;
  Json meta = Json::array();
  for (const MetadataEntry& m : info.metadata) {
    meta.push_back({{"name", m.name}, {"buffer", m.buffer}, {"bytes", m.bytes}});
  }
  j["metadata"] = std::move(meta);
  Json sigs = Json::array();
  for (const SignatureDef& s : info.signature_defs) {
    auto maps = [](const std::vector<std::pair<std::string, uint32_t>>& v) {
      Json o = Json::object();
      for (const auto& [name, index] : v) o[name] = index;
      return o;
    };
    sigs.push_back({{"key", s.key},
                    {"subgraph_index", s.subgraph_index},
                    {"inputs", maps(s.inputs)},
                    {"outputs", maps(s.outputs)}});
  }
  j["signature_defs"] = std::move(sigs);
  if (!strings.empty()) j["string_constants"] = std::move(strings);
  return j;
}

std::vector<std::string> GraphSummary(const GraphInfo& info) {
  auto dims = [](const std::vector<int32_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
  };
  std::vector<std::string> lines;
  std::string head = "TFLite schema version " + Num(info.version);
  if (!info.description.empty()) head += ", " + Quote(info.description);
  lines.push_back(head + ", " + Num(info.buffer_count) + " buffers");
  std::string codes = "operator codes:";
  for (size_t i = 0; i < info.operator_codes.size(); ++i) {
    const OperatorCode& c = info.operator_codes[i];
    codes += (i ? ", " : " ") + OperatorName(c) + " v" + std::to_string(c.version);
  }
  lines.push_back(info.operator_codes.empty() ? "operator codes: none" : codes);
  for (size_t k = 0; k < info.subgraphs.size(); ++k) {
    const Subgraph& g = info.subgraphs[k];
    std::map<std::string, uint64_t> counts;
    for (const Operator& op : g.operators) {
      ++counts[OperatorName(info.operator_codes[op.opcode_index])];
    }
    std::string line = "subgraph " + Num(k) + " " + Quote(g.name) + ": " + Num(g.tensors.size()) +
                       " tensors, " + Num(g.operators.size()) + " operators";
    std::string ops;
    for (const auto& [name, n] : counts) ops += (ops.empty() ? "" : ", ") + name + " x" + Num(n);
    lines.push_back(ops.empty() ? line : line + " (" + ops + ")");
    for (int side = 0; side < 2; ++side) {
      for (int32_t i : side == 0 ? g.inputs : g.outputs) {
        const TensorDesc& t = g.tensors[i];
        std::string l = std::string(side == 0 ? "  input " : "  output ") + std::to_string(i) +
                        " " + Quote(t.name) + ": " + TensorTypeName(t.type) + " " + dims(t.shape);
        if (!t.shape_signature.empty()) l += " (signature " + dims(t.shape_signature) + ")";
        lines.push_back(std::move(l));
      }
    }
  }
  for (const SignatureDef& s : info.signature_defs) {
    std::string l = "signature " + Quote(s.key) + " (subgraph " + Num(s.subgraph_index) + "):";
    for (int side = 0; side < 2; ++side) {
      l += side == 0 ? " inputs" : "; outputs";
      for (const auto& [name, index] : side == 0 ? s.inputs : s.outputs) {
        l += " " + Quote(name) + "=" + Num(index);
      }
    }
    lines.push_back(std::move(l));
  }
  for (const MetadataEntry& m : info.metadata) {
    lines.push_back("metadata " + Quote(m.name) + ": buffer " + Num(m.buffer) + ", " +
                    Num(m.bytes) + " bytes");
  }
  for (size_t k = 0; k < info.subgraphs.size(); ++k) {
    for (const TensorDesc& t : info.subgraphs[k].tensors) {
      if (t.type != static_cast<int8_t>(TensorType::kString) || t.data_bytes == 0) continue;
      std::string l = "string constant " + Quote(t.name) + ": [";
      for (size_t i = 0; i < t.string_values.size() && i < 8; ++i) {
        l += (i ? ", " : "") + Quote(t.string_values[i]);
      }
      if (t.string_values.size() > 8) l += ", ... (" + Num(t.string_values.size()) + " strings)";
      lines.push_back(l + "]");
    }
  }
  return lines;
}

Status DequantizeValues(const TensorView& values, const Quantization& q, std::span<float> out) {
  MP_ASSIGN_OR_RETURN(Layout l, LayoutOf(values.info, q));
  const uint64_t numel = l.outer * l.channels * l.inner;
  if (out.size() != numel || values.data->size() != values.info.byte_size) {
    return InvalidArgument("dequantize: " + Num(out.size()) + " outputs for " + Num(numel) +
                           " values");
  }
  const uint8_t* data = values.data->data();
  switch (values.info.dtype) {
    case DType::kI8:
      DequantizeTyped<int8_t>(data, l, q, out.data());
      break;
    case DType::kU8:
      DequantizeTyped<uint8_t>(data, l, q, out.data());
      break;
    case DType::kI16:
      DequantizeTyped<int16_t>(data, l, q, out.data());
      break;
    default:
      DequantizeTyped<int32_t>(data, l, q, out.data());
      break;
  }
  return Status::Ok();
}

Result<std::unique_ptr<ModelSource>> Dequantize(const TfliteSource& source) {
  std::vector<TensorInfo> infos = source.tensors();
  std::vector<std::optional<Layout>> layouts(infos.size());
  Json metadata = source.metadata();
  Json* quant = nullptr;
  if (auto it = metadata.find("tflite.quantization"); it != metadata.end()) quant = &*it;
  uint64_t count = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    const Quantization* q = source.quantization(i);
    if (!q || !q->has_scale() || !DequantizableDType(infos[i].dtype)) continue;
    auto layout = LayoutOf(infos[i], *q);
    if (!layout) return layout.error().WithContext("tensor " + Quote(infos[i].name));
    layouts[i] = *layout;
    MP_ASSIGN_OR_RETURN(infos[i], TensorInfo::Make(infos[i].name, DType::kF32, infos[i].shape));
    if (quant) quant->erase(infos[i].name);
    ++count;
  }
  if (quant && quant->empty()) metadata.erase("tflite.quantization");
  std::vector<std::string> notes = source.notes();
  if (count > 0) notes.push_back(Num(count) + " quantized tensor(s) dequantized to f32");
  return std::unique_ptr<ModelSource>(new DequantizedView(
      source, std::move(infos), std::move(layouts), std::move(metadata), std::move(notes)));
}

}  // namespace mp::tflite
