// Writer of PyTorch zip checkpoints (see torch.h for the layout).
//
// The pickle is what CPython's pickler (protocol 2, as torch.save uses) emits for an
// OrderedDict of tensors, opcode for opcode: every string, tuple, global and REDUCE result is
// memoized (BINPUT) as it would be, repeated objects (the rebuild function, 'storage', 'cpu',
// storage classes, a shared storage's key) are fetched back with BINGET, items go in SETITEMS
// batches of 1000. torch 1.13 writes byte-identical data.pkl for the same state dict, and only
// opcodes torch 1.13's weights_only unpickler accepts appear (no SHORT_BINUNICODE, no LONG4).
//
// Record order follows torch 2.x (caffe2/serialize/inline_container.cc + torch/serialization.py):
// data.pkl, .format_version, .storage_alignment, byteorder, data/0.., version. torch 2.x also
// writes .data/serialization_id, a random number; it is left out so equal input gives equal
// bytes (torch.load does not need it). Every record starts 64-byte aligned, as torch does.
// Extra metadata goes last, in modelport_metadata.json (torch ignores unknown records).
// Tied tensors (metadata[kAliasesKey]) are dict entries after all stored tensors, each a
// _rebuild_tensor call on its target's storage key, as torch.save writes a detach()ed twin.
// With WriteOptions::shard_size, Hugging Face shards plus an index (see WriteSharded).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "modelport/core/dtype.h"
#include "modelport/core/file.h"
#include "modelport/core/shape.h"
#include "modelport/formats/sharded.h"
#include "modelport/formats/torch/torch.h"
#include "modelport/formats/zip/zip.h"

namespace mp::torch {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kAlignment = 64;      // torch's kFieldAlignment
constexpr size_t kSetItemsBatch = 1000;  // CPython pickle's _BATCHSIZE
constexpr std::string_view kMetadataRecord = "modelport_metadata.json";

// How a dtype is pickled. torch 1.13 has typed storages (rebuilt by _rebuild_tensor_v2); newer
// dtypes are written by torch 2.x as an UntypedStorage plus the dtype (_rebuild_tensor_v3,
// torch.storage._new_dtypes()).
struct TorchDType {
  std::string_view storage_class;  // GLOBAL "torch <class>" for _v2; empty for _v3
  std::string_view dtype_name;     // GLOBAL "torch <name>" for _v3
};

std::optional<TorchDType> TorchDTypeOf(DType d) {
  switch (d) {
    case DType::kBool:
      return TorchDType{"BoolStorage", {}};
    case DType::kU8:
      return TorchDType{"ByteStorage", {}};
    case DType::kI8:
      return TorchDType{"CharStorage", {}};
    case DType::kI16:
      return TorchDType{"ShortStorage", {}};
    case DType::kI32:
      return TorchDType{"IntStorage", {}};
    case DType::kI64:
      return TorchDType{"LongStorage", {}};
    case DType::kF16:
      return TorchDType{"HalfStorage", {}};
    case DType::kBF16:
      return TorchDType{"BFloat16Storage", {}};
    case DType::kF32:
      return TorchDType{"FloatStorage", {}};
    case DType::kF64:
      return TorchDType{"DoubleStorage", {}};
    case DType::kC64:
      return TorchDType{"ComplexFloatStorage", {}};
    case DType::kU16:
      return TorchDType{{}, "uint16"};
    case DType::kU32:
      return TorchDType{{}, "uint32"};
    case DType::kU64:
      return TorchDType{{}, "uint64"};
    case DType::kF8E4M3:
      return TorchDType{{}, "float8_e4m3fn"};
    case DType::kF8E5M2:
      return TorchDType{{}, "float8_e5m2"};
    default:
      return std::nullopt;
  }
}

// Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF): pickle strings are
// UTF-8 and torch would fail to decode anything else.
bool IsUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t c = static_cast<uint8_t>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i - 1 < n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const uint8_t cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

// A name for an error message: zip::QuoteName, with every byte past ASCII escaped too when the
// name is not UTF-8 (so the message stays valid text).
std::string Quote(std::string_view s) {
  if (IsUtf8(s)) return zip::QuoteName(s);
  std::string ascii;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80) {
      ascii += c;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      ascii += buf;
    }
  }
  return zip::QuoteName(ascii);
}

