// libFuzzer target for the restricted pickle VM: every input is unpickled with default and with
// small limits, and scanned. Rejecting the input with a Status is the expected outcome; a crash,
// sanitizer report, leak or timeout is a bug.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "modelport/formats/torch/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  auto full = mp::torch::Unpickle(bytes);
  // A result must never hold a refused construct, and must end inside the input.
  if (full.has_value()) {
    if (full->root == nullptr || full->end_offset > size) std::abort();
    for (const auto& node : full->nodes)
      if (node->kind == mp::torch::ValueKind::kOpaque) std::abort();
  }
  mp::torch::PickleLimits small;
  small.max_stack = 64;
  small.max_depth = 16;
  small.max_memo_entries = 64;
  small.max_alloc_bytes = 1 << 16;
  small.max_container_elements = 64;
  small.max_string_bytes = 256;
  (void)mp::torch::Unpickle(bytes, small);
  auto scan = mp::torch::ScanPickle(bytes);
  if (scan.has_value()) {
    if (scan->end_offset > size) std::abort();
    // Scanning never finds less than unpickling refuses.
    if (!full.has_value() && full.error().code() == mp::StatusCode::kUnsafe && scan->safe() &&
        scan->stream_status.ok())
      std::abort();
  }
  return 0;
}
