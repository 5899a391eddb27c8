#include "modelport/convert/onnx_quantize.h"

#include <gtest/gtest.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/validate/onnx_eval.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Deterministic weights with channel-dependent magnitudes (so per-channel scales differ) and a
// few exact ties at half a step (round half to even must decide them).
std::vector<float> Weights(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    v[i] = (static_cast<float>(s >> 8) / 16777216.0f - 0.5f) * (1.0f + static_cast<float>(i % 7));
  }
  return v;
}

void AddF32(::onnx::GraphProto* g, const std::string& name, std::vector<int64_t> dims,
            const std::vector<float>& values) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(::onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  t->set_raw_data(values.data(), values.size() * sizeof(float));
}

void AddInput(::onnx::ValueInfoProto* v, const std::string& name, std::vector<int64_t> dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(::onnx::TensorProto::FLOAT);
  for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
}

::onnx::NodeProto* AddNode(::onnx::GraphProto* g, const std::string& op,
                           std::vector<std::string> in, const std::string& out) {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(op + "_" + out);
  for (const auto& s : in) n->add_input(s);
  n->add_output(out);
  return n;
}

// x[2,64] -Gemm(W1[32,64], b1, transB=1)-> h[2,32] -MatMul(W2[32,48])-> y[2,48];
// img[1,4,8,8] -Conv(Wc[16,4,3,3])-> z[1,16,6,6]; plus an unused f16 [32,32] initializer.
struct TestModel {
  std::map<std::string, std::vector<float>> weights;
  std::string path;
};

TestModel WriteTestModel(const std::string& dir, int64_t opset) {
  TestModel m;
  m.weights["W1"] = Weights(32 * 64, 1);
  m.weights["b1"] = Weights(32, 2);
  m.weights["W2"] = Weights(32 * 48, 3);
  m.weights["Wc"] = Weights(16 * 4 * 9, 4);
  m.weights["W2"][5] = 0.0f;
  ::onnx::ModelProto model;
  model.set_ir_version(7);
  model.set_producer_name("onnx_quantize_test");
  model.add_opset_import()->set_version(opset);
  auto* g = model.mutable_graph();
  g->set_name("g");
  AddInput(g->add_input(), "x", {2, 64});
  AddInput(g->add_input(), "img", {1, 4, 8, 8});
  AddF32(g, "W1", {32, 64}, m.weights["W1"]);
  AddF32(g, "b1", {32}, m.weights["b1"]);
  AddF32(g, "W2", {32, 48}, m.weights["W2"]);
  AddF32(g, "Wc", {16, 4, 3, 3}, m.weights["Wc"]);
  auto* h = g->add_initializer();
  h->set_name("half");
  h->set_data_type(::onnx::TensorProto::FLOAT16);
  h->add_dims(32);
  h->add_dims(32);
  h->set_raw_data(std::string(32 * 32 * 2, '\0'));
  auto* gemm = AddNode(g, "Gemm", {"x", "W1", "b1"}, "h");
  auto* a = gemm->add_attribute();
  a->set_name("transB");
  a->set_type(::onnx::AttributeProto::INT);
  a->set_i(1);
  AddNode(g, "MatMul", {"h", "W2"}, "y");
  AddNode(g, "Conv", {"img", "Wc"}, "z");
  AddInput(g->add_output(), "y", {2, 48});
  AddInput(g->add_output(), "z", {1, 16, 6, 6});
  m.path = dir + "/model.onnx";
  std::ofstream(m.path, std::ios::binary) << model.SerializeAsString();
  return m;
}

std::unique_ptr<ModelSource> OpenOnnx(const std::string& path) {
  auto source = onnx::Open(path, ReadOptions{});
  EXPECT_TRUE(source.ok()) << source.status().ToString();
  return source.ok() ? std::move(source).value() : nullptr;
}

const onnx::OnnxSource& AsOnnx(const ModelSource& s) {
  return dynamic_cast<const onnx::OnnxSource&>(s);
}

