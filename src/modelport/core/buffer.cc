#include "modelport/core/buffer.h"

#include <cassert>
#include <cstdlib>
#include <new>

namespace mp {

Result<std::shared_ptr<Buffer>> Buffer::Allocate(size_t size) {
  constexpr size_t kAlign = 64;
  const size_t rounded = (size + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
  if (p == nullptr) {
    return IoError("cannot allocate " + std::to_string(size) + " bytes");
  }
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
