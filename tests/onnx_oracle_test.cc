// onnx (Debian's python3-onnx 1.12) and torch 1.13 as the oracle for the ONNX reader: every
// initializer modelport reads equals onnx.numpy_helper.to_array bit for bit, for every element
// type in raw_data and in the typed fields, for torch.onnx.export models inline and with
// external data (one file, one file per tensor), for the golden files from onnx 1.23 / torch
// 2.11, and for every model in Debian's libonnx-testdata. The graph inspect shows (inputs,
// outputs, opsets, op counts) matches what onnx reads. The python side is
// tests/oracle/onnx_models.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "modelport/formats/format.h"
#include "modelport/formats/onnx/onnx.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::kIoModes;
using testing::ReadBytes;
using testing::TempDir;

#define MP_SKIP_WITHOUT_ONNX()           \
  if (!testing::PythonHas("onnx numpy")) \
  GTEST_SKIP() << "/usr/bin/python3 cannot import onnx and numpy (apt-get install python3-onnx)"

constexpr char kTestData[] = "/usr/share/libonnx-testdata/data";

std::string Quote(const std::string& s) { return "'" + s + "'"; }

CommandResult OnnxOracle(const std::string& args) {
  const std::string script = (testing::SourceDir() / "tests/oracle/onnx_models.py").string();
  return testing::Run("/usr/bin/python3 " + Quote(script) + " " + args);
}

nlohmann::json ReadJson(const std::string& path) {
  const std::vector<uint8_t> text = ReadBytes(path);
  return nlohmann::json::parse(text.begin(), text.end());
}

std::string PathOf(const std::string& dir, const std::string& file) {
  return fs::path(file).is_absolute() ? file : dir + "/" + file;
}

/// Every manifest entry reads exactly (both I/O modes, Load and LoadInto), and each file holds
/// exactly the manifest's initializers; counts the tensors checked in *checked.
void ExpectManifestReadsExactly(const std::string& dir, const nlohmann::json& manifest,
                                size_t* checked) {
  std::map<std::string, std::vector<const nlohmann::json*>> by_file;
  for (const auto& e : manifest) by_file[e.at("file").get<std::string>()].push_back(&e);
  for (const auto& [file, entries] : by_file) {
    const std::string path = PathOf(dir, file);
    SCOPED_TRACE(path);
    for (IoMode mode : kIoModes) {
      ReadOptions o;
      o.io_mode = mode;
      auto source = OpenModel(path, o);
      const bool unsupported = entries[0]->contains("unsupported");
      if (unsupported) {
        EXPECT_EQ(source.status().code(), StatusCode::kUnsupported) << source.status().ToString();
        EXPECT_NE(source.status().message().find(entries[0]->at("name").get<std::string>()),
                  std::string::npos)
            << source.status().message();
        continue;
      }
      ASSERT_TRUE(source.ok()) << source.status().ToString();
      EXPECT_EQ((*source)->format(), "onnx");
      EXPECT_EQ((*source)->tensors().size(), entries.size());
      for (const nlohmann::json* e : entries) {
        const std::string name = e->at("name").get<std::string>();
        SCOPED_TRACE(name);
        auto index = (*source)->Find(name);
        ASSERT_TRUE(index.has_value()) << "no tensor named " << name;
        const TensorInfo& info = (*source)->tensors()[*index];
        EXPECT_EQ(DTypeName(info.dtype), e->at("dtype").get<std::string>());
        EXPECT_EQ(info.shape.dims(), e->at("shape").get<std::vector<uint64_t>>());
        const std::vector<uint8_t> want = ReadBytes(dir + "/" + e->at("raw").get<std::string>());
        auto view = (*source)->Load(*index);
        ASSERT_TRUE(view.ok()) << view.status().ToString();
        EXPECT_EQ(std::vector<uint8_t>(view->bytes().begin(), view->bytes().end()), want);
        std::vector<uint8_t> into(info.byte_size);
        ASSERT_TRUE((*source)->LoadInto(*index, into).ok());
        EXPECT_EQ(into, want);
        if (mode == IoMode::kMmap) ++*checked;
      }
    }
  }
}