::onnx::ModelProto ReadProto(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ::onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromIstream(&in)) << path;
  return m;
}

std::string CheckerError(const ::onnx::ModelProto& m) {
  try {
    ::onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

template <typename T>
std::vector<T> Values(const ModelSource& s, const std::string& name, DType dtype) {
  auto i = s.Find(name);
  EXPECT_TRUE(i.has_value()) << name;
  if (!i) return {};
  EXPECT_EQ(s.tensors()[*i].dtype, dtype) << name;
  auto view = s.Load(*i);
  EXPECT_TRUE(view.ok());
  std::vector<T> out(view->data->size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), view->data->data(), view->data->size());
  return out;
}

// The int8 scheme by its formula, written out here: per channel along `axis` of a row-major
// [outer, channels, inner] tensor.
struct Expected {
  std::vector<float> scales;
  std::vector<int8_t> q;
};
Expected ByFormula(const std::vector<float>& x, const std::vector<int64_t>& dims, int axis) {
  int64_t outer = 1, channels = dims[axis], inner = 1;
  for (int i = 0; i < axis; ++i) outer *= dims[i];
  for (size_t i = axis + 1; i < dims.size(); ++i) inner *= dims[i];
  Expected e;
  e.scales.assign(channels, 0.0f);
  auto at = [&](int64_t o, int64_t c, int64_t k) { return (o * channels + c) * inner + k; };
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t k = 0; k < inner; ++k)
        e.scales[c] = std::max(e.scales[c], std::fabs(x[at(o, c, k)]));
  for (float& s : e.scales) s = s == 0.0f ? 1.0f : s / 127.0f;
  e.q.resize(x.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t k = 0; k < inner; ++k) {
        const float r = std::nearbyint(x[at(o, c, k)] / e.scales[c]);
        e.q[at(o, c, k)] = static_cast<int8_t>(std::clamp(r, -127.0f, 127.0f));
      }
  return e;
}

const ::onnx::NodeProto* FindNode(const ::onnx::ModelProto& m, const std::string& output) {
  for (const auto& n : m.graph().node()) {
    if (n.output_size() == 1 && n.output(0) == output) return &n;
  }
  return nullptr;
}

int64_t AxisOf(const ::onnx::NodeProto& n) {
  for (const auto& a : n.attribute()) {
    if (a.name() == "axis") return a.i();
  }
  return -100;
}

QuantizeOptions Int8Options() {
  QuantizeOptions o;
  o.scheme = QuantScheme::kInt8;
  o.min_elements = 256;
  return o;
}

