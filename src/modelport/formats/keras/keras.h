// Keras weights in HDF5 (read and written through Debian's libhdf5 1.10) and .keras archives.
// HDF5 file format: https://docs.hdfgroup.org/hdf5/develop/_f_m_t3.html; a file starts with the
// signature 89 48 44 46 0d 0a 1a 0a ("\x89HDF\r\n\x1a\n") at offset 0 (Keras files have no
// user block).
//
// Keras 2 layouts (tf.keras hdf5_format.py):
//   full model (model.save("m.h5")):   /  attrs keras_version, backend, model_config (JSON),
//                                          training_config (JSON)
//                                      /model_weights  attrs layer_names, backend, keras_version
//                                      /model_weights/<layer>  attr weight_names
//                                      /model_weights/<layer>/<weight_name>  one dataset each,
//                                        e.g. /model_weights/dense/dense/kernel:0
//                                      /optimizer_weights (listed in notes, not read)
//   save_weights ("w.h5"):             the same without model_weights: layer groups at the root.
//   An attribute too large for an object header (64512 bytes) is split into name0, name1, ...
//   Names are arrays of byte strings: fixed length, NUL-padded (h5py 2 and Keras's chunked
//   attributes) or variable length (h5py 3 given a list); both are read. Tensor names are the
//   canonical Keras names: weight_name without ":0" ("dense/kernel").
// Keras 3 layout (keras/src/saving/saving_lib.py, H5IOStore): one group per saveable object,
//   path = the attribute path from the model, each with a "vars" group of datasets "0".."n-1" in
//   the order of the object's variables (trainable, then non-trainable):
//     /vars (the model's own), /layers/dense/vars/0 (kernel), /layers/dense/vars/1 (bias),
//     /layers/lstm/vars (empty), /layers/lstm/cell/vars/0..2, /optimizer/vars/0..n.
//   bfloat16 variables are 2-byte opaque datasets with attr dtype = "bfloat16".
//   Tensor names: with a Keras config (a .keras archive, or metadata from one) and a layer class
//   whose variable order is known (Dense, Conv*, Conv*Transpose, DepthwiseConv*, SeparableConv*,
//   BatchNormalization, LayerNormalization, Embedding, LSTM/GRU/SimpleRNN cells) the canonical
//   names ("dense/kernel", "lstm/lstm_cell/kernel"); otherwise the HDF5 path of the dataset
//   ("layers/dense/vars/0"), said in notes().
// .keras archive: a zip of metadata.json, config.json and model.weights.h5 (Keras 3 layout).
//
// Files modelport writes carry two extra root attributes that Keras ignores (fixed-length
// UTF-8 JSON text): "modelport_names" ({dataset path: tensor name}, so any name round trips) and
// "modelport_metadata" (the source's metadata that has no Keras attribute of its own).
//
// Safety: every HDF5 call runs under one process-wide mutex (Debian's libhdf5 is not
// thread-safe); automatic error printing is off and filter plugins are never loaded. Soft,
// external and user-defined links, external storage, virtual datasets and filters other than
// deflate, shuffle and fletcher32 are refused (Unsafe) before any data is read; counts, ranks,
// name lengths and sizes are bounded by ReadOptions. Model configs are data: Lambda layers and
// classes from non-Keras modules are reported in notes(), never imported or run.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "modelport/core/buffer.h"
#include "modelport/formats/format.h"

namespace mp::keras {

/// Bytes DetectH5 and DetectKeras need (a zip local header and the first member's name).
inline constexpr size_t kDetectBytes = 30 + 64;
/// The HDF5 format signature.
inline constexpr std::string_view kHdf5Signature{"\x89HDF\r\n\x1a\n", 8};
/// The keras_version written when the source gives none (Keras 2 layout; 2.x so that Keras does
/// not apply its Keras-1 weight conversions).
inline constexpr std::string_view kDefaultKeras2Version = "2.15.0";

/// Metadata keys of the Keras sources.
inline constexpr std::string_view kConfigKey = "keras.config";  ///< model config (JSON object)
inline constexpr std::string_view kTrainingConfigKey = "keras.training_config";
inline constexpr std::string_view kKerasVersionKey = "keras.keras_version";
inline constexpr std::string_view kBackendKey = "keras.backend";
inline constexpr std::string_view kArchiveMetadataKey = "keras.metadata";  ///< metadata.json

/// True when `prefix` starts with the HDF5 signature.
bool DetectH5(std::span<const uint8_t> prefix, uint64_t file_size);
/// True when `prefix` is a zip whose first member is one a .keras archive starts with
/// (metadata.json, config.json or model.weights.h5).
bool DetectKeras(std::span<const uint8_t> prefix, uint64_t file_size);

/// Opens a Keras HDF5 file (either Keras 2 layout, the Keras 3 layout, or any HDF5 file, whose
/// datasets are then named by path). Contiguous unfiltered datasets are zero-copy views of the
/// file; others are read with H5Dread on Load. Errors are one line naming the file, the object
/// path and the innermost HDF5 message.
Result<std::unique_ptr<ModelSource>> OpenH5(const std::string& path, const ReadOptions& options);

/// Opens an HDF5 image held in memory (a .keras member, a fuzz input). `name` is used in
/// messages; `config` (a Keras model config, or null) names Keras 3 variables canonically.
Result<std::unique_ptr<ModelSource>> OpenH5Image(std::shared_ptr<Buffer> image,
                                                 const std::string& name, const Json* config,
                                                 const ReadOptions& options);

/// Writes `source` as HDF5, atomically: "*.weights.h5" in the Keras 3 layout (variables in the
/// known order of each layer), any other name in the Keras 2 save_weights layout. Carries bool,
/// u8..u64, i8..i64, f16, bf16, f32, f64; other dtypes are Unsupported. The file is built in
/// memory, then written (peak memory about twice the file size).
Status WriteH5(const ModelSource& source, const std::string& path, const WriteOptions& options);

/// Opens a .keras archive: config.json and metadata.json become metadata, the weights are read
/// from model.weights.h5 (zero-copy when stored) with canonical names from the config.
Result<std::unique_ptr<ModelSource>> OpenKeras(const std::string& path, const ReadOptions& options);

/// Writes a .keras archive; needs the Keras config in metadata[kConfigKey] (an object or its
/// JSON text), else Unsupported suggesting ".weights.h5".
Status WriteKeras(const ModelSource& source, const std::string& path, const WriteOptions& options);

}  // namespace mp::keras
