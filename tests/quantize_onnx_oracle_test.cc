// Int8 QDQ ONNX written by mp::QuantizeOnnx, judged by real tools: Debian's torch 1.13 exports
// an MLP, a CNN (BatchNorm folded into its convolutions) and an embedding model
// (tests/oracle/quantize_onnx.py); onnxruntime (npm's onnxruntime-node, tests/node/ort_run.mjs)
// runs the float and the quantized model on the same input. The quantized outputs must stay
// close to the float ones (cosine > 0.999), the file must be at most 30% of the float one, the
// libonnx checker must accept it, and modelport's own reference evaluator must compute what
// onnxruntime computes from the quantized model.
#include <gtest/gtest.h>
#include <onnx/checker.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "modelport/convert/onnx_quantize.h"
#include "modelport/formats/onnx/onnx.h"
#include "modelport/validate/onnx_eval.h"
#include "onnx_node_tests.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::TempDir;

std::string Quote(const std::string& s) { return "'" + s + "'"; }

// Runs `model` in onnxruntime on `x` (the model's one input); its one output y as a tensor.
Result<eval::Tensor> RunInOrt(const std::string& model, const std::string& x,
                              const std::string& out_dir) {
  fs::create_directories(out_dir);
  const CommandResult r = testing::RunOrt(model, out_dir, {"x=" + x});
  if (r.exit_code != 0) return Internal(model + ": onnxruntime failed: " + r.err);
  return eval::node_tests::ReadNpy(out_dir + "/y.npy");
}

struct Agreement {
  double cosine = 0, max_abs = 0, max_ref = 0;
};
Agreement Compare(const eval::Tensor& ref, const eval::Tensor& out) {
  Agreement a;
  EXPECT_EQ(ref.shape, out.shape);
  EXPECT_EQ(ref.dtype, DType::kF32);
  EXPECT_EQ(out.dtype, DType::kF32);
  if (ref.shape != out.shape || ref.dtype != DType::kF32 || out.dtype != DType::kF32) return a;
  double dot = 0, rr = 0, oo = 0;
  for (int64_t i = 0; i < ref.NumElements(); ++i) {
    const double r = ref.data<float>()[i], o = out.data<float>()[i];
    dot += r * o;
    rr += r * r;
    oo += o * o;
    a.max_abs = std::max(a.max_abs, std::fabs(r - o));
    a.max_ref = std::max(a.max_ref, std::fabs(r));
  }
  a.cosine = dot / (std::sqrt(rr) * std::sqrt(oo));
  return a;
}

class QuantizeOnnxOracle : public ::testing::TestWithParam<const char*> {};

