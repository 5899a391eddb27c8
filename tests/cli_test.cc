// End-to-end tests of the `modelport` command: real runs of the built binary on golden files
// written by Hugging Face and on small models written here, checking output, JSON values,
// exit codes and the one-line error contract. Peers: coreutils sha256sum for file digests,
// Python's hashlib and numpy (via /usr/bin/python3) for tensor digests and float16 errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "modelport/formats/safetensors/safetensors.h"
#include "test_util.h"

namespace mp::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string Q(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string GoldenSt() { return (GoldenDir() / "safetensors" / "all_dtypes.safetensors").string(); }
std::string Gpt2Single() {
  return (GoldenDir() / "transformers" / "tiny-gpt2-safetensors" / "model.safetensors").string();
}
std::string Gpt2ShardedDir() {
  return (GoldenDir() / "transformers" / "tiny-gpt2-safetensors-sharded").string();
}

json ParseJson(const std::string& text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(doc.is_discarded()) << "not JSON: " << text;
  return doc;
}

json ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseJson(ss.str());
}

// Asserts the failure contract: exactly one line on stderr, "modelport: error: ...", holding
// every string in `needles`.
void ExpectOneErrorLine(const CommandResult& r, const std::vector<std::string>& needles) {
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.back(), '\n') << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("modelport: error: ", 0), 0u) << r.err;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << n << " in " << r.err;
}

void WriteModel(const std::string& path, const std::vector<TensorView>& tensors,
                const json& metadata = json::object()) {
  Model model;
  for (const auto& t : tensors) ASSERT_TRUE(model.Add(t).ok());
  for (const auto& [k, v] : metadata.items()) model.mutable_metadata()[k] = v;
  Status s = safetensors::Write(model, path, WriteOptions{});
  ASSERT_TRUE(s.ok()) << s.ToString();
}

TensorView F32Tensor(const std::string& name, Shape shape, const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return BytesTensor(name, DType::kF32, std::move(shape), bytes);
}

TensorView I64Tensor(const std::string& name, const std::vector<int64_t>& values) {
  std::vector<uint8_t> bytes(values.size() * 8);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return BytesTensor(name, DType::kI64, Shape{values.size()}, bytes);
}

std::set<std::string> Listing(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

std::map<std::string, std::string> TensorDigests(const json& hash_doc) {
  std::map<std::string, std::string> out;
  for (const auto& t : hash_doc.at("tensors")) out[t.at("name")] = t.at("sha256");
  return out;
}

// ---------------------------------------------------------------------------------------------
// Usage, help and exit codes

TEST(CliTest, HelpListsSubcommandsAndExitCodes) {
  auto r = RunCli("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* word : {"inspect", "convert", "verify", "diff", "hash",
                           "Exit codes:", "  4   input rejected", "  70  internal"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word;
  }
  for (const char* sub : {"inspect", "convert", "verify", "diff", "hash"}) {
    auto s = RunCli(std::string(sub) + " --help");
    EXPECT_EQ(s.exit_code, 0) << sub;
    EXPECT_NE(s.out.find("Usage: modelport " + std::string(sub)), std::string::npos) << s.out;
    EXPECT_NE(s.out.find("Exit codes:"), std::string::npos) << sub;
  }
  auto c = RunCli("convert --help");
  for (const char* flag : {"--to", "--dtype", "--shard-size", "--force", "--json"}) {
    EXPECT_NE(c.out.find(flag), std::string::npos) << flag;
  }
  auto v = RunCli("--version");
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.out.rfind("modelport ", 0), 0u) << v.out;
  EXPECT_NE(v.out.find("\nONNX inference: built-in reference evaluator\n"), std::string::npos)
      << v.out;
}

