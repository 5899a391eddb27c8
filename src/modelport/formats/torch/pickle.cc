#include "modelport/formats/torch/pickle.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "modelport/core/json.h"

namespace mp::torch {
namespace {

struct OpInfo {
  uint8_t code = 0;
  const char* name;
};

// Opcode bytes from CPython Lib/pickletools.py.
constexpr OpInfo kOps[] = {
    {'(', "MARK"},
    {'.', "STOP"},
    {'0', "POP"},
    {'1', "POP_MARK"},
    {'2', "DUP"},
    {'F', "FLOAT"},
    {'I', "INT"},
    {'J', "BININT"},
    {'K', "BININT1"},
    {'L', "LONG"},
    {'M', "BININT2"},
    {'N', "NONE"},
    {'P', "PERSID"},
    {'Q', "BINPERSID"},
    {'R', "REDUCE"},
    {'S', "STRING"},
    {'T', "BINSTRING"},
    {'U', "SHORT_BINSTRING"},
    {'V', "UNICODE"},
    {'X', "BINUNICODE"},
    {'a', "APPEND"},
    {'b', "BUILD"},
    {'c', "GLOBAL"},
    {'d', "DICT"},
    {'}', "EMPTY_DICT"},
    {'e', "APPENDS"},
    {'g', "GET"},
    {'h', "BINGET"},
    {'i', "INST"},
    {'j', "LONG_BINGET"},
    {'l', "LIST"},
    {']', "EMPTY_LIST"},
    {'o', "OBJ"},
    {'p', "PUT"},
    {'q', "BINPUT"},
    {'r', "LONG_BINPUT"},
    {'s', "SETITEM"},
    {'t', "TUPLE"},
    {')', "EMPTY_TUPLE"},
    {'u', "SETITEMS"},
    {'G', "BINFLOAT"},
    {0x80, "PROTO"},
    {0x81, "NEWOBJ"},
    {0x82, "EXT1"},
    {0x83, "EXT2"},
    {0x84, "EXT4"},
    {0x85, "TUPLE1"},
    {0x86, "TUPLE2"},
    {0x87, "TUPLE3"},
    {0x88, "NEWTRUE"},
    {0x89, "NEWFALSE"},
    {0x8a, "LONG1"},
    {0x8b, "LONG4"},
    {'B', "BINBYTES"},
    {'C', "SHORT_BINBYTES"},
    {0x8c, "SHORT_BINUNICODE"},
    {0x8d, "BINUNICODE8"},
    {0x8e, "BINBYTES8"},
    {0x8f, "EMPTY_SET"},
    {0x90, "ADDITEMS"},
    {0x91, "FROZENSET"},
    {0x92, "NEWOBJ_EX"},
    {0x93, "STACK_GLOBAL"},
    {0x94, "MEMOIZE"},
    {0x95, "FRAME"},
    {0x96, "BYTEARRAY8"},
    {0x97, "NEXT_BUFFER"},
    {0x98, "READONLY_BUFFER"},
};

struct StorageClass {
  std::string_view name;
  std::optional<DType> dtype;
};

constexpr StorageClass kStorageClasses[] = {
    {"torch.FloatStorage", DType::kF32},
    {"torch.HalfStorage", DType::kF16},
    {"torch.BFloat16Storage", DType::kBF16},
    {"torch.DoubleStorage", DType::kF64},
    {"torch.LongStorage", DType::kI64},
    {"torch.IntStorage", DType::kI32},
    {"torch.ShortStorage", DType::kI16},
    {"torch.CharStorage", DType::kI8},
    {"torch.ByteStorage", DType::kU8},
    {"torch.BoolStorage", DType::kBool},
    {"torch.ComplexFloatStorage", DType::kC64},
    {"torch.UntypedStorage", std::nullopt},
    {"torch.storage.UntypedStorage", std::nullopt},
};

struct TorchDType {
  std::string_view name;
  DType dtype;
};

// torch dtype attributes (and their aliases) that _rebuild_tensor_v3 may receive.
constexpr TorchDType kTorchDTypes[] = {
    {"torch.float32", DType::kF32},
    {"torch.float", DType::kF32},
    {"torch.float16", DType::kF16},
    {"torch.half", DType::kF16},
    {"torch.bfloat16", DType::kBF16},
    {"torch.float64", DType::kF64},
    {"torch.double", DType::kF64},
    {"torch.int64", DType::kI64},
    {"torch.long", DType::kI64},
    {"torch.int32", DType::kI32},
    {"torch.int", DType::kI32},
    {"torch.int16", DType::kI16},
    {"torch.short", DType::kI16},
    {"torch.int8", DType::kI8},
    {"torch.uint8", DType::kU8},
    {"torch.bool", DType::kBool},
    {"torch.complex64", DType::kC64},
    {"torch.cfloat", DType::kC64},
    {"torch.uint16", DType::kU16},
    {"torch.uint32", DType::kU32},
    {"torch.uint64", DType::kU64},
    {"torch.float8_e4m3fn", DType::kF8E4M3},
    {"torch.float8_e5m2", DType::kF8E5M2},
};

constexpr std::string_view kCallables[] = {
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "collections.OrderedDict",
    "torch.Size",
    "_codecs.encode",
    // Protocol 2 writes b'' as bytes() (Python 2 name with fix_imports); only () is accepted.
    "__builtin__.bytes",
    "builtins.bytes",
};

bool IsAllowedGlobal(std::string_view name) {
  for (auto c : kCallables)
    if (c == name) return true;
  for (const auto& s : kStorageClasses)
    if (s.name == name) return true;
  for (const auto& d : kTorchDTypes)
    if (d.name == name) return true;
  return false;
}

// Genuine torch types without a modelport dtype: refused as unsupported, not as unsafe.
constexpr std::string_view kUnsupportedTorchTypes[] = {
    "torch.ComplexDoubleStorage",
    "torch.complex128",
    "torch.cdouble",
    "torch.ComplexHalfStorage",
    "torch.complex32",
    "torch.QInt8Storage",
    "torch.QUInt8Storage",
    "torch.QInt32Storage",
    "torch.QUInt4x2Storage",
    "torch.QUInt2x4Storage",
    "torch.quint8",
    "torch.qint8",
    "torch.qint32",
    "torch.float8_e4m3fnuz",
    "torch.float8_e5m2fnuz",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
};

bool IsUnsupportedTorchType(std::string_view name) {
  for (auto t : kUnsupportedTorchTypes)
    if (t == name) return true;
  return false;
}

// TorchScript archives: the module's own classes (their code is never run here) and
// torch.jit._pickle's helpers, which return their first argument unchanged.
constexpr std::string_view kTorchScriptIdentities[] = {
    "torch.jit._pickle.restore_type_tag", "torch.jit._pickle.build_intlist",
    "torch.jit._pickle.build_tensorlist", "torch.jit._pickle.build_doublelist",
    "torch.jit._pickle.build_boollist",
};

bool IsTorchScriptGlobal(std::string_view name) {
  if (name.starts_with("__torch__.")) return true;
  for (auto f : kTorchScriptIdentities)
    if (f == name) return true;
  return false;
}

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Vm {
 public:
  Vm(std::span<const uint8_t> bytes, const PickleLimits& limits, PickleMode mode, ScanReport* scan)
      : bytes_(bytes), limits_(limits), mode_(mode), scan_(scan) {}

  Status Run();
  PickleResult TakeResult() {
    result_.root = root_;
    result_.end_offset = pos_;
    return std::move(result_);
  }
  uint64_t pos() const { return pos_; }

 private:
  Status Err(std::string why) const {
    return Corrupt("pickle byte " + std::to_string(op_offset_) + " (" +
                   std::string(PickleOpcodeName(op_)) + "): " + why);
  }
  Status Limit(std::string why) const {
    return LimitExceeded("pickle byte " + std::to_string(op_offset_) + " (" +
                         std::string(PickleOpcodeName(op_)) + "): " + why);
  }

  Status Read(uint64_t n, const uint8_t** out) {
    if (n > bytes_.size() - pos_)
      return Err("needs " + std::to_string(n) + " bytes but only " +
                 std::to_string(bytes_.size() - pos_) + " remain");
    *out = bytes_.data() + pos_;
    pos_ += n;
    return Status::Ok();
  }
  template <typename T>
  Status ReadLe(T* out) {
    const uint8_t* p;
    MP_RETURN_IF_ERROR(Read(sizeof(T), &p));
    uint64_t v = 0;
    for (size_t k = 0; k < sizeof(T); ++k) v |= uint64_t{p[k]} << (8 * k);
    *out = static_cast<T>(v);
    return Status::Ok();
  }
  Status ReadLine(std::string_view* out) {
    const uint8_t* start = bytes_.data() + pos_;
    const void* nl = std::memchr(start, '\n', bytes_.size() - pos_);
    if (nl == nullptr) return Err("line has no terminating newline");
    const size_t n = static_cast<const uint8_t*>(nl) - start;
    if (n > limits_.max_string_bytes) return Limit("line of " + std::to_string(n) + " bytes");
    *out = std::string_view(reinterpret_cast<const char*>(start), n);
    pos_ += n + 1;
    return Status::Ok();
  }

  Status Charge(uint64_t bytes) {
    alloc_ += bytes;
    if (alloc_ > limits_.max_alloc_bytes)
      return Limit("values built exceed max_alloc_bytes (" +
                   std::to_string(limits_.max_alloc_bytes) + ")");
    return Status::Ok();
  }
  Result<Value*> New(ValueKind kind, uint64_t payload = 0) {
    MP_RETURN_IF_ERROR(Charge(sizeof(Value) + payload));
    result_.nodes.push_back(std::make_unique<Value>());
    result_.nodes.back()->kind = kind;
    return result_.nodes.back().get();
  }
  Status Push(Value* v) {
    if (stack_.size() + marks_.size() >= limits_.max_stack)
      return Limit("stack deeper than max_stack (" + std::to_string(limits_.max_stack) + ")");
    stack_.push_back(v);
    return Status::Ok();
  }
  Status PushNew(ValueKind kind, Value** out = nullptr) {
    MP_ASSIGN_OR_RETURN(Value * v, New(kind));
    if (out != nullptr) *out = v;
    return Push(v);
  }
  // Scanning: the placeholder for a refused construct, named so later opcodes can say what
  // they act on.
  Status PushNamedOpaque(const std::string& name) {
    Value* v = nullptr;
    MP_RETURN_IF_ERROR(PushNew(ValueKind::kOpaque, &v));
    v->text = name;
    return Status::Ok();
  }
  Status Pop(Value** out) {
    if (stack_.size() <= MarkBase()) return Err("stack underflow");
    *out = stack_.back();
    stack_.pop_back();
    return Status::Ok();
  }
  Status Top(Value** out) {
    if (stack_.size() <= MarkBase()) return Err("stack underflow");
    *out = stack_.back();
    return Status::Ok();
  }
  size_t MarkBase() const { return marks_.empty() ? 0 : marks_.back(); }
  Status PopMark(std::vector<Value*>* out) {
    if (marks_.empty()) return Err("no MARK on the stack");
    const size_t base = marks_.back();
    marks_.pop_back();
    out->assign(stack_.begin() + static_cast<ptrdiff_t>(base), stack_.end());
    stack_.resize(base);
    return Status::Ok();
  }

  Status PushString(ValueKind kind, uint64_t n) {
    if (n > limits_.max_string_bytes)
      return Limit("string of " + std::to_string(n) + " bytes exceeds max_string_bytes (" +
                   std::to_string(limits_.max_string_bytes) + ")");
    const uint8_t* p;
    MP_RETURN_IF_ERROR(Read(n, &p));
    MP_ASSIGN_OR_RETURN(Value * v, New(kind, n));
    v->text.assign(reinterpret_cast<const char*>(p), n);
    // Python 2 str (BINSTRING, SHORT_BINSTRING) decodes to str when it can, as torch.load does.
    if (op_ == 'T' || op_ == 'U')
      v->kind = IsValidUtf8(v->text) ? ValueKind::kStr : ValueKind::kBytes;
    if (v->kind == ValueKind::kStr && !IsValidUtf8(v->text))
      return Err("string is not valid UTF-8");
    return Push(v);
  }
  Status PushInt(int64_t i) {
    Value* v = nullptr;
    MP_RETURN_IF_ERROR(PushNew(ValueKind::kInt, &v));
    v->i = i;
    return Status::Ok();
  }
  Status PushLong(const uint8_t* p, uint64_t n);
  Status Memo(uint64_t index);
  Status MemoGet(uint64_t index);
  Status Global(std::string module, std::string name, const char* opcode);
  Status Refuse(std::string callable, const char* opcode, std::string reason);
  Status Call(Value* callable, Value* args, const char* opcode);
  Result<Value*> Apply(Value* callable, Value* args);
  Result<Value*> PersistentLoad(Value* pid);
  Status AddToContainer(Value* target, std::span<Value* const> items, bool pairs);
  Status SetItem(Value* dict, Value* key, Value* value);
  Status CheckGraph(const Value* v, uint64_t depth, std::unordered_map<const Value*, int>& color);
  Status Step(uint8_t op);

  std::span<const uint8_t> bytes_;
  const PickleLimits& limits_;
  PickleMode mode_;
  ScanReport* scan_;
  uint64_t pos_ = 0;
  uint64_t op_offset_ = 0;
  uint8_t op_ = 0;
  uint64_t alloc_ = 0;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
  // Per dict node: serialized key -> entry index, so duplicate keys overwrite as in Python.
  std::unordered_map<const Value*, std::unordered_map<std::string, size_t>> dict_index_;
  PickleResult result_;
  Value* root_ = nullptr;
  bool stopped_ = false;
};

Status Vm::PushLong(const uint8_t* p, uint64_t n) {
  // Two's complement little-endian; modelport keeps ints in int64.
  if (n == 0) return PushInt(0);
  const bool negative = (p[n - 1] & 0x80) != 0;
  const uint8_t fill = negative ? 0xFF : 0x00;
  uint64_t used = n;
  while (used > 1 && p[used - 1] == fill && ((p[used - 2] & 0x80) != 0) == negative) --used;
  if (used > 8) return Limit("integer of " + std::to_string(n) + " bytes does not fit in 64 bits");
  uint64_t v = negative ? ~uint64_t{0} : 0;
  for (uint64_t k = 0; k < used; ++k) {
    v &= ~(uint64_t{0xFF} << (8 * k));
    v |= uint64_t{p[k]} << (8 * k);
  }
  return PushInt(static_cast<int64_t>(v));
}

Status Vm::Memo(uint64_t index) {
  Value* v = nullptr;
  MP_RETURN_IF_ERROR(Top(&v));
  if (index >= limits_.max_memo_entries)
    return Limit("memo index " + std::to_string(index) + " exceeds max_memo_entries (" +
                 std::to_string(limits_.max_memo_entries) + ")");
  if (memo_.size() >= limits_.max_memo_entries && memo_.count(index) == 0)
    return Limit("more than max_memo_entries memo slots");
  MP_RETURN_IF_ERROR(Charge(32));
  memo_[index] = v;
  return Status::Ok();
}

Status Vm::MemoGet(uint64_t index) {
  auto it = memo_.find(index);
  if (it == memo_.end()) return Err("memo index " + std::to_string(index) + " was never stored");
  return Push(it->second);
}

Status Vm::Refuse(std::string callable, const char* opcode, std::string reason) {
  if (scan_ == nullptr) return Unsafe(std::move(reason));
  scan_->unsafe.push_back("byte " + std::to_string(op_offset_) + ": " + reason);
  (void)callable;
  (void)opcode;
  return Status::Ok();
}

Status Vm::Global(std::string module, std::string name, const char* opcode) {
  const std::string full = module + "." + name;
  const bool allowed =
      IsAllowedGlobal(full) || (mode_ == PickleMode::kTorchScript && IsTorchScriptGlobal(full));
  if (scan_ != nullptr) scan_->imports.push_back({full, opcode, op_offset_, allowed});
  Value* v = nullptr;
  if (!allowed && scan_ == nullptr && IsUnsupportedTorchType(full))
    return Unsupported("pickle uses '" + full + "', a torch type modelport cannot hold yet");
  if (!allowed) {
    MP_RETURN_IF_ERROR(
        Refuse(full, opcode, "pickle imports '" + full + "', which is not allow-listed"));
    MP_RETURN_IF_ERROR(PushNew(ValueKind::kOpaque, &v));
    v->text = full;
    return Status::Ok();
  }
  MP_RETURN_IF_ERROR(PushNew(ValueKind::kGlobal, &v));
  v->text = full;
  for (const auto& d : kTorchDTypes)
    if (d.name == full) v->dtype = d.dtype;
  return Status::Ok();
}

enum class KeyStatus { kOk, kUnhashable, kTooBig };

// Dict keys and set elements in checkpoints are short names; a bigger one is an attack.
constexpr uint64_t kMaxKeyBytes = 1 << 20;

// A canonical encoding of a hashable key; equal Python keys give equal strings (1 == True ==
// 1.0 as in Python). Bounded in size and depth: memo-shared tuples can nest exponentially.
KeyStatus KeyOf(const Value* v, std::string& out, uint64_t max_bytes, int depth = 0) {
  if (depth > 64 || out.size() > max_bytes) return KeyStatus::kTooBig;
  switch (v->kind) {
    case ValueKind::kNone:
      out += 'N';
      return KeyStatus::kOk;
    case ValueKind::kBool:
    case ValueKind::kInt: {
      const int64_t i = v->kind == ValueKind::kBool ? int64_t{v->b} : v->i;
      out += 'I' + std::to_string(i) + ';';
      return KeyStatus::kOk;
    }
    case ValueKind::kFloat:
      if (std::isfinite(v->f) && v->f == std::floor(v->f) && std::fabs(v->f) < 9.2e18) {
        out += 'I' + std::to_string(static_cast<int64_t>(v->f)) + ';';
      } else {
        char buf[32];
        std::snprintf(buf, sizeof buf, "F%.17g;", v->f);
        out += buf;
      }
      return KeyStatus::kOk;
    case ValueKind::kStr:
    case ValueKind::kBytes:
    case ValueKind::kGlobal:
      out += v->kind == ValueKind::kStr ? 'S' : v->kind == ValueKind::kBytes ? 'B' : 'G';
      out += std::to_string(v->text.size()) + ':' + v->text;
      return KeyStatus::kOk;
    case ValueKind::kTuple:
      out += 'T' + std::to_string(v->items.size()) + '(';
      for (const Value* i : v->items) {
        const KeyStatus s = KeyOf(i, out, max_bytes, depth + 1);
        if (s != KeyStatus::kOk) return s;
      }
      out += ')';
      return KeyStatus::kOk;
    default:
      return KeyStatus::kUnhashable;
  }
}

Status Vm::SetItem(Value* dict, Value* key, Value* value) {
  if (scan_ != nullptr && key->kind == ValueKind::kOpaque) return Status::Ok();
  std::string k;
  const KeyStatus ks = KeyOf(key, k, kMaxKeyBytes);
  if (ks == KeyStatus::kUnhashable) return Err("dict key is not hashable");
  if (ks == KeyStatus::kTooBig) return Limit("dict key is too large or too deeply nested");
  MP_RETURN_IF_ERROR(Charge(k.size() + 64));
  auto& index = dict_index_[dict];
  auto [it, inserted] = index.emplace(std::move(k), dict->entries.size());
  if (!inserted) {
    dict->entries[it->second].second = value;
    return Status::Ok();
  }
  if (dict->entries.size() >= limits_.max_container_elements)
    return Limit("dict has more than max_container_elements entries");
  dict->entries.emplace_back(key, value);
  return Status::Ok();
}

Status Vm::AddToContainer(Value* target, std::span<Value* const> items, bool pairs) {
  if (scan_ != nullptr && target->kind == ValueKind::kOpaque) return Status::Ok();
  if (pairs) {
    if (target->kind != ValueKind::kDict) return Err("SETITEM(S) target is not a dict");
    if (items.size() % 2 != 0) return Err("SETITEMS has an odd number of items");
    for (size_t k = 0; k < items.size(); k += 2)
      MP_RETURN_IF_ERROR(SetItem(target, items[k], items[k + 1]));
    return Status::Ok();
  }
  if (target->kind != ValueKind::kList && target->kind != ValueKind::kSet)
    return Err("APPEND(S)/ADDITEMS target is not a list or set");
  if (target->items.size() + items.size() > limits_.max_container_elements)
    return Limit("container has more than max_container_elements elements");
  MP_RETURN_IF_ERROR(Charge(items.size() * sizeof(Value*)));
  if (target->kind == ValueKind::kSet) {
    for (Value* v : items) {
      if (scan_ != nullptr && v->kind == ValueKind::kOpaque) continue;
      std::string k;
      const KeyStatus ks = KeyOf(v, k, kMaxKeyBytes);
      if (ks == KeyStatus::kUnhashable) return Err("set element is not hashable");
      if (ks == KeyStatus::kTooBig) return Limit("set element is too large or too deeply nested");
      MP_RETURN_IF_ERROR(Charge(k.size()));
    }
  }
  target->items.insert(target->items.end(), items.begin(), items.end());
  return Status::Ok();
}

bool IsInt(const Value* v) { return v->kind == ValueKind::kInt; }

Result<std::vector<int64_t>> IntTuple(const Value* v, const char* what) {
  if (v->kind != ValueKind::kTuple)
    return Corrupt(std::string("tensor ") + what + " is not a tuple of ints");
  std::vector<int64_t> out;
  for (const Value* i : v->items) {
    if (!IsInt(i)) return Corrupt(std::string("tensor ") + what + " is not a tuple of ints");
    out.push_back(i->i);
  }
  return out;
}

// Visits each shared node once (memo-shared containers can nest exponentially).
bool IsPlainData(const Value* v, std::unordered_set<const Value*>& seen, int depth = 0) {
  if (depth > 64) return false;
  if (!seen.insert(v).second) return true;
  switch (v->kind) {
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kStr:
    case ValueKind::kBytes:
      return true;
    case ValueKind::kTuple:
    case ValueKind::kList:
    case ValueKind::kSet:
      for (const Value* i : v->items)
        if (!IsPlainData(i, seen, depth + 1)) return false;
      return true;
    case ValueKind::kDict:
      for (const auto& [k, x] : v->entries)
        if (!IsPlainData(k, seen, depth + 1) || !IsPlainData(x, seen, depth + 1)) return false;
      return v->attributes == nullptr || IsPlainData(v->attributes, seen, depth + 1);
    default:
      return false;
  }
}

bool IsPlainData(const Value* v) {
  std::unordered_set<const Value*> seen;
  return IsPlainData(v, seen);
}

bool IsEmptyHooks(const Value* v) {
  return v->kind == ValueKind::kNone || (v->kind == ValueKind::kDict && v->entries.empty());
}

Result<Value*> Vm::PersistentLoad(Value* pid) {
  if (pid->kind != ValueKind::kTuple || pid->items.size() < 5 || pid->items.size() > 6 ||
      pid->items[0]->kind != ValueKind::kStr || pid->items[0]->text != "storage")
    return Unsupported("persistent_id is not a ('storage', class, key, location, numel) tuple");
  if (pid->items.size() == 6 && pid->items[5]->kind != ValueKind::kNone)
    return Unsupported("legacy persistent_id is a view of another storage (view_metadata)");
  const Value* cls = pid->items[1];
  const Value* key = pid->items[2];
  const Value* loc = pid->items[3];
  const Value* numel = pid->items[4];
  const StorageClass* sc = nullptr;
  if (cls->kind == ValueKind::kGlobal)
    for (const auto& s : kStorageClasses)
      if (s.name == cls->text) sc = &s;
  std::optional<DType> dtype;
  if (sc == nullptr) {
    // torch 2.x may pass a dtype object instead of a storage class for typed storages.
    if (cls->kind == ValueKind::kGlobal && cls->dtype.has_value()) {
      dtype = cls->dtype;
    } else {
      return Unsupported("persistent_id storage type is not a known torch storage class");
    }
  } else {
    dtype = sc->dtype;
  }
  if (key->kind != ValueKind::kStr || loc->kind != ValueKind::kStr || !IsInt(numel) || numel->i < 0)
    return Corrupt("persistent_id storage tuple has a bad key, location or numel");
  auto ref = std::make_shared<StorageRef>();
  ref->storage_class = cls->text;
  ref->dtype = dtype;
  ref->key = key->text;
  ref->location = loc->text;
  ref->numel = numel->i;
  MP_ASSIGN_OR_RETURN(Value * v, New(ValueKind::kStorage, sizeof(StorageRef) + key->text.size()));
  v->storage = std::move(ref);
  return v;
}

Result<Value*> Vm::Apply(Value* callable, Value* args) {
  if (callable->kind != ValueKind::kGlobal)
    return Unsafe("pickle calls a non-global object, which is not allow-listed");
  const std::string& f = callable->text;
  if (args->kind != ValueKind::kTuple) return Corrupt("arguments of '" + f + "' are not a tuple");
  const auto& a = args->items;
  if (mode_ == PickleMode::kTorchScript && f.starts_with("torch.jit._pickle.")) {
    if (a.empty()) return Corrupt("'" + f + "' called without arguments");
    return const_cast<Value*>(a[0]);
  }
  if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor_v3") {
    const bool v3 = f.back() == '3';
    const size_t min_args = v3 ? 7 : 6;
    if (a.size() < min_args || a.size() > min_args + 1)
      return Corrupt("'" + f + "' takes " + std::to_string(min_args) + " or " +
                     std::to_string(min_args + 1) + " arguments, got " + std::to_string(a.size()));
    if (a[0]->kind != ValueKind::kStorage)
      return Corrupt("'" + f + "' argument 0 is not a storage");
    if (!IsInt(a[1]) || a[1]->i < 0)
      return Corrupt("'" + f + "' storage_offset is not an int >= 0");
    auto t = std::make_shared<TensorRef>();
    t->storage = a[0]->storage;
    t->storage_offset = a[1]->i;
    MP_ASSIGN_OR_RETURN(t->size, IntTuple(a[2], "size"));
    MP_ASSIGN_OR_RETURN(t->stride, IntTuple(a[3], "stride"));
    if (t->size.size() != t->stride.size())
      return Corrupt("'" + f + "' size and stride have different ranks");
    for (int64_t s : t->size)
      if (s < 0) return Corrupt("'" + f + "' has a negative dimension");
    if (a[4]->kind != ValueKind::kBool) return Corrupt("'" + f + "' requires_grad is not a bool");
    t->requires_grad = a[4]->b;
    if (!IsEmptyHooks(a[5])) return Unsafe("'" + f + "' has backward hooks, which would run code");
    if (v3) {
      if (a[6]->kind != ValueKind::kGlobal || !a[6]->dtype.has_value())
        return Corrupt("'" + f + "' dtype argument is not a torch dtype");
      t->dtype = *a[6]->dtype;
    } else {
      if (!t->storage->dtype.has_value())
        return Corrupt("'" + f + "' on an untyped storage has no dtype");
      t->dtype = *t->storage->dtype;
    }
    // The view must lie inside its storage (the loader then reads only those bytes).
    const uint64_t elem = ElementSize(t->dtype);
    const int64_t available = t->storage->dtype.has_value()
                                  ? t->storage->numel
                                  : t->storage->numel / static_cast<int64_t>(elem);
    int64_t last = t->storage_offset;
    bool empty = false;
    for (size_t d = 0; d < t->size.size(); ++d) {
      if (t->stride[d] < 0) return Corrupt("'" + f + "' has a negative stride");
      if (t->size[d] == 0) empty = true;
      int64_t step = 0;
      if (t->size[d] > 0 && (__builtin_mul_overflow(t->size[d] - 1, t->stride[d], &step) ||
                             __builtin_add_overflow(last, step, &last)))
        return Corrupt("'" + f + "' size and stride overflow");
    }
    if (!empty && last >= available)
      return Corrupt("'" + f + "' view reaches element " + std::to_string(last) + " but storage '" +
                     t->storage->key + "' holds " + std::to_string(available));
    if (a.size() == min_args + 1 && !IsPlainData(a[min_args]))
      return Unsafe("'" + f + "' metadata is not plain data");
    MP_ASSIGN_OR_RETURN(Value * v,
                        New(ValueKind::kTensor, sizeof(TensorRef) + 16 * t->size.size()));
    v->tensor = std::move(t);
    return v;
  }
  if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
    const bool with_state = f.back() == 'e';
    if (a.size() != (with_state ? 4u : 3u))
      return Corrupt("'" + f + "' has " + std::to_string(a.size()) + " arguments");
    if (a[0]->kind != ValueKind::kTensor) return Corrupt("'" + f + "' data is not a tensor");
    if (a[1]->kind != ValueKind::kBool) return Corrupt("'" + f + "' requires_grad is not a bool");
    if (!IsEmptyHooks(a[2])) return Unsafe("'" + f + "' has backward hooks, which would run code");
    if (with_state && !IsPlainData(a[3])) return Unsafe("'" + f + "' state is not plain data");
    MP_ASSIGN_OR_RETURN(Value * v, New(ValueKind::kParameter));
    v->items.push_back(a[0]);
    auto t = std::make_shared<TensorRef>(*a[0]->tensor);
    t->requires_grad = a[1]->b;
    v->tensor = std::move(t);
    return v;
  }
  if (f == "collections.OrderedDict") {
    if (!a.empty()) return Unsupported("'collections.OrderedDict' called with arguments");
    MP_ASSIGN_OR_RETURN(Value * v, New(ValueKind::kDict));
    v->ordered_dict = true;
    return v;
  }
  if (f == "torch.Size") {
    if (a.size() != 1 || a[0]->kind != ValueKind::kTuple)
      return Corrupt("'torch.Size' argument is not a tuple");
    for (const Value* i : a[0]->items)
      if (!IsInt(i)) return Corrupt("'torch.Size' argument is not a tuple of ints");
    return const_cast<Value*>(a[0]);
  }
  if (f == "__builtin__.bytes" || f == "builtins.bytes") {
    if (!a.empty()) return Unsafe("'" + f + "' is allowed only with no arguments (b'')");
    return New(ValueKind::kBytes);
  }
  if (f == "_codecs.encode") {
    if (a.size() != 2 || a[0]->kind != ValueKind::kStr || a[1]->kind != ValueKind::kStr ||
        a[1]->text != "latin1")
      return Unsafe("'_codecs.encode' is allowed only as encode(str, 'latin1')");
    // Python 2-compatible bytes: each code point (< 256) becomes one byte.
    std::string out;
    const std::string& s = a[0]->text;
    for (size_t k = 0; k < s.size();) {
      const auto c = static_cast<uint8_t>(s[k]);
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++k;
      } else if ((c & 0xE0) == 0xC0 && k + 1 < s.size()) {
        const uint32_t cp = ((c & 0x1F) << 6) | (static_cast<uint8_t>(s[k + 1]) & 0x3F);
        if (cp > 0xFF) return Corrupt("'_codecs.encode' string is not latin-1");
        out += static_cast<char>(cp);
        k += 2;
      } else {
        return Corrupt("'_codecs.encode' string is not latin-1");
      }
    }
    MP_ASSIGN_OR_RETURN(Value * v, New(ValueKind::kBytes, out.size()));
    v->text = std::move(out);
    return v;
  }
  return Unsafe("pickle calls '" + f + "', which is not an allow-listed callable");
}

