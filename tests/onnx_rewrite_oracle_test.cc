// Models written by `modelport onnx rewrite` and `modelport onnx set-weights`, judged by the
// real tools: onnx 1.12's checker (tests/oracle/onnx_rewrite.py) must accept them, and
// onnxruntime (npm's onnxruntime-node, tests/node/ort_run.mjs) must compute from them exactly
// what it computes from the originals: the golden torch 2.11 exports, a torch 1.13 export,
// every libonnx-testdata model that has initializers, and a model past 2 GiB. set-weights is
// held to torch: the ONNX graph with fine-tuned weights dropped in computes what torch computes
// with them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "modelport/formats/format.h"
#include "modelport/formats/onnx/onnx.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::ReadBytes;
using testing::TempDir;

#define MP_SKIP_WITHOUT_ONNX()           \
  if (!testing::PythonHas("onnx numpy")) \
  GTEST_SKIP() << "/usr/bin/python3 cannot import onnx and numpy (apt-get install python3-onnx)"

std::string Quote(const std::string& s) { return "'" + s + "'"; }

CommandResult Oracle(const std::string& args) {
  const std::string script = (testing::SourceDir() / "tests/oracle/onnx_rewrite.py").string();
  return testing::Run("/usr/bin/python3 " + Quote(script) + " " + args);
}

