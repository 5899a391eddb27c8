#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "modelport/validate/eval_ops.h"
#include "modelport/validate/eval_tensor.h"
#include "test_util.h"

namespace mp::eval {
namespace {

// Node builders: attributes added in place.
::onnx::NodeProto Node(const std::string& op) {
  ::onnx::NodeProto node;
  node.set_op_type(op);
  node.set_name("n");
  return node;
}

void SetInts(::onnx::NodeProto& node, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(::onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

void SetInt(::onnx::NodeProto& node, const std::string& name, int64_t v) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(::onnx::AttributeProto::INT);
  a->set_i(v);
}

void SetFloat(::onnx::NodeProto& node, const std::string& name, float v) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(::onnx::AttributeProto::FLOAT);
  a->set_f(v);
}

void SetString(::onnx::NodeProto& node, const std::string& name, const std::string& v) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(::onnx::AttributeProto::STRING);
  a->set_s(v);
}

Result<std::vector<Tensor>> RunOp(const ::onnx::NodeProto& node, int64_t opset,
                                  std::vector<const Tensor*> inputs, size_t outputs = 1) {
  static const KernelTable* table = [] {
    auto* t = new KernelTable;
    AddNnKernels(*t);
    return t;
  }();
  OpContext ctx(node, opset, std::move(inputs), outputs);
  return table->at(node.op_type())(ctx);
}

void ExpectTensor(const Tensor& t, const std::vector<int64_t>& shape,
                  const std::vector<double>& values, double tol = 1e-6) {
  ASSERT_EQ(t.shape, shape) << Describe(t);
  ASSERT_EQ(t.NumElements(), static_cast<int64_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_NEAR(GetAsDouble(t, static_cast<int64_t>(i)), values[i], tol) << "element " << i;
  }
}

TEST(EvalNnTest, ConvTwoGroupsPaddingStrideBias) {
  // Group 2 over 2 channels (depthwise): channel 0 with a ones kernel, channel 1 with
  // [[1,0],[0,-1]]; pads 1, stride 2 give a 2x2 output whose windows start at -1 and 1.
  Tensor x = Tensor::FromF32({1, 2, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9,  //
                                            10, 11, 12, 13, 14, 15, 16, 17, 18});
  Tensor w = Tensor::FromF32({2, 1, 2, 2}, {1, 1, 1, 1, 1, 0, 0, -1});
  Tensor b = Tensor::FromF32({2}, {0.5f, -1});
  auto node = Node("Conv");
  SetInt(node, "group", 2);
  SetInts(node, "pads", {1, 1, 1, 1});
  SetInts(node, "strides", {2, 2});
  auto r = RunOp(node, 11, {&x, &w, &b});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 2, 2, 2}, {1.5, 5.5, 11.5, 28.5, -11, -13, -17, -5});
}

TEST(EvalNnTest, ConvAutoPadSameUpperAndLowerAndDilation) {
  Tensor x = Tensor::FromF32({1, 1, 4}, {1, 2, 3, 4});
  Tensor w = Tensor::FromF32({1, 1, 2}, {1, 1});
  auto upper = Node("Conv");
  SetString(upper, "auto_pad", "SAME_UPPER");
  auto r = RunOp(upper, 11, {&x, &w});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1, 4}, {3, 5, 7, 4});  // the odd pad goes at the end
  auto lower = Node("Conv");
  SetString(lower, "auto_pad", "SAME_LOWER");
  r = RunOp(lower, 11, {&x, &w});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1, 4}, {1, 3, 5, 7});  // ... or at the beginning

  Tensor x5 = Tensor::FromF32({1, 1, 5}, {1, 2, 3, 4, 5});
  auto dilated = Node("Conv");
  SetInts(dilated, "dilations", {2});
  r = RunOp(dilated, 11, {&x5, &w});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1, 3}, {4, 6, 8});
}

TEST(EvalNnTest, ConvRejectsWeightsThatDisagreeWithGroup) {
  Tensor x = Tensor::FromF32({1, 2, 3, 3}, std::vector<float>(18, 1));
  Tensor w = Tensor::FromF32({2, 2, 2, 2}, std::vector<float>(16, 1));
  auto node = Node("Conv");
  SetInt(node, "group", 2);
  auto r = RunOp(node, 11, {&x, &w});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("group 2"), std::string::npos) << r.status().ToString();
}

