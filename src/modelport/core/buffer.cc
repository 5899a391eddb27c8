#include "modelport/core/buffer.h"

#include <sys/mman.h>

#include <cassert>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace mp {

Result<std::shared_ptr<Buffer>> Buffer::Allocate(size_t size) {
  // Large buffers are mapped directly, 2 MiB aligned with transparent huge pages: filling a
  // 1 GiB tensor then takes 512 page faults instead of 262,144 (the kernel's THP mode here is
  // "madvise"), and freeing one returns it to the system at once instead of leaving it
  // resident in malloc's heap, which keeps conversion's peak memory at one tensor.
  constexpr size_t kHugePage = 2 << 20;
  if (size >= kHugePage) {
    const size_t rounded = (size + kHugePage - 1) / kHugePage * kHugePage;
    const size_t reserve = rounded + kHugePage;  // room to align the start
    void* raw =
        ::mmap(nullptr, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return IoError("cannot allocate " + std::to_string(size) + " bytes");
    const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
    // Give back the unaligned head and the unused tail.
    if (aligned > start) ::munmap(raw, aligned - start);
    const uintptr_t end = start + reserve;
    if (end > aligned + rounded)
      ::munmap(reinterpret_cast<void*>(aligned + rounded), end - (aligned + rounded));
    void* p = reinterpret_cast<void*>(aligned);
    ::madvise(p, rounded, MADV_HUGEPAGE);
    std::shared_ptr<void> owner(p, [rounded](void* q) { ::munmap(q, rounded); });
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
