#include "modelport/core/shape.h"

namespace mp {

Result<uint64_t> CheckedAdd(uint64_t a, uint64_t b) {
  uint64_t out;
  if (__builtin_add_overflow(a, b, &out)) {
    return LimitExceeded(std::to_string(a) + " + " + std::to_string(b) + " overflows 64 bits");
  }
  return out;
}

Result<uint64_t> CheckedMul(uint64_t a, uint64_t b) {
  uint64_t out;
  if (__builtin_mul_overflow(a, b, &out)) {
    return LimitExceeded(std::to_string(a) + " * " + std::to_string(b) + " overflows 64 bits");
  }
  return out;
}

Result<uint64_t> Shape::NumElements() const {
  uint64_t n = 1;
  for (uint64_t d : dims_) {
    auto next = CheckedMul(n, d);
    if (!next)
      return LimitExceeded("shape " + ToString() + " has more elements than fit in 64 bits");
    n = *next;
  }
  return n;
}

std::string Shape::ToString() const {
  std::string out = "[";
  for (size_t i = 0; i < dims_.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(dims_[i]);
  }
  return out + "]";
}

Result<uint64_t> ByteSize(DType dtype, const Shape& shape) {
  MP_ASSIGN_OR_RETURN(uint64_t elems, shape.NumElements());
  const DTypeTraits& t = Traits(dtype);
  if (elems % t.block_elems != 0) {
    return InvalidArgument("shape " + shape.ToString() + " is not a whole number of " +
                           std::string(t.name) + " blocks of " + std::to_string(t.block_elems));
  }
  auto bytes = CheckedMul(elems / t.block_elems, t.block_bytes);
  if (!bytes) {
    return LimitExceeded("shape " + shape.ToString() + " of " + std::string(t.name) +
                         " is more bytes than fit in 64 bits");
  }
  return *bytes;
}

}  // namespace mp