TEST(EvalNnTest, ConvTransposeOutputPaddingPadsAndOutputShape) {
  // Stride 2 scatters x0 to outputs 0..k-1 and x1 to 2..k+1.
  Tensor x = Tensor::FromF32({1, 1, 2}, {1, 2});
  Tensor w2 = Tensor::FromF32({1, 1, 2}, {1, 1});
  Tensor b = Tensor::FromF32({1}, {1});
  auto padded = Node("ConvTranspose");
  SetInts(padded, "strides", {2});
  SetInts(padded, "output_padding", {1});
  auto r = RunOp(padded, 11, {&x, &w2, &b});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1, 5}, {2, 2, 3, 3, 1});  // the extra position holds the bias

  Tensor w3 = Tensor::FromF32({1, 1, 3}, {1, 2, 3});  // full output [1, 2, 5, 4, 6]
  auto pads = Node("ConvTranspose");
  SetInts(pads, "strides", {2});
  SetInts(pads, "pads", {1, 1});
  r = RunOp(pads, 11, {&x, &w3});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1, 3}, {2, 5, 4});

  auto shaped = Node("ConvTranspose");
  SetInts(shaped, "strides", {2});
  SetInts(shaped, "output_shape", {6});
  r = RunOp(shaped, 11, {&x, &w3});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1, 6}, {1, 2, 5, 4, 6, 0});
}

TEST(EvalNnTest, ConvTransposeGroups) {
  // Two groups of one input channel each, two output channels per group: W is [C, M/group, k].
  Tensor x = Tensor::FromF32({1, 2, 1}, {1, 10});
  Tensor w = Tensor::FromF32({2, 2, 1}, {1, 2, 3, 4});
  auto node = Node("ConvTranspose");
  SetInt(node, "group", 2);
  auto r = RunOp(node, 11, {&x, &w});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 4, 1}, {1, 2, 30, 40});
}

TEST(EvalNnTest, MaxPoolCeilModeAndIndices) {
  Tensor x = Tensor::FromF32({1, 1, 5}, {1, 5, 2, 4, 3});
  auto floor_mode = Node("MaxPool");
  SetInts(floor_mode, "kernel_shape", {2});
  SetInts(floor_mode, "strides", {2});
  auto r = RunOp(floor_mode, 12, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1, 2}, {5, 4});

  auto ceil_mode = floor_mode;
  SetInt(ceil_mode, "ceil_mode", 1);
  r = RunOp(ceil_mode, 12, {&x}, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  ExpectTensor((*r)[0], {1, 1, 3}, {5, 4, 3});  // the last window holds only x[4]
  EXPECT_EQ((*r)[1].dtype, DType::kI64);
  ExpectTensor((*r)[1], {1, 1, 3}, {1, 3, 4});

  // A ceil_mode window that would start in the end padding is dropped.
  Tensor x4 = Tensor::FromF32({1, 1, 4}, {1, 2, 3, 4});
  auto end_pad = ceil_mode;
  SetInts(end_pad, "pads", {0, 1});
  r = RunOp(end_pad, 12, {&x4});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1, 2}, {2, 4});
}

TEST(EvalNnTest, MaxPoolRequiresKernelShape) {
  Tensor x = Tensor::FromF32({1, 1, 4}, {1, 2, 3, 4});
  auto r = RunOp(Node("MaxPool"), 12, {&x});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("kernel_shape"), std::string::npos);
}

TEST(EvalNnTest, AveragePoolCountIncludePad) {
  // Each 2x2 window (pads 1, stride 2) covers one real element and three pads.
  Tensor x = Tensor::FromF32({1, 1, 2, 2}, {1, 2, 3, 4});
  auto node = Node("AveragePool");
  SetInts(node, "kernel_shape", {2, 2});
  SetInts(node, "pads", {1, 1, 1, 1});
  SetInts(node, "strides", {2, 2});
  auto r = RunOp(node, 11, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1, 2, 2}, {1, 2, 3, 4});
  SetInt(node, "count_include_pad", 1);
  r = RunOp(node, 11, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1, 2, 2}, {0.25, 0.5, 0.75, 1});
}

TEST(EvalNnTest, GlobalAveragePool) {
  Tensor x = Tensor::FromF32({1, 2, 2, 1}, {1, 2, 3, 5});
  auto r = RunOp(Node("GlobalAveragePool"), 1, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 2, 1, 1}, {1.5, 4});
}

