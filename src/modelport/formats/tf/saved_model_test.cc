#include "modelport/formats/tf/saved_model.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "test_util.h"

namespace mp::tf {
namespace {

namespace fs = std::filesystem;
using testing::ReadBytes;
using testing::TempDir;

fs::path GoldenBase(const std::string& name) { return testing::GoldenDir() / "tf" / name; }
fs::path GoldenModel(const std::string& name) { return GoldenBase(name) / "00000123"; }

std::unique_ptr<SavedModelSource> OpenOrDie(const fs::path& path) {
  auto s = SavedModelSource::Open(path.string(), {});
  EXPECT_TRUE(s.has_value()) << s.status().ToString();
  return s.has_value() ? std::move(*s) : nullptr;
}

const Signature* FindSignature(const MetaGraph& m, const std::string& key) {
  for (const auto& s : m.signatures) {
    if (s.key == key) return &s;
  }
  return nullptr;
}

std::vector<std::string> Keys(const MetaGraph& m) {
  std::vector<std::string> keys;
  for (const auto& s : m.signatures) keys.push_back(s.key);
  return keys;
}

void ExpectTensor(const SignatureTensor& t, const std::string& key, const std::string& name,
                  int32_t dtype, std::vector<int64_t> dims) {
  EXPECT_EQ(t.key, key);
  EXPECT_EQ(t.name, name);
  EXPECT_EQ(t.encoding, "name");
  EXPECT_EQ(t.dtype, dtype) << key;
  EXPECT_FALSE(t.unknown_rank) << key;
  EXPECT_EQ(t.dims, dims) << key;
}

float ScalarOf(const ModelSource& s, const std::string& name) {
  const auto i = s.Find(name);
  EXPECT_TRUE(i.has_value()) << name;
  if (!i) return -1;
  auto t = s.Load(*i);
  EXPECT_TRUE(t.has_value()) << t.status().ToString();
  float v = -1;
  if (t && t->bytes().size() == 4) std::memcpy(&v, t->bytes().data(), 4);
  return v;
}

// Signatures as TF Serving's test models declare them (saved_model_half_plus_two.py and
// friends); cross-checked against `protoc --decode_raw` of each saved_model.pb.
TEST(TfSavedModelTest, HalfPlusTwoTf1Signatures) {
  MP_SKIP_WITHOUT_GOLDEN();
  auto s = OpenOrDie(GoldenModel("saved_model_half_plus_two_cpu"));
  ASSERT_TRUE(s);
  const SavedModelInfo& info = s->info();
  EXPECT_EQ(info.schema_version, 1);
  ASSERT_EQ(info.meta_graphs.size(), 1u);
  const MetaGraph& m = info.meta_graphs[0];
  EXPECT_EQ(m.tags, std::vector<std::string>{"serve"});
  EXPECT_EQ(Keys(m),
            (std::vector<std::string>{"classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y",
                                      "regress_x_to_y2", "serving_default"}));
  const Signature* serving = FindSignature(m, "serving_default");
  ASSERT_NE(serving, nullptr);
  EXPECT_EQ(serving->method_name, "tensorflow/serving/predict");
  ASSERT_EQ(serving->inputs.size(), 1u);
  ASSERT_EQ(serving->outputs.size(), 1u);
  ExpectTensor(serving->inputs[0], "x", "x:0", kDtFloat, {-1, 1});
  ExpectTensor(serving->outputs[0], "y", "y:0", kDtFloat, {-1, 1});
  const Signature* classify = FindSignature(m, "classify_x_to_y");
  ASSERT_NE(classify, nullptr);
  EXPECT_EQ(classify->method_name, "tensorflow/serving/classify");
  ASSERT_EQ(classify->inputs.size(), 1u);
  EXPECT_EQ(classify->inputs[0].name, "tf_example:0");
  EXPECT_EQ(classify->inputs[0].dtype, kDtString);
  EXPECT_TRUE(classify->inputs[0].unknown_rank);
  ExpectTensor(classify->outputs[0], "scores", "y:0", kDtFloat, {-1, 1});
  const Signature* x2 = FindSignature(m, "regress_x2_to_y3");
  ASSERT_NE(x2, nullptr);
  EXPECT_EQ(x2->method_name, "tensorflow/serving/regress");
  ExpectTensor(x2->inputs[0], "inputs", "x2:0", kDtFloat, {-1, 1});
  ExpectTensor(x2->outputs[0], "outputs", "y3:0", kDtFloat, {-1, 1});

  EXPECT_EQ(ScalarOf(*s, "a"), 0.5f);
  EXPECT_EQ(ScalarOf(*s, "b"), 2.0f);
}

TEST(TfSavedModelTest, HalfPlusTwoTf2Signatures) {
  MP_SKIP_WITHOUT_GOLDEN();
  auto s = OpenOrDie(GoldenModel("saved_model_half_plus_two_tf2_cpu"));
  ASSERT_TRUE(s);
  const MetaGraph& m = s->info().meta_graphs.at(0);
  EXPECT_TRUE(m.has_object_graph);
  EXPECT_EQ(m.tags, std::vector<std::string>{"serve"});
  EXPECT_EQ(Keys(m),
            (std::vector<std::string>{"__saved_model_init_op", "classify_x2_to_y3",
                                      "classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y",
                                      "regress_x_to_y2", "serving_default"}));
  const Signature* serving = FindSignature(m, "serving_default");
  ASSERT_NE(serving, nullptr);
  EXPECT_EQ(serving->method_name, "tensorflow/serving/predict");
  ExpectTensor(serving->inputs.at(0), "x", "serving_default_x:0", kDtFloat, {1});
  ExpectTensor(serving->outputs.at(0), "y", "StatefulPartitionedCall_5:0", kDtFloat, {1});
  const Signature* regress = FindSignature(m, "regress_x_to_y");
  ASSERT_NE(regress, nullptr);
  ExpectTensor(regress->inputs.at(0), "inputs", "regress_x_to_y_inputs:0", kDtString, {-1});
  EXPECT_EQ(m.asset_files, std::vector<std::string>{"foo.txt"});
  EXPECT_EQ(ScalarOf(*s, "a/.ATTRIBUTES/VARIABLE_VALUE"), 0.5f);
  EXPECT_EQ(ScalarOf(*s, "b/.ATTRIBUTES/VARIABLE_VALUE"), 2.0f);
  EXPECT_EQ(ScalarOf(*s, "c/.ATTRIBUTES/VARIABLE_VALUE"), 3.0f);
}

TEST(TfSavedModelTest, HalfPlusThreeAndCounter) {
  MP_SKIP_WITHOUT_GOLDEN();
  auto three = OpenOrDie(GoldenModel("saved_model_half_plus_three"));
  ASSERT_TRUE(three);
  const MetaGraph& m3 = three->info().meta_graphs.at(0);
  EXPECT_EQ(Keys(m3), (std::vector<std::string>{"serving_default", "tensorflow/serving/regress"}));
  ExpectTensor(FindSignature(m3, "serving_default")->inputs.at(0), "x", "x:0", kDtFloat, {});
  ExpectTensor(FindSignature(m3, "tensorflow/serving/regress")->outputs.at(0), "outputs",
               "Identity:0", kDtFloat, {});
  EXPECT_EQ(ScalarOf(*three, "a"), 0.5f);
  EXPECT_EQ(ScalarOf(*three, "b"), 3.0f);
  EXPECT_EQ(ScalarOf(*three, "c"), 3.0f);

  auto counter = OpenOrDie(GoldenModel("saved_model_counter"));
  ASSERT_TRUE(counter);
  const MetaGraph& mc = counter->info().meta_graphs.at(0);
  EXPECT_EQ(mc.tensorflow_version, "1.5.0-rc1");
  EXPECT_EQ(Keys(mc), (std::vector<std::string>{"get_counter", "incr_counter", "incr_counter_by",
                                                "reset_counter"}));
  const Signature* by = FindSignature(mc, "incr_counter_by");
  ASSERT_NE(by, nullptr);
  EXPECT_EQ(by->inputs.at(0).name, "delta:0");
  EXPECT_TRUE(by->inputs.at(0).unknown_rank);
  ExpectTensor(by->outputs.at(0), "output", "incr_counter_by_op/AssignAdd:0", 101, {});
  EXPECT_EQ(ScalarOf(*counter, "counter"), 0.0f);
}

TEST(TfSavedModelTest, SavedModelCliText) {
  MP_SKIP_WITHOUT_GOLDEN();
  auto s = OpenOrDie(GoldenModel("saved_model_half_plus_three"));
  ASSERT_TRUE(s);
  EXPECT_EQ(FormatSignatures(s->info()),
            "MetaGraphDef with tag-set: 'serve' contains the following SignatureDefs:\n"
            "\n"
            "signature_def['serving_default']:\n"
            "  The given SavedModel SignatureDef contains the following input(s):\n"
            "    inputs['x'] tensor_info:\n"
            "        dtype: DT_FLOAT\n"
            "        shape: ()\n"
            "        name: x:0\n"
            "  The given SavedModel SignatureDef contains the following output(s):\n"
            "    outputs['y'] tensor_info:\n"
            "        dtype: DT_FLOAT\n"
            "        shape: ()\n"
            "        name: y:0\n"
            "  Method name is: tensorflow/serving/predict\n"
            "\n"
            "signature_def['tensorflow/serving/regress']:\n"
            "  The given SavedModel SignatureDef contains the following input(s):\n"
            "    inputs['inputs'] tensor_info:\n"
            "        dtype: DT_FLOAT\n"
            "        shape: ()\n"
            "        name: tf_example:0\n"
            "  The given SavedModel SignatureDef contains the following output(s):\n"
            "    outputs['outputs'] tensor_info:\n"
            "        dtype: DT_FLOAT\n"
            "        shape: ()\n"
            "        name: Identity:0\n"
            "  Method name is: tensorflow/serving/regress\n"
            "\n");
  const Json j = SavedModelJson(s->info());
  EXPECT_EQ(j["meta_graphs"][0]["signatures"]["serving_default"]["inputs"]["x"]["dtype"],
            "DT_FLOAT");
}

TEST(TfSavedModelTest, OpenThroughTheFormatTable) {
  MP_SKIP_WITHOUT_GOLDEN();
  const fs::path version = GoldenModel("saved_model_half_plus_two_cpu");
  for (const fs::path& p : {version, version / "saved_model.pb"}) {
    auto f = DetectFormat(p.string());
    ASSERT_TRUE(f.has_value()) << f.status().ToString();
    EXPECT_EQ((*f)->name, "saved_model") << p;
    auto m = OpenModel(p.string());
    ASSERT_TRUE(m.has_value()) << m.status().ToString();
    EXPECT_EQ((*m)->format(), "saved_model");
    EXPECT_EQ((*m)->tensors().size(), 5u);
  }
  // The TF Serving base folder: the highest numeric version, said in the notes.
  auto base = OpenModel(GoldenBase("saved_model_half_plus_two_cpu").string());
  ASSERT_TRUE(base.has_value()) << base.status().ToString();
  ASSERT_FALSE((*base)->notes().empty());
  EXPECT_NE((*base)->notes()[0].find("00000123"), std::string::npos);
  const auto pb = ReadBytes((version / "saved_model.pb").string());
  EXPECT_TRUE(DetectSavedModel({pb.data(), kSavedModelDetectBytes}, pb.size()));
}

// A fresh weights model holding `values` for the f32 scalars `names`.
std::unique_ptr<Model> Weights(const std::vector<std::pair<std::string, float>>& values) {
  auto m = std::make_unique<Model>();
  for (const auto& [name, v] : values) {
    std::vector<uint8_t> bytes(4);
    std::memcpy(bytes.data(), &v, 4);
    EXPECT_TRUE(m->Add(testing::BytesTensor(name, DType::kF32, {}, bytes)).ok());
  }
  return m;
}

TEST(TfSavedModelTest, SaveWithVariablesTf1) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir tmp;
  const fs::path src = GoldenModel("saved_model_half_plus_two_cpu");
  auto weights = Weights({{"a", 1.5f}, {"a2", -1.0f}, {"b", 4.0f}, {"c", 0.25f}, {"c2", 1e-3f}});
  auto out = SaveWithVariables(src.string(), *weights, tmp.File("serving"));
  ASSERT_TRUE(out.has_value()) << out.status().ToString();
  EXPECT_EQ(out->version_dir, tmp.File("serving/00000123"));
  EXPECT_EQ(ReadBytes(out->version_dir + "/saved_model.pb"),
            ReadBytes((src / "saved_model.pb").string()));
  EXPECT_EQ(ReadBytes(out->version_dir + "/assets/foo.txt"),
            ReadBytes((src / "assets/foo.txt").string()));
  auto back = OpenOrDie(out->version_dir);
  ASSERT_TRUE(back);
  EXPECT_EQ(ScalarOf(*back, "a"), 1.5f);
  EXPECT_EQ(ScalarOf(*back, "a2"), -1.0f);
  EXPECT_EQ(ScalarOf(*back, "b"), 4.0f);
  EXPECT_EQ(ScalarOf(*back, "c"), 0.25f);
  EXPECT_EQ(ScalarOf(*back, "c2"), 1e-3f);
  EXPECT_EQ(Keys(back->info().meta_graphs.at(0)).size(), 5u);
  // Only the version folder is left: no temporary folder beside it.
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.File("serving"))) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1u);

  // A second write to the same version is refused.
  auto again = SaveWithVariables(src.string(), *weights, tmp.File("serving"));
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  SaveWithVariablesOptions v7;
  v7.version = 7;
  auto seven = SaveWithVariables(src.string(), *weights, tmp.File("serving"), v7);
  ASSERT_TRUE(seven.has_value()) << seven.status().ToString();
  EXPECT_EQ(seven->version_dir, tmp.File("serving/7"));
  // TF Serving's base folder now resolves to the highest version.
  auto latest = SavedModelSource::Open(tmp.File("serving"), {});
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ((*latest)->dir(), tmp.File("serving/00000123"));  // 123 > 7
}

