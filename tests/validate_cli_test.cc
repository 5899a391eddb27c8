// `modelport validate` end to end: the MLP in tests/data (torch 2.11's export, with torch's own
// output as the expected values) through the reference evaluator; a changed expected value or
// weight fails naming the output; a byte flipped in a model file fails integrity; an f16 copy
// passes fidelity against its f32 source and fails an exact comparison; registry versions with
// attached samples, and the promotion gate that refuses a version failing them, on both
// registry backends.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>

#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "pg_server.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::RunCli;
using testing::TempDir;

std::string DataDir() { return (testing::SourceDir() / "tests/data/mlp-onnx").string(); }
std::string Mlp() { return DataDir() + "/model.onnx"; }
std::string X() { return DataDir() + "/x.npy"; }
std::string Y() { return DataDir() + "/y.npy"; }

// A copy of the .npy at `from` with float element `index` changed by `delta`.
void WriteNudgedNpy(const std::string& from, const std::string& to, size_t index, float delta) {
  std::vector<uint8_t> bytes = testing::ReadBytes(from);
  const uint16_t header = static_cast<uint16_t>(bytes[8] | (bytes[9] << 8));
  const size_t at = 10 + header + 4 * index;
  float v;
  std::memcpy(&v, bytes.data() + at, 4);
  v += delta;
  std::memcpy(bytes.data() + at, &v, 4);
  testing::WriteBytes(to, bytes);
}

TEST(ValidateCli, TheMlpReproducesTorchsOutput) {
  const CommandResult r =
      RunCli("validate '" + Mlp() + "' --samples '" + X() + "' --expected '" + Y() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("PASS  integrity"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("onnx checker"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PASS  inference  output 'y'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PASSED:"), std::string::npos) << r.out;

  const CommandResult j =
      RunCli("validate '" + Mlp() + "' --samples '" + X() + "' --expected '" + Y() + "' --json");
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const Json doc = Json::parse(j.out);
  EXPECT_EQ(doc.at("ok"), true);
  EXPECT_EQ(doc.at("format"), "onnx");
  bool saw_output = false;
  for (const Json& c : doc.at("checks")) {
    if (c.at("check") == "inference") {
      saw_output = true;
      EXPECT_EQ(c.at("subject"), "output 'y'");
      EXPECT_EQ(c.at("result"), "pass");
      EXPECT_LE(c.at("max_abs_error").get<double>(), 1e-5);
      EXPECT_EQ(c.at("backend"), "onnx reference evaluator");
    }
    if (c.at("subject").get<std::string>().starts_with("onnx checker")) {
      EXPECT_EQ(c.at("result"), "pass") << c.dump();
    }
  }
  EXPECT_TRUE(saw_output) << j.out;
}

TEST(ValidateCli, AChangedExpectedValueFailsNamingTheOutput) {
  TempDir dir;
  WriteNudgedNpy(Y(), dir.File("y.npy"), 5, 0.01f);
  const CommandResult r = RunCli("validate '" + Mlp() + "' --samples '" + X() + "' --expected '" +
                                 dir.File("y.npy") + "'");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL  inference  output 'y'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 of 12 values beyond tolerance"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("worst at flat index 5"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FAILED: 1 of"), std::string::npos) << r.out;
  // A looser tolerance for that output accepts it.
  const CommandResult loose = RunCli("validate '" + Mlp() + "' --samples '" + X() +
                                     "' --expected '" + dir.File("y.npy") + "' --atol y=0.02");
  EXPECT_EQ(loose.exit_code, 0) << loose.out << loose.err;
}

TEST(ValidateCli, AChangedWeightFailsInference) {
  TempDir dir;
  // The model's weights, one value of the first changed, put back with onnx set-weights.
  auto source = OpenModel(Mlp());
  ASSERT_TRUE(source.ok());
  auto all = LoadAll(**source);
  ASSERT_TRUE(all.ok());
  Model changed;
  for (size_t i = 0; i < (*all)->tensors().size(); ++i) {
    TensorView t = *(*all)->Load(i);
    if (i == 0) {
      std::vector<uint8_t> bytes(t.bytes().begin(), t.bytes().end());
      float v;
      std::memcpy(&v, bytes.data(), 4);
      v += 0.5f;
      std::memcpy(bytes.data(), &v, 4);
      t = testing::BytesTensor(t.info.name, t.info.dtype, t.info.shape, bytes);
    }
    ASSERT_TRUE(changed.Add(t).ok());
  }
  WriteOptions w;
  w.durable = false;
  ASSERT_TRUE(safetensors::Write(changed, dir.File("w.safetensors"), w).ok());
  ASSERT_EQ(RunCli("onnx set-weights '" + Mlp() + "' '" + dir.File("w.safetensors") + "' -o '" +
                   dir.File("changed.onnx") + "'")
                .exit_code,
            0);
  const CommandResult r = RunCli("validate '" + dir.File("changed.onnx") + "' --samples '" + X() +
                                 "' --expected '" + Y() + "'");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL  inference  output 'y'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("values beyond tolerance"), std::string::npos) << r.out;
}