TEST(OnnxQuantize, Int8PerChannelWritesQdqWithTheKernelsValues) {
  TempDir dir;
  const TestModel m = WriteTestModel(dir.path().string(), 13);
  auto source = OpenOnnx(m.path);
  ASSERT_TRUE(source);
  const std::string out = dir.File("q.onnx");
  auto report = QuantizeOnnx(AsOnnx(*source), out, Int8Options(), WriteOptions{});
  ASSERT_TRUE(report.ok()) << report.status().ToString();

  const ::onnx::ModelProto proto = ReadProto(out);
  EXPECT_EQ(CheckerError(proto), "");
  EXPECT_FALSE(fs::exists(out + ".data"));  // the source was inline
  auto q = OpenOnnx(out);
  ASSERT_TRUE(q);
  const std::map<std::string, std::pair<std::vector<int64_t>, int>> want = {
      {"W1", {{32, 64}, 0}}, {"W2", {{32, 48}, 1}}, {"Wc", {{16, 4, 3, 3}, 0}}};
  for (const auto& [name, shape_axis] : want) {
    SCOPED_TRACE(name);
    const auto& [dims, axis] = shape_axis;
    const Expected e = ByFormula(m.weights.at(name), dims, axis);
    EXPECT_EQ(Values<int8_t>(*q, name + "_quantized", DType::kI8), e.q);
    EXPECT_EQ(Values<float>(*q, name + "_scale", DType::kF32), e.scales);
    EXPECT_EQ(Values<int8_t>(*q, name + "_zero_point", DType::kI8),
              std::vector<int8_t>(e.scales.size(), 0));
    EXPECT_EQ(q->tensors()[*q->Find(name + "_scale")].shape,
              Shape({static_cast<uint64_t>(e.scales.size())}));
    const ::onnx::NodeProto* node = FindNode(proto, name);
    ASSERT_NE(node, nullptr);
    EXPECT_EQ(node->op_type(), "DequantizeLinear");
    ASSERT_EQ(node->input_size(), 3);
    EXPECT_EQ(node->input(0), name + "_quantized");
    EXPECT_EQ(node->input(1), name + "_scale");
    EXPECT_EQ(node->input(2), name + "_zero_point");
    EXPECT_EQ(AxisOf(*node), axis);
  }
  // The DequantizeLinear nodes come first; the original nodes follow unchanged.
  ASSERT_EQ(proto.graph().node_size(), 6);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(proto.graph().node(i).op_type(), "DequantizeLinear");
  EXPECT_EQ(proto.graph().node(3).op_type(), "Gemm");
  EXPECT_EQ(proto.graph().node(3).input(1), "W1");
  EXPECT_FALSE(q->Find("W1").has_value());
  // Kept: the bias (rank 1) and the f16 weight, with their bytes as they were.
  EXPECT_EQ(Values<float>(*q, "b1", DType::kF32), m.weights.at("b1"));
  EXPECT_TRUE(q->Find("half").has_value());

  // The report: one entry per initializer in graph order.
  ASSERT_EQ(report->tensors.size(), 5u);
  const std::vector<std::string> order = {"W1", "b1", "W2", "Wc", "half"};
  for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(report->tensors[i].name, order[i]);
  const TensorQuantReport& w1 = report->tensors[0];
  EXPECT_TRUE(w1.quantized);
  EXPECT_EQ(w1.to, DType::kI8);
  EXPECT_EQ(w1.axis, 0);
  EXPECT_EQ(w1.bytes_before, 32u * 64 * 4);
  EXPECT_EQ(w1.bytes_after, 32u * 64 + 32 * 5);
  EXPECT_TRUE(w1.measured);
  // The error is that of q * scale against the original, computed here.
  const Expected e1 = ByFormula(m.weights.at("W1"), {32, 64}, 0);
  double max_abs = 0;
  for (size_t i = 0; i < e1.q.size(); ++i) {
    const float v = static_cast<float>(e1.q[i]) * e1.scales[i / 64];
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(v) - m.weights.at("W1")[i]));
  }
  EXPECT_EQ(w1.error.max_abs, max_abs);
  EXPECT_EQ(w1.error.count, 32u * 64);
  EXPECT_EQ(report->tensors[2].axis, 1);
  EXPECT_FALSE(report->tensors[1].quantized);
  EXPECT_EQ(report->tensors[1].reason, "rank 1 (bias, norm or scalar)");
  EXPECT_FALSE(report->tensors[4].quantized);
  EXPECT_EQ(report->tensors[4].reason, "f16 weights are kept (only f32 is quantized)");
}

TEST(OnnxQuantize, PerTensorUsesScalarScalesAndNoAxis) {
  TempDir dir;
  const TestModel m = WriteTestModel(dir.path().string(), 13);
  auto source = OpenOnnx(m.path);
  ASSERT_TRUE(source);
  QuantizeOptions o = Int8Options();
  o.per_tensor = true;
  o.exclude = {"Wc"};
  const std::string out = dir.File("q.onnx");
  auto report = QuantizeOnnx(AsOnnx(*source), out, o, WriteOptions{});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  const ::onnx::ModelProto proto = ReadProto(out);
  EXPECT_EQ(CheckerError(proto), "");
  auto q = OpenOnnx(out);
  const std::vector<float>& w2 = m.weights.at("W2");
  const Expected e = ByFormula(w2, {1, static_cast<int64_t>(w2.size())}, 0);
  EXPECT_EQ(Values<int8_t>(*q, "W2_quantized", DType::kI8), e.q);
  EXPECT_EQ(Values<float>(*q, "W2_scale", DType::kF32), e.scales);
  EXPECT_EQ(q->tensors()[*q->Find("W2_scale")].shape.rank(), 0u);
  EXPECT_EQ(AxisOf(*FindNode(proto, "W2")), -100);
  EXPECT_EQ(report->tensors[2].axis, -1);
  EXPECT_EQ(report->tensors[3].reason, "excluded by 'Wc'");
  EXPECT_TRUE(q->Find("Wc").has_value());
}

