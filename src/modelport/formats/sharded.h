// Hugging Face sharded models: NAME.index.json {"metadata": {...}, "weight_map": {tensor: shard}}
// with the shards in the same folder. Reading is the same for every format; only opening one
// shard differs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "modelport/core/status.h"
#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"

namespace mp {

/// Opens one shard file of a format.
using ShardOpener =
    std::function<Result<std::unique_ptr<ModelSource>>(const std::string&, const ReadOptions&)>;

/// Checks that a shard name from an index is a plain regular file in `dir` (no path parts, no
/// symbolic link): Unsafe or NotFound otherwise.
Status CheckShardName(const std::string& dir, const std::string& name);

/// Opens the index at `index_path` and every shard it names (opened with `open_shard`, in
/// sorted file order). The index and each shard must agree exactly on which tensors the shard
/// holds (a tied alias listed in a shard's metadata counts). Errors name the index.
Result<std::unique_ptr<ModelSource>> OpenShardedIndex(const std::string& index_path,
                                                      const ReadOptions& options,
                                                      const ShardOpener& open_shard);

/// Hugging Face's greedy split for writers: tensor indices in source order, a new shard when
/// the next tensor would push a non-empty shard past `shard_size` bytes (a tensor larger than
/// the cap gets a shard of its own). `shard_size` 0: everything in one shard. Never empty: a
/// model without tensors gives one empty shard.
std::vector<std::vector<size_t>> PlanShards(const std::vector<TensorInfo>& tensors,
                                            uint64_t shard_size);

/// "PREFIX-0000K-of-0000N" + `ext` (K counts from 1), the shard file name Hugging Face uses.
std::string ShardFileName(const std::string& prefix, size_t k, size_t n, const std::string& ext);

/// Counts what a writer has written and reports it through WriteOptions::progress.
struct WriteProgress {
  const ProgressFn* fn;
  uint64_t tensors_total = 0, bytes_total = 0, tensors_done = 0, bytes_done = 0;
  /// One more tensor of `bytes` written.
  void Tick(uint64_t bytes) {
    ++tensors_done;
    bytes_done += bytes;
    if (*fn) (*fn)(tensors_done, tensors_total, bytes_done, bytes_total);
  }
};

}  // namespace mp
