// The TorchScript backend (validate/torchscript.h) against Debian's torch 1.13: the MLP, CNN
// and TransformerEncoderLayer that tests/oracle/validate_models.py traces and saves reproduce
// torch's own outputs within 1e-5 when libtorch runs them from C++; a scripted module with
// nested tuple outputs and every element type round-trips exactly; and files that are not
// TorchScript (random bytes, truncated, a torch.save checkpoint, code that does not compile,
// outputs that are not tensors, wrong inputs) give one-line errors instead of exceptions.
#include "modelport/validate/torchscript.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "modelport/formats/format.h"
#include "test_util.h"

namespace mp {
namespace {

using testing::TempDir;
using Named = std::vector<std::pair<std::string, eval::Tensor>>;

constexpr double kAtol = 1e-5;

/// Our own TensorView -> eval::Tensor copy, so this test does not lean on the evaluator's.
eval::Tensor ToEval(const TensorView& view) {
  eval::Tensor t;
  t.dtype = view.info.dtype;
  for (uint64_t d : view.info.shape.dims()) t.shape.push_back(static_cast<int64_t>(d));
  t.bytes.assign(view.bytes().begin(), view.bytes().end());
  return t;
}

/// The arrays `names` of the .npz at `path`, in that order.
Named ReadNpz(const std::string& path, const std::vector<std::string>& names) {
  Named out;
  auto source = OpenModel(path);
  EXPECT_TRUE(source.ok()) << source.status().ToString();
  if (!source.ok()) return out;
  for (const std::string& name : names) {
    auto index = (*source)->Find(name);
    EXPECT_TRUE(index.has_value()) << path << " has no array " << name;
    if (!index) continue;
    auto view = (*source)->Load(*index);
    EXPECT_TRUE(view.ok()) << view.status().ToString();
    if (view.ok()) out.emplace_back(name, ToEval(*view));
  }
  return out;
}

/// Same dtype and shape; floats within kAtol, integers and bools exact. Reports the worst error.
void ExpectClose(const eval::Tensor& expected, const eval::Tensor& actual) {
  ASSERT_EQ(DTypeName(actual.dtype), DTypeName(expected.dtype));
  ASSERT_EQ(actual.shape, expected.shape);
  ASSERT_EQ(actual.bytes.size(), expected.bytes.size());
  const size_t n = expected.bytes.size() / ElementSize(expected.dtype);
  const bool exact = !IsFloat(expected.dtype);
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = eval::GetAsDouble(expected, static_cast<int64_t>(i));
    const double a = eval::GetAsDouble(actual, static_cast<int64_t>(i));
    ASSERT_TRUE(std::isfinite(a)) << "element " << i;
    worst = std::max(worst, std::fabs(a - e));
  }
  if (exact) {
    EXPECT_EQ(worst, 0);
  } else {
    EXPECT_LE(worst, kAtol);
  }
}

/// Error statuses are one line: no newline, no libtorch backtrace.
void ExpectOneLine(const Status& s) {
  EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("Exception raised from"), std::string::npos) << s.message();
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(TorchScriptStubTest, BuiltWithoutLibtorchSaysSo) {
  if (validate::TorchScriptAvailable()) GTEST_SKIP() << "built with libtorch";
  constexpr char kMessage[] =
      "modelport was built without libtorch (install libtorch-dev and rebuild)";
  auto summary = validate::LoadTorchScript("/nonexistent.pt");
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.error().code(), StatusCode::kUnsupported);
  EXPECT_EQ(summary.error().message(), kMessage);
  auto run = validate::RunTorchScript("/nonexistent.pt", {});
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.error().code(), StatusCode::kUnsupported);
  EXPECT_EQ(run.error().message(), kMessage);
}

class TorchScriptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    has_python_ = testing::PythonHas("torch numpy onnx");
    if (!validate::TorchScriptAvailable() || !has_python_) return;
    dir_ = new TempDir();
    const std::string script = (testing::SourceDir() / "tests/oracle/validate_models.py").string();
    generated_ = testing::Run("/usr/bin/python3 '" + script + "' '" + dir_->path().string() + "'");
    if (generated_.exit_code == 0) {
      summary_ = nlohmann::json::parse(generated_.out, nullptr, /*allow_exceptions=*/false);
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    if (!validate::TorchScriptAvailable()) {
      GTEST_SKIP() << "modelport was built without libtorch (MODELPORT_WITH_LIBTORCH; install "
                      "libtorch-dev and reconfigure)";
    }
    if (!has_python_) {
      GTEST_SKIP() << "/usr/bin/python3 cannot import torch, numpy and onnx (apt-get install "
                      "python3-torch python3-numpy python3-onnx)";
    }
    ASSERT_EQ(generated_.exit_code, 0) << generated_.err;
    ASSERT_TRUE(summary_.is_object()) << generated_.out;
  }

  static std::string File(const std::string& name) { return dir_->File(name); }

  static inline bool has_python_ = false;
  static inline TempDir* dir_ = nullptr;
  static inline testing::CommandResult generated_;
  static inline nlohmann::json summary_;
};

