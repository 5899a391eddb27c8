// Fault injection for `modelport registry push` (tests/fault/fault_shim.cc, LD_PRELOAD): for
// every N, the Nth write / fsync / rename of a push fails, with EIO once or with ENOSPC from
// then on (a full disk). Each run must end with success, or with one clear error line and a
// documented exit code; afterwards fsck is clean, a version is listed only if it is whole, and
// the registry takes the next push.
#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <string>

#include "modelport/formats/format.h"
#include "modelport/registry/registry.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::TempDir;

std::string Quote(const std::string& s) { return "'" + s + "'"; }

// The CLI under the shim. ASan builds check that their runtime loads first; the shim is
// harmless to it, so that check is turned off for these runs.
CommandResult PushWithFault(const std::string& root, const std::string& model, long at, int err,
                            bool sticky, const std::string& count_file = "") {
  std::string env =
      "LD_PRELOAD=" + Quote(MODELPORT_FAULT_SHIM) +
      " ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0 MP_FAULT_AT=" + std::to_string(at) +
      " MP_FAULT_ERRNO=" + std::to_string(err) + " MP_FAULT_STICKY=" + (sticky ? "1" : "0");
  if (!count_file.empty()) env += " MP_FAULT_COUNT_FILE=" + Quote(count_file);
  return testing::Run(env + " " + Quote(MODELPORT_CLI) + " registry push m " + Quote(model) +
                      " --registry " + Quote(root));
}

TEST(RegistryFault, EveryFailingWriteFsyncOrRenameLeavesTheRegistryConsistent) {
  if (!fs::exists(MODELPORT_FAULT_SHIM)) GTEST_SKIP() << "the fault shim was not built";
  TempDir dir;
  const std::string model = (testing::SourceDir() / "tests/data/tiny-gpt2").string();
  auto original = OpenModel(model);
  ASSERT_TRUE(original.ok());
  const std::string tmpl = dir.File("template");
  ASSERT_TRUE(registry::Registry::Init(tmpl, "").ok());

  // How many calls a push makes when nothing fails.
  const std::string count_file = dir.File("count");
  {
    const std::string root = dir.File("counted");
    fs::copy(tmpl, root, fs::copy_options::recursive);
    CommandResult r = PushWithFault(root, model, 0, EIO, false, count_file);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const long total = std::stol(testing::Run("cat " + Quote(count_file)).out);
  ASSERT_GT(total, 20);

  int failed_runs = 0;
  for (long n = 1; n <= total; ++n) {
    const bool sticky = n % 2 == 0;
    const int err = sticky ? ENOSPC : EIO;
    SCOPED_TRACE("call " + std::to_string(n) + (sticky ? " and after: ENOSPC" : ": EIO"));
    const std::string root = dir.File("r" + std::to_string(n));
    fs::copy(tmpl, root, fs::copy_options::recursive);
    CommandResult r = PushWithFault(root, model, n, err, sticky);
    if (r.exit_code != 0) {
      ++failed_runs;
      // One line, a documented code (I/O error, or a rejected/corrupt read), no crash.
      EXPECT_TRUE(r.exit_code == 6 || r.exit_code == 4) << r.exit_code << ": " << r.err;
      EXPECT_EQ(r.err.rfind("modelport: error: ", 0), 0u) << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
    auto reg = registry::Registry::Open(root, "");
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    auto fsck = (*reg)->Fsck();
    ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
    EXPECT_TRUE(fsck->problems.empty()) << fsck->problems[0];
    auto versions = (*reg)->ListVersions("m");
    const size_t listed = versions.ok() ? versions->size() : 0;
    if (r.exit_code == 0) {
      EXPECT_EQ(listed, 1u);
    }
    EXPECT_LE(listed, 1u);
    if (listed == 1) {
      auto loaded = (*reg)->Load((*versions)[0], /*verify=*/true);
      ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
      EXPECT_TRUE(testing::SameModel(**original, **loaded, /*compare_metadata=*/false));
    }
    // The registry is not wedged: the same push without faults works.
    CommandResult again = PushWithFault(root, model, 0, EIO, false);
    EXPECT_EQ(again.exit_code, 0) << again.err;
    fs::remove_all(root);
  }
  EXPECT_GT(failed_runs, static_cast<int>(total / 2));
  std::printf("[fault] %ld injection points, %d pushes failed cleanly\n", total, failed_runs);
}

}  // namespace
}  // namespace mp
