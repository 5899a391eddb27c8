// Buffer: shared ownership of immutable bytes (a mapped file region or heap memory). A slice
// keeps its parent alive, as Arrow's Buffer does, so a TensorView handed out by a reader stays
// valid after the reader is gone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "modelport/core/status.h"

namespace mp {

class Buffer {
 public:
  /// Heap memory of `size` bytes, 64-byte aligned, uninitialised. IoError if allocation fails.
  static Result<std::shared_ptr<Buffer>> Allocate(size_t size);
  /// Bytes owned by `owner` (anything whose lifetime keeps `data` valid).
  static std::shared_ptr<Buffer> Wrap(const uint8_t* data, size_t size,
                                      std::shared_ptr<const void> owner);

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  /// Writable pointer; only for buffers made by Allocate and not yet shared with readers.
  uint8_t* mutable_data() { return const_cast<uint8_t*>(data_); }

  /// A view of [offset, offset + length) sharing ownership. The range must be in bounds.
  std::shared_ptr<Buffer> Slice(size_t offset, size_t length) const;

 private:
  Buffer(const uint8_t* data, size_t size, std::shared_ptr<const void> owner)
      : data_(data), size_(size), owner_(std::move(owner)) {}
  const uint8_t* data_;
  size_t size_;
  std::shared_ptr<const void> owner_;
};

}  // namespace mp
