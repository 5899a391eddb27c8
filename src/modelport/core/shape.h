// Shapes and the checked arithmetic every size computation in a parser goes through.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "modelport/core/dtype.h"
#include "modelport/core/status.h"

namespace mp {

/// a + b, or LimitExceeded on overflow.
Result<uint64_t> CheckedAdd(uint64_t a, uint64_t b);
/// a * b, or LimitExceeded on overflow.
Result<uint64_t> CheckedMul(uint64_t a, uint64_t b);

/// Dimensions in row-major order (outermost first), as every format is presented to users.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<uint64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<uint64_t> dims) : dims_(std::move(dims)) {}

  size_t rank() const { return dims_.size(); }
  const std::vector<uint64_t>& dims() const { return dims_; }
  uint64_t operator[](size_t i) const { return dims_[i]; }
  bool operator==(const Shape& other) const = default;

  /// Product of the dimensions (1 for rank 0), or LimitExceeded on overflow.
  Result<uint64_t> NumElements() const;

  /// "[3, 4]"; "[]" for a scalar.
  std::string ToString() const;

 private:
  std::vector<uint64_t> dims_;
};

/// Bytes a tensor of `dtype` and `shape` occupies, checked. Block-quantized types need the
/// element count to be a multiple of the block size (InvalidArgument otherwise).
Result<uint64_t> ByteSize(DType dtype, const Shape& shape);

}  // namespace mp