TEST(EvalNnTest, SoftmaxAxisSemanticsBeforeAndAfterOpset13) {
  const float ln3 = std::log(3.0f);
  Tensor x = Tensor::FromF32({1, 2, 2}, {0, 0, ln3, 0});
  auto axis1 = Node("Softmax");
  SetInt(axis1, "axis", 1);
  // Opset 11: coerced to [1, 4], one softmax over all four values (exp: 1, 1, 3, 1).
  auto r = RunOp(axis1, 11, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 2, 2}, {1.0 / 6, 1.0 / 6, 0.5, 1.0 / 6});
  // Opset 11 without the attribute: axis 1 too.
  r = RunOp(Node("Softmax"), 11, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 2, 2}, {1.0 / 6, 1.0 / 6, 0.5, 1.0 / 6});
  // Opset 13: along dimension 1 only: pairs (0, ln3) and (0, 0).
  r = RunOp(axis1, 13, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 2, 2}, {0.25, 0.5, 0.75, 0.5});
  // Opset 13 default axis -1: pairs (0, 0) and (ln3, 0).
  r = RunOp(Node("Softmax"), 13, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 2, 2}, {0.5, 0.5, 0.75, 0.25});

  r = RunOp(Node("LogSoftmax"), 11, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 2, 2},
               {std::log(1.0 / 6), std::log(1.0 / 6), std::log(0.5), std::log(1.0 / 6)});
  r = RunOp(Node("LogSoftmax"), 13, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 2, 2}, {std::log(0.5), std::log(0.5), std::log(0.75), std::log(0.25)});
}

TEST(EvalNnTest, SoftmaxLargeValuesStayFinite) {
  Tensor x = Tensor::FromF32({2}, {10000, 10000});
  auto r = RunOp(Node("Softmax"), 13, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2}, {0.5, 0.5});
}

TEST(EvalNnTest, LayerNormalizationWithStatistics) {
  // Row 0: mean 2, variance 1; row 1: mean 2, variance 4 (epsilon 0).
  Tensor x = Tensor::FromF32({2, 2}, {1, 3, 0, 4});
  Tensor scale = Tensor::FromF32({2}, {2, 1});
  Tensor bias = Tensor::FromF32({2}, {0, 1});
  auto node = Node("LayerNormalization");
  SetFloat(node, "epsilon", 0);
  auto r = RunOp(node, 17, {&x, &scale, &bias}, 3);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 2}, {-2, 2, -2, 2});
  ExpectTensor((*r)[1], {2, 1}, {2, 2});
  ExpectTensor((*r)[2], {2, 1}, {1, 0.5});

  // axis 0 normalizes over everything: mean 2, variance (1 + 1 + 4 + 4) / 4 = 2.5.
  auto all = Node("LayerNormalization");
  SetInt(all, "axis", 0);
  SetFloat(all, "epsilon", 0);
  Tensor ones = Tensor::FromF32({2, 2}, {1, 1, 1, 1});
  r = RunOp(all, 17, {&x, &ones}, 2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  const double inv = 1 / std::sqrt(2.5);
  ExpectTensor((*r)[0], {2, 2}, {-inv, inv, -2 * inv, 2 * inv});
  ExpectTensor((*r)[1], {1, 1}, {2});
}

TEST(EvalNnTest, BatchNormalizationInference) {
  Tensor x = Tensor::FromF32({1, 2, 1, 1}, {1, 2});
  Tensor scale = Tensor::FromF32({2}, {1, 2});
  Tensor bias = Tensor::FromF32({2}, {0, 1});
  Tensor mean = Tensor::FromF32({2}, {1, 0});
  Tensor var = Tensor::FromF32({2}, {4, 1});
  auto node = Node("BatchNormalization");
  SetFloat(node, "epsilon", 0);
  auto r = RunOp(node, 15, {&x, &scale, &bias, &mean, &var});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 2, 1, 1}, {0, 5});

  // Inference mode has no statistics outputs.
  r = RunOp(node, 15, {&x, &scale, &bias, &mean, &var}, 3);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("training_mode=1"), std::string::npos)
      << r.status().ToString();
}

// Batch statistics over N and the spatial dimensions: channel 0 holds 1 and 3 (mean 2,
// population variance 1), channel 1 holds 2 and 6 (mean 4, variance 4).
struct BatchNormTrainingInputs {
  Tensor x = Tensor::FromF32({2, 2, 1}, {1, 2, 3, 6});
  Tensor scale = Tensor::FromF32({2}, {1, 2});
  Tensor bias = Tensor::FromF32({2}, {0, 1});
  Tensor mean = Tensor::FromF32({2}, {0, 10});
  Tensor var = Tensor::FromF32({2}, {1, 2});
  std::vector<const Tensor*> All() const { return {&x, &scale, &bias, &mean, &var}; }
};