TEST(TfSavedModelTest, SaveWithVariablesTf2KeepsObjectGraph) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir tmp;
  const fs::path src = GoldenModel("saved_model_half_plus_two_tf2_cpu");
  auto weights = Weights({{"a/.ATTRIBUTES/VARIABLE_VALUE", 2.5f},
                          {"b/.ATTRIBUTES/VARIABLE_VALUE", -7.0f},
                          {"c/.ATTRIBUTES/VARIABLE_VALUE", 9.0f}});
  auto out = SaveWithVariables(src.string(), *weights, tmp.File("m"));
  ASSERT_TRUE(out.has_value()) << out.status().ToString();
  EXPECT_EQ(ReadBytes(out->version_dir + "/saved_model.pb"),
            ReadBytes((src / "saved_model.pb").string()));
  EXPECT_EQ(ReadBytes(out->version_dir + "/fingerprint.pb"),
            ReadBytes((src / "fingerprint.pb").string()));
  auto back = OpenOrDie(out->version_dir);
  auto orig = OpenOrDie(src);
  ASSERT_TRUE(back && orig);
  EXPECT_EQ(ScalarOf(*back, "a/.ATTRIBUTES/VARIABLE_VALUE"), 2.5f);
  EXPECT_EQ(ScalarOf(*back, "b/.ATTRIBUTES/VARIABLE_VALUE"), -7.0f);
  EXPECT_EQ(ScalarOf(*back, "c/.ATTRIBUTES/VARIABLE_VALUE"), 9.0f);
  // The object graph (a string tensor) is carried over byte for byte, checksum included.
  const auto find = [](const BundleSource& b, const std::string& name) -> const BundleEntry* {
    for (const auto& e : b.entries()) {
      if (e.name == name) return &e;
    }
    return nullptr;
  };
  const BundleEntry* old_graph = find(*orig->variables(), "_CHECKPOINTABLE_OBJECT_GRAPH");
  const BundleEntry* new_graph = find(*back->variables(), "_CHECKPOINTABLE_OBJECT_GRAPH");
  ASSERT_TRUE(old_graph && new_graph);
  EXPECT_EQ(new_graph->dtype, kDtString);
  EXPECT_EQ(new_graph->crc32c, old_graph->crc32c);
  auto old_bytes = orig->variables()->RawBytes(*old_graph);
  auto new_bytes = back->variables()->RawBytes(*new_graph);
  ASSERT_TRUE(old_bytes.has_value() && new_bytes.has_value());
  EXPECT_TRUE(std::equal((*old_bytes)->span().begin(), (*old_bytes)->span().end(),
                         (*new_bytes)->span().begin(), (*new_bytes)->span().end()));
}

