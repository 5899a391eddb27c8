#include "modelport/validate/onnx_eval.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/validate/eval_ops.h"

namespace mp::eval {
namespace {

using ::onnx::AttributeProto;
using ::onnx::ModelProto;
using ::onnx::NodeProto;

AttributeProto AttrInt(const std::string& name, int64_t v) {
  AttributeProto a;
  a.set_name(name);
  a.set_type(AttributeProto::INT);
  a.set_i(v);
  return a;
}
AttributeProto AttrInts(const std::string& name, const std::vector<int64_t>& v) {
  AttributeProto a;
  a.set_name(name);
  a.set_type(AttributeProto::INTS);
  for (int64_t x : v) a.add_ints(x);
  return a;
}
AttributeProto AttrFloat(const std::string& name, float v) {
  AttributeProto a;
  a.set_name(name);
  a.set_type(AttributeProto::FLOAT);
  a.set_f(v);
  return a;
}
AttributeProto AttrString(const std::string& name, const std::string& v) {
  AttributeProto a;
  a.set_name(name);
  a.set_type(AttributeProto::STRING);
  a.set_s(v);
  return a;
}
AttributeProto AttrTensor(const std::string& name, const Tensor& t) {
  AttributeProto a;
  a.set_name(name);
  a.set_type(AttributeProto::TENSOR);
  ToTensorProto(t, name, a.mutable_t());
  return a;
}

NodeProto Node(const std::string& op, const std::vector<std::string>& inputs,
               const std::vector<std::string>& outputs,
               const std::vector<AttributeProto>& attrs = {}, const std::string& name = "") {
  NodeProto n;
  n.set_op_type(op);
  n.set_name(name.empty() ? op + "_node" : name);
  for (const auto& i : inputs) n.add_input(i);
  for (const auto& o : outputs) n.add_output(o);
  for (const auto& a : attrs) *n.add_attribute() = a;
  return n;
}

// A model of `nodes` with graph inputs `inputs` (name, dtype) and outputs `outputs`.
ModelProto MakeModel(int64_t opset, const std::vector<NodeProto>& nodes,
                     const std::vector<std::pair<std::string, DType>>& inputs,
                     const std::vector<std::string>& outputs) {
  ModelProto m;
  m.set_ir_version(8);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  auto* g = m.mutable_graph();
  g->set_name("test");
  for (const auto& n : nodes) *g->add_node() = n;
  for (const auto& [name, dtype] : inputs) {
    auto* vi = g->add_input();
    vi->set_name(name);
    vi->mutable_type()->mutable_tensor_type()->set_elem_type(OnnxFromDType(dtype));
  }
  for (const auto& name : outputs) g->add_output()->set_name(name);
  return m;
}

// Runs one node: inputs named in0, in1, ... (an empty Tensor shape with no bytes and dtype kU64
// marks an omitted optional input), outputs out0, out1, ...
Result<std::vector<Tensor>> RunOp(const std::string& op, int64_t opset,
                                  const std::vector<std::optional<Tensor>>& inputs,
                                  const std::vector<AttributeProto>& attrs = {},
                                  size_t output_count = 1) {
  std::vector<std::string> in_names, out_names;
  std::vector<std::pair<std::string, DType>> graph_inputs;
  std::vector<NamedTensor> given;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i]) {
      in_names.push_back("");
      continue;
    }
    in_names.push_back("in" + std::to_string(i));
    graph_inputs.emplace_back(in_names.back(), inputs[i]->dtype);
    given.emplace_back(in_names.back(), *inputs[i]);
  }
  for (size_t i = 0; i < output_count; ++i) out_names.push_back("out" + std::to_string(i));
  ModelProto m = MakeModel(opset, {Node(op, in_names, out_names, attrs)}, graph_inputs, out_names);
  MP_ASSIGN_OR_RETURN(auto evaluator, OnnxEvaluator::FromProto(m, nullptr));
  MP_ASSIGN_OR_RETURN(std::vector<NamedTensor> outs, evaluator->Run(given));
  std::vector<Tensor> result;
  for (auto& [name, t] : outs) result.push_back(std::move(t));
  return result;
}

// One output, which must succeed.
Tensor Run1(const std::string& op, int64_t opset, const std::vector<std::optional<Tensor>>& inputs,
            const std::vector<AttributeProto>& attrs = {}) {
  Result<std::vector<Tensor>> r = RunOp(op, opset, inputs, attrs);
  EXPECT_TRUE(r.ok()) << op << ": " << r.status().ToString();
  if (!r.ok() || r->empty()) return Tensor();
  return (*r)[0];
}

