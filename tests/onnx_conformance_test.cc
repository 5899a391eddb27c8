// The ONNX reference evaluator against the node conformance tests Debian ships
// (libonnx-testdata: data/node/test_*/model.onnx with test_data_set_*/input_N.pb and
// output_N.pb), compared with onnx's backend-test tolerance; and against the golden MLP that
// torch exported.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "modelport/formats/format.h"
#include "modelport/validate/eval_tensor.h"
#include "modelport/validate/onnx_eval.h"
#include "onnx_node_tests.h"
#include "test_util.h"

namespace mp::eval {
namespace {

namespace fs = std::filesystem;

using node_tests::Compare;
using node_tests::ReadNpy;

// onnx/backend/test/runner: np.testing.assert_allclose(rtol=1e-3, atol=1e-7).
constexpr double kRtol = 1e-3;
constexpr double kAtol = 1e-7;

// Runs one node test folder; empty on success, else the first failure.
std::string RunNodeTest(const node_tests::NodeTest& test) {
  Result<std::unique_ptr<OnnxEvaluator>> evaluator = OnnxEvaluator::Open(test.dir / "model.onnx");
  if (!evaluator.ok()) return "open: " + evaluator.status().ToString();
  const std::vector<fs::path> sets = node_tests::DataSets(test.dir);
  if (sets.empty()) return "no test_data_set_* folder";
  for (const fs::path& set : sets) {
    const std::string where = set.filename().string() + ": ";
    Result<std::vector<NamedTensor>> inputs = node_tests::ReadInputs(set, test.model);
    if (!inputs.ok()) return inputs.status().ToString();
    Result<std::vector<NamedTensor>> outputs = (*evaluator)->Run(*inputs);
    if (!outputs.ok()) return where + outputs.status().ToString();
    for (size_t i = 0; i < outputs->size(); ++i) {
      Result<Tensor> expected = node_tests::ReadOutput(set, test.model, i);
      if (!expected.ok()) return expected.status().ToString();
      std::string diff = Compare(*expected, (*outputs)[i].second, kRtol, kAtol, "expected", "got");
      if (!diff.empty()) return where + "output " + (*outputs)[i].first + ": " + diff;
    }
  }
  return "";
}

TEST(OnnxConformance, NodeTestsOfSupportedOpsPass) {
  if (!fs::is_directory(node_tests::kNodeTestsDir)) {
    GTEST_SKIP() << node_tests::kNodeTestsDir << " is absent (install Debian's libonnx-testdata)";
  }
  std::vector<std::string> unparsable;
  const std::vector<node_tests::NodeTest> tests = node_tests::SupportedNodeTests(&unparsable);
  for (const std::string& e : unparsable) ADD_FAILURE() << e;

  int total = 0, passed = 0;
  std::map<std::string, std::pair<int, int>> per_op;  // op -> (passed, total)
  std::vector<std::string> failures, excluded;
  for (const node_tests::NodeTest& test : tests) {
    auto exclusion = node_tests::Exclusions().find(test.name);
    if (exclusion != node_tests::Exclusions().end()) {
      excluded.push_back(test.name + ": " + exclusion->second.reason);
      continue;
    }
    ++total;
    std::string why = RunNodeTest(test);
    if (why.empty()) ++passed;
    if (!why.empty()) failures.push_back(test.name + ": " + why);
    for (const std::string& op : test.ops) {
      per_op[op].second += 1;
      per_op[op].first += why.empty() ? 1 : 0;
    }
  }

  const std::vector<std::string> supported_list = SupportedOps();
  const std::set<std::string> supported(supported_list.begin(), supported_list.end());
  std::cout << "ONNX node conformance: " << passed << " of " << total
            << " tests of supported ops pass (" << supported.size() << " ops)\n";
  for (const auto& [op, counts] : per_op) {
    std::cout << "  " << op << ": " << counts.first << "/" << counts.second << "\n";
  }
  std::vector<std::string> untested;
  for (const std::string& op : supported) {
    if (!per_op.count(op)) untested.push_back(op);
  }
  if (!untested.empty()) {
    std::cout << "  supported ops without a node test here:";
    for (const std::string& op : untested) std::cout << " " << op;
    std::cout << "\n";
  }
  for (const std::string& e : excluded) std::cout << "  excluded " << e << "\n";
  std::string list;
  for (const std::string& f : failures) list += "\n  " + f;
  EXPECT_TRUE(failures.empty()) << failures.size() << " node tests fail:" << list;
  EXPECT_GT(total, 0);
}

// The MLP torch exported (Linear, GELU, LayerNorm, Linear; opset 17) reproduces torch's output.
class GoldenMlp : public ::testing::TestWithParam<const char*> {};

TEST_P(GoldenMlp, ReproducesTorchOutput) {
  const fs::path dir = testing::GoldenDir() / "onnx";
  if (!fs::exists(dir / GetParam())) GTEST_SKIP() << dir / GetParam() << " is absent";
  Result<std::unique_ptr<OnnxEvaluator>> evaluator = OnnxEvaluator::Open(dir / GetParam());
  ASSERT_TRUE(evaluator.ok()) << evaluator.status().ToString();
  ASSERT_EQ((*evaluator)->input_names().size(), 1u);
  ASSERT_EQ((*evaluator)->output_names().size(), 1u);
  EXPECT_EQ((*evaluator)->opset(), 17);
  Result<Tensor> x = ReadNpy(dir / "mlp_opset17.x.npy");
  Result<Tensor> y = ReadNpy(dir / "mlp_opset17.y.npy");
  ASSERT_TRUE(x.ok()) << x.status().ToString();
  ASSERT_TRUE(y.ok()) << y.status().ToString();
  Result<std::vector<NamedTensor>> out = (*evaluator)->Run({{(*evaluator)->input_names()[0], *x}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const Tensor& got = (*out)[0].second;
  ASSERT_EQ(got.dtype, y->dtype);
  ASSERT_EQ(got.shape, y->shape);
  double worst = 0;
  for (int64_t i = 0; i < y->NumElements(); ++i) {
    worst = std::max(worst, std::fabs(GetAsDouble(got, i) - GetAsDouble(*y, i)));
  }
  EXPECT_LE(worst, 1e-5) << "max abs error against torch's output";
}

INSTANTIATE_TEST_SUITE_P(InlineAndExternal, GoldenMlp,
                         ::testing::Values("mlp_opset17.onnx", "mlp_opset17_external.onnx"));

// ---- onnxruntime agreement ------------------------------------------------------------------

::onnx::NodeProto OrtNode(const std::string& op, const std::vector<std::string>& inputs,
                          const std::vector<std::string>& outputs,
                          const std::vector<::onnx::AttributeProto>& attrs = {}) {
  ::onnx::NodeProto n;
  n.set_op_type(op);
  n.set_name(outputs[0]);
  for (const auto& i : inputs) n.add_input(i);
  for (const auto& o : outputs) n.add_output(o);
  for (const auto& a : attrs) *n.add_attribute() = a;
  return n;
}

::onnx::AttributeProto IntsAttr(const std::string& name, const std::vector<int64_t>& v) {
  ::onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(::onnx::AttributeProto::INTS);
  for (int64_t x : v) a.add_ints(x);
  return a;
}

::onnx::AttributeProto IntAttr(const std::string& name, int64_t v) {
  ::onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(::onnx::AttributeProto::INT);
  a.set_i(v);
  return a;
}

::onnx::AttributeProto StringAttr(const std::string& name, const std::string& v) {
  ::onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(::onnx::AttributeProto::STRING);
  a.set_s(v);
  return a;
}

// One graph through most elementwise and shape kernels (opset 20, so Gelu is standard), run by
// the evaluator and by onnxruntime on the same input: every output must agree.
TEST(OnnxOrtAgreement, ElementwiseAndShapeGraph) {
  MP_SKIP_WITHOUT_ORT();
  ::onnx::ModelProto m;
  m.set_ir_version(9);
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(20);
  auto* g = m.mutable_graph();
  g->set_name("agreement");
  auto init = [&](const std::string& name, const Tensor& t) {
    ToTensorProto(t, name, g->add_initializer());
  };
  init("zero_point_one", Tensor::FromF32({}, {0.1f}));
  init("one", Tensor::FromF32({}, {1.0f}));
  init("three_halves", Tensor::FromF32({}, {1.5f}));
  init("lo", Tensor::FromF32({}, {0.05f}));
  init("hi", Tensor::FromF32({}, {2.0f}));
  init("starts", Tensor::FromI64({1}, {-1}));
  init("ends", Tensor::FromI64({1}, {-100}));
  init("axes2", Tensor::FromI64({1}, {2}));
  init("steps", Tensor::FromI64({1}, {-2}));
  init("flat", Tensor::FromI64({2}, {0, -1}));
  init("r0", Tensor::FromI64({}, {0}));
  init("r6", Tensor::FromI64({}, {6}));
  init("r2", Tensor::FromI64({}, {2}));
  init("expand_to", Tensor::FromI64({3}, {2, 2, 3}));
  init("axes0", Tensor::FromI64({1}, {0}));
  init("split", Tensor::FromI64({2}, {1, 2}));
  const std::vector<::onnx::NodeProto> nodes = {
      OrtNode("Gelu", {"x"}, {"gelu"}, {StringAttr("approximate", "tanh")}),
      OrtNode("Greater", {"x", "zero_point_one"}, {"gt"}),
      OrtNode("Neg", {"x"}, {"neg"}),
      OrtNode("Where", {"gt", "gelu", "neg"}, {"where"}),
      OrtNode("Slice", {"where", "starts", "ends", "axes2", "steps"}, {"slice"}),
      OrtNode("Transpose", {"slice"}, {"transposed"}, {IntsAttr("perm", {2, 0, 1})}),
      OrtNode("Abs", {"transposed"}, {"abs"}),
      OrtNode("Pow", {"abs", "three_halves"}, {"pow"}),
      OrtNode("Clip", {"pow", "lo", "hi"}, {"clip"}),
      OrtNode("Reshape", {"clip", "flat"}, {"reshaped"}),
      OrtNode("Range", {"r0", "r6", "r2"}, {"idx"}),
      OrtNode("Gather", {"reshaped", "idx"}, {"gathered"}, {IntAttr("axis", 1)}),
      OrtNode("Expand", {"gathered", "expand_to"}, {"expanded"}),
      OrtNode("Erf", {"gathered"}, {"erf"}),
      OrtNode("Unsqueeze", {"erf", "axes0"}, {"unsqueezed"}),
      OrtNode("Concat", {"expanded", "unsqueezed"}, {"cat"}, {IntAttr("axis", 0)}),
      OrtNode("Split", {"cat", "split"}, {"part1", "part2"}, {IntAttr("axis", 0)}),
      OrtNode("Mul", {"part2", "part2"}, {"sq"}),
      OrtNode("Add", {"sq", "one"}, {"sq1"}),
      OrtNode("Sqrt", {"sq1"}, {"root"}),
      OrtNode("Tanh", {"part2"}, {"tanh"}),
      OrtNode("Exp", {"tanh"}, {"exp"}),
      OrtNode("Div", {"exp", "root"}, {"div"}),
      OrtNode("Sub", {"part2", "div"}, {"sub"}),
      OrtNode("LeakyRelu", {"sub"}, {"leaky"}),
      OrtNode("Sigmoid", {"leaky"}, {"y_sigmoid"}),
      OrtNode("Add", {"part1", "one"}, {"p1"}),
      OrtNode("Log", {"p1"}, {"log"}),
      OrtNode("Cast", {"log"}, {"half"}, {IntAttr("to", ::onnx::TensorProto::FLOAT16)}),
      OrtNode("Cast", {"half"}, {"y_half"}, {IntAttr("to", ::onnx::TensorProto::FLOAT)}),
      OrtNode("Shape", {"cat"}, {"y_shape"}, {IntAttr("start", 1)}),
      OrtNode("ConstantOfShape", {"y_shape"}, {"ones_like"}),
      OrtNode("Flatten", {"part2"}, {"flattened"}, {IntAttr("axis", 2)}),
      OrtNode("Squeeze", {"part1", "axes0"}, {"squeezed"}),
      OrtNode("Less", {"squeezed", "ones_like"}, {"y_less"}),
      OrtNode("Relu", {"flattened"}, {"relu"}),
      OrtNode("Dropout", {"relu"}, {"dropped"}),
      OrtNode("Identity", {"dropped"}, {"y_relu"}),
      OrtNode("Cast", {"y_shape"}, {"shape_f"}, {IntAttr("to", ::onnx::TensorProto::FLOAT)}),
      OrtNode("Equal", {"shape_f", "hi"}, {"y_equal"}),
  };
  for (const auto& n : nodes) *g->add_node() = n;
  auto* x = g->add_input();
  x->set_name("x");
  auto* tt = x->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(::onnx::TensorProto::FLOAT);
  for (int64_t d : {2, 3, 4}) tt->mutable_shape()->add_dim()->set_dim_value(d);
  const std::vector<std::string> outputs = {"y_sigmoid", "y_half", "y_shape",
                                            "y_less",    "y_relu", "y_equal"};
  for (const auto& name : outputs) g->add_output()->set_name(name);

  testing::TempDir tmp;
  {
    std::ofstream out(tmp.File("m.onnx"), std::ios::binary);
    ASSERT_TRUE(m.SerializeToOstream(&out));
  }
  std::vector<float> values;
  for (int i = 0; i < 24; ++i) values.push_back(std::sin(1.7f * i) * 2.5f);
  const Tensor input = Tensor::FromF32({2, 3, 4}, values);
  mp::Model npy;
  Result<TensorView> view = ToView("x", input);
  ASSERT_TRUE(view.ok());
  ASSERT_TRUE(npy.Add(*view).ok());
  Result<const FormatDescriptor*> fmt = FormatForOutput(tmp.File("x.npy"));
  ASSERT_TRUE(fmt.ok()) << fmt.status().ToString();
  WriteOptions no_sync;
  no_sync.durable = false;
  ASSERT_TRUE((*fmt)->write(npy, tmp.File("x.npy"), no_sync).ok());

  const testing::CommandResult ort =
      testing::RunOrt(tmp.File("m.onnx"), tmp.File("ort"), {"x=" + tmp.File("x.npy")});
  ASSERT_EQ(ort.exit_code, 0) << ort.err;

  Result<std::unique_ptr<OnnxEvaluator>> evaluator = OnnxEvaluator::Open(tmp.File("m.onnx"));
  ASSERT_TRUE(evaluator.ok()) << evaluator.status().ToString();
  Result<std::vector<NamedTensor>> got = (*evaluator)->Run({{"x", input}});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    SCOPED_TRACE(outputs[i]);
    Result<Tensor> want = ReadNpy(tmp.File("ort/" + outputs[i] + ".npy"));
    ASSERT_TRUE(want.ok()) << want.status().ToString();
    EXPECT_EQ(Compare(*want, (*got)[i].second, kRtol, kAtol, "expected", "got"), "");
  }
}

}  // namespace
}  // namespace mp::eval
