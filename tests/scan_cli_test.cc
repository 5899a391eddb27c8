// `modelport scan` end to end, on malicious files made by Python itself (tests/oracle/
// malicious.py: pickle, torch 1.13 and numpy write them) and proven real by loading each one
// with the real loader (pickle.load, torch.load, np.load(allow_pickle=True)) and seeing its
// marker file appear. Then modelport scans, inspects, converts and verifies every one, and
// the markers must never appear again. Also: exit codes, --json, folders and links.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace mp::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;
using nlohmann::json;

std::string Q(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

json ParseJson(const std::string& text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(doc.is_discarded()) << "not JSON: " << text;
  return doc;
}

std::string Script() { return (SourceDir() / "tests" / "oracle" / "malicious.py").string(); }

// Markers are named MARKER-<payload>; none may exist after modelport touched the files.
std::vector<std::string> Markers(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("MARKER-", 0) == 0)
      found.push_back(e.path().filename().string());
  return found;
}

class ScanCliTest : public ::testing::Test {
 protected:
  // The files are made, and proven, once for the suite.
  static void SetUpTestSuite() {
    if (!PythonHas("torch numpy")) return;
    dir_ = new TempDir();
    auto made =
        ::mp::testing::Run("/usr/bin/python3 " + Q(Script()) + " make " + Q(dir_->path().string()));
    make_error_ = made.exit_code == 0 ? "" : made.err;
    if (!make_error_.empty()) return;
    std::ifstream in(dir_->File("manifest.json"));
    std::stringstream ss;
    ss << in.rdbuf();
    manifest_ = json::parse(ss.str(), nullptr, false);
    proof_ = ::mp::testing::Run("/usr/bin/python3 " + Q(Script()) + " prove " +
                                Q(dir_->path().string()));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!PythonHas("torch numpy")) GTEST_SKIP() << "/usr/bin/python3 lacks torch or numpy";
    ASSERT_TRUE(make_error_.empty()) << make_error_;
    ASSERT_TRUE(manifest_.is_array());
  }
  static std::string File(const std::string& name) { return dir_->File(name); }

  static TempDir* dir_;
  static std::string make_error_;
  static json manifest_;
  static CommandResult proof_;
};

TempDir* ScanCliTest::dir_ = nullptr;
std::string ScanCliTest::make_error_;
json ScanCliTest::manifest_;
CommandResult ScanCliTest::proof_;

TEST_F(ScanCliTest, PayloadsAreRealWhenPythonLoadsThem) {
  // pickle.load / torch.load / np.load ran each payload: its marker appeared (then was removed).
  EXPECT_EQ(proof_.exit_code, 0) << proof_.out << proof_.err;
  const json proved = ParseJson(proof_.out);
  size_t with_loader = 0;
  for (const json& m : manifest_) {
    if (m["loader"].is_null()) continue;
    ++with_loader;
    EXPECT_EQ(proved.value(m["file"].get<std::string>(), false), true) << m["file"];
  }
  EXPECT_GE(with_loader, 24u);
  EXPECT_TRUE(Markers(dir_->path()).empty());
}

TEST_F(ScanCliTest, EveryMaliciousFileIsUnsafeAndNamesTheGlobal) {
  std::set<std::string> files;
  for (const json& m : manifest_) {
    const std::string name = m["file"];
    files.insert(name);
    SCOPED_TRACE(name);
    auto r = RunCli("scan --json " + Q(File(name)));
    EXPECT_EQ(r.exit_code, 4) << r.out << r.err;
    const json doc = ParseJson(r.out);
    ASSERT_EQ(doc["files"].size(), 1u);
    const json& f = doc["files"][0];
    EXPECT_EQ(f["verdict"], "unsafe");
    EXPECT_EQ(doc["exit_code"], 4);
    std::string unsafe;
    for (const json& reason : f["reasons"])
      if (reason["severity"] == "unsafe") unsafe += reason["reason"].get<std::string>() + "\n";
    for (const json& g : m["refused"]) {
      const std::string global = g;
      EXPECT_NE(unsafe.find("'" + global + "'"), std::string::npos) << global << " in\n" << unsafe;
      bool listed = false;
      for (const json& i : f["imports"]) listed |= i["name"] == global && i["allowed"] == false;
      EXPECT_TRUE(listed) << global;
    }
    if (!m["reason"].is_null()) {
      EXPECT_NE(unsafe.find(m["reason"].get<std::string>()), std::string::npos) << unsafe;
    }
    // The human form says the same.
    auto h = RunCli("scan " + Q(File(name)));
    EXPECT_EQ(h.exit_code, 4);
    EXPECT_NE(h.out.find(": unsafe ("), std::string::npos) << h.out;
  }
  // Each attack the issue names is among them.
  for (const char* name : {"reduce_p0.pkl",         "reduce_p2.pkl",        "reduce_p4.pkl",
                           "inst_p0.pkl",           "obj_p1.pkl",           "getattr.pkl",
                           "pkgutil.pkl",           "importlib.pkl",        "marshal.pkl",
                           "memo_stack_global.pkl", "no_stop.pkl",          "concatenated.pkl",
                           "after_big_int.pkl",     "after_hex_int.pkl",    "polyglot.gguf",
                           "torch_evil.pt",         "tamper_local_name.pt", "tamper_local_flag.pt",
                           "duplicate_data_pkl.pt", "zip_slip.pt",          "extra_pkl.pt",
                           "replaced_data_pkl.pt",  "legacy_evil.pt",       "tar_evil.tar",
                           "object_array.npy",      "object_array_npz.npz"})
    EXPECT_EQ(files.count(name), 1u) << name;
  EXPECT_TRUE(Markers(dir_->path()).empty());
}

