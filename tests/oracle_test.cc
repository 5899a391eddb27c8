// Oracle tests: real frameworks nobody here wrote (Debian's python3-torch 1.13 and python3-numpy,
// run with /usr/bin/python3) produce the inputs or the expected answers. The python side lives in
// tests/oracle/*.py and parses safetensors with its own small reader (st_util.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::BytesTensor;
using testing::CommandResult;
using testing::GoldenDir;
using testing::PythonHas;
using testing::ReadBytes;
using testing::SameModel;
using testing::SourceDir;
using testing::TempDir;

#define MP_SKIP_WITHOUT_PYTHON(modules)                          \
  if (!PythonHas(modules))                                       \
  GTEST_SKIP() << "/usr/bin/python3 cannot import " << (modules) \
               << " (apt-get install python3-torch python3-numpy)"
std::string Quote(const std::string& s) { return "'" + s + "'"; }

/// Runs tests/oracle/<script> with `args`; the output is attached to any failure.
CommandResult Oracle(const std::string& script, const std::string& args) {
  const std::string path = (SourceDir() / "tests/oracle" / script).string();
  return testing::Run("/usr/bin/python3 " + Quote(path) + " " + args);
}

#define MP_EXPECT_ORACLE_OK(result) EXPECT_EQ((result).exit_code, 0) << (result).out << (result).err

std::string TinySingle() {
  return (GoldenDir() / "transformers/tiny-gpt2-safetensors/model.safetensors").string();
}

/// Builds a model from torch_tensors.py's manifest: each tensor's raw bytes as torch dumped them.
Model ModelFromManifest(const std::string& dir) {
  Model model;
  const std::vector<uint8_t> text = ReadBytes(dir + "/manifest.json");
  const auto manifest = nlohmann::json::parse(text.begin(), text.end());
  for (const auto& entry : manifest) {
    auto dtype = testing::DTypeFromTorchName(entry.at("dtype").get<std::string>());
    EXPECT_TRUE(dtype.ok()) << dtype.status().ToString();
    if (!dtype.ok()) continue;
    const auto bytes = ReadBytes(dir + "/" + entry.at("file").get<std::string>());
    Status s = model.Add(BytesTensor(entry.at("name").get<std::string>(), *dtype,
                                     Shape(entry.at("shape").get<std::vector<uint64_t>>()), bytes));
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  return model;
}

// torch makes tensors of every dtype it has; modelport writes them; torch reads modelport's
// bytes back through its own dtype mapping and finds them bit-identical.
TEST(Oracle, TorchTensorsOfEveryDTypeSurviveModelportBitExactly) {
  MP_SKIP_WITHOUT_PYTHON("torch numpy");
  TempDir dir;
  const std::string d = dir.path().string();
  CommandResult made = Oracle("torch_tensors.py", "make " + Quote(d));
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  const Model model = ModelFromManifest(d);
  ASSERT_GE(model.tensors().size(), 40u);

  const std::string ours = d + "/modelport.safetensors";
  Status s = safetensors::Write(model, ours, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  CommandResult checked = Oracle("torch_tensors.py", "check " + Quote(d) + " " + Quote(ours));
  MP_EXPECT_ORACLE_OK(checked);

  // Sharded too: the python side reads each shard as a file of its own.
  const std::string shards = d + "/sharded";
  fs::create_directory(shards);
  WriteOptions options;
  options.shard_size = 256;
  s = safetensors::Write(model, shards, options);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto reread = OpenModel(shards);
  ASSERT_TRUE(reread.ok()) << reread.status().ToString();
  const std::string merged = d + "/merged.safetensors";
  ASSERT_TRUE(safetensors::Write(**reread, merged, {}).ok());
  checked = Oracle("torch_tensors.py", "check " + Quote(d) + " " + Quote(merged));
  MP_EXPECT_ORACLE_OK(checked);
}

// The reverse: a file laid out by the python script's own writer (reverse order, unpadded header,
// so data at odd addresses) reads back as exactly torch's bytes.
TEST(Oracle, ModelportReadsAFileTorchSideWrote) {
  MP_SKIP_WITHOUT_PYTHON("torch numpy");
  TempDir dir;
  const std::string d = dir.path().string();
  CommandResult made = Oracle("torch_tensors.py", "make " + Quote(d));
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  const Model expected = ModelFromManifest(d);
  for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
    ReadOptions options;
    options.io_mode = mode;
    auto opened = OpenModel(d + "/torch_written.safetensors", options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    EXPECT_TRUE(SameModel(expected, **opened, /*compare_metadata=*/false));
    EXPECT_EQ((*opened)->metadata(), Json({{"writer", "torch oracle"}}));
  }
}

// torch.load of the transformers .bin files (plain and sharded) against the safetensors file
// modelport writes from the golden model.safetensors.
TEST(Oracle, TorchLoadOfPytorchModelBinMatchesModelport) {
  MP_SKIP_WITHOUT_PYTHON("torch numpy");
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  auto model = OpenModel(TinySingle());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const std::string ours = dir.File("gpt2.safetensors");
  Status s = safetensors::Write(**model, ours, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  CommandResult checked =
      Oracle("gpt2_bin.py", Quote((GoldenDir() / "transformers").string()) + " " + Quote(ours));
  MP_EXPECT_ORACLE_OK(checked);
  // The one allowed difference is the tied lm_head.weight, which the .bin holds and
  // safetensors leaves out.
  EXPECT_NE(checked.out.find("tied-only in .bin: ['lm_head.weight']"), std::string::npos)
      << checked.out;
}

/// Casts every float tensor of `src` to `to` and writes the result to `out`.
void CastFile(const std::string& src, DType to, const std::string& out) {
  auto model = OpenModel(src);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  std::unique_ptr<ModelSource> cast = CastFloats(**model, to);
  Status s = safetensors::Write(*cast, out, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
}

TEST(Oracle, F16CastOfTinyGpt2MatchesNumpy) {
  MP_SKIP_WITHOUT_PYTHON("numpy");
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  const std::string out = dir.File("gpt2_f16.safetensors");
  CastFile(TinySingle(), DType::kF16, out);
  MP_EXPECT_ORACLE_OK(Oracle("float_casts.py", "f16 " + Quote(TinySingle()) + " " + Quote(out)));
}

TEST(Oracle, F16CastOfHardCasesMatchesNumpy) {
  MP_SKIP_WITHOUT_PYTHON("numpy");
  TempDir dir;
  const std::string edges = dir.File("edges.safetensors");
  CommandResult made = Oracle("float_casts.py", "edges " + Quote(edges));
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  const std::string out = dir.File("edges_f16.safetensors");
  CastFile(edges, DType::kF16, out);
  MP_EXPECT_ORACLE_OK(Oracle("float_casts.py", "f16 " + Quote(edges) + " " + Quote(out)));
}

TEST(Oracle, BF16CastOfHardCasesMatchesTorch) {
  MP_SKIP_WITHOUT_PYTHON("torch numpy");
  TempDir dir;
  const std::string edges = dir.File("edges.safetensors");
  CommandResult made = Oracle("float_casts.py", "edges " + Quote(edges));
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  const std::string out = dir.File("edges_bf16.safetensors");
  CastFile(edges, DType::kBF16, out);
  MP_EXPECT_ORACLE_OK(Oracle("float_casts.py", "bf16 " + Quote(edges) + " " + Quote(out)));
}

}  // namespace
}  // namespace mp