TEST(CliTest, UsageErrorsExit2WithOneLine) {
  auto bad_flag = RunCli("inspect " + Q(GoldenSt()) + " --bogus");
  EXPECT_EQ(bad_flag.exit_code, 2);
  ExpectOneErrorLine(bad_flag, {"--bogus"});
  EXPECT_TRUE(bad_flag.out.empty());

  auto no_sub = RunCli("");
  EXPECT_EQ(no_sub.exit_code, 2);
  ExpectOneErrorLine(no_sub, {"subcommand"});

  auto no_path = RunCli("verify");
  EXPECT_EQ(no_path.exit_code, 2);
  ExpectOneErrorLine(no_path, {"PATH"});

  auto bad_number = RunCli("diff " + Q(GoldenSt()) + " " + Q(GoldenSt()) + " --atol abc");
  EXPECT_EQ(bad_number.exit_code, 2);
  ExpectOneErrorLine(bad_number, {"--atol"});

  auto negative = RunCli("diff " + Q(GoldenSt()) + " " + Q(GoldenSt()) + " --rtol=-1");
  EXPECT_EQ(negative.exit_code, 2);
  ExpectOneErrorLine(negative, {"--rtol"});

  TempDir tmp;
  auto bad_dtype =
      RunCli("convert " + Q(GoldenSt()) + " " + Q(tmp.File("o.safetensors")) + " --dtype i8");
  EXPECT_EQ(bad_dtype.exit_code, 2);
  ExpectOneErrorLine(bad_dtype, {"--dtype 'i8'", "f16, bf16, f32, f64"});

  for (const char* size : {"5XB", "0", "GB", "-1", "1e9"}) {
    auto bad_size =
        RunCli("convert " + Q(GoldenSt()) + " " + Q(tmp.File("s")) + " --shard-size=" + Q(size));
    EXPECT_EQ(bad_size.exit_code, 2) << size;
    ExpectOneErrorLine(bad_size, {"size '" + std::string(size) + "'"});
  }
  auto bad_format = RunCli("convert " + Q(GoldenSt()) + " " + Q(tmp.File("o.xyz")));
  EXPECT_EQ(bad_format.exit_code, 2);
  ExpectOneErrorLine(bad_format, {tmp.File("o.xyz"), "--to"});
  EXPECT_TRUE(Listing(tmp.path().string()).empty());
}

TEST(CliTest, MissingFileExits3NamingIt) {
  TempDir tmp;
  const std::string missing = tmp.File("nope.safetensors");
  for (const std::string cmd : {"inspect", "verify", "hash"}) {
    auto r = RunCli(cmd + " " + Q(missing));
    EXPECT_EQ(r.exit_code, 3) << cmd;
    ExpectOneErrorLine(r, {missing});
    EXPECT_TRUE(r.out.empty()) << cmd;
  }
  auto d = RunCli("diff " + Q(GoldenSt()) + " " + Q(missing));
  EXPECT_EQ(d.exit_code, 3);
  ExpectOneErrorLine(d, {missing});
  auto c = RunCli("convert " + Q(missing) + " " + Q(tmp.File("out.safetensors")));
  EXPECT_EQ(c.exit_code, 3);
  ExpectOneErrorLine(c, {missing});
  EXPECT_TRUE(Listing(tmp.path().string()).empty());
}

// ---------------------------------------------------------------------------------------------
// inspect

