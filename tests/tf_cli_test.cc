// TensorFlow formats through the command line: `inspect` of the golden TFLite model and
// SavedModel (TensorFlow Serving's test data), `convert --dequantize` of a quantized TFLite
// model written by flatc, and SavedModel variables -> safetensors -> tensor bundle.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"
#include "test_util.h"

namespace mp {
namespace {

using testing::CommandResult;
using testing::RunCli;
using testing::TempDir;

std::string Golden(const std::string& rel) { return (testing::GoldenDir() / "tf" / rel).string(); }

std::vector<float> Floats(const ModelSource& m, const std::string& name) {
  const TensorView v = m.Load(m.Find(name).value()).value();
  std::vector<float> out(v.data->size() / 4);
  std::memcpy(out.data(), v.data->data(), v.data->size());
  return out;
}

TEST(TfCli, InspectsTheGoldenTfliteModel) {
  MP_SKIP_WITHOUT_GOLDEN();
  const std::string path = Golden("parse_example_tflite/00000123/model.tflite");
  CommandResult r = RunCli("inspect '" + path + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("format:      tflite"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("operator codes: ParseExampleV2 v1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("input 0 'input': STRING [1] (signature [-1])"), std::string::npos) << r.out;
  r = RunCli("inspect '" + path + "' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json doc = Json::parse(r.out);
  EXPECT_EQ(doc.at("format"), "tflite");
  EXPECT_TRUE(doc.contains("tflite")) << r.out;
}

TEST(TfCli, ConvertDequantizesTflite) {
  TempDir dir;
  const std::string src = (testing::SourceDir() / "fuzz/corpus/tflite/quantized.tflite").string();
  const std::string out = dir.File("w.safetensors");
  CommandResult r = RunCli("convert '" + src + "' '" + out + "' --dequantize");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto m = OpenModel(out).value();
  // (q - zero_point) * scale, per axis for w, per tensor for u (values from the flatc JSON).
  EXPECT_EQ(Floats(*m, "w"), (std::vector<float>{-64.5f, -0.5f, 0.0f, 32.25f, 0.0f, 1.25f}));
  EXPECT_EQ(Floats(*m, "u"), (std::vector<float>{-16.0f, 0.0f, 15.875f}));
  // Without --dequantize the stored integers are kept.
  r = RunCli("convert '" + src + "' '" + dir.File("raw.safetensors") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto raw = OpenModel(dir.File("raw.safetensors")).value();
  EXPECT_EQ(raw->tensors()[*raw->Find("w")].dtype, DType::kI8);
}

TEST(TfCli, SavedModelSignaturesAndVariablesRoundTrip) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  const std::string sm = Golden("saved_model_half_plus_two_cpu/00000123");
  CommandResult r = RunCli("inspect '" + sm + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("MetaGraphDef with tag-set: 'serve'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("signature_def['regress_x2_to_y3']"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Method name is: tensorflow/serving/regress"), std::string::npos) << r.out;
  // Variables -> safetensors -> a tensor bundle: the same values (a = 0.5, b = 2.0).
  ASSERT_EQ(RunCli("convert '" + sm + "' '" + dir.File("v.safetensors") + "'").exit_code, 0);
  r = RunCli("convert '" + dir.File("v.safetensors") + "' '" + dir.File("ckpt.index") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto bundle = OpenModel(dir.File("ckpt.index")).value();
  EXPECT_EQ(bundle->format(), "tf_bundle");
  EXPECT_EQ(Floats(*bundle, "a"), std::vector<float>{0.5f});
  EXPECT_EQ(Floats(*bundle, "b"), std::vector<float>{2.0f});
  r = RunCli("diff '" + sm + "' '" + dir.File("ckpt.index") + "'");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

}  // namespace
}  // namespace mp
