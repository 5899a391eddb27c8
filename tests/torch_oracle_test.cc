// Debian's torch 1.13 (/usr/bin/python3) as the oracle for reading PyTorch checkpoints: it writes
// every kind (every dtype, views and slices, tied weights, nested training checkpoints, the
// legacy format, scripted and traced TorchScript), records what it holds, and modelport must
// read exactly that. The golden files of torch 2.11 and transformers 5.17 read exactly too.
// The python side is tests/oracle/torch_checkpoints.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/formats/format.h"
#include "modelport/formats/torch/torch.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::ReadBytes;
using testing::TempDir;

std::string Quote(const std::string& s) { return "'" + s + "'"; }

nlohmann::json ReadJson(const std::string& path) {
  const std::vector<uint8_t> text = ReadBytes(path);
  return nlohmann::json::parse(text.begin(), text.end());
}

// torch writes the checkpoints once for every test in this file.
class TorchCheckpoints : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!testing::PythonHas("torch numpy")) return;
    dir_ = new TempDir();
    const std::string script =
        (testing::SourceDir() / "tests/oracle/torch_checkpoints.py").string();
    made_ = new CommandResult(testing::Run("/usr/bin/python3 " + Quote(script) + " make " +
                                           Quote(dir_->path().string())));
  }
  static void TearDownTestSuite() {
    delete made_;
    delete dir_;
    made_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (dir_ == nullptr)
      GTEST_SKIP() << "/usr/bin/python3 cannot import torch numpy (apt-get install python3-torch)";
    ASSERT_EQ(made_->exit_code, 0) << made_->out << made_->err;
    manifest_ = ReadJson(dir_->path().string() + "/manifest.json");
  }
  std::string Path(const std::string& file) const { return dir_->path().string() + "/" + file; }

  // Opens a manifest case and checks every tensor torch recorded, bit for bit, in both I/O modes
  // and through both Load and LoadInto.
  void ExpectCaseReadsExactly(const std::string& name) {
    SCOPED_TRACE(name);
    const auto& c = manifest_.at(name);
    for (IoMode mode : testing::kIoModes) {
      ReadOptions options;
      options.io_mode = mode;
      options.select_key = c.at("key").get<std::string>();
      auto source = OpenModel(Path(c.at("file").get<std::string>()), options);
      ASSERT_TRUE(source.has_value()) << source.error().ToString();
      const ModelSource& s = **source;
      EXPECT_EQ(s.format(), "torch");
      const bool torchscript = c.at("torchscript").get<bool>();
      // Same tensors; the same order too, except TorchScript (module attribute order), which
      // may hold constants besides.
      std::vector<std::string> want, got;
      for (const auto& t : c.at("tensors")) want.push_back(t.at("name").get<std::string>());
      for (const auto& t : s.tensors())
        if (!torchscript || !t.name.starts_with("constants.")) got.push_back(t.name);
      if (torchscript) {
        std::sort(want.begin(), want.end());
        std::sort(got.begin(), got.end());
      }
      EXPECT_EQ(got, want);
      for (const auto& t : c.at("tensors")) {
        const std::string tname = t.at("name").get<std::string>();
        SCOPED_TRACE(tname);
        auto index = s.Find(tname);
        ASSERT_TRUE(index.has_value());
        const TensorInfo& info = s.tensors()[*index];
        EXPECT_EQ(DTypeName(info.dtype), t.at("dtype").get<std::string>());
        std::vector<uint64_t> shape = t.at("shape").get<std::vector<uint64_t>>();
        EXPECT_EQ(info.shape.dims(), shape);
        const std::vector<uint8_t> raw = ReadBytes(Path(t.at("raw").get<std::string>()));
        auto view = s.Load(*index);
        ASSERT_TRUE(view.has_value()) << view.error().ToString();
        EXPECT_EQ(std::vector<uint8_t>(view->bytes().begin(), view->bytes().end()), raw);
        std::vector<uint8_t> copy(info.byte_size);
        ASSERT_TRUE(s.LoadInto(*index, copy).ok());
        EXPECT_EQ(copy, raw);
      }
      const Json& meta = s.metadata();
      const auto& aliases = c.at("aliases");
      if (aliases.empty()) {
        EXPECT_FALSE(meta.contains(torch::kAliasesKey));
      } else {
        ASSERT_TRUE(meta.contains(torch::kAliasesKey)) << meta.dump();
        EXPECT_EQ(nlohmann::json::parse(meta.at(torch::kAliasesKey).dump()), aliases);
      }
      for (const auto& [key, value] : c.at("metadata").items()) {
        ASSERT_TRUE(meta.contains(key)) << key << " missing from " << meta.dump();
        EXPECT_EQ(nlohmann::json::parse(meta.at(key).dump()), value) << key;
      }
      bool says_torchscript = false;
      for (const auto& note : s.notes())
        if (note.starts_with("TorchScript archive")) says_torchscript = true;
      EXPECT_EQ(says_torchscript, torchscript);
    }
  }

  static TempDir* dir_;
  static CommandResult* made_;
  nlohmann::json manifest_;
};