TEST(TfSavedModelTest, SaveWithVariablesChecksNamesDtypesShapes) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir tmp;
  const std::string src = GoldenModel("saved_model_half_plus_three").string();
  // Missing variables.
  auto partial = Weights({{"a", 1.0f}});
  auto missing = SaveWithVariables(src, *partial, tmp.File("o"));
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.status().message(),
            "2 variable(s) have no tensor in the new weights: 'b', 'c'");
  EXPECT_FALSE(fs::exists(tmp.File("o/00000123")));
  SaveWithVariablesOptions allow;
  allow.allow_missing = true;
  auto kept = SaveWithVariables(src, *partial, tmp.File("o"), allow);
  ASSERT_TRUE(kept.has_value()) << kept.status().ToString();
  auto back = OpenOrDie(kept->version_dir);
  ASSERT_TRUE(back);
  EXPECT_EQ(ScalarOf(*back, "a"), 1.0f);
  EXPECT_EQ(ScalarOf(*back, "b"), 3.0f);  // kept
  EXPECT_EQ(kept->replaced, std::vector<std::string>{"a"});
  EXPECT_EQ(kept->kept, (std::vector<std::string>{"b", "c"}));
  EXPECT_TRUE(kept->unused.empty());

  // Unused tensors.
  auto extra = Weights({{"a", 1.0f}, {"b", 1.0f}, {"c", 1.0f}, {"zzz", 1.0f}});
  auto unused = SaveWithVariables(src, *extra, tmp.File("p"));
  EXPECT_EQ(unused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(unused.status().message(),
            "1 new tensor(s) match no variable of the SavedModel: 'zzz'");
  SaveWithVariablesOptions ignore;
  ignore.allow_unused = true;
  auto ignored = SaveWithVariables(src, *extra, tmp.File("p"), ignore);
  ASSERT_TRUE(ignored.has_value()) << ignored.status().ToString();
  EXPECT_EQ(ignored->replaced, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ignored->unused, std::vector<std::string>{"zzz"});

  // Wrong dtype and wrong shape.
  Model wrong;
  ASSERT_TRUE(wrong.Add(testing::PatternTensor("a", DType::kF64, {}, 1)).ok());
  ASSERT_TRUE(wrong.Add(testing::PatternTensor("b", DType::kF32, {2}, 1)).ok());
  ASSERT_TRUE(wrong.Add(testing::PatternTensor("c", DType::kF32, {}, 1)).ok());
  auto mismatch = SaveWithVariables(src, wrong, tmp.File("q"));
  EXPECT_EQ(mismatch.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(mismatch.status().message(),
            "new weights do not match the SavedModel's variables: 'a' is DT_FLOAT [], new "
            "tensor is f64 [], 'b' is DT_FLOAT [], new tensor is f32 [2]");
  EXPECT_FALSE(fs::exists(tmp.File("q")));
}

TEST(TfSavedModelTest, HostileSavedModelPb) {
  MP_SKIP_WITHOUT_GOLDEN();
  const auto pb =
      ReadBytes((GoldenModel("saved_model_half_plus_two_cpu") / "saved_model.pb").string());
  // Every truncation either parses (a prefix can be a valid message) or fails cleanly.
  size_t failures = 0;
  for (size_t n = 0; n < pb.size(); n += 7) {
    auto r = ParseSavedModel({pb.data(), n});
    if (!r) ++failures;
  }
  EXPECT_GT(failures, 0u);
  auto cut = ParseSavedModel({pb.data(), 100});
  ASSERT_FALSE(cut.has_value());
  EXPECT_EQ(cut.status().code(), StatusCode::kCorrupt);
  EXPECT_EQ(ParseSavedModel({}).status().message(), "SavedModel holds no MetaGraphDef");
  std::vector<uint8_t> damaged = pb;
  for (size_t i = 0; i < damaged.size(); i += 13) {
    damaged[i] ^= 0x5a;
    (void)ParseSavedModel({damaged.data(), damaged.size()});
  }
}

}  // namespace
}  // namespace mp::tf
