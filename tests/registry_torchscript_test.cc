// TorchScript archives in the registry: pushed, they keep their code, pickles and constants as a
// graph blob and their storages as deduplicated tensors; exported to .pt they are the archive
// again, which Debian's torch loads with torch.jit.load and runs to the same outputs bit for bit
// (tests/oracle/torchscript_registry.py makes the models and checks the exports).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "modelport/core/file.h"
#include "modelport/core/tensor.h"
#include "modelport/formats/zip/zip.h"
#include "test_util.h"

namespace mp {
namespace {

using testing::CommandResult;
using testing::TempDir;

TEST(RegistryTorchScript, ScriptedModelsExportAsTheArchiveTorchRuns) {
  if (!testing::PythonHas("torch numpy")) GTEST_SKIP() << "needs Debian's python3-torch";
  TempDir dir;
  const std::string script =
      (testing::SourceDir() / "tests/oracle/torchscript_registry.py").string();
  CommandResult r =
      testing::Run("/usr/bin/python3 '" + script + "' make '" + dir.path().string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string reg = " --registry '" + dir.File("reg") + "'";
  ASSERT_EQ(testing::RunCli("registry init" + reg).exit_code, 0);
  r = testing::RunCli("registry push mlp '" + dir.File("s1.pt") + "' --json" + reg);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = testing::RunCli("registry push mlp '" + dir.File("s2.pt") + "' --from mlp@1 --json" + reg);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The fine-tune changed one of five tensors: it, the second archive's graph and manifest are
  // the only new blobs (5 tensors + graph + manifest for the first push, 3 for the second).
  const Json v2 = Json::parse(r.out);
  EXPECT_EQ(v2.at("tensors"), 5);
  r = testing::RunCli("registry du --json" + reg);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).at("blobs"), 10) << r.out;

  for (const char* k : {"1", "2"}) {
    r = testing::RunCli("registry export mlp@" + std::string(k) + " '" +
                        dir.File(std::string("e") + k + ".pt") + "'" + reg);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  r = testing::Run("/usr/bin/python3 '" + script + "' check '" + dir.path().string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json check = Json::parse(r.out);
  EXPECT_TRUE(check.at("equal1")) << check;
  EXPECT_TRUE(check.at("equal2")) << check;
  // Every record (code, debug info, pickles, constants, storages) comes back byte for byte.
  EXPECT_TRUE(check.at("records1").empty()) << check;
  EXPECT_TRUE(check.at("records2").empty()) << check;
  EXPECT_EQ(check.at("count1"), Json::array({14, 14})) << check;

  // A fsck sees the graph blobs; exporting to safetensors gives the tensors alone.
  EXPECT_EQ(testing::RunCli("registry fsck" + reg).exit_code, 0);
  r = testing::RunCli("registry export mlp@2 '" + dir.File("w.safetensors") + "'" + reg);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = testing::RunCli("inspect '" + dir.File("e2.pt") + "' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).at("tensors").size(), 5u);

  // The graph's record list is JSON: an archive with a record name that is not UTF-8 (the s1
  // archive plus one such record) is refused with one line, and nothing is registered.
  {
    auto in = zip::Reader::Open(InputFile::Open(dir.File("s1.pt")).value()).value();
    auto out = zip::Writer::Create(dir.File("bad.pt")).value();
    for (size_t e = 0; e < in->entries().size(); ++e) {
      auto bytes = in->Read(e).value();
      const std::span<const uint8_t> part = bytes->span();
      ASSERT_TRUE(out->AddStored(in->entries()[e].name, std::span(&part, 1), 64).ok());
    }
    const std::string& first = in->entries().front().name;
    const std::string extra = first.substr(0, first.find('/')) + "/extra/notes\xff\xfe.txt";
    const uint8_t text[] = {'h', 'i'};
    const std::span<const uint8_t> part(text);
    ASSERT_TRUE(out->AddStored(extra, std::span(&part, 1)).ok());
    ASSERT_TRUE(out->Finish(false).ok());
  }
  r = testing::RunCli("registry push bad '" + dir.File("bad.pt") + "'" + reg);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("has a name that is not valid UTF-8"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = testing::RunCli("registry list --json" + reg);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("\"bad\""), std::string::npos) << r.out;
}

}  // namespace
}  // namespace mp