TEST_F(TorchScriptTest, ExportedModelsReproduceTorch) {
  ASSERT_EQ(summary_["models"].size(), 3u);
  for (const auto& model : summary_["models"]) {
    const std::string name = model["name"].get<std::string>();
    SCOPED_TRACE(name);
    const Named inputs = ReadNpz(File(name + ".inputs.npz"), {"x"});
    const Named expected = ReadNpz(File(name + ".expected.npz"), {"y"});
    ASSERT_EQ(inputs.size(), 1u);
    ASSERT_EQ(expected.size(), 1u);
    auto outputs = validate::RunTorchScript(File(name + ".pt"), inputs);
    ASSERT_TRUE(outputs.ok()) << outputs.status().ToString();
    ASSERT_EQ(outputs->size(), 1u);
    EXPECT_EQ((*outputs)[0].first, "output_0");
    ExpectClose(expected[0].second, (*outputs)[0].second);
  }
}

TEST_F(TorchScriptTest, SummaryMatchesWhatTorchLoads) {
  std::vector<nlohmann::json> models(summary_["models"].begin(), summary_["models"].end());
  models.push_back(summary_["multi"]);
  for (const auto& model : models) {
    const std::string name = model["name"].get<std::string>();
    SCOPED_TRACE(name);
    std::string args;
    for (const auto& a : model["forward_args"]) {
      args += (args.empty() ? "" : ", ") + a.get<std::string>();
    }
    auto summary = validate::LoadTorchScript(File(name + ".pt"));
    ASSERT_TRUE(summary.ok()) << summary.status().ToString();
    EXPECT_EQ(*summary, "forward(" + args + ") · " + model["parameters"].dump() + " parameters, " +
                            model["buffers"].dump() + " buffers");
  }
  // Fixed facts of the three models, so the summary's source is checked too.
  EXPECT_EQ(*validate::LoadTorchScript(File("cnn.pt")),
            "forward(input) · 10 parameters, 6 buffers");
}

TEST_F(TorchScriptTest, NestedTuplesFlattenInOrderWithEveryDtype) {
  const Named inputs = ReadNpz(File("multi.inputs.npz"), {"x", "k", "d", "i", "b"});
  const std::vector<std::string> names = {"output_0", "output_1", "output_2", "output_3",
                                          "output_4"};
  const Named expected = ReadNpz(File("multi.expected.npz"), names);
  ASSERT_EQ(inputs.size(), 5u);
  ASSERT_EQ(expected.size(), 5u);
  auto outputs = validate::RunTorchScript(File("multi.pt"), inputs);
  ASSERT_TRUE(outputs.ok()) << outputs.status().ToString();
  ASSERT_EQ(outputs->size(), 5u);
  const DType dtypes[] = {DType::kF32, DType::kI64, DType::kF64, DType::kI32, DType::kBool};
  for (size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ((*outputs)[i].first, names[i]);
    EXPECT_EQ(DTypeName((*outputs)[i].second.dtype), DTypeName(dtypes[i]));
    ExpectClose(expected[i].second, (*outputs)[i].second);
  }
  // Exact, not just close: the ops are exact in every dtype.
  EXPECT_EQ((*outputs)[0].second.bytes, expected[0].second.bytes);
  EXPECT_EQ((*outputs)[2].second.bytes, expected[2].second.bytes);
}

TEST_F(TorchScriptTest, NonTensorOutputIsUnsupported) {
  const Named inputs = ReadNpz(File("mlp.inputs.npz"), {"x"});
  auto outputs = validate::RunTorchScript(File("dict_out.pt"), inputs);
  ASSERT_FALSE(outputs.ok());
  EXPECT_EQ(outputs.error().code(), StatusCode::kUnsupported);
  EXPECT_EQ(outputs.error().message(),
            File("dict_out.pt") +
                ": output_0 is a Dict(str, Tensor): the TorchScript backend compares tensors and "
                "tuples/lists of tensors");
}

TEST_F(TorchScriptTest, StateDictIsRefused) {
  const std::string path = File("state_dict.pt");
  auto summary = validate::LoadTorchScript(path);
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(summary.error().message(),
            path +
                ": a torch.save checkpoint, not a TorchScript archive: it holds tensors but no "
                "code/ or constants.pkl, so there is no forward to run");
  auto run = validate::RunTorchScript(path, ReadNpz(File("mlp.inputs.npz"), {"x"}));
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.error().message(), summary.error().message());
}