TempDir* TorchCheckpoints::dir_ = nullptr;
CommandResult* TorchCheckpoints::made_ = nullptr;

TEST_F(TorchCheckpoints, EveryDTypeTorchHasReadsBitExactly) {
  ExpectCaseReadsExactly("every_dtype");
}

TEST_F(TorchCheckpoints, DeflatedAndZip64ArchivesReadBitExactly) {
  ExpectCaseReadsExactly("deflated");
  ExpectCaseReadsExactly("zip64");
}

TEST_F(TorchCheckpoints, BigEndianByteOrderIsSwapped) { ExpectCaseReadsExactly("big_endian"); }

TEST_F(TorchCheckpoints, LegacyFormatReadsBitExactly) { ExpectCaseReadsExactly("legacy"); }

TEST_F(TorchCheckpoints, ViewsSlicesAndStridesFollowTheStorage) {
  ExpectCaseReadsExactly("views");
  auto source = OpenModel(Path("views.pt"));
  ASSERT_TRUE(source.has_value());
  bool reported = false;
  for (const auto& note : (*source)->notes())
    if (note.find("different views of one storage") != std::string::npos) reported = true;
  EXPECT_TRUE(reported) << "views sharing one storage are not reported";
}

TEST_F(TorchCheckpoints, TiedWeightsAreKeptOnceAndRecorded) { ExpectCaseReadsExactly("tied"); }

TEST_F(TorchCheckpoints, NestedCheckpointFindsTheStateDictAndKeepsPlainValues) {
  ExpectCaseReadsExactly("nested");
  auto source = OpenModel(Path("nested.pt"));
  ASSERT_TRUE(source.has_value());
  std::string notes;
  for (const auto& note : (*source)->notes()) notes += note + "\n";
  EXPECT_NE(notes.find("'state_dict'"), std::string::npos) << notes;
  EXPECT_NE(notes.find("key 'optimizer' holds"), std::string::npos) << notes;
}

TEST_F(TorchCheckpoints, KeySelectsTheOptimizerState) {
  ExpectCaseReadsExactly("nested_optimizer");
}

TEST_F(TorchCheckpoints, UnknownKeyIsNotFoundAndNamesTheKeys) {
  ReadOptions options;
  options.select_key = "nope";
  auto source = OpenModel(Path("nested.pt"), options);
  ASSERT_FALSE(source.has_value());
  EXPECT_EQ(source.error().code(), StatusCode::kNotFound);
  EXPECT_NE(source.error().message().find("'state_dict', 'optimizer', 'epoch'"), std::string::npos)
      << source.error().message();
}

TEST_F(TorchCheckpoints, ScriptedTorchScriptReadsWithoutRunningCode) {
  ExpectCaseReadsExactly("scripted");
}

TEST_F(TorchCheckpoints, TracedTorchScriptReadsWithConstants) {
  ExpectCaseReadsExactly("traced");
  auto source = OpenModel(Path("traced.pt"));
  ASSERT_TRUE(source.has_value());
  EXPECT_TRUE((*source)->Find("constants.0").has_value());
}

TEST_F(TorchCheckpoints, Complex128IsUnsupportedNotUnsafe) {
  auto source = OpenModel(Path("complex128.pt"));
  ASSERT_FALSE(source.has_value());
  EXPECT_EQ(source.error().code(), StatusCode::kUnsupported) << source.error().ToString();
  EXPECT_NE(source.error().message().find("ComplexDoubleStorage"), std::string::npos);
}

// .pt -> safetensors through the CLI, for every case: the safetensors file holds the same
// bytes, and tied weights keep their alias in the metadata.
TEST_F(TorchCheckpoints, ConvertToSafetensorsKeepsEveryBit) {
  TempDir out;
  for (const std::string name : {"every_dtype", "views", "tied", "nested", "legacy"}) {
    SCOPED_TRACE(name);
    const std::string dst = out.path().string() + "/" + name + ".safetensors";
    CommandResult r = testing::RunCli("convert " + Quote(Path(name + ".pt")) + " " + Quote(dst));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    auto a = OpenModel(Path(name + ".pt"));
    auto b = OpenModel(dst);
    ASSERT_TRUE(a.has_value() && b.has_value());
    EXPECT_TRUE(testing::SameModel(**a, **b, /*compare_metadata=*/false));
    EXPECT_EQ(AliasesOf(**a).value(), AliasesOf(**b).value());
  }
}

// ---------------------------------------------------------------------------------------------
// Golden files written by torch 2.11 and transformers 5.17

