// libFuzzer target for `modelport scan` (formats/torch/scan.h): the input becomes a file that
// ScanFile classifies by content (zip, strict and lenient; .npy; legacy torch; tar; raw
// pickles; polyglots) and scans, with default and with small limits. A scan never fails on
// content, so beyond crashes and sanitizer reports it checks what every scan must satisfy: the
// verdict is the worst reason (or safe/no pickle without reasons), offsets lie inside the
// file, and the JSON form serialises.
#include <cstdint>
#include <cstdlib>

#include "fuzz_util.h"
#include "modelport/formats/torch/scan.h"

namespace {

const std::string& ScratchPath() {
  static const std::string path = mp::fuzz::ScratchPath(".scan");
  return path;
}

void Check(const mp::torch::FileScan& s, size_t size) {
  using mp::torch::Verdict;
  Verdict worst = s.pickles.empty() ? Verdict::kNoPickle : Verdict::kSafe;
  for (const auto& r : s.reasons) {
    if (r.severity != Verdict::kSuspicious && r.severity != Verdict::kUnsafe) std::abort();
    if (r.severity > worst) worst = r.severity;
  }
  if (s.verdict != worst) std::abort();
  // Unsafe means something outside the allow-list, and it is named in a reason.
  for (const auto& g : s.imports)
    if (!g.allowed && s.verdict != Verdict::kUnsafe) std::abort();
  for (const auto& p : s.pickles)
    if (p.where.empty() && (p.offset > size || p.size > size - p.offset)) std::abort();
  (void)mp::torch::ScanToJson(s).dump(-1, ' ', false, mp::Json::error_handler_t::replace);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mp::fuzz::WriteScratch(ScratchPath(), data, size);
  auto full = mp::torch::ScanFile(ScratchPath());
  if (!full.has_value()) std::abort();  // a readable file always scans
  Check(*full, size);
  mp::torch::ScanOptions small;
  small.limits.max_stack = 64;
  small.limits.max_depth = 16;
  small.limits.max_memo_entries = 64;
  small.limits.max_alloc_bytes = 1 << 16;
  small.limits.max_container_elements = 64;
  small.limits.max_string_bytes = 256;
  small.zip.max_entries = 16;
  small.zip.max_inflated_bytes = 1 << 20;
  small.max_pickles = 4;
  small.max_entry_bytes = 1 << 20;
  auto limited = mp::torch::ScanFile(ScratchPath(), small);
  if (!limited.has_value()) std::abort();
  Check(*limited, size);
  std::remove(ScratchPath().c_str());
  return 0;
}
