// Crash safety of `modelport registry push`: hundreds of pushes killed with SIGKILL at random
// moments. Afterwards fsck is clean, no version is half there (every listed version loads and
// verifies, and equals the model it was pushed from), and the registry keeps working.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "modelport/registry/registry.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

TEST(RegistryCrash, PushesKilledAtRandomLeaveNoHalfVersions) {
  TempDir dir;
  const std::string root = dir.File("reg");
  ASSERT_TRUE(registry::Registry::Init(root, "").ok());
  // Five different models (so every push has new blobs to write), 16 tensors of 64 KiB each.
  std::vector<std::string> models;
  for (uint32_t k = 0; k < 5; ++k) {
    Model m("safetensors");
    for (uint32_t i = 0; i < 16; ++i) {
      ASSERT_TRUE(m.Add(testing::PatternTensor("t" + std::to_string(i), DType::kF32, Shape({16384}),
                                               k * 100 + i))
                      .ok());
    }
    models.push_back(dir.File("m" + std::to_string(k) + ".safetensors"));
    ASSERT_TRUE(safetensors::Write(m, models.back(), {}).ok());
  }

  // Kill times are drawn from [0, the time one push takes here], so the kills land all over the
  // push (opening, hashing, blob writes, fsyncs, the transaction) whatever the machine's speed.
  auto start_push = [&](const std::string& model) -> pid_t {
    const pid_t pid = fork();
    if (pid < 0) std::abort();
    if (pid == 0) {
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execl(MODELPORT_CLI, MODELPORT_CLI, "registry", "push", "m", model.c_str(), "--registry",
              root.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    return pid;
  };
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t timed = start_push(models[0]);
  int timed_status = 0;
  ASSERT_EQ(waitpid(timed, &timed_status, 0), timed);
  ASSERT_TRUE(WIFEXITED(timed_status) && WEXITSTATUS(timed_status) == 0);
  const auto push_us = std::max<int64_t>(
      1000,
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count());

  std::mt19937 rng(20261126);
  constexpr int kIterations = 200;
  int killed = 0;
  for (int i = 0; i < kIterations; ++i) {
    const pid_t pid = start_push(models[static_cast<size_t>(i) % models.size()]);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % push_us));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    killed += WIFSIGNALED(status);
  }
  EXPECT_GE(killed, 10);  // with kill times inside the push's span most die mid-push

  auto reg = registry::Registry::Open(root, "");
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  auto fsck = (*reg)->Fsck();
  ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
  EXPECT_TRUE(fsck->problems.empty())
      << fsck->problems.size() << " problems, first: " << fsck->problems[0];
  // Every version that is listed is whole, and is one of the models pushed.
  std::vector<std::unique_ptr<ModelSource>> sources;
  for (const auto& m : models) sources.push_back(std::move(*OpenModel(m)));
  auto versions = (*reg)->ListVersions("m");
  size_t listed = 0;
  if (versions.ok()) {
    for (const auto& v : *versions) {
      ++listed;
      auto loaded = (*reg)->Load(v, /*verify=*/true);
      ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
      bool matches_one = false;
      for (const auto& s : sources) {
        if (testing::SameModel(*s, **loaded, /*compare_metadata=*/false)) matches_one = true;
      }
      EXPECT_TRUE(matches_one) << "m@" << v.version;
    }
  }
  // Version numbers stay unique and the registry still takes pushes; gc clears what the
  // killed pushes left once it is old enough to be theirs (their temporaries, aged here).
  const timespec old[2] = {{time(nullptr) - 7200, 0}, {time(nullptr) - 7200, 0}};
  for (const auto& e : fs::directory_iterator(root + "/tmp")) {
    ASSERT_EQ(::utimensat(AT_FDCWD, e.path().c_str(), old, 0), 0);
  }
  auto gc = (*reg)->Gc(0, false);
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  auto more = testing::RunCli("registry push m '" + models[0] + "' --registry '" + root + "'");
  EXPECT_EQ(more.exit_code, 0) << more.err;
  auto after = (*reg)->ListVersions("m");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->size(), listed + 1);
  fsck = (*reg)->Fsck();
  ASSERT_TRUE(fsck.ok());
  EXPECT_TRUE(fsck->problems.empty());
  EXPECT_EQ(fs::is_empty(root + "/tmp"), true);
  std::printf("[crash] %d pushes, %d killed, %zu versions completed\n", kIterations, killed,
              listed);
}

}  // namespace
}  // namespace mp