TEST(CliTest, InspectTableMatchesGoldenExpectations) {
  const json expected =
      ReadJsonFile((GoldenDir() / "safetensors" / "all_dtypes.expected.json").string());
  auto r = RunCli("inspect " + Q(GoldenSt()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty());
  EXPECT_NE(r.out.find("format:      safetensors\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  format: pt\n"), std::string::npos) << r.out;  // __metadata__
  EXPECT_NE(r.out.find("tensors:     " + std::to_string(expected.size()) + "\n"),
            std::string::npos);
  // Table rows: name, dtype, shape, bytes separated by runs of spaces.
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\ndtype\\.f64 +f64 +\\[3, 4\\] +96\n")))
      << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\ndtype\\.bf16 +bf16 +\\[3, 4\\] +24\n")));
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\nscalar +f32 +\\[\\] +4\n")));
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\nempty +f32 +\\[0, 3\\] +0\n")));
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\nrank5 +f32 +\\[2, 2, 2, 2, 2\\] +128\n")));
  // Columns align by display width: the longest name, "unicode.名前.weight", is 19 columns
  // wide (two per CJK character), so the header's "name" is padded to 19 plus the 2-space gap.
  EXPECT_NE(r.out.find("\nname" + std::string(17, ' ') + "dtype "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nunicode.名前.weight  f32 "), std::string::npos) << r.out;
  auto j = RunCli("inspect --json " + Q(GoldenSt()));
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json doc = ParseJson(j.out);
  EXPECT_EQ(doc["format"], "safetensors");
  EXPECT_EQ(doc["shards"], 1);
  EXPECT_EQ(doc["metadata"]["format"], "pt");
  ASSERT_EQ(doc["tensors"].size(), expected.size());
  uint64_t params = 0, bytes = 0;
  for (const auto& t : doc["tensors"]) {
    const std::string name = t["name"];
    ASSERT_TRUE(expected.contains(name)) << name;
    EXPECT_EQ(t["shape"], expected[name]["shape"]) << name;
    auto dtype = DTypeFromTorchName(expected[name]["dtype"]);
    ASSERT_TRUE(dtype.ok()) << expected[name]["dtype"];
    EXPECT_EQ(t["dtype"], std::string(DTypeName(*dtype))) << name;
    uint64_t n = 1;
    for (uint64_t d : expected[name]["shape"]) n *= d;
    params += n;
    EXPECT_EQ(t["bytes"], n * ElementSize(*dtype)) << name;
    bytes += n * ElementSize(*dtype);
  }
  EXPECT_EQ(doc["parameters"], params);
  EXPECT_EQ(doc["total_bytes"], bytes);
  EXPECT_EQ(doc["tensor_count"], expected.size());
}

TEST(CliTest, InspectTinyGpt2CountsMatchTheHuggingFaceIndex) {
  const json index = ReadJsonFile(Gpt2ShardedDir() + "/model.safetensors.index.json");
  std::set<std::string> shard_files;
  for (const auto& [name, file] : index["weight_map"].items()) shard_files.insert(file);
  for (const std::string& path :
       {Gpt2Single(), Gpt2ShardedDir(), Gpt2ShardedDir() + "/model.safetensors.index.json"}) {
    auto r = RunCli("inspect --json " + Q(path));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json doc = ParseJson(r.out);
    EXPECT_EQ(doc["parameters"], index["metadata"]["total_parameters"]) << path;
    EXPECT_EQ(doc["total_bytes"], index["metadata"]["total_size"]) << path;
    EXPECT_EQ(doc["tensor_count"], index["weight_map"].size()) << path;
    const bool sharded = path != Gpt2Single();
    EXPECT_EQ(doc["shards"], sharded ? shard_files.size() : 1u) << path;
    EXPECT_EQ(doc.contains("index"), sharded) << path;
  }
  auto human = RunCli("inspect " + Q(Gpt2ShardedDir()));
  ASSERT_EQ(human.exit_code, 0);
  EXPECT_NE(human.out.find("shards:      " + std::to_string(shard_files.size()) + " "),
            std::string::npos)
      << human.out;
  EXPECT_NE(human.out.find("parameters:  120,576\n"), std::string::npos) << human.out;
  EXPECT_TRUE(std::regex_search(
      human.out, std::regex("\ntransformer\\.wte\\.weight +f32 +\\[256, 64\\] +65536\n")));
}

// ---------------------------------------------------------------------------------------------
// convert and diff

TEST(CliTest, ConvertRoundTripDiffsEqual) {
  TempDir tmp;
  const std::string out = tmp.File("gpt2.safetensors");
  auto c = RunCli("convert " + Q(Gpt2ShardedDir()) + " " + Q(out));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_TRUE(c.err.empty()) << c.err;  // no progress bar when stderr is not a terminal
  EXPECT_NE(c.out.find("28 tensors, 482,304 bytes"), std::string::npos) << c.out;
  EXPECT_EQ(std::count(c.out.begin(), c.out.end(), '\n'), 1) << c.out;

  auto d = RunCli("diff " + Q(Gpt2Single()) + " " + Q(out));
  EXPECT_EQ(d.exit_code, 0) << d.out << d.err;
  EXPECT_NE(d.out.find("28 compared: 28 bit-equal"), std::string::npos) << d.out;
  EXPECT_NE(d.out.find("models match"), std::string::npos);

  auto dj = RunCli("diff --json " + Q(out) + " " + Q(Gpt2ShardedDir()));
  EXPECT_EQ(dj.exit_code, 0);
  const json doc = ParseJson(dj.out);
  EXPECT_EQ(doc["match"], true);
  EXPECT_EQ(doc["summary"]["bit_equal"], 28);
  EXPECT_EQ(doc["only_in_a"].size(), 0u);
  for (const auto& t : doc["tensors"]) {
    EXPECT_EQ(t["result"], "bit-equal");
    EXPECT_EQ(t["max_abs_error"], 0.0);
  }

  // The written tensor bytes equal the source's, byte for byte.
  const RawSafetensors src = ReadRawSafetensors(Gpt2Single());
  const RawSafetensors dst = ReadRawSafetensors(out);
  for (const auto& [name, entry] : src.header.items()) {
    if (name == "__metadata__") continue;
    EXPECT_EQ(src.TensorBytes(name), dst.TensorBytes(name)) << name;
  }
}

TEST(CliTest, ConvertToF16ThenDiffShowsTheRoundingError) {
  TempDir tmp;
  const std::string h = tmp.File("half.safetensors");
  auto c = RunCli("convert --json --dtype f16 " + Q(Gpt2Single()) + " " + Q(h));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const json conv = ParseJson(c.out);
  EXPECT_EQ(conv["dtype"], "f16");
  EXPECT_EQ(conv["tensors"], 28);
  EXPECT_EQ(conv["bytes"], 482304 / 2);
  EXPECT_EQ(conv["format"], "safetensors");

  auto insp = ParseJson(RunCli("inspect --json " + Q(h)).out);
  for (const auto& t : insp["tensors"]) EXPECT_EQ(t["dtype"], "f16") << t["name"];

  // Exact comparison: different dtypes are a difference.
  auto exact = RunCli("diff --json " + Q(Gpt2Single()) + " " + Q(h));
  EXPECT_EQ(exact.exit_code, 1);
  const json ex = ParseJson(exact.out);
  EXPECT_EQ(ex["match"], false);
  for (const auto& t : ex["tensors"]) EXPECT_EQ(t["result"], "dtype-differs") << t["name"];

  auto tol = RunCli("diff --json --atol 1e-3 " + Q(Gpt2Single()) + " " + Q(h));
  EXPECT_EQ(tol.exit_code, 0) << tol.out;
  const json doc = ParseJson(tol.out);
  EXPECT_EQ(doc["match"], true);
  EXPECT_EQ(doc["summary"]["different"], 0);

  if (!PythonHas("numpy")) GTEST_SKIP() << "/usr/bin/python3 lacks numpy: no float16 oracle";
  // numpy's float16 rounding of the original weights gives the expected max errors.
  const std::string script = tmp.File("f16.py");
  std::ofstream(script) << R"(
import json, struct, sys
import numpy as np
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
out = {}
for name, e in header.items():
    if name == '__metadata__':
        continue
    b, end = e['data_offsets']
    a = np.frombuffer(raw[8 + n + b:8 + n + end], dtype='<f4').astype(np.float64)
    h = a.astype(np.float16).astype(np.float64)
    err = np.abs(a - h)
    out[name] = float(err.max()) if err.size else 0.0
print(json.dumps(out))
)";
  auto py = mp::testing::Run("/usr/bin/python3 " + Q(script) + " " + Q(Gpt2Single()));
  ASSERT_EQ(py.exit_code, 0) << py.err;
  const json want = ParseJson(py.out);
  double max_seen = 0;
  for (const auto& t : doc["tensors"]) {
    const std::string name = t["name"];
    EXPECT_EQ(t["max_abs_error"].get<double>(), want[name].get<double>()) << name;
    max_seen = std::max(max_seen, want[name].get<double>());
  }
  EXPECT_GT(max_seen, 0.0);  // the cast really lost precision somewhere

  // A tolerance below the largest error makes them differ.
  auto tight =
      RunCli("diff --atol " + std::to_string(max_seen / 2) + " " + Q(Gpt2Single()) + " " + Q(h));
  EXPECT_EQ(tight.exit_code, 1);
  EXPECT_NE(tight.out.find("models differ"), std::string::npos);
}

TEST(CliTest, DiffNamesChangedMissingAndExtraTensors) {
  TempDir tmp;
  const std::string a = tmp.File("a.safetensors"), b = tmp.File("b.safetensors");
  WriteModel(a, {F32Tensor("w.same", Shape{2, 2}, {1, 2, 3, 4}),
                 F32Tensor("w.changed", Shape{3}, {1, 2, 3}),
                 F32Tensor("w.reshaped", Shape{2, 3}, {1, 2, 3, 4, 5, 6}),
                 F32Tensor("w.only_a", Shape{1}, {7})});
  WriteModel(b, {F32Tensor("w.same", Shape{2, 2}, {1, 2, 3, 4}),
                 F32Tensor("w.changed", Shape{3}, {1, 2.5f, 3}),
                 F32Tensor("w.reshaped", Shape{3, 2}, {1, 2, 3, 4, 5, 6}),
                 F32Tensor("w.only_b", Shape{1}, {7})});
  auto r = RunCli("diff " + Q(a) + " " + Q(b));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  EXPECT_NE(r.out.find("only in A (1): w.only_a\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("only in B (1): w.only_b\n"), std::string::npos) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\nw\\.changed +different +f32 +\\[3\\] +0\\.5 "
                                                  "+0\\.2 +1\n")))
      << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\nw\\.reshaped +shape-differs +f32 +"
                                                  "\\[2, 3\\] / \\[3, 2\\]")))
      << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\nw\\.same +bit-equal ")));
  EXPECT_NE(r.out.find("models differ"), std::string::npos);

  const json doc = ParseJson(RunCli("diff --json " + Q(a) + " " + Q(b)).out);
  EXPECT_EQ(doc["match"], false);
  EXPECT_EQ(doc["only_in_a"], json::array({"w.only_a"}));
  EXPECT_EQ(doc["only_in_b"], json::array({"w.only_b"}));
  EXPECT_EQ(doc["summary"]["compared"], 3);
  EXPECT_EQ(doc["summary"]["different"], 2);
  EXPECT_EQ(doc["summary"]["bit_equal"], 1);
  for (const auto& t : doc["tensors"]) {
    if (t["name"] == "w.changed") {
      EXPECT_EQ(t["result"], "different");
      EXPECT_EQ(t["max_abs_error"], 0.5);
      EXPECT_EQ(t["max_rel_error"], 0.2);  // |2 - 2.5| / |2.5|
      EXPECT_EQ(t["mismatched_elements"], 1);
      EXPECT_EQ(t["bit_equal"], false);
    } else if (t["name"] == "w.reshaped") {
      EXPECT_EQ(t["shape_a"], json::array({2, 3}));
      EXPECT_EQ(t["shape_b"], json::array({3, 2}));
      EXPECT_EQ(t["max_abs_error"], nullptr);
    }
  }
  // The changed tensor is within --atol 0.5, but the names still differ.
  const json tol = ParseJson(RunCli("diff --json --atol 0.5 " + Q(a) + " " + Q(b)).out);
  EXPECT_EQ(tol["summary"]["different"], 1);  // only the reshaped tensor
  EXPECT_EQ(tol["match"], false);
}

