#include "modelport/core/buffer.h"

#include <sys/mman.h>

#include <cassert>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace mp {

namespace {

constexpr size_t kHugePage = 2 << 20;

// Freed large mappings, kept (up to kMaxBytes) for the next Allocate of a size they hold: a
// conversion allocates a buffer per tensor and drops it once written, and a mapping whose pages
// are already there spares the next tensor a page fault and the kernel's zeroing of every page
// (about 20 ms per GiB here). Allocate's buffers are uninitialised, so old bytes are allowed.
class MappingCache {
 public:
  static MappingCache& Get() {
    static MappingCache* cache = new MappingCache;  // never destroyed: frees run until exit
    return *cache;
  }

  // A cached mapping of at least `bytes` and at most twice that (its size in *got), or null.
  void* Take(size_t bytes, size_t* got) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); ++i) {
      const size_t have = free_[i].second;
      if (have >= bytes && have <= 2 * bytes && (best == free_.size() || have < free_[best].second))
        best = i;
    }
    if (best == free_.size()) return nullptr;
    void* p = free_[best].first;
    *got = free_[best].second;
    cached_ -= *got;
    free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
    return p;
  }

  void Put(void* p, size_t bytes) {
    std::vector<std::pair<void*, size_t>> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (bytes > kMaxBytes / 2) {
        evicted.emplace_back(p, bytes);
      } else {
        free_.emplace_back(p, bytes);
        cached_ += bytes;
        while (cached_ > kMaxBytes) {  // the oldest first
          evicted.push_back(free_.front());
          cached_ -= free_.front().second;
          free_.erase(free_.begin());
        }
      }
    }
    for (const auto& [q, n] : evicted) ::munmap(q, n);
  }

 private:
  static constexpr size_t kMaxBytes = size_t{256} << 20;
  std::mutex mu_;
  std::vector<std::pair<void*, size_t>> free_;  // oldest first
  size_t cached_ = 0;
};

// A fresh mapping of `rounded` bytes (a multiple of kHugePage), 2 MiB aligned, or null.
void* MapHuge(size_t rounded) {
  const size_t reserve = rounded + kHugePage;  // room to align the start
  void* raw = ::mmap(nullptr, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  // Give back the unaligned head and the unused tail.
  if (aligned > start) ::munmap(raw, aligned - start);
  const uintptr_t end = start + reserve;
  if (end > aligned + rounded)
    ::munmap(reinterpret_cast<void*>(aligned + rounded), end - (aligned + rounded));
  void* p = reinterpret_cast<void*>(aligned);
  ::madvise(p, rounded, MADV_HUGEPAGE);
  return p;
}

}  // namespace

Result<std::shared_ptr<Buffer>> Buffer::Allocate(size_t size) {
  // Large buffers are mapped directly, 2 MiB aligned with transparent huge pages: filling a
  // 1 GiB tensor then takes 512 page faults instead of 262,144 (the kernel's THP mode here is
  // "madvise"), and freeing one returns it to the system (or to the bounded MappingCache)
  // instead of leaving it in malloc's heap, which keeps conversion's peak memory near one
  // tensor.
  if (size >= kHugePage) {
    size_t rounded = (size + kHugePage - 1) / kHugePage * kHugePage;
    void* p = MappingCache::Get().Take(rounded, &rounded);
    if (p == nullptr) p = MapHuge(rounded);
    if (p == nullptr) return IoError("cannot allocate " + std::to_string(size) + " bytes");
    std::shared_ptr<void> owner(p, [rounded](void* q) { MappingCache::Get().Put(q, rounded); });
    return std::shared_ptr<Buffer>(new Buffer(static_cast<uint8_t*>(p), size, std::move(owner)));
  }
  constexpr size_t kAlign = 64;
  const size_t rounded = (size + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
  if (p == nullptr) return IoError("cannot allocate " + std::to_string(size) + " bytes");
  std::shared_ptr<void> owner(p, std::free);
  return std::shared_ptr<Buffer>(new Buffer(static_cast<uint8_t*>(p), size, std::move(owner)));
}

std::shared_ptr<Buffer> Buffer::Wrap(const uint8_t* data, size_t size,
                                     std::shared_ptr<const void> owner) {
  return std::shared_ptr<Buffer>(new Buffer(data, size, std::move(owner)));
}

std::shared_ptr<Buffer> Buffer::Slice(size_t offset, size_t length) const {
  assert(offset <= size_ && length <= size_ - offset);
  return std::shared_ptr<Buffer>(new Buffer(data_ + offset, length, owner_));
}

}  // namespace mp
