// Hugging Face sharded models: NAME.index.json {"metadata": {...}, "weight_map": {tensor: shard}}
// with the shards in the same folder. Reading is the same for every format; only opening one
// shard differs.
#pragma once

#include <functional>
#include <memory>
#include <string>

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

}  // namespace mp