TEST(CliTest, DiffToleranceRules) {
  TempDir tmp;
  const float nan1 = std::nanf("1"), nan2 = std::nanf("2");
  uint32_t bits1, bits2;
  std::memcpy(&bits1, &nan1, 4);
  std::memcpy(&bits2, &nan2, 4);
  ASSERT_NE(bits1, bits2);
  const std::string a = tmp.File("a.safetensors"), b = tmp.File("b.safetensors");
  WriteModel(a, {F32Tensor("x", Shape{4}, {nan1, -0.0f, 101, INFINITY})});
  WriteModel(b, {F32Tensor("x", Shape{4}, {nan2, 0.0f, 100, INFINITY})});
  auto exact = ParseJson(RunCli("diff --json " + Q(a) + " " + Q(b)).out);
  EXPECT_EQ(exact["match"], false);
  EXPECT_EQ(exact["tensors"][0]["mismatched_elements"], 1);  // only 101 vs 100
  EXPECT_EQ(exact["tensors"][0]["max_abs_error"], 1.0);
  EXPECT_EQ(exact["tensors"][0]["max_rel_error"], 0.01);
  EXPECT_EQ(RunCli("diff --rtol 0.01 " + Q(a) + " " + Q(b)).exit_code, 0);
  EXPECT_EQ(RunCli("diff --rtol 0.009 " + Q(a) + " " + Q(b)).exit_code, 1);
  EXPECT_EQ(RunCli("diff --atol 1 " + Q(a) + " " + Q(b)).exit_code, 0);

  // NaN payloads and signed zeros differ in bits but are equal values.
  const std::string c = tmp.File("c.safetensors"), d = tmp.File("d.safetensors");
  WriteModel(c, {F32Tensor("x", Shape{2}, {nan1, -0.0f})});
  WriteModel(d, {F32Tensor("x", Shape{2}, {nan2, 0.0f})});
  auto eq = RunCli("diff --json " + Q(c) + " " + Q(d));
  EXPECT_EQ(eq.exit_code, 0) << eq.out;
  EXPECT_EQ(ParseJson(eq.out)["tensors"][0]["result"], "equal");

  // An infinity matches only itself, whatever the tolerance.
  const std::string e = tmp.File("e.safetensors");
  WriteModel(e, {F32Tensor("x", Shape{2}, {nan1, 1e30f})});
  const std::string f = tmp.File("f.safetensors");
  WriteModel(f, {F32Tensor("x", Shape{2}, {nan1, INFINITY})});
  EXPECT_EQ(RunCli("diff --rtol 1000 " + Q(e) + " " + Q(f)).exit_code, 1);

  // Integers past 2^53 are compared exactly, not through doubles.
  const int64_t big = int64_t{1} << 53;
  const std::string g = tmp.File("g.safetensors"), h = tmp.File("h.safetensors");
  WriteModel(g, {I64Tensor("i", {big, 5})});
  WriteModel(h, {I64Tensor("i", {big + 1, 5})});
  auto ints = RunCli("diff --json " + Q(g) + " " + Q(h));
  EXPECT_EQ(ints.exit_code, 1);
  EXPECT_EQ(ParseJson(ints.out)["tensors"][0]["result"], "different");
}