TEST(OnnxQuantize, RefusesOldOpsetsBlockSchemesAndExistingOutputs) {
  TempDir dir;
  const TestModel m = WriteTestModel(dir.path().string(), 11);
  auto source = OpenOnnx(m.path);
  ASSERT_TRUE(source);
  const std::string out = dir.File("q.onnx");
  auto r = QuantizeOnnx(AsOnnx(*source), out, Int8Options(), WriteOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            out +
                ": the model imports default-domain opset 11; scheme int8 needs opset >= 13 "
                "(per-axis DequantizeLinear); re-export the model with a newer opset");
  EXPECT_FALSE(fs::exists(out));
  QuantizeOptions o = Int8Options();
  o.scheme = QuantScheme::kF8E4M3;
  r = QuantizeOnnx(AsOnnx(*source), out, o, WriteOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("needs opset >= 19 (Cast to f8_e4m3)"), std::string::npos)
      << r.status().message();

  o.scheme = QuantScheme::kQ4_0;
  r = QuantizeOnnx(AsOnnx(*source), out, o, WriteOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(r.status().message(), out + ": ONNX has no ggml block types (scheme q4_0); write GGUF");
  EXPECT_FALSE(fs::exists(out));

  fs::create_directory(dir.File("m13"));
  const TestModel m13 = WriteTestModel(dir.File("m13"), 13);
  auto s13 = OpenOnnx(m13.path);
  testing::WriteBytes(out, {1, 2, 3});
  WriteOptions no_overwrite;
  no_overwrite.no_overwrite = true;
  r = QuantizeOnnx(AsOnnx(*s13), out, Int8Options(), no_overwrite);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(testing::ReadBytes(out), (std::vector<uint8_t>{1, 2, 3}));
  // A weight that cannot be quantized (infinite) fails the run, naming it, and leaves nothing.
  std::vector<float> w1 = m13.weights.at("W1");
  ::onnx::ModelProto bad = ReadProto(m13.path);
  w1[7] = INFINITY;
  bad.mutable_graph()->mutable_initializer(0)->set_raw_data(w1.data(), w1.size() * 4);
  std::ofstream(dir.File("bad.onnx"), std::ios::binary) << bad.SerializeAsString();
  auto sb = OpenOnnx(dir.File("bad.onnx"));
  r = QuantizeOnnx(AsOnnx(*sb), dir.File("bad_q.onnx"), Int8Options(), WriteOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("initializer 'W1'"), std::string::npos)
      << r.status().message();
  EXPECT_FALSE(fs::exists(dir.File("bad_q.onnx")));
}

TEST(OnnxQuantize, DequantizeGivesBackQTimesScale) {
  TempDir dir;
  const TestModel m = WriteTestModel(dir.path().string(), 13);
  auto source = OpenOnnx(m.path);
  ASSERT_TRUE(source);
  const std::string qpath = dir.File("q.onnx"), dpath = dir.File("d.onnx");
  ASSERT_TRUE(QuantizeOnnx(AsOnnx(*source), qpath, Int8Options(), WriteOptions{}).ok());
  auto q = OpenOnnx(qpath);
  Status s = DequantizeOnnx(AsOnnx(*q), dpath, DType::kF32, WriteOptions{});
  ASSERT_TRUE(s.ok()) << s.ToString();
  const ::onnx::ModelProto proto = ReadProto(dpath);
  EXPECT_EQ(CheckerError(proto), "");
  ASSERT_EQ(proto.graph().node_size(), 3);  // the DequantizeLinear nodes are gone
  auto d = OpenOnnx(dpath);
  std::vector<std::string> names;
  for (const auto& t : d->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"W1", "b1", "W2", "Wc", "half"}));
  const std::map<std::string, std::pair<std::vector<int64_t>, int>> want = {
      {"W1", {{32, 64}, 0}}, {"W2", {{32, 48}, 1}}, {"Wc", {{16, 4, 3, 3}, 0}}};
  for (const auto& [name, shape_axis] : want) {
    SCOPED_TRACE(name);
    const auto& [dims, axis] = shape_axis;
    const Expected e = ByFormula(m.weights.at(name), dims, axis);
    int64_t inner = 1;
    for (size_t i = axis + 1; i < dims.size(); ++i) inner *= dims[i];
    std::vector<float> expected(e.q.size());
    for (size_t i = 0; i < e.q.size(); ++i) {
      expected[i] = static_cast<float>(e.q[i]) * e.scales[(i / inner) % e.scales.size()];
    }
    EXPECT_EQ(Values<float>(*d, name, DType::kF32), expected);
  }
  // Only f32: the DequantizeLinear consumers expect f32.
  s = DequantizeOnnx(AsOnnx(*q), dir.File("h.onnx"), DType::kF16, WriteOptions{});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("dequantize to f16: an ONNX model's DequantizeLinear and Cast "
                             "outputs are f32"),
            std::string::npos)
      << s.message();
  EXPECT_FALSE(fs::exists(dir.File("h.onnx")));
  // The quantized model and the dequantized one compute the same in the reference evaluator.
  auto qe = eval::OnnxEvaluator::Open(qpath);
  auto de = eval::OnnxEvaluator::Open(dpath);
  ASSERT_TRUE(qe.ok()) << qe.status().ToString();
  ASSERT_TRUE(de.ok()) << de.status().ToString();
  std::vector<eval::NamedTensor> inputs;
  eval::Tensor x = eval::Tensor::Zeros(DType::kF32, {2, 64});
  const std::vector<float> xv = Weights(128, 9);
  std::memcpy(x.data<float>(), xv.data(), xv.size() * 4);
  inputs.emplace_back("x", std::move(x));
  eval::Tensor img = eval::Tensor::Zeros(DType::kF32, {1, 4, 8, 8});
  const std::vector<float> iv = Weights(256, 10);
  std::memcpy(img.data<float>(), iv.data(), iv.size() * 4);
  inputs.emplace_back("img", std::move(img));
  auto yq = (*qe)->Run(inputs);
  auto yd = (*de)->Run(inputs);
  ASSERT_TRUE(yq.ok()) << yq.status().ToString();
  ASSERT_TRUE(yd.ok()) << yd.status().ToString();
  for (size_t i = 0; i < yq->size(); ++i) EXPECT_EQ((*yq)[i].second.bytes, (*yd)[i].second.bytes);
}

