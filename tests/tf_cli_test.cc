// TensorFlow formats through the command line: `inspect` of the golden TFLite model and
// SavedModel (TensorFlow Serving's test data), `convert --dequantize` of a quantized TFLite
// model written by flatc, SavedModel variables -> safetensors -> tensor bundle, and
// `tf set-weights` writing a new TF Serving version with new variable values.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"
#include "modelport/formats/keras/keras.h"
#include "modelport/formats/safetensors/safetensors.h"
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

// A safetensors file holding every variable of `source` (f32 scalars), with `changes` applied
// and the variables in `drop` left out.
void WriteVariables(const ModelSource& source, const std::string& path,
                    const std::map<std::string, float>& changes,
                    const std::set<std::string>& drop = {}) {
  Model m;
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    const TensorInfo& t = source.tensors()[i];
    if (drop.count(t.name) > 0) continue;
    std::vector<uint8_t> bytes(t.byte_size);
    ASSERT_TRUE(source.LoadInto(i, bytes).ok());
    if (auto it = changes.find(t.name); it != changes.end())
      std::memcpy(bytes.data(), &it->second, 4);
    ASSERT_TRUE(m.Add(testing::BytesTensor(t.name, t.dtype, t.shape, bytes)).ok());
  }
  ASSERT_TRUE(safetensors::Write(m, path, {}).ok());
}

TEST(TfCli, SetWeightsWritesANewServingVersion) {
  MP_SKIP_WITHOUT_GOLDEN();
  namespace fs = std::filesystem;
  TempDir dir;
  const std::string sm = Golden("saved_model_half_plus_two_cpu/00000123");
  auto golden = OpenModel(sm).value();  // f32 scalars a, a2, b, c, c2
  WriteVariables(*golden, dir.File("w.safetensors"), {{"a", 1.5f}, {"b", -3.0f}});
  const std::string base = dir.File("serving");

  CommandResult r = RunCli("tf set-weights '" + sm + "' '" + dir.File("w.safetensors") + "' -o '" +
                           base + "' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json doc = Json::parse(r.out);
  EXPECT_EQ(doc.at("version"), "00000123");
  EXPECT_EQ(doc.at("destination"), base + "/00000123");
  EXPECT_EQ(doc.at("replaced"), Json::array({"a", "a2", "b", "c", "c2"}));
  EXPECT_TRUE(doc.at("kept").empty());
  // The base folder reads as a SavedModel (its highest version): new values, same graph bytes.
  auto out = OpenModel(base).value();
  EXPECT_EQ(out->format(), "saved_model");
  EXPECT_EQ(Floats(*out, "a"), std::vector<float>{1.5f});
  EXPECT_EQ(Floats(*out, "b"), std::vector<float>{-3.0f});
  EXPECT_EQ(testing::ReadBytes(base + "/00000123/saved_model.pb"),
            testing::ReadBytes(sm + "/saved_model.pb"));
  r = RunCli("inspect '" + base + "'");
  EXPECT_NE(r.out.find("signature_def['regress_x2_to_y3']"), std::string::npos) << r.out;

  // An existing version is never replaced (exit 6), and is left as it was.
  r = RunCli("tf set-weights '" + sm + "' '" + dir.File("w.safetensors") + "' -o '" + base + "'");
  EXPECT_EQ(r.exit_code, 6) << r.out;
  EXPECT_NE(r.err.find("00000123"), std::string::npos) << r.err;
  EXPECT_EQ(Floats(*OpenModel(base).value(), "a"), std::vector<float>{1.5f});

  // Weights lacking a variable fail naming it (exit 2) and write nothing; --allow-missing keeps
  // its old value.
  WriteVariables(*golden, dir.File("a_only.safetensors"), {{"a", 7.0f}}, {"b"});
  r = RunCli("tf set-weights '" + sm + "' '" + dir.File("a_only.safetensors") + "' -o '" + base +
             "' --version 2");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.err.find("1 variable(s) have no tensor in the new weights: 'b'"), std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(base + "/2"));
  r = RunCli("tf set-weights '" + sm + "' '" + dir.File("a_only.safetensors") + "' -o '" + base +
             "' --version 2 --allow-missing");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("replaced 4 variable(s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 kept their old values"), std::string::npos) << r.out;
  auto v2 = OpenModel(base + "/2").value();
  EXPECT_EQ(Floats(*v2, "a"), std::vector<float>{7.0f});
  EXPECT_EQ(Floats(*v2, "b"), std::vector<float>{2.0f});

  // A weight of another shape is refused naming the variable.
  Model bad;
  ASSERT_TRUE(bad.Add(testing::PatternTensor("a", DType::kF32, Shape{2}, 1)).ok());
  ASSERT_TRUE(safetensors::Write(bad, dir.File("bad.safetensors"), {}).ok());
  r = RunCli("tf set-weights '" + sm + "' '" + dir.File("bad.safetensors") + "' -o '" + base +
             "' --version 3 --allow-missing");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.err.find("'a'"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(base + "/3"));
}

// `convert` writes .keras archives from a model that carries its Keras config (here through
// safetensors, which keeps it as text) and refuses, writing nothing, one that does not.
TEST(TfCli, ConvertWritesKerasArchivesThatCarryTheirConfig) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(testing::PatternTensor("dense/kernel", DType::kF32, {2, 3}, 1)).ok());
  ASSERT_TRUE(m.Add(testing::PatternTensor("dense/bias", DType::kF32, {3}, 2)).ok());
  const Json config = Json::parse(
      R"({"class_name": "Sequential", "config": {"name": "s", "layers": [)"
      R"({"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense"}}]}})");
  m.mutable_metadata() = Json{{std::string(keras::kConfigKey), config}};
  ASSERT_TRUE(keras::WriteKeras(m, dir.File("m.keras"), {}).ok());

  CommandResult r =
      RunCli("convert '" + dir.File("m.keras") + "' '" + dir.File("w.safetensors") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCli("convert '" + dir.File("w.safetensors") + "' '" + dir.File("back.keras") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto back = OpenModel(dir.File("back.keras")).value();
  EXPECT_TRUE(testing::SameModel(m, *back, /*compare_metadata=*/false));
  EXPECT_EQ(back->metadata()[std::string(keras::kConfigKey)], config);

  ASSERT_TRUE(safetensors::Write(Model(), dir.File("bare.safetensors"), {}).ok());
  r = RunCli("convert '" + dir.File("bare.safetensors") + "' '" + dir.File("bare.keras") + "'");
  EXPECT_EQ(r.exit_code, 5) << r.out;
  EXPECT_NE(r.err.find("write the weights as .weights.h5 instead"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.File("bare.keras")));
}

}  // namespace
}  // namespace mp
