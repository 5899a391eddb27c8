// TensorFlow.js models (tfjs-core src/io/types.ts ModelJSON; tfjs-layers "layers-model"): a
// folder holding model.json and binary weight shards.
//
//   model.json   {"format": "layers-model", "generatedBy": ..., "convertedBy": ...,
//                 "modelTopology": {Keras-style config} | null, "trainingConfig"?,
//                 "userDefinedMetadata"?: {...},
//                 "weightsManifest": [ {"paths": ["group1-shard1of2.bin", ...],
//                                       "weights": [{"name", "shape": [..], "dtype",
//                                                    "quantization"?: {...}}, ...]}, ...]}
//   group1-shard1of2.bin ...   raw little-endian bytes
//
// Each manifest group's bytes are its shard files concatenated in "paths" order; its weights lie
// back to back in that stream, in "weights" order, without padding. Writers cut the stream at a
// fixed byte size (tensorflowjs_converter: 4 MiB) whatever the tensor boundaries, so a tensor
// may run from one shard into the next. Element bytes per dtype: float32 4, int32 4, bool 1,
// complex64 8 (real, imaginary f32); string: per element a u32 length then that many bytes.
// "quantization" {"dtype": "uint8"|"uint16", "scale", "min"} stores q of 1 or 2 bytes for a
// float32 weight (value = q * scale + min, computed in double and rounded to float32) or an int32
// one (Math.round of the same); {"dtype": "float16"} stores IEEE half values of a float32 weight
// (tfjs-core io_utils.ts decodeWeight).
//
// Reading: tensors in manifest order (views into the mapped shard when a tensor lies inside one
// shard, assembled otherwise). Weights TF.js stores exactly in a narrower form are read in that
// form: float16-quantized float32 weights as f16, int32 weights quantized to uint8/uint16 with
// scale 1 and min 0 (or the signed type's minimum) as u8/i8/u16/i16; TF.js widens them to the
// same values. Other quantized weights are dequantized on Load exactly as TF.js computes them,
// listed in metadata "tfjs.quantization" and in notes(). String weights are listed in notes(),
// not carried. Metadata: the entries of "userDefinedMetadata", plus "tfjs.<field>" for every
// other top-level field but the manifest ("tfjs.format", "tfjs.modelTopology", ...).
//
// Writing: model.json + group1-shardKofN.bin cut every 4 MiB (WriteOptions::shard_size
// overrides), float32/int32/bool/complex64 as they are, f16/u8/i8/u16/i16 in the exact
// quantized forms above; other dtypes are refused. "tfjs.modelTopology" (an object, or a string
// holding one, as formats with string metadata keep it) and the other "tfjs.*" fields but
// format/generatedBy/convertedBy are written back, every non-"tfjs." key goes to
// "userDefinedMetadata". The folder is built beside (or inside) its destination and moved into
// place, model.json last, so a failure leaves nothing.
//
// Manifest paths must be plain file names in model.json's folder (no '/', '\\', NUL, "." or
// ".."; no symbolic links): nothing outside that folder is ever opened.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "modelport/core/buffer.h"
#include "modelport/formats/format.h"

namespace mp::tfjs {

/// tensorflowjs_converter's default shard size (--weight_shard_size_bytes).
inline constexpr uint64_t kDefaultShardBytes = 4 * 1024 * 1024;
/// The file name TF.js gives its manifest.
inline constexpr std::string_view kModelJson = "model.json";
/// Bytes Detect looks at for the manifest's keys.
inline constexpr size_t kDetectBytes = 1024;
/// Deepest JSON nesting model.json may have (a Keras topology nests a dozen levels).
inline constexpr int kMaxJsonDepth = 128;

/// Opens model.json, or the folder holding it. Shard files are opened and their sizes checked
/// against the manifest; tensor bytes are read on Load.
Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options);

/// Parses `model_json` with its shards held in memory, by manifest path (tests, fuzzing). The
/// same checks as Open; a path missing from `shards` is Corrupt. `label` names the manifest in
/// errors.
Result<std::unique_ptr<ModelSource>> OpenFromMemory(
    std::string_view model_json, const std::map<std::string, std::shared_ptr<Buffer>>& shards,
    const ReadOptions& options, const std::string& label = "model.json");

/// Writes `source` as a TF.js model. `path`: "DIR/NAME.json" (DIR must exist) or a folder
/// (model.json inside; the folder itself is created when its parent exists). Unsupported, naming
/// the tensor, for dtypes TF.js cannot hold.
Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options);

/// A JSON object whose first kDetectBytes mention "weightsManifest" or "modelTopology".
bool Detect(std::span<const uint8_t> prefix, uint64_t file_size);
/// A folder holding a model.json that Detect accepts.
bool DetectDir(const std::string& dir);

}  // namespace mp::tfjs
