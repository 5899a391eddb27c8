// `modelport validate` on models Debian's torch 1.13 exports (tests/oracle/validate_models.py):
// an MLP, a CNN with BatchNorm and a TransformerEncoderLayer, each as ONNX (run by the reference
// evaluator) and as TorchScript (run by libtorch with --allow-torchscript), with torch's own
// outputs as the expected values. Both backends pass; one changed expected value or one changed
// weight fails, naming the output and the error.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "modelport/validate/torchscript.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::RunCli;

constexpr const char* kPython = "/usr/bin/python3";

// The fixtures, made once for the whole suite.
class ValidateOracle : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    if (!testing::PythonHas("torch numpy onnx")) return;
    dir_ = new testing::TempDir();
    const CommandResult r =
        testing::Run(std::string(kPython) + " '" +
                     (testing::SourceDir() / "tests/oracle/validate_models.py").string() + "' '" +
                     dir_->path().string() + "'");
    made_ = r.exit_code == 0;
    if (!made_) std::fprintf(stderr, "validate_models.py failed: %s\n", r.err.c_str());
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!testing::PythonHas("torch numpy onnx")) GTEST_SKIP() << "torch, numpy or onnx missing";
    ASSERT_TRUE(made_);
  }
  static std::string File(const std::string& name) { return dir_->File(name); }
  std::string Samples(const std::string& expected) const {
    return " --samples '" + File(GetParam() + ".inputs.npz") + "' --expected '" + expected + "'";
  }
  std::string Expected() const { return File(GetParam() + ".expected.npz"); }

  static testing::TempDir* dir_;
  static bool made_;
};
testing::TempDir* ValidateOracle::dir_ = nullptr;
bool ValidateOracle::made_ = false;

// numpy rewrites NAME.expected.npz with y[0, ..., 0] += delta.
std::string NudgedExpected(const std::string& from, const std::string& to, double delta) {
  const CommandResult r = testing::Run(
      std::string(kPython) + " -c \"import numpy as np; d = dict(np.load('" + from +
      "')); y = d['y']; y.flat[0] += " + std::to_string(delta) + "; np.savez('" + to + "', **d)\"");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return to;
}

TEST_P(ValidateOracle, TheOnnxExportReproducesTorch) {
  const CommandResult r =
      RunCli("validate '" + File(GetParam() + ".onnx") + "'" + Samples(Expected()));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("PASS  inference  output 'y'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PASS  schema     onnx checker"), std::string::npos) << r.out;
}

TEST_P(ValidateOracle, TheTorchScriptReproducesTorch) {
  if (!validate::TorchScriptAvailable()) GTEST_SKIP() << "built without libtorch";
  const CommandResult version = RunCli("--version");
  EXPECT_NE(version.out.find("TorchScript inference: libtorch plugin /"), std::string::npos)
      << version.out;
  const std::string pt = File(GetParam() + ".pt");
  CommandResult r = RunCli("validate '" + pt + "' --allow-torchscript" + Samples(Expected()));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("PASS  schema     torchscript: loads in libtorch"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("PASS  inference  output 'y'"), std::string::npos) << r.out;
  // Without the flag nothing of the archive's code runs: loading is skipped, running refused.
  r = RunCli("validate '" + pt + "'");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("SKIP  schema     torchscript: not loaded"), std::string::npos) << r.out;
  r = RunCli("validate '" + pt + "'" + Samples(Expected()));
  EXPECT_EQ(r.exit_code, 5) << r.out << r.err;
  EXPECT_NE(r.err.find("--allow-torchscript"), std::string::npos) << r.err;
}

TEST_P(ValidateOracle, AChangedExpectedValueFailsOnBothBackends) {
  const std::string bad = NudgedExpected(Expected(), File(GetParam() + ".bad.npz"), 0.25);
  CommandResult r = RunCli("validate '" + File(GetParam() + ".onnx") + "'" + Samples(bad));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL  inference  output 'y': 1 of "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("worst at flat index 0"), std::string::npos) << r.out;
  if (!validate::TorchScriptAvailable()) return;
  r = RunCli("validate '" + File(GetParam() + ".pt") + "' --allow-torchscript" + Samples(bad));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL  inference  output 'y': 1 of "), std::string::npos) << r.out;
}

TEST_P(ValidateOracle, AChangedWeightFailsOnBothBackends) {
  // ONNX: the first value of the first float initializer with more than one value changed,
  // written to safetensors and put back with set-weights.
  const std::string weights = File(GetParam() + ".w.safetensors");
  {
    auto source = OpenModel(File(GetParam() + ".onnx"));
    ASSERT_TRUE(source.ok()) << source.error().message();
    Model model;
    bool changed_one = false;
    for (size_t i = 0; i < (*source)->tensors().size(); ++i) {
      auto t = LoadOwned(**source, i);
      ASSERT_TRUE(t.ok());
      if (!changed_one && t->info.dtype == DType::kF32 && t->info.byte_size > 4) {
        std::vector<uint8_t> bytes(t->bytes().begin(), t->bytes().end());
        float v;
        std::memcpy(&v, bytes.data(), 4);
        v += 0.5f;
        std::memcpy(bytes.data(), &v, 4);
        *t = testing::BytesTensor(t->info.name, t->info.dtype, t->info.shape, bytes);
        changed_one = true;
      }
      ASSERT_TRUE(model.Add(*t).ok());
    }
    ASSERT_TRUE(changed_one);
    WriteOptions w;
    w.durable = false;
    ASSERT_TRUE(safetensors::Write(model, weights, w).ok());
  }
  const std::string changed = File(GetParam() + ".changed.onnx");
  ASSERT_EQ(RunCli("onnx set-weights '" + File(GetParam() + ".onnx") + "' '" + weights + "' -o '" +
                   changed + "' --force")
                .exit_code,
            0);
  CommandResult r = RunCli("validate '" + changed + "'" + Samples(Expected()));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL  inference  output 'y'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("values beyond tolerance; max abs error"), std::string::npos) << r.out;
  if (!validate::TorchScriptAvailable()) return;
  // TorchScript: torch changes the first parameter and saves the archive again.
  const std::string pt = File(GetParam() + ".changed.pt");
  const CommandResult save = testing::Run(
      std::string(kPython) + " -c \"import torch; m = torch.jit.load('" + File(GetParam() + ".pt") +
      "'); p = next(m.parameters()); torch.no_grad().__enter__(); p.view(-1)[0] += 0.5; "
      "m.save('" +
      pt + "')\"");
  ASSERT_EQ(save.exit_code, 0) << save.err;
  r = RunCli("validate '" + pt + "' --allow-torchscript" + Samples(Expected()));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL  inference  output 'y'"), std::string::npos) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Torch, ValidateOracle, ::testing::Values("mlp", "cnn", "transformer"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace mp
