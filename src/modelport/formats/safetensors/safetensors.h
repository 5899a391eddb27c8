// safetensors (https://github.com/huggingface/safetensors, README "Format"; src/tensor.rs).
//
//   [u64 LE: N][N bytes: UTF-8 JSON header, starts with '{', padded with spaces][data buffer]
//
// Header: {"__metadata__": {str: str}?, name: {"dtype": "F32", "shape": [..],
// "data_offsets": [begin, end]}, ...}; offsets are relative to the data buffer (byte 8 + N).
// A valid file: entries sorted by begin cover the buffer exactly (first begin 0, each begin
// equals the previous end, last end equals the buffer size), end - begin == numel * dtype size,
// no duplicate names. Little-endian, C order.
//
// Sharded (Hugging Face): model-00001-of-0000N.safetensors + model.safetensors.index.json =
// {"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "modelport/formats/format.h"

namespace mp::safetensors {

/// Opens a .safetensors file, a model.safetensors.index.json, or a folder holding either.
Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options);

/// Writes `source` as one file, or as shards plus index when options.shard_size > 0 (then
/// `path` is the index path or a folder; shards get the Hugging Face names beside it).
Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options);

bool Detect(std::span<const uint8_t> prefix, uint64_t file_size);
bool DetectDir(const std::string& dir);

/// Name of the index file Hugging Face uses.
inline constexpr std::string_view kIndexName = "model.safetensors.index.json";

}  // namespace mp::safetensors