TEST(OnnxQuantize, CastSchemesStoreTheCastAndACastNode) {
  TempDir dir;
  const TestModel m = WriteTestModel(dir.path().string(), 13);
  auto source = OpenOnnx(m.path);
  QuantizeOptions o = Int8Options();
  o.scheme = QuantScheme::kBF16;
  const std::string out = dir.File("b.onnx");
  auto report = QuantizeOnnx(AsOnnx(*source), out, o, WriteOptions{});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  const ::onnx::ModelProto proto = ReadProto(out);
  EXPECT_EQ(CheckerError(proto), "");
  const ::onnx::NodeProto* node = FindNode(proto, "W1");
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(node->op_type(), "Cast");
  EXPECT_EQ(node->input(0), "W1_bf16");
  auto q = OpenOnnx(out);
  const std::vector<uint16_t> stored = Values<uint16_t>(*q, "W1_bf16", DType::kBF16);
  const std::vector<float>& w1 = m.weights.at("W1");
  ASSERT_EQ(stored.size(), w1.size());
  double max_abs = 0;
  for (size_t i = 0; i < w1.size(); ++i) {
    EXPECT_EQ(stored[i], F32ToBF16(w1[i]));
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(BF16ToF32(stored[i])) - w1[i]));
  }
  EXPECT_EQ(report->tensors[0].error.max_abs, max_abs);
  EXPECT_EQ(report->tensors[0].bytes_after, w1.size() * 2);
  // Folded back: the bf16 values widened to f32.
  Status s = DequantizeOnnx(AsOnnx(*q), dir.File("d.onnx"), DType::kF32, WriteOptions{});
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto d = OpenOnnx(dir.File("d.onnx"));
  const std::vector<float> back = Values<float>(*d, "W1", DType::kF32);
  ASSERT_EQ(back.size(), w1.size());
  for (size_t i = 0; i < w1.size(); ++i) EXPECT_EQ(back[i], BF16ToF32(stored[i]));
}