TEST_F(ScanCliTest, TamperedArchivesSayHow) {
  auto r = RunCli("scan --json " + Q(File("tamper_local_name.pt")) + " " +
                  Q(File("tamper_local_flag.pt")) + " " + Q(File("duplicate_data_pkl.pt")));
  EXPECT_EQ(r.exit_code, 4);
  const json doc = ParseJson(r.out);
  ASSERT_EQ(doc["files"].size(), 3u);
  const std::vector<std::string> expect = {
      "differs from the local header name 'torch_evil/data.txt'",
      "encryption flag differs between the central directory and the local header",
      "name appears more than once"};
  for (size_t i = 0; i < 3; ++i) {
    std::string suspicious;
    for (const json& reason : doc["files"][i]["reasons"])
      if (reason["severity"] == "suspicious") suspicious += reason["reason"].get<std::string>();
    EXPECT_NE(suspicious.find(expect[i]), std::string::npos) << suspicious;
  }
  EXPECT_EQ(doc["files"][2]["pickles"].size(), 2u);  // both data.pkl copies
}

TEST_F(ScanCliTest, InspectConvertAndVerifyRefuseTheMaliciousCheckpoints) {
  // Plain malicious checkpoints: refused naming the global (exit 4), nothing written.
  for (const std::string name : {"torch_evil.pt", "legacy_evil.pt", "replaced_data_pkl.pt"}) {
    SCOPED_TRACE(name);
    const std::string out = File(name + ".out.safetensors");
    for (const std::string& cmd : {"inspect " + Q(File(name)), "verify " + Q(File(name)),
                                   "convert " + Q(File(name)) + " " + Q(out)}) {
      auto r = RunCli(cmd);
      EXPECT_EQ(r.exit_code, 4) << cmd << "\n" << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      EXPECT_EQ(r.err.rfind("modelport: error: ", 0), 0u) << r.err;
      EXPECT_NE(r.err.find("'posix.system'"), std::string::npos) << r.err;
      EXPECT_TRUE(r.out.empty()) << r.out;
    }
    EXPECT_FALSE(fs::exists(out));
  }
  // Tampered and zip-slip archives: refused by the zip reader before any pickle is read.
  for (const std::string name :
       {"tamper_local_name.pt", "tamper_local_flag.pt", "duplicate_data_pkl.pt", "zip_slip.pt",
        "tar_evil.tar", "object_array.npy", "object_array_npz.npz"}) {
    SCOPED_TRACE(name);
    const std::string out = File(name + ".out.safetensors");
    for (const std::string& cmd : {"inspect " + Q(File(name)), "verify " + Q(File(name)),
                                   "convert " + Q(File(name)) + " " + Q(out)}) {
      auto r = RunCli(cmd);
      EXPECT_NE(r.exit_code, 0) << cmd;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
    EXPECT_FALSE(fs::exists(out));
  }
  EXPECT_TRUE(Markers(dir_->path()).empty());
}

TEST_F(ScanCliTest, FolderScanIsRecursiveAndSkipsLinks) {
  TempDir d;
  fs::create_directories(d.path() / "sub" / "deeper");
  fs::copy_file(File("reduce_p2.pkl"), d.path() / "sub" / "deeper" / "evil.pkl");
  fs::create_symlink(File("reduce_p2.pkl"), d.path() / "link.pkl");
  auto r = RunCli("scan --json " + Q(d.path().string()));
  EXPECT_EQ(r.exit_code, 4) << r.out;
  json doc = ParseJson(r.out);
  ASSERT_EQ(doc["files"].size(), 1u);
  EXPECT_EQ(doc["files"][0]["path"], (d.path() / "sub" / "deeper" / "evil.pkl").string());
  ASSERT_EQ(doc["skipped"].size(), 1u);
  EXPECT_EQ(doc["skipped"][0]["path"], (d.path() / "link.pkl").string());
  EXPECT_EQ(doc["skipped"][0]["reason"], "symbolic link, not followed");
  EXPECT_EQ(doc["summary"]["unsafe"], 1);
  EXPECT_EQ(doc["summary"]["skipped"], 1);
  // A link named on the command line is scanned.
  r = RunCli("scan " + Q((d.path() / "link.pkl").string()));
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_NE(r.out.find("unsafe"), std::string::npos);
  // Only the link left: nothing scanned, exit 0, the skip reported.
  fs::remove_all(d.path() / "sub");
  r = RunCli("scan " + Q(d.path().string()));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("link.pkl: skipped (symbolic link, not followed)"), std::string::npos)
      << r.out;
}

