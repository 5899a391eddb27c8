// PyTorch checkpoint reader (layouts in torch.h). Nothing in a checkpoint is executed: pickles go
// through the restricted VM (pickle.h) and tensors are views of storages described by it.
#include "modelport/formats/torch/torch.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "modelport/core/json.h"
#include "modelport/formats/sharded.h"
#include "modelport/formats/torch/pickle.h"
#include "modelport/formats/zip/zip.h"

namespace mp::torch {
namespace {

namespace fs = std::filesystem;

std::string Quote(std::string_view s) { return zip::QuoteName(s); }
std::string Num(uint64_t n) { return std::to_string(n); }

// The legacy format's first pickle: PROTO 2, LONG1 of 10 bytes holding the magic number
// 0x1950a86a20f9469cfc6c (little-endian), STOP.
constexpr uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                    0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
constexpr int64_t kLegacyProtocolVersion = 1001;

// Names torch gives the state dict inside training checkpoints, most specific first.
constexpr std::string_view kStateDictKeys[] = {"state_dict", "model_state_dict", "model",  "module",
                                               "net",        "network",          "weights"};

PickleLimits LimitsFor(const ReadOptions& options) {
  PickleLimits limits;
  limits.max_container_elements =
      std::min<uint64_t>(limits.max_container_elements, options.max_tensors * 16 + 1024);
  return limits;
}

// Unpickles, and on an unsafe pickle gives every reason ScanPickle finds, not just the first.
Result<PickleResult> SafeUnpickle(std::span<const uint8_t> bytes, const PickleLimits& limits,
                                  PickleMode mode) {
  auto result = Unpickle(bytes, limits, mode);
  if (result || result.error().code() != StatusCode::kUnsafe) return result;
  auto scan = ScanPickle(bytes, limits, mode);
  if (!scan || scan->unsafe.empty()) return result;
  std::string reasons;
  for (const auto& r : scan->unsafe) reasons += (reasons.empty() ? "" : "; ") + r;
  return Unsafe("unsafe pickle, refused without running it: " + reasons);
}

// ----------------------------------------------------------------------------------------------
// From the object graph to named tensors and metadata

struct NamedTensor {
  std::string name;
  std::shared_ptr<const TensorRef> ref;
  int table = 0;  // which storage namespace: 0 data/, 1 constants/ (TorchScript)
};

const TensorRef* AsTensor(const Value* v) {
  if (v->kind == ValueKind::kTensor || v->kind == ValueKind::kParameter) return v->tensor.get();
  return nullptr;
}

// The children of a container with their name parts: dict entries by key, an object's
// attributes, list/tuple items by index.
bool KeyText(const Value* k, std::string* out) {
  switch (k->kind) {
    case ValueKind::kStr:
      *out = k->text;
      return true;
    case ValueKind::kInt:
      *out = std::to_string(k->i);
      return true;
    default:
      return false;
  }
}

template <typename F>
void ForEachChild(const Value* v, F&& f) {
  if (v->kind == ValueKind::kObject) {
    if (v->attributes != nullptr) ForEachChild(v->attributes, f);
    return;
  }
  if (v->kind == ValueKind::kDict) {
    std::string key;
    for (const auto& [k, x] : v->entries)
      if (KeyText(k, &key)) f(key, x);
    return;
  }
  if (v->kind == ValueKind::kList || v->kind == ValueKind::kTuple) {
    for (size_t i = 0; i < v->items.size(); ++i) f(std::to_string(i), v->items[i]);
  }
}

bool IsContainer(const Value* v) {
  return v->kind == ValueKind::kDict || v->kind == ValueKind::kObject ||
         v->kind == ValueKind::kList || v->kind == ValueKind::kTuple;
}

uint64_t CountTensors(const Value* v, int depth = 0) {
  if (AsTensor(v) != nullptr) return 1;
  if (depth > 200) return 0;
  uint64_t n = 0;
  ForEachChild(v, [&](const std::string&, const Value* x) { n += CountTensors(x, depth + 1); });
  return n;
}

// A state dict: a dict whose values are all tensors, or dicts that are themselves state dicts.
bool IsStateDict(const Value* v, int depth = 0) {
  if (v->kind != ValueKind::kDict || v->entries.empty() || depth > 200) return false;
  for (const auto& [k, x] : v->entries) {
    if (k->kind != ValueKind::kStr) return false;
    if (AsTensor(x) == nullptr && !IsStateDict(x, depth + 1)) return false;
  }
  return true;
}

// State dicts below `v` (not below another state dict), with their dotted paths.
void FindStateDicts(const Value* v, const std::string& path,
                    std::vector<std::pair<std::string, const Value*>>& out, int depth = 0) {
  if (depth > 200) return;
  if (IsStateDict(v)) {
    out.emplace_back(path, v);
    return;
  }
  if (v->kind != ValueKind::kDict) return;
  ForEachChild(v, [&](const std::string& key, const Value* x) {
    FindStateDicts(x, path.empty() ? key : path + "." + key, out, depth + 1);
  });
}

// Follows a dotted key path; a key may itself contain dots ("model.ema"), so every split of the
// path that names existing keys is tried.
const Value* FindPath(const Value* v, std::string_view path, int depth = 0) {
  if (path.empty()) return v;
  if (depth > 200) return nullptr;
  const Value* found = nullptr;
  ForEachChild(v, [&](const std::string& key, const Value* x) {
    if (found != nullptr) return;
    if (path == key) {
      found = x;
    } else if (path.size() > key.size() && path.starts_with(key) && path[key.size()] == '.') {
      found = FindPath(x, path.substr(key.size() + 1), depth + 1);
    }
  });
  return found;
}

Json ToJson(const Value* v, int depth = 0) {
  if (depth > 200) return nullptr;
  switch (v->kind) {
    case ValueKind::kNone:
      return nullptr;
    case ValueKind::kBool:
      return v->b;
    case ValueKind::kInt:
      return v->i;
    case ValueKind::kFloat:
      return v->f;
    case ValueKind::kStr:
      return v->text;
    case ValueKind::kBytes:
      return Json::binary(std::vector<uint8_t>(v->text.begin(), v->text.end()));
    case ValueKind::kTuple:
    case ValueKind::kList:
    case ValueKind::kSet: {
      Json a = Json::array();
      for (const Value* x : v->items) a.push_back(ToJson(x, depth + 1));
      return a;
    }
    case ValueKind::kDict: {
      Json o = Json::object();
      for (const auto& [k, x] : v->entries) {
        std::string key;
        if (!KeyText(k, &key)) key = ToJson(k, depth + 1).dump();
        o[key] = ToJson(x, depth + 1);
      }
      return o;
    }
    case ValueKind::kGlobal:
      return v->text;
    default:
      return nullptr;
  }
}

struct Selection {
  std::vector<NamedTensor> tensors;
  Json metadata = Json::object();
  std::vector<std::string> notes;
};

// Every tensor below `v`, named by dotted path from `prefix`.
Status CollectTensors(const Value* v, const std::string& prefix, int table,
                      std::vector<NamedTensor>& out, int depth = 0) {
  if (AsTensor(v) != nullptr) {
    if (prefix.empty()) return Unsupported("the checkpoint is a single tensor, not a state dict");
    out.push_back({prefix, v->tensor, table});
    return Status::Ok();
  }
  if (depth > 200) return LimitExceeded("tensors are nested more than 200 containers deep");
  Status status;
  ForEachChild(v, [&](const std::string& key, const Value* x) {
    if (!status.ok() || (!IsContainer(x) && AsTensor(x) == nullptr)) return;
    status = CollectTensors(x, prefix.empty() ? key : prefix + "." + key, table, out, depth + 1);
  });
  return status;
}

// Picks the object whose tensors the model holds (see torch.h) and turns the plain values
// around it into metadata.
Result<Selection> Select(const Value* root, const ReadOptions& options, bool torchscript) {
  Selection sel;
  const Value* chosen = nullptr;
  std::string chosen_path;
  if (!options.select_key.empty()) {
    chosen = FindPath(root, options.select_key);
    if (chosen == nullptr) {
      std::string keys;
      ForEachChild(root, [&](const std::string& key, const Value*) {
        keys += (keys.empty() ? "" : ", ") + Quote(key);
      });
      return NotFound("the checkpoint has no key " + Quote(options.select_key) +
                      (keys.empty() ? std::string() : " (top-level keys: " + keys + ")"));
    }
    if (CountTensors(chosen) == 0)
      return NotFound("key " + Quote(options.select_key) + " holds no tensors");
    chosen_path = options.select_key;
  } else if (torchscript || IsStateDict(root)) {
    chosen = root;
  } else {
    std::vector<std::pair<std::string, const Value*>> found;
    FindStateDicts(root, "", found);
    if (found.empty()) {
      chosen = root;  // tensors mixed with other values: take them all
    } else {
      size_t pick = 0;
      for (auto want : kStateDictKeys) {
        auto it = std::find_if(found.begin(), found.end(),
                               [&](const auto& f) { return f.first == want; });
        if (it != found.end()) {
          pick = static_cast<size_t>(it - found.begin());
          break;
        }
      }
      chosen = found[pick].second;
      chosen_path = found[pick].first;
      if (chosen != root)
        sel.notes.push_back("tensors read from the state dict at key " + Quote(chosen_path) +
                            " (--key selects another)");
    }
  }
  MP_RETURN_IF_ERROR(CollectTensors(chosen, "", 0, sel.tensors));
  if (torchscript) return sel;  // module attributes (training flags...) are not model metadata

  // Metadata: the plain values of the root dict outside what was chosen; values elsewhere that
  // hold tensors are named in a note.
  if (root->kind != ValueKind::kDict || chosen == root) return sel;
  for (const auto& [k, x] : root->entries) {
    std::string key;
    if (!KeyText(k, &key) || x == chosen || chosen_path.starts_with(key + ".")) continue;
    if (const uint64_t n = CountTensors(x); n > 0) {
      sel.notes.push_back("key " + Quote(key) + " holds " + Num(n) + " tensors, not read (--key " +
                          key + " reads them)");
    } else {
      sel.metadata[key] = ToJson(x);
    }
  }
  return sel;
}

// ----------------------------------------------------------------------------------------------
// Tensor bytes

bool IsContiguous(const TensorRef& t) {
  int64_t expected = 1;
  for (size_t d = t.size.size(); d-- > 0;) {
    if (t.size[d] == 0) return true;
    if (t.size[d] != 1 && t.stride[d] != expected) return false;
    expected *= t.size[d];
  }
  return true;
}

// Copies the elements of a strided view into row-major order.
void Gather(const uint8_t* base, uint64_t elem, const TensorRef& t, uint8_t* out) {
  const size_t rank = t.size.size();
  uint64_t total = 1;
  for (int64_t s : t.size) total *= static_cast<uint64_t>(s);
  if (total == 0) return;
  std::vector<int64_t> index(rank, 0);
  for (uint64_t n = 0; n < total; ++n) {
    int64_t offset = 0;
    for (size_t d = 0; d < rank; ++d) offset += index[d] * t.stride[d];
    std::memcpy(out + n * elem, base + static_cast<uint64_t>(offset) * elem, elem);
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < t.size[d]) break;
      index[d] = 0;
    }
  }
}

