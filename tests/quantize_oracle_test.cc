// `modelport quantize` / `dequantize` end to end against oracles that never see modelport's
// arithmetic: numpy recomputes every scheme from the source weights (exact round-to-nearest-even
// casts, int8 scales and values, ggml's reference block quantizers transcribed to numpy) and
// checks the stored bytes, the dequantized values, their error bound and the --json report;
// Debian's torch 1.13 loads the int8 .pt with weights_only=True and dequantizes it itself;
// npm's @huggingface/gguf reads the block files. The python side is tests/oracle/quantize_check.py;
// the weights are torch.manual_seed(0) Linear/Conv/Embedding/LayerNorm layers saved by torch.save
// and as a hand-written .safetensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

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

// The CLI's exit codes (cli_util.h): an invalid argument, an existing destination.
constexpr int kExitUsage = 2;
constexpr int kExitIo = 6;

std::string Quote(const std::string& s) { return "'" + s + "'"; }

std::string Script() { return (testing::SourceDir() / "tests/oracle/quantize_check.py").string(); }
fs::path NodeDir() { return testing::SourceDir() / "tests/node"; }

bool HasNodeGguf() {
  return testing::Run("node --version").exit_code == 0 &&
         fs::exists(NodeDir() / "node_modules/@huggingface/gguf/package.json");
}

/// One line on stderr, in the CLI's error form.
::testing::AssertionResult OneErrorLine(const CommandResult& r) {
  if (!r.err.starts_with("modelport: error: ")) {
    return ::testing::AssertionFailure() << "stderr: " << r.err;
  }
  if (r.err.find('\n') != r.err.size() - 1) {
    return ::testing::AssertionFailure() << "not one line: " << r.err;
  }
  return ::testing::AssertionSuccess();
}

// torch writes the weights once for every test of the fixture.
class QuantizeOracle : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!testing::PythonHas("torch numpy")) return;
    dir_ = new TempDir();
    made_ = new CommandResult(testing::Run("/usr/bin/python3 " + Quote(Script()) + " make " +
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
  }

  static std::string Weights(const std::string& ext) {
    return dir_->path().string() + "/weights" + ext;
  }
  static std::string Original() { return Weights(".safetensors"); }

  /// `modelport quantize SRC DST --scheme SCHEME EXTRA --json`; the report goes to DST.json.
  static void Quantize(const std::string& src, const std::string& dst, const std::string& scheme,
                       const std::string& extra = "") {
    const CommandResult r = RunCli("quantize " + Quote(src) + " " + Quote(dst) + " --scheme " +
                                   scheme + " " + extra + " --json");
    ASSERT_EQ(r.exit_code, 0) << "quantize " << scheme << " " << extra << ": " << r.err;
    const Json doc = Json::parse(r.out, nullptr, false);
    ASSERT_TRUE(doc.is_object()) << r.out.substr(0, 300);
    EXPECT_EQ(doc.value("source", ""), src);
    EXPECT_EQ(doc.value("destination", ""), dst);
    EXPECT_TRUE(doc.contains("format")) << r.out.substr(0, 300);
    testing::WriteBytes(dst + ".json", std::vector<uint8_t>(r.out.begin(), r.out.end()));
  }

  static void Dequantize(const std::string& src, const std::string& dst,
                         const std::string& extra = "") {
    const CommandResult r = RunCli("dequantize " + Quote(src) + " " + Quote(dst) + " " + extra);
    ASSERT_EQ(r.exit_code, 0) << "dequantize " << src << " " << extra << ": " << r.err;
  }

  /// The python oracle `command ARGS`: exit 0 and an "ok:" line, else its one-line finding.
  static void Oracle(const std::string& args) {
    const CommandResult r = testing::Run("/usr/bin/python3 " + Quote(Script()) + " " + args);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(r.out.starts_with("ok:")) << r.out << r.err;
  }

  /// quantize SRC -> DST, dequantize DST -> f32 safetensors, and the numpy checks of both.
  void RoundTrip(const std::string& src, const std::string& scheme, const std::string& out_ext,
                 const std::string& extra = "", const std::string& tag = "") {
    SCOPED_TRACE(scheme + " " + fs::path(src).filename().string() + " -> " + out_ext + " " + extra);
    const std::string base =
        out.File(scheme + "-" + fs::path(src).extension().string().substr(1) + tag + out_ext);
    ASSERT_NO_FATAL_FAILURE(Quantize(src, base, scheme, extra));
    const std::string deq = base + ".deq.safetensors";
    ASSERT_NO_FATAL_FAILURE(Dequantize(base, deq));
    Oracle("check " + scheme + " " + Quote(Original()) + " " + Quote(base) + " " + Quote(deq) +
           " " + Quote(base + ".json") + " " + extra);
  }

  static TempDir* dir_;
  static CommandResult* made_;
  TempDir out;
};