/// The graph modelport reports matches what onnx read (graphs.json from `dump`).
void ExpectGraphsMatch(const std::string& dir, const nlohmann::json& graphs) {
  for (const auto& g : graphs) {
    const std::string path = PathOf(dir, g.at("file").get<std::string>());
    SCOPED_TRACE(path);
    auto source = onnx::Open(path, {});
    if (!source.ok() && source.status().code() == StatusCode::kUnsupported) continue;
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    const auto* o = dynamic_cast<const onnx::OnnxSource*>(source->get());
    ASSERT_NE(o, nullptr);
    const onnx::GraphInfo& info = o->graph_info();
    const nlohmann::json& want = g.at("graph");
    EXPECT_EQ(info.ir_version, want.at("ir_version").get<int64_t>());
    EXPECT_EQ(info.producer_name, want.at("producer_name").get<std::string>());
    EXPECT_EQ(info.producer_version, want.at("producer_version").get<std::string>());
    EXPECT_EQ(info.node_count, want.at("node_count").get<uint64_t>());
    std::map<std::string, uint64_t> ops(info.op_counts.begin(), info.op_counts.end());
    EXPECT_EQ(ops, (want.at("op_counts").get<std::map<std::string, uint64_t>>()));
    std::map<std::string, int64_t> opsets(info.opsets.begin(), info.opsets.end());
    EXPECT_EQ(opsets, (want.at("opset_import").get<std::map<std::string, int64_t>>()));
    auto values = [](const std::vector<onnx::ValueInfo>& list) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& v : list) {
        out.push_back(
            {{"name", v.name}, {"shape", v.has_shape ? nlohmann::json(v.dims) : nlohmann::json()}});
      }
      return out;
    };
    auto names_and_shapes = [](const nlohmann::json& list) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& v : list) out.push_back({{"name", v.at("name")}, {"shape", v.at("shape")}});
      return out;
    };
    EXPECT_EQ(values(info.inputs), names_and_shapes(want.at("inputs")));
    EXPECT_EQ(values(info.outputs), names_and_shapes(want.at("outputs")));
    std::map<std::string, std::string> props(info.metadata_props.begin(),
                                             info.metadata_props.end());
    EXPECT_EQ(props, (want.at("metadata_props").get<std::map<std::string, std::string>>()));
  }
}

TEST(OnnxOracle, EveryDTypeAndTorchExportReadExactly) {
  MP_SKIP_WITHOUT_ONNX();
  if (!testing::PythonHas("torch")) GTEST_SKIP() << "/usr/bin/python3 cannot import torch";
  TempDir dir;
  const std::string d = dir.path().string();
  CommandResult made = OnnxOracle("make " + Quote(d));
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  const nlohmann::json manifest = ReadJson(d + "/manifest.json");
  // 18 element-type tensors twice (raw, typed) and the torch model three ways.
  EXPECT_GE(manifest.size(), 36u + 3 * 6);
  size_t checked = 0;
  ExpectManifestReadsExactly(d, manifest, &checked);
  EXPECT_EQ(checked, manifest.size());

  // The typed-field model really uses the typed fields: its tensors are decoded (not views).
  auto typed = OpenModel(d + "/dtypes_typed.onnx");
  ASSERT_TRUE(typed.ok()) << typed.status().ToString();
  const Json& meta = (*typed)->metadata();
  EXPECT_EQ(meta.at("onnx.producer_name"), "oracle");
  EXPECT_EQ(meta.at("author"), "modelport tests");
  EXPECT_EQ(meta.at("license"), "MIT");
  EXPECT_EQ(meta.at("onnx.graph_name"), "dtypes");

  // External data: the files behind the model are listed, once each.
  auto one = OpenModel(d + "/torch_one.onnx");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ((*one)->files().files,
            (std::vector<std::string>{d + "/torch_one.onnx", d + "/torch_one.weights"}));
  auto many = OpenModel(d + "/many/model.onnx");
  ASSERT_TRUE(many.ok()) << many.status().ToString();
  EXPECT_EQ((*many)->files().files.size(), 1 + (*many)->tensors().size());
}

