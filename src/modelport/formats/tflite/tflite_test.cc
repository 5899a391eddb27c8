#include "modelport/formats/tflite/tflite.h"

#include <flatbuffers/flatbuffers.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>

#include "modelport/formats/safetensors/safetensors.h"
#include "test_util.h"

namespace mp::tflite {
namespace {

namespace fs = std::filesystem;
using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;
using flatbuffers::Table;
using flatbuffers::uoffset_t;
using mp::testing::GoldenDir;
using mp::testing::ReadBytes;
using mp::testing::TempDir;
using mp::testing::WriteBytes;

constexpr flatbuffers::voffset_t Slot(int id) {
  return static_cast<flatbuffers::voffset_t>(4 + 2 * id);
}

std::string GoldenModel() {
  return (GoldenDir() / "tf/parse_example_tflite/00000123/model.tflite").string();
}

// ---------------------------------------------------------------------------------------------
// A small TFLite writer for tests, built with FlatBufferBuilder's table API and the schema's
// field ids (see tflite.h).

struct QuantSpec {
  std::vector<float> scale;
  std::vector<int64_t> zero_point;
  int32_t quantized_dimension = 0;
};

struct TensorSpec {
  std::string name;
  int8_t type = 0;
  std::vector<int32_t> shape;
  uint32_t buffer = 0;
  std::optional<QuantSpec> quant;
  bool sparse = false;
};

struct OpSpec {
  uint32_t opcode_index = 0;
  std::vector<int32_t> inputs, outputs;
};

struct SubgraphSpec {
  std::string name;
  std::vector<TensorSpec> tensors;
  std::vector<int32_t> inputs, outputs;
  std::vector<OpSpec> ops;
};

struct OpCodeSpec {
  int8_t deprecated = 0;
  int32_t builtin = 0;
  std::string custom;
  int32_t version = 1;
};

struct BufferSpec {
  std::vector<uint8_t> data;
  uint64_t offset = 0, size = 0;  // external bytes (models over 2 GB)
};

struct ModelSpec {
  uint32_t version = 3;
  std::string description = "test model";
  std::vector<OpCodeSpec> opcodes;
  std::vector<SubgraphSpec> subgraphs;
  std::vector<BufferSpec> buffers;
  std::vector<std::pair<std::string, uint32_t>> metadata;
  std::vector<SignatureDef> signatures;
};

template <typename T>
std::vector<uint8_t> Bytes(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<uint8_t> Build(const ModelSpec& spec) {
  FlatBufferBuilder fbb;
  using TableOffsets = std::vector<Offset<Table>>;
  TableOffsets codes;
  for (const OpCodeSpec& c : spec.opcodes) {
    auto custom = c.custom.empty() ? Offset<flatbuffers::String>() : fbb.CreateString(c.custom);
    const uoffset_t start = fbb.StartTable();
    fbb.AddElement<int8_t>(Slot(0), c.deprecated, 0);
    if (!c.custom.empty()) fbb.AddOffset(Slot(1), custom);
    fbb.AddElement<int32_t>(Slot(2), c.version, 1);
    fbb.AddElement<int32_t>(Slot(3), c.builtin, 0);
    codes.push_back(Offset<Table>(fbb.EndTable(start)));
  }
  TableOffsets subgraphs;
  for (const SubgraphSpec& g : spec.subgraphs) {
    TableOffsets tensors;
    for (const TensorSpec& t : g.tensors) {
      auto shape = fbb.CreateVector(t.shape);
      auto name = fbb.CreateString(t.name);
      Offset<Table> quant, sparsity;
      if (t.quant) {
        auto scale = fbb.CreateVector(t.quant->scale);
        auto zp = fbb.CreateVector(t.quant->zero_point);
        const uoffset_t q = fbb.StartTable();
        fbb.AddOffset(Slot(2), scale);
        fbb.AddOffset(Slot(3), zp);
        fbb.AddElement<int32_t>(Slot(6), t.quant->quantized_dimension, 0);
        quant = Offset<Table>(fbb.EndTable(q));
      }
      if (t.sparse) {
        const uoffset_t s = fbb.StartTable();
        sparsity = Offset<Table>(fbb.EndTable(s));
      }
      const uoffset_t start = fbb.StartTable();
      fbb.AddOffset(Slot(0), shape);
      fbb.AddElement<int8_t>(Slot(1), t.type, 0);
      fbb.AddElement<uint32_t>(Slot(2), t.buffer, 0);
      fbb.AddOffset(Slot(3), name);
      if (t.quant) fbb.AddOffset(Slot(4), quant);
      if (t.sparse) fbb.AddOffset(Slot(6), sparsity);
      tensors.push_back(Offset<Table>(fbb.EndTable(start)));
    }
    TableOffsets ops;
    for (const OpSpec& o : g.ops) {
      auto in = fbb.CreateVector(o.inputs);
      auto out = fbb.CreateVector(o.outputs);
      const uoffset_t start = fbb.StartTable();
      fbb.AddElement<uint32_t>(Slot(0), o.opcode_index, 0);
      fbb.AddOffset(Slot(1), in);
      fbb.AddOffset(Slot(2), out);
      ops.push_back(Offset<Table>(fbb.EndTable(start)));
    }
    auto tv = fbb.CreateVector(tensors);
    auto iv = fbb.CreateVector(g.inputs);
    auto ov = fbb.CreateVector(g.outputs);
    auto opv = fbb.CreateVector(ops);
    auto name = fbb.CreateString(g.name);
    const uoffset_t start = fbb.StartTable();
    fbb.AddOffset(Slot(0), tv);
    fbb.AddOffset(Slot(1), iv);
    fbb.AddOffset(Slot(2), ov);
    fbb.AddOffset(Slot(3), opv);
    fbb.AddOffset(Slot(4), name);
    subgraphs.push_back(Offset<Table>(fbb.EndTable(start)));
  }
  TableOffsets buffers;
  for (const BufferSpec& b : spec.buffers) {
    Offset<flatbuffers::Vector<uint8_t>> data;
    if (!b.data.empty()) {
      fbb.ForceVectorAlignment(b.data.size(), 1, 16);
      data = fbb.CreateVector(b.data);
    }
    const uoffset_t start = fbb.StartTable();
    if (!b.data.empty()) fbb.AddOffset(Slot(0), data);
    fbb.AddElement<uint64_t>(Slot(1), b.offset, 0);
    fbb.AddElement<uint64_t>(Slot(2), b.size, 0);
    buffers.push_back(Offset<Table>(fbb.EndTable(start)));
  }
  TableOffsets metadata;
  for (const auto& [name, buffer] : spec.metadata) {
    auto n = fbb.CreateString(name);
    const uoffset_t start = fbb.StartTable();
    fbb.AddOffset(Slot(0), n);
    fbb.AddElement<uint32_t>(Slot(1), buffer, 0);
    metadata.push_back(Offset<Table>(fbb.EndTable(start)));
  }
  TableOffsets sigs;
  for (const SignatureDef& d : spec.signatures) {
    TableOffsets maps[2];
    for (int side = 0; side < 2; ++side) {
      for (const auto& [name, index] : side == 0 ? d.inputs : d.outputs) {
        auto n = fbb.CreateString(name);
        const uoffset_t start = fbb.StartTable();
        fbb.AddOffset(Slot(0), n);
        fbb.AddElement<uint32_t>(Slot(1), index, 0);
        maps[side].push_back(Offset<Table>(fbb.EndTable(start)));
      }
    }
    auto in = fbb.CreateVector(maps[0]);
    auto out = fbb.CreateVector(maps[1]);
    auto key = fbb.CreateString(d.key);
    const uoffset_t start = fbb.StartTable();
    fbb.AddOffset(Slot(0), in);
    fbb.AddOffset(Slot(1), out);
    fbb.AddOffset(Slot(2), key);
    fbb.AddElement<uint32_t>(Slot(4), d.subgraph_index, 0);
    sigs.push_back(Offset<Table>(fbb.EndTable(start)));
  }
  auto sigv = fbb.CreateVector(sigs);
  auto cv = fbb.CreateVector(codes);
  auto sv = fbb.CreateVector(subgraphs);
  auto desc = fbb.CreateString(spec.description);
  auto bv = fbb.CreateVector(buffers);
  auto mv = fbb.CreateVector(metadata);
  const uoffset_t start = fbb.StartTable();
  fbb.AddElement<uint32_t>(Slot(0), spec.version, 0);
  fbb.AddOffset(Slot(1), cv);
  fbb.AddOffset(Slot(2), sv);
  fbb.AddOffset(Slot(3), desc);
  fbb.AddOffset(Slot(4), bv);
  fbb.AddOffset(Slot(6), mv);
  fbb.AddOffset(Slot(7), sigv);
  fbb.Finish(Offset<Table>(fbb.EndTable(start)), "TFL3");
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

constexpr int8_t kF32 = 0, kI32 = 2, kU8 = 3, kString = 5, kI8 = 9;

// A quantized model: int8 weights per axis 0 and per axis 1, a uint8 tensor per tensor, a float
// bias, a string constant, an activation without data, and a second subgraph reusing a name.
ModelSpec QuantizedSpec() {
  ModelSpec m;
  m.opcodes = {{0, 0, "", 1}, {127, 150, "", 2}, {32, 32, "MyOp", 1}};
  m.buffers.push_back({});                                                    // 0: sentinel
  m.buffers.push_back({Bytes(std::vector<int8_t>{-128, 0, 1, 127, -2, 3})});  // 1: w0
  m.buffers.push_back({Bytes(std::vector<int8_t>{1, 2, 3, -1, -2, -3})});     // 2: w1
  m.buffers.push_back({std::vector<uint8_t>{0, 128, 255}});                   // 3: u
  m.buffers.push_back({Bytes(std::vector<float>{1.5f, -2.25f})});             // 4: bias
  // 5: strings "ab", "" (count, 3 offsets, bytes)
  m.buffers.push_back({Bytes(std::vector<int32_t>{2, 16, 18, 18})});
  m.buffers.back().data.push_back('a');
  m.buffers.back().data.push_back('b');
  m.buffers.push_back({std::vector<uint8_t>{'1', '.', '2', 0, 0}});  // 6: metadata text
  m.buffers.push_back({Bytes(std::vector<int32_t>{7})});             // 7: subgraph 1 constant
  SubgraphSpec g;
  g.name = "main";
  g.tensors = {
      {"input", kF32, {1, 3}, 0, std::nullopt, false},
      {"w0", kI8, {2, 3}, 1, QuantSpec{{0.5f, 0.25f}, {1, -2}, 0}, false},
      {"w1", kI8, {2, 3}, 2, QuantSpec{{1.0f, 2.0f, 4.0f}, {0}, 1}, false},
      {"u", kU8, {3}, 3, QuantSpec{{0.125f}, {128}, 0}, false},
      {"bias", kF32, {2}, 4, std::nullopt, false},
      {"labels", kString, {2}, 5, std::nullopt, false},
      {"output", kF32, {1, 2}, 0, std::nullopt, false},
  };
  g.inputs = {0};
  g.outputs = {6};
  g.ops = {{0, {0, 1, -1}, {6}}, {1, {6}, {6}}, {2, {6, 5}, {6}}};
  m.subgraphs.push_back(g);
  SubgraphSpec g2;
  g2.name = "body";
  g2.tensors = {{"bias", kI32, {1}, 7, std::nullopt, false}};
  g2.outputs = {0};
  m.subgraphs.push_back(g2);
  m.metadata = {{"min_runtime_version", 6}, {"binary", 1}};
  m.signatures = {{"serving_default", 0, {{"x", 0}}, {{"y", 6}}}};
  return m;
}

std::string WriteModel(const TempDir& dir, const std::vector<uint8_t>& bytes,
                       const std::string& name = "model.tflite") {
  const std::string path = dir.File(name);
  WriteBytes(path, bytes);
  return path;
}

// A scratch file for the loops that rewrite one file thousands of times: in tmpfs when there is
// one (writes to a disk-backed temp dir cost milliseconds each), removed on destruction.
class ScratchFile {
 public:
  explicit ScratchFile(const TempDir& fallback) {
    const std::string name = "modelport_tflite_test." + std::to_string(::getpid()) + ".tflite";
    path_ = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm/" + name : fallback.File(name);
  }
  ~ScratchFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

template <typename T>
std::vector<T> Values(const TensorView& v) {
  std::vector<T> out(v.data->size() / sizeof(T));
  std::memcpy(out.data(), v.data->data(), v.data->size());
  return out;
}

// ---------------------------------------------------------------------------------------------

TEST(TfliteTest, GoldenParseExampleModel) {
  for (IoMode mode : mp::testing::kIoModes) {
    ReadOptions opts;
    opts.io_mode = mode;
    auto src = Open(GoldenModel(), opts);
    ASSERT_TRUE(src.ok()) << src.error().ToString();
    const TfliteSource* tfl = AsTflite(**src);
    ASSERT_NE(tfl, nullptr);
    EXPECT_EQ((*src)->format(), "tflite");

    // The one numeric constant: ParseExample's default value for "x", float 0.
    ASSERT_EQ((*src)->tensors().size(), 1u);
    const TensorInfo& t = (*src)->tensors()[0];
    EXPECT_EQ(t.name, "ParseExample/key_x");
    EXPECT_EQ(t.dtype, DType::kF32);
    EXPECT_EQ(t.shape, Shape({1}));
    auto v = (*src)->Load(0);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    EXPECT_EQ(Values<float>(*v), std::vector<float>{0.0f});
    EXPECT_EQ(tfl->quantization(0), nullptr);

    const GraphInfo& g = tfl->graph_info();
    EXPECT_EQ(g.version, 3u);
    EXPECT_EQ(g.description, "MLIR Converted.");
    EXPECT_EQ(g.buffer_count, 10u);
    ASSERT_EQ(g.operator_codes.size(), 1u);
    EXPECT_EQ(g.operator_codes[0].builtin_code, kCustomCode);
    EXPECT_EQ(g.operator_codes[0].name, "CUSTOM");
    EXPECT_EQ(g.operator_codes[0].custom_code, "ParseExampleV2");
    EXPECT_EQ(g.operator_codes[0].version, 1);
    EXPECT_EQ(OperatorName(g.operator_codes[0]), "ParseExampleV2");

    ASSERT_EQ(g.subgraphs.size(), 1u);
    const Subgraph& sg = g.subgraphs[0];
    EXPECT_EQ(sg.name, "main");
    ASSERT_EQ(sg.tensors.size(), 7u);
    EXPECT_EQ(sg.inputs, std::vector<int32_t>{0});
    EXPECT_EQ(sg.outputs, (std::vector<int32_t>{5, 6}));
    const TensorDesc& in = sg.tensors[0];
    EXPECT_EQ(in.name, "input");
    EXPECT_EQ(in.type, static_cast<int8_t>(TensorType::kString));
    EXPECT_EQ(in.shape, std::vector<int32_t>{1});
    EXPECT_EQ(in.shape_signature, std::vector<int32_t>{-1});
    EXPECT_EQ(in.data_bytes, 0u);
    const TensorDesc& out0 = sg.tensors[5];
    EXPECT_EQ(out0.name, "ParseExample/ParseExampleV2");
    EXPECT_EQ(TensorTypeName(out0.type), "FLOAT32");
    EXPECT_EQ(out0.shape, (std::vector<int32_t>{1, 1}));
    EXPECT_EQ(out0.shape_signature, (std::vector<int32_t>{-1, 1}));
    const TensorDesc& out1 = sg.tensors[6];
    EXPECT_EQ(out1.name, "ParseExample/ParseExampleV2:1");
    EXPECT_EQ(TensorTypeName(out1.type), "STRING");
    EXPECT_EQ(out1.shape, (std::vector<int32_t>{1, 1}));

    ASSERT_EQ(sg.operators.size(), 1u);
    EXPECT_EQ(sg.operators[0].opcode_index, 0u);
    EXPECT_EQ(sg.operators[0].inputs, (std::vector<int32_t>{0, 2, 2, 1, 2, 3, 4}));
    EXPECT_EQ(sg.operators[0].outputs, (std::vector<int32_t>{5, 6}));

    // String constants: the feature keys and the default of "y".
    EXPECT_EQ(sg.tensors[1].name, "ParseExample/ParseExampleV2/dense_keys");
    EXPECT_EQ(sg.tensors[1].string_values, (std::vector<std::string>{"x", "y"}));
    EXPECT_EQ(sg.tensors[2].name, "ParseExample/ParseExampleV2/sparse_keys");
    EXPECT_EQ(sg.tensors[2].shape, std::vector<int32_t>{0});
    EXPECT_TRUE(sg.tensors[2].string_values.empty());
    EXPECT_GT(sg.tensors[2].data_bytes, 0u);
    EXPECT_EQ(sg.tensors[4].name, "ParseExample/key_y");
    EXPECT_EQ(sg.tensors[4].string_values, std::vector<std::string>{"missing"});
    EXPECT_EQ(sg.tensors[3].source_index, std::optional<size_t>(0));

    ASSERT_EQ(g.metadata.size(), 2u);
    EXPECT_EQ(g.metadata[0].name, "min_runtime_version");
    EXPECT_EQ(g.metadata[0].buffer, 8u);
    EXPECT_EQ(g.metadata[0].bytes, 16u);
    EXPECT_EQ(g.metadata[1].name, "signature_defs_metadata");
    EXPECT_EQ(g.metadata[1].buffer, 9u);
    EXPECT_TRUE(g.signature_defs.empty());

    const Json& meta = (*src)->metadata();
    EXPECT_EQ(meta["tflite.version"], 3);
    EXPECT_EQ(meta["tflite.description"], "MLIR Converted.");
    EXPECT_EQ(meta["tflite.metadata"]["min_runtime_version"], "");  // 16 NUL bytes
    EXPECT_EQ(meta["tflite.metadata"]["signature_defs_metadata"]["buffer"], 9);
    EXPECT_FALSE(meta.contains("tflite.quantization"));

    const auto notes = (*src)->notes();
    ASSERT_EQ(notes.size(), 1u);
    EXPECT_NE(notes[0].find("3 constant tensor(s)"), std::string::npos) << notes[0];
    EXPECT_NE(notes[0].find("'ParseExample/key_y' (STRING)"), std::string::npos) << notes[0];

    const Json j = GraphInfoJson(g);
    EXPECT_EQ(j["operator_codes"][0]["custom_code"], "ParseExampleV2");
    EXPECT_EQ(j["subgraphs"][0]["inputs"][0]["name"], "input");
    EXPECT_EQ(j["subgraphs"][0]["inputs"][0]["type"], "STRING");
    EXPECT_EQ(j["subgraphs"][0]["outputs"][1]["name"], "ParseExample/ParseExampleV2:1");
    EXPECT_EQ(j["subgraphs"][0]["op_counts"]["ParseExampleV2"], 1);
    EXPECT_EQ(j["string_constants"]["ParseExample/ParseExampleV2/dense_keys"],
              Json::array({"x", "y"}));
    EXPECT_EQ(GraphSummary(g),
              (std::vector<std::string>{
                  "TFLite schema version 3, 'MLIR Converted.', 10 buffers",
                  "operator codes: ParseExampleV2 v1",
                  "subgraph 0 'main': 7 tensors, 1 operators (ParseExampleV2 x1)",
                  "  input 0 'input': STRING [1] (signature [-1])",
                  "  output 5 'ParseExample/ParseExampleV2': FLOAT32 [1, 1] (signature [-1, 1])",
                  "  output 6 'ParseExample/ParseExampleV2:1': STRING [1, 1] (signature [-1, 1])",
                  "metadata 'min_runtime_version': buffer 8, 16 bytes",
                  "metadata 'signature_defs_metadata': buffer 9, 268 bytes",
                  "string constant 'ParseExample/ParseExampleV2/dense_keys': ['x', 'y']",
                  "string constant 'ParseExample/ParseExampleV2/sparse_keys': []",
                  "string constant 'ParseExample/key_y': ['missing']",
              }));
  }
}

TEST(TfliteTest, DetectsGoldenAndRejectsOthers) {
  const auto bytes = ReadBytes(GoldenModel());
  EXPECT_TRUE(Detect({bytes.data(), kDetectBytes}, bytes.size()));
  auto other = bytes;
  other[4] = 'X';
  EXPECT_FALSE(Detect({other.data(), kDetectBytes}, other.size()));
  EXPECT_FALSE(Detect({bytes.data(), kDetectBytes}, 20));  // root offset past the end
  EXPECT_FALSE(Detect({bytes.data(), 4}, bytes.size()));
}

TEST(TfliteTest, HandBuiltQuantizedModelRoundTrips) {
  TempDir dir;
  const std::string path = WriteModel(dir, Build(QuantizedSpec()));
  for (IoMode mode : mp::testing::kIoModes) {
    ReadOptions opts;
    opts.io_mode = mode;
    auto src = Open(path, opts);
    ASSERT_TRUE(src.ok()) << src.error().ToString();
    const TfliteSource* tfl = AsTflite(**src);
    ASSERT_NE(tfl, nullptr);
    const auto& ts = (*src)->tensors();
    ASSERT_EQ(ts.size(), 5u);
    EXPECT_EQ(ts[0].name, "w0");
    EXPECT_EQ(ts[0].dtype, DType::kI8);
    EXPECT_EQ(ts[0].shape, Shape({2, 3}));
    EXPECT_EQ(ts[1].name, "w1");
    EXPECT_EQ(ts[2].name, "u");
    EXPECT_EQ(ts[2].dtype, DType::kU8);
    EXPECT_EQ(ts[3].name, "bias");
    EXPECT_EQ(ts[3].dtype, DType::kF32);
    EXPECT_EQ(ts[4].name, "body/bias");  // second subgraph: prefixed by its name
    EXPECT_EQ(ts[4].dtype, DType::kI32);

    auto w0 = (*src)->Load(0);
    ASSERT_TRUE(w0.ok());
    EXPECT_EQ(Values<int8_t>(*w0), (std::vector<int8_t>{-128, 0, 1, 127, -2, 3}));
    auto bias = (*src)->Load(3);
    ASSERT_TRUE(bias.ok());
    EXPECT_EQ(Values<float>(*bias), (std::vector<float>{1.5f, -2.25f}));
    if (mode == IoMode::kMmap) {
      // Zero-copy: both loads are views of the same mapped bytes (buffers are 16-byte aligned).
      auto again = (*src)->Load(3);
      ASSERT_TRUE(again.ok());
      EXPECT_EQ(again->data->data(), bias->data->data());
    }
    auto body = (*src)->Load(4);
    ASSERT_TRUE(body.ok());
    EXPECT_EQ(Values<int32_t>(*body), std::vector<int32_t>{7});

    const Quantization* q0 = tfl->quantization(0);
    ASSERT_NE(q0, nullptr);
    EXPECT_EQ(q0->scale, (std::vector<float>{0.5f, 0.25f}));
    EXPECT_EQ(q0->zero_point, (std::vector<int64_t>{1, -2}));
    EXPECT_EQ(q0->quantized_dimension, 0);
    ASSERT_NE(tfl->quantization(1), nullptr);
    EXPECT_EQ(tfl->quantization(1)->quantized_dimension, 1);
    EXPECT_EQ(tfl->quantization(3), nullptr);

    const Json& meta = (*src)->metadata();
    EXPECT_EQ(meta["tflite.description"], "test model");
    EXPECT_EQ(meta["tflite.quantization"]["w0"]["scale"], Json::array({0.5, 0.25}));
    EXPECT_EQ(meta["tflite.quantization"]["w0"]["zero_point"], Json::array({1, -2}));
    EXPECT_EQ(meta["tflite.quantization"]["w1"]["quantized_dimension"], 1);
    EXPECT_EQ(meta["tflite.metadata"]["min_runtime_version"], "1.2");
    EXPECT_EQ(meta["tflite.metadata"]["binary"]["bytes"], 6);

    const GraphInfo& g = tfl->graph_info();
    ASSERT_EQ(g.operator_codes.size(), 3u);
    EXPECT_EQ(g.operator_codes[0].name, "ADD");
    EXPECT_EQ(g.operator_codes[1].builtin_code, 150);  // past the deprecated byte's range
    EXPECT_EQ(g.operator_codes[1].name, "GELU");
    EXPECT_EQ(g.operator_codes[1].version, 2);
    EXPECT_EQ(OperatorName(g.operator_codes[2]), "MyOp");
    ASSERT_EQ(g.subgraphs.size(), 2u);
    EXPECT_EQ(g.subgraphs[0].operators[0].inputs, (std::vector<int32_t>{0, 1, -1}));
    EXPECT_EQ(g.subgraphs[0].tensors[5].string_values, (std::vector<std::string>{"ab", ""}));
    EXPECT_EQ(g.subgraphs[1].name, "body");
    ASSERT_EQ(g.signature_defs.size(), 1u);
    EXPECT_EQ(g.signature_defs[0].key, "serving_default");
    EXPECT_EQ(g.signature_defs[0].outputs,
              (std::vector<std::pair<std::string, uint32_t>>{{"y", 6}}));
    const auto summary = GraphSummary(g);
    EXPECT_EQ(summary[1], "operator codes: ADD v1, GELU v2, MyOp v1");
    EXPECT_EQ(summary[2], "subgraph 0 'main': 7 tensors, 3 operators (ADD x1, GELU x1, MyOp x1)");
    EXPECT_NE(std::find(summary.begin(), summary.end(),
                        "signature 'serving_default' (subgraph 0): inputs 'x'=0; outputs 'y'=6"),
              summary.end());
    const Json j = GraphInfoJson(g);
    EXPECT_EQ(j["subgraphs"][0]["op_counts"], (Json{{"ADD", 1}, {"GELU", 1}, {"MyOp", 1}}));
    ASSERT_EQ((*src)->notes().size(), 1u);
    EXPECT_NE((*src)->notes()[0].find("'labels' (STRING)"), std::string::npos);
  }
}

TEST(TfliteTest, DequantizesPerAxisAndPerTensorExactly) {
  TempDir dir;
  const std::string path = WriteModel(dir, Build(QuantizedSpec()));
  auto src = Open(path, {});
  ASSERT_TRUE(src.ok()) << src.error().ToString();
  auto deq = Dequantize(*AsTflite(**src));
  ASSERT_TRUE(deq.ok()) << deq.error().ToString();
  const auto& ts = (*deq)->tensors();
  ASSERT_EQ(ts.size(), 5u);
  for (size_t i : {0, 1, 2}) EXPECT_EQ(ts[i].dtype, DType::kF32) << ts[i].name;
  EXPECT_EQ(ts[4].dtype, DType::kI32);  // no scale: passes through

  // w0, axis 0: row 0 (q - 1) * 0.5, row 1 (q + 2) * 0.25.
  auto w0 = (*deq)->Load(0);
  ASSERT_TRUE(w0.ok()) << w0.error().ToString();
  EXPECT_EQ(Values<float>(*w0), (std::vector<float>{-64.5f, -0.5f, 0.0f, 32.25f, 0.0f, 1.25f}));
  // w1, axis 1: column c scaled by 1, 2, 4, one zero point 0 for all.
  auto w1 = (*deq)->Load(1);
  ASSERT_TRUE(w1.ok());
  EXPECT_EQ(Values<float>(*w1), (std::vector<float>{1.0f, 4.0f, 12.0f, -1.0f, -4.0f, -12.0f}));
  // u, per tensor: (q - 128) * 0.125.
  auto u = (*deq)->Load(2);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(Values<float>(*u), (std::vector<float>{-16.0f, 0.0f, 15.875f}));
  auto bias = (*deq)->Load(3);
  ASSERT_TRUE(bias.ok());
  EXPECT_EQ(Values<float>(*bias), (std::vector<float>{1.5f, -2.25f}));
  EXPECT_FALSE((*deq)->metadata().contains("tflite.quantization"));

  // convert model.tflite weights.safetensors --dequantize
  const std::string out = dir.File("weights.safetensors");
  ASSERT_TRUE(safetensors::Write(**deq, out, {}).ok());
  auto back = safetensors::Open(out, {});
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  auto i = (*back)->Find("w0");
  ASSERT_TRUE(i.has_value());
  auto w0b = (*back)->Load(*i);
  ASSERT_TRUE(w0b.ok());
  EXPECT_EQ((*back)->tensors()[*i].dtype, DType::kF32);
  EXPECT_EQ(Values<float>(*w0b), (std::vector<float>{-64.5f, -0.5f, 0.0f, 32.25f, 0.0f, 1.25f}));
  EXPECT_TRUE((*back)->Find("body/bias").has_value());
}

// fuzz/corpus/tflite/quantized.tflite was written by flatc (Debian's flatbuffers-compiler) from
// JSON, independently of the builder above: int8 per axis, uint8 per tensor, an int32 bias
// quantized per axis, a string and a custom operator.
TEST(TfliteTest, ReadsAModelWrittenByFlatc) {
  auto src = Open((mp::testing::SourceDir() / "fuzz/corpus/tflite/quantized.tflite").string(), {});
  ASSERT_TRUE(src.ok()) << src.error().ToString();
  const auto& ts = (*src)->tensors();
  ASSERT_EQ(ts.size(), 3u);
  EXPECT_EQ(ts[0].name, "w");
  EXPECT_EQ(ts[1].name, "u");
  EXPECT_EQ(ts[2].name, "b");
  EXPECT_EQ(ts[2].dtype, DType::kI32);
  const GraphInfo& g = AsTflite(**src)->graph_info();
  EXPECT_EQ(g.operator_codes[0].name, "FULLY_CONNECTED");
  EXPECT_EQ(OperatorName(g.operator_codes[1]), "MyOp");
  EXPECT_EQ(g.subgraphs[0].tensors[4].string_values, std::vector<std::string>{"hi"});
  EXPECT_EQ(g.subgraphs[0].tensors[5].shape_signature, (std::vector<int32_t>{-1, 2}));
  EXPECT_EQ((*src)->metadata()["tflite.metadata"]["min_runtime_version"], "1.14.0");
  auto deq = Dequantize(*AsTflite(**src));
  ASSERT_TRUE(deq.ok()) << deq.error().ToString();
  auto w = (*deq)->Load(0);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(Values<float>(*w), (std::vector<float>{-64.5f, -0.5f, 0.0f, 32.25f, 0.0f, 1.25f}));
  auto u = (*deq)->Load(1);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(Values<float>(*u), (std::vector<float>{-16.0f, 0.0f, 15.875f}));
  auto b = (*deq)->Load(2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(Values<float>(*b), (std::vector<float>{0.0625f, -0.03125f}));
}

TEST(TfliteTest, DequantizeRefusesParametersThatDoNotFit) {
  TempDir dir;
  ModelSpec spec = QuantizedSpec();
  spec.subgraphs[0].tensors[1].quant->scale = {0.5f, 0.25f, 1.0f};  // 3 scales, dim 0 is 2
  auto src = Open(WriteModel(dir, Build(spec)), {});
  ASSERT_TRUE(src.ok()) << src.error().ToString();
  auto deq = Dequantize(*AsTflite(**src));
  ASSERT_FALSE(deq.ok());
  EXPECT_EQ(deq.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(deq.error().message(), "tensor 'w0': 2 zero points for 3 scales");

  spec.subgraphs[0].tensors[1].quant->zero_point = {1, -2, 0};
  src = Open(WriteModel(dir, Build(spec), "a.tflite"), {});
  ASSERT_TRUE(src.ok());
  deq = Dequantize(*AsTflite(**src));
  ASSERT_FALSE(deq.ok());
  EXPECT_EQ(deq.error().message(), "tensor 'w0': 3 scales for dimension 0 of [2, 3]");

  spec = QuantizedSpec();
  spec.subgraphs[0].tensors[3].quant->zero_point = {int64_t{1} << 40};
  src = Open(WriteModel(dir, Build(spec), "z.tflite"), {});
  ASSERT_TRUE(src.ok());
  deq = Dequantize(*AsTflite(**src));
  ASSERT_FALSE(deq.ok());
  EXPECT_EQ(deq.error().message(),
            "tensor 'u': zero point 1099511627776 is outside the 32-bit range");

  spec = QuantizedSpec();
  spec.subgraphs[0].tensors[1].quant->quantized_dimension = 5;
  src = Open(WriteModel(dir, Build(spec), "b.tflite"), {});
  ASSERT_TRUE(src.ok());
  deq = Dequantize(*AsTflite(**src));
  ASSERT_FALSE(deq.ok());
  EXPECT_EQ(deq.error().message(), "tensor 'w0': quantized_dimension 5 is out of range for [2, 3]");
}

TEST(TfliteTest, ExternalBuffersAfterTheFlatBuffer) {
  // Models over 2 GB keep buffer bytes after the FlatBuffer, addressed from the file's start.
  TempDir dir;
  ModelSpec spec = QuantizedSpec();
  const std::vector<float> values{3.0f, -4.0f};
  spec.buffers[4] = {{}, 1 << 20, 8};  // a placeholder: the layout is the same for any value
  std::vector<uint8_t> bytes = Build(spec);
  // The offset depends on the FlatBuffer's size, which does not depend on the offset's value.
  const uint64_t offset = (bytes.size() + 15) / 16 * 16;
  spec.buffers[4].offset = offset;
  bytes = Build(spec);
  ASSERT_EQ((bytes.size() + 15) / 16 * 16, offset);
  bytes.resize(offset);
  const auto raw = Bytes(values);
  bytes.insert(bytes.end(), raw.begin(), raw.end());
  const std::string path = WriteModel(dir, bytes);
  for (IoMode mode : mp::testing::kIoModes) {
    ReadOptions opts;
    opts.io_mode = mode;
    auto src = Open(path, opts);
    ASSERT_TRUE(src.ok()) << src.error().ToString();
    auto i = (*src)->Find("bias");
    ASSERT_TRUE(i.has_value());
    auto v = (*src)->Load(*i);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    EXPECT_EQ(Values<float>(*v), values);
  }
  bytes.resize(bytes.size() - 1);  // the data now runs past the end
  auto bad = Open(WriteModel(dir, bytes, "short.tflite"), {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(bad.error().message().find("buffer 4: bytes [" + std::to_string(offset) +
                                       ", +8) lie past the end of the file"),
            std::string::npos)
      << bad.error().ToString();
}

// Opens `spec` and expects `code` with `fragment` in the message.
void ExpectError(const ModelSpec& spec, StatusCode code, const std::string& fragment) {
  TempDir dir;
  auto src = Open(WriteModel(dir, Build(spec)), {});
  ASSERT_FALSE(src.ok()) << fragment;
  EXPECT_EQ(src.error().code(), code) << src.error().ToString();
  EXPECT_NE(src.error().ToString().find(fragment), std::string::npos) << src.error().ToString();
}

TEST(TfliteTest, RefusesInconsistentModels) {
  ModelSpec s = QuantizedSpec();
  s.subgraphs[0].tensors[1].buffer = 99;
  ExpectError(s, StatusCode::kCorrupt,
              "subgraph 0, tensor 1 'w0': buffer 99 is out of range (8 buffers)");

  s = QuantizedSpec();
  s.subgraphs[0].tensors[1].shape = {2, 4};
  ExpectError(s, StatusCode::kCorrupt, "'w0': buffer 1 holds 6 bytes but INT8 [2, 4] needs 8");

  s = QuantizedSpec();
  s.subgraphs[0].tensors[1].shape = {-1, 3};
  ExpectError(s, StatusCode::kCorrupt, "constant tensor has dimension -1");

  s = QuantizedSpec();
  s.subgraphs[0].ops[1].opcode_index = 3;
  ExpectError(s, StatusCode::kCorrupt,
              "subgraph 0, operator 1: opcode_index 3 is out of range (3 operator codes)");

  s = QuantizedSpec();
  s.subgraphs[0].outputs = {7};
  ExpectError(s, StatusCode::kCorrupt, "subgraph 0 output names tensor 7 of 7");

  s = QuantizedSpec();
  s.subgraphs[0].ops[0].inputs = {0, -2};
  ExpectError(s, StatusCode::kCorrupt, "subgraph 0, operator 0 input names tensor -2 of 7");

  s = QuantizedSpec();
  s.subgraphs[0].tensors[5].shape = {3};
  ExpectError(s, StatusCode::kCorrupt, "string buffer holds 2 strings, the shape needs 3");

  s = QuantizedSpec();
  s.metadata.push_back({"far", 50});
  ExpectError(s, StatusCode::kCorrupt, "metadata 'far': buffer 50 is out of range");

  s = QuantizedSpec();
  s.signatures[0].outputs = {{"y", 7}};
  ExpectError(s, StatusCode::kCorrupt, "signature 'serving_default': 'y' names tensor 7 of 7");

  s = QuantizedSpec();
  s.signatures[0].subgraph_index = 2;
  ExpectError(s, StatusCode::kCorrupt,
              "signature 'serving_default': subgraph 2 is out of range (2 subgraphs)");

  s = QuantizedSpec();
  s.version = 2;
  ExpectError(s, StatusCode::kUnsupported, "schema version 2");

  s = QuantizedSpec();
  s.subgraphs.clear();
  ExpectError(s, StatusCode::kCorrupt, "the model has no subgraph");

  s = QuantizedSpec();
  s.subgraphs[0].tensors[1].shape.assign(65, 1);
  ExpectError(s, StatusCode::kLimitExceeded, "rank 65 is over the limit of 64");
}

TEST(TfliteTest, SparseTensorsAreListedNotRead) {
  TempDir dir;
  ModelSpec s = QuantizedSpec();
  s.subgraphs[0].tensors[4].sparse = true;  // bias
  auto src = Open(WriteModel(dir, Build(s)), {});
  ASSERT_TRUE(src.ok()) << src.error().ToString();
  EXPECT_FALSE((*src)->Find("bias").has_value());
  const auto notes = (*src)->notes();
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_EQ(notes[1],
            "1 sparse constant tensor(s) are not in the tensor list (their buffers "
            "hold compressed values): 'bias' (FLOAT32)");
  EXPECT_TRUE(AsTflite(**src)->graph_info().subgraphs[0].tensors[4].sparse);
}

TEST(TfliteTest, DuplicateNamesGetTheirPosition) {
  TempDir dir;
  ModelSpec s = QuantizedSpec();
  s.subgraphs[0].tensors[2].name = "w0";
  auto src = Open(WriteModel(dir, Build(s)), {});
  ASSERT_TRUE(src.ok()) << src.error().ToString();
  EXPECT_EQ((*src)->tensors()[0].name, "w0");
  EXPECT_EQ((*src)->tensors()[1].name, "w0#0:2");
  EXPECT_EQ((*src)->metadata()["tflite.quantization"]["w0#0:2"]["quantized_dimension"], 1);
}

TEST(TfliteTest, WrongIdentifierAndTinyFiles) {
  TempDir dir;
  auto bytes = ReadBytes(GoldenModel());
  bytes[5] = 'X';
  auto src = Open(WriteModel(dir, bytes), {});
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(src.error().message().find("file identifier is not \"TFL3\""), std::string::npos);

  src = Open(WriteModel(dir, {0x1c, 0, 0}, "tiny.tflite"), {});
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(src.error().message().find("file is 3 bytes, too short for a FlatBuffer"),
            std::string::npos);
}

TEST(TfliteTest, TruncatedGoldenFailsCleanly) {
  TempDir dir;
  const auto bytes = ReadBytes(GoldenModel());
  const ScratchFile scratch(dir);
  const std::string& path = scratch.path();
  // The last byte is padding after the last string's terminator; every shorter prefix cuts
  // something the model refers to.
  for (size_t n = 0; n + 1 < bytes.size(); ++n) {
    WriteBytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
    auto src = Open(path, {});
    ASSERT_FALSE(src.ok()) << n;
    EXPECT_EQ(src.error().code(), StatusCode::kCorrupt) << n << ": " << src.error().ToString();
  }
}

TEST(TfliteTest, CorruptedGoldenNeverCrashes) {
  TempDir dir;
  const auto bytes = ReadBytes(GoldenModel());
  const ScratchFile scratch(dir);
  const std::string& path = scratch.path();
  size_t failures = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      auto b = bytes;
      b[i] ^= mask;
      WriteBytes(path, b);
      auto src = Open(path, {});
      if (!src.ok()) {
        ++failures;
        const StatusCode c = src.error().code();
        EXPECT_TRUE(c == StatusCode::kCorrupt || c == StatusCode::kUnsupported ||
                    c == StatusCode::kLimitExceeded)
            << i << ": " << src.error().ToString();
        EXPECT_EQ(src.error().ToString().find('\n'), std::string::npos);
        continue;
      }
      for (size_t t = 0; t < (*src)->tensors().size(); ++t) {
        auto v = (*src)->Load(t);
        ASSERT_TRUE(v.ok()) << i << ": " << v.error().ToString();
        EXPECT_EQ(v->data->size(), (*src)->tensors()[t].byte_size);
      }
      (void)GraphInfoJson(AsTflite(**src)->graph_info());
    }
  }
  EXPECT_GT(failures, 0u);
}

TEST(TfliteTest, NamesOfTypesAndOperators) {
  EXPECT_EQ(TensorTypeName(9), "INT8");
  EXPECT_EQ(TensorTypeName(18), "BFLOAT16");
  EXPECT_EQ(TensorTypeName(19), "TYPE_19");
  EXPECT_EQ(TensorTypeName(-1), "TYPE_-1");
  EXPECT_EQ(DTypeOf(1), DType::kF16);
  EXPECT_EQ(DTypeOf(18), DType::kBF16);
  EXPECT_EQ(DTypeOf(5), std::nullopt);
  EXPECT_EQ(DTypeOf(17), std::nullopt);  // INT4
  EXPECT_EQ(BuiltinOperatorName(3), "CONV_2D");
  EXPECT_EQ(BuiltinOperatorName(9), "FULLY_CONNECTED");
  EXPECT_EQ(BuiltinOperatorName(126), "BATCH_MATMUL");
  EXPECT_EQ(BuiltinOperatorName(207), "COMPLEX");
  EXPECT_EQ(BuiltinOperatorName(208), "BUILTIN_208");
}

}  // namespace
}  // namespace mp::tflite
