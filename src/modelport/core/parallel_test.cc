#include "modelport/core/parallel.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace mp {
namespace {

TEST(ParallelFor, RunsEveryIndexOnceOnTheThreadsAsked) {
  for (const unsigned threads : {1u, 2u, 3u, 8u}) {
    for (const size_t n : {0u, 1u, 2u, 7u, 1000u}) {
      std::vector<std::atomic<int>> runs(n);
      ASSERT_TRUE(ParallelFor(
                      n,
                      [&](size_t i) {
                        runs[i].fetch_add(1);
                        return Status::Ok();
                      },
                      threads)
                      .ok());
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(runs[i].load(), 1) << i << " of " << n;
    }
  }
}

// Three threads asked for: three indices run at the same time (each waits for the others), on a
// machine of any size.
TEST(ParallelFor, AskedThreadsRunAtOnce) {
  std::atomic<int> arrived{0};
  ASSERT_TRUE(ParallelFor(
                  3,
                  [&](size_t) {
                    arrived.fetch_add(1);
                    while (arrived.load() < 3) std::this_thread::yield();
                    return Status::Ok();
                  },
                  3)
                  .ok());
}

// Index 5 fails at once, index 3 later: the error is index 3's on any thread count.
TEST(ParallelFor, ReportsTheLowestFailedIndex) {
  for (const unsigned threads : {1u, 2u, 4u}) {
    const Status s = ParallelFor(
        1000,
        [&](size_t i) {
          if (i == 3) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            return InvalidArgument("index 3");
          }
          return i == 5 ? InvalidArgument("index 5") : Status::Ok();
        },
        threads);
    EXPECT_EQ(s.message(), "index 3") << threads;
  }
}

// On one thread nothing runs after the failure; on more, what was handed out before it.
TEST(ParallelFor, StopsRunningFnAfterAFailure) {
  std::atomic<size_t> ran{0};
  const Status s = ParallelFor(
      1000,
      [&](size_t i) {
        ran.fetch_add(1);
        return i == 3 ? InvalidArgument("index 3") : Status::Ok();
      },
      1);
  EXPECT_EQ(s.message(), "index 3");
  EXPECT_EQ(ran.load(), 4u);
}

// An exception from fn is an error of its index, on the caller's thread or another one.
TEST(ParallelFor, AnExceptionBecomesTheIndexsError) {
  for (const unsigned threads : {1u, 2u, 4u}) {
    const Status s = ParallelFor(
        100,
        [&](size_t i) -> Status {
          if (i == 7) throw std::runtime_error("out of luck");
          return Status::Ok();
        },
        threads);
    EXPECT_EQ(s.code(), StatusCode::kInternal) << threads;
    EXPECT_EQ(s.message(), "index 7: out of luck") << threads;
  }
}

TEST(ParallelFor, NestedAndConcurrentCallsFinish) {
  std::atomic<size_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      for (int round = 0; round < 50; ++round) {
        (void)ParallelFor(
            4,
            [&](size_t) {
              return ParallelFor(
                  8,
                  [&](size_t) {
                    total.fetch_add(1);
                    return Status::Ok();
                  },
                  3);
            },
            2);
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 4u * 50 * 4 * 8);
}

// A forked child (the registry's tests and crash checks fork) has none of its parent's threads;
// its calls must still run.
TEST(ParallelFor, WorksInAForkedChild) {
  ASSERT_TRUE(ParallelFor(
                  4, [](size_t) { return Status::Ok(); }, 2)
                  .ok());  // pool started
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::atomic<int> sum{0};
    const Status s = ParallelFor(
        100,
        [&](size_t i) {
          sum.fetch_add(static_cast<int>(i));
          return Status::Ok();
        },
        2);
    _exit(s.ok() && sum.load() == 4950 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace mp