// ---------------------------------------------------------------------------------------------
// verify and hash

TEST(CliTest, VerifyShardedGoldenMatchesSha256sum) {
  auto r = RunCli("verify --json " + Q(Gpt2ShardedDir()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty());
  const json doc = ParseJson(r.out);
  EXPECT_EQ(doc["ok"], true);
  EXPECT_EQ(doc["tensor_count"], 28);
  ASSERT_EQ(doc["files"].size(), 7u);
  for (const auto& f : doc["files"]) {
    auto peer = mp::testing::Run("sha256sum " + Q(f["path"]));
    ASSERT_EQ(peer.exit_code, 0);
    EXPECT_EQ(f["sha256"], "sha256:" + peer.out.substr(0, 64)) << f["path"];
  }
  auto idx = mp::testing::Run("sha256sum " + Q(Gpt2ShardedDir() + "/model.safetensors.index.json"));
  EXPECT_EQ(doc["index"]["sha256"], "sha256:" + idx.out.substr(0, 64));

  auto human = RunCli("verify " + Q(Gpt2Single()));
  ASSERT_EQ(human.exit_code, 0) << human.err;
  auto peer = mp::testing::Run("sha256sum " + Q(Gpt2Single()));
  EXPECT_NE(human.out.find("sha256:" + peer.out.substr(0, 64) + "  " + Gpt2Single() + "\n"),
            std::string::npos)
      << human.out;
  EXPECT_NE(human.out.find("OK: " + Gpt2Single() +
                           " (safetensors): 28 tensors, 482,304 bytes, "
                           "1 file verified\n"),
            std::string::npos)
      << human.out;
}

TEST(CliTest, HashIsTheSameForSingleAndShardedWeights) {
  auto single = RunCli("hash --json " + Q(Gpt2Single()));
  auto sharded = RunCli("hash --json " + Q(Gpt2ShardedDir() + "/model.safetensors.index.json"));
  ASSERT_EQ(single.exit_code, 0) << single.err;
  ASSERT_EQ(sharded.exit_code, 0) << sharded.err;
  const json s = ParseJson(single.out), m = ParseJson(sharded.out);
  const auto ds = TensorDigests(s), dm = TensorDigests(m);
  EXPECT_EQ(ds.size(), 28u);
  EXPECT_EQ(ds, dm);
  EXPECT_NE(s["files"][0]["sha256"], m["files"][0]["sha256"]);  // the containers differ
  for (const auto& [name, digest] : ds) {
    EXPECT_TRUE(std::regex_match(digest, std::regex("sha256:[0-9a-f]{64}"))) << digest;
  }
  // verify reports the same tensor digests as hash.
  const json v = ParseJson(RunCli("verify --json " + Q(Gpt2Single())).out);
  EXPECT_EQ(TensorDigests(v), ds);
  // Human output: one "sha256:<hex>  <name>" line per tensor.
  auto human = RunCli("hash " + Q(Gpt2Single()));
  EXPECT_NE(human.out.find("  " + ds.at("transformer.wte.weight") + "  transformer.wte.weight\n"),
            std::string::npos);
}

TEST(CliTest, TensorDigestMatchesHashlibOverTheCanonicalEncoding) {
  if (!PythonHas("hashlib")) GTEST_SKIP() << "/usr/bin/python3 is missing";
  TempDir tmp;
  const std::string script = tmp.File("digest.py");
  // docs/FORMATS.md: "modelport.tensor.v1\n" + dtype + "\n" + dims joined by "," + "\n" + bytes.
  std::ofstream(script) << R"(
import hashlib, json, struct, sys
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
names = {'F64': 'f64', 'F32': 'f32', 'F16': 'f16', 'BF16': 'bf16', 'I64': 'i64', 'I32': 'i32',
         'I16': 'i16', 'I8': 'i8', 'U8': 'u8', 'U16': 'u16', 'U32': 'u32', 'U64': 'u64',
         'BOOL': 'bool', 'F8_E4M3': 'f8_e4m3', 'F8_E5M2': 'f8_e5m2', 'C64': 'c64'}
out = {}
for name, e in header.items():
    if name == '__metadata__':
        continue
    b, end = e['data_offsets']
    h = hashlib.sha256()
    h.update(('modelport.tensor.v1\n%s\n%s\n' % (names[e['dtype']],
              ','.join(str(d) for d in e['shape']))).encode())
    h.update(raw[8 + n + b:8 + n + end])
    out[name] = 'sha256:' + h.hexdigest()
print(json.dumps(out))
)";
  auto py = mp::testing::Run("/usr/bin/python3 " + Q(script) + " " + Q(GoldenSt()));
  ASSERT_EQ(py.exit_code, 0) << py.err;
  const json want = ParseJson(py.out);
  auto r = RunCli("hash --json " + Q(GoldenSt()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto got = TensorDigests(ParseJson(r.out));
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, digest] : want.items()) EXPECT_EQ(got.at(name), digest) << name;
}