TempDir* QuantizeOracle::dir_ = nullptr;
CommandResult* QuantizeOracle::made_ = nullptr;

// f16 and bf16 equal numpy's and torch's casts bit for bit, the f8 formats equal an exact
// round-to-nearest-even (e4m3 saturating at 448) and every value is within half an ulp; from
// the torch checkpoint and from safetensors, into safetensors (and .pt, GGUF where they hold
// the type).
TEST_F(QuantizeOracle, CastsAreRoundedToNearestEvenWithinHalfAnUlp) {
  for (const std::string scheme : {"f16", "bf16", "f8_e4m3", "f8_e5m2"}) {
    for (const std::string ext : {".pt", ".safetensors"}) {
      RoundTrip(Weights(ext), scheme, ".safetensors");
    }
  }
  RoundTrip(Weights(".safetensors"), "f16", ".pt");
  RoundTrip(Weights(".pt"), "bf16", ".pt");
  RoundTrip(Weights(".pt"), "f16", ".gguf");
  RoundTrip(Weights(".safetensors"), "bf16", ".gguf");
}

// int8 per output channel: numpy's max|x|/127 scales and clip(round(x/scale)) values stored
// bit for bit beside their tensors, dequantized values q*scale within half a scale, a
// compressed-tensors quantization_config in safetensors.
TEST_F(QuantizeOracle, Int8PerChannelMatchesNumpy) {
  for (const std::string ext : {".pt", ".safetensors"}) {
    RoundTrip(Weights(ext), "int8", ".safetensors");
    RoundTrip(Weights(ext), "int8", ".pt");
  }
}

TEST_F(QuantizeOracle, Int8PerTensorAndAnotherAxisMatchNumpy) {
  RoundTrip(Weights(".pt"), "int8", ".safetensors", "--per-tensor");
  RoundTrip(Weights(".safetensors"), "int8", ".pt", "--per-tensor");
  RoundTrip(Weights(".safetensors"), "int8", ".safetensors", "--axis 1");
}

// Every ggml block type: the GGUF tensor bytes equal numpy's transcription of ggml's reference
// quantizers exactly (read by a GGUF parser in python), tensors without whole 32-element rows
// stay f32, and the dequantized values are ggml's, within half a step of each block's grid.
TEST_F(QuantizeOracle, GgmlBlocksAreBitExactWithTheReferenceFormulas) {
  for (const std::string scheme : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"}) {
    for (const std::string ext : {".pt", ".safetensors"}) {
      RoundTrip(Weights(ext), scheme, ".gguf");
    }
  }
}

// --min-size, --include and --exclude choose the candidates as numpy's fnmatch selection says;
// the rest come back bit for bit.
TEST_F(QuantizeOracle, SelectionFlagsChooseTheCandidates) {
  RoundTrip(Weights(".pt"), "int8", ".safetensors", "--min-size 100 --exclude 'emb.*'", "a");
  RoundTrip(Weights(".safetensors"), "q8_0", ".gguf",
            "--include 'fc*' --include 'big.*' --min-size 256", "b");
  RoundTrip(Weights(".pt"), "f16", ".safetensors", "--include '*.weight' --exclude 'conv.*'", "c");
}

// dequantize --dtype: the same values rounded once to f64 (exact), bf16 or f16.
TEST_F(QuantizeOracle, DequantizeToOtherFloatTypes) {
  const std::string q8 = out.File("q8.gguf");
  ASSERT_NO_FATAL_FAILURE(Quantize(Weights(".pt"), q8, "q8_0"));
  const std::string i8 = out.File("i8.safetensors");
  ASSERT_NO_FATAL_FAILURE(Quantize(Weights(".pt"), i8, "int8"));
  for (const auto& [file, scheme] : {std::pair{q8, "q8_0"}, std::pair{i8, "int8"}}) {
    for (const std::string dtype : {"f64", "bf16", "f16"}) {
      SCOPED_TRACE(std::string(scheme) + " --dtype " + dtype);
      const std::string deq = file + "." + dtype + ".safetensors";
      ASSERT_NO_FATAL_FAILURE(Dequantize(file, deq, "--dtype " + dtype));
      Oracle(std::string("check ") + scheme + " " + Quote(Original()) + " " + Quote(file) + " " +
             Quote(deq) + " " + Quote(file + ".json") + " --deq-dtype " + dtype);
    }
  }
}