TEST(ScanCli, ExitCodesAndHelp) {
  TempDir d;
  const std::string safe = d.File("safe.pkl"), broken = d.File("broken.pkl"),
                    evil = d.File("evil.pkl");
  WriteBytes(safe, {0x80, 0x02, '}', '.'});
  WriteBytes(broken, {0x80, 0x02, '}', 'q', 0x00});  // no STOP
  const std::string e =
      "\x80\x02"
      "cposix\nsystem\nX\x04\x00\x00\x00true\x85R."s;
  WriteBytes(evil, std::vector<uint8_t>(e.begin(), e.end()));
  EXPECT_EQ(RunCli("scan " + Q(safe)).exit_code, 0);
  EXPECT_EQ(RunCli("scan " + Q(broken)).exit_code, 1);
  EXPECT_EQ(RunCli("scan " + Q(safe) + " " + Q(broken)).exit_code, 1);
  EXPECT_EQ(RunCli("scan " + Q(safe) + " " + Q(broken) + " " + Q(evil)).exit_code, 4);
  auto missing = RunCli("scan " + Q(safe) + " " + Q(d.File("nope")));
  EXPECT_EQ(missing.exit_code, 3);
  EXPECT_EQ(missing.err, "modelport: error: " + d.File("nope") + ": no such file or folder\n");
  EXPECT_NE(missing.out.find("safe.pkl: safe (pickle, 1 pickle)"), std::string::npos)
      << missing.out;
  // Unsafe wins over a missing path.
  EXPECT_EQ(RunCli("scan " + Q(evil) + " " + Q(d.File("nope"))).exit_code, 4);
  EXPECT_EQ(RunCli("scan").exit_code, 2);
  EXPECT_EQ(RunCli("scan --bogus " + Q(safe)).exit_code, 2);
  auto help = RunCli("scan --help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* text : {"Exit codes of scan: 0 all safe or without pickles, 1 something "
                           "suspicious and nothing unsafe, 4 something unsafe",
                           "--json", "symbolic links"})
    EXPECT_NE(help.out.find(text), std::string::npos) << text << "\n" << help.out;
}

TEST(ScanCli, GoldenTorchAndSafetensorsFolders) {
  MP_SKIP_WITHOUT_GOLDEN();
  auto r = RunCli("scan --json " + Q((GoldenDir() / "torch").string()) + " " +
                  Q((GoldenDir() / "transformers" / "tiny-gpt2-bin-sharded").string()) + " " +
                  Q((GoldenDir() / "safetensors").string()));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const json doc = ParseJson(r.out);
  size_t safe = 0;
  for (const json& f : doc["files"]) {
    const std::string path = f["path"];
    if (path.ends_with(".pt") || path.ends_with(".bin")) {
      EXPECT_EQ(f["verdict"], "safe") << path;
      EXPECT_EQ(f["format"], "torch") << path;
      ++safe;
    } else {
      EXPECT_EQ(f["verdict"], "no pickle") << path;
    }
    if (path.ends_with(".safetensors")) {
      EXPECT_EQ(f["format"], "safetensors") << path;
    }
  }
  EXPECT_EQ(safe, 5u);
  EXPECT_EQ(doc["summary"]["safe"], 5);
}

}  // namespace
}  // namespace mp::testing