TEST(ValidateCli, AFlippedByteFailsIntegrity) {
  TempDir dir;
  // External data carries an SHA-1 checksum per tensor when written with one; a sidecar
  // .sha256 covers any file.
  const std::string model = dir.File("model.onnx");
  fs::copy_file(Mlp(), model);
  fs::permissions(model, fs::perms::owner_write, fs::perm_options::add);
  const CommandResult sum =
      testing::Run("cd '" + dir.path().string() + "' && sha256sum model.onnx > model.onnx.sha256");
  ASSERT_EQ(sum.exit_code, 0) << sum.err;
  ASSERT_EQ(RunCli("validate '" + model + "'").exit_code, 0);
  // Flip a bit inside the first initializer's raw data (found by its bytes).
  std::vector<uint8_t> bytes = testing::ReadBytes(model);
  auto source = OpenModel(Mlp());
  ASSERT_TRUE(source.ok());
  auto first = (*source)->Load(0);
  ASSERT_TRUE(first.ok());
  const auto data = first->bytes();
  auto at = std::search(bytes.begin(), bytes.end(), data.begin(), data.end());
  ASSERT_NE(at, bytes.end());
  at[10] ^= 0x04;
  testing::WriteBytes(model, bytes);
  const CommandResult r = RunCli("validate '" + model + "' --json");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  const Json doc = Json::parse(r.out);
  EXPECT_EQ(doc.at("ok"), false);
  EXPECT_EQ(doc.at("checks")[0].at("check"), "integrity");
  EXPECT_EQ(doc.at("checks")[0].at("result"), "fail");
  EXPECT_NE(doc.at("checks")[0].at("detail").get<std::string>().find("recorded in"),
            std::string::npos);
}

TEST(ValidateCli, AnF16CopyPassesFidelityAndFailsExact) {
  TempDir dir;
  const std::string f32 =
      (testing::SourceDir() / "tests/data/tiny-gpt2/model.safetensors").string();
  ASSERT_EQ(
      RunCli("convert '" + f32 + "' '" + dir.File("f16.safetensors") + "' --dtype f16").exit_code,
      0);
  const CommandResult pass =
      RunCli("validate '" + dir.File("f16.safetensors") + "' --against '" + f32 + "'");
  EXPECT_EQ(pass.exit_code, 0) << pass.out << pass.err;
  EXPECT_NE(pass.out.find("tensors pass: rounded to f16 (0.5 ulp)"), std::string::npos) << pass.out;
  const CommandResult exact =
      RunCli("validate '" + dir.File("f16.safetensors") + "' --against '" + f32 + "' --exact");
  EXPECT_EQ(exact.exit_code, 1) << exact.out << exact.err;
  EXPECT_NE(exact.out.find("dtype f16 vs f32 (exact comparison)"), std::string::npos) << exact.out;
}

