// A restricted pickle virtual machine (protocols 0..5; opcode spec: CPython Lib/pickletools.py)
// for PyTorch checkpoints. It never imports or calls anything: it builds plain Python data (None,
// bool, int, float, str, bytes, tuple, list, dict, set) and, for an allow-list of globals only,
// typed nodes for what torch.save writes (storages via persistent_id, tensors rebuilt by
// torch._utils._rebuild_tensor_v2/_v3, parameters, OrderedDict, torch.Size, torch dtypes).
// Every other global, and every call, is refused with a Status naming it. All sizes are checked
// against PickleLimits before anything is allocated.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "modelport/core/dtype.h"
#include "modelport/core/status.h"

namespace mp::torch {

/// Safety limits of the VM. Defaults are safe for hostile input and roomy for real checkpoints.
struct PickleLimits {
  uint64_t max_stack = 1'000'000;                   ///< values on the stack (incl. marks)
  uint64_t max_depth = 1000;                        ///< nesting of containers in the result
  uint64_t max_memo_entries = 10'000'000;           ///< memo slots; also bounds memo indices
  uint64_t max_alloc_bytes = uint64_t{1} << 30;     ///< total bytes of values built
  uint64_t max_container_elements = 100'000'000;    ///< elements of one container
  uint64_t max_string_bytes = uint64_t{256} << 20;  ///< one str/bytes value
};

enum class ValueKind : uint8_t {
  kNone,
  kBool,
  kInt,
  kFloat,
  kStr,
  kBytes,
  kTuple,
  kList,
  kDict,
  kSet,
  kGlobal,     ///< an allow-listed global (text = "module.name"); a torch dtype has dtype set
  kStorage,    ///< a storage from persistent_id ('storage', class, key, location, numel)
  kTensor,     ///< torch._utils._rebuild_tensor_v2/_v3
  kParameter,  ///< torch._utils._rebuild_parameter: items[0] is the tensor
  kOpaque,     ///< ScanPickle only: the result of something refused (never in Unpickle output)
  kObject,     ///< PickleMode::kTorchScript only: an object of a `__torch__.*` class (text);
               ///< `attributes` is its BUILD state
};

/// What a pickle may build beyond plain data and torch.save's constructs.
enum class PickleMode : uint8_t {
  kCheckpoint,  ///< torch.save output: the allow-list only
  /// torch.jit.save's data.pkl/constants.pkl: also objects of `__torch__.*` classes (created
  /// empty by NEWOBJ, their attributes set by BUILD; the classes' TorchScript code is never
  /// run) and torch.jit._pickle's identity helpers (restore_type_tag, build_*list).
  kTorchScript,
};

/// A storage as the checkpoint names it; its bytes live in `data/<key>` of the archive.
struct StorageRef {
  std::string storage_class;   ///< "torch.FloatStorage", "torch.storage.UntypedStorage", ...
  std::optional<DType> dtype;  ///< absent for UntypedStorage (the tensor's _v3 dtype applies)
  std::string key;
  std::string location;  ///< "cpu", "cuda:0", ...
  int64_t numel = 0;     ///< elements of `dtype` (bytes for UntypedStorage)
};
// Legacy checkpoints (torch < 1.6) add a sixth element, view_metadata; only None (the storage
// itself, not a view of another) is accepted.

/// A tensor view of a storage.
struct TensorRef {
  std::shared_ptr<const StorageRef> storage;  ///< shared by tensors that share storage
  int64_t storage_offset = 0;                 ///< in elements
  std::vector<int64_t> size;
  std::vector<int64_t> stride;
  bool requires_grad = false;
  DType dtype = DType::kF32;  ///< the storage's dtype, or _v3's dtype argument
};

/// One node of the unpickled object graph. Nodes are owned by a PickleResult; children are
/// non-owning pointers into it (the memo makes graphs share nodes, never cycle: cycles are
/// refused).
struct Value {
  ValueKind kind = ValueKind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string text;                 ///< str (UTF-8), bytes, or a global's "module.name"
  std::optional<DType> dtype;       ///< kGlobal of a torch dtype
  std::vector<const Value*> items;  ///< tuple/list/set elements; kParameter: {tensor}
  std::vector<std::pair<const Value*, const Value*>> entries;  ///< dict, insertion-ordered
  /// BUILD state applied to an OrderedDict (torch's state_dict `_metadata`) or a kObject.
  const Value* attributes = nullptr;
  std::shared_ptr<const StorageRef> storage;  ///< kStorage
  std::shared_ptr<const TensorRef> tensor;    ///< kTensor, kParameter
  bool ordered_dict = false;                  ///< kDict built by collections.OrderedDict

  /// The value of `key` in a dict with string keys; null if absent or not a dict.
  const Value* Get(std::string_view key) const;
};

/// An unpickled object graph: `root` and the nodes it owns.
struct PickleResult {
  const Value* root = nullptr;
  std::vector<std::unique_ptr<Value>> nodes;
  uint64_t end_offset = 0;  ///< offset just past STOP (a file may hold several pickles)
};

/// Unpickles `bytes` (one pickle, up to its STOP; trailing bytes are left to the caller, see
/// end_offset). Errors: Unsafe (a global or call outside the allow-list, named exactly),
/// Corrupt (with the byte offset and opcode name), LimitExceeded, Unsupported.
Result<PickleResult> Unpickle(std::span<const uint8_t> bytes, const PickleLimits& limits = {},
                              PickleMode mode = PickleMode::kCheckpoint);

/// One global import or call that a pickle makes.
struct PickleCall {
  std::string callable;  ///< "module.name", or "<opcode on non-global>" when not a global
  std::string opcode;    ///< "GLOBAL", "STACK_GLOBAL", "REDUCE", "NEWOBJ", "BUILD", ...
  uint64_t offset = 0;
  bool allowed = false;  ///< on the allow-list
};

/// What ScanPickle saw. Nothing is executed; scanning goes on after refused globals.
struct ScanReport {
  std::vector<PickleCall> imports;  ///< every GLOBAL/STACK_GLOBAL/INST name, in order
  std::vector<PickleCall> calls;    ///< every REDUCE/NEWOBJ/NEWOBJ_EX/BUILD/OBJ/INST target
  std::vector<std::string> unsafe;  ///< one reason per refused construct
  Status stream_status;             ///< OK, or why the stream stopped (Corrupt, ...)
  uint64_t end_offset = 0;          ///< just past STOP, or where the stream broke
  bool safe() const { return unsafe.empty(); }
};

/// Scans one pickle: records every import and call, and the reasons for refusing them, without
/// stopping at the first. Returns an error only for an empty input; a broken stream is
/// reported in stream_status with everything seen before it.
/// In kTorchScript mode `__torch__.*` classes count as allowed (the caller says the file is
/// TorchScript, whose code torch.jit.load would run).
Result<ScanReport> ScanPickle(std::span<const uint8_t> bytes, const PickleLimits& limits = {},
                              PickleMode mode = PickleMode::kCheckpoint);

/// The pickle opcode name of `op` ("BINUNICODE"), or "unknown".
std::string_view PickleOpcodeName(uint8_t op);

}  // namespace mp::torch
