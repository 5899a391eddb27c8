// `modelport registry` end to end on the tiny GPT-2 in tests/data, on both backends (SQLite in
// the registry folder; a real PostgreSQL server through --db / MODELPORT_DB): every verb, its
// exit code and its --json, with the options before or after the verb and from the
// environment; exports read back equal to the original (safetensors, GGUF, ONNX), the folder's
// config files come back as assets, and bad references fail with one line and the documented
// code.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "modelport/formats/format.h"
#include "pg_server.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::TempDir;

class RegistryCli : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgresql") {
      std::string reason;
      db_ = testing::PostgresConninfo(&reason);
      if (db_.empty()) GTEST_SKIP() << reason;
    }
  }
  /// " --db '<conninfo>'" on PostgreSQL, "" on SQLite.
  std::string DbFlag() const { return db_.empty() ? "" : " --db '" + db_ + "'"; }
  CommandResult Reg(const std::string& args) {
    return testing::RunCli("registry " + args + " --registry '" + dir_.File("reg") + "'" +
                           DbFlag());
  }
  Json RegJson(const std::string& args) {
    const CommandResult r = Reg(args + " --json");
    EXPECT_EQ(r.exit_code, 0) << args << ": " << r.err;
    return r.exit_code == 0 ? Json::parse(r.out) : Json();
  }
  std::string Model() const { return (testing::SourceDir() / "tests/data/tiny-gpt2").string(); }
  TempDir dir_;
  std::string db_;
};

TEST_P(RegistryCli, EveryVerbEndToEnd) {
  ASSERT_EQ(Reg("init").exit_code, 0);
  ASSERT_EQ(Reg("init").exit_code, 0);  // a no-op on an existing registry
  Json v1 = RegJson("push gpt2 '" + Model() +
                    "' --metric acc=0.91 --param lr=3e-4 --tag base "
                    "--alias champion --label 1.0.0");
  EXPECT_EQ(v1.at("ref"), "gpt2@1");
  EXPECT_EQ(v1.at("metrics").at("acc"), 0.91);
  EXPECT_EQ(v1.at("aliases"), Json::array({"champion"}));
  Json v2 = RegJson("push gpt2 '" + Model() +
                    "/model.safetensors' --from gpt2@1 --relation "
                    "copied --command 'cp'");
  EXPECT_EQ(v2.at("version"), 2);
  EXPECT_EQ(v2.at("parent").at("model"), "gpt2");
  EXPECT_EQ(v2.at("parent").at("relation"), "copied");

  Json list = RegJson("list");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].at("versions"), 2);
  EXPECT_EQ(RegJson("list gpt2").size(), 2u);
  Json shown = RegJson("show gpt2@champion");
  EXPECT_EQ(shown.at("version"), 1);
  EXPECT_EQ(shown.at("tensor_list").size(), 28u);
  EXPECT_EQ(shown.at("assets").size(), 2u);  // config.json, generation_config.json
  EXPECT_EQ(RegJson("show gpt2@1.0.0").at("version"), 1);
  EXPECT_EQ(RegJson("latest gpt2").at("version"), 2);
  CommandResult latest = Reg("latest gpt2");
  EXPECT_EQ(latest.out, "gpt2@2\n");

  EXPECT_EQ(RegJson("promote gpt2@1").at("stage"), "production");
  CommandResult lost = Reg("promote gpt2@2 --expect 0");
  EXPECT_EQ(lost.exit_code, 6) << lost.err;
  EXPECT_NE(lost.err.find("production is @1, not none as expected"), std::string::npos) << lost.err;
  EXPECT_EQ(RegJson("promote gpt2@2 --expect 1").at("version"), 2);
  EXPECT_EQ(RegJson("rollback gpt2").at("version"), 1);
  EXPECT_EQ(Reg("archive gpt2@1").exit_code, 2);  // production
  EXPECT_EQ(RegJson("archive gpt2@2").at("stage"), "archived");
  EXPECT_EQ(RegJson("alias gpt2@2 staging").at("version"), 2);
  EXPECT_EQ(Reg("alias gpt2 staging --rm").exit_code, 0);
  EXPECT_EQ(Reg("show gpt2@staging").exit_code, 3);

  // Exports read back equal to what was pushed; --assets brings the config files along.
  const std::string st = dir_.File("out/model.safetensors");
  fs::create_directories(dir_.File("out"));
  ASSERT_EQ(Reg("export gpt2@production '" + st + "' --assets").exit_code, 0);
  EXPECT_TRUE(fs::exists(dir_.File("out/config.json")));
  EXPECT_EQ(testing::ReadBytes(dir_.File("out/config.json")),
            testing::ReadBytes(Model() + "/config.json"));
  auto original = OpenModel(Model() + "/model.safetensors");
  auto exported = OpenModel(st);
  ASSERT_TRUE(original.ok() && exported.ok());
  EXPECT_TRUE(testing::SameModel(**original, **exported));
  EXPECT_EQ(Reg("export gpt2@2 '" + st + "'").exit_code, 6);  // exists, no --force
  ASSERT_EQ(Reg("export gpt2@2 '" + dir_.File("m.gguf") + "'").exit_code, 0);
  auto gguf = OpenModel(dir_.File("m.gguf"));
  ASSERT_TRUE(gguf.ok());
  EXPECT_EQ((*gguf)->tensors().size(), 28u);

  // Storage: the second push of the same weights stored only its manifest.
  Json du = RegJson("du");
  EXPECT_EQ(du.at("versions"), 2);
  EXPECT_LT(du.at("stored_bytes").get<double>(), 0.6 * du.at("logical_bytes").get<double>());
  Json fsck = RegJson("fsck");
  EXPECT_EQ(fsck.at("clean"), true);
  Json log = RegJson("log gpt2 --limit 3");
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0].at("action"), "unalias");

  EXPECT_EQ(Reg("rm gpt2@1").exit_code, 2);  // production
  EXPECT_EQ(Reg("rm gpt2@2").exit_code, 0);
  Json gc = RegJson("gc --grace 0");
  EXPECT_GE(gc.at("removed_blobs").get<int>(), 1);
  EXPECT_EQ(RegJson("fsck").at("clean"), true);

  // Bad references: one line, documented codes.
  for (const std::string bad : {"show '../x'", "show 'gpt2@a/b'", "push 'a b' x"}) {
    CommandResult r = Reg(bad);
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_EQ(Reg("show nope").exit_code, 3);
  EXPECT_EQ(Reg("show gpt2@9").exit_code, 3);
}