// Emits protocol-2 opcodes (CPython Lib/pickletools.py) and numbers the memo as CPython does.
class Pickler {
 public:
  Pickler() { out_ = "\x80\x02"; }  // PROTO 2

  /// Memoizes the object on top of the stack; returns its memo index.
  uint32_t Put() {
    const uint32_t id = next_memo_++;
    if (id < 256) {
      out_ += 'q';
      out_ += static_cast<char>(id);
    } else {
      out_ += 'r';
      U32(id);
    }
    return id;
  }
  void Get(uint32_t id) {
    if (id < 256) {
      out_ += 'h';
      out_ += static_cast<char>(id);
    } else {
      out_ += 'j';
      U32(id);
    }
  }
  /// GLOBAL module name, memoized: the second use of a global is a BINGET.
  void Global(std::string_view module, std::string_view name) {
    const std::string key = std::string(module) + '\n' + std::string(name);
    if (auto it = globals_.find(key); it != globals_.end()) return Get(it->second);
    out_ += 'c';
    out_ += key;
    out_ += '\n';
    globals_.emplace(key, Put());
  }
  /// BINUNICODE s, memoized; returns the memo index. Callers check the length (< 4 GiB).
  uint32_t Str(std::string_view s) {
    out_ += 'X';
    U32(static_cast<uint32_t>(s.size()));
    out_ += s;
    return Put();
  }
  /// A string the caller fetches by BINGET when it comes again ('storage', 'cpu', keys).
  void SharedStr(std::string_view s) {
    if (auto it = strings_.find(std::string(s)); it != strings_.end()) return Get(it->second);
    strings_.emplace(std::string(s), Str(s));
  }
  /// A non-negative int the way save_long writes it in protocol 2.
  void Int(uint64_t v) {
    if (v <= 0xFF) {
      out_ += 'K';
      out_ += static_cast<char>(v);
    } else if (v <= 0xFFFF) {
      out_ += 'M';
      out_ += static_cast<char>(v & 0xFF);
      out_ += static_cast<char>(v >> 8);
    } else if (v <= 0x7FFFFFFF) {
      out_ += 'J';
      U32(static_cast<uint32_t>(v));
    } else {
      // LONG1: two's complement little-endian, with a zero byte when the top bit is set.
      std::string bytes;
      for (uint64_t x = v; x != 0; x >>= 8) bytes += static_cast<char>(x & 0xFF);
      if (static_cast<uint8_t>(bytes.back()) & 0x80) bytes += '\0';
      out_ += '\x8a';
      out_ += static_cast<char>(bytes.size());
      out_ += bytes;
    }
  }
  /// A tuple of ints as save_tuple writes it: EMPTY_TUPLE (not memoized), TUPLE1..3 or
  /// MARK..TUPLE (memoized).
  void IntTuple(const std::vector<uint64_t>& v) {
    if (v.empty()) {
      out_ += ')';
      return;
    }
    if (v.size() > 3) out_ += '(';
    for (uint64_t x : v) Int(x);
    out_ += v.size() == 1 ? '\x85' : v.size() == 2 ? '\x86' : v.size() == 3 ? '\x87' : 't';
    Put();
  }
  void Op(char op) { out_ += op; }
  std::string Finish() && {
    out_ += '.';
    return std::move(out_);
  }

 private:
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xFF);
  }

  std::string out_;
  uint32_t next_memo_ = 0;
  std::unordered_map<std::string, uint32_t> globals_;
  std::unordered_map<std::string, uint32_t> strings_;
};

