// A bounds-checked protobuf wire-format reader over bytes in memory, and the few writers the
// TensorFlow formats need. Internal to formats/tf.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "modelport/core/status.h"

namespace mp::tf {

inline constexpr uint8_t kWireVarint = 0;
inline constexpr uint8_t kWireFixed64 = 1;
inline constexpr uint8_t kWireLen = 2;
inline constexpr uint8_t kWireFixed32 = 5;

/// One field: its number and wire type; `value` for varint and fixed fields, `bytes` for
/// length-delimited ones (a view into the message).
struct Field {
  uint32_t number = 0;
  uint8_t wire = 0;
  uint64_t value = 0;
  std::span<const uint8_t> bytes;
};

/// Reads fields and raw values from a message; every read is checked against its end.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  size_t left() const { return bytes_.size() - pos_; }
  size_t pos() const { return pos_; }

  Result<uint64_t> Varint() {
    uint64_t v = 0;
    for (size_t i = 0; i < 10; ++i) {
      if (pos_ >= bytes_.size()) {
        return Corrupt("varint at byte " + std::to_string(pos_) + " runs past the end");
      }
      const uint8_t b = bytes_[pos_++];
      v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) return v;
    }
    return Corrupt("varint at byte " + std::to_string(pos_) + " is longer than 64 bits");
  }

  Result<std::span<const uint8_t>> Bytes(uint64_t n) {
    if (n > left()) {
      return Corrupt(std::to_string(n) + " bytes at byte " + std::to_string(pos_) +
                     " run past the end (" + std::to_string(left()) + " left)");
    }
    auto out = bytes_.subspan(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return out;
  }

  Result<Field> Next() {
    Field f;
    const size_t at = pos_;
    MP_ASSIGN_OR_RETURN(uint64_t tag, Varint());
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) {
      return Corrupt("invalid field number " + std::to_string(tag >> 3) + " at byte " +
                     std::to_string(at));
    }
    f.number = static_cast<uint32_t>(tag >> 3);
    f.wire = static_cast<uint8_t>(tag & 7);
    switch (f.wire) {
      case kWireVarint: {
        MP_ASSIGN_OR_RETURN(f.value, Varint());
        break;
      }
      case kWireFixed64:
      case kWireFixed32: {
        const size_t n = f.wire == kWireFixed64 ? 8 : 4;
        MP_ASSIGN_OR_RETURN(auto b, Bytes(n));
        for (size_t i = 0; i < n; ++i) f.value |= uint64_t{b[i]} << (8 * i);
        break;
      }
      case kWireLen: {
        MP_ASSIGN_OR_RETURN(uint64_t n, Varint());
        MP_ASSIGN_OR_RETURN(f.bytes, Bytes(n));
        break;
      }
      default:
        return Corrupt("field " + std::to_string(f.number) + " at byte " + std::to_string(at) +
                       " has unsupported wire type " + std::to_string(f.wire));
    }
    return f;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

inline std::string AsString(std::span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

inline void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

inline void PutVarintField(std::string* out, uint32_t number, uint64_t v) {
  PutVarint(out, uint64_t{number} << 3 | kWireVarint);
  PutVarint(out, v);
}

inline void PutLenField(std::string* out, uint32_t number, const std::string& bytes) {
  PutVarint(out, uint64_t{number} << 3 | kWireLen);
  PutVarint(out, bytes.size());
  *out += bytes;
}

/// Parses a TensorShapeProto {dim = 2 {size = 1}, unknown_rank = 3}.
Status ParseShapeProto(std::span<const uint8_t> bytes, uint64_t max_rank,
                       std::vector<int64_t>* dims, bool* unknown_rank);

}  // namespace mp::tf