void SwapBytes(uint8_t* data, uint64_t size, uint64_t unit) {
  if (unit <= 1) return;
  for (uint64_t i = 0; i + unit <= size; i += unit) std::reverse(data + i, data + i + unit);
}

// Where a storage's bytes live.
struct StorageSpan {
  size_t entry = 0;     // zip entry, or
  uint64_t offset = 0;  // legacy: absolute file offset
  uint64_t size = 0;    // bytes
};

struct Slot {
  std::shared_ptr<const TensorRef> ref;
  size_t storage = 0;  // index into storages_
  bool contiguous = true;
  uint64_t byte_offset = 0;
};

// One checkpoint file: zip (plain or TorchScript) or legacy.
class CheckpointReader final : public ModelSource {
 public:
  static Result<std::unique_ptr<ModelSource>> Open(const std::string& path,
                                                   const ReadOptions& options) {
    MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path, options.io_mode));
    std::unique_ptr<CheckpointReader> r(new CheckpointReader());
    r->file_ = file;
    std::array<uint8_t, sizeof kLegacyMagic> head{};
    Status s;
    if (file->size() >= head.size()) s = file->ReadInto(0, head.size(), head.data());
    if (s.ok()) {
      if (file->size() >= head.size() && std::memcmp(head.data(), kLegacyMagic, head.size()) == 0)
        s = r->ParseLegacy(options);
      else
        s = r->ParseZip(options);
    }
    if (s.ok()) return std::unique_ptr<ModelSource>(std::move(r));
    if (s.message().rfind(path + ": ", 0) == 0) return s;
    return std::move(s).WithContext(path);
  }

  std::string_view format() const override { return "torch"; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  ModelFiles files() const override { return {{}, {file_->path()}}; }
  std::vector<std::string> notes() const override { return notes_; }

  Result<TensorView> Load(size_t index) const override {
    if (index >= slots_.size()) return NotFound("tensor #" + Num(index));
    const Slot& slot = slots_[index];
    const TensorInfo& info = infos_[index];
    auto storage = ReadStorage(slot.storage);
    if (!storage) return storage.error().WithContext("tensor " + Quote(info.name));
    const uint64_t elem = ElementSize(info.dtype);
    if (slot.contiguous && !big_endian_) {
      MP_ASSIGN_OR_RETURN(
          auto view, AlignedFor(info.dtype, (*storage)->Slice(slot.byte_offset, info.byte_size)));
      return TensorView{info, std::move(view)};
    }
    MP_ASSIGN_OR_RETURN(auto out, Buffer::Allocate(info.byte_size));
    if (slot.contiguous) {
      std::memcpy(out->mutable_data(), (*storage)->data() + slot.byte_offset, info.byte_size);
    } else {
      Gather((*storage)->data() + slot.byte_offset, elem, *slot.ref, out->mutable_data());
    }
    if (big_endian_) SwapBytes(out->mutable_data(), info.byte_size, NaturalAlignment(info.dtype));
    return TensorView{info, std::move(out)};
  }

  /// For a TorchScript archive: the zip, and for each entry the tensor whose bytes it is
  /// exactly (a storage holding one contiguous little-endian tensor from byte 0), if any.
  const zip::Reader* script_zip() const { return torchscript_ ? zip_.get() : nullptr; }
  std::vector<std::optional<size_t>> EntryTensors() const {
    std::vector<std::optional<size_t>> out(zip_ ? zip_->entries().size() : 0);
    std::vector<int> users(storages_.size(), 0);
    for (const Slot& slot : slots_) ++users[slot.storage];
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& slot = slots_[i];
      const StorageSpan& st = storages_[slot.storage];
      if (users[slot.storage] == 1 && slot.contiguous && !big_endian_ && slot.byte_offset == 0 &&
          st.size == infos_[i].byte_size) {
        out[st.entry] = i;
      }
    }
    return out;
  }

  Status LoadInto(size_t index, std::span<uint8_t> dest) const override {
    if (index >= slots_.size()) return NotFound("tensor #" + Num(index));
    const Slot& slot = slots_[index];
    const StorageSpan& st = storages_[slot.storage];
    // The common case: a tensor that is its whole storage, read straight from the file.
    if (!slot.contiguous || big_endian_ || slot.byte_offset != 0 ||
        st.size != infos_[index].byte_size || dest.size() != st.size)
      return ModelSource::LoadInto(index, dest);
    if (zip_) return zip_->ReadInto(st.entry, dest);
    return file_->ReadInto(st.offset, st.size, dest.data());
  }

 private:
  CheckpointReader() = default;

  Result<std::shared_ptr<Buffer>> ReadStorage(size_t i) const {
    const StorageSpan& st = storages_[i];
    if (zip_) return zip_->Read(st.entry);
    return file_->Read(st.offset, st.size);
  }

  // Registers the tensors of `sel` against their storages (looked up by `locate`, which gives
  // the storage's span and declared byte size), finds aliases and shared storages.
  template <typename Locate>
  Status AddTensors(Selection sel, Locate&& locate) {
    std::map<std::pair<int, std::string>, size_t> storage_index;
    std::map<std::pair<size_t, std::string>, std::string> views;  // (storage, view) -> name
    std::map<size_t, std::vector<std::string>> users;
    Json aliases = Json::object();
    std::unordered_set<std::string> names;
    for (auto& nt : sel.tensors) {
      if (!names.insert(nt.name).second) return Corrupt("two tensors are named " + Quote(nt.name));
      const TensorRef& t = *nt.ref;
      const std::string where = "tensor " + Quote(nt.name);
      auto [it, inserted] = storage_index.emplace(std::make_pair(nt.table, t.storage->key), 0);
      if (inserted) {
        MP_ASSIGN_OR_RETURN(StorageSpan span, locate(nt.table, *t.storage));
        it->second = storages_.size();
        storages_.push_back(span);
      }
      const size_t storage = it->second;
      // The view's identity: dtype, offset, size, stride.
      std::string view = std::string(DTypeName(t.dtype)) + "@" + Num(t.storage_offset);
      for (size_t d = 0; d < t.size.size(); ++d) {
        view += ',';
        view += std::to_string(t.size[d]);
        view += ':';
        view += std::to_string(t.stride[d]);
      }
      auto [vit, fresh] = views.emplace(std::make_pair(storage, view), nt.name);
      if (!fresh) {
        aliases[nt.name] = vit->second;
        continue;
      }
      users[storage].push_back(nt.name);
      std::vector<uint64_t> dims(t.size.begin(), t.size.end());
      auto info = TensorInfo::Make(nt.name, t.dtype, Shape(std::move(dims)));
      if (!info) return info.error().WithContext(where);
      Slot slot;
      slot.ref = nt.ref;
      slot.storage = storage;
      slot.contiguous = IsContiguous(t);
      slot.byte_offset = static_cast<uint64_t>(t.storage_offset) * ElementSize(t.dtype);
      // The VM checked the view against the declared numel; check it against the bytes too.
      uint64_t last = slot.byte_offset;
      if (info->byte_size > 0) {
        for (size_t d = 0; d < t.size.size(); ++d)
          last += static_cast<uint64_t>(t.size[d] - 1) * static_cast<uint64_t>(t.stride[d]) *
                  ElementSize(t.dtype);
        last += ElementSize(t.dtype);
        if (last > storages_[storage].size)
          return Corrupt(where + " reaches byte " + Num(last) + " of storage " +
                         Quote(t.storage->key) + ", which holds " + Num(storages_[storage].size));
      }
      infos_.push_back(std::move(*info));
      slots_.push_back(std::move(slot));
    }
    for (const auto& [storage, list] : users) {
      if (list.size() < 2) continue;
      std::string shown;
      for (const auto& n : list) shown += (shown.empty() ? "" : ", ") + Quote(n);
      notes_.push_back("tensors " + shown +
                       " are different views of one storage; each is stored as its own copy");
    }
    if (!aliases.empty()) {
      std::string shown;
      for (const auto& [a, target] : aliases.items())
        shown += (shown.empty() ? "" : ", ") + Quote(a) + " = " +
                 Quote(target.template get<std::string>());
      notes_.push_back("tied tensors (one storage, same view) kept once: " + shown +
                       "; recorded in metadata " + std::string(kAliasesKey));
    }
    metadata_ = std::move(sel.metadata);
    if (!aliases.empty()) metadata_[std::string(kAliasesKey)] = std::move(aliases);
    for (auto& n : sel.notes) notes_.push_back(std::move(n));
    return Status::Ok();
  }

  // ---- zip checkpoints and TorchScript archives

  Status ParseZip(const ReadOptions& options) {
    zip::ReaderOptions zo;
    zo.max_entries = options.max_tensors * 2 + 64;
    zo.max_name_bytes = options.max_name_bytes;
    MP_ASSIGN_OR_RETURN(zip_, zip::Reader::Open(file_, zo));
    const auto& entries = zip_->entries();
    if (entries.empty()) return Corrupt("zip archive is empty");
    // One top folder holds every record (torch's reader takes it from the first entry).
    const std::string& first = entries[0].name;
    const size_t slash = first.find('/');
    if (slash == std::string::npos || slash == 0)
      return Corrupt("entry " + Quote(first) + " is not inside the archive's top folder");
    top_ = first.substr(0, slash + 1);
    bool has_code = false;
    for (const auto& e : entries) {
      if (!e.name.starts_with(top_))
        return Corrupt("entry " + Quote(e.name) + " is outside the archive's top folder " +
                       Quote(top_));
      if (e.name.starts_with(top_ + "code/")) has_code = true;
    }
    auto data_pkl = zip_->Find(top_ + "data.pkl");
    if (!data_pkl)
      return Corrupt("archive has no " + Quote(top_ + "data.pkl") + " (not a torch checkpoint)");
    auto constants_pkl = zip_->Find(top_ + "constants.pkl");
    const bool torchscript = has_code || constants_pkl.has_value();
    torchscript_ = torchscript;
    if (auto order = zip_->Find(top_ + "byteorder")) {
      MP_ASSIGN_OR_RETURN(auto bytes, zip_->Read(*order));
      const std::string_view text(reinterpret_cast<const char*>(bytes->data()), bytes->size());
      if (text == "big") {
        big_endian_ = true;
      } else if (text != "little") {
        return Corrupt("record " + Quote(top_ + "byteorder") + " is neither 'little' nor 'big'");
      }
    }
    const PickleMode mode = torchscript ? PickleMode::kTorchScript : PickleMode::kCheckpoint;
    const PickleLimits limits = LimitsFor(options);
    MP_ASSIGN_OR_RETURN(auto data_bytes, zip_->Read(*data_pkl));
    auto pickled = SafeUnpickle(data_bytes->span(), limits, mode);
    if (!pickled) return pickled.error().WithContext("record " + Quote(top_ + "data.pkl"));
    data_pickle_ = std::move(*pickled);
    auto sel = Select(data_pickle_.root, options, torchscript);
    if (!sel) return sel.error();
    if (torchscript && constants_pkl && options.select_key.empty()) {
      MP_ASSIGN_OR_RETURN(auto const_bytes, zip_->Read(*constants_pkl));
      auto consts = SafeUnpickle(const_bytes->span(), limits, mode);
      if (!consts) return consts.error().WithContext("record " + Quote(top_ + "constants.pkl"));
      constants_pickle_ = std::move(*consts);
      MP_RETURN_IF_ERROR(CollectTensors(constants_pickle_.root, "constants", 1, sel->tensors));
    }
    if (torchscript)
      notes_.push_back("TorchScript archive: its code (" + top_ +
                       "code/) was not run; tensors come from data.pkl and constants.pkl");
    if (auto meta = zip_->Find(top_ + "modelport_metadata.json")) {
      MP_ASSIGN_OR_RETURN(auto bytes, zip_->Read(*meta));
      Json parsed = Json::parse(bytes->data(), bytes->data() + bytes->size(), nullptr, false);
      if (parsed.is_discarded() || !parsed.is_object())
        return Corrupt("record " + Quote(top_ + "modelport_metadata.json") +
                       " is not a JSON object");
      for (auto& [k, v] : parsed.items()) sel->metadata[k] = v;
    }
    return AddTensors(std::move(*sel), [&](int table, const StorageRef& s) -> Result<StorageSpan> {
      const std::string name = top_ + (table == 0 ? "data/" : "constants/") + s.key;
      auto entry = zip_->Find(name);
      if (!entry) return Corrupt("storage " + Quote(s.key) + " has no record " + Quote(name));
      const uint64_t declared = DeclaredBytes(s);
      const uint64_t size = zip_->entries()[*entry].size;
      if (size != declared)
        return Corrupt("record " + Quote(name) + " holds " + Num(size) +
                       " bytes but its storage declares " + Num(declared));
      return StorageSpan{*entry, 0, size};
    });
  }

  static uint64_t DeclaredBytes(const StorageRef& s) {
    return static_cast<uint64_t>(s.numel) * (s.dtype ? ElementSize(*s.dtype) : 1);
  }

  // ---- legacy (torch < 1.6)

  Status ParseLegacy(const ReadOptions& options) {
    MP_ASSIGN_OR_RETURN(auto whole, file_->Read(0, file_->size()));
    const std::span<const uint8_t> bytes = whole->span();
    const PickleLimits limits = LimitsFor(options);
    uint64_t pos = sizeof kLegacyMagic;
    auto next = [&](const char* what) -> Result<PickleResult> {
      auto r = SafeUnpickle(bytes.subspan(pos), limits, PickleMode::kCheckpoint);
      if (!r) return r.error().WithContext(std::string("legacy checkpoint ") + what);
      pos += r->end_offset;
      return r;
    };
    MP_ASSIGN_OR_RETURN(auto version, next("protocol version"));
    if (version.root->kind != ValueKind::kInt || version.root->i != kLegacyProtocolVersion)
      return Unsupported("legacy checkpoint protocol version is not 1001");
    MP_ASSIGN_OR_RETURN(auto sys_info, next("sys_info"));
    if (const Value* le = sys_info.root->Get("little_endian");
        le != nullptr && le->kind == ValueKind::kBool)
      big_endian_ = !le->b;
    MP_ASSIGN_OR_RETURN(data_pickle_, next("object"));
    MP_ASSIGN_OR_RETURN(auto keys, next("storage keys"));
    if (keys.root->kind != ValueKind::kList)
      return Corrupt("legacy checkpoint storage keys are not a list");
    // Each storage's dtype, from the persistent ids the object pickle made.
    std::unordered_map<std::string, std::shared_ptr<const StorageRef>> refs;
    for (const auto& node : data_pickle_.nodes)
      if (node->kind == ValueKind::kStorage) refs.emplace(node->storage->key, node->storage);
    std::unordered_map<std::string, StorageSpan> spans;
    for (const Value* k : keys.root->items) {
      if (k->kind != ValueKind::kStr) return Corrupt("legacy storage key is not a string");
      auto ref = refs.find(k->text);
      if (ref == refs.end() || !ref->second->dtype)
        return Corrupt("legacy storage " + Quote(k->text) + " is not used by any tensor");
      uint8_t count_bytes[8];
      if (file_->size() - pos < 8)
        return Corrupt("legacy storage " + Quote(k->text) + " is cut off at byte " + Num(pos));
      std::memcpy(count_bytes, bytes.data() + pos, 8);
      if (big_endian_) std::reverse(count_bytes, count_bytes + 8);
      uint64_t count;
      std::memcpy(&count, count_bytes, 8);
      const uint64_t elem = ElementSize(*ref->second->dtype);
      if (count != static_cast<uint64_t>(ref->second->numel))
        return Corrupt("legacy storage " + Quote(k->text) + " holds " + Num(count) +
                       " elements but its persistent id declares " + Num(ref->second->numel));
      pos += 8;
      if (count > (file_->size() - pos) / elem)
        return Corrupt("legacy storage " + Quote(k->text) + " of " + Num(count) +
                       " elements runs past the end of the file");
      spans[k->text] = StorageSpan{0, pos, count * elem};
      pos += count * elem;
    }
    auto sel = Select(data_pickle_.root, options, false);
    if (!sel) return sel.error();
    notes_.push_back("legacy checkpoint format (torch < 1.6)");
    return AddTensors(std::move(*sel), [&](int, const StorageRef& s) -> Result<StorageSpan> {
      auto it = spans.find(s.key);
      if (it == spans.end())
        return Corrupt("storage " + Quote(s.key) + " is not in the legacy storage list");
      return it->second;
    });
  }

  std::shared_ptr<InputFile> file_;
  std::unique_ptr<zip::Reader> zip_;
  std::string top_;
  bool torchscript_ = false;
  bool big_endian_ = false;
  PickleResult data_pickle_;
  PickleResult constants_pickle_;
  std::vector<StorageSpan> storages_;
  std::vector<Slot> slots_;
  std::vector<TensorInfo> infos_;
  Json metadata_ = Json::object();
  std::vector<std::string> notes_;
};

