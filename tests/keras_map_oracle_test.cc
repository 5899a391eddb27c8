// `modelport convert --map` end to end: the CLI's report and errors, and the cross-framework
// proof. Debian's torch builds three seeded networks (an MLP, a CNN with BatchNorm, an LSTM;
// tests/oracle/keras_map_models.py); modelport maps their state dicts to the Keras convention as
// a TensorFlow.js model, which TF.js (npm @tensorflow/tfjs, CPU backend, through
// tests/node/tfjs_run.mjs) loads into the equivalent network: its outputs equal torch's within
// 1e-4. Back: TF.js initialises the same networks at random and saves them; modelport maps those
// weights to a .pt that torch loads strictly and runs to TF.js's outputs within 1e-4.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "modelport/convert/keras_map.h"
#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::RunCli;
using testing::TempDir;

// The CLI's exit codes (cli_util.h).
constexpr int kExitUsage = 2;
constexpr int kExitNotFound = 3;
constexpr int kExitUnsupported = 5;

std::string Quote(const std::string& s) { return "'" + s + "'"; }

::testing::AssertionResult OneErrorLine(const CommandResult& r, const std::string& message) {
  const std::string want = "modelport: error: " + message + "\n";
  if (r.err != want) return ::testing::AssertionFailure() << "stderr: " << r.err;
  return ::testing::AssertionSuccess();
}

TensorView F32(const std::string& name, Shape shape) {
  return testing::PatternTensor(name, DType::kF32, std::move(shape), 7);
}

// A small torch-named state dict as safetensors.
std::string WriteTorchModel(const TempDir& dir, const std::string& file,
                            std::vector<TensorView> tensors) {
  Model model;
  for (auto& t : tensors) EXPECT_TRUE(model.Add(std::move(t)).ok());
  const std::string path = dir.File(file);
  EXPECT_TRUE(safetensors::Write(model, path, {}).ok());
  return path;
}