// One entry of the state dict: a tensor with a storage of its own, or an alias of one.
struct Entry {
  std::string name;
  size_t tensor;  // index into source.tensors() of the tensor whose storage it uses
};

struct Plan {
  std::vector<Entry> aliases;  // in the order the alias map lists them
  Json extra_metadata;         // metadata without kAliasesKey (maybe empty)
};

// One zip checkpoint: some tensors of the source (all of them, or one shard's).
struct Archive {
  std::vector<size_t> tensors;                  // source indices; tensors[k] is data/<k>
  std::vector<Entry> entries;                   // dict order: tensors, then their aliases
  std::unordered_map<size_t, std::string> key;  // source index -> storage key
};

// Aliases go after every stored tensor, in the order the map lists them: each comes after its
// target, as readers expect of a tie.
Archive MakeArchive(const ModelSource& source, const Plan& plan, std::vector<size_t> tensors) {
  Archive a;
  a.tensors = std::move(tensors);
  for (size_t k = 0; k < a.tensors.size(); ++k) {
    a.entries.push_back({source.tensors()[a.tensors[k]].name, a.tensors[k]});
    a.key.emplace(a.tensors[k], std::to_string(k));
  }
  for (const Entry& alias : plan.aliases) {
    if (a.key.count(alias.tensor)) a.entries.push_back(alias);
  }
  return a;
}

Result<std::vector<uint64_t>> ContiguousStrides(const std::string& name, const Shape& shape) {
  std::vector<uint64_t> stride(shape.rank());
  uint64_t s = 1;
  for (size_t i = shape.rank(); i-- > 0;) {
    stride[i] = s;
    auto next = CheckedMul(s, std::max<uint64_t>(shape[i], 1));
    if (!next.ok() || *next > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return LimitExceeded("tensor " + Quote(name) + ": strides of shape " + shape.ToString() +
                           " overflow torch's int64");
    }
    s = *next;
  }
  return stride;
}

Status CheckTensor(const TensorInfo& t) {
  if (IsQuantized(t.dtype)) {
    return Unsupported("tensor " + Quote(t.name) + ": PyTorch has no dtype for ggml " +
                       std::string(DTypeName(t.dtype)) +
                       "; dequantize it (convert --dtype f32, f16 or bf16)");
  }
  if (!TorchDTypeOf(t.dtype)) {
    return Unsupported("tensor " + Quote(t.name) + ": PyTorch checkpoints cannot store dtype " +
                       std::string(DTypeName(t.dtype)));
  }
  if (!IsUtf8(t.name)) return InvalidArgument("tensor name " + Quote(t.name) + " is not UTF-8");
  if (t.name.size() > 0xFFFFFFFFu) {
    return InvalidArgument("tensor name of " + std::to_string(t.name.size()) +
                           " bytes is too long");
  }
  for (uint64_t d : t.shape.dims()) {
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return LimitExceeded("tensor " + Quote(t.name) + ": dimension " + std::to_string(d) +
                           " is over torch's int64 limit");
    }
  }
  return Status::Ok();
}

Result<Plan> MakePlan(const ModelSource& source) {
  Plan plan;
  const auto& infos = source.tensors();
  std::unordered_map<std::string, size_t> by_name;
  for (size_t i = 0; i < infos.size(); ++i) {
    MP_RETURN_IF_ERROR(CheckTensor(infos[i]));
    if (!by_name.emplace(infos[i].name, i).second) {
      return InvalidArgument("tensor " + Quote(infos[i].name) + " appears twice");
    }
  }
  plan.extra_metadata = Json::object();
  const Json& metadata = source.metadata();
  if (metadata.is_object()) {
    for (const auto& [key, value] : metadata.items()) {
      if (key != kAliasesKey) plan.extra_metadata[key] = value;
    }
  }
  // The alias map comes as an object (torch readers) or as its JSON text (safetensors keeps
  // metadata values as strings).
  MP_ASSIGN_OR_RETURN(Json aliases, AliasesOf(source));
  for (const auto& [alias, target] : aliases.items()) {
    const std::string target_name = target.get<std::string>();
    auto it = by_name.find(target_name);
    if (it == by_name.end() || it->second >= infos.size()) {
      return InvalidArgument("alias " + Quote(alias) + " points to " + Quote(target_name) +
                             ", which is not a tensor of the model");
    }
    if (!IsUtf8(alias)) return InvalidArgument("alias name " + Quote(alias) + " is not UTF-8");
    if (!by_name.emplace(alias, infos.size()).second) {
      return InvalidArgument("alias " + Quote(alias) + " has the name of another tensor");
    }
    plan.aliases.push_back({alias, it->second});
  }
  return plan;
}

