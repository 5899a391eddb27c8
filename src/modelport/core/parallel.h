// A fork-join loop over indices, on threads the process keeps, for the per-tensor work (digests,
// comparisons, quantization) that is independent across tensors.
#pragma once

#include <cstddef>
#include <functional>

#include "modelport/core/status.h"

namespace mp {

/// Worker threads to use by default: the hardware threads, at least 2, at most 16.
unsigned WorkerCount();

/// Runs fn(i) for every i in [0, n) on up to `threads` workers (0: WorkerCount()): the calling
/// thread and threads the process keeps for these calls (started when first needed; a call
/// made from one of them, or while they are busy, runs on fewer). Returns the error of the lowest
/// index that failed, so the reported error does not depend on timing, or OK. Stops handing out new
/// indices after the first failure. An exception thrown by fn is such a failure (kInternal, naming
/// the index and what()).
Status ParallelFor(size_t n, const std::function<Status(size_t)>& fn, unsigned threads = 0);

}  // namespace mp