TEST(OnnxQuantize, ExternalSourcesStayExternal) {
  TempDir dir;
  const TestModel m = WriteTestModel(dir.path().string(), 13);
  auto source = OpenOnnx(m.path);
  onnx::RewriteOptions ro;
  ro.placement = onnx::Placement::kExternal;
  ASSERT_TRUE(AsOnnx(*source).Rewrite(dir.File("ext.onnx"), ro).ok());
  auto ext = OpenOnnx(dir.File("ext.onnx"));
  fs::create_directory(dir.File("out"));
  const std::string out = dir.File("out/q.onnx");
  ASSERT_TRUE(QuantizeOnnx(AsOnnx(*ext), out, Int8Options(), WriteOptions{}).ok());
  EXPECT_TRUE(fs::exists(out + ".data"));
  try {
    ::onnx::checker::check_model(out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
  auto q = OpenOnnx(out);
  const Expected e = ByFormula(m.weights.at("W1"), {32, 64}, 0);
  EXPECT_EQ(Values<int8_t>(*q, "W1_quantized", DType::kI8), e.q);
  EXPECT_EQ(q->files().files.size(), 2u);
}

// Old exports list initializers among the graph inputs too: the quantized weight is produced by
// a node, so it leaves the inputs. Names already taken get a number.
TEST(OnnxQuantize, InitializersListedAsInputsAndTakenNames) {
  TempDir dir;
  const TestModel m = WriteTestModel(dir.path().string(), 13);
  ::onnx::ModelProto proto = ReadProto(m.path);
  AddInput(proto.mutable_graph()->add_input(), "W1", {32, 64});
  AddF32(proto.mutable_graph(), "W2_scale", {2}, {1.0f, 2.0f});  // unused, but its name is taken
  const std::string path = dir.File("inputs.onnx");
  std::ofstream(path, std::ios::binary) << proto.SerializeAsString();
  auto source = OpenOnnx(path);
  ASSERT_TRUE(source);
  const std::string out = dir.File("q.onnx");
  auto report = QuantizeOnnx(AsOnnx(*source), out, Int8Options(), WriteOptions{});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  const ::onnx::ModelProto q = ReadProto(out);
  EXPECT_EQ(CheckerError(q), "");
  std::vector<std::string> inputs;
  for (const auto& v : q.graph().input()) inputs.push_back(v.name());
  EXPECT_EQ(inputs, (std::vector<std::string>{"x", "img"}));
  const ::onnx::NodeProto* node = FindNode(q, "W2");
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(node->input(1), "W2_scale_1");
  auto qs = OpenOnnx(out);
  EXPECT_EQ(Values<float>(*qs, "W2_scale", DType::kF32), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(Values<float>(*qs, "W2_scale_1", DType::kF32),
            ByFormula(m.weights.at("W2"), {32, 48}, 1).scales);
}

}  // namespace
}  // namespace mp
