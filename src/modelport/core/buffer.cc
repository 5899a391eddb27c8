#include "modelport/core/buffer.h"

#include <sys/mman.h>

#include <cassert>
#include <cstdlib>
#include <new>

namespace mp {

Result<std::shared_ptr<Buffer>> Buffer::Allocate(size_t size) {
  // Large buffers get 2 MiB alignment and transparent huge pages: filling a 1 GiB tensor then
  // takes 512 page faults instead of 262,144 (the kernel's THP mode here is "madvise").
  constexpr size_t kHugePage = 2 << 20;
  const size_t align = size >= kHugePage ? kHugePage : 64;
  const size_t rounded = (size + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded == 0 ? align : rounded);
  if (p == nullptr) {
    return IoError("cannot allocate " + std::to_string(size) + " bytes");
  }
  if (align == kHugePage) ::madvise(p, rounded, MADV_HUGEPAGE);
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