TEST(EvalNnTest, BatchNormalizationTrainingMode) {
  BatchNormTrainingInputs in;
  auto node = Node("BatchNormalization");
  SetFloat(node, "epsilon", 0);
  SetFloat(node, "momentum", 0.5f);
  SetInt(node, "training_mode", 1);
  auto r = RunOp(node, 15, in.All(), 3);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 3u);
  // Y: (1-2)/1, (2-4)/2*2+1, (3-2)/1, (6-4)/2*2+1.
  ExpectTensor((*r)[0], {2, 2, 1}, {-1, -1, 1, 3});
  ExpectTensor((*r)[1], {2}, {0 * 0.5 + 2 * 0.5, 10 * 0.5 + 4 * 0.5});  // running_mean
  ExpectTensor((*r)[2], {2}, {1 * 0.5 + 1 * 0.5, 2 * 0.5 + 4 * 0.5});   // running_var

  // momentum defaults to 0.9; Y alone may be asked for.
  auto plain = Node("BatchNormalization");
  SetFloat(plain, "epsilon", 0);
  SetInt(plain, "training_mode", 1);
  r = RunOp(plain, 14, in.All(), 3);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[1], {2}, {0.2, 9.4});
  ExpectTensor((*r)[2], {2}, {1.0, 2.2});
  r = RunOp(plain, 14, in.All(), 1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 2, 1}, {-1, -1, 1, 3});
}

TEST(EvalNnTest, BatchNormalizationTrainingBeforeOpset14) {
  BatchNormTrainingInputs in;
  // Opset 9: the statistics outputs select training mode; saved_mean is the batch mean.
  auto node = Node("BatchNormalization");
  SetFloat(node, "epsilon", 0);
  SetFloat(node, "momentum", 0.5f);
  auto r = RunOp(node, 9, in.All(), 4);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 4u);
  ExpectTensor((*r)[0], {2, 2, 1}, {-1, -1, 1, 3});
  ExpectTensor((*r)[1], {2}, {1, 7});
  ExpectTensor((*r)[2], {2}, {1, 3});
  ExpectTensor((*r)[3], {2}, {2, 4});
  // Y alone is inference mode: (x - input_mean) / sqrt(input_var) * scale + B.
  r = RunOp(node, 9, in.All(), 1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 2, 1},
               {1, 1 + 2 * (2 - 10) / std::sqrt(2.0), 3, 1 + 2 * (6 - 10) / std::sqrt(2.0)}, 1e-5);
  // saved_var's content is left open by the spec.
  r = RunOp(node, 9, in.All(), 5);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("saved_var"), std::string::npos) << r.status().ToString();

  // Opset 6: is_test=0 (the default) is training mode, is_test=1 inference.
  r = RunOp(node, 6, in.All(), 1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 2, 1}, {-1, -1, 1, 3});
  SetInt(node, "is_test", 1);
  r = RunOp(node, 6, in.All(), 3);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("is_test=1"), std::string::npos) << r.status().ToString();
}

template <typename T>
Tensor Typed(DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape));
  for (size_t i = 0; i < values.size(); ++i) t.data<T>()[i] = values[i];
  return t;
}

TEST(EvalNnTest, PadConstantWithValueInputAndCrop) {
  Tensor x = Tensor::FromF32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor pads = Tensor::FromI64({4}, {1, 0, 0, -1});  // one row before, one column cropped
  Tensor value = Tensor::FromF32({}, {9});
  auto r = RunOp(Node("Pad"), 11, {&x, &pads, &value});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {3, 2}, {9, 9, 1, 2, 4, 5});
  // Without constant_value the constant is 0.
  r = RunOp(Node("Pad"), 13, {&x, &pads});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {3, 2}, {0, 0, 1, 2, 4, 5});
}

TEST(EvalNnTest, PadReflectEdgeWrap) {
  Tensor x = Tensor::FromF32({1, 3}, {1, 2, 3});
  Tensor pads = Tensor::FromI64({4}, {0, 2, 0, 4});
  auto reflect = Node("Pad");
  SetString(reflect, "mode", "reflect");
  auto r = RunOp(reflect, 13, {&x, &pads});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // Pads longer than the axis keep reflecting (numpy.pad).
  ExpectTensor((*r)[0], {1, 9}, {3, 2, 1, 2, 3, 2, 1, 2, 3});

  auto edge = Node("Pad");
  SetString(edge, "mode", "edge");
  r = RunOp(edge, 13, {&x, &pads});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 9}, {1, 1, 1, 2, 3, 3, 3, 3, 3});

  auto wrap = Node("Pad");
  SetString(wrap, "mode", "wrap");
  r = RunOp(wrap, 19, {&x, &pads});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 9}, {2, 3, 1, 2, 3, 1, 2, 3, 1});
  r = RunOp(wrap, 18, {&x, &pads});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("opset 19"), std::string::npos) << r.status().ToString();

  // Negative pads crop first; the mode then pads the kept part [2, 3, 4, 5].
  Tensor x5 = Tensor::FromF32({5}, {1, 2, 3, 4, 5});
  Tensor crop = Tensor::FromI64({2}, {-1, 2});
  r = RunOp(reflect, 13, {&x5, &crop});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {6}, {2, 3, 4, 5, 4, 3});
}