TEST(OnnxOracle, ConvertToSafetensorsKeepsNamesAndGraphMetadata) {
  MP_SKIP_WITHOUT_ONNX();
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  const std::string src = (testing::GoldenDir() / "onnx/mlp_opset17_external.onnx").string();
  const std::string dst = dir.File("weights.safetensors");
  CommandResult r = testing::RunCli("convert " + Quote(src) + " " + Quote(dst));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto onnx_model = OpenModel(src);
  auto st = OpenModel(dst);
  ASSERT_TRUE(onnx_model.ok() && st.ok());
  EXPECT_TRUE(testing::SameModel(**onnx_model, **st, /*compare_metadata=*/false));
  const testing::RawSafetensors raw = testing::ReadRawSafetensors(dst);
  const auto& m = raw.header.at("__metadata__");
  EXPECT_EQ(m.at("onnx.producer_name"), "pytorch");
  EXPECT_EQ(m.at("onnx.producer_version"), "2.11.0");
  EXPECT_EQ(m.at("onnx.ir_version"), "8");
  EXPECT_EQ(m.at("onnx.graph_name"), "main_graph");
  EXPECT_TRUE(raw.header.contains("0.weight"));
  EXPECT_TRUE(raw.header.contains("3.bias"));
}

TEST(OnnxOracle, GoldenModelsReadExactly) {
  MP_SKIP_WITHOUT_ONNX();
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  const std::string d = dir.path().string();
  const fs::path golden = testing::GoldenDir() / "onnx";
  CommandResult dumped =
      OnnxOracle("dump " + Quote(d) + " " + Quote((golden / "mlp_opset17.onnx").string()) + " " +
                 Quote((golden / "mlp_opset17_external.onnx").string()));
  ASSERT_EQ(dumped.exit_code, 0) << dumped.out << dumped.err;
  const nlohmann::json manifest = ReadJson(d + "/manifest.json");
  ASSERT_EQ(manifest.size(), 12u);
  size_t checked = 0;
  ExpectManifestReadsExactly(d, manifest, &checked);
  EXPECT_EQ(checked, 12u);
  ExpectGraphsMatch(d, ReadJson(d + "/graphs.json"));
  // Inline and external hold the same weights.
  auto inline_model = OpenModel((golden / "mlp_opset17.onnx").string());
  auto external = OpenModel((golden / "mlp_opset17_external.onnx").string());
  ASSERT_TRUE(inline_model.ok() && external.ok());
  EXPECT_TRUE(testing::SameModel(**inline_model, **external));
}

TEST(OnnxOracle, LibOnnxTestDataModelsReadExactly) {
  MP_SKIP_WITHOUT_ONNX();
  if (!fs::exists(kTestData)) GTEST_SKIP() << kTestData << " is absent (libonnx-testdata)";
  std::vector<std::string> models;
  for (const char* set : {"node", "pytorch-converted", "pytorch-operator", "simple"}) {
    for (const auto& entry : fs::directory_iterator(fs::path(kTestData) / set)) {
      const fs::path model = entry.path() / "model.onnx";
      if (fs::exists(model)) models.push_back(model.string());
    }
  }
  std::sort(models.begin(), models.end());
  ASSERT_GT(models.size(), 1000u);
  TempDir dir;
  const std::string d = dir.path().string();
  std::string args = "dump " + Quote(d);
  for (const auto& m : models) args += " " + Quote(m);
  CommandResult dumped = OnnxOracle(args);
  ASSERT_EQ(dumped.exit_code, 0) << dumped.out << dumped.err;
  const nlohmann::json manifest = ReadJson(d + "/manifest.json");
  size_t checked = 0;
  ExpectManifestReadsExactly(d, manifest, &checked);
  EXPECT_GT(checked, 50u);
  // Every model opens (or names the tensor it cannot read) and its graph matches onnx's.
  ExpectGraphsMatch(d, ReadJson(d + "/graphs.json"));
}

}  // namespace
}  // namespace mp