TEST(CliTest, VerifyRejectsCorruptFilesWithExit4) {
  TempDir tmp;
  const std::vector<uint8_t> good = ReadBytes(Gpt2Single());
  const std::string flipped = tmp.File("flipped.safetensors");
  std::vector<uint8_t> bytes = good;
  bytes[8] = 'X';  // the header must begin with '{'
  WriteBytes(flipped, bytes);
  auto r = RunCli("verify " + Q(flipped));
  EXPECT_EQ(r.exit_code, 4);
  ExpectOneErrorLine(r, {flipped, "'{'"});
  EXPECT_TRUE(r.out.empty()) << r.out;

  const std::string truncated = tmp.File("truncated.safetensors");
  WriteBytes(truncated, std::vector<uint8_t>(good.begin(), good.end() - 100));
  auto t = RunCli("verify " + Q(truncated));
  EXPECT_EQ(t.exit_code, 4);
  ExpectOneErrorLine(t, {truncated});

  auto j = RunCli("verify --json " + Q(truncated));
  EXPECT_EQ(j.exit_code, 4);
  ExpectOneErrorLine(j, {truncated});
  const json doc = ParseJson(j.out);
  EXPECT_EQ(doc["ok"], false);
  EXPECT_EQ(doc["error"]["code"], "Corrupt");

  // A sharded model with one shard's data cut short.
  const std::string dir = tmp.File("sharded");
  fs::copy(Gpt2ShardedDir(), dir);
  const std::string shard = dir + "/model-00003-of-00007.safetensors";
  fs::permissions(shard, fs::perms::owner_write, fs::perm_options::add);
  const auto shard_bytes = ReadBytes(shard);
  WriteBytes(shard, std::vector<uint8_t>(shard_bytes.begin(), shard_bytes.end() - 1));
  auto s = RunCli("verify " + Q(dir));
  EXPECT_EQ(s.exit_code, 4);
  ExpectOneErrorLine(s, {"model-00003-of-00007.safetensors"});
}