TEST(EvalNnTest, PadAttributesBeforeOpset11) {
  // Opset 2-10: the pads attribute, integer data in edge mode.
  Tensor x = Typed<int64_t>(DType::kI64, {2, 2}, {1, 2, 3, 4});
  auto edge = Node("Pad");
  SetString(edge, "mode", "edge");
  SetInts(edge, "pads", {0, 1, 1, 0});
  auto r = RunOp(edge, 2, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ((*r)[0].dtype, DType::kI64);
  ExpectTensor((*r)[0], {3, 3}, {1, 1, 2, 3, 3, 4, 3, 3, 4});

  // Opset 1: paddings, and the constant from the value attribute.
  Tensor xd = Typed<double>(DType::kF64, {2}, {1, 2});
  auto constant = Node("Pad");
  SetInts(constant, "paddings", {1, 2});
  SetFloat(constant, "value", 0.5f);
  r = RunOp(constant, 1, {&xd});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ((*r)[0].dtype, DType::kF64);
  ExpectTensor((*r)[0], {5}, {0.5, 1, 2, 0.5, 0.5});

  // The attribute is required.
  r = RunOp(Node("Pad"), 10, {&xd});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("pads attribute"), std::string::npos)
      << r.status().ToString();
}

TEST(EvalNnTest, PadAxesInputAndBool) {
  Tensor x = Tensor::FromF32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor pads = Tensor::FromI64({2}, {1, 1});
  Tensor axes = Tensor::FromI64({1}, {-1});
  auto edge = Node("Pad");
  SetString(edge, "mode", "edge");
  auto r = RunOp(edge, 18, {&x, &pads, nullptr, &axes});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 5}, {1, 1, 2, 3, 3, 4, 4, 5, 6, 6});

  Tensor b = Typed<uint8_t>(DType::kBool, {1}, {1});
  Tensor one = Tensor::FromI64({2}, {1, 0});
  r = RunOp(Node("Pad"), 13, {&b, &one});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ((*r)[0].dtype, DType::kBool);
  ExpectTensor((*r)[0], {2}, {0, 1});
}

TEST(EvalNnTest, PadRejectsBadPads) {
  Tensor x = Tensor::FromF32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor short_pads = Tensor::FromI64({2}, {1, 1});
  auto r = RunOp(Node("Pad"), 13, {&x, &short_pads});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("must have 4 entries"), std::string::npos)
      << r.status().ToString();

  Tensor over_crop = Tensor::FromI64({4}, {-2, 0, -1, 0});
  r = RunOp(Node("Pad"), 13, {&x, &over_crop});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("crop more than the input has on axis 0"), std::string::npos)
      << r.status().ToString();

  // Cropping an axis away leaves nothing to reflect; constant mode may still pad it.
  Tensor empty = Tensor::FromI64({4}, {0, -3, 0, 2});
  auto reflect = Node("Pad");
  SetString(reflect, "mode", "reflect");
  r = RunOp(reflect, 13, {&x, &empty});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("cannot pad an empty axis 1"), std::string::npos)
      << r.status().ToString();
  r = RunOp(Node("Pad"), 13, {&x, &empty});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 2}, {0, 0, 0, 0});

  auto bad_mode = Node("Pad");
  SetString(bad_mode, "mode", "symmetric");
  r = RunOp(bad_mode, 13, {&x, &short_pads});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'symmetric'"), std::string::npos) << r.status().ToString();
}