TEST_P(RegistryCli, OptionsBeforeTheVerbAndFromTheEnvironment) {
  const std::string root = dir_.File("env-reg");
  std::string env = "MODELPORT_REGISTRY='" + root + "'";
  if (!db_.empty()) env += " MODELPORT_DB='" + db_ + "'";
  CommandResult r = testing::Run(env + " '" MODELPORT_CLI "' registry init");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::is_directory(root + "/blobs"));
  EXPECT_EQ(fs::exists(root + "/registry.db"), db_.empty());
  r = testing::RunCli("registry --registry '" + root + "'" + DbFlag() + " push m '" + Model() +
                      "'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = testing::Run(env + " '" MODELPORT_CLI "' registry latest m");
  EXPECT_EQ(r.out, "m@1\n") << r.err;
  r = testing::RunCli("registry --registry '" + dir_.File("missing") + "' list");
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("registry init"), std::string::npos) << r.err;
}

TEST_P(RegistryCli, FsckFindsAFlippedBitAndExitsOne) {
  ASSERT_EQ(Reg("init").exit_code, 0);
  ASSERT_EQ(Reg("push m '" + Model() + "/model.safetensors'").exit_code, 0);
  // The largest blob is a tensor; flip a bit in it.
  fs::path largest;
  uintmax_t size = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir_.File("reg/blobs"))) {
    if (e.is_regular_file() && e.file_size() > size) {
      size = e.file_size();
      largest = e.path();
    }
  }
  ASSERT_FALSE(largest.empty());
  fs::permissions(largest, fs::perms::owner_write, fs::perm_options::add);
  std::vector<uint8_t> bytes = testing::ReadBytes(largest.string());
  bytes[bytes.size() / 2] ^= 1;
  testing::WriteBytes(largest.string(), bytes);
  CommandResult r = Reg("fsck");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("NOT clean"), std::string::npos) << r.out;
  r = Reg("export m '" + dir_.File("x.safetensors") + "'");
  EXPECT_EQ(r.exit_code, 4) << r.err;  // checksum mismatch: rejected
  EXPECT_FALSE(fs::exists(dir_.File("x.safetensors")));
  r = Reg("export m '" + dir_.File("x.safetensors") + "' --no-verify");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_P(RegistryCli, OnnxVersionsKeepTheirGraphAndExportBackToOnnx) {
  ASSERT_EQ(Reg("init").exit_code, 0);
  const std::string mlp = (testing::SourceDir() / "tests/data/mlp-onnx/model.onnx").string();
  ASSERT_EQ(Reg("push mlp '" + mlp + "'").exit_code, 0);
  // Exported as ONNX (weights in out.onnx.data), then inlined again: the original, byte for
  // byte.
  const std::string out = dir_.File("out.onnx");
  CommandResult r = Reg("export mlp '" + out + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out + ".data"));
  r = testing::RunCli("onnx rewrite '" + out + "' -o '" + dir_.File("inline.onnx") + "' --inline");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(testing::ReadBytes(dir_.File("inline.onnx")), testing::ReadBytes(mlp));
  // A version pushed from a format without a graph cannot become ONNX.
  ASSERT_EQ(Reg("push gpt2 '" + Model() + "/model.safetensors'").exit_code, 0);
  r = Reg("export gpt2 '" + dir_.File("gpt2.onnx") + "'");
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_NE(r.err.find("has no ONNX graph"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_.File("gpt2.onnx")));
  EXPECT_EQ(RegJson("fsck").at("clean"), true);
}

TEST_P(RegistryCli, GoldenOnnxExportIsTorchsOwnExternalDataFile) {
  MP_SKIP_WITHOUT_GOLDEN();
  const fs::path golden = testing::GoldenDir() / "onnx";
  ASSERT_EQ(Reg("init").exit_code, 0);
  // The inline and the external export of the same weights: two versions, one set of tensors.
  ASSERT_EQ(Reg("push mlp '" + (golden / "mlp_opset17.onnx").string() + "'").exit_code, 0);
  ASSERT_EQ(Reg("push mlp '" + (golden / "mlp_opset17_external.onnx").string() + "'").exit_code, 0);
  for (const char* ref : {"mlp@1", "mlp@2"}) {
    const std::string dir = dir_.File(ref);
    fs::create_directories(dir);
    const std::string out = dir + "/mlp_opset17_external.onnx";
    CommandResult r = Reg(std::string("export ") + ref + " '" + out + "'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(testing::ReadBytes(out), testing::ReadBytes((golden / "mlp_opset17_external.onnx")));
    EXPECT_EQ(testing::ReadBytes(out + ".data"),
              testing::ReadBytes((golden / "mlp_opset17_external.onnx.data")));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, RegistryCli, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace mp