// ---------------------------------------------------------------------------------------------
// convert: overwriting, atomicity, shards, sizes

TEST(CliTest, ConvertRefusesToOverwriteWithoutForce) {
  TempDir tmp;
  const std::string dst = tmp.File("existing.safetensors");
  WriteBytes(dst, {'o', 'l', 'd'});
  auto r = RunCli("convert " + Q(Gpt2Single()) + " " + Q(dst));
  EXPECT_EQ(r.exit_code, 6);
  ExpectOneErrorLine(r, {dst, "--force"});
  EXPECT_EQ(ReadBytes(dst), (std::vector<uint8_t>{'o', 'l', 'd'}));
  EXPECT_EQ(Listing(tmp.path().string()), (std::set<std::string>{"existing.safetensors"}));

  auto f = RunCli("convert --force " + Q(Gpt2Single()) + " " + Q(dst));
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_EQ(RunCli("diff " + Q(Gpt2Single()) + " " + Q(dst)).exit_code, 0);
  EXPECT_EQ(Listing(tmp.path().string()), (std::set<std::string>{"existing.safetensors"}));

  // Writing onto the source itself is refused even with --force.
  auto self = RunCli("convert --force " + Q(dst) + " " + Q(dst));
  EXPECT_EQ(self.exit_code, 2);
  ExpectOneErrorLine(self, {dst, "source"});
}

TEST(CliTest, FailedConvertLeavesNoOutput) {
  TempDir tmp;
  std::vector<uint8_t> bytes = ReadBytes(Gpt2Single());
  bytes.resize(bytes.size() - 4);
  const std::string bad = tmp.File("bad.safetensors");
  WriteBytes(bad, bytes);
  const auto before = Listing(tmp.path().string());
  auto r = RunCli("convert " + Q(bad) + " " + Q(tmp.File("out.safetensors")));
  EXPECT_EQ(r.exit_code, 4);
  ExpectOneErrorLine(r, {bad});
  auto s = RunCli("convert --shard-size 100KB " + Q(bad) + " " + Q(tmp.File("shards")));
  EXPECT_EQ(s.exit_code, 4);
  ExpectOneErrorLine(s, {bad});
  EXPECT_EQ(Listing(tmp.path().string()), before);  // no DST, no folder, no temporary files
}