TEST(EvalNnTest, GemmTransposeAlphaBetaBroadcastBias) {
  Tensor a = Tensor::FromF32({2, 2}, {1, 2, 3, 4});  // A' = [[1, 3], [2, 4]]
  Tensor b = Tensor::FromF32({2, 2}, {1, 0, 0, 1});
  Tensor c = Tensor::FromF32({2}, {10, 20});
  auto node = Node("Gemm");
  SetInt(node, "transA", 1);
  SetFloat(node, "alpha", 2);
  SetFloat(node, "beta", 0.5f);
  auto r = RunOp(node, 13, {&a, &b, &c});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 2}, {7, 16, 9, 18});

  Tensor bad_c = Tensor::FromF32({3}, {1, 2, 3});
  r = RunOp(node, 13, {&a, &b, &bad_c});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST(EvalNnTest, MatMulVectorPromotionAndBatchBroadcast) {
  Tensor a = Tensor::FromF32({3}, {1, 2, 3});
  Tensor b = Tensor::FromF32({2, 3, 2}, {1, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2});
  auto r = RunOp(Node("MatMul"), 13, {&a, &b});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 2}, {4, 5, 12, 12});

  // [2,1,1,2] x [3,2,1]: batch dimensions [2,1] and [3] broadcast to [2,3].
  Tensor p = Tensor::FromI64({2, 1, 1, 2}, {1, 2, 3, 4});
  Tensor q = Tensor::FromI64({3, 2, 1}, {1, 1, 1, 0, 0, 1});
  r = RunOp(Node("MatMul"), 13, {&p, &q});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)[0].dtype, DType::kI64);
  ExpectTensor((*r)[0], {2, 3, 1, 1}, {3, 1, 2, 7, 3, 4});

  Tensor bad = Tensor::FromF32({2, 2}, {1, 2, 3, 4});
  r = RunOp(Node("MatMul"), 13, {&a, &bad});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST(EvalNnTest, ReduceSumAxesAttributeInputAndNoop) {
  Tensor x = Tensor::FromF32({2, 3}, {1, 2, 3, 4, 5, 6});
  auto attr = Node("ReduceSum");
  SetInts(attr, "axes", {0});
  SetInt(attr, "keepdims", 0);
  auto r = RunOp(attr, 11, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {3}, {5, 7, 9});

  Tensor axes = Tensor::FromI64({1}, {-1});
  r = RunOp(Node("ReduceSum"), 13, {&x, &axes});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 1}, {6, 15});

  r = RunOp(Node("ReduceSum"), 13, {&x});  // no axes: everything, keepdims 1
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {1, 1}, {21});

  auto noop = Node("ReduceSum");
  SetInt(noop, "noop_with_empty_axes", 1);
  Tensor empty = Tensor::FromI64({0}, {});
  r = RunOp(noop, 13, {&x, &empty});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 3}, {1, 2, 3, 4, 5, 6});

  Tensor twice = Tensor::FromI64({2}, {1, -1});
  r = RunOp(Node("ReduceSum"), 13, {&x, &twice});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST(EvalNnTest, ReduceMeanAxesAttributeBefore18InputAfter) {
  Tensor x = Tensor::FromF32({2, 3}, {1, 2, 3, 4, 5, 6});
  auto attr = Node("ReduceMean");
  SetInts(attr, "axes", {1});
  auto r = RunOp(attr, 13, {&x});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {2, 1}, {2, 5});

  Tensor axes = Tensor::FromI64({1}, {0});
  auto input = Node("ReduceMean");
  SetInt(input, "keepdims", 0);
  r = RunOp(input, 18, {&x, &axes});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectTensor((*r)[0], {3}, {2.5, 3.5, 4.5});
}

// Cases the conformance tests do not reach (groups with dilation, asymmetric pads,
// ConvTranspose with groups, dilation and output_padding, 3-D windows, ceil_mode with padding,
// broadcast LayerNormalization scale, Pad's modes as torch's F.pad), each checked against
// torch 1.13's functional ops. The script writes case/input_N.pb and case/output_N.pb; the nodes
// are built here.
constexpr char kTorchCases[] = R"PY(
import os, sys, torch, torch.nn.functional as F
from onnx import numpy_helper
torch.manual_seed(7)
root = sys.argv[1]
def save(name, inputs, outputs):
    os.makedirs(os.path.join(root, name))
    for kind, ts in (("input", inputs), ("output", outputs)):
        for k, t in enumerate(ts):
            with open(os.path.join(root, name, "%s_%d.pb" % (kind, k)), "wb") as f:
                f.write(numpy_helper.from_array(t.numpy()).SerializeToString())