TEST_F(TorchScriptTest, NotAZipIsCorrupt) {
  // Random bytes, an empty file, an ONNX model and a TorchScript archive cut in half.
  const std::string junk = File("junk.pt");
  std::vector<uint8_t> bytes(4096);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 2654435761u >> 7);
  testing::WriteBytes(junk, bytes);
  const std::string empty = File("empty.pt");
  testing::WriteBytes(empty, {});
  const std::string truncated = File("truncated.pt");
  std::vector<uint8_t> mlp = testing::ReadBytes(File("mlp.pt"));
  mlp.resize(mlp.size() / 2);
  testing::WriteBytes(truncated, mlp);
  for (const std::string& path : {junk, empty, File("mlp.onnx"), truncated}) {
    SCOPED_TRACE(path);
    auto summary = validate::LoadTorchScript(path);
    ASSERT_FALSE(summary.ok());
    EXPECT_EQ(summary.error().code(), StatusCode::kCorrupt) << summary.error().ToString();
    EXPECT_TRUE(summary.error().message().starts_with(
        path + ": not a TorchScript archive (torch.jit.save writes a zip): "))
        << summary.error().message();
    ExpectOneLine(summary.error());
  }
}

TEST_F(TorchScriptTest, MissingFileIsNotFound) {
  auto summary = validate::LoadTorchScript(File("absent.pt"));
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.error().code(), StatusCode::kNotFound) << summary.error().ToString();
  EXPECT_TRUE(Contains(summary.error().message(), File("absent.pt")));
}

TEST_F(TorchScriptTest, CodeThatDoesNotCompileIsCorruptInOneLine) {
  // The archive passes the zip check; libtorch itself fails (throws) while compiling its code.
  const std::string path = File("broken_code.pt");
  auto summary = validate::LoadTorchScript(path);
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.error().code(), StatusCode::kCorrupt);
  // torch.jit.load's first line ("expected ident but found 'def' here:") with the place it
  // points at (the line after it) instead of the trailing "here:".
  std::string torch_says = summary_["broken_code_error"].get<std::string>();
  ASSERT_TRUE(torch_says.ends_with(" here:")) << torch_says;
  torch_says.resize(torch_says.size() - 6);
  EXPECT_EQ(summary.error().message(),
            path + ": libtorch could not load it: " + torch_says +
                " (code/__torch__/torch/nn/modules/container.py, line 2)");
  ExpectOneLine(summary.error());
  auto run = validate::RunTorchScript(path, ReadNpz(File("mlp.inputs.npz"), {"x"}));
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.error().message(), summary.error().message());
}

TEST_F(TorchScriptTest, WrongInputCountIsRefusedBeforeRunning) {
  const Named x = ReadNpz(File("mlp.inputs.npz"), {"x"});
  ASSERT_EQ(x.size(), 1u);
  Named two = {x[0], {"extra", x[0].second}};
  auto run = validate::RunTorchScript(File("mlp.pt"), two);
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run.error().message(),
            File("mlp.pt") + ": forward(input) takes 1 input; got 2 (x, extra)");
  run = validate::RunTorchScript(File("multi.pt"), x);
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.error().message(),
            File("multi.pt") + ": forward(x, k, d, i, b) takes 5 inputs; got 1 (x)");
}

TEST_F(TorchScriptTest, ForwardFailureIsOneLineWithTorchsReason) {
  // The MLP wants x[..., 16]; a [4, 3] input makes its first Linear fail inside libtorch.
  Named bad = {{"x", eval::Tensor{}}};
  bad[0].second.dtype = DType::kF32;
  bad[0].second.shape = {4, 3};
  bad[0].second.bytes.assign(4 * 3 * sizeof(float), 0);
  auto run = validate::RunTorchScript(File("mlp.pt"), bad);
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.error().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(run.error().message(), File("mlp.pt") + ": forward(x) failed: "))
      << run.error().message();
  EXPECT_TRUE(Contains(run.error().message(), "4x3")) << run.error().message();
  ExpectOneLine(run.error());
}

TEST_F(TorchScriptTest, EmptyBatchRunsToAnEmptyOutput) {
  eval::Tensor x;
  x.shape = {0, 16};  // no bytes at all: nothing for libtorch to read
  auto run = validate::RunTorchScript(File("mlp.pt"), {{"x", x}});
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  ASSERT_EQ(run->size(), 1u);
  EXPECT_EQ(DTypeName((*run)[0].second.dtype), "f32");
  EXPECT_EQ((*run)[0].second.shape, (std::vector<int64_t>{0, 8}));
  EXPECT_TRUE((*run)[0].second.bytes.empty());
}

TEST_F(TorchScriptTest, BadInputTensorsAreRefusedByName) {
  eval::Tensor half;
  half.dtype = DType::kF16;
  half.shape = {4, 16};
  half.bytes.assign(4 * 16 * 2, 0);
  auto run = validate::RunTorchScript(File("mlp.pt"), {{"x", half}});
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run.error().message(),
            File("mlp.pt") +
                ": input 'x': element type f16 is not one the TorchScript backend passes (f32, "
                "f64, i64, i32, bool)");

  eval::Tensor short_bytes;
  short_bytes.shape = {4, 16};
  short_bytes.bytes.assign(10, 0);
  run = validate::RunTorchScript(File("mlp.pt"), {{"x", short_bytes}});
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run.error().message(), File("mlp.pt") + ": input 'x': 10 bytes for 64 elements of f32");
}

}  // namespace
}  // namespace mp