/// onnx.checker.check_model accepts every model in `paths`.
void ExpectCheckerAccepts(const std::vector<std::string>& paths) {
  std::string args = "check";
  for (const auto& p : paths) args += " " + Quote(p);
  const CommandResult r = Oracle(args);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

/// Runs `model` in onnxruntime on `feeds`; returns output name -> .npy bytes.
std::map<std::string, std::vector<uint8_t>> RunModel(const std::string& model,
                                                     const std::vector<std::string>& feeds,
                                                     const std::string& out_dir) {
  fs::create_directories(out_dir);
  const CommandResult r = testing::RunOrt(model, out_dir, feeds);
  EXPECT_EQ(r.exit_code, 0) << model << ": " << r.err;
  std::map<std::string, std::vector<uint8_t>> out;
  if (r.exit_code != 0) return out;
  const Json doc = Json::parse(r.out);
  for (const auto& o : doc.at("outputs")) {
    out[o.at("name").get<std::string>()] = ReadBytes(o.at("file").get<std::string>());
  }
  EXPECT_FALSE(out.empty()) << model << ": " << r.out;
  return out;
}

/// numpy.allclose(a, b, rtol, atol) over two .npy files, as numpy itself judges it.
::testing::AssertionResult AllClose(const std::string& a, const std::string& b, double rtol,
                                    double atol) {
  const CommandResult r = testing::Run(
      "/usr/bin/python3 -c 'import sys, numpy as np; a, b = np.load(sys.argv[1]), "
      "np.load(sys.argv[2]); print(a.shape == b.shape and np.allclose(a, b, rtol=" +
      std::to_string(rtol) + ", atol=" + std::to_string(atol) +
      ") and \"same\" or \"differ %s\" % np.abs(a.astype(float) - b.astype(float)).max())' " +
      Quote(a) + " " + Quote(b));
  if (r.out.rfind("same", 0) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << a << " vs " << b << ": " << r.out << r.err;
}

/// The output file RunOrt wrote for output `name` (characters outside [A-Za-z0-9._-] as '_').
std::string OutputFile(const std::string& dir, std::string name) {
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  }
  return dir + "/" + name + ".npy";
}

/// Rewrites `model` external (every tensor outside) then back inline. Where the checker accepts
/// the original it must accept both, and where onnxruntime runs the original both must run to
/// identical outputs (old test models use opsets onnxruntime no longer runs: those must fail
/// alike). Returns whether onnxruntime ran the original.
bool ExpectRewritesRunTheSame(const std::string& model, const std::vector<std::string>& feeds,
                              const std::string& work) {
  SCOPED_TRACE(model);
  fs::create_directories(work);
  const std::string external = work + "/external.onnx", back = work + "/inline.onnx";
  CommandResult r = testing::RunCli("onnx rewrite " + Quote(model) + " -o " + Quote(external) +
                                    " --external-data --size-threshold 0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = testing::RunCli("onnx rewrite " + Quote(external) + " -o " + Quote(back) + " --inline");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return false;
  r = Oracle("check " + Quote(model) + " " + Quote(external) + " " + Quote(back));
  const Json checked = Json::parse(r.out.empty() ? "{}" : r.out);
  if (checked.value(model, "") == "ok") {
    EXPECT_EQ(checked.value(external, ""), "ok") << r.out;
    EXPECT_EQ(checked.value(back, ""), "ok") << r.out;
  }
  const std::string y0 = work + "/y0";
  fs::create_directories(y0);
  if (testing::RunOrt(model, y0, feeds).exit_code != 0) {
    for (const std::string& m : {external, back}) {
      fs::create_directories(work + "/y");
      EXPECT_NE(testing::RunOrt(m, work + "/y", feeds).exit_code, 0) << m;
    }
    return false;
  }
  const auto want = RunModel(model, feeds, y0);
  EXPECT_EQ(RunModel(external, feeds, work + "/y1"), want);
  EXPECT_EQ(RunModel(back, feeds, work + "/y2"), want);
  return true;
}

TEST(OnnxRewriteOracle, GoldenAndTorchExportsRunTheSameInOnnxruntime) {
  MP_SKIP_WITHOUT_ONNX();
  MP_SKIP_WITHOUT_ORT();
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  const fs::path golden = testing::GoldenDir() / "onnx";
  const std::string x = (golden / "mlp_opset17.x.npy").string();
  for (const char* name : {"mlp_opset17.onnx", "mlp_opset17_external.onnx"}) {
    const std::string work = dir.File(name);
    EXPECT_TRUE(ExpectRewritesRunTheSame((golden / name).string(), {"x=" + x}, work));
    // And they reproduce what torch 2.11 computed.
    EXPECT_TRUE(AllClose(OutputFile(work + "/y2", "y"), (golden / "mlp_opset17.y.npy").string(),
                         1e-5, 1e-6));
  }
}

TEST(OnnxRewriteOracle, SetWeightsComputesWhatTorchComputesWithThem) {
  MP_SKIP_WITHOUT_ONNX();
  MP_SKIP_WITHOUT_ORT();
  if (!testing::PythonHas("torch")) GTEST_SKIP() << "/usr/bin/python3 cannot import torch";
  TempDir dir;
  const std::string d = dir.path().string();
  CommandResult r = Oracle("tuned " + Quote(d));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string model = d + "/model.onnx";
  const std::vector<std::string> feeds = {"x=" + d + "/x.npy"};
  RunModel(model, feeds, d + "/y0");
  EXPECT_TRUE(AllClose(d + "/y0/y.npy", d + "/y.npy", 1e-5, 1e-5));

  // The fine-tuned state dict (a torch checkpoint) into the exported graph, inline and external.
  r = testing::RunCli("onnx set-weights " + Quote(model) + " " + Quote(d + "/tuned.pt") + " -o " +
                      Quote(d + "/tuned.onnx") + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).at("replaced").size(), 6u);
  r = testing::RunCli("onnx set-weights " + Quote(model) + " " + Quote(d + "/tuned.pt") + " -o " +
                      Quote(d + "/ext/tuned.onnx") + " --external-data");
  EXPECT_EQ(r.exit_code, 6) << r.err;  // the folder does not exist: nothing creates it
  fs::create_directory(d + "/ext");
  r = testing::RunCli("onnx set-weights " + Quote(model) + " " + Quote(d + "/tuned.pt") + " -o " +
                      Quote(d + "/ext/tuned.onnx") + " --external-data");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ExpectCheckerAccepts({d + "/tuned.onnx", d + "/ext/tuned.onnx"});
  for (const std::string& out : {d + "/tuned.onnx", d + "/ext/tuned.onnx"}) {
    const std::string ys = out + ".y";
    RunModel(out, feeds, ys);
    EXPECT_TRUE(AllClose(ys + "/y.npy", d + "/tuned_y.npy", 1e-5, 1e-5));
    EXPECT_FALSE(AllClose(ys + "/y.npy", d + "/y.npy", 1e-3, 1e-3));  // the weights changed
  }

  // A weight the graph lacks is an error unless allowed; nothing is written when refused.
  r = testing::RunCli("onnx set-weights " + Quote(model) + " " + Quote(d + "/extra.pt") + " -o " +
                      Quote(d + "/extra.onnx"));
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("1 new weight(s) match no initializer of the model ('head.weight')"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(d + "/extra.onnx"));
  r = testing::RunCli("onnx set-weights " + Quote(model) + " " + Quote(d + "/extra.pt") + " -o " +
                      Quote(d + "/extra.onnx") + " --allow-unused");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1 weight(s) matched no initializer and were left out"), std::string::npos)
      << r.out;
  r = testing::RunCli("onnx set-weights " + Quote(model) + " " + Quote(d + "/tuned.onnx") + " -o " +
                      Quote(d + "/extra.onnx"));
  EXPECT_EQ(r.exit_code, 6) << r.err;  // extra.onnx exists and --force was not given
  EXPECT_NE(r.err.find("already exists (use --force"), std::string::npos) << r.err;
  r = testing::RunCli("onnx set-weights " + Quote(model) + " " + Quote(d + "/wrong.pt") + " -o " +
                      Quote(d + "/bad.onnx"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("initializer 'fc.bias' is f32 [10] but the new weights give f32 [11]"),
            std::string::npos)
      << r.err;
  r = testing::RunCli("onnx set-weights " + Quote(model) + " " + Quote(d + "/x.npy") + " -o " +
                      Quote(d + "/bad.onnx"));
  EXPECT_EQ(r.exit_code, 3) << r.err;  // x.npy's one tensor has no initializer's name
  EXPECT_FALSE(fs::exists(d + "/bad.onnx"));
}

TEST(OnnxRewriteOracle, LibOnnxTestDataModelsRunTheSameInOnnxruntime) {
  MP_SKIP_WITHOUT_ONNX();
  MP_SKIP_WITHOUT_ORT();
  constexpr char kTestData[] = "/usr/share/libonnx-testdata/data";
  if (!fs::exists(kTestData)) GTEST_SKIP() << kTestData << " is absent (libonnx-testdata)";
  std::vector<std::string> models;
  for (const char* set : {"pytorch-converted", "pytorch-operator", "simple"}) {
    for (const auto& entry : fs::directory_iterator(fs::path(kTestData) / set)) {
      const std::string model = (entry.path() / "model.onnx").string();
      if (!fs::exists(model)) continue;
      auto source = OpenModel(model);
      if (source.ok() && !(*source)->tensors().empty()) models.push_back(model);
    }
  }
  std::sort(models.begin(), models.end());
  ASSERT_GE(models.size(), 40u);
  TempDir dir;
  std::string args = "feeds " + Quote(dir.path().string());
  for (const auto& m : models) args += " " + Quote(m);
  const CommandResult fed = Oracle(args);
  ASSERT_EQ(fed.exit_code, 0) << fed.err;
  const Json feeds = Json::parse(fed.out);
  EXPECT_GE(feeds.size(), 40u);
  size_t k = 0, ran = 0;
  for (const auto& [model, pairs] : feeds.items()) {
    ran += ExpectRewritesRunTheSame(model, pairs.get<std::vector<std::string>>(),
                                    dir.File("m" + std::to_string(k++)));
  }
  EXPECT_GE(ran, 30u) << "of " << feeds.size();
}

// Past protobuf's 2 GiB: a u8 weight of 2 GiB + 1 MiB in external data is rewritten into a new
// folder (aligned data file), passes the checker and runs in onnxruntime; inline is refused.
TEST(OnnxRewriteOracle, ModelPastTwoGiBRoundTripsThroughExternalData) {
  MP_SKIP_WITHOUT_ONNX();
  MP_SKIP_WITHOUT_ORT();
  TempDir dir;
  const std::string d = dir.path().string();
  const uint64_t bytes = (uint64_t{1} << 31) + (uint64_t{1} << 20);
  CommandResult r = Oracle("big " + Quote(d) + " " + std::to_string(bytes));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  fs::create_directory(d + "/out");
  const std::string out = d + "/out/big.onnx";
  r = testing::RunCli("onnx rewrite " + Quote(d + "/big.onnx") + " -o " + Quote(out) +
                      " --external-data --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json report = Json::parse(r.out);
  EXPECT_EQ(report.at("external_bytes"), bytes);
  EXPECT_EQ(report.at("inline_tensors"), 1);  // b: one byte, under the threshold
  EXPECT_EQ(fs::file_size(out + ".data"), bytes);
  // Every byte of the weight came across.
  EXPECT_EQ(testing::Run("cmp " + Quote(d + "/w.bin") + " " + Quote(out + ".data")).exit_code, 0);
  ExpectCheckerAccepts({out});
  RunModel(out, {"idx=" + d + "/idx.npy"}, d + "/y");
  EXPECT_EQ(ReadBytes(d + "/y/y.npy"), ReadBytes(d + "/y.npy"));

  r = testing::RunCli("onnx rewrite " + Quote(out) + " -o " + Quote(d + "/inline.onnx") +
                      " --inline");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("over protobuf's 2 GiB limit"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d + "/inline.onnx"));
}

}  // namespace
}  // namespace mp
