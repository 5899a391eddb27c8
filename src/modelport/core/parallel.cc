#include "modelport/core/parallel.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mp {

unsigned WorkerCount() { return std::clamp(std::thread::hardware_concurrency(), 2u, 16u); }

namespace {

// One ParallelFor call: its indices are claimed one at a time by the caller and by the pool's
// threads that join it. Every index is claimed and counted in `done` (after a failure without
// running fn), so the caller knows the job is over, and fn is never called for it again, once
// done == n.
struct Job {
  Job(size_t count, const std::function<Status(size_t)>& f) : n(count), fn(&f) {}

  void Work() {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      if (!failed.load(std::memory_order_relaxed)) {
        Status s = Call(i);
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          if (i < first_index) {
            first_index = i;
            first = std::move(s);
          }
          failed.store(true, std::memory_order_relaxed);
        }
      }
      if (done.fetch_add(1) + 1 == n) done.notify_all();
    }
  }

  // fn(i), an exception made an error: it must not leave the caller while other threads still
  // run fn, nor end the process from a pool thread.
  Status Call(size_t i) const {
    try {
      return (*fn)(i);
    } catch (const std::exception& e) {
      return Internal("index " + std::to_string(i) + ": " + e.what());
    } catch (...) {
      return Internal("index " + std::to_string(i) + ": an exception that is not std::exception");
    }
  }

  const size_t n;
  const std::function<Status(size_t)>* fn;
  std::atomic<size_t> next{0}, done{0};
  std::atomic<bool> failed{false};
  std::mutex mu;  // guards first_index and first
  size_t first_index = SIZE_MAX;
  Status first;
};

// Threads kept for ParallelFor: starting a thread per call cost ~40 us on a 2-vCPU VM, which a
// quantize run paid for every tensor. A finished thread looks for the next job for a short
// while before it sleeps, since callers often run one job right after another.
class Pool {
 public:
  // The pool of this process (a forked child gets its own: the parent's threads are not there).
  static Pool& Get() {
    static std::atomic<Pool*> pool{nullptr};
    const pid_t pid = getpid();
    Pool* p = pool.load();
    while (p == nullptr || p->pid_ != pid) {
      auto* fresh = new Pool(pid);  // never deleted: its threads run until the process ends
      if (pool.compare_exchange_strong(p, fresh)) return *fresh;
      delete fresh;  // another thread of this process got there first; p is its pool
    }
    return *p;
  }

  // Runs `job` on the calling thread and up to `helpers` pool threads; returns when every index
  // is done.
  void Run(const std::shared_ptr<Job>& job, size_t helpers) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (threads_ < helpers) {
        std::thread([this] { Serve(); }).detach();
        ++threads_;
      }
      for (size_t h = 0; h < helpers; ++h) queue_.push_back(job);
      queued_.store(queue_.size(), std::memory_order_release);
    }
    cv_.notify_all();
    job->Work();
    for (size_t d = job->done.load(); d != job->n; d = job->done.load()) job->done.wait(d);
    // Seats no thread took (all indices were gone before one came).
    std::lock_guard<std::mutex> lock(mu_);
    queue_.erase(std::remove(queue_.begin(), queue_.end(), job), queue_.end());
    queued_.store(queue_.size(), std::memory_order_release);
  }

 private:
  explicit Pool(pid_t pid) : pid_(pid) {}

  void Serve() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (queue_.empty()) {
          lock.unlock();
          const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
          while (queued_.load(std::memory_order_acquire) == 0 &&
                 std::chrono::steady_clock::now() < until) {
            std::this_thread::yield();
          }
          lock.lock();
          cv_.wait(lock, [&] { return !queue_.empty(); });
        }
        job = std::move(queue_.front());
        queue_.pop_front();
        queued_.store(queue_.size(), std::memory_order_release);
      }
      job->Work();
    }
  }

  const pid_t pid_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;  // one entry per seat offered to the pool's threads
  std::atomic<size_t> queued_{0};           // queue_.size(), read without the lock
  size_t threads_ = 0;
};

}  // namespace

Status ParallelFor(size_t n, const std::function<Status(size_t)>& fn, unsigned threads) {
  if (threads == 0) threads = WorkerCount();
  const auto job = std::make_shared<Job>(n, fn);
  const size_t helpers = std::min<size_t>(n, threads) - (n > 0 ? 1 : 0);
  if (helpers == 0) {
    job->Work();
  } else {
    Pool::Get().Run(job, helpers);
  }
  return std::move(job->first);
}

}  // namespace mp