r = torch.randn
x, w, b = r(2, 4, 7, 6), r(6, 2, 3, 2), r(6)
save("conv2d", [x, w, b], [F.conv2d(F.pad(x, (0, 1, 1, 2)), w, b, stride=(2, 1), dilation=(2, 1), groups=2)])
x, w = r(1, 3, 5, 5, 4), r(3, 1, 2, 3, 2)
save("conv3d", [x, w], [F.conv3d(x, w, stride=2, padding=1, groups=3)])
x, w = r(2, 3, 9), r(5, 3, 4)
save("conv1d", [x, w], [F.conv1d(x, w, stride=3, padding=2, dilation=2)])
x, w, b = r(2, 4, 3, 4), r(4, 3, 3, 2), r(6)
save("convtranspose2d", [x, w, b], [F.conv_transpose2d(x, w, b, stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(2, 1))])
x, w = r(1, 2, 2, 3, 2), r(2, 2, 2, 2, 3)
save("convtranspose3d", [x, w], [F.conv_transpose3d(x, w, stride=2, padding=1)])
x = r(1, 2, 6, 7)
save("averagepool2d", [x], [F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=True)])
x = r(1, 1, 5, 4, 6)
save("averagepool3d", [x], [F.avg_pool3d(x, (2, 3, 2), stride=(2, 1, 3), padding=(1, 1, 0), ceil_mode=True, count_include_pad=False)])
x = r(2, 3, 8, 7)
y, i = F.max_pool2d(x, 3, stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True)
save("maxpool2d", [x], [y, i + torch.arange(6).reshape(2, 3, 1, 1) * 56])  # torch's are per plane
x = r(1, 2, 5, 6, 7)
y, i = F.max_pool3d(x, 2, stride=2, ceil_mode=True, return_indices=True)
save("maxpool3d", [x], [y, i + torch.arange(2).reshape(1, 2, 1, 1, 1) * 210])
x, s, b = r(2, 3, 4), r(3, 4), r(4)
save("layernorm", [x, s, b], [F.layer_norm(x, (3, 4), s, None, eps=1e-3) + b])
a, b, c = r(4, 3), r(5, 3), r(4, 1)
save("gemm", [a, b, c], [0.75 * a @ b.T - 1.5 * c])
a, b = r(2, 1, 3, 4), r(5, 4, 2)
save("matmul", [a, b], [torch.matmul(a, b)])
x = r(1, 2, 4, 5)
pads = torch.tensor([0, 0, 2, 1, 0, 0, 0, 2])  # ONNX order: all beginnings, then all ends
save("pad_reflect", [x, pads], [F.pad(x, (1, 2, 2, 0), mode="reflect")])
x = r(2, 3, 4, 3, 5)
pads = torch.tensor([0, 0, 1, 0, 2, 0, 0, 1, 3, 1])
save("pad_replicate", [x, pads], [F.pad(x, (2, 1, 0, 3, 1, 1), mode="replicate")])
x = r(2, 3, 4)
pads = torch.tensor([0, 1, -1, 0, -2, 2])
save("pad_constant", [x, pads, torch.tensor(0.5)], [F.pad(x, (-1, 2, 1, -2), value=0.5)])
)PY";

struct TorchCase {
  std::string name;
  ::onnx::NodeProto node;
  int64_t opset;
};