Status Vm::Call(Value* callable, Value* args, const char* opcode) {
  const std::string name =
      callable->kind == ValueKind::kGlobal || callable->kind == ValueKind::kOpaque ? callable->text
                                                                                   : "<non-global>";
  if (scan_ != nullptr) {
    scan_->calls.push_back({name, opcode, op_offset_, callable->kind == ValueKind::kGlobal});
  }
  Result<Value*> r =
      callable->kind == ValueKind::kOpaque
          ? Result<Value*>(Unsafe("pickle calls '" + name + "', which is not allow-listed"))
          : Apply(callable, args);
  if (r.has_value()) return Push(*r);
  if (scan_ == nullptr) return r.error();
  // Scanning: note why, and go on with a placeholder.
  if (callable->kind != ValueKind::kOpaque)  // refused imports were already reported
    scan_->unsafe.push_back("byte " + std::to_string(op_offset_) + ": " + r.error().message());
  Value* v = nullptr;
  MP_RETURN_IF_ERROR(PushNew(ValueKind::kOpaque, &v));
  v->text = name;
  return Status::Ok();
}

Status Vm::CheckGraph(const Value* v, uint64_t depth,
                      std::unordered_map<const Value*, int>& color) {
  if (depth > limits_.max_depth)
    return LimitExceeded("pickle nests containers deeper than max_depth (" +
                         std::to_string(limits_.max_depth) + ")");
  auto [it, inserted] = color.emplace(v, 1);
  if (!inserted) {
    if (it->second == 1) return Unsupported("pickle builds a reference cycle");
    return Status::Ok();
  }
  for (const Value* c : v->items) MP_RETURN_IF_ERROR(CheckGraph(c, depth + 1, color));
  for (const auto& [k, x] : v->entries) {
    MP_RETURN_IF_ERROR(CheckGraph(k, depth + 1, color));
    MP_RETURN_IF_ERROR(CheckGraph(x, depth + 1, color));
  }
  if (v->attributes != nullptr) MP_RETURN_IF_ERROR(CheckGraph(v->attributes, depth + 1, color));
  color[v] = 2;
  return Status::Ok();
}