TEST(ValidateCli, UsageErrors) {
  EXPECT_EQ(RunCli("validate '" + Mlp() + "' --samples '" + X() + "'").exit_code, 2);
  EXPECT_EQ(RunCli("validate '" + Mlp() + "' --atol 1e-3").exit_code, 2);
  const CommandResult bad = RunCli("validate '" + Mlp() + "' --samples '" + X() + "' --expected '" +
                                   Y() + "' --atol y=abc");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--atol abc: expected a finite number >= 0"), std::string::npos)
      << bad.err;
  TempDir dir;
  const CommandResult missing =
      RunCli("validate '" + dir.File("none.onnx") + "' --registry '" + dir.File("reg") + "'");
  EXPECT_EQ(missing.exit_code, 3) << missing.err;
  const CommandResult missing_json = RunCli("validate '" + dir.File("none.onnx") +
                                            "' --json --registry '" + dir.File("reg") + "'");
  EXPECT_EQ(missing_json.exit_code, 3);
  const Json doc = Json::parse(missing_json.out);
  EXPECT_EQ(doc.at("ok"), false);
  EXPECT_EQ(doc.at("error").at("code"), "NotFound");
  // A weights-only format has nothing to run.
  const std::string st = (testing::SourceDir() / "tests/data/tiny-gpt2/model.safetensors").string();
  const CommandResult weights =
      RunCli("validate '" + st + "' --samples '" + X() + "' --expected '" + Y() + "'");
  EXPECT_EQ(weights.exit_code, 5) << weights.err;
  EXPECT_NE(weights.err.find("holds weights only"), std::string::npos) << weights.err;
}

class ValidateRegistryCli : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgresql") {
      std::string reason;
      db_ = testing::PostgresConninfo(&reason);
      if (db_.empty()) GTEST_SKIP() << reason;
    }
  }
  std::string Where() const {
    return " --registry '" + dir_.File("reg") + "'" + (db_.empty() ? "" : " --db '" + db_ + "'");
  }
  CommandResult Reg(const std::string& args) { return RunCli("registry " + args + Where()); }
  TempDir dir_;
  std::string db_;
};

TEST_P(ValidateRegistryCli, AttachedSamplesGateThePromotion) {
  ASSERT_EQ(Reg("init").exit_code, 0);
  WriteNudgedNpy(Y(), dir_.File("y.npy"), 0, 0.05f);
  const std::string good = " --samples '" + X() + "' --expected '" + Y() + "'";
  const std::string bad = " --samples '" + X() + "' --expected '" + dir_.File("y.npy") + "'";
  ASSERT_EQ(Reg("push mlp '" + Mlp() + "'" + good + " --atol 1e-5").exit_code, 0);
  ASSERT_EQ(Reg("push mlp '" + Mlp() + "'" + bad).exit_code, 0);

  // validate NAME@N runs the stored samples through the stored graph.
  CommandResult r = RunCli("validate mlp@1" + Where());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("PASS  integrity  blobs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PASS  inference  output 'y'"), std::string::npos) << r.out;
  r = RunCli("validate mlp@2" + Where());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL  inference  output 'y'"), std::string::npos) << r.out;

  // Without the policy anything promotes; with it, only what validates.
  r = Reg("policy mlp --require-validation on");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "mlp: promotion requires validation\n");
  r = Reg("promote mlp@2");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("promotion of mlp@2 refused: inference output 'y'"), std::string::npos)
      << r.err;
  EXPECT_NE(Reg("show mlp@production").exit_code, 0);
  r = Reg("promote mlp@1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const Json doc = Json::parse(r.out);
  EXPECT_EQ(doc.at("stage"), "production");
  EXPECT_EQ(doc.at("validation").at("ok"), true);
  r = Reg("policy mlp --require-validation maybe");
  EXPECT_EQ(r.exit_code, 2);
  ASSERT_EQ(Reg("policy mlp --require-validation off").exit_code, 0);
  EXPECT_EQ(Reg("promote mlp@2").exit_code, 0);

  // --against a registry version; a flipped bit in a stored blob fails integrity.
  r = RunCli("validate '" + Mlp() + "' --against mlp@1" + Where());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const auto& e : fs::recursive_directory_iterator(dir_.File("reg") + "/blobs")) {
    if (!e.is_regular_file() || e.file_size() != 32 * 16 * 4) continue;  // fc1's weight
    fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
    std::vector<uint8_t> bytes = testing::ReadBytes(e.path().string());
    bytes[7] ^= 0x01;
    testing::WriteBytes(e.path().string(), bytes);
  }
  r = RunCli("validate mlp@1" + Where());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL  integrity  blobs"), std::string::npos) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Backends, ValidateRegistryCli, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace mp