std::vector<TorchCase> TorchCases() {
  std::vector<TorchCase> cases;
  auto add = [&](std::string name, ::onnx::NodeProto node, int64_t opset) {
    cases.push_back({std::move(name), std::move(node), opset});
  };
  auto conv2d = Node("Conv");
  SetInt(conv2d, "group", 2);
  SetInts(conv2d, "strides", {2, 1});
  SetInts(conv2d, "pads", {1, 0, 2, 1});
  SetInts(conv2d, "dilations", {2, 1});
  add("conv2d", conv2d, 11);
  auto conv3d = Node("Conv");
  SetInt(conv3d, "group", 3);
  SetInts(conv3d, "strides", {2, 2, 2});
  SetInts(conv3d, "pads", {1, 1, 1, 1, 1, 1});
  add("conv3d", conv3d, 11);
  auto conv1d = Node("Conv");
  SetInts(conv1d, "strides", {3});
  SetInts(conv1d, "pads", {2, 2});
  SetInts(conv1d, "dilations", {2});
  add("conv1d", conv1d, 1);
  auto convt2d = Node("ConvTranspose");
  SetInt(convt2d, "group", 2);
  SetInts(convt2d, "strides", {2, 3});
  SetInts(convt2d, "pads", {1, 0, 1, 0});
  SetInts(convt2d, "output_padding", {1, 2});
  SetInts(convt2d, "dilations", {2, 1});
  add("convtranspose2d", convt2d, 11);
  auto convt3d = Node("ConvTranspose");
  SetInts(convt3d, "strides", {2, 2, 2});
  SetInts(convt3d, "pads", {1, 1, 1, 1, 1, 1});
  add("convtranspose3d", convt3d, 11);
  auto avg2d = Node("AveragePool");
  SetInts(avg2d, "kernel_shape", {3, 3});
  SetInts(avg2d, "strides", {2, 2});
  SetInts(avg2d, "pads", {1, 1, 1, 1});
  SetInt(avg2d, "ceil_mode", 1);
  SetInt(avg2d, "count_include_pad", 1);
  add("averagepool2d", avg2d, 11);
  auto avg3d = Node("AveragePool");
  SetInts(avg3d, "kernel_shape", {2, 3, 2});
  SetInts(avg3d, "strides", {2, 1, 3});
  SetInts(avg3d, "pads", {1, 1, 0, 1, 1, 0});
  SetInt(avg3d, "ceil_mode", 1);
  add("averagepool3d", avg3d, 11);
  auto max2d = Node("MaxPool");
  SetInts(max2d, "kernel_shape", {3, 3});
  SetInts(max2d, "strides", {2, 2});
  SetInts(max2d, "pads", {1, 1, 1, 1});
  SetInts(max2d, "dilations", {2, 2});
  SetInt(max2d, "ceil_mode", 1);
  add("maxpool2d", max2d, 12);
  auto max3d = Node("MaxPool");
  SetInts(max3d, "kernel_shape", {2, 2, 2});
  SetInts(max3d, "strides", {2, 2, 2});
  SetInt(max3d, "ceil_mode", 1);
  add("maxpool3d", max3d, 12);
  auto layernorm = Node("LayerNormalization");
  SetInt(layernorm, "axis", 1);
  SetFloat(layernorm, "epsilon", 1e-3f);
  add("layernorm", layernorm, 17);
  auto gemm = Node("Gemm");
  SetInt(gemm, "transB", 1);
  SetFloat(gemm, "alpha", 0.75f);
  SetFloat(gemm, "beta", -1.5f);
  add("gemm", gemm, 13);
  add("matmul", Node("MatMul"), 13);
  auto pad_reflect = Node("Pad");
  SetString(pad_reflect, "mode", "reflect");
  add("pad_reflect", pad_reflect, 13);
  auto pad_edge = Node("Pad");
  SetString(pad_edge, "mode", "edge");
  add("pad_replicate", pad_edge, 13);
  add("pad_constant", Node("Pad"), 13);
  return cases;
}

Result<Tensor> ReadProtoTensor(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  ::onnx::TensorProto proto;
  if (!in || !proto.ParseFromIstream(&in)) return InvalidArgument("cannot parse " + path.string());
  return FromTensorProto(proto);
}

TEST(EvalNnTest, AgreesWithTorch) {
  if (!testing::PythonHas("torch onnx")) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch and onnx: no torch oracle";
  }
  testing::TempDir dir;
  const std::string script = dir.File("cases.py");
  std::ofstream(script) << kTorchCases;
  const auto gen = testing::Run("/usr/bin/python3 " + script + " " + dir.File("cases"));
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  for (const TorchCase& c : TorchCases()) {
    SCOPED_TRACE(c.name);
    const std::filesystem::path folder = dir.path() / "cases" / c.name;
    std::vector<Tensor> inputs, expected;
    for (auto* list : {&inputs, &expected}) {
      const char* kind = list == &inputs ? "input_" : "output_";
      for (int k = 0; std::filesystem::exists(folder / (kind + std::to_string(k) + ".pb")); ++k) {
        auto t = ReadProtoTensor(folder / (kind + std::to_string(k) + ".pb"));
        ASSERT_TRUE(t.ok()) << t.status().ToString();
        list->push_back(std::move(*t));
      }
    }
    ASSERT_FALSE(inputs.empty());
    ASSERT_FALSE(expected.empty());
    std::vector<const Tensor*> ptrs;
    for (const Tensor& t : inputs) ptrs.push_back(&t);
    auto r = RunOp(c.node, c.opset, ptrs, expected.size());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      const Tensor& got = (*r)[i];
      ASSERT_EQ(got.dtype, expected[i].dtype) << "output " << i;
      ASSERT_EQ(got.shape, expected[i].shape) << "output " << i << ": " << Describe(got);
      for (int64_t j = 0; j < got.NumElements(); ++j) {
        const double want = GetAsDouble(expected[i], j);
        ASSERT_NEAR(GetAsDouble(got, j), want, 1e-5 + 1e-4 * std::fabs(want))
            << "output " << i << " element " << j;
      }
    }
  }
}

}  // namespace
}  // namespace mp::eval