bool IsFile(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

}  // namespace

Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (IsFile(dir / kIndexName)) return Open((dir / kIndexName).string(), options);
    if (IsFile(dir / "pytorch_model.bin"))
      return Open((dir / "pytorch_model.bin").string(), options);
    return NotFound(path + ": folder holds neither " + std::string(kIndexName) +
                    " nor pytorch_model.bin");
  }
  if (path.ends_with(".index.json")) return OpenShardedIndex(path, options, CheckpointReader::Open);
  return CheckpointReader::Open(path, options);
}

bool Detect(std::span<const uint8_t> prefix, uint64_t) {
  if (prefix.size() >= sizeof kLegacyMagic &&
      std::memcmp(prefix.data(), kLegacyMagic, sizeof kLegacyMagic) == 0)
    return true;
  // A zip whose first local header names a record inside a top folder the way torch writes.
  if (prefix.size() < 30 || std::memcmp(prefix.data(), "PK\x03\x04", 4) != 0) return false;
  const size_t name_len = prefix[26] | (prefix[27] << 8);
  if (prefix.size() < 30 + name_len) return false;
  const std::string_view name(reinterpret_cast<const char*>(prefix.data()) + 30, name_len);
  const size_t slash = name.find('/');
  if (slash == std::string_view::npos || slash == 0) return false;
  const std::string_view rest = name.substr(slash + 1);
  return rest == "data.pkl" || rest.starts_with("data/") || rest == "version" ||
         rest == ".format_version" || rest == "byteorder" || rest == "constants.pkl" ||
         rest.starts_with("code/") || rest.starts_with(".data/");
}