Status Vm::Run() {
  if (bytes_.empty()) return Corrupt("pickle is empty (no STOP)");
  while (!stopped_) {
    if (pos_ >= bytes_.size()) {
      op_offset_ = pos_;
      return Corrupt("pickle ends at byte " + std::to_string(pos_) + " without STOP");
    }
    op_offset_ = pos_;
    op_ = bytes_[pos_++];
    MP_RETURN_IF_ERROR(Step(op_));
    // Marks hold stack positions, so they count toward the depth too.
    if (marks_.size() > limits_.max_stack) return Limit("too many MARKs");
  }
  if (scan_ == nullptr) {
    std::unordered_map<const Value*, int> color;
    MP_RETURN_IF_ERROR(CheckGraph(root_, 0, color));
  }
  return Status::Ok();
}

Status Vm::Step(uint8_t op) {
  Value* v = nullptr;
  Value* w = nullptr;
  std::vector<Value*> items;
  switch (op) {
    case 0x80: {  // PROTO
      uint8_t proto = 0;
      MP_RETURN_IF_ERROR(ReadLe(&proto));
      if (proto > 5) return Err("protocol " + std::to_string(proto) + " is newer than 5");
      return Status::Ok();
    }
    case 0x95: {  // FRAME: a length prefix only; opcodes inside are read normally
      uint64_t n = 0;
      MP_RETURN_IF_ERROR(ReadLe(&n));
      if (n > bytes_.size() - pos_)
        return Err("frame of " + std::to_string(n) + " bytes runs past the end");
      return Status::Ok();
    }
    case '.':  // STOP
      MP_RETURN_IF_ERROR(Pop(&v));
      if (!stack_.empty() || !marks_.empty())
        return Err("STOP leaves " + std::to_string(stack_.size()) + " values and " +
                   std::to_string(marks_.size()) + " marks on the stack");
      root_ = v;
      stopped_ = true;
      return Status::Ok();
    case '(':
      if (marks_.size() + stack_.size() >= limits_.max_stack) return Limit("too many MARKs");
      marks_.push_back(stack_.size());
      return Status::Ok();
    case '0':
      return Pop(&v);
    case '1':
      return PopMark(&items);
    case '2':
      MP_RETURN_IF_ERROR(Top(&v));
      return Push(v);
    case 'N':
      return PushNew(ValueKind::kNone);
    case 0x88:
    case 0x89:
      MP_RETURN_IF_ERROR(PushNew(ValueKind::kBool, &v));
      v->b = op == 0x88;
      return Status::Ok();
    case 'I': {
      std::string_view line;
      MP_RETURN_IF_ERROR(ReadLine(&line));
      if (line == "01" || line == "00") {
        MP_RETURN_IF_ERROR(PushNew(ValueKind::kBool, &v));
        v->b = line == "01";
        return Status::Ok();
      }
      std::string s(line);
      char* end = nullptr;
      errno = 0;
      const long long i = std::strtoll(s.c_str(), &end, 10);
      if (s.empty() || end != s.c_str() + s.size()) return Err("INT '" + s + "' is not an integer");
      if (errno == ERANGE) return Limit("INT '" + s + "' does not fit in 64 bits");
      return PushInt(i);
    }
    case 'J': {
      int32_t i = 0;
      MP_RETURN_IF_ERROR(ReadLe(&i));
      return PushInt(i);
    }
    case 'K': {
      uint8_t i = 0;
      MP_RETURN_IF_ERROR(ReadLe(&i));
      return PushInt(i);
    }
    case 'M': {
      uint16_t i = 0;
      MP_RETURN_IF_ERROR(ReadLe(&i));
      return PushInt(i);
    }
    case 'L': {
      std::string_view line;
      MP_RETURN_IF_ERROR(ReadLine(&line));
      std::string s(line);
      if (!s.empty() && s.back() == 'L') s.pop_back();
      char* end = nullptr;
      errno = 0;
      const long long i = std::strtoll(s.c_str(), &end, 10);
      if (s.empty() || end != s.c_str() + s.size())
        return Err("LONG '" + s + "' is not an integer");
      if (errno == ERANGE) return Limit("LONG '" + s + "' does not fit in 64 bits");
      return PushInt(i);
    }
    case 0x8a: {
      uint8_t n = 0;
      MP_RETURN_IF_ERROR(ReadLe(&n));
      const uint8_t* p;
      MP_RETURN_IF_ERROR(Read(n, &p));
      return PushLong(p, n);
    }
    case 0x8b: {
      int32_t n = 0;
      MP_RETURN_IF_ERROR(ReadLe(&n));
      if (n < 0) return Err("LONG4 length " + std::to_string(n) + " is negative");
      const uint8_t* p;
      MP_RETURN_IF_ERROR(Read(static_cast<uint64_t>(n), &p));
      return PushLong(p, static_cast<uint64_t>(n));
    }
    case 'F': {
      std::string_view line;
      MP_RETURN_IF_ERROR(ReadLine(&line));
      std::string s(line);
      char* end = nullptr;
      const double d = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size()) return Err("FLOAT '" + s + "' is not a number");
      MP_RETURN_IF_ERROR(PushNew(ValueKind::kFloat, &v));
      v->f = d;
      return Status::Ok();
    }
    case 'G': {
      uint64_t bits = 0;
      const uint8_t* p;
      MP_RETURN_IF_ERROR(Read(8, &p));
      for (int k = 0; k < 8; ++k) bits = (bits << 8) | p[k];  // big-endian
      MP_RETURN_IF_ERROR(PushNew(ValueKind::kFloat, &v));
      std::memcpy(&v->f, &bits, 8);
      return Status::Ok();
    }
    case 'S': {  // STRING: a quoted Python 2 str literal
      std::string_view line;
      MP_RETURN_IF_ERROR(ReadLine(&line));
      if (line.size() < 2 || (line[0] != '\'' && line[0] != '"') || line.back() != line[0])
        return Err("STRING argument is not quoted");
      std::string_view body = line.substr(1, line.size() - 2);
      std::string out;
      for (size_t k = 0; k < body.size(); ++k) {
        if (body[k] != '\\') {
          out += body[k];
          continue;
        }
        if (++k >= body.size()) return Err("STRING ends in a backslash");
        const char c = body[k];
        switch (c) {
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          case 'r':
            out += '\r';
            break;
          case '\\':
            out += '\\';
            break;
          case '\'':
            out += '\'';
            break;
          case '"':
            out += '"';
            break;
          case 'x': {
            if (k + 2 >= body.size()) return Err("bad \\x escape");
            const int h = HexDigit(body[k + 1]), l = HexDigit(body[k + 2]);
            if (h < 0 || l < 0) return Err("bad \\x escape");
            out += static_cast<char>(h * 16 + l);
            k += 2;
            break;
          }
          default:
            return Err(std::string("unsupported escape \\") + c + " in STRING");
        }
      }
      const bool utf8 = IsValidUtf8(out);
      MP_ASSIGN_OR_RETURN(v, New(utf8 ? ValueKind::kStr : ValueKind::kBytes, out.size()));
      v->text = std::move(out);
      return Push(v);
    }
    case 'T':
    case 'X':
    case 'B': {
      uint32_t n = 0;
      MP_RETURN_IF_ERROR(ReadLe(&n));
      return PushString(op == 'X' ? ValueKind::kStr : ValueKind::kBytes, n);
    }
    case 'U':
    case 'C':
    case 0x8c: {
      uint8_t n = 0;
      MP_RETURN_IF_ERROR(ReadLe(&n));
      return PushString(op == 0x8c ? ValueKind::kStr : ValueKind::kBytes, n);
    }
    case 0x8d:
    case 0x8e:
    case 0x96: {
      uint64_t n = 0;
      MP_RETURN_IF_ERROR(ReadLe(&n));
      return PushString(op == 0x8d ? ValueKind::kStr : ValueKind::kBytes, n);
    }
    case 'V': {  // UNICODE: raw-unicode-escape
      std::string_view line;
      MP_RETURN_IF_ERROR(ReadLine(&line));
      std::string out;
      for (size_t k = 0; k < line.size();) {
        const char c = line[k];
        if (c != '\\') {
          AppendUtf8(out, static_cast<uint8_t>(c));  // latin-1
          ++k;
          continue;
        }
        // As CPython's raw-unicode-escape: backslashes are literal, and \u or \U starts an
        // escape only after an odd run of them (an even run keeps every backslash).
        size_t run = 0;
        while (k + run < line.size() && line[k + run] == '\\') ++run;
        const size_t after = k + run;
        const bool escape =
            run % 2 == 1 && after < line.size() && (line[after] == 'u' || line[after] == 'U');
        const size_t literal = escape ? run - 1 : run;
        out.append(literal, '\\');
        k += literal;
        if (!escape) continue;
        const size_t digits = line[k + 1] == 'u' ? 4 : 8;
        if (k + 1 + digits >= line.size()) return Err("bad \\u escape in UNICODE");
        uint32_t cp = 0;
        for (size_t d = 0; d < digits; ++d) {
          const int h = HexDigit(line[k + 2 + d]);
          if (h < 0) return Err("bad \\u escape in UNICODE");
          cp = cp * 16 + static_cast<uint32_t>(h);
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
          return Err("bad code point in UNICODE");
        AppendUtf8(out, cp);
        k += 2 + digits;
      }
      MP_ASSIGN_OR_RETURN(v, New(ValueKind::kStr, out.size()));
      v->text = std::move(out);
      return Push(v);
    }
    case ']':
      return PushNew(ValueKind::kList);
    case ')':
      return PushNew(ValueKind::kTuple);
    case '}':
      return PushNew(ValueKind::kDict);
    case 0x8f:
      return PushNew(ValueKind::kSet);
    case 'a':
      MP_RETURN_IF_ERROR(Pop(&w));
      MP_RETURN_IF_ERROR(Top(&v));
      return AddToContainer(v, std::span<Value* const>(&w, 1), false);
    case 'e':
    case 0x90:
      MP_RETURN_IF_ERROR(PopMark(&items));
      MP_RETURN_IF_ERROR(Top(&v));
      return AddToContainer(v, items, false);
    case 's': {
      Value* key = nullptr;
      MP_RETURN_IF_ERROR(Pop(&w));
      MP_RETURN_IF_ERROR(Pop(&key));
      MP_RETURN_IF_ERROR(Top(&v));
      Value* kv[2] = {key, w};
      return AddToContainer(v, kv, true);
    }
    case 'u':
      MP_RETURN_IF_ERROR(PopMark(&items));
      MP_RETURN_IF_ERROR(Top(&v));
      return AddToContainer(v, items, true);
    case 'l':
    case 't':
    case 0x91:
    case 'd': {
      MP_RETURN_IF_ERROR(PopMark(&items));
      if (items.size() > limits_.max_container_elements)
        return Limit("container has more than max_container_elements elements");
      const ValueKind kind = op == 'l'    ? ValueKind::kList
                             : op == 't'  ? ValueKind::kTuple
                             : op == 0x91 ? ValueKind::kSet
                                          : ValueKind::kDict;
      MP_ASSIGN_OR_RETURN(v, New(kind, items.size() * sizeof(Value*)));
      if (kind == ValueKind::kDict) {
        MP_RETURN_IF_ERROR(Push(v));
        return AddToContainer(v, items, true);
      }
      if (kind == ValueKind::kSet) {
        MP_RETURN_IF_ERROR(Push(v));
        return AddToContainer(v, items, false);
      }
      v->items.assign(items.begin(), items.end());
      return Push(v);
    }
    case 0x85:
    case 0x86:
    case 0x87: {
      const size_t n = op - 0x84u;
      if (stack_.size() < MarkBase() + n) return Err("stack underflow");
      MP_ASSIGN_OR_RETURN(v, New(ValueKind::kTuple, n * sizeof(Value*)));
      v->items.assign(stack_.end() - static_cast<ptrdiff_t>(n), stack_.end());
      stack_.resize(stack_.size() - n);
      return Push(v);
    }
    case 'p': {
      std::string_view line;
      MP_RETURN_IF_ERROR(ReadLine(&line));
      std::string s(line);
      char* end = nullptr;
      const unsigned long long i = std::strtoull(s.c_str(), &end, 10);
      if (s.empty() || s[0] == '-' || end != s.c_str() + s.size()) return Err("bad PUT index");
      return Memo(i);
    }
    case 'q': {
      uint8_t i = 0;
      MP_RETURN_IF_ERROR(ReadLe(&i));
      return Memo(i);
    }
    case 'r': {
      uint32_t i = 0;
      MP_RETURN_IF_ERROR(ReadLe(&i));
      return Memo(i);
    }
    case 0x94:
      return Memo(memo_.size());
    case 'g': {
      std::string_view line;
      MP_RETURN_IF_ERROR(ReadLine(&line));
      std::string s(line);
      char* end = nullptr;
      const unsigned long long i = std::strtoull(s.c_str(), &end, 10);
      if (s.empty() || s[0] == '-' || end != s.c_str() + s.size()) return Err("bad GET index");
      return MemoGet(i);
    }
    case 'h': {
      uint8_t i = 0;
      MP_RETURN_IF_ERROR(ReadLe(&i));
      return MemoGet(i);
    }
    case 'j': {
      uint32_t i = 0;
      MP_RETURN_IF_ERROR(ReadLe(&i));
      return MemoGet(i);
    }
    case 'c': {
      std::string_view module, name;
      MP_RETURN_IF_ERROR(ReadLine(&module));
      MP_RETURN_IF_ERROR(ReadLine(&name));
      return Global(std::string(module), std::string(name), "GLOBAL");
    }
    case 0x93: {
      // The names may come from anywhere (memo, computed): only the final name matters.
      Value* module = nullptr;
      MP_RETURN_IF_ERROR(Pop(&w));
      MP_RETURN_IF_ERROR(Pop(&module));
      if (module->kind != ValueKind::kStr || w->kind != ValueKind::kStr) {
        if (scan_ != nullptr) {
          scan_->unsafe.push_back("byte " + std::to_string(op_offset_) +
                                  ": STACK_GLOBAL with names that are not strings");
          return PushNew(ValueKind::kOpaque);
        }
        return Unsafe("pickle byte " + std::to_string(op_offset_) +
                      " (STACK_GLOBAL): module and name are not strings");
      }
      return Global(module->text, w->text, "STACK_GLOBAL");
    }
    case 'R': {
      Value* args = nullptr;
      MP_RETURN_IF_ERROR(Pop(&args));
      MP_RETURN_IF_ERROR(Pop(&v));
      return Call(v, args, "REDUCE");
    }
    case 0x81:
    case 0x92: {  // NEWOBJ, NEWOBJ_EX: cls.__new__(cls, *args[, **kwargs])
      Value* args = nullptr;
      if (op == 0x92) MP_RETURN_IF_ERROR(Pop(&w));  // kwargs
      MP_RETURN_IF_ERROR(Pop(&args));
      MP_RETURN_IF_ERROR(Pop(&v));
      const std::string name =
          v->kind == ValueKind::kGlobal || v->kind == ValueKind::kOpaque ? v->text : "<non-global>";
      const char* opname = op == 0x81 ? "NEWOBJ" : "NEWOBJ_EX";
      // TorchScript objects are created empty (cls.__new__ runs no TorchScript code).
      const bool script_object =
          mode_ == PickleMode::kTorchScript && v->kind == ValueKind::kGlobal &&
          v->text.starts_with("__torch__.") && args->kind == ValueKind::kTuple &&
          args->items.empty() &&
          (w == nullptr || (w->kind == ValueKind::kDict && w->entries.empty()));
      if (scan_ != nullptr) scan_->calls.push_back({name, opname, op_offset_, script_object});
      if (script_object) {
        MP_RETURN_IF_ERROR(PushNew(ValueKind::kObject, &v));
        v->text = name;
        return Status::Ok();
      }
      MP_RETURN_IF_ERROR(
          Refuse(name, opname,
                 std::string(opname) + " instantiates '" + name + "', which is not allow-listed"));
      return PushNamedOpaque(name);
    }
    case 'i': {  // INST module\nname\n: import and call with the marked args
      std::string_view module, name;
      MP_RETURN_IF_ERROR(ReadLine(&module));
      MP_RETURN_IF_ERROR(ReadLine(&name));
      MP_RETURN_IF_ERROR(PopMark(&items));
      const std::string full = std::string(module) + "." + std::string(name);
      if (scan_ != nullptr) {
        scan_->imports.push_back({full, "INST", op_offset_, false});
        scan_->calls.push_back({full, "INST", op_offset_, false});
      }
      MP_RETURN_IF_ERROR(Refuse(
          full, "INST", "pickle instantiates '" + full + "' (INST), which is not allow-listed"));
      return PushNamedOpaque(full);
    }
    case 'o': {  // OBJ: MARK cls args...
      MP_RETURN_IF_ERROR(PopMark(&items));
      if (items.empty()) return Err("OBJ without a class");
      const Value* cls = items[0];
      const std::string name = cls->kind == ValueKind::kGlobal || cls->kind == ValueKind::kOpaque
                                   ? cls->text
                                   : "<non-global>";
      if (scan_ != nullptr) scan_->calls.push_back({name, "OBJ", op_offset_, false});
      MP_RETURN_IF_ERROR(Refuse(
          name, "OBJ", "pickle instantiates '" + name + "' (OBJ), which is not allow-listed"));
      return PushNamedOpaque(name);
    }
    case 'b': {  // BUILD: obj.__setstate__(state) or obj.__dict__.update(state)
      Value* state = nullptr;
      MP_RETURN_IF_ERROR(Pop(&state));
      MP_RETURN_IF_ERROR(Top(&v));
      if (scan_ != nullptr && v->kind == ValueKind::kOpaque) {
        scan_->calls.push_back({v->text, "BUILD", op_offset_, false});
        return Status::Ok();
      }
      if (v->kind == ValueKind::kObject && v->attributes == nullptr) {
        if (scan_ != nullptr) scan_->calls.push_back({v->text, "BUILD", op_offset_, true});
        v->attributes = state;
        return Status::Ok();
      }
      // torch's state_dict is an OrderedDict with a `_metadata` attribute: plain data only.
      if (v->kind == ValueKind::kDict && v->ordered_dict && v->attributes == nullptr &&
          state->kind == ValueKind::kDict && IsPlainData(state)) {
        if (scan_ != nullptr)
          scan_->calls.push_back({"collections.OrderedDict", "BUILD", op_offset_, true});
        v->attributes = state;
        return Status::Ok();
      }
      if ((v->kind == ValueKind::kTensor || v->kind == ValueKind::kParameter) &&
          IsEmptyHooks(state))
        return Status::Ok();
      if (scan_ != nullptr) scan_->calls.push_back({"<BUILD target>", "BUILD", op_offset_, false});
      return Refuse("", "BUILD",
                    "pickle byte " + std::to_string(op_offset_) +
                        " (BUILD): sets state on an object that is not an OrderedDict, or with "
                        "state that is not plain data");
    }
    case 'P': {
      std::string_view line;
      MP_RETURN_IF_ERROR(ReadLine(&line));
      if (scan_ != nullptr) {
        scan_->unsafe.push_back("byte " + std::to_string(op_offset_) +
                                ": PERSID with a text persistent id");
        return PushNew(ValueKind::kOpaque);
      }
      return Unsupported("pickle byte " + std::to_string(op_offset_) +
                         " (PERSID): text persistent ids are not torch storages");
    }
    case 'Q': {
      MP_RETURN_IF_ERROR(Pop(&w));
      Result<Value*> r = PersistentLoad(w);
      if (r.has_value()) return Push(*r);
      if (scan_ == nullptr)
        return Status(r.error().code(), "pickle byte " + std::to_string(op_offset_) +
                                            " (BINPERSID): " + r.error().message());
      if (w->kind != ValueKind::kOpaque)
        scan_->unsafe.push_back("byte " + std::to_string(op_offset_) + ": " + r.error().message());
      return PushNew(ValueKind::kOpaque);
    }
    case 0x82:
    case 0x83:
    case 0x84: {
      const uint64_t n = op == 0x82 ? 1 : op == 0x83 ? 2 : 4;
      const uint8_t* p;
      MP_RETURN_IF_ERROR(Read(n, &p));
      if (scan_ != nullptr) {
        scan_->unsafe.push_back("byte " + std::to_string(op_offset_) +
                                ": extension registry code (" + std::string(PickleOpcodeName(op)) +
                                ") imports an unknown global");
        scan_->imports.push_back(
            {"<extension code>", std::string(PickleOpcodeName(op)), op_offset_, false});
        return PushNew(ValueKind::kOpaque);
      }
      return Unsafe("pickle byte " + std::to_string(op_offset_) + " (" +
                    std::string(PickleOpcodeName(op)) +
                    "): extension registry codes import globals that cannot be checked");
    }
    case 0x97:
    case 0x98:
      return Unsupported("pickle byte " + std::to_string(op_offset_) + " (" +
                         std::string(PickleOpcodeName(op)) +
                         "): out-of-band buffers are not part of a checkpoint");
    default:
      return Err("unknown opcode 0x" + [op] {
        char b[3];
        std::snprintf(b, sizeof b, "%02x", op);
        return std::string(b);
      }());
  }
}

}  // namespace

const Value* Value::Get(std::string_view key) const {
  if (kind != ValueKind::kDict) return nullptr;
  for (const auto& [k, v] : entries)
    if (k->kind == ValueKind::kStr && k->text == key) return v;
  return nullptr;
}

std::string_view PickleOpcodeName(uint8_t op) {
  for (const auto& o : kOps)
    if (o.code == op) return o.name;
  return "unknown";
}

Result<PickleResult> Unpickle(std::span<const uint8_t> bytes, const PickleLimits& limits,
                              PickleMode mode) {
  Vm vm(bytes, limits, mode, nullptr);
  MP_RETURN_IF_ERROR(vm.Run());
  return vm.TakeResult();
}

Result<ScanReport> ScanPickle(std::span<const uint8_t> bytes, const PickleLimits& limits,
                              PickleMode mode) {
  if (bytes.empty()) return Corrupt("pickle is empty");
  ScanReport report;
  Vm vm(bytes, limits, mode, &report);
  report.stream_status = vm.Run();
  report.end_offset = vm.pos();
  return report;
}

}  // namespace mp::torch