Result<std::string> BuildPickle(const ModelSource& source, const Archive& plan) {
  const auto& infos = source.tensors();
  Pickler p;
  p.Global("collections", "OrderedDict");
  p.Op(')');  // EMPTY_TUPLE
  p.Op('R');  // REDUCE
  p.Put();
  for (size_t batch = 0; batch < plan.entries.size(); batch += kSetItemsBatch) {
    const size_t n = std::min(kSetItemsBatch, plan.entries.size() - batch);
    if (n > 1) p.Op('(');  // MARK
    for (size_t e = batch; e < batch + n; ++e) {
      const Entry& entry = plan.entries[e];
      const TensorInfo& t = infos[entry.tensor];
      const TorchDType td = *TorchDTypeOf(t.dtype);
      const bool v3 = td.storage_class.empty();
      MP_ASSIGN_OR_RETURN(uint64_t numel, t.shape.NumElements());
      MP_ASSIGN_OR_RETURN(std::vector<uint64_t> stride, ContiguousStrides(t.name, t.shape));

      p.Str(entry.name);
      p.Global("torch._utils", v3 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2");
      p.Op('(');  // MARK: the rebuild arguments
      // persistent id ('storage', class, key, 'cpu', numel): elements of the typed storage, or
      // bytes of an UntypedStorage.
      p.Op('(');
      p.SharedStr("storage");
      if (v3) {
        p.Global("torch.storage", "UntypedStorage");
      } else {
        p.Global("torch", td.storage_class);
      }
      p.SharedStr(plan.key.at(entry.tensor));
      p.SharedStr("cpu");
      p.Int(v3 ? t.byte_size : numel);
      p.Op('t');  // TUPLE
      p.Put();
      p.Op('Q');  // BINPERSID
      p.Int(0);   // storage_offset
      p.IntTuple(t.shape.dims());
      p.IntTuple(stride);
      p.Op('\x89');  // NEWFALSE: requires_grad
      p.Global("collections", "OrderedDict");
      p.Op(')');
      p.Op('R');  // backward hooks: OrderedDict()
      p.Put();
      if (v3) p.Global("torch", td.dtype_name);
      p.Op('t');
      p.Put();
      p.Op('R');
      p.Put();
    }
    p.Op(n > 1 ? 'u' : 's');  // SETITEMS or SETITEM
  }
  return std::move(p).Finish();
}

// torch's archive name: the file name without its last extension (inline_container.cc
// basename()), "archive" when that is empty. Bytes outside [A-Za-z0-9._-] become '_' so the
// name is a safe zip folder on every reader.
std::string TopFolder(const std::string& path) {
  std::string base = fs::path(path).filename().string();
  if (const size_t dot = base.rfind('.'); dot != std::string::npos) base.resize(dot);
  for (char& c : base) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  if (base.find_first_not_of('.') == std::string::npos) return "archive";
  return base;
}

Status AddRecord(zip::Writer& zw, const std::string& name, std::string_view text) {
  const std::span<const uint8_t> part(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  return zw.AddStored(name, std::span(&part, 1), kAlignment);
}

// Writes `archive` as a zip checkpoint at `dest` (atomically) with top folder `top_name`;
// errors not about the zip file itself are prefixed with `where`.
Status WriteArchive(const ModelSource& source, const Archive& archive, const std::string& dest,
                    const std::string& where, const std::string& top_name,
                    const std::string& metadata_text, bool durable, WriteProgress& progress) {
  const auto& infos = source.tensors();
  auto pickle = BuildPickle(source, archive);
  if (!pickle.ok()) return pickle.status().WithContext(where);
  const std::string top = top_name + "/";
  MP_ASSIGN_OR_RETURN(auto zw, zip::Writer::Create(dest));
  MP_RETURN_IF_ERROR(AddRecord(*zw, top + "data.pkl", *pickle));
  MP_RETURN_IF_ERROR(AddRecord(*zw, top + ".format_version", "1"));
  MP_RETURN_IF_ERROR(AddRecord(*zw, top + ".storage_alignment", "64"));
  MP_RETURN_IF_ERROR(AddRecord(*zw, top + "byteorder", "little"));
  // Tensor by tensor: memory holds one tensor's bytes at a time (none for zero-copy sources).
  for (size_t k = 0; k < archive.tensors.size(); ++k) {
    const size_t i = archive.tensors[k];
    auto tensor = source.Load(i);
    if (!tensor.ok()) return tensor.status().WithContext(where);
    if (tensor->data == nullptr || tensor->data->size() != infos[i].byte_size ||
        tensor->info.dtype != infos[i].dtype) {
      return Internal(where + ": tensor " + Quote(infos[i].name) +
                      " loaded with another dtype or size than its index says");
    }
    const std::span<const uint8_t> part = tensor->bytes();
    MP_RETURN_IF_ERROR(
        zw->AddStored(top + "data/" + std::to_string(k), std::span(&part, 1), kAlignment));
    progress.Tick(part.size());
  }
  MP_RETURN_IF_ERROR(AddRecord(*zw, top + "version", "3\n"));
  if (!metadata_text.empty()) {
    MP_RETURN_IF_ERROR(AddRecord(*zw, top + std::string(kMetadataRecord), metadata_text));
  }
  return zw->Finish(durable);
}

// Hugging Face shards (modeling_utils.py's naming, the same greedy split as the safetensors
// writer): PREFIX-0000K-of-0000N.EXT beside PREFIX.EXT.index.json. A tied alias lives in its
// target's shard and is listed in the index's weight_map like every key of that shard.
// zip::Writer commits on Finish, so shards are written under a ".partial" name and renamed
// into place only once all are complete, just before the index (whose commit syncs the
// folder); an error removes the partial files and leaves the destination as it was.
Status WriteSharded(const ModelSource& source, const Plan& plan, const std::string& path,
                    bool to_folder, const std::string& metadata_text, const WriteOptions& options,
                    WriteProgress& progress) {
  const auto& infos = source.tensors();
  fs::path dir, prefix_path;
  std::string ext = ".bin";
  std::string name = fs::path(path).filename().string();
  if (to_folder) {
    dir = path;
    name = "pytorch_model";
  } else {
    dir = fs::path(path).parent_path();
    if (name.ends_with(".index.json")) name.resize(name.size() - 11);
    if (const size_t dot = name.rfind('.'); dot != std::string::npos && dot > 0) {
      ext = name.substr(dot);
      name.resize(dot);
    }
  }
  MP_RETURN_IF_ERROR(MakeDirs(dir.empty() ? "." : dir.string()));
  const std::vector<std::vector<size_t>> shards = PlanShards(infos, options.shard_size);
  std::error_code ec;
  if (shards.size() == 1) {
    const std::string file = (dir / (name + ext)).string();
    if (options.no_overwrite && fs::exists(file, ec)) return AlreadyExists(file + ": exists");
    const Archive archive = MakeArchive(source, plan, shards[0]);
    return WriteArchive(source, archive, file, file, TopFolder(file), metadata_text,
                        options.durable, progress);
  }
  const std::string index_path = (dir / (name + ext + ".index.json")).string();
  std::vector<std::string> finals;
  for (size_t k = 0; k < shards.size(); ++k) {
    finals.push_back((dir / ShardFileName(name, k + 1, shards.size(), ext)).string());
  }
  if (options.no_overwrite) {
    for (const std::string& f : finals) {
      if (fs::exists(f, ec)) return AlreadyExists(f + ": exists");
    }
    if (fs::exists(index_path, ec)) return AlreadyExists(index_path + ": exists");
  }
  std::vector<std::string> partials;
  const auto remove_partials = [&] {
    for (const std::string& f : partials) fs::remove(f, ec);
  };
  Json weight_map = Json::object();
  std::map<std::string, std::string> sorted_map;
  for (size_t k = 0; k < shards.size(); ++k) {
    const Archive archive = MakeArchive(source, plan, shards[k]);
    const std::string partial = finals[k] + ".partial";
    Status s = WriteArchive(source, archive, partial, finals[k], TopFolder(finals[k]),
                            metadata_text, options.durable, progress);
    if (!s.ok()) {
      remove_partials();
      return s;
    }
    partials.push_back(partial);
    const std::string shard_name = fs::path(finals[k]).filename().string();
    for (const Entry& e : archive.entries) sorted_map[e.name] = shard_name;
  }
  for (const auto& [tensor, file] : sorted_map) weight_map[tensor] = file;
  const Json index = {{"metadata", {{"total_size", progress.bytes_total}}},
                      {"weight_map", weight_map}};
  std::string text;
  try {
    text = index.dump(2, ' ', false, Json::error_handler_t::strict) + "\n";
  } catch (const Json::exception& e) {
    remove_partials();
    return InvalidArgument(index_path + ": a tensor name is not UTF-8: " + e.what());
  }
  auto index_file = AtomicFile::Create(index_path);
  Status s = index_file.ok() ? (*index_file)->Write(text.data(), text.size()) : index_file.status();
  if (!s.ok()) {
    remove_partials();
    return s;
  }
  for (size_t k = 0; k < partials.size(); ++k) {
    fs::rename(partials[k], finals[k], ec);
    if (ec) {
      remove_partials();
      return IoError(finals[k] + ": cannot rename " + partials[k] + " into place: " + ec.message());
    }
  }
  return (*index_file)->Commit(options.durable);
}

}  // namespace

Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options) {
  std::error_code ec;
  const bool to_folder = fs::is_directory(path, ec) || path.ends_with("/");
  auto plan = MakePlan(source);
  if (!plan.ok()) return plan.status().WithContext(path);
  std::string metadata_text;
  if (!plan->extra_metadata.empty()) {
    try {
      metadata_text = plan->extra_metadata.dump(2, ' ', false, Json::error_handler_t::strict);
    } catch (const Json::exception& e) {
      return InvalidArgument(path + ": metadata is not valid UTF-8: " + std::string(e.what()));
    }
    metadata_text += '\n';
  }
  WriteProgress progress{&options.progress};
  progress.tensors_total = source.tensors().size();
  auto total = source.TotalBytes();
  if (!total.ok()) return total.status().WithContext(path);
  progress.bytes_total = *total;

  if (options.shard_size > 0) {
    return WriteSharded(source, *plan, path, to_folder, metadata_text, options, progress);
  }
  std::string file = path;
  if (to_folder) {
    MP_RETURN_IF_ERROR(MakeDirs(path));
    file = (fs::path(path) / "pytorch_model.bin").string();
  }
  if (options.no_overwrite && fs::exists(file, ec)) return AlreadyExists(file + ": exists");
  std::vector<size_t> all(source.tensors().size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  const Archive archive = MakeArchive(source, *plan, std::move(all));
  return WriteArchive(source, archive, file, file, TopFolder(file), metadata_text, options.durable,
                      progress);
}

}  // namespace mp::torch