// The int8 .pt loads in torch 1.13 with weights_only=True as plain int8 and f32 tensors; torch's
// own dequantization (q.float() * scale, and a per-channel / per-tensor quantized tensor built
// from them) equals modelport's dequantize output bit for bit.
TEST_F(QuantizeOracle, Int8CheckpointLoadsInTorchAndDequantizesAsTorchDoes) {
  for (const bool per_tensor : {false, true}) {
    SCOPED_TRACE(per_tensor ? "per tensor" : "per channel");
    const std::string flag = per_tensor ? "--per-tensor" : "";
    const std::string pt = out.File(per_tensor ? "t.pt" : "c.pt");
    ASSERT_NO_FATAL_FAILURE(Quantize(Weights(".safetensors"), pt, "int8", flag));
    const std::string deq = pt + ".deq.safetensors";
    ASSERT_NO_FATAL_FAILURE(Dequantize(pt, deq));
    Oracle("torch_int8 " + Quote(Original()) + " " + Quote(pt) + " " + Quote(deq) + " " + flag);
  }
}

// @huggingface/gguf reads modelport's block files with ggml's type numbers (Q8_0 8, Q4_0 2,
// Q4_1 3, Q5_0 6, Q5_1 7), the right dims and llama.cpp's general.file_type; the bytes at its
// offsets are the reference blocks; `modelport inspect --json` agrees; dequantize gives ggml's
// values.
TEST_F(QuantizeOracle, NodeGgufReadsTheBlockFiles) {
  if (!HasNodeGguf()) {
    GTEST_SKIP() << "node or @huggingface/gguf is missing (npm ci --ignore-scripts in tests/node)";
  }
  for (const std::string scheme : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"}) {
    SCOPED_TRACE(scheme);
    const std::string gguf = out.File(scheme + ".gguf");
    ASSERT_NO_FATAL_FAILURE(Quantize(Weights(".pt"), gguf, scheme));
    const CommandResult node =
        testing::Run("node " + Quote((NodeDir() / "gguf_check.mjs").string()) + " " + Quote(gguf));
    ASSERT_EQ(node.exit_code, 0) << node.err;
    testing::WriteBytes(gguf + ".node.json",
                        std::vector<uint8_t>(node.out.begin(), node.out.end()));
    const CommandResult inspect = RunCli("inspect " + Quote(gguf) + " --json");
    ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
    testing::WriteBytes(gguf + ".inspect.json",
                        std::vector<uint8_t>(inspect.out.begin(), inspect.out.end()));
    const std::string deq = gguf + ".deq.safetensors";
    ASSERT_NO_FATAL_FAILURE(Dequantize(gguf, deq));
    Oracle("gguf_node " + scheme + " " + Quote(Original()) + " " + Quote(gguf) + " " +
           Quote(gguf + ".node.json") + " " + Quote(gguf + ".inspect.json") + " " + Quote(deq));
  }
}

// --- Errors through the CLI (no python needed) -----------------------------------------------

// A safetensors file with an f32 [64, 32] "layer.weight" (a candidate) and an f32 [64] bias;
// `poison` goes into the weight at flat index 100.
std::string WriteSmallModel(const TempDir& dir, const std::string& file, float poison) {
  std::vector<float> w(64 * 32), b(64);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(static_cast<float>(i)) * 0.5f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i) / 64.0f;
  w[100] = poison;
  auto bytes = [](const std::vector<float>& v) {
    std::vector<uint8_t> out(v.size() * 4);
    std::memcpy(out.data(), v.data(), out.size());
    return out;
  };
  Model model;
  EXPECT_TRUE(
      model.Add(testing::BytesTensor("layer.weight", DType::kF32, Shape{64, 32}, bytes(w))).ok());
  EXPECT_TRUE(model.Add(testing::BytesTensor("layer.bias", DType::kF32, Shape{64}, bytes(b))).ok());
  const std::string path = dir.File(file);
  EXPECT_TRUE(safetensors::Write(model, path, WriteOptions{}).ok());
  return path;
}