bool DetectDir(const std::string& dir) {
  return IsFile(fs::path(dir) / kIndexName) || IsFile(fs::path(dir) / "pytorch_model.bin");
}

// ----------------------------------------------------------------------------------------------
// TorchScript archives split into a graph and tensors (the registry keeps them so)

Result<bool> SplitTorchScript(const ModelSource& source, const std::string& graph_path,
                              bool durable) {
  const auto* reader = dynamic_cast<const CheckpointReader*>(&source);
  if (reader == nullptr || reader->script_zip() == nullptr) return false;
  const zip::Reader& archive = *reader->script_zip();
  const std::vector<std::optional<size_t>> tensors = reader->EntryTensors();
  MP_ASSIGN_OR_RETURN(auto out, zip::Writer::Create(graph_path));
  Json records = Json::array();
  for (size_t e = 0; e < archive.entries().size(); ++e) {
    const std::string& name = archive.entries()[e].name;
    if (name == kGraphRecordsName) {
      return InvalidArgument("the TorchScript archive holds a record named " + Quote(name) +
                             ", which modelport's TorchScript graph reserves");
    }
    // The record list is JSON, which holds UTF-8 only (torch writes ASCII names).
    if (!IsValidUtf8(name)) {
      return InvalidArgument("the TorchScript archive's record " + std::to_string(e + 1) +
                             " has a name that is not valid UTF-8");
    }
    if (tensors[e] && !IsValidUtf8(source.tensors()[*tensors[e]].name)) {
      return InvalidArgument("the TorchScript archive's record " + Quote(name) +
                             " holds a tensor whose name is not valid UTF-8");
    }
    if (tensors[e]) {
      records.push_back({{"name", name}, {"tensor", source.tensors()[*tensors[e]].name}});
      continue;
    }
    records.push_back({{"name", name}});
    MP_ASSIGN_OR_RETURN(auto bytes, archive.Read(e));
    const std::span<const uint8_t> part = bytes->span();
    MP_RETURN_IF_ERROR(out->AddStored(name, std::span(&part, 1)));
  }
  const std::string list = records.dump();
  const std::span<const uint8_t> part(reinterpret_cast<const uint8_t*>(list.data()), list.size());
  MP_RETURN_IF_ERROR(out->AddStored(kGraphRecordsName, std::span(&part, 1)));
  MP_RETURN_IF_ERROR(out->Finish(durable));
  return true;
}

