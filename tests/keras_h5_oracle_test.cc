// Keras HDF5 against Debian's h5py (tests/oracle/keras_h5_check.py): files h5py writes exactly
// as Keras 2 and Keras 3 do read with the right names and values; files modelport writes read
// back in h5py with the exact Keras layout; hostile files are refused with one line.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "modelport/convert/cast.h"
#include "modelport/formats/keras/keras.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "modelport/formats/zip/zip.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::SameModel;
using testing::TempDir;

std::string Script() { return (testing::SourceDir() / "tests/oracle/keras_h5_check.py").string(); }

class KerasOracle : public ::testing::Test {
 protected:
  // One python run makes every input file the read tests use.
  static void SetUpTestSuite() {
    if (!testing::PythonHas("h5py numpy")) return;
    dir_ = new TempDir();
    made_ =
        testing::Run("/usr/bin/python3 '" + Script() + "' make '" + dir_->path().string() + "'");
    std::ifstream in(dir_->File("expect.json"));
    expect_ = nlohmann::json::parse(in, nullptr, false);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (dir_ == nullptr) GTEST_SKIP() << "/usr/bin/python3 lacks h5py or numpy";
    ASSERT_EQ(made_.exit_code, 0) << made_.out << made_.err;
  }
  static std::string File(const std::string& name) { return dir_->File(name); }

  /// `source` holds exactly the tensors expect.json lists for `file` (names, dtypes, shapes,
  /// values).
  static void ExpectTensors(const ModelSource& source, const std::string& file) {
    const nlohmann::json& want = expect_.at(file);
    ASSERT_EQ(source.tensors().size(), want.size()) << file;
    for (const auto& [name, spec] : want.items()) {
      SCOPED_TRACE(file + ": " + name);
      auto index = source.Find(name);
      ASSERT_TRUE(index.has_value());
      const TensorInfo& info = source.tensors()[*index];
      EXPECT_EQ(DTypeName(info.dtype), spec.at("dtype").get<std::string>());
      EXPECT_EQ(info.shape.dims(), spec.at("shape").get<std::vector<uint64_t>>());
      auto view = source.Load(*index);
      ASSERT_TRUE(view.ok()) << view.status().ToString();
      const auto values = spec.at("values").get<std::vector<double>>();
      std::vector<double> got(values.size());
      ASSERT_TRUE(DecodeToF64(info.dtype, view->bytes().data(), got.size(), got.data()).ok());
      EXPECT_EQ(got, values);
    }
  }
  static bool HasNote(const ModelSource& source, const std::string& part) {
    for (const std::string& n : source.notes()) {
      if (n.find(part) != std::string::npos) return true;
    }
    return false;
  }

  static TempDir* dir_;
  static testing::CommandResult made_;
  static nlohmann::json expect_;
};
TempDir* KerasOracle::dir_ = nullptr;
testing::CommandResult KerasOracle::made_;
nlohmann::json KerasOracle::expect_;

TEST_F(KerasOracle, ReadsKeras2FullModel) {
  for (IoMode mode : testing::kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto source = OpenModel(File("k2_full.h5"), options);
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    EXPECT_EQ((*source)->format(), "keras_h5");
    ExpectTensors(**source, "k2_full.h5");
    const Json& meta = (*source)->metadata();
    EXPECT_EQ(meta.at("keras.keras_version"), "2.13.1");
    EXPECT_EQ(meta.at("keras.backend"), "tensorflow");
    EXPECT_EQ(meta.at("keras.config").at("class_name"), "Sequential");
    EXPECT_EQ(meta.at("keras.training_config").at("loss"), "mse");
    EXPECT_TRUE(HasNote(**source, "optimizer_weights"));
    EXPECT_TRUE(HasNote(**source,
                        "layer 'lam' is a Lambda layer: its Python code is kept as "
                        "data, never run"));
    EXPECT_TRUE(HasNote(**source, "class 'Custom' comes from module 'evil.module': not imported"));
  }
}