TEST(CliTest, ShardedConvertWritesHuggingFaceLayout) {
  TempDir tmp;
  const std::string dir = tmp.File("out");
  auto r = RunCli("convert --json --shard-size 100KB " + Q(Gpt2Single()) + " " + Q(dir));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json conv = ParseJson(r.out);
  EXPECT_EQ(conv["shard_size"], 100000);
  const size_t n = conv["files"].size();
  ASSERT_GE(n, 5u);  // 482,304 bytes in shards of at most 100,000
  std::set<std::string> expected_names = {"model.safetensors.index.json"};
  for (size_t k = 1; k <= n; ++k) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", k, n);
    expected_names.insert(name);
  }
  EXPECT_EQ(Listing(dir), expected_names);
  EXPECT_EQ(conv["index"], dir + "/model.safetensors.index.json");

  const json index = ReadJsonFile(dir + "/model.safetensors.index.json");
  EXPECT_EQ(index["metadata"]["total_size"], 482304);
  EXPECT_EQ(index["weight_map"].size(), 28u);
  // Each shard holds at most 100,000 tensor bytes (no tensor here is larger).
  for (const auto& name : expected_names) {
    if (name == "model.safetensors.index.json") continue;
    const RawSafetensors raw = ReadRawSafetensors(dir + "/" + name);
    EXPECT_LE(raw.bytes.size() - raw.data_start, 100000u) << name;
    for (const auto& [tensor, e] : raw.header.items()) {
      if (tensor != "__metadata__") {
        EXPECT_EQ(index["weight_map"][tensor], name) << tensor;
      }
    }
  }
  EXPECT_EQ(RunCli("diff " + Q(Gpt2Single()) + " " + Q(dir)).exit_code, 0);
  EXPECT_EQ(RunCli("verify " + Q(dir + "/model.safetensors.index.json")).exit_code, 0);
  const json inspect = ParseJson(RunCli("inspect --json " + Q(dir)).out);
  EXPECT_EQ(inspect["shards"], n);

  // With --shard-size, DST names a folder or an index, never a model file.
  auto file_dst =
      RunCli("convert --shard-size 100KB " + Q(Gpt2Single()) + " " + Q(tmp.File("x.safetensors")));
  EXPECT_EQ(file_dst.exit_code, 2);
  ExpectOneErrorLine(file_dst, {tmp.File("x.safetensors"), "--shard-size"});

  // Converting again into the same folder needs --force.
  auto again = RunCli("convert --shard-size 100KB " + Q(Gpt2Single()) + " " + Q(dir));
  EXPECT_EQ(again.exit_code, 6);
  ExpectOneErrorLine(again, {dir});
}

TEST(CliTest, ShardSizeUnits) {
  const std::vector<std::pair<std::string, uint64_t>> cases = {
      {"5GB", 5'000'000'000},     {"500MB", 500'000'000}, {"2GiB", uint64_t{2} << 30},
      {"1.5 MB", 1'500'000},      {"123", 123},           {"64kib", 64 * 1024},
      {"1TB", 1'000'000'000'000}, {"0.5KiB", 512},
  };
  for (const auto& [text, bytes] : cases) {
    TempDir tmp;
    auto r = RunCli("convert --json --shard-size " + Q(text) + " " + Q(GoldenSt()) + " " +
                    Q(tmp.File("o")));
    ASSERT_EQ(r.exit_code, 0) << text << ": " << r.err;
    EXPECT_EQ(ParseJson(r.out)["shard_size"], bytes) << text;
  }
}

TEST(CliTest, ConvertKeepsEveryGoldenDtypeAndMetadata) {
  TempDir tmp;
  const std::string out = tmp.File("copy.safetensors");
  ASSERT_EQ(RunCli("convert " + Q(GoldenSt()) + " " + Q(out)).exit_code, 0);
  auto d = RunCli("diff --json " + Q(GoldenSt()) + " " + Q(out));
  EXPECT_EQ(d.exit_code, 0) << d.out;
  const json doc = ParseJson(d.out);
  EXPECT_EQ(doc["metadata_equal"], true);
  EXPECT_EQ(doc["summary"]["bit_equal"], 20);
}

TEST(CliTest, ConvertMetaAddsTypedKeys) {
  mp::testing::TempDir dir;
  const std::string out = dir.File("renamed.safetensors");
  auto c = RunCli("convert " + Q(Gpt2Single()) + " " + Q(out) +
                  " --meta general.name=tiny --meta context_length=4096 --meta format=np");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const json meta = ParseJson(RunCli("inspect --json " + Q(out)).out)["metadata"];
  EXPECT_EQ(meta["general.name"], "tiny");
  EXPECT_EQ(meta["format"], "np");  // replaced
  // safetensors stores strings; the JSON text of a typed value survives as such.
  EXPECT_EQ(meta["context_length"], "4096");

  auto bad =
      RunCli("convert " + Q(Gpt2Single()) + " " + Q(dir.File("x.safetensors")) + " --meta novalue");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--meta 'novalue': expected KEY=VALUE"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(dir.File("x.safetensors")));
}

TEST(CliTest, ConvertMetaIsTypedInGguf) {
  const std::string golden = (GoldenDir() / "gguf" / "llama-2-tiny-random.gguf").string();
  if (!fs::exists(golden)) GTEST_SKIP() << "no " << golden;
  mp::testing::TempDir dir;
  const std::string out = dir.File("renamed.gguf");
  auto c = RunCli("convert " + Q(golden) + " " + Q(out) +
                  " --meta general.name=renamed --meta llama.context_length=4096");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const json meta = ParseJson(RunCli("inspect --json " + Q(out)).out)["metadata"];
  EXPECT_EQ(meta["general.name"], "renamed");
  EXPECT_EQ(meta["llama.context_length"], 4096);     // a number, not the string "4096"
  EXPECT_EQ(meta["general.architecture"], "llama");  // untouched keys survive
}

}  // namespace
}  // namespace mp::testing