Status JoinTorchScript(const std::string& graph_path, const ModelSource& tensors,
                       const std::string& dest, const WriteOptions& options) {
  MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(graph_path));
  MP_ASSIGN_OR_RETURN(auto graph, zip::Reader::Open(file));
  auto fail = [&](const std::string& why) {
    return Corrupt(graph_path + ": TorchScript graph " + why);
  };
  const auto list_entry = graph->Find(kGraphRecordsName);
  if (!list_entry) return fail("has no record list " + Quote(kGraphRecordsName));
  MP_ASSIGN_OR_RETURN(auto list_bytes, graph->Read(*list_entry));
  const Json records =
      Json::parse(list_bytes->data(), list_bytes->data() + list_bytes->size(), nullptr, false);
  if (!records.is_array()) return fail("record list is not a JSON array");
  if (options.no_overwrite && fs::exists(dest)) return AlreadyExists(dest + ": already exists");
  MP_ASSIGN_OR_RETURN(auto out, zip::Writer::Create(dest));
  for (const Json& r : records) {
    if (!r.is_object() || !r.contains("name") || !r.at("name").is_string())
      return fail("record list entry " + r.dump() + " has no name");
    const std::string name = r.at("name").get<std::string>();
    std::shared_ptr<Buffer> bytes;
    if (r.contains("tensor")) {
      if (!r.at("tensor").is_string()) return fail("record " + Quote(name) + " names no tensor");
      const std::string tensor = r.at("tensor").get<std::string>();
      const auto index = tensors.Find(tensor);
      if (!index) {
        return InvalidArgument("the TorchScript archive's record " + Quote(name) +
                               " needs tensor " + Quote(tensor) + ", which the model lacks");
      }
      MP_ASSIGN_OR_RETURN(TensorView view, tensors.Load(*index));
      bytes = view.data;
    } else {
      const auto entry = graph->Find(name);
      if (!entry) return fail("lacks record " + Quote(name));
      MP_ASSIGN_OR_RETURN(bytes, graph->Read(*entry));
    }
    // torch.jit.save places every record at a multiple of 64 bytes; so does this.
    const std::span<const uint8_t> part = bytes->span();
    MP_RETURN_IF_ERROR(out->AddStored(name, std::span(&part, 1), 64));
  }
  return out->Finish(options.durable);
}

}  // namespace mp::torch