TEST_F(KerasOracle, ReadsKeras2SaveWeights) {
  auto source = OpenModel(File("k2_weights.h5"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  ExpectTensors(**source, "k2_weights.h5");
  // Keras's own order: layer_names, then weight_names.
  EXPECT_EQ((*source)->tensors()[0].name, "dense/kernel");
  EXPECT_EQ((*source)->tensors()[1].name, "dense/bias");
}

TEST_F(KerasOracle, ReadsKeras3ByPathWithoutAConfig) {
  auto source = OpenModel(File("k3.weights.h5"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  const auto& t = (*source)->tensors();
  ASSERT_EQ(t.size(), 22u);
  EXPECT_EQ(t[0].name, "layers/bn/vars/0");
  EXPECT_TRUE((*source)->Find("layers/lstm/cell/vars/2").has_value());
  EXPECT_TRUE(HasNote(**source, "22 tensors are named by their HDF5 path"));
  // Numeric order: vars/9 before vars/10.
  const size_t nine = *(*source)->Find("layers/many/vars/9");
  EXPECT_EQ(t[nine + 1].name, "layers/many/vars/10");
}

TEST_F(KerasOracle, ReadsKerasArchiveWithCanonicalNames) {
  for (IoMode mode : testing::kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto source = OpenModel(File("k3.keras"), options);
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    EXPECT_EQ((*source)->format(), "keras");
    // Layers the config names get Keras names; "many" is not in the config: named by path.
    nlohmann::json want = expect_.at("k3.keras");
    nlohmann::json renamed = nlohmann::json::object();
    for (auto& [name, spec] : want.items()) {
      const std::string n = name.starts_with("many/w")
                                ? "layers/many/vars/" + name.substr(std::string("many/w").size())
                                : name;
      renamed[n] = spec;
    }
    expect_["k3.keras.renamed"] = renamed;
    ExpectTensors(**source, "k3.keras.renamed");
    EXPECT_EQ((*source)->metadata().at("keras.metadata").at("keras_version"), "3.3.3");
    EXPECT_TRUE(HasNote(**source, "Lambda layer"));
  }
}

TEST_F(KerasOracle, ChunkedDeflateBigEndianDataReads) {
  auto source = OpenModel(File("chunked_deflate.h5"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  auto index = (*source)->Find("layers/ok/vars/1");
  ASSERT_TRUE(index.has_value());
  auto view = (*source)->Load(*index);
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  ASSERT_EQ(view->info.dtype, DType::kF32);
  ASSERT_EQ(view->bytes().size(), 4000u);
  const float* f = reinterpret_cast<const float*>(view->bytes().data());
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(f[i], static_cast<float>(i)) << i;
}

TEST_F(KerasOracle, HostileFilesAreRefusedWithOneLine) {
  struct Case {
    std::string file;
    StatusCode code;
    std::string message;  // after "<path>: "
  };
  const Case cases[] = {
      {"hostile_external_link.h5", StatusCode::kUnsafe,
       "'layers/ok/vars/1': external link to another file refused (it would open that file)"},
      {"hostile_soft_link.h5", StatusCode::kUnsafe,
       "'layers/ok/vars/1': soft link refused (only hard links are followed)"},
      {"hostile_external_storage.h5", StatusCode::kUnsafe,
       "'layers/ok/vars/1': external storage refused (its data would come from other files)"},
      {"hostile_unknown_filter.h5", StatusCode::kUnsupported,
       "'layers/ok/vars/1': filter 200 ('Unknown library filter') refused: only HDF5's built-in "
       "deflate, shuffle and "
       "fletcher32 are read"},
      {"hostile_plugin_filter.h5", StatusCode::kUnsafe,
       "'layers/ok/vars/1': filter 32001 refused: only HDF5's built-in deflate, shuffle and "
       "fletcher32 are read (a filter plugin)"},
  };
  for (const Case& c : cases) {
    for (IoMode mode : testing::kIoModes) {
      ReadOptions options;
      options.io_mode = mode;
      const std::string path = File(c.file);
      auto source = keras::OpenH5(path, options);
      ASSERT_FALSE(source.ok()) << c.file;
      EXPECT_EQ(source.error().code(), c.code) << source.error().ToString();
      EXPECT_EQ(source.error().message(), path + ": " + c.message);
    }
  }
}

TEST_F(KerasOracle, ModelportFilesHaveTheExactKerasLayoutInH5py) {
  // The model of keras_h5_check.py's Model(), values by its formula.
  struct Spec {
    std::string name;
    DType dtype;
    Shape shape;
  };
  const std::vector<Spec> specs = {
      {"dense/kernel", DType::kF32, {4, 3}},
      {"dense/bias", DType::kF32, {3}},
      {"bn/gamma", DType::kF32, {3}},
      {"bn/beta", DType::kF32, {3}},
      {"bn/moving_mean", DType::kF32, {3}},
      {"bn/moving_variance", DType::kF32, {3}},
      {"lstm/lstm_cell/kernel", DType::kF32, {3, 8}},
      {"lstm/lstm_cell/recurrent_kernel", DType::kF32, {2, 8}},
      {"lstm/lstm_cell/bias", DType::kF32, {8}},
      {"emb/embeddings", DType::kF16, {5, 2}},
      {"counts/table", DType::kI64, {2, 2}},
      {"flags/mask", DType::kBool, {3}},
      {"scalar/step", DType::kF64, {}},
  };
  std::vector<TensorView> views;
  for (size_t k = 0; k < specs.size(); ++k) {
    const Spec& s = specs[k];
    auto info = TensorInfo::Make(s.name, s.dtype, s.shape);
    ASSERT_TRUE(info.ok());
    const uint64_t n = *s.shape.NumElements();
    auto buf = Buffer::Allocate(info->byte_size);
    ASSERT_TRUE(buf.ok());
    uint8_t* out = (*buf)->mutable_data();
    for (uint64_t i = 0; i < n; ++i) {
      const int64_t v = static_cast<int64_t>((i * 7 + k) % 13) - 6;
      switch (s.dtype) {
        case DType::kF32: {
          const float f = static_cast<float>(v) * 0.25f;
          std::memcpy(out + 4 * i, &f, 4);
          break;
        }
        case DType::kF64: {
          const double d = static_cast<double>(v) * 0.25;
          std::memcpy(out + 8 * i, &d, 8);
          break;
        }
        case DType::kF16: {
          const uint16_t h = F32ToF16(static_cast<float>(v) * 0.25f);
          std::memcpy(out + 2 * i, &h, 2);
          break;
        }
        case DType::kI64:
          std::memcpy(out + 8 * i, &v, 8);
          break;
        case DType::kBool:
          out[i] = v != 0;
          break;
        default:
          FAIL();
      }
    }
    views.push_back({*info, *buf});
  }
  Model ordered, shuffled;
  for (const TensorView& v : views) ASSERT_TRUE(ordered.Add(v).ok());
  // Keras 3: given in reverse, written in Keras's variable order.
  for (auto it = views.rbegin(); it != views.rend(); ++it) ASSERT_TRUE(shuffled.Add(*it).ok());
  ASSERT_TRUE(keras::WriteH5(ordered, File("out_k2.h5"), {}).ok());
  ASSERT_TRUE(keras::WriteH5(shuffled, File("out_k3.weights.h5"), {}).ok());
  auto r =
      testing::Run("/usr/bin/python3 '" + Script() + "' check '" + dir_->path().string() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "ok\n");
}

TEST_F(KerasOracle, SafetensorsThroughWeightsH5KeepsEveryByte) {
  auto k2 = OpenModel(File("k2_full.h5"));
  ASSERT_TRUE(k2.ok());
  const std::string st1 = File("rt1.safetensors"), h5 = File("rt.weights.h5"),
                    st2 = File("rt2.safetensors");
  ASSERT_TRUE(safetensors::Write(**k2, st1, {}).ok());
  auto from_st = OpenModel(st1);
  ASSERT_TRUE(from_st.ok());
  ASSERT_TRUE(keras::WriteH5(**from_st, h5, {}).ok());
  auto from_h5 = OpenModel(h5);
  ASSERT_TRUE(from_h5.ok()) << from_h5.status().ToString();
  ASSERT_TRUE(safetensors::Write(**from_h5, st2, {}).ok());
  auto back = OpenModel(st2);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(SameModel(**from_st, **back));
  EXPECT_EQ(testing::ReadBytes(st1), testing::ReadBytes(st2));
}

TEST_F(KerasOracle, KerasArchiveRoundTripKeepsConfig) {
  auto source = OpenModel(File("k3.keras"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  const std::string out = File("rt.keras");
  ASSERT_TRUE(keras::WriteKeras(**source, out, {}).ok());
  auto back = OpenModel(out);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(SameModel(**source, **back));
  // config.json: the same JSON as the original archive's.
  auto read_config = [](const std::string& path) {
    auto file = InputFile::Open(path);
    auto zip = zip::Reader::Open(*file);
    auto bytes = (*zip)->Read(*(*zip)->Find("config.json"));
    return nlohmann::json::parse((*bytes)->data(), (*bytes)->data() + (*bytes)->size());
  };
  EXPECT_EQ(read_config(out), read_config(File("k3.keras")));
}

}  // namespace
}  // namespace mp
