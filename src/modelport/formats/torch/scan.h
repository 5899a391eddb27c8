// Scanning files for pickles that would run code when loaded (`modelport scan`).
//
// What loads a pickle, and so what is scanned, is decided by content, whatever the extension:
//   zip (starts "PK\3\4"/"PK\5\6")  every entry whose name ends in "pkl" (data.pkl,
//                                  constants.pkl, TorchScript's *.debug_pkl, any other .pkl),
//                                  and object arrays in ".npy" entries (an .npz). A damaged
//                                  archive is walked again leniently (central directory, then
//                                  local headers) so that what torch's reader would still find
//                                  is scanned, and the damage is reported.
//   .npy ("\x93NUMPY")             the pickle after the header of an object ('O') array.
//   legacy torch (torch < 1.6)     the pickles in a row that _legacy_save writes: magic number,
//                                  protocol version, sys_info, the object, the storage keys;
//                                  then raw storage bytes, which are not pickle.
//   old tar checkpoints (< 0.4)    the pickles in the 'storages', 'tensors' and 'pickle' members.
//   anything else                  torch.load, pickle.load and np.load(allow_pickle=True) read
//                                  every other file as a pickle from byte 0, so every other file
//                                  is one if its opcodes import something or reach a STOP; all
//                                  the pickles in a row are scanned, and bytes after them that
//                                  are not a pickle are reported.
//
// Each pickle goes through ScanPickle (the restricted VM, which follows the memo, STACK_GLOBAL
// with computed names, and every import and call, and never executes anything). Where the VM
// stops before Python would (a value it does not model, a limit), an opcode walk of the rest of
// the stream lists the imports that pickle.load would still reach, so a payload after a
// construct the VM refuses is still found. Allow-list, not block-list: any import or call
// outside the VM's allow-list makes the file unsafe.
//
// Verdicts:
//   no pickle   nothing in the file is a pickle (safetensors, GGUF, numeric .npy/.npz, ...).
//   safe        every pickle builds only allow-listed constructs and every stream is intact.
//   suspicious  nothing outside the allow-list would run, but something is off: a broken or
//               truncated stream, trailing data, zip damage (CRC, name/flag/method disagreeing
//               between local and central headers, duplicate names, encryption flags), or a
//               TorchScript archive (torch.jit.load compiles and runs its code/; modelport never
//               does).
//   unsafe      a pickle imports or calls something outside the allow-list (it could run code),
//               or a zip entry name escapes the archive folder (zip-slip).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/core/status.h"
#include "modelport/core/tensor.h"
#include "modelport/formats/torch/pickle.h"
#include "modelport/formats/zip/zip.h"

namespace mp::torch {

/// The verdict on a file, in increasing order of concern.
enum class Verdict : uint8_t { kNoPickle, kSafe, kSuspicious, kUnsafe };

/// "no pickle", "safe", "suspicious", "unsafe".
std::string_view VerdictName(Verdict verdict);

/// Why a file is not safe.
struct ScanReason {
  Verdict severity = Verdict::kSuspicious;  ///< kSuspicious or kUnsafe
  std::string where;                        ///< zip entry or tar member; empty for the file itself
  std::string text;  ///< one line; byte offsets are within `where` (or the file)
};

/// One pickle that was scanned.
struct ScannedPickle {
  std::string where;         ///< zip entry or tar member; empty for the file itself
  uint64_t offset = 0;       ///< where the pickle starts, in `where` (or the file)
  uint64_t size = 0;         ///< bytes up to its STOP, or up to where the stream broke
  std::string role;          ///< "magic number", "object", "object array", ... or empty
  bool torchscript = false;  ///< scanned with PickleMode::kTorchScript
  Status stream_status;      ///< OK, or why the stream broke
};

/// One import or call a pickle makes.
struct ScannedGlobal {
  std::string where;     ///< as in ScannedPickle
  uint64_t offset = 0;   ///< of the opcode, in `where` (or the file)
  std::string name;      ///< "module.name"; "<unknown>" where it cannot be told without running
  std::string opcode;    ///< "GLOBAL", "STACK_GLOBAL", "INST", "REDUCE", "NEWOBJ", "BUILD", ...
  bool allowed = false;  ///< on the allow-list
  /// Found by the opcode walk after the VM had stopped (not by the VM itself).
  bool after_break = false;
};

/// What ScanFile found in one file.
struct FileScan {
  std::string path;
  /// "torch" (zip checkpoint), "torchscript", "torch-legacy", "torch-tar", "pickle", "npy",
  /// "npz", "zip", "empty", "unknown", or the name of a non-pickle format ("safetensors", ...).
  std::string format;
  Verdict verdict = Verdict::kNoPickle;
  std::vector<ScannedPickle> pickles;
  std::vector<ScannedGlobal> imports;
  std::vector<ScannedGlobal> calls;
  std::vector<ScanReason> reasons;
};

struct ScanOptions {
  PickleLimits limits;
  /// Zip reading: name and entry limits; inflation of pickle entries is capped by
  /// max_inflated_bytes and max_expansion_ratio.
  zip::ReaderOptions zip;
  /// Pickles in a row scanned in one stream before the rest is only walked for imports.
  uint64_t max_pickles = 100'000;
  /// Largest zip entry or tar member read to be scanned.
  uint64_t max_entry_bytes = uint64_t{4} << 30;
};

/// Scans the file at `path` (never executes anything; reads the file only). Errors only when
/// the file cannot be read (NotFound, IoError, InvalidArgument for folders); everything about
/// its content is in the FileScan.
Result<FileScan> ScanFile(const std::string& path, const ScanOptions& options = {});

/// The scan as JSON: {"path", "format", "verdict", "reasons": [{"severity", "where", "reason"}],
/// "imports": [{"name", "opcode", "where", "offset", "allowed"}], "calls": [...], "pickles":
/// [{"where", "offset", "bytes", "role", "torchscript", "status"}]}. "where" is omitted when
/// empty; "status" is "ok" or the stream error.
Json ScanToJson(const FileScan& scan);

}  // namespace mp::torch
