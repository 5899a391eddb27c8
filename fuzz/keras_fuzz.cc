// libFuzzer target for the Keras HDF5 reader: the input bytes become an in-memory HDF5 image
// (as a .keras member is read), opened and every tensor loaded; the same bytes as a scratch
// .h5 file are opened with the pread mode (libhdf5's file driver). Rejecting the input with a
// Status is the expected outcome; a crash, sanitizer report, leak or timeout is a bug (libhdf5
// itself is not instrumented: sanitizers see only its calls into intercepted functions). Seeds:
// corpus/keras (Keras 2 and Keras 3 layouts written by modelport and by h5py).
#include <cstdio>
#include <cstring>

#include "fuzz_util.h"
#include "modelport/formats/keras/keras.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)mp::keras::DetectH5({data, size < mp::keras::kDetectBytes ? size : mp::keras::kDetectBytes},
                            size);
  auto image = mp::Buffer::Allocate(size);
  if (!image.has_value()) return 0;
  if (size > 0) std::memcpy((*image)->mutable_data(), data, size);
  auto source = mp::keras::OpenH5Image(*image, "fuzz.h5", nullptr, {});
  if (source.has_value()) mp::fuzz::LoadAll(**source);

  static const std::string path = mp::fuzz::ScratchPath(".h5");
  mp::fuzz::WriteScratch(path, data, size);
  mp::ReadOptions options;
  options.io_mode = mp::IoMode::kPread;
  auto from_file = mp::keras::OpenH5(path, options);
  if (from_file.has_value()) mp::fuzz::LoadAll(**from_file);
  std::remove(path.c_str());  // libFuzzer may _Exit, skipping atexit handlers
  return 0;
}