// What a folder holds, by file name.
std::vector<std::string> Listing(const TempDir& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(QuantizeCliErrors, ANonFiniteCandidateIsRefusedNamingTheTensor) {
  TempDir dir;
  const std::string src =
      WriteSmallModel(dir, "nan.safetensors", std::numeric_limits<float>::quiet_NaN());
  for (const auto& [scheme, ext] : {std::pair{"int8", ".safetensors"}, std::pair{"q8_0", ".gguf"},
                                    std::pair{"q4_1", ".gguf"}, std::pair{"int8", ".pt"}}) {
    SCOPED_TRACE(scheme);
    const std::string dst = dir.File(std::string("out") + ext);
    const CommandResult r =
        RunCli("quantize " + Quote(src) + " " + Quote(dst) + " --scheme " + std::string(scheme));
    EXPECT_EQ(r.exit_code, kExitUsage) << r.out << r.err;
    EXPECT_TRUE(OneErrorLine(r));
    EXPECT_NE(r.err.find("layer.weight"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("NaN"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dst)) << "a partial output was left behind";
    EXPECT_EQ(Listing(dir), std::vector<std::string>{"nan.safetensors"});
  }
  // An infinity too.
  const std::string inf =
      WriteSmallModel(dir, "inf.safetensors", -std::numeric_limits<float>::infinity());
  const CommandResult r =
      RunCli("quantize " + Quote(inf) + " " + Quote(dir.File("o.gguf")) + " --scheme q4_0");
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_TRUE(OneErrorLine(r));
  EXPECT_NE(r.err.find("layer.weight"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.File("o.gguf")));
  // The bias is no candidate: excluding the weight, the NaN file is not read where it is bad.
  const CommandResult excluded =
      RunCli("quantize " + Quote(src) + " " + Quote(dir.File("x.safetensors")) +
             " --scheme int8 --exclude 'layer.*'");
  EXPECT_EQ(excluded.exit_code, 0) << excluded.err;
}

TEST(QuantizeCliErrors, BlockSchemesOnlyGoIntoGguf) {
  TempDir dir;
  const std::string src = WriteSmallModel(dir, "m.safetensors", 0.25f);
  for (const std::string scheme : {"q8_0", "q4_0", "q5_1"}) {
    for (const std::string dst : {"out.safetensors", "out.pt"}) {
      SCOPED_TRACE(scheme + " -> " + dst);
      const CommandResult r =
          RunCli("quantize " + Quote(src) + " " + Quote(dir.File(dst)) + " --scheme " + scheme);
      EXPECT_EQ(r.exit_code, kExitUsage) << r.out << r.err;
      EXPECT_TRUE(OneErrorLine(r));
      EXPECT_NE(r.err.find(scheme), std::string::npos) << r.err;
      EXPECT_NE(r.err.find("gguf"), std::string::npos) << r.err;
      EXPECT_EQ(Listing(dir), std::vector<std::string>{"m.safetensors"});
    }
  }
  // --to overrides the extension the same way.
  const CommandResult r = RunCli("quantize " + Quote(src) + " " + Quote(dir.File("out.bin")) +
                                 " --scheme q8_0 --to safetensors");
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_EQ(Listing(dir), std::vector<std::string>{"m.safetensors"});
}

TEST(QuantizeCliErrors, AnExistingDestinationNeedsForce) {
  TempDir dir;
  const std::string src = WriteSmallModel(dir, "m.safetensors", 0.25f);
  const std::vector<uint8_t> keep = {'k', 'e', 'e', 'p'};
  for (const std::string verb : {"quantize", "dequantize"}) {
    SCOPED_TRACE(verb);
    const std::string dst = dir.File(verb + ".safetensors");
    const std::string input = verb == "quantize" ? src : dir.File("quantize.safetensors");
    const std::string scheme = verb == "quantize" ? " --scheme int8" : "";
    testing::WriteBytes(dst, keep);
    const CommandResult r = RunCli(verb + " " + Quote(input) + " " + Quote(dst) + scheme);
    EXPECT_EQ(r.exit_code, kExitIo) << r.out << r.err;
    EXPECT_TRUE(OneErrorLine(r));
    EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
    EXPECT_EQ(testing::ReadBytes(dst), keep);
    const CommandResult forced =
        RunCli(verb + " " + Quote(input) + " " + Quote(dst) + scheme + " --force");
    EXPECT_EQ(forced.exit_code, 0) << forced.err;
    auto written = OpenModel(dst);
    ASSERT_TRUE(written.has_value()) << written.error().ToString();
    // quantize: the int8 weight beside its [64, 1] scale and the kept bias; dequantize: back to
    // the two f32 tensors.
    std::vector<std::string> names;
    for (const TensorInfo& t : (*written)->tensors()) names.push_back(t.name);
    std::sort(names.begin(), names.end());
    if (verb == "quantize") {
      EXPECT_EQ(names,
                (std::vector<std::string>{"layer.bias", "layer.weight", "layer.weight_scale"}));
    } else {
      EXPECT_EQ(names, (std::vector<std::string>{"layer.bias", "layer.weight"}));
    }
  }
}

}  // namespace
}  // namespace mp