TEST(KerasMapCli, ReportTextAndJson) {
  TempDir dir;
  const std::string src = WriteTorchModel(
      dir, "t.safetensors",
      {F32("fc.weight", Shape{3, 2}), F32("fc.bias", Shape{3}), F32("bn.weight", Shape{3}),
       F32("bn.bias", Shape{3}), F32("bn.running_mean", Shape{3}), F32("bn.running_var", Shape{3}),
       F32("emb.weight", Shape{4, 2}), F32("extra", Shape{2})});
  const std::string dst = dir.File("k.safetensors");
  CommandResult r = RunCli("convert " + Quote(src) + " " + Quote(dst) +
                           " --map torch-to-keras --layer emb=embedding");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mapping torch-to-keras:\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fc.weight"), std::string::npos);
  EXPECT_NE(r.out.find("transpose [3, 2] -> [2, 3]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("unmapped (carried over unchanged): extra: no module prefix "
                       "(MODULE.PARAM)\n"),
            std::string::npos)
      << r.out;
  auto written = OpenModel(dst);
  ASSERT_TRUE(written.ok());
  std::vector<std::string> names;
  for (const auto& t : (*written)->tensors()) names.push_back(t.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names,
            (std::vector<std::string>{"bn/beta", "bn/gamma", "bn/moving_mean", "bn/moving_variance",
                                      "emb/embeddings", "extra", "fc/bias", "fc/kernel"}));

  r = RunCli("convert " + Quote(dst) + " " + Quote(dir.File("back.safetensors")) +
             " --map keras-to-torch --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json doc = Json::parse(r.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  EXPECT_EQ(doc["map"]["direction"], "keras-to-torch");
  EXPECT_EQ(doc["map"]["mapped"], 8);  // + bn.num_batches_tracked
  ASSERT_EQ(doc["map"]["unmapped"].size(), 1u);
  EXPECT_EQ(doc["map"]["unmapped"][0]["name"], "extra");
  EXPECT_EQ(doc["tensors"], 9);
}

TEST(KerasMapCli, Errors) {
  TempDir dir;
  const std::string emb = WriteTorchModel(dir, "e.safetensors", {F32("emb.weight", Shape{4, 2})});
  const std::string out = Quote(dir.File("o.safetensors"));
  CommandResult r = RunCli("convert " + Quote(emb) + " " + out + " --map torch-to-keras");
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_TRUE(OneErrorLine(r,
                           "module 'emb': a rank-2 weight [4, 2] without bias is a linear layer "
                           "without bias or an embedding: add --layer emb=linear or --layer "
                           "emb=embedding"));
  r = RunCli("convert " + Quote(emb) + " " + out + " --layer emb=embedding");
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_TRUE(OneErrorLine(r, "--layer and --map-file need --map torch-to-keras|keras-to-torch"));
  r = RunCli("convert " + Quote(emb) + " " + out + " --map torch-keras");
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_TRUE(OneErrorLine(r, "--map 'torch-keras': expected torch-to-keras or keras-to-torch"));
  r = RunCli("convert " + Quote(emb) + " " + out + " --map torch-to-keras --layer fc=linear");
  EXPECT_EQ(r.exit_code, kExitNotFound);
  EXPECT_TRUE(OneErrorLine(r, "--layer fc=linear: the model has no module 'fc'"));

  const std::string two =
      WriteTorchModel(dir, "l.safetensors",
                      {F32("rnn.weight_ih_l0", Shape{8, 3}), F32("rnn.weight_hh_l0", Shape{8, 2}),
                       F32("rnn.weight_ih_l1", Shape{8, 2}), F32("rnn.weight_hh_l1", Shape{8, 2})});
  r = RunCli("convert " + Quote(two) + " " + out + " --map torch-to-keras");
  EXPECT_EQ(r.exit_code, kExitUnsupported);
  EXPECT_TRUE(OneErrorLine(r,
                           "module 'rnn': tensor 'weight_hh_l1' belongs to a multi-layer or "
                           "bidirectional recurrent module, which is not mapped (use one torch "
                           "module per layer and direction)"));
  EXPECT_FALSE(fs::exists(dir.File("o.safetensors")));
}

// --map torch-to-keras into Keras H5 (both layouts modelport writes): modelport's own reader
// gives back the canonical Keras names and exactly the mapped values.
TEST(KerasMapCli, KerasH5Output) {
  if (!FindFormat("keras_h5").ok()) GTEST_SKIP() << "the keras_h5 format is not built in";
  TempDir dir;
  const std::string src = WriteTorchModel(
      dir, "t.safetensors",
      {F32("features.0.weight", Shape{4, 3, 3, 3}), F32("features.0.bias", Shape{4}),
       F32("features.1.weight", Shape{4}), F32("features.1.bias", Shape{4}),
       F32("features.1.running_mean", Shape{4}), F32("features.1.running_var", Shape{4}),
       F32("lstm.weight_ih_l0", Shape{8, 4}), F32("lstm.weight_hh_l0", Shape{8, 2}),
       F32("lstm.bias_ih_l0", Shape{8}), F32("lstm.bias_hh_l0", Shape{8}),
       F32("head.weight", Shape{3, 2}), F32("head.bias", Shape{3})});
  auto source = OpenModel(src);
  ASSERT_TRUE(source.ok());
  MapReport report;
  auto expected = MapLayers(**source, MapOptions{}, &report);
  ASSERT_TRUE(expected.ok()) << expected.error().message();
  std::vector<std::string> names;
  for (const auto& t : (*expected)->tensors()) names.push_back(t.name);
  std::sort(names.begin(), names.end());  // safetensors holds them sorted by name
  EXPECT_EQ(names, (std::vector<std::string>{
                       "features.0/bias", "features.0/kernel", "features.1/beta",
                       "features.1/gamma", "features.1/moving_mean", "features.1/moving_variance",
                       "head/bias", "head/kernel", "lstm/lstm_cell/bias", "lstm/lstm_cell/kernel",
                       "lstm/lstm_cell/recurrent_kernel"}));
  for (const char* file : {"model.weights.h5", "model.h5"}) {
    SCOPED_TRACE(file);
    const std::string dst = dir.File(file);
    CommandResult r = RunCli("convert " + Quote(src) + " " + Quote(dst) + " --map torch-to-keras");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto written = OpenModel(dst);
    ASSERT_TRUE(written.ok()) << written.error().message();
    EXPECT_EQ((*written)->format(), "keras_h5");
    EXPECT_TRUE(testing::SameModel(**expected, **written, /*compare_metadata=*/false));
    // And back to torch names from the H5 file.
    r = RunCli("convert " + Quote(dst) + " " + Quote(dst + ".safetensors") +
               " --map keras-to-torch --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Json doc = Json::parse(r.out, nullptr, false);
    EXPECT_TRUE(doc["map"]["unmapped"].empty()) << r.out;
    EXPECT_EQ(doc["tensors"], 13);  // + num_batches_tracked, LSTM's two biases from one
  }
}

// --- The cross-framework proof -----------------------------------------------------------------

std::string Script() {
  return (testing::SourceDir() / "tests/oracle/keras_map_models.py").string();
}

constexpr const char* kNetworks[] = {"mlp", "cnn", "lstm"};

TEST(KerasMapOracle, TorchAndTfjsAgreeBothWays) {
  if (!testing::PythonHas("torch numpy")) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch numpy (apt-get install python3-torch)";
  }
  MP_SKIP_WITHOUT_TFJS();
  if (!FindFormat("tfjs").ok()) GTEST_SKIP() << "the tfjs format is not built in";
  TempDir dir;
  const std::string root = dir.path().string();
  CommandResult made = testing::Run("/usr/bin/python3 " + Quote(Script()) + " make " + Quote(root));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  for (const char* name : kNetworks) {
    SCOPED_TRACE(name);
    const std::string d = root + "/" + name;
    CommandResult r = RunCli("convert " + Quote(d + "/model.pt") + " " + Quote(d + "/tfjs") +
                             " --to tfjs --map torch-to-keras --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Json doc = Json::parse(r.out, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << r.out;
    EXPECT_TRUE(doc["map"]["unmapped"].empty()) << doc["map"].dump();
    r = testing::RunTfjs(d + "/fwd.json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = testing::RunTfjs(d + "/rev.json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = RunCli("convert " + Quote(d + "/saved/model.json") + " " + Quote(d + "/back.pt") +
               " --map keras-to-torch --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Json back = Json::parse(r.out, nullptr, false);
    ASSERT_FALSE(back.is_discarded()) << r.out;
    EXPECT_TRUE(back["map"]["unmapped"].empty()) << back["map"].dump();
  }
  CommandResult checked =
      testing::Run("/usr/bin/python3 " + Quote(Script()) + " check " + Quote(root));
  EXPECT_EQ(checked.exit_code, 0) << checked.err;
  EXPECT_NE(checked.out.find("ok: 3 networks both ways"), std::string::npos) << checked.out;
}

}  // namespace
}  // namespace mp