TEST(TorchGolden, CurrentTorchStateDictReadsExactly) {
  MP_SKIP_WITHOUT_GOLDEN();
  const fs::path dir = testing::GoldenDir() / "torch";
  const nlohmann::json expected =
      ReadJson((dir / "current_torch_state_dict.expected.json").string());
  auto source = OpenModel((dir / "current_torch_state_dict.pt").string());
  ASSERT_TRUE(source.has_value()) << source.error().ToString();
  SCOPED_TRACE(expected.dump());
  size_t compared = 0;
  for (const auto& [name, e] : expected.items()) {
    SCOPED_TRACE(name);
    std::string stored = name;
    const Json& aliases =
        (*source)->metadata().value(std::string(torch::kAliasesKey), Json::object());
    if (aliases.contains(name)) stored = aliases.at(name).get<std::string>();
    auto index = (*source)->Find(stored);
    ASSERT_TRUE(index.has_value()) << "no tensor " << stored;
    auto view = (*source)->Load(*index);
    ASSERT_TRUE(view.has_value());
    EXPECT_EQ(view->info.shape.dims(), e.at("shape").get<std::vector<uint64_t>>());
    const auto values = e.at("values").get<std::vector<double>>();
    std::vector<double> got(values.size());
    ASSERT_EQ(view->info.shape.NumElements().value(), values.size());
    ASSERT_TRUE(DecodeToF64(view->info.dtype, view->bytes().data(), got.size(), got.data()).ok());
    EXPECT_EQ(got, values);
    ++compared;
  }
  EXPECT_EQ(compared, 7u);
  EXPECT_EQ((*source)->metadata().at(std::string(torch::kAliasesKey)), Json({{"tied", "w"}}));
}

}  // namespace
}  // namespace mp

namespace mp {
namespace {

// The most requested conversion: transformers' pytorch_model.bin -> safetensors. The weights
// must equal transformers' own model.safetensors, with the tied lm_head recorded as an alias
// of wte (transformers' safetensors file leaves lm_head out for the same reason).
TEST(TorchGolden, PytorchModelBinConvertsToTransformersSafetensors) {
  MP_SKIP_WITHOUT_GOLDEN();
  const fs::path dir = testing::GoldenDir() / "transformers";
  TempDir out;
  const std::string dst = out.File("model.safetensors");
  CommandResult r =
      testing::RunCli("convert " + Quote((dir / "tiny-gpt2-bin" / "pytorch_model.bin").string()) +
                      " " + Quote(dst));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto ours = OpenModel(dst);
  auto theirs = OpenModel((dir / "tiny-gpt2-safetensors" / "model.safetensors").string());
  ASSERT_TRUE(ours.has_value() && theirs.has_value());
  EXPECT_TRUE(testing::SameModel(**theirs, **ours, /*compare_metadata=*/false));
  EXPECT_EQ(AliasesOf(**ours).value(), Json({{"lm_head.weight", "transformer.wte.weight"}}));
}

// Sharded .bin with its index -> sharded safetensors with its index, same tensors.
TEST(TorchGolden, ShardedBinConvertsToShardedSafetensors) {
  MP_SKIP_WITHOUT_GOLDEN();
  const fs::path src = testing::GoldenDir() / "transformers" / "tiny-gpt2-bin-sharded";
  TempDir out;
  CommandResult r =
      testing::RunCli("convert " + Quote(src.string()) + " " + Quote(out.path().string() + "/") +
                      " --to safetensors " + "--shard-size 200KB --json");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(fs::exists(out.File("model.safetensors.index.json"))) << r.out;
  auto a = OpenModel(src.string());
  auto b = OpenModel(out.path().string());
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ((*a)->files().files.size(), 3u);
  EXPECT_GT((*b)->files().files.size(), 1u);
  EXPECT_TRUE(testing::SameModel(**a, **b, /*compare_metadata=*/false));
}

TEST_F(TorchCheckpoints, InspectSaysTorchScriptAndListsNotes) {
  CommandResult r = testing::RunCli("inspect " + Quote(Path("traced.pt")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("TorchScript archive: its code"), std::string::npos) << r.out;
  r = testing::RunCli("inspect --json " + Quote(Path("tied.pt")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc.at("notes").size(), 1u) << r.out;
  EXPECT_NE(doc.at("notes")[0].get<std::string>().find("'head.weight' = 'emb.weight'"),
            std::string::npos);
}

TEST_F(TorchCheckpoints, ConvertWithKeyReadsTheChosenObject) {
  TempDir out;
  const std::string dst = out.File("momentum.safetensors");
  CommandResult r =
      testing::RunCli("convert --key optimizer " + Quote(Path("nested.pt")) + " " + Quote(dst));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto model = OpenModel(dst);
  ASSERT_TRUE(model.has_value());
  EXPECT_EQ((*model)->tensors().size(), manifest_.at("nested_optimizer").at("tensors").size());
  r = testing::RunCli("inspect --key nope " + Quote(Path("nested.pt")));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("no key 'nope'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mp