TEST_P(QuantizeOnnxOracle, OnnxruntimeRunsTheInt8ModelCloseToTheFloatOne) {
  if (!testing::PythonHas("torch numpy")) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch and numpy (apt-get install "
                    "python3-torch)";
  }
  MP_SKIP_WITHOUT_ORT();
  const std::string name = GetParam();
  TempDir dir;
  const std::string d = dir.path().string();
  const std::string script = (testing::SourceDir() / "tests/oracle/quantize_onnx.py").string();
  const CommandResult exported =
      testing::Run("/usr/bin/python3 " + Quote(script) + " export " + Quote(d));
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  const std::string model = d + "/" + name + ".onnx", x = d + "/" + name + "_x.npy";
  const std::string quantized = d + "/" + name + "_int8.onnx";

  auto source = onnx::Open(model, ReadOptions{});
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  QuantizeOptions options;  // int8, per channel, tensors of >= 1024 elements
  auto report = QuantizeOnnx(dynamic_cast<const onnx::OnnxSource&>(**source), quantized, options,
                             WriteOptions{});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  // Tensors of >= 1024 elements: mlp's three Linear weights; cnn's two last convolutions
  // (the first has 32 x 3 x 3 x 3 = 864 elements) and two Linear weights; emb's embedding
  // (its 10 x 64 head is too small). Gemm (transB = 1), Conv and Gather all put the output
  // channel on axis 0.
  const std::map<std::string, uint64_t> expected_count = {{"mlp", 3}, {"cnn", 4}, {"emb", 1}};
  uint64_t quantized_count = 0;
  for (const TensorQuantReport& t : report->tensors) {
    quantized_count += t.quantized;
    if (t.quantized) {
      EXPECT_EQ(t.axis, 0) << t.name;
      EXPECT_GE(t.elements, 1024u) << t.name;
      EXPECT_TRUE(t.measured) << t.name;
      EXPECT_GT(t.error.count, 0u) << t.name;
      EXPECT_LT(t.error.max_abs, 1.0) << t.name;
    }
  }
  EXPECT_EQ(quantized_count, expected_count.at(name));
  EXPECT_FALSE(fs::exists(quantized + ".data"));
  try {
    ::onnx::checker::check_model(quantized);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "onnx checker: " << e.what();
  }

  // Size: the weights dominate, so int8 is about a quarter of f32.
  const double ratio =
      static_cast<double>(fs::file_size(quantized)) / static_cast<double>(fs::file_size(model));
  std::printf("[ %s ] float %ju bytes, int8 QDQ %ju bytes (%.1f%%)\n", name.c_str(),
              static_cast<uintmax_t>(fs::file_size(model)),
              static_cast<uintmax_t>(fs::file_size(quantized)), 100 * ratio);
  EXPECT_LE(ratio, 0.30);

  // onnxruntime: float vs int8 QDQ.
  auto y_float = RunInOrt(model, x, d + "/y_float");
  ASSERT_TRUE(y_float.ok()) << y_float.status().ToString();
  auto y_int8 = RunInOrt(quantized, x, d + "/y_int8");
  ASSERT_TRUE(y_int8.ok()) << y_int8.status().ToString();
  const Agreement ort = Compare(*y_float, *y_int8);
  std::printf("[ %s ] onnxruntime int8 vs float: cosine %.7f, max abs diff %.3g (max |y| %.3g)\n",
              name.c_str(), ort.cosine, ort.max_abs, ort.max_ref);
  EXPECT_GT(ort.cosine, 0.999);
  EXPECT_GT(ort.max_abs, 0.0);  // the weights did change

  // modelport's reference evaluator on the quantized model agrees with onnxruntime.
  auto evaluator = eval::OnnxEvaluator::Open(quantized);
  ASSERT_TRUE(evaluator.ok()) << evaluator.status().ToString();
  auto xt = eval::node_tests::ReadNpy(x);
  ASSERT_TRUE(xt.ok()) << xt.status().ToString();
  auto ours = (*evaluator)->Run({{"x", *xt}});
  ASSERT_TRUE(ours.ok()) << ours.status().ToString();
  ASSERT_EQ(ours->size(), 1u);
  const Agreement mine = Compare(*y_int8, (*ours)[0].second);
  std::printf("[ %s ] modelport evaluator vs onnxruntime (int8): max abs diff %.3g\n", name.c_str(),
              mine.max_abs);
  EXPECT_LE(mine.max_abs, 1e-5 * std::max(1.0, mine.max_ref));

  // And dequantizing gives back a float model onnxruntime runs to the int8 model's outputs.
  auto qsource = onnx::Open(quantized, ReadOptions{});
  ASSERT_TRUE(qsource.ok()) << qsource.status().ToString();
  const std::string back = d + "/" + name + "_back.onnx";
  Status s = DequantizeOnnx(dynamic_cast<const onnx::OnnxSource&>(**qsource), back, DType::kF32,
                            WriteOptions{});
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_GE(fs::file_size(back), fs::file_size(model) * 9 / 10);
  auto y_back = RunInOrt(back, x, d + "/y_back");
  ASSERT_TRUE(y_back.ok()) << y_back.status().ToString();
  const Agreement round = Compare(*y_int8, *y_back);
  EXPECT_LE(round.max_abs, 1e-5 * std::max(1.0, round.max_ref));
}

// The cast schemes (a Cast node per weight) run in onnxruntime too: f16 and bf16 on the MLP.
TEST(QuantizeOnnxOracleCasts, OnnxruntimeRunsF16AndBf16Weights) {
  if (!testing::PythonHas("torch numpy")) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch and numpy (apt-get install "
                    "python3-torch)";
  }
  MP_SKIP_WITHOUT_ORT();
  TempDir dir;
  const std::string d = dir.path().string();
  const std::string script = (testing::SourceDir() / "tests/oracle/quantize_onnx.py").string();
  const CommandResult exported =
      testing::Run("/usr/bin/python3 " + Quote(script) + " export " + Quote(d));
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  const std::string model = d + "/mlp.onnx", x = d + "/mlp_x.npy";
  auto source = onnx::Open(model, ReadOptions{});
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  auto y_float = RunInOrt(model, x, d + "/y_float");
  ASSERT_TRUE(y_float.ok()) << y_float.status().ToString();
  for (QuantScheme scheme : {QuantScheme::kF16, QuantScheme::kBF16}) {
    const std::string name(SchemeName(scheme));
    SCOPED_TRACE(name);
    QuantizeOptions options;
    options.scheme = scheme;
    const std::string out = d + "/mlp_" + name + ".onnx";
    auto report =
        QuantizeOnnx(dynamic_cast<const onnx::OnnxSource&>(**source), out, options, WriteOptions{});
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    const double ratio =
        static_cast<double>(fs::file_size(out)) / static_cast<double>(fs::file_size(model));
    EXPECT_LE(ratio, 0.52);
    auto y = RunInOrt(out, x, d + "/y_" + name);
    ASSERT_TRUE(y.ok()) << y.status().ToString();
    const Agreement a = Compare(*y_float, *y);
    std::printf(
        "[ mlp %s ] %.1f%% of the float file; onnxruntime vs float: cosine %.7f, max abs "
        "diff %.3g\n",
        name.c_str(), 100 * ratio, a.cosine, a.max_abs);
    EXPECT_GT(a.cosine, 0.9999);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, QuantizeOnnxOracle, ::testing::Values("mlp", "cnn", "emb"));

}  // namespace
}  // namespace mp
