// NumPy .npy and .npz (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html).
//
// .npy:  "\x93NUMPY" [u8 major][u8 minor] [header length: u16 LE (v1) | u32 LE (v2, v3)]
//        [header: a Python dict literal, latin-1 (v1, v2) or UTF-8 (v3), padded with spaces and
//        ended by '\n' so the data starts at a multiple of 64 (16 in old files)] [data]
//        header = {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
//        descr = byte order ('<' little, '>' big, '|' not applicable, '=' native) + kind + size.
//        The data is exactly prod(shape) * itemsize bytes, in C or Fortran order.
// .npz:  a zip archive (formats/zip) of NAME.npy members, stored (np.savez) or deflated
//        (np.savez_compressed); each member is one array called NAME.
//
// modelport's model view: a .npy file is a model of one tensor named after the file's stem
// ("weights.npy" -> "weights"; "array" if the stem is empty); a .npz is a model whose tensors are
// its members, in archive order. Big-endian data is byte-swapped and Fortran-order data
// transposed into C order (owned memory); little-endian C-order data is a zero-copy view.
// Object arrays ('O') are pickles and are refused (Unsafe); structured, string, unicode,
// datetime and complex128 dtypes are Unsupported. The model's metadata travels in the .npz
// archive comment as "modelport-metadata:" + JSON (numpy ignores the comment).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "modelport/formats/format.h"

namespace mp::numpy {

/// Largest .npy header modelport reads (numpy's own reader stops at 10000 bytes by default).
inline constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 20;
/// Bytes Detect needs: a zip local header and the first member's name.
inline constexpr size_t kDetectBytes = 30 + 1024;
/// Prefix of the .npz archive comment that carries a model's metadata.
inline constexpr std::string_view kMetadataComment = "modelport-metadata:";

/// What a .npy header says.
struct ArrayHeader {
  TensorInfo info;  ///< name left empty
  bool big_endian = false;
  bool fortran_order = false;
  int major_version = 1;
  uint64_t data_offset = 0;  ///< bytes from the magic to the data
};

/// Parses the preamble of a .npy (magic, version, header) from `bytes`, which must hold at least
/// the whole preamble. Corrupt on malformed input, Unsafe for object arrays, Unsupported for
/// dtypes modelport has no match for, LimitExceeded past `max_header_bytes` or `max_rank`.
Result<ArrayHeader> ParseHeader(std::span<const uint8_t> bytes, uint64_t max_header_bytes,
                                uint64_t max_rank);

/// The .npy preamble (magic to the '\n') for a little-endian C-order array: version 1, or 2 when
/// the header needs more than 65535 bytes; padded so the data starts at a multiple of 64.
/// Unsupported (naming nothing: callers add the tensor) for dtypes numpy has no dtype for.
Result<std::string> BuildHeader(DType dtype, const Shape& shape);

/// Opens a .npy or .npz file (by content; a short file is judged by its extension).
Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options);

/// Writes a .npy (path ends in ".npy": exactly one tensor) or a stored .npz (anything else).
Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options);

/// True for the .npy magic, or a zip whose first member's name ends in ".npy".
bool Detect(std::span<const uint8_t> prefix, uint64_t file_size);

}  // namespace mp::numpy