template <typename T>
Tensor Make(DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape));
  EXPECT_EQ(t.bytes.size(), values.size() * sizeof(T));
  CopyBytes(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}
Tensor F32(std::vector<int64_t> shape, const std::vector<float>& v) {
  return Make(DType::kF32, std::move(shape), v);
}
Tensor I64(std::vector<int64_t> shape, const std::vector<int64_t>& v) {
  return Make(DType::kI64, std::move(shape), v);
}
Tensor I32(std::vector<int64_t> shape, const std::vector<int32_t>& v) {
  return Make(DType::kI32, std::move(shape), v);
}
Tensor Bool(std::vector<int64_t> shape, const std::vector<uint8_t>& v) {
  return Make(DType::kBool, std::move(shape), v);
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.NumElements());
}

// ---- The evaluator: preparation and Run errors ----------------------------------------------

TEST(OnnxEvaluator, UnsupportedOpsAreAllNamedSortedWithCounts) {
  ModelProto m =
      MakeModel(17,
                {Node("Foo", {"x"}, {"a"}, {}, "f1"), Node("Add", {"a", "x"}, {"b"}),
                 Node("Bar", {"b"}, {"c"}, {}, "b1"), Node("Foo", {"c"}, {"y"}, {}, "f2")},
                {{"x", DType::kF32}}, {"y"});
  auto r = OnnxEvaluator::FromProto(m, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(r.status().message(), "the reference evaluator has no kernel for Bar (1), Foo (2)");
}

TEST(OnnxEvaluator, OtherDomainsAndSubgraphsAreUnsupported) {
  NodeProto custom = Node("Gelu", {"x"}, {"y"});
  custom.set_domain("com.microsoft");
  auto r = OnnxEvaluator::FromProto(MakeModel(17, {custom}, {{"x", DType::kF32}}, {"y"}), nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("com.microsoft::Gelu (1)"), std::string::npos)
      << r.status().message();

  NodeProto with_graph = Node("If", {"c"}, {"y"});
  AttributeProto g;
  g.set_name("then_branch");
  g.set_type(AttributeProto::GRAPH);
  *with_graph.add_attribute() = g;
  r = OnnxEvaluator::FromProto(MakeModel(17, {with_graph}, {{"c", DType::kBool}}, {"y"}), nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("If (1)"), std::string::npos) << r.status().message();
}

TEST(OnnxEvaluator, CycleIsInvalid) {
  ModelProto m =
      MakeModel(17,
                {Node("Add", {"x", "c"}, {"a"}, {}, "n1"), Node("Relu", {"a"}, {"c"}, {}, "n2"),
                 Node("Identity", {"a"}, {"y"}, {}, "n3")},
                {{"x", DType::kF32}}, {"y"});
  auto r = OnnxEvaluator::FromProto(m, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "the graph has a cycle through nodes \"n1\", \"n2\", \"n3\"");
}

TEST(OnnxEvaluator, ValueNothingProducesIsInvalid) {
  ModelProto m =
      MakeModel(17, {Node("Add", {"x", "ghost"}, {"y"}, {}, "n1")}, {{"x", DType::kF32}}, {"y"});
  auto r = OnnxEvaluator::FromProto(m, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "value \"ghost\" read by node \"n1\" (Add) is not produced by any node, graph input "
            "or initializer");

  m = MakeModel(17, {Node("Relu", {"x"}, {"a"})}, {{"x", DType::kF32}}, {"nowhere"});
  r = OnnxEvaluator::FromProto(m, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("graph output \"nowhere\""), std::string::npos);
}

TEST(OnnxEvaluator, RunsNodesListedOutOfOrderAndUsesInitializers) {
  // y = Relu(x * w) with the Relu listed first; w is an inline initializer.
  ModelProto m = MakeModel(17, {Node("Relu", {"p"}, {"y"}), Node("Mul", {"x", "w"}, {"p"})},
                           {{"x", DType::kF32}}, {"y"});
  ToTensorProto(F32({2}, {2.0f, -3.0f}), "w", m.mutable_graph()->add_initializer());
  auto e = OnnxEvaluator::FromProto(m, nullptr);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)->input_names(), std::vector<std::string>{"x"});
  EXPECT_EQ((*e)->output_names(), std::vector<std::string>{"y"});
  EXPECT_EQ((*e)->opset(), 17);
  auto out = (*e)->Run({{"x", F32({2}, {1.5f, 1.0f})}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(Values<float>((*out)[0].second), (std::vector<float>{3.0f, 0.0f}));

  // An initializer may be overridden by name.
  out = (*e)->Run({{"x", F32({2}, {1.0f, 1.0f})}, {"w", F32({2}, {-1.0f, 4.0f})}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(Values<float>((*out)[0].second), (std::vector<float>{0.0f, 4.0f}));
}

TEST(OnnxEvaluator, InitializersComeFromTheModelSourceFirst) {
  ModelProto m = MakeModel(17, {Node("Add", {"x", "w"}, {"y"})}, {{"x", DType::kF32}}, {"y"});
  ToTensorProto(F32({1}, {100.0f}), "w", m.mutable_graph()->add_initializer());
  mp::Model source;
  Result<TensorView> w = ToView("w", F32({1}, {7.0f}));
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(source.Add(*w).ok());
  auto e = OnnxEvaluator::FromProto(m, &source);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  auto out = (*e)->Run({{"x", F32({1}, {1.0f})}});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(Values<float>((*out)[0].second), std::vector<float>{8.0f});
}

TEST(OnnxEvaluator, RunChecksInputs) {
  ModelProto m = MakeModel(17, {Node("Add", {"x", "z"}, {"y"})},
                           {{"x", DType::kF32}, {"z", DType::kF32}}, {"y"});
  auto e = OnnxEvaluator::FromProto(m, nullptr);
  ASSERT_TRUE(e.ok());
  auto r = (*e)->Run({{"x", F32({1}, {1})}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "input \"z\" is not given");
  r = (*e)->Run({{"x", F32({1}, {1})}, {"z", F32({1}, {1})}, {"extra", F32({1}, {1})}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "input \"extra\" is not a graph input");
  Tensor torn = F32({2}, {1, 2});
  torn.bytes.resize(4);
  r = (*e)->Run({{"x", F32({1}, {1})}, {"z", torn}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "input \"z\" f32[2] holds 4 bytes, its shape needs 8");
  r = (*e)->Run({{"x", F32({1}, {1})}, {"z", I64({1}, {1})}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "input \"z\" is i64[1], the graph declares f32");
}

TEST(OnnxEvaluator, KernelErrorsNameTheNode) {
  ModelProto m = MakeModel(17, {Node("Add", {"x", "z"}, {"y"}, {}, "add1")},
                           {{"x", DType::kF32}, {"z", DType::kF32}}, {"y"});
  auto e = OnnxEvaluator::FromProto(m, nullptr);
  ASSERT_TRUE(e.ok());
  auto r = (*e)->Run({{"x", F32({2}, {1, 2})}, {"z", F32({3}, {1, 2, 3})}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "node \"add1\" (Add): shapes [2] and [3] do not broadcast");
}

TEST(OnnxEvaluator, SupportedOpsCoverTheIssueList) {
  std::vector<std::string> ops = SupportedOps();
  EXPECT_TRUE(std::is_sorted(ops.begin(), ops.end()));
  for (const char* op : {"Add",
                         "Sub",
                         "Mul",
                         "Div",
                         "Pow",
                         "Sqrt",
                         "Exp",
                         "Log",
                         "Neg",
                         "Abs",
                         "Erf",
                         "Tanh",
                         "Sigmoid",
                         "Relu",
                         "LeakyRelu",
                         "Gelu",
                         "Clip",
                         "Where",
                         "Equal",
                         "Less",
                         "Greater",
                         "Cast",
                         "Identity",
                         "Dropout",
                         "Reshape",
                         "Transpose",
                         "Flatten",
                         "Squeeze",
                         "Unsqueeze",
                         "Concat",
                         "Split",
                         "Slice",
                         "Gather",
                         "Expand",
                         "Shape",
                         "Constant",
                         "ConstantOfShape",
                         "Range"}) {
    EXPECT_TRUE(std::binary_search(ops.begin(), ops.end(), op)) << op;
  }
}

// ---- Elementwise kernels --------------------------------------------------------------------

TEST(ElementwiseKernels, AddBroadcastsNumpyStyle) {
  Tensor y = Run1("Add", 14, {F32({2, 1}, {10, 20}), F32({3}, {1, 2, 3})});
  EXPECT_EQ(y.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(Values<float>(y), (std::vector<float>{11, 12, 13, 21, 22, 23}));
  // uint8 wraps around.
  Tensor u = Run1("Add", 14,
                  {Make<uint8_t>(DType::kU8, {2}, {250, 1}), Make<uint8_t>(DType::kU8, {}, {10})});
  EXPECT_EQ(Values<uint8_t>(u), (std::vector<uint8_t>{4, 11}));
  // Signed integers wrap too (two's complement), as numpy does.
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  const int64_t kMin = std::numeric_limits<int64_t>::min();
  EXPECT_EQ(Values<int64_t>(Run1("Add", 14, {I64({1}, {kMax}), I64({1}, {1})})),
            std::vector<int64_t>{kMin});
  EXPECT_EQ(Values<int64_t>(Run1("Div", 14, {I64({1}, {kMin}), I64({1}, {-1})})),
            std::vector<int64_t>{kMin});
  EXPECT_EQ(Values<int64_t>(Run1("Neg", 13, {I64({1}, {kMin})})), std::vector<int64_t>{kMin});
  auto mixed = RunOp("Sub", 14, {F32({1}, {1}), I64({1}, {1})});
  ASSERT_FALSE(mixed.ok());
  EXPECT_EQ(mixed.status().code(), StatusCode::kInvalidArgument);
}

TEST(ElementwiseKernels, IntegerDivTruncatesTowardZero) {
  Tensor y = Run1("Div", 14, {I64({4}, {7, -7, 7, -7}), I64({4}, {2, 2, -2, -2})});
  EXPECT_EQ(Values<int64_t>(y), (std::vector<int64_t>{3, -3, -3, 3}));
  auto zero = RunOp("Div", 14, {I32({1}, {1}), I32({1}, {0})});
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.status().message(), "node \"Div_node\" (Div): integer division by zero");
  Tensor f = Run1("Div", 14, {F32({2}, {1, -1}), F32({2}, {4, 0})});
  EXPECT_EQ(Values<float>(f)[0], 0.25f);
  EXPECT_TRUE(std::isinf(Values<float>(f)[1]));
}

TEST(ElementwiseKernels, PowKeepsTheBaseType) {
  Tensor y = Run1("Pow", 15, {I64({3}, {2, 3, -2}), F32({3}, {3, 2, 3})});
  EXPECT_EQ(y.dtype, DType::kI64);
  EXPECT_EQ(Values<int64_t>(y), (std::vector<int64_t>{8, 9, -8}));
  Tensor f = Run1("Pow", 15, {F32({2}, {4, 2}), I64({}, {-1})});
  EXPECT_EQ(Values<float>(f), (std::vector<float>{0.25f, 0.5f}));
}

TEST(ElementwiseKernels, UnaryMath) {
  Tensor x = F32({3}, {-1.0f, 0.0f, 2.0f});
  EXPECT_EQ(Values<float>(Run1("Neg", 13, {x})), (std::vector<float>{1, -0.0f, -2}));
  EXPECT_EQ(Values<float>(Run1("Abs", 13, {x})), (std::vector<float>{1, 0, 2}));
  EXPECT_EQ(Values<float>(Run1("Relu", 14, {x})), (std::vector<float>{0, 0, 2}));
  EXPECT_EQ(Values<int32_t>(Run1("Relu", 14, {I32({2}, {-5, 5})})), (std::vector<int32_t>{0, 5}));
  EXPECT_TRUE(std::isnan(Values<float>(Run1("Relu", 14, {F32({1}, {NAN})}))[0]));
  EXPECT_EQ(Values<float>(Run1("LeakyRelu", 6, {x})), (std::vector<float>{-0.01f, 0, 2}));
  EXPECT_EQ(Values<float>(Run1("LeakyRelu", 6, {x}, {AttrFloat("alpha", 0.5f)})),
            (std::vector<float>{-0.5f, 0, 2}));
  // Reference values: erf(2) = 0.9953222650189527, sigmoid(-1) = 0.2689414213699951,
  // tanh(2) = 0.9640275800758169, exp(-1) = 0.36787944117144233.
  EXPECT_FLOAT_EQ(Values<float>(Run1("Erf", 13, {x}))[2], 0.9953222650189527f);
  EXPECT_FLOAT_EQ(Values<float>(Run1("Sigmoid", 13, {x}))[0], 0.2689414213699951f);
  EXPECT_FLOAT_EQ(Values<float>(Run1("Tanh", 13, {x}))[2], 0.9640275800758169f);
  EXPECT_FLOAT_EQ(Values<float>(Run1("Exp", 13, {x}))[0], 0.36787944117144233f);
  Tensor s = Run1("Sqrt", 13, {F32({2}, {4, -1})});
  EXPECT_EQ(Values<float>(s)[0], 2.0f);
  EXPECT_TRUE(std::isnan(Values<float>(s)[1]));
  Tensor l = Run1("Log", 13, {F32({2}, {1, 0})});
  EXPECT_EQ(Values<float>(l)[0], 0.0f);
  EXPECT_TRUE(std::isinf(Values<float>(l)[1]));
  auto int_exp = RunOp("Exp", 13, {I64({1}, {1})});
  ASSERT_FALSE(int_exp.ok());
  EXPECT_EQ(int_exp.status().code(), StatusCode::kUnsupported);
}

TEST(ElementwiseKernels, GeluExactAndTanh) {
  // torch.nn.functional.gelu(torch.tensor([-1., 0., 1.], dtype=torch.float64)) and with
  // approximate='tanh'.
  Tensor x = Make<double>(DType::kF64, {3}, {-1.0, 0.0, 1.0});
  std::vector<double> exact = Values<double>(Run1("Gelu", 20, {x}));
  EXPECT_NEAR(exact[0], -0.15865525393145707, 1e-15);
  EXPECT_EQ(exact[1], 0.0);
  EXPECT_NEAR(exact[2], 0.8413447460685429, 1e-15);
  std::vector<double> approx =
      Values<double>(Run1("Gelu", 20, {x}, {AttrString("approximate", "tanh")}));
  EXPECT_NEAR(approx[0], -0.15880800939172324, 1e-15);
  EXPECT_NEAR(approx[2], 0.8411919906082768, 1e-15);
  auto bad = RunOp("Gelu", 20, {x}, {AttrString("approximate", "fast")});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kUnsupported);
}

TEST(ElementwiseKernels, ClipAttributesBeforeOpset11InputsAfter) {
  Tensor x = F32({4}, {-3, -1, 1, 3});
  EXPECT_EQ(Values<float>(Run1("Clip", 6, {x}, {AttrFloat("min", -2), AttrFloat("max", 2)})),
            (std::vector<float>{-2, -1, 1, 2}));
  EXPECT_EQ(Values<float>(Run1("Clip", 13, {x, std::nullopt, F32({}, {0})})),
            (std::vector<float>{-3, -1, 0, 0}));
  // min > max: every value becomes max (numpy.clip).
  EXPECT_EQ(Values<float>(Run1("Clip", 13, {x, F32({}, {2}), F32({}, {1})})),
            (std::vector<float>{1, 1, 1, 1}));
  Tensor i8 = Make<int8_t>(DType::kI8, {3}, {-128, 0, 127});
  EXPECT_EQ(Values<int8_t>(Run1("Clip", 13, {i8, Make<int8_t>(DType::kI8, {}, {-5})})),
            (std::vector<int8_t>{-5, 0, 127}));
}

TEST(ElementwiseKernels, ComparisonsAndWhereBroadcast) {
  Tensor a = I64({2, 2}, {1, 2, 3, 4});
  Tensor b = I64({2}, {2, 3});
  EXPECT_EQ(Values<uint8_t>(Run1("Equal", 13, {a, b})), (std::vector<uint8_t>{0, 0, 0, 0}));
  EXPECT_EQ(Values<uint8_t>(Run1("Less", 13, {a, b})), (std::vector<uint8_t>{1, 1, 0, 0}));
  Tensor g = Run1("Greater", 13, {a, b});
  EXPECT_EQ(g.dtype, DType::kBool);
  EXPECT_EQ(Values<uint8_t>(g), (std::vector<uint8_t>{0, 0, 1, 1}));
  Tensor w = Run1("Where", 16, {Bool({2, 1}, {1, 0}), F32({2}, {1, 2}), F32({}, {-1})});
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(Values<float>(w), (std::vector<float>{1, 2, -1, -1}));
}

TEST(ElementwiseKernels, Cast) {
  const int64_t kInt32 = 6, kBool = 9, kFloat16 = 10, kFloat = 1, kString = 8;
  Tensor i = Run1("Cast", 13, {F32({3}, {-1.7f, 2.9f, 0.5f})}, {AttrInt("to", kInt32)});
  EXPECT_EQ(i.dtype, DType::kI32);
  EXPECT_EQ(Values<int32_t>(i), (std::vector<int32_t>{-1, 2, 0}));
  Tensor b = Run1("Cast", 13, {F32({3}, {0.0f, -0.5f, 3.0f})}, {AttrInt("to", kBool)});
  EXPECT_EQ(Values<uint8_t>(b), (std::vector<uint8_t>{0, 1, 1}));
  // 1/3 in f16 is 0x3555 (round to nearest even).
  Tensor h =
      Run1("Cast", 13, {Make<double>(DType::kF64, {1}, {1.0 / 3.0})}, {AttrInt("to", kFloat16)});
  EXPECT_EQ(Values<uint16_t>(h), std::vector<uint16_t>{0x3555});
  Tensor back = Run1("Cast", 13, {h}, {AttrInt("to", kFloat)});
  EXPECT_EQ(Values<float>(back), std::vector<float>{F16ToF32(0x3555)});
  // Large int64 values keep every bit through an integer cast.
  Tensor big = Run1("Cast", 13, {I64({1}, {(int64_t{1} << 40) + 1})}, {AttrInt("to", 7)});
  EXPECT_EQ(Values<int64_t>(big), std::vector<int64_t>{(int64_t{1} << 40) + 1});
  auto s = RunOp("Cast", 13, {F32({1}, {1})}, {AttrInt("to", kString)});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnsupported);
  auto f8 = RunOp("Cast", 19, {F32({1}, {1})}, {AttrInt("to", 17)});
  ASSERT_FALSE(f8.ok());
  EXPECT_EQ(f8.status().code(), StatusCode::kUnsupported);
  // bf16 bits 0x3FC0 are 1.5.
  Tensor from_bf16 =
      Run1("Cast", 13, {Make<uint16_t>(DType::kBF16, {1}, {0x3FC0})}, {AttrInt("to", kFloat)});
  EXPECT_EQ(Values<float>(from_bf16), std::vector<float>{1.5f});
}

TEST(ElementwiseKernels, IdentityAndDropout) {
  Tensor x = F32({2}, {1, 2});
  EXPECT_EQ(Values<float>(Run1("Identity", 16, {x})), (std::vector<float>{1, 2}));
  auto d = RunOp("Dropout", 13, {x}, {}, 2);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(Values<float>((*d)[0]), (std::vector<float>{1, 2}));
  EXPECT_EQ((*d)[1].dtype, DType::kBool);
  EXPECT_EQ(Values<uint8_t>((*d)[1]), (std::vector<uint8_t>{1, 1}));
  auto training = RunOp("Dropout", 13, {x, F32({}, {0.5f}), Bool({}, {1})});
  ASSERT_FALSE(training.ok());
  EXPECT_EQ(training.status().code(), StatusCode::kUnsupported);
  // Training with ratio 0 is the identity.
  auto zero = RunOp("Dropout", 13, {x, F32({}, {0.0f}), Bool({}, {1})});
  ASSERT_TRUE(zero.ok()) << zero.status().ToString();
}

// ---- Shape kernels --------------------------------------------------------------------------

TEST(ShapeKernels, Reshape) {
  Tensor x = F32({2, 3, 4}, std::vector<float>(24, 1.0f));
  EXPECT_EQ(Run1("Reshape", 14, {x, I64({2}, {0, -1})}).shape, (std::vector<int64_t>{2, 12}));
  EXPECT_EQ(Run1("Reshape", 14, {x, I64({3}, {-1, 2, 2})}).shape, (std::vector<int64_t>{6, 2, 2}));
  // allowzero: a 0 is a real zero-sized dimension.
  Tensor empty = F32({0, 3}, {});
  EXPECT_EQ(Run1("Reshape", 14, {empty, I64({2}, {3, 0})}, {AttrInt("allowzero", 1)}).shape,
            (std::vector<int64_t>{3, 0}));
  auto bad = RunOp("Reshape", 14, {x, I64({2}, {5, -1})});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "node \"Reshape_node\" (Reshape): cannot infer -1 in shape [5,-1] for f32[2,3,4]");
}

TEST(ShapeKernels, TransposeAndFlatten) {
  Tensor x = I64({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor t = Run1("Transpose", 13, {x});
  EXPECT_EQ(t.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(Values<int64_t>(t), (std::vector<int64_t>{1, 4, 2, 5, 3, 6}));
  Tensor x3 = I64({1, 2, 2}, {1, 2, 3, 4});
  EXPECT_EQ(Values<int64_t>(Run1("Transpose", 13, {x3}, {AttrInts("perm", {0, 2, 1})})),
            (std::vector<int64_t>{1, 3, 2, 4}));
  EXPECT_EQ(Run1("Flatten", 13, {x3}, {AttrInt("axis", 0)}).shape, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(Run1("Flatten", 13, {x3}, {AttrInt("axis", -1)}).shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(Run1("Flatten", 13, {x3}, {AttrInt("axis", 3)}).shape, (std::vector<int64_t>{4, 1}));
}

TEST(ShapeKernels, SqueezeAndUnsqueezeByOpset) {
  Tensor x = F32({1, 3, 1}, {1, 2, 3});
  EXPECT_EQ(Run1("Squeeze", 11, {x}, {AttrInts("axes", {-1})}).shape, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(Run1("Squeeze", 13, {x, I64({1}, {0})}).shape, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(Run1("Squeeze", 13, {x}).shape, (std::vector<int64_t>{3}));
  auto bad = RunOp("Squeeze", 13, {x, I64({1}, {1})});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Run1("Unsqueeze", 11, {x}, {AttrInts("axes", {0, -1})}).shape,
            (std::vector<int64_t>{1, 1, 3, 1, 1}));
  EXPECT_EQ(Run1("Unsqueeze", 13, {F32({3}, {1, 2, 3}), I64({2}, {2, 0})}).shape,
            (std::vector<int64_t>{1, 3, 1}));
}

TEST(ShapeKernels, ConcatAndSplit) {
  Tensor c =
      Run1("Concat", 13, {I64({2, 1}, {1, 2}), I64({2, 2}, {3, 4, 5, 6})}, {AttrInt("axis", -1)});
  EXPECT_EQ(c.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(Values<int64_t>(c), (std::vector<int64_t>{1, 3, 4, 2, 5, 6}));

  Tensor x = I64({5}, {1, 2, 3, 4, 5});
  auto uneven = RunOp("Split", 18, {x}, {AttrInt("num_outputs", 3)}, 3);
  ASSERT_TRUE(uneven.ok()) << uneven.status().ToString();
  EXPECT_EQ(Values<int64_t>((*uneven)[0]), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Values<int64_t>((*uneven)[1]), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(Values<int64_t>((*uneven)[2]), (std::vector<int64_t>{5}));
  auto by_attr = RunOp("Split", 11, {x}, {AttrInts("split", {4, 1})}, 2);
  ASSERT_TRUE(by_attr.ok()) << by_attr.status().ToString();
  EXPECT_EQ(Values<int64_t>((*by_attr)[1]), (std::vector<int64_t>{5}));
  auto by_input = RunOp("Split", 13, {x, I64({2}, {0, 5})}, {}, 2);
  ASSERT_TRUE(by_input.ok()) << by_input.status().ToString();
  EXPECT_EQ((*by_input)[0].shape, (std::vector<int64_t>{0}));
  auto unequal = RunOp("Split", 13, {x}, {}, 2);
  ASSERT_FALSE(unequal.ok());
  EXPECT_EQ(unequal.status().code(), StatusCode::kInvalidArgument);
}

TEST(ShapeKernels, SliceNegativeStepsAndClamping) {
  Tensor x = I64({6}, {0, 1, 2, 3, 4, 5});
  // Every other element backwards from the end; an end past the start clamps to -1.
  EXPECT_EQ(Values<int64_t>(Run1(
                "Slice", 13, {x, I64({1}, {-1}), I64({1}, {-100}), I64({1}, {0}), I64({1}, {-2})})),
            (std::vector<int64_t>{5, 3, 1}));
  EXPECT_EQ(Values<int64_t>(Run1("Slice", 13, {x, I64({1}, {2}), I64({1}, {INT64_MAX})})),
            (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(Run1("Slice", 13, {x, I64({1}, {10}), I64({1}, {20})}).shape,
            (std::vector<int64_t>{0}));
  Tensor m = I64({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(Values<int64_t>(
                Run1("Slice", 9, {m},
                     {AttrInts("starts", {1}), AttrInts("ends", {3}), AttrInts("axes", {1})})),
            (std::vector<int64_t>{2, 3, 5, 6}));
}

TEST(ShapeKernels, GatherExpandAndShape) {
  Tensor x = F32({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor g = Run1("Gather", 13, {x, I64({2, 1}, {-1, 0})});
  EXPECT_EQ(g.shape, (std::vector<int64_t>{2, 1, 2}));
  EXPECT_EQ(Values<float>(g), (std::vector<float>{5, 6, 1, 2}));
  Tensor g1 = Run1("Gather", 13, {x, I32({}, {1})}, {AttrInt("axis", 1)});
  EXPECT_EQ(g1.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(Values<float>(g1), (std::vector<float>{2, 4, 6}));
  auto out_of_range = RunOp("Gather", 13, {x, I64({1}, {3})});
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_EQ(out_of_range.status().code(), StatusCode::kInvalidArgument);

  Tensor e = Run1("Expand", 13, {F32({2, 1}, {1, 2}), I64({3}, {2, 1, 3})});
  EXPECT_EQ(e.shape, (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(Values<float>(e), (std::vector<float>{1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2}));

  Tensor big = F32({2, 3, 4, 5}, std::vector<float>(120));
  EXPECT_EQ(Values<int64_t>(Run1("Shape", 15, {big})), (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(Values<int64_t>(Run1("Shape", 15, {big}, {AttrInt("start", -3), AttrInt("end", -1)})),
            (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(Values<int64_t>(Run1("Shape", 15, {big}, {AttrInt("start", -10)})),
            (std::vector<int64_t>{2, 3, 4, 5}));
}

TEST(ShapeKernels, ConstantsAndRange) {
  Tensor ints = Run1("Constant", 13, {}, {AttrInts("value_ints", {4, 5})});
  EXPECT_EQ(ints.dtype, DType::kI64);
  EXPECT_EQ(Values<int64_t>(ints), (std::vector<int64_t>{4, 5}));
  Tensor scalar = Run1("Constant", 13, {}, {AttrFloat("value_float", 2.5f)});
  EXPECT_TRUE(scalar.shape.empty());
  EXPECT_EQ(Values<float>(scalar), std::vector<float>{2.5f});
  Tensor t = Run1("Constant", 13, {}, {AttrTensor("value", I32({2}, {7, 8}))});
  EXPECT_EQ(Values<int32_t>(t), (std::vector<int32_t>{7, 8}));

  Tensor zeros = Run1("ConstantOfShape", 9, {I64({2}, {2, 1})});
  EXPECT_EQ(zeros.dtype, DType::kF32);
  EXPECT_EQ(Values<float>(zeros), (std::vector<float>{0, 0}));
  Tensor sevens = Run1("ConstantOfShape", 9, {I64({1}, {3})}, {AttrTensor("value", I64({1}, {7}))});
  EXPECT_EQ(Values<int64_t>(sevens), (std::vector<int64_t>{7, 7, 7}));

  Tensor r = Run1("Range", 11, {I32({}, {10}), I32({}, {4}), I32({}, {-3})});
  EXPECT_EQ(Values<int32_t>(r), (std::vector<int32_t>{10, 7}));
  Tensor rf = Run1("Range", 11, {F32({}, {0}), F32({}, {1}), F32({}, {0.25f})});
  EXPECT_EQ(Values<float>(rf), (std::vector<float>{0, 0.25f, 0.5f, 0.75f}));
  Tensor none = Run1("Range", 11, {I64({}, {5}), I64({}, {1}), I64({}, {1})});
  EXPECT_EQ(none.shape, (std::vector<int64_t>{0}));
}

// ---- Tensor helpers -------------------------------------------------------------------------

TEST(EvalTensor, TensorProtoRoundTripAndTypedFields) {
  ::onnx::TensorProto p;
  ToTensorProto(I64({2}, {-1, 5}), "t", &p);
  Result<Tensor> back = FromTensorProto(p);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(Values<int64_t>(*back), (std::vector<int64_t>{-1, 5}));

  ::onnx::TensorProto typed;
  typed.set_data_type(::onnx::TensorProto::UINT8);
  typed.add_dims(2);
  typed.add_int32_data(200);
  typed.add_int32_data(7);
  Result<Tensor> u8 = FromTensorProto(typed);
  ASSERT_TRUE(u8.ok()) << u8.status().ToString();
  EXPECT_EQ(Values<uint8_t>(*u8), (std::vector<uint8_t>{200, 7}));

  typed.add_dims(2);  // now [2,2]: 4 values needed, 2 given
  Result<Tensor> short_data = FromTensorProto(typed);
  ASSERT_FALSE(short_data.ok());
  EXPECT_EQ(short_data.status().code(), StatusCode::kCorrupt);

  ::onnx::TensorProto str;
  str.set_name("s");
  str.set_data_type(::onnx::TensorProto::STRING);
  Result<Tensor> s = FromTensorProto(str);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnsupported);
}

TEST(EvalTensor, BroadcastHelpers) {
  auto shape = BroadcastShapes({4, 1, 3}, {2, 1});
  ASSERT_TRUE(shape.ok());
  EXPECT_EQ(*shape, (std::vector<int64_t>{4, 2, 3}));
  EXPECT_EQ(BroadcastStrides({2, 1}, {4, 2, 3}), (std::vector<int64_t>{0, 1, 0}));
  EXPECT_EQ(RowMajorStrides({4, 2, 3}), (std::vector<int64_t>{6, 3, 1}));
  EXPECT_FALSE(CheckedNumElements({1 << 21, 1 << 20}).ok());
  EXPECT_FALSE(CheckedNumElements({-1}).ok());
  auto axis = NormalizeAxis(-4, 3, "axis");
  ASSERT_FALSE(axis.ok());
  EXPECT_EQ(axis.status().message(), "axis -4 is out of range for rank 3");
}

}  // namespace
}  // namespace mp::eval
