// PyTorch checkpoints, read and written without Python and without executing pickle.
//
// Zip checkpoint (torch >= 1.6, torch/csrc/jit/serialization + torch/serialization.py): a zip of
// stored entries under one top folder (torch names it after the file's stem):
//   <top>/data.pkl            the pickled object (protocol 2), storages as persistent ids
//                             ('storage', <class or dtype>, key, location, numel)
//   <top>/data/<key>          the raw little-endian bytes of each storage, 64-byte aligned
//   <top>/version             "3\n" (torch 1.13), <top>/.format_version "1" (torch 2.x)
//   <top>/byteorder           "little" or "big" (absent before torch 2.0: little)
//   <top>/.storage_alignment  "64" (torch 2.x)
// TorchScript archives (torch.jit.save) are zips too, with <top>/code/ (never run here),
// <top>/constants.pkl and objects of `__torch__.*` classes in data.pkl.
// Legacy (torch < 1.6, _legacy_save): pickles in a row: the magic number 0x1950a86a20f9469cfc6c,
// the protocol version 1001, a sys_info dict, the object (persistent ids
// ('storage', class, key, location, numel, view_metadata)), the sorted list of storage keys;
// then for each key an int64 element count and the storage's raw bytes.
// Hugging Face shards: pytorch_model-0000K-of-0000N.bin + pytorch_model.bin.index.json.
//
// Tensors are found wherever the state dict is: the root dict, or the one dict of tensors
// inside a training checkpoint ({"state_dict": ..., "epoch": ...}); ReadOptions::torch_key picks
// one by its dotted path. Other plain values become typed metadata. A tensor that is an exact
// alias of an earlier one (same storage, offset, size, stride: tied weights) is listed once and
// recorded in metadata under kAliasesKey {"alias": "target"}; writers that can share storage
// (this one) tie them again, the others ignore the key. Tensors that overlap in one storage
// without being the same view are copied and reported in notes().
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "modelport/core/status.h"
#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"

namespace mp::torch {

/// Metadata key of tied tensors: a JSON object {"alias name": "name of the tensor stored"}.
inline constexpr std::string_view kAliasesKey = kAliasesMetadataKey;
/// Name of the sharded index Hugging Face writes.
inline constexpr std::string_view kIndexName = "pytorch_model.bin.index.json";

/// Bytes Detect needs (the first zip local header with its name, or the legacy magic pickle).
inline constexpr size_t kDetectBytes = 30 + 512;

/// Opens a zip checkpoint, TorchScript archive, legacy file, pytorch_model.bin.index.json or a
/// folder holding one. Unsafe pickles are refused with the reasons ScanPickle gives.
Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options);

/// Writes `source` as a zip checkpoint of an OrderedDict state dict that torch.load(...,
/// weights_only=True) loads (torch 1.13 and current): 64-byte aligned storages, version records,
/// byteorder. Tensors named in metadata[kAliasesKey] share their target's storage. Other
/// metadata is kept in <top>/modelport_metadata.json, which torch ignores.
Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options);

/// TorchScript archives kept as a graph and tensors (the registry stores them so, the tensors
/// deduplicated like any others). SplitTorchScript writes the graph of `source`, if it was
/// opened from a TorchScript archive, to `graph_path` as a zip: every record of the archive in
/// order (code, pickles, constants, ...) except the storages that hold exactly one tensor of
/// the model (its bytes, contiguous, from byte 0), and a record list (kGraphRecordsName) that
/// says which tensor each left-out storage is. Returns false, writing nothing, for any other
/// source.
Result<bool> SplitTorchScript(const ModelSource& source, const std::string& graph_path,
                              bool durable);
/// Writes the TorchScript archive again from its graph and `tensors` (by name), each record at
/// a multiple of 64 bytes as torch.jit.save places them, atomically.
Status JoinTorchScript(const std::string& graph_path, const ModelSource& tensors,
                       const std::string& dest, const WriteOptions& options);
/// The record list's name inside a TorchScript graph.
inline constexpr std::string_view kGraphRecordsName = "modelport_records.json";

/// True for a zip whose first entry is a torch record, or a legacy checkpoint.
bool Detect(std::span<const uint8_t> prefix, uint64_t file_size);
/// True if `dir` holds pytorch_model.bin.index.json or exactly one pytorch_model.bin.
bool DetectDir(const std::string& dir);

}  // namespace mp::torch
