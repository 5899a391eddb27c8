#include "modelport/formats/keras/keras.h"

#include <hdf5.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "modelport/core/file.h"
#include "modelport/formats/zip/zip.h"

namespace mp::keras {
namespace {

namespace fs = std::filesystem;

std::string Quote(std::string_view s) { return zip::QuoteName(s); }
std::string Num(uint64_t v) { return std::to_string(v); }

constexpr std::string_view kNamesAttr = "modelport_names";
constexpr std::string_view kMetadataAttr = "modelport_metadata";
constexpr std::string_view kWeightsMember = "model.weights.h5";
constexpr std::string_view kConfigMember = "config.json";
constexpr std::string_view kMetadataMember = "metadata.json";
// Keras splits attributes larger than this into name0, name1, ... (hdf5_format.py).
constexpr uint64_t kObjectHeaderLimit = 64512;
constexpr int kMaxDepth = 32;
constexpr uint64_t kNoOffset = ~uint64_t{0};

// ---------------------------------------------------------------------------------------------
// libhdf5 access: one recursive mutex around every call (Debian builds it without thread
// safety; recursive so that a writer holding it may load tensors from another HDF5 source).

std::recursive_mutex& H5Mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

class H5Lock {
 public:
  H5Lock() : lock_(H5Mutex()) {
    static const bool initialised = Init();
    (void)initialised;
  }

 private:
  static bool Init() {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    // Never load filter plugins: a plugin is code from a folder an attacker may influence.
    H5PLset_loading_state(0);
    return true;
  }
  std::lock_guard<std::recursive_mutex> lock_;
};

/// An owned HDF5 identifier; release only while holding H5Lock.
class Hid {
 public:
  Hid() = default;
  explicit Hid(hid_t id) : id_(id) {}
  ~Hid() { Reset(); }
  Hid(Hid&& other) noexcept : id_(std::exchange(other.id_, -1)) {}
  Hid& operator=(Hid&& other) noexcept {
    if (this != &other) {
      Reset();
      id_ = std::exchange(other.id_, -1);
    }
    return *this;
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void Reset() {
    if (id_ < 0) return;
    if (H5Iget_type(id_) == H5I_FILE) {
      H5Fclose(id_);
    } else {
      H5Idec_ref(id_);
    }
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
};

herr_t TakeInnermost(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (n == 0 && err != nullptr) {
    if (err->desc != nullptr) out->assign(err->desc);
    if (out->empty()) {
      char buf[256] = {};
      if (H5Eget_msg(err->min_num, nullptr, buf, sizeof buf) > 0) out->assign(buf);
    }
  }
  return 0;
}

/// The innermost message of the HDF5 error stack (then cleared), on one line.
std::string H5Message() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, TakeInnermost, &msg);
  H5Eclear2(H5E_DEFAULT);
  for (char& c : msg) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  while (!msg.empty() && msg.back() == ' ') msg.pop_back();
  return msg.empty() ? "HDF5 gives no reason (a damaged or truncated file)" : msg;
}

/// "<where>: <object>: <what>[: <innermost HDF5 message>]".
Status Fail(StatusCode code, const std::string& where, std::string_view object,
            std::string_view what, bool with_hdf5 = true) {
  std::string m = where;
  if (!object.empty()) m += ": " + Quote(object);
  m += ": " + std::string(what);
  if (with_hdf5) {
    m += ": " + H5Message();
  } else {
    H5Eclear2(H5E_DEFAULT);
  }
  return Status(code, std::move(m));
}

std::string JoinPath(std::string_view parent, std::string_view name) {
  return parent.empty() ? std::string(name) : std::string(parent) + "/" + std::string(name);
}

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> parts;
  size_t at = 0;
  while (true) {
    const size_t slash = path.find('/', at);
    parts.emplace_back(path.substr(at, slash == std::string_view::npos ? path.npos : slash - at));
    if (slash == std::string_view::npos) break;
    at = slash + 1;
  }
  return parts;
}

bool IsIndex(std::string_view s) {
  return !s.empty() && s.size() <= 9 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// ---------------------------------------------------------------------------------------------
// Reading.

struct Entry {
  std::string path;  ///< of the dataset, from the root
  uint64_t offset = kNoOffset;
};

class H5Source final : public ModelSource {
 public:
  ~H5Source() override {
    H5Lock lock;
    file_id_.Reset();
  }
  std::string_view format() const override { return format_; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  Result<TensorView> Load(size_t index) const override;
  ModelFiles files() const override { return files_; }
  std::vector<std::string> notes() const override { return notes_; }

  // Filled by OpenImpl and Indexer.
  std::string format_ = "keras_h5";
  std::string name_;                 // for messages
  std::shared_ptr<InputFile> file_;  // data offsets refer to this file, or
  std::shared_ptr<Buffer> image_;    // to this in-memory image (which HDF5 reads in place)
  Hid file_id_;
  std::vector<TensorInfo> infos_;
  std::vector<Entry> entries_;
  Json metadata_ = Json::object();
  std::vector<std::string> notes_;
  ModelFiles files_;
};

/// Opens one link of `parent` after checking it is a hard link (soft, external and user-defined
/// links are refused, so nothing outside the file is ever opened).
Result<Hid> OpenLink(hid_t parent, const std::string& where, const std::string& parent_path,
                     std::string_view name, const ReadOptions& options) {
  const std::string path = JoinPath(parent_path, name);
  if (name.empty() || name == "." || name.find('/') != std::string_view::npos) {
    return Corrupt(where + ": " + Quote(path) + ": invalid object name");
  }
  if (name.size() > options.max_name_bytes) {
    return LimitExceeded(where + ": " + Quote(path.substr(0, 64)) + ": name of " +
                         Num(name.size()) + " bytes exceeds the limit of " +
                         Num(options.max_name_bytes));
  }
  const std::string n(name);
  const htri_t exists = H5Lexists(parent, n.c_str(), H5P_DEFAULT);
  if (exists < 0) return Fail(StatusCode::kCorrupt, where, path, "cannot look up the link");
  if (exists == 0) {
    return Fail(StatusCode::kCorrupt, where, path, "no such object in the file", false);
  }
  H5L_info_t info;
  if (H5Lget_info(parent, n.c_str(), &info, H5P_DEFAULT) < 0) {
    return Fail(StatusCode::kCorrupt, where, path, "cannot read the link");
  }
  switch (info.type) {
    case H5L_TYPE_HARD:
      break;
    case H5L_TYPE_SOFT:
      return Fail(StatusCode::kUnsafe, where, path,
                  "soft link refused (only hard links are followed)", false);
    case H5L_TYPE_EXTERNAL:
      return Fail(StatusCode::kUnsafe, where, path,
                  "external link to another file refused (it would open that file)", false);
    default:
      return Fail(StatusCode::kUnsafe, where, path, "user-defined link refused", false);
  }
  Hid obj(H5Oopen(parent, n.c_str(), H5P_DEFAULT));
  if (!obj.valid()) return Fail(StatusCode::kCorrupt, where, path, "cannot open the object");
  return obj;
}

/// Opens `path` (components joined by '/') from `root`, every link checked by OpenLink.
Result<Hid> OpenPath(hid_t root, const std::string& where, const std::string& path,
                     const ReadOptions& options) {
  Hid current;
  std::string so_far;
  for (const std::string& part : SplitPath(path)) {
    MP_ASSIGN_OR_RETURN(
        Hid next, OpenLink(current.valid() ? current.get() : root, where, so_far, part, options));
    current = std::move(next);
    so_far = JoinPath(so_far, part);
  }
  return current;
}

Result<bool> HasAttr(hid_t obj, const std::string& where, const std::string& path,
                     const std::string& name) {
  const htri_t r = H5Aexists(obj, name.c_str());
  if (r < 0) return Fail(StatusCode::kCorrupt, where, path, "cannot list attributes");
  return r > 0;
}

/// Attribute `name` of `obj` as strings: fixed- or variable-length text, scalar or 1-D; an
/// empty array of any type (Keras writes [] as an empty float64 array) is an empty list.
Result<std::vector<std::string>> ReadStrings(hid_t obj, const std::string& where,
                                             const std::string& path, const std::string& name,
                                             uint64_t max_count, uint64_t max_bytes) {
  const std::string what = "attribute " + Quote(name);
  Hid attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  if (!attr.valid()) return Fail(StatusCode::kCorrupt, where, path, "cannot open " + what);
  Hid space(H5Aget_space(attr.get()));
  if (!space.valid()) return Fail(StatusCode::kCorrupt, where, path, what + ": bad dataspace");
  uint64_t count = 0;
  switch (H5Sget_simple_extent_type(space.get())) {
    case H5S_SCALAR:
      count = 1;
      break;
    case H5S_NULL:
      return std::vector<std::string>{};
    case H5S_SIMPLE: {
      if (H5Sget_simple_extent_ndims(space.get()) != 1) {
        return Fail(StatusCode::kCorrupt, where, path, what + " is not a list", false);
      }
      hsize_t dim = 0;
      if (H5Sget_simple_extent_dims(space.get(), &dim, nullptr) < 0) {
        return Fail(StatusCode::kCorrupt, where, path, what + ": bad dataspace");
      }
      count = dim;
      break;
    }
    default:
      return Fail(StatusCode::kCorrupt, where, path, what + ": bad dataspace");
  }
  if (count == 0) return std::vector<std::string>{};
  if (count > max_count) {
    return LimitExceeded(where + ": " + Quote(path) + ": " + what + " holds " + Num(count) +
                         " strings, more than the limit of " + Num(max_count));
  }
  Hid type(H5Aget_type(attr.get()));
  if (!type.valid() || H5Tget_class(type.get()) != H5T_STRING) {
    return Fail(StatusCode::kCorrupt, where, path, what + " is not text", false);
  }
  std::vector<std::string> out;
  out.reserve(count);
  const htri_t vlen = H5Tis_variable_str(type.get());
  if (vlen < 0) return Fail(StatusCode::kCorrupt, where, path, what + ": bad string type");
  if (vlen > 0) {
    Hid mem(H5Tcopy(H5T_C_S1));
    if (!mem.valid() || H5Tset_size(mem.get(), H5T_VARIABLE) < 0 ||
        H5Tset_cset(mem.get(), H5Tget_cset(type.get())) < 0) {
      return Fail(StatusCode::kCorrupt, where, path, what + ": bad string type");
    }
    std::vector<char*> ptrs(count, nullptr);
    if (H5Aread(attr.get(), mem.get(), ptrs.data()) < 0) {
      return Fail(StatusCode::kCorrupt, where, path, "cannot read " + what);
    }
    Status status;
    for (char* p : ptrs) {
      const size_t n = p == nullptr ? 0 : strnlen(p, max_bytes + 1);
      if (n > max_bytes && status.ok()) {
        status = LimitExceeded(where + ": " + Quote(path) + ": " + what + " holds a string over " +
                               Num(max_bytes) + " bytes");
      }
      out.emplace_back(p == nullptr ? "" : std::string(p, std::min<size_t>(n, max_bytes)));
    }
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data());
    MP_RETURN_IF_ERROR(status);
    return out;
  }
  const size_t size = H5Tget_size(type.get());
  if (size == 0) return Fail(StatusCode::kCorrupt, where, path, what + ": bad string type");
  if (size > max_bytes) {
    return LimitExceeded(where + ": " + Quote(path) + ": " + what + " has strings of " + Num(size) +
                         " bytes, more than the limit of " + Num(max_bytes));
  }
  const H5T_str_t pad = H5Tget_strpad(type.get());
  std::vector<char> buf(count * size);
  if (H5Aread(attr.get(), type.get(), buf.data()) < 0) {
    return Fail(StatusCode::kCorrupt, where, path, "cannot read " + what);
  }
  for (uint64_t i = 0; i < count; ++i) {
    std::string_view s(buf.data() + i * size, size);
    s = s.substr(0, std::min(s.size(), s.find('\0')));
    if (pad == H5T_STR_SPACEPAD) {
      while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    }
    out.emplace_back(s);
  }
  return out;
}

/// An attribute Keras may have split into name0, name1, ... (load_attributes_from_hdf5_group).
Result<std::optional<std::vector<std::string>>> ReadChunkedStrings(hid_t obj,
                                                                   const std::string& where,
                                                                   const std::string& path,
                                                                   const std::string& name,
                                                                   const ReadOptions& options) {
  MP_ASSIGN_OR_RETURN(bool whole, HasAttr(obj, where, path, name));
  if (whole) {
    return ReadStrings(obj, where, path, name, options.max_tensors, options.max_name_bytes);
  }
  std::optional<std::vector<std::string>> out;
  for (uint64_t k = 0;; ++k) {
    const std::string chunk = name + Num(k);
    MP_ASSIGN_OR_RETURN(bool has, HasAttr(obj, where, path, chunk));
    if (!has) break;
    MP_ASSIGN_OR_RETURN(auto part, ReadStrings(obj, where, path, chunk, options.max_tensors,
                                               options.max_name_bytes));
    if (!out) out.emplace();
    out->insert(out->end(), part.begin(), part.end());
    if (out->size() > options.max_tensors) {
      return LimitExceeded(where + ": " + Quote(path) + ": attribute " + Quote(name) +
                           " holds more than " + Num(options.max_tensors) + " strings");
    }
  }
  return out;
}

/// A scalar text attribute, if present.
Result<std::optional<std::string>> ReadText(hid_t obj, const std::string& where,
                                            const std::string& path, const std::string& name,
                                            uint64_t max_bytes) {
  MP_ASSIGN_OR_RETURN(bool has, HasAttr(obj, where, path, name));
  if (!has) return std::optional<std::string>();
  MP_ASSIGN_OR_RETURN(auto strings, ReadStrings(obj, where, path, name, 1, max_bytes));
  if (strings.empty()) return std::optional<std::string>(std::string());
  return std::optional<std::string>(std::move(strings.front()));
}

/// The dtype of an HDF5 type modelport carries; nullopt (with a description) for others.
std::optional<DType> DTypeOfType(hid_t type, bool bf16_attr, std::string& description) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  const bool plain = H5Tget_offset(type) == 0 && H5Tget_precision(type) == size * 8;
  switch (cls) {
    case H5T_INTEGER: {
      const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
      if (!plain) break;
      switch (size) {
        case 1:
          return is_signed ? DType::kI8 : DType::kU8;
        case 2:
          return is_signed ? DType::kI16 : DType::kU16;
        case 4:
          return is_signed ? DType::kI32 : DType::kU32;
        case 8:
          return is_signed ? DType::kI64 : DType::kU64;
        default:
          break;
      }
      break;
    }
    case H5T_FLOAT: {
      size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
      if (!plain || H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) break;
      if (H5Tget_norm(type) != H5T_NORM_IMPLIED) break;
      const size_t ebias = H5Tget_ebias(type);
      struct Layout {
        size_t size, spos, epos, esize, msize, ebias;
        DType dtype;
      };
      static constexpr Layout kLayouts[] = {
          {2, 15, 10, 5, 10, 15, DType::kF16},
          {2, 15, 7, 8, 7, 127, DType::kBF16},
          {4, 31, 23, 8, 23, 127, DType::kF32},
          {8, 63, 52, 11, 52, 1023, DType::kF64},
      };
      for (const Layout& l : kLayouts) {
        if (l.size == size && l.spos == spos && l.epos == epos && l.esize == esize && mpos == 0 &&
            l.msize == msize && l.ebias == ebias) {
          return l.dtype;
        }
      }
      break;
    }
    case H5T_ENUM: {
      // h5py's bool: an enum of int8 {FALSE: 0, TRUE: 1}.
      if (size != 1 || H5Tget_nmembers(type) != 2) break;
      int8_t values[2] = {-1, -1};
      bool names_ok = true;
      for (unsigned i = 0; i < 2; ++i) {
        char* name = H5Tget_member_name(type, i);
        names_ok = names_ok && name != nullptr && std::strcmp(name, i == 0 ? "FALSE" : "TRUE") == 0;
        if (name != nullptr) H5free_memory(name);
        if (H5Tget_member_value(type, i, &values[i]) < 0) names_ok = false;
      }
      if (names_ok && values[0] == 0 && values[1] == 1) return DType::kBool;
      break;
    }
    case H5T_OPAQUE:
      if (size == 2 && bf16_attr) return DType::kBF16;
      break;
    case H5T_STRING:
      description = "text";
      return std::nullopt;
    default:
      break;
  }
  description =
      "HDF5 type class " + Num(static_cast<uint64_t>(cls)) + " of " + Num(size) + " bytes";
  return std::nullopt;
}

/// Builds an H5Source: walks the file and indexes its datasets. Runs under H5Lock.
class Indexer {
 public:
  Indexer(H5Source& src, const ReadOptions& options, const Json* config)
      : src_(src), options_(options), where_(src.name_), config_(config) {}

  Status Run() {
    const hid_t root = src_.file_id_.get();
    MP_RETURN_IF_ERROR(ReadRootMetadata(root));
    MP_ASSIGN_OR_RETURN(auto names, ReadChunkedStrings(root, where_, "/", "layer_names", options_));
    if (names) return IndexKeras2(root, "", *names);
    const htri_t has_mw = H5Lexists(root, "model_weights", H5P_DEFAULT);
    if (has_mw < 0) return Fail(StatusCode::kCorrupt, where_, "/", "cannot list the root group");
    if (has_mw > 0) {
      MP_ASSIGN_OR_RETURN(Hid mw, OpenLink(root, where_, "", "model_weights", options_));
      MP_ASSIGN_OR_RETURN(auto mw_names, ReadChunkedStrings(mw.get(), where_, "model_weights",
                                                            "layer_names", options_));
      if (mw_names) {
        const htri_t has_opt = H5Lexists(root, "optimizer_weights", H5P_DEFAULT);
        if (has_opt > 0) {
          src_.notes_.push_back(
              "optimizer_weights (the optimizer's state) was not read: only model_weights");
        }
        H5Eclear2(H5E_DEFAULT);
        return IndexKeras2(mw.get(), "model_weights", *mw_names);
      }
    }
    return IndexTree(root);
  }

 private:
  Status ReadRootMetadata(hid_t root) {
    for (auto [attr, key] :
         {std::pair{"keras_version", kKerasVersionKey}, std::pair{"backend", kBackendKey}}) {
      MP_ASSIGN_OR_RETURN(auto text, ReadText(root, where_, "/", attr, options_.max_name_bytes));
      if (text) src_.metadata_[std::string(key)] = *text;
    }
    for (auto [attr, key] : {std::pair{"model_config", kConfigKey},
                             std::pair{"training_config", kTrainingConfigKey}}) {
      MP_ASSIGN_OR_RETURN(auto text, ReadText(root, where_, "/", attr, options_.max_header_bytes));
      if (!text) continue;
      Json parsed = Json::parse(*text, nullptr, false);
      if (parsed.is_discarded()) {
        src_.metadata_[std::string(key)] = *text;
        src_.notes_.push_back(std::string(attr) + " is not valid JSON: kept as text");
      } else {
        src_.metadata_[std::string(key)] = std::move(parsed);
      }
    }
    MP_ASSIGN_OR_RETURN(auto extra, ReadText(root, where_, "/", std::string(kMetadataAttr),
                                             options_.max_header_bytes));
    if (extra) {
      Json parsed = Json::parse(*extra, nullptr, false);
      if (!parsed.is_object()) {
        return Corrupt(where_ + ": attribute " + Quote(kMetadataAttr) + " is not a JSON object");
      }
      for (auto& [k, v] : parsed.items()) {
        if (!src_.metadata_.contains(k)) src_.metadata_[k] = v;
      }
    }
    MP_ASSIGN_OR_RETURN(auto names, ReadText(root, where_, "/", std::string(kNamesAttr),
                                             options_.max_header_bytes));
    if (names) {
      Json parsed = Json::parse(*names, nullptr, false);
      if (!parsed.is_object()) {
        return Corrupt(where_ + ": attribute " + Quote(kNamesAttr) + " is not a JSON object");
      }
      for (auto& [k, v] : parsed.items()) {
        if (!v.is_string()) {
          return Corrupt(where_ + ": attribute " + Quote(kNamesAttr) + ": name of " + Quote(k) +
                         " is not a string");
        }
        name_map_[k] = v.get<std::string>();
      }
    }
    if (!config_ && src_.metadata_.contains(kConfigKey)) config_ = &src_.metadata_[kConfigKey];
    if (config_) ScanConfig(*config_, 0);
    return Status::Ok();
  }

  // Records every layer config by name; Lambda layers and classes from other modules go to
  // notes (a config is data: nothing in it is imported or run).
  void ScanConfig(const Json& j, int depth) {
    if (depth > 64) return;
    if (j.is_object()) {
      auto cls = j.find("class_name");
      if (cls != j.end() && cls->is_string()) {
        const std::string class_name = cls->get<std::string>();
        std::string name;
        auto cfg = j.find("config");
        if (cfg != j.end() && cfg->is_object()) {
          auto n = cfg->find("name");
          if (n != cfg->end() && n->is_string()) name = n->get<std::string>();
        }
        if (!name.empty()) layers_.emplace(name, &j);
        auto module = j.find("module");
        if (class_name == "Lambda") {
          AddConfigNote("layer " + Quote(name) +
                        " is a Lambda layer: its Python code is kept as data, never run");
        } else if (module != j.end() && module->is_string() &&
                   !module->get<std::string>().starts_with("keras")) {
          AddConfigNote("class " + Quote(class_name) + " comes from module " +
                        Quote(module->get<std::string>()) + ": not imported");
        }
      }
      for (const auto& [k, v] : j.items()) ScanConfig(v, depth + 1);
    } else if (j.is_array()) {
      for (const auto& v : j) ScanConfig(v, depth + 1);
    }
  }
  void AddConfigNote(std::string note) {
    if (++config_notes_ <= 20) src_.notes_.push_back(std::move(note));
  }

  Status IndexKeras2(hid_t container, const std::string& container_path,
                     const std::vector<std::string>& layer_names) {
    std::set<std::string> seen_layers;
    for (const std::string& layer : layer_names) {
      if (!seen_layers.insert(layer).second) continue;
      const std::string layer_path = JoinPath(container_path, layer);
      MP_ASSIGN_OR_RETURN(Hid group, OpenLink(container, where_, container_path, layer, options_));
      MP_ASSIGN_OR_RETURN(auto weights, ReadChunkedStrings(group.get(), where_, layer_path,
                                                           "weight_names", options_));
      if (!weights) continue;
      for (const std::string& weight : *weights) {
        std::string name = weight;
        if (name.ends_with(":0")) name.resize(name.size() - 2);
        const std::string path = JoinPath(layer_path, weight);
        if (names_.count(name)) name = JoinPath(layer, name);
        MP_RETURN_IF_ERROR(AddDataset(group.get(), layer_path, weight, path, name));
      }
    }
    return Status::Ok();
  }

  Status AddDataset(hid_t base, const std::string& base_path, const std::string& rel,
                    const std::string& path, const std::string& name) {
    if (src_.infos_.size() >= options_.max_tensors) {
      return LimitExceeded(where_ + ": more than " + Num(options_.max_tensors) + " tensors");
    }
    Hid ds;
    if (rel.empty()) {
      ds = Hid(H5Iinc_ref(base) >= 0 ? base : -1);
    } else {
      Hid current;
      std::string so_far = base_path;
      for (const std::string& part : SplitPath(rel)) {
        MP_ASSIGN_OR_RETURN(Hid next, OpenLink(current.valid() ? current.get() : base, where_,
                                               so_far, part, options_));
        current = std::move(next);
        so_far = JoinPath(so_far, part);
      }
      ds = std::move(current);
    }
    if (H5Iget_type(ds.get()) != H5I_DATASET) {
      return Fail(StatusCode::kCorrupt, where_, path, "is not a dataset", false);
    }
    return Inspect(ds.get(), path, name);
  }

  Status Inspect(hid_t ds, const std::string& path, const std::string& name) {
    if (!names_.insert(name).second) {
      return Corrupt(where_ + ": " + Quote(path) + ": tensor name " + Quote(name) +
                     " appears twice");
    }
    Hid dcpl(H5Dget_create_plist(ds));
    if (!dcpl.valid()) return Fail(StatusCode::kCorrupt, where_, path, "bad creation properties");
    const H5D_layout_t layout = H5Pget_layout(dcpl.get());
    if (layout == H5D_VIRTUAL) {
      return Fail(StatusCode::kUnsafe, where_, path,
                  "virtual dataset refused (its data would come from other files)", false);
    }
    if (layout != H5D_CONTIGUOUS && layout != H5D_CHUNKED && layout != H5D_COMPACT) {
      return Fail(StatusCode::kCorrupt, where_, path, "unknown storage layout");
    }
    const int external = H5Pget_external_count(dcpl.get());
    if (external != 0) {
      return Fail(StatusCode::kUnsafe, where_, path,
                  "external storage refused (its data would come from other files)", external < 0);
    }
    const int nfilters = H5Pget_nfilters(dcpl.get());
    if (nfilters < 0) return Fail(StatusCode::kCorrupt, where_, path, "bad filter pipeline");
    for (int i = 0; i < nfilters; ++i) {
      unsigned flags = 0, config = 0;
      size_t nelmts = 0;
      char fname[64] = {};
      const H5Z_filter_t id = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &nelmts,
                                             nullptr, sizeof fname, fname, &config);
      if (id < 0) return Fail(StatusCode::kCorrupt, where_, path, "bad filter pipeline");
      if (id == H5Z_FILTER_DEFLATE || id == H5Z_FILTER_SHUFFLE || id == H5Z_FILTER_FLETCHER32) {
        continue;
      }
      const std::string what = "filter " + Num(static_cast<uint64_t>(id)) +
                               (fname[0] ? " (" + Quote(fname) + ")" : std::string()) +
                               " refused: only HDF5's built-in deflate, shuffle and fletcher32 "
                               "are read";
      // Ids from 256 up are registered plugins: code HDF5 would load from disk.
      return Fail(id >= 256 ? StatusCode::kUnsafe : StatusCode::kUnsupported, where_, path,
                  id >= 256 ? what + " (a filter plugin)" : what, false);
    }

    Hid space(H5Dget_space(ds));
    if (!space.valid()) return Fail(StatusCode::kCorrupt, where_, path, "bad dataspace");
    std::vector<uint64_t> dims_of;
    switch (H5Sget_simple_extent_type(space.get())) {
      case H5S_SCALAR:
        break;
      case H5S_SIMPLE: {
        const int rank = H5Sget_simple_extent_ndims(space.get());
        if (rank < 0 || rank > H5S_MAX_RANK) {
          return Fail(StatusCode::kCorrupt, where_, path, "bad dataspace");
        }
        if (static_cast<uint64_t>(rank) > options_.max_rank) {
          return LimitExceeded(where_ + ": " + Quote(path) + ": rank " + Num(rank) +
                               " exceeds the limit of " + Num(options_.max_rank));
        }
        std::vector<hsize_t> dims(static_cast<size_t>(rank));
        if (H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0) {
          return Fail(StatusCode::kCorrupt, where_, path, "bad dataspace");
        }
        for (hsize_t d : dims) dims_of.push_back(d);
        break;
      }
      case H5S_NULL:
        src_.notes_.push_back(Quote(path) + " holds no data (null dataspace): skipped");
        return Status::Ok();
      default:
        return Fail(StatusCode::kCorrupt, where_, path, "bad dataspace");
    }
    Hid type(H5Dget_type(ds));
    if (!type.valid()) return Fail(StatusCode::kCorrupt, where_, path, "bad datatype");
    bool bf16_attr = false;
    if (H5Tget_class(type.get()) == H5T_OPAQUE) {
      MP_ASSIGN_OR_RETURN(auto tag, ReadText(ds, where_, path, "dtype", 64));
      bf16_attr = tag && *tag == "bfloat16";
    }
    std::string description;
    const std::optional<DType> dtype = DTypeOfType(type.get(), bf16_attr, description);
    H5Eclear2(H5E_DEFAULT);
    if (!dtype) {
      names_.erase(name);
      src_.notes_.push_back(Quote(path) + " holds " + description +
                            ", which modelport does not carry: skipped");
      return Status::Ok();
    }
    auto info = TensorInfo::Make(name, *dtype, Shape(std::move(dims_of)));
    if (!info.ok()) return info.error().WithContext(where_ + ": " + Quote(path));
    const H5T_order_t order = H5Tget_order(type.get());
    const bool little = order == H5T_ORDER_LE || order == H5T_ORDER_NONE ||
                        H5Tget_class(type.get()) == H5T_OPAQUE || H5Tget_size(type.get()) == 1;

    Entry entry{path, kNoOffset};
    if (layout == H5D_CONTIGUOUS && nfilters == 0 && little && info->byte_size > 0) {
      const haddr_t offset = H5Dget_offset(ds);
      H5Eclear2(H5E_DEFAULT);
      if (offset != HADDR_UNDEF) {
        const hsize_t stored = H5Dget_storage_size(ds);
        const uint64_t total = src_.image_ ? src_.image_->size() : src_.file_->size();
        if (stored != info->byte_size) {
          return Corrupt(where_ + ": " + Quote(path) + ": " + Num(stored) +
                         " bytes stored for a tensor of " + Num(info->byte_size) + " bytes");
        }
        if (offset > total || info->byte_size > total - offset) {
          return Corrupt(where_ + ": " + Quote(path) + ": data [" + Num(offset) + ", " +
                         Num(offset + info->byte_size) + ") is past the end of the file (" +
                         Num(total) + " bytes)");
        }
        entry.offset = offset;
      }
    }
    src_.infos_.push_back(std::move(*info));
    src_.entries_.push_back(std::move(entry));
    return Status::Ok();
  }

  // Any other HDF5 file (the Keras 3 layout): every dataset, depth first, children in name
  // order with numeric names ("vars/0", "vars/2", "vars/10") in numeric order.
  Status IndexTree(hid_t root) {
    std::vector<std::string> paths;
    std::set<haddr_t> visited;
    MP_RETURN_IF_ERROR(Walk(root, "", 0, visited, paths));
    // Names: the writer's map, else canonical Keras names when the config allows, else paths.
    std::map<std::string, std::vector<size_t>> vars_of;  // object path -> indices in `paths`
    for (size_t i = 0; i < paths.size(); ++i) {
      const size_t slash = paths[i].rfind('/');
      if (slash == std::string::npos) continue;
      const std::string parent = paths[i].substr(0, slash);
      if (parent == "vars" || parent.ends_with("/vars")) {
        vars_of[parent == "vars" ? std::string() : parent.substr(0, parent.size() - 5)].push_back(
            i);
      }
    }
    std::vector<std::string> names(paths.size());
    for (const auto& [object, indices] : vars_of) {
      const auto canonical = CanonicalNames(object, indices.size());
      for (size_t k = 0; k < indices.size() && canonical; ++k) {
        names[indices[k]] = (*canonical)[k];
      }
    }
    size_t by_path = 0;
    std::set<std::string> used;
    for (size_t i = 0; i < paths.size(); ++i) {
      auto mapped = name_map_.find(paths[i]);
      if (mapped != name_map_.end()) names[i] = mapped->second;
    }
    for (size_t i = 0; i < paths.size(); ++i) {
      if (names[i].empty() || !used.insert(names[i]).second) {
        names[i] = paths[i];
        ++by_path;
      }
    }
    if (by_path > 0 && name_map_.empty()) {
      src_.notes_.push_back(Num(by_path) +
                            " tensors are named by their HDF5 path (no Keras config gives "
                            "their layer class and variable order)");
    }
    for (size_t i = 0; i < paths.size(); ++i) {
      MP_RETURN_IF_ERROR(AddDataset(src_.file_id_.get(), "", paths[i], paths[i], names[i]));
    }
    return Status::Ok();
  }

  Status Walk(hid_t group, const std::string& path, int depth, std::set<haddr_t>& visited,
              std::vector<std::string>& out) {
    if (depth > kMaxDepth) {
      return LimitExceeded(where_ + ": " + Quote(path) + ": groups nested deeper than " +
                           Num(kMaxDepth));
    }
    H5G_info_t ginfo;
    if (H5Gget_info(group, &ginfo) < 0) {
      return Fail(StatusCode::kCorrupt, where_, path.empty() ? "/" : path, "cannot list group");
    }
    if (ginfo.nlinks > options_.max_tensors) {
      return LimitExceeded(where_ + ": " + Quote(path.empty() ? "/" : path) + ": " +
                           Num(ginfo.nlinks) + " links, more than the limit of " +
                           Num(options_.max_tensors));
    }
    std::vector<std::string> children;
    for (hsize_t i = 0; i < ginfo.nlinks; ++i) {
      const ssize_t len =
          H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
      if (len < 0) return Fail(StatusCode::kCorrupt, where_, path, "cannot list group");
      if (static_cast<uint64_t>(len) > options_.max_name_bytes) {
        return LimitExceeded(where_ + ": " + Quote(path) + ": a link name of " + Num(len) +
                             " bytes exceeds the limit of " + Num(options_.max_name_bytes));
      }
      std::string name(static_cast<size_t>(len) + 1, '\0');
      if (H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                             H5P_DEFAULT) < 0) {
        return Fail(StatusCode::kCorrupt, where_, path, "cannot list group");
      }
      name.resize(static_cast<size_t>(len));
      children.push_back(std::move(name));
    }
    std::stable_sort(children.begin(), children.end(),
                     [](const std::string& a, const std::string& b) {
                       const bool ia = IsIndex(a), ib = IsIndex(b);
                       if (ia != ib) return ia;
                       if (ia) return std::stoul(a) < std::stoul(b);
                       return a < b;
                     });
    for (const std::string& child : children) {
      const std::string child_path = JoinPath(path, child);
      MP_ASSIGN_OR_RETURN(Hid obj, OpenLink(group, where_, path, child, options_));
      H5O_info_t oinfo;
      if (H5Oget_info2(obj.get(), &oinfo, H5O_INFO_BASIC) < 0) {
        return Fail(StatusCode::kCorrupt, where_, child_path, "cannot read the object header");
      }
      if (!visited.insert(oinfo.addr).second) {
        src_.notes_.push_back(Quote(child_path) + " links to an object seen before: skipped");
        continue;
      }
      if (++objects_ > options_.max_tensors + 1000) {
        return LimitExceeded(where_ + ": more than " + Num(options_.max_tensors + 1000) +
                             " objects");
      }
      if (oinfo.type == H5O_TYPE_GROUP) {
        MP_RETURN_IF_ERROR(Walk(obj.get(), child_path, depth + 1, visited, out));
      } else if (oinfo.type == H5O_TYPE_DATASET) {
        out.push_back(child_path);
      }
    }
    return Status::Ok();
  }

  // Canonical names of the `count` variables of the Keras 3 object at `object`
  // ("layers/dense", "layers/lstm/cell"), when the config gives its class and its order is
  // known.
  std::optional<std::vector<std::string>> CanonicalNames(const std::string& object,
                                                         size_t count) const {
    const std::vector<std::string> parts = SplitPath(object);
    bool cell = false;
    std::string layer;
    if (parts.size() >= 2 && parts[parts.size() - 2] == "layers") {
      layer = parts.back();
    } else if (parts.size() >= 3 && parts.back() == "cell" && parts[parts.size() - 3] == "layers") {
      layer = parts[parts.size() - 2];
      cell = true;
    } else {
      return std::nullopt;
    }
    auto it = layers_.find(layer);
    if (it == layers_.end()) return std::nullopt;
    const Json& layer_json = *it->second;
    const std::string cls = layer_json["class_name"].get<std::string>();
    const Json* cfg = layer_json.contains("config") && layer_json["config"].is_object()
                          ? &layer_json["config"]
                          : nullptr;
    auto flag = [&](const char* key) {
      if (cfg == nullptr) return true;
      auto f = cfg->find(key);
      return f == cfg->end() || !f->is_boolean() || f->get<bool>();
    };
    std::vector<std::string> order;
    bool exact = false;
    std::string prefix = layer;
    if (cell) {
      if (cls == "LSTM") {
        prefix += "/lstm_cell";
      } else if (cls == "GRU") {
        prefix += "/gru_cell";
      } else if (cls == "SimpleRNN") {
        prefix += "/simple_rnn_cell";
      } else {
        return std::nullopt;
      }
      order = {"kernel", "recurrent_kernel", "bias"};
    } else if (cls == "Dense" || cls.starts_with("Conv") || cls.starts_with("Convolution")) {
      order = {"kernel", "bias"};
    } else if (cls.starts_with("DepthwiseConv")) {
      order = {"depthwise_kernel", "bias"};
    } else if (cls.starts_with("SeparableConv")) {
      order = {"depthwise_kernel", "pointwise_kernel", "bias"};
    } else if (cls == "Embedding") {
      order = {"embeddings"};
    } else if (cls == "BatchNormalization" || cls == "LayerNormalization") {
      if (flag("scale")) order.push_back("gamma");
      if (flag("center")) order.push_back("beta");
      if (cls == "BatchNormalization") {
        order.push_back("moving_mean");
        order.push_back("moving_variance");
      }
      exact = true;
    } else {
      return std::nullopt;
    }
    if (count > order.size() || (exact && count != order.size())) return std::nullopt;
    std::vector<std::string> names;
    for (size_t i = 0; i < count; ++i) names.push_back(prefix + "/" + order[i]);
    return names;
  }

  H5Source& src_;
  const ReadOptions& options_;
  const std::string where_;
  const Json* config_;
  std::map<std::string, const Json*> layers_;
  std::map<std::string, std::string> name_map_;
  std::set<std::string> names_;
  uint64_t objects_ = 0;
  int config_notes_ = 0;
};

Result<TensorView> H5Source::Load(size_t index) const {
  if (index >= infos_.size()) {
    return InvalidArgument(name_ + ": tensor index " + Num(index) + " out of range");
  }
  const TensorInfo& info = infos_[index];
  const Entry& entry = entries_[index];
  const std::string where = name_ + ": tensor " + Quote(info.name);
  if (entry.offset != kNoOffset) {
    std::shared_ptr<Buffer> bytes;
    if (image_) {
      bytes = image_->Slice(entry.offset, info.byte_size);
    } else {
      auto read = file_->Read(entry.offset, info.byte_size);
      if (!read.ok()) return read.error().WithContext("tensor " + Quote(info.name));
      bytes = std::move(*read);
    }
    MP_ASSIGN_OR_RETURN(auto aligned, AlignedFor(info.dtype, std::move(bytes)));
    return TensorView{info, std::move(aligned)};
  }
  MP_ASSIGN_OR_RETURN(auto buf, Buffer::Allocate(info.byte_size));
  if (info.byte_size > 0) {
    H5Lock lock;
    ReadOptions options;
    MP_ASSIGN_OR_RETURN(Hid ds, OpenPath(file_id_.get(), where, entry.path, options));
    Hid type(H5Dget_type(ds.get()));
    if (!type.valid()) return Fail(StatusCode::kCorrupt, where, entry.path, "bad datatype");
    Hid mem(H5Tcopy(type.get()));
    if (!mem.valid()) return Fail(StatusCode::kCorrupt, where, entry.path, "bad datatype");
    const H5T_class_t cls = H5Tget_class(type.get());
    if ((cls == H5T_INTEGER || cls == H5T_FLOAT) && H5Tget_order(type.get()) != H5T_ORDER_LE &&
        H5Tset_order(mem.get(), H5T_ORDER_LE) < 0) {
      return Fail(StatusCode::kCorrupt, where, entry.path, "bad datatype");
    }
    if (H5Tget_size(mem.get()) != ElementSize(info.dtype)) {
      return Corrupt(where + ": " + Quote(entry.path) + ": datatype changed since open");
    }
    if (H5Dread(ds.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf->mutable_data()) < 0) {
      return Fail(StatusCode::kCorrupt, where, entry.path, "cannot read the data");
    }
  }
  return TensorView{info, std::move(buf)};
}

std::atomic<uint64_t> g_image_counter{0};

Result<std::unique_ptr<ModelSource>> OpenImpl(std::shared_ptr<InputFile> file,
                                              std::shared_ptr<Buffer> image,
                                              const std::string& name, const Json* config,
                                              const Json& extra_metadata,
                                              std::vector<std::string> extra_notes,
                                              const ReadOptions& options) {
  std::unique_ptr<H5Source> src(new H5Source());
  src->name_ = name;
  src->file_ = std::move(file);
  src->image_ = std::move(image);
  const uint64_t size = src->image_ ? src->image_->size() : src->file_->size();
  if (size < kHdf5Signature.size()) {
    return Corrupt(name + ": not an HDF5 file (" + Num(size) + " bytes, no signature)");
  }
  H5Lock lock;
  if (src->image_) {
    // HDF5's core driver reads the image from the access property list, which copies it (one
    // more copy of the member's bytes while it is open; tensors still come zero-copy from the
    // member, by dataset offset). H5LTopen_file_image would read it in place but leaks 72 bytes
    // per call in libhdf5 1.10.8, which LeakSanitizer rightly fails. The name is never opened.
    Hid fapl(H5Pcreate(H5P_FILE_ACCESS));
    if (!fapl.valid() || H5Pset_fapl_core(fapl.get(), 1 << 20, /*backing_store=*/0) < 0 ||
        H5Pset_file_image(fapl.get(), const_cast<uint8_t*>(src->image_->data()),
                          src->image_->size()) < 0) {
      return Fail(StatusCode::kIoError, name, "", "cannot set up an in-memory HDF5 image");
    }
    const std::string image_name = "modelport-image-" + Num(g_image_counter.fetch_add(1));
    src->file_id_ = Hid(H5Fopen(image_name.c_str(), H5F_ACC_RDONLY, fapl.get()));
  } else {
    Hid fapl(H5Pcreate(H5P_FILE_ACCESS));
    if (!fapl.valid() || H5Pset_fapl_sec2(fapl.get()) < 0) {
      return Fail(StatusCode::kIoError, name, "", "cannot set up file access");
    }
    src->file_id_ = Hid(H5Fopen(src->file_->path().c_str(), H5F_ACC_RDONLY, fapl.get()));
    if (src->file_id_.valid()) {
      // The offsets HDF5 reports must be offsets of the file modelport mapped.
      void* handle = nullptr;
      struct stat st {};
      if (H5Fget_vfd_handle(src->file_id_.get(), fapl.get(), &handle) < 0 || handle == nullptr ||
          ::fstat(*static_cast<int*>(handle), &st) != 0 ||
          static_cast<uint64_t>(st.st_dev) != src->file_->device() ||
          static_cast<uint64_t>(st.st_ino) != src->file_->inode()) {
        return Fail(StatusCode::kIoError, name, "", "the file changed while it was opened", false);
      }
    }
  }
  if (!src->file_id_.valid()) {
    return Fail(StatusCode::kCorrupt, name, "", "not a readable HDF5 file");
  }
  for (const auto& [k, v] : extra_metadata.items()) src->metadata_[k] = v;
  src->notes_ = std::move(extra_notes);
  Indexer indexer(*src, options, config);
  MP_RETURN_IF_ERROR(indexer.Run());
  return std::unique_ptr<ModelSource>(std::move(src));
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// The HDF5 file type of `dtype` as modelport writes it (little-endian, h5py's conventions);
/// an invalid Hid for dtypes the format cannot carry.
Hid FileType(DType dtype) {
  hid_t base = -1;
  switch (dtype) {
    case DType::kU8:
      base = H5T_STD_U8LE;
      break;
    case DType::kI8:
      base = H5T_STD_I8LE;
      break;
    case DType::kU16:
      base = H5T_STD_U16LE;
      break;
    case DType::kI16:
      base = H5T_STD_I16LE;
      break;
    case DType::kU32:
      base = H5T_STD_U32LE;
      break;
    case DType::kI32:
      base = H5T_STD_I32LE;
      break;
    case DType::kU64:
      base = H5T_STD_U64LE;
      break;
    case DType::kI64:
      base = H5T_STD_I64LE;
      break;
    case DType::kF32:
      base = H5T_IEEE_F32LE;
      break;
    case DType::kF64:
      base = H5T_IEEE_F64LE;
      break;
    case DType::kF16: {
      // As h5py builds float16: IEEE binary16 little-endian.
      Hid t(H5Tcopy(H5T_IEEE_F32LE));
      if (H5Tset_fields(t.get(), 15, 10, 5, 0, 10) < 0 || H5Tset_size(t.get(), 2) < 0 ||
          H5Tset_ebias(t.get(), 15) < 0) {
        return Hid();
      }
      return t;
    }
    case DType::kBF16:
      // As Keras 3 stores bfloat16: 2-byte opaque data, with attr dtype = "bfloat16".
      return Hid(H5Tcreate(H5T_OPAQUE, 2));
    case DType::kBool: {
      Hid t(H5Tenum_create(H5T_NATIVE_INT8));
      int8_t f = 0, v = 1;
      if (H5Tenum_insert(t.get(), "FALSE", &f) < 0 || H5Tenum_insert(t.get(), "TRUE", &v) < 0) {
        return Hid();
      }
      return t;
    }
    default:
      return Hid();
  }
  return Hid(H5Tcopy(base));
}

/// Bob Jenkins's lookup3 hashlittle(), the checksum of HDF5 metadata (H5checksum.c).
uint32_t Lookup3(const uint8_t* k, size_t length, uint32_t initval = 0) {
  auto rot = [](uint32_t x, int r) { return (x << r) | (x >> (32 - r)); };
  uint32_t a, b, c;
  a = b = c = 0xdeadbeef + static_cast<uint32_t>(length) + initval;
  auto word = [&](size_t i, size_t n) {
    uint32_t w = 0;
    for (size_t j = 0; j < n; ++j) w |= static_cast<uint32_t>(k[i + j]) << (8 * j);
    return w;
  };
  // lookup3's mix() and final(): rounds of x -= y, x ^= rot(y, r), y += z, and of
  // x ^= y, x -= rot(y, r).
  auto mix = [&](uint32_t& x, uint32_t& y, uint32_t& z, int r) {
    x -= y;
    x ^= rot(y, r);
    y += z;
  };
  auto fin = [&](uint32_t& x, uint32_t& y, int r) {
    x ^= y;
    x -= rot(y, r);
  };
  while (length > 12) {
    a += word(0, 4);
    b += word(4, 4);
    c += word(8, 4);
    mix(a, c, b, 4);
    mix(b, a, c, 6);
    mix(c, b, a, 8);
    mix(a, c, b, 16);
    mix(b, a, c, 19);
    mix(c, b, a, 4);
    length -= 12;
    k += 12;
  }
  if (length == 0) return c;
  a += word(0, std::min<size_t>(length, 4));
  if (length > 4) b += word(4, std::min<size_t>(length - 4, 4));
  if (length > 8) c += word(8, length - 8);
  fin(c, b, 14);
  fin(a, c, 11);
  fin(b, a, 25);
  fin(c, b, 16);
  fin(a, c, 4);
  fin(b, a, 14);
  fin(c, b, 24);
  return c;
}

/// libhdf5 1.10's H5Fget_file_image updates a version 2/3 superblock (its EOF field) without
/// recomputing the superblock's checksum; this recomputes it.
void FixSuperblockChecksum(std::vector<uint8_t>& image) {
  if (image.size() < 12 || (image[8] != 2 && image[8] != 3)) return;
  const size_t offsets = image[9];
  const size_t end = 12 + 4 * offsets;  // signature..flags, then 4 addresses
  if (image.size() < end + 4) return;
  const uint32_t sum = Lookup3(image.data(), end);
  for (int i = 0; i < 4; ++i) image[end + i] = static_cast<uint8_t>(sum >> (8 * i));
}

/// The file's ordered list of groups and datasets, built before any HDF5 call.
struct Placement {
  std::string group;    ///< path of the group holding the dataset
  std::string dataset;  ///< link name in that group (may hold '/' for Keras 2 weight names)
};

Status CheckName(const std::string& name, const std::string& where) {
  for (const std::string& part : SplitPath(name)) {
    if (part.empty() || part == ".") {
      return InvalidArgument(where + ": tensor " + Quote(name) +
                             ": an HDF5 path needs non-empty names between '/' (not '.')");
    }
  }
  return Status::Ok();
}

// Position of a Keras variable in its layer's variable list (see the known orders in keras.h).
std::optional<int> KnownRank(std::string_view s) {
  static constexpr std::string_view kOrder[] = {"depthwise_kernel",
                                                "pointwise_kernel",
                                                "kernel",
                                                "recurrent_kernel",
                                                "gamma",
                                                "beta",
                                                "bias",
                                                "embeddings",
                                                "moving_mean",
                                                "moving_variance"};
  for (size_t i = 0; i < std::size(kOrder); ++i) {
    if (kOrder[i] == s) return static_cast<int>(i);
  }
  return std::nullopt;
}

/// Keras 3 placement: canonical "<layer>/<weight>" names go to layers/<layer>/vars/<i> (RNN cell
/// weights "<layer>/<x>_cell/<w>" to layers/<layer>/cell/vars/<i>) in Keras's variable order;
/// names that already are such paths stay; any other name goes to its first component's layer.
Result<std::vector<Placement>> PlaceKeras3(const ModelSource& source, const std::string& where,
                                           std::vector<std::string>& groups) {
  const auto& tensors = source.tensors();
  std::vector<std::string> object_of(tensors.size());
  std::vector<std::string> short_of(tensors.size());
  std::vector<Placement> out(tensors.size());
  std::vector<std::string> objects;  // in first-appearance order
  std::set<std::string> explicit_paths;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string& name = tensors[i].name;
    MP_RETURN_IF_ERROR(CheckName(name, where));
    const std::vector<std::string> parts = SplitPath(name);
    if (parts.size() >= 2 && IsIndex(parts.back()) && parts[parts.size() - 2] == "vars") {
      const size_t slash = name.rfind('/');
      out[i] = {name.substr(0, slash), parts.back()};
      explicit_paths.insert(name);
      continue;
    }
    std::string object = "layers/" + parts[0];
    if (parts.size() == 3 && parts[1].ends_with("cell")) object += "/cell";
    object_of[i] = object;
    short_of[i] = parts.back();
    if (std::find(objects.begin(), objects.end(), object) == objects.end()) {
      objects.push_back(object);
    }
  }
  for (const std::string& object : objects) {
    std::vector<size_t> members;
    bool all_known = true;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (object_of[i] != object) continue;
      members.push_back(i);
      all_known = all_known && KnownRank(short_of[i]).has_value();
    }
    if (all_known) {
      std::stable_sort(members.begin(), members.end(), [&](size_t a, size_t b) {
        return *KnownRank(short_of[a]) < *KnownRank(short_of[b]);
      });
    }
    for (size_t k = 0; k < members.size(); ++k) {
      out[members[k]] = {object + "/vars", Num(k)};
      if (explicit_paths.count(object + "/vars/" + Num(k))) {
        return InvalidArgument(where + ": tensor " + Quote(tensors[members[k]].name) +
                               " and a tensor named " + Quote(object + "/vars/" + Num(k)) +
                               " would share one dataset");
      }
    }
  }
  // Keras gives the model and every layer a "vars" group, even an empty one.
  groups.push_back("vars");
  for (const std::string& object : objects) {
    const std::vector<std::string> parts = SplitPath(object);
    groups.push_back(parts[0] + "/" + parts[1] + "/vars");
  }
  for (const Placement& p : out) groups.push_back(p.group);
  return out;
}

/// Keras 2 save_weights placement: tensor "<layer>/<rest>" is weight "<layer>/<rest>:0" of
/// layer group "<layer>", at "<layer>/<layer>/<rest>:0".
Result<std::vector<Placement>> PlaceKeras2(
    const ModelSource& source, const std::string& where, std::vector<std::string>& layers,
    std::map<std::string, std::vector<std::string>>& weights) {
  std::vector<Placement> out;
  for (const TensorInfo& t : source.tensors()) {
    MP_RETURN_IF_ERROR(CheckName(t.name, where));
    const std::string layer = SplitPath(t.name).front();
    if (!weights.count(layer)) layers.push_back(layer);
    weights[layer].push_back(t.name + ":0");
    out.push_back({layer, t.name + ":0"});
  }
  return out;
}

/// Creates the groups of `path` that do not exist yet, with modelport's property lists.
class FileBuilder {
 public:
  FileBuilder(std::string where) : where_(std::move(where)) {}

  Status Create() {
    fapl_ = Hid(H5Pcreate(H5P_FILE_ACCESS));
    lcpl_ = Hid(H5Pcreate(H5P_LINK_CREATE));
    gcpl_ = Hid(H5Pcreate(H5P_GROUP_CREATE));
    dcpl_ = Hid(H5Pcreate(H5P_DATASET_CREATE));
    acpl_ = Hid(H5Pcreate(H5P_ATTRIBUTE_CREATE));
    // In memory (no backing store); the 1.8 format: checksummed superblock and object headers,
    // compact groups. No timestamps, so equal input gives equal bytes.
    if (!fapl_.valid() || !lcpl_.valid() || !gcpl_.valid() || !dcpl_.valid() || !acpl_.valid() ||
        H5Pset_fapl_core(fapl_.get(), 1 << 20, 0) < 0 ||
        H5Pset_libver_bounds(fapl_.get(), H5F_LIBVER_V18, H5F_LIBVER_V18) < 0 ||
        H5Pset_char_encoding(lcpl_.get(), H5T_CSET_UTF8) < 0 ||
        H5Pset_char_encoding(acpl_.get(), H5T_CSET_UTF8) < 0 ||
        H5Pset_obj_track_times(gcpl_.get(), 0) < 0 || H5Pset_obj_track_times(dcpl_.get(), 0) < 0 ||
        // No room reserved for attributes in dataset headers, and no 2 KiB aggregation blocks
        // (their unused tails would stay in the image): small files stay small.
        H5Pset_dset_no_attrs_hint(dcpl_.get(), 1) < 0 ||
        H5Pset_meta_block_size(fapl_.get(), 0) < 0 ||
        H5Pset_small_data_block_size(fapl_.get(), 0) < 0 ||
        // Every allocation on an 8-byte boundary: tensor data is naturally aligned for
        // zero-copy views.
        H5Pset_alignment(fapl_.get(), 1, 8) < 0) {
      return Fail(StatusCode::kInternal, where_, "", "cannot set up HDF5 properties");
    }
    // Small object headers: most groups hold one or two links (HDF5 reserves room for 4).
    Hid fcpl(H5Pcreate(H5P_FILE_CREATE));
    if (!fcpl.valid() || H5Pset_obj_track_times(fcpl.get(), 0) < 0 ||
        H5Pset_est_link_info(gcpl_.get(), 1, 8) < 0 || H5Pset_est_link_info(fcpl.get(), 2, 8) < 0) {
      return Fail(StatusCode::kInternal, where_, "", "cannot set up HDF5 properties");
    }
    const std::string name = "modelport-image-" + Num(g_image_counter.fetch_add(1)) + ".h5";
    file_ = Hid(H5Fcreate(name.c_str(), H5F_ACC_EXCL, fcpl.get(), fapl_.get()));
    if (!file_.valid()) return Fail(StatusCode::kIoError, where_, "", "cannot create the file");
    return Status::Ok();
  }

  hid_t root() const { return file_.get(); }

  Result<hid_t> Group(const std::string& path) {
    if (path.empty()) return file_.get();
    auto it = groups_.find(path);
    if (it != groups_.end()) return it->second.get();
    const size_t slash = path.rfind('/');
    MP_ASSIGN_OR_RETURN(hid_t parent,
                        Group(slash == std::string::npos ? "" : path.substr(0, slash)));
    const std::string leaf = slash == std::string::npos ? path : path.substr(slash + 1);
    Hid g(H5Gcreate2(parent, leaf.c_str(), lcpl_.get(), gcpl_.get(), H5P_DEFAULT));
    if (!g.valid()) return Fail(StatusCode::kInvalidArgument, where_, path, "cannot create group");
    const hid_t id = g.get();
    groups_.emplace(path, std::move(g));
    return id;
  }

  /// A dataset at `group`/`name` (intermediate groups of `name` created) with `bytes`.
  Status Dataset(const std::string& group, const std::string& name, const TensorInfo& info,
                 std::span<const uint8_t> bytes) {
    const size_t slash = name.rfind('/');
    const std::string parent =
        slash == std::string::npos ? group : JoinPath(group, name.substr(0, slash));
    const std::string leaf = slash == std::string::npos ? name : name.substr(slash + 1);
    const std::string path = JoinPath(group, name);
    MP_ASSIGN_OR_RETURN(hid_t g, Group(parent));
    Hid type = FileType(info.dtype);
    if (!type.valid()) return Fail(StatusCode::kInternal, where_, path, "no HDF5 type");
    std::vector<hsize_t> dims(info.shape.dims().begin(), info.shape.dims().end());
    Hid space(dims.empty() ? H5Screate(H5S_SCALAR)
                           : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    if (!space.valid()) return Fail(StatusCode::kInvalidArgument, where_, path, "bad shape");
    Hid ds(H5Dcreate2(g, leaf.c_str(), type.get(), space.get(), lcpl_.get(), dcpl_.get(),
                      H5P_DEFAULT));
    if (!ds.valid()) {
      return Fail(StatusCode::kInvalidArgument, where_, path, "cannot create dataset");
    }
    if (!bytes.empty() &&
        H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()) < 0) {
      return Fail(StatusCode::kIoError, where_, path, "cannot write data");
    }
    if (info.dtype == DType::kBF16) return Text(ds.get(), path, "dtype", "bfloat16", true);
    return Status::Ok();
  }

  /// A scalar fixed-length text attribute (UTF-8 when `utf8`, else ASCII as numpy bytes).
  Status Text(hid_t obj, const std::string& path, const std::string& name, std::string_view text,
              bool utf8) {
    return Strings(obj, path, name, {std::string(text)}, utf8, /*scalar=*/true);
  }

  /// A fixed-length, NUL-padded string array attribute (numpy 'S' as h5py stores it); an empty
  /// list becomes an empty float64 array, as Keras and h5py write [].
  Status Strings(hid_t obj, const std::string& path, const std::string& name,
                 const std::vector<std::string>& values, bool utf8, bool scalar) {
    size_t width = 1;
    for (const auto& v : values) width = std::max(width, v.size());
    const hsize_t n = values.size();
    Hid type(values.empty() ? H5Tcopy(H5T_IEEE_F64LE) : H5Tcopy(H5T_C_S1));
    if (!type.valid() ||
        (!values.empty() &&
         (H5Tset_size(type.get(), width) < 0 || H5Tset_strpad(type.get(), H5T_STR_NULLPAD) < 0 ||
          H5Tset_cset(type.get(), utf8 ? H5T_CSET_UTF8 : H5T_CSET_ASCII) < 0))) {
      return Fail(StatusCode::kInternal, where_, path, "bad string type");
    }
    Hid space(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr));
    std::vector<char> buf(std::max<size_t>(1, values.size() * width), '\0');
    for (size_t i = 0; i < values.size(); ++i) {
      std::memcpy(buf.data() + i * width, values[i].data(), values[i].size());
    }
    Hid attr(H5Acreate2(obj, name.c_str(), type.get(), space.get(), acpl_.get(), H5P_DEFAULT));
    if (!attr.valid() || H5Awrite(attr.get(), type.get(), buf.data()) < 0) {
      return Fail(StatusCode::kInvalidArgument, where_, path,
                  "cannot write attribute " + Quote(name));
    }
    return Status::Ok();
  }

  /// Keras's save_attributes_to_hdf5_group: one attribute, or name0, name1, ... when the array
  /// would pass the object header limit.
  Status ChunkedStrings(hid_t obj, const std::string& path, const std::string& name,
                        const std::vector<std::string>& values) {
    size_t width = 1;
    for (const auto& v : values) width = std::max(width, v.size());
    size_t chunks = 1;
    auto largest = [&](size_t k) { return ((values.size() + k - 1) / k) * width; };
    while (largest(chunks) > kObjectHeaderLimit && chunks < values.size()) ++chunks;
    if (chunks == 1) return Strings(obj, path, name, values, false, false);
    // numpy.array_split: the first size % k chunks hold one more.
    size_t at = 0;
    for (size_t k = 0; k < chunks; ++k) {
      const size_t take = values.size() / chunks + (k < values.size() % chunks ? 1 : 0);
      std::vector<std::string> part(values.begin() + at, values.begin() + at + take);
      MP_RETURN_IF_ERROR(Strings(obj, path, name + Num(k), part, false, false));
      at += take;
    }
    return Status::Ok();
  }

  /// Closes everything and returns the file's bytes.
  Result<std::vector<uint8_t>> Finish() {
    groups_.clear();
    if (H5Fflush(file_.get(), H5F_SCOPE_GLOBAL) < 0) {
      return Fail(StatusCode::kIoError, where_, "", "cannot flush the file");
    }
    const ssize_t size = H5Fget_file_image(file_.get(), nullptr, 0);
    if (size < 0) return Fail(StatusCode::kIoError, where_, "", "cannot get the file image");
    std::vector<uint8_t> image(static_cast<size_t>(size));
    if (H5Fget_file_image(file_.get(), image.data(), image.size()) != size) {
      return Fail(StatusCode::kIoError, where_, "", "cannot get the file image");
    }
    file_.Reset();
    FixSuperblockChecksum(image);
    return image;
  }

 private:
  std::string where_;
  Hid fapl_, lcpl_, gcpl_, dcpl_, acpl_;
  Hid file_;
  std::map<std::string, Hid> groups_;
};

/// `metadata` without `skip` keys, as JSON text (empty when nothing remains).
std::string RemainingMetadata(const Json& metadata, std::initializer_list<std::string_view> skip) {
  Json rest = Json::object();
  for (const auto& [k, v] : metadata.items()) {
    if (std::find(skip.begin(), skip.end(), k) == skip.end()) rest[k] = v;
  }
  return rest.empty() ? std::string() : rest.dump();
}

std::string MetadataString(const Json& metadata, std::string_view key, std::string_view fallback) {
  auto it = metadata.find(key);
  return it != metadata.end() && it->is_string() ? it->get<std::string>() : std::string(fallback);
}

/// The whole H5 file for `source` in memory: Keras 3 layout when `keras3`, else Keras 2
/// save_weights. `skip_metadata`: keys kept elsewhere (a .keras archive's own files).
Result<std::vector<uint8_t>> BuildH5(const ModelSource& source, bool keras3,
                                     const std::string& where,
                                     std::initializer_list<std::string_view> skip_metadata) {
  const auto& tensors = source.tensors();
  for (const TensorInfo& t : tensors) {
    switch (t.dtype) {
      case DType::kBool:
      case DType::kU8:
      case DType::kI8:
      case DType::kU16:
      case DType::kI16:
      case DType::kU32:
      case DType::kI32:
      case DType::kU64:
      case DType::kI64:
      case DType::kF16:
      case DType::kBF16:
      case DType::kF32:
      case DType::kF64:
        break;
      default:
        return Unsupported(where + ": tensor " + Quote(t.name) + ": Keras HDF5 cannot carry " +
                           std::string(DTypeName(t.dtype)));
    }
  }
  std::vector<Placement> placed;
  std::vector<std::string> groups;
  std::vector<std::string> layers;
  std::map<std::string, std::vector<std::string>> weights;
  if (keras3) {
    MP_ASSIGN_OR_RETURN(placed, PlaceKeras3(source, where, groups));
  } else {
    MP_ASSIGN_OR_RETURN(placed, PlaceKeras2(source, where, layers, weights));
  }

  H5Lock lock;
  FileBuilder b(where);
  MP_RETURN_IF_ERROR(b.Create());
  const Json& metadata = source.metadata();
  std::string extra;
  if (keras3) {
    extra = RemainingMetadata(metadata, skip_metadata);
    for (const std::string& g : groups) MP_RETURN_IF_ERROR(b.Group(g).status());
    if (!tensors.empty()) {
      Json names = Json::object();
      for (size_t i = 0; i < tensors.size(); ++i) {
        names[JoinPath(placed[i].group, placed[i].dataset)] = tensors[i].name;
      }
      MP_RETURN_IF_ERROR(b.Text(b.root(), "/", std::string(kNamesAttr), names.dump(), true));
    }
  } else {
    extra = RemainingMetadata(metadata, {kKerasVersionKey, kBackendKey});
    MP_RETURN_IF_ERROR(b.ChunkedStrings(b.root(), "/", "layer_names", layers));
    MP_RETURN_IF_ERROR(b.Text(b.root(), "/", "backend",
                              MetadataString(metadata, kBackendKey, "tensorflow"), false));
    MP_RETURN_IF_ERROR(b.Text(b.root(), "/", "keras_version",
                              MetadataString(metadata, kKerasVersionKey, kDefaultKeras2Version),
                              false));
    for (const std::string& layer : layers) {
      MP_ASSIGN_OR_RETURN(hid_t g, b.Group(layer));
      MP_RETURN_IF_ERROR(b.ChunkedStrings(g, layer, "weight_names", weights[layer]));
    }
  }
  if (!extra.empty()) {
    MP_RETURN_IF_ERROR(b.Text(b.root(), "/", std::string(kMetadataAttr), extra, true));
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto view = source.Load(i);
    if (!view.ok()) return view.error().WithContext(where + ": tensor " + Quote(tensors[i].name));
    if (view->data->size() != tensors[i].byte_size) {
      return Internal(where + ": tensor " + Quote(tensors[i].name) + ": source gave " +
                      Num(view->data->size()) + " bytes for " + Num(tensors[i].byte_size));
    }
    MP_RETURN_IF_ERROR(b.Dataset(placed[i].group, placed[i].dataset, tensors[i], view->bytes()));
  }
  return b.Finish();
}

Status CheckOverwrite(const std::string& path, const WriteOptions& options) {
  std::error_code ec;
  if (options.no_overwrite && fs::exists(path, ec)) return AlreadyExists(path + ": exists");
  return Status::Ok();
}

/// A Keras config from metadata: the object itself or its JSON text.
std::optional<Json> ConfigOf(const Json& metadata) {
  auto it = metadata.find(kConfigKey);
  if (it == metadata.end()) return std::nullopt;
  if (it->is_object()) return *it;
  if (it->is_string()) {
    Json parsed = Json::parse(it->get<std::string>(), nullptr, false);
    if (parsed.is_object()) return parsed;
  }
  return std::nullopt;
}

}  // namespace

bool DetectH5(std::span<const uint8_t> prefix, uint64_t /*file_size*/) {
  return prefix.size() >= kHdf5Signature.size() &&
         std::memcmp(prefix.data(), kHdf5Signature.data(), kHdf5Signature.size()) == 0;
}

bool DetectKeras(std::span<const uint8_t> prefix, uint64_t /*file_size*/) {
  if (prefix.size() < 30 || std::memcmp(prefix.data(), "PK\x03\x04", 4) != 0) return false;
  const size_t name_len = prefix[26] | (prefix[27] << 8);
  if (prefix.size() < 30 + name_len) return false;
  const std::string_view name(reinterpret_cast<const char*>(prefix.data()) + 30, name_len);
  return name == kMetadataMember || name == kConfigMember || name == kWeightsMember;
}

Result<std::unique_ptr<ModelSource>> OpenH5(const std::string& path, const ReadOptions& options) {
  MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path, options.io_mode));
  std::shared_ptr<Buffer> image;
  if (options.io_mode == IoMode::kMmap) {
    // HDF5 reads the mapping itself: the file is opened once, and offsets are into these bytes.
    MP_ASSIGN_OR_RETURN(image, file->Read(0, file->size()));
  }
  auto source = OpenImpl(image ? nullptr : file, image, path, nullptr, Json::object(), {}, options);
  if (!source.ok()) return source.error();
  static_cast<H5Source*>(source->get())->files_ = {{}, {path}};
  return source;
}

Result<std::unique_ptr<ModelSource>> OpenH5Image(std::shared_ptr<Buffer> image,
                                                 const std::string& name, const Json* config,
                                                 const ReadOptions& options) {
  return OpenImpl(nullptr, std::move(image), name, config, Json::object(), {}, options);
}

Status WriteH5(const ModelSource& source, const std::string& path, const WriteOptions& options) {
  MP_RETURN_IF_ERROR(CheckOverwrite(path, options));
  const bool keras3 = fs::path(path).filename().string().ends_with(".weights.h5");
  MP_ASSIGN_OR_RETURN(auto image, BuildH5(source, keras3, path, {}));
  MP_ASSIGN_OR_RETURN(auto out, AtomicFile::Create(path));
  MP_RETURN_IF_ERROR(out->Write(image.data(), image.size()));
  return out->Commit(options.durable);
}

Result<std::unique_ptr<ModelSource>> OpenKeras(const std::string& path,
                                               const ReadOptions& options) {
  MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path, options.io_mode));
  zip::ReaderOptions zip_options;
  zip_options.max_entries = std::min<uint64_t>(options.max_tensors, 100'000);
  zip_options.max_name_bytes = options.max_name_bytes;
  MP_ASSIGN_OR_RETURN(auto archive, zip::Reader::Open(file, zip_options));
  auto member = [&](std::string_view name) -> Result<std::shared_ptr<Buffer>> {
    auto index = archive->Find(name);
    if (!index) return NotFound(path + ": archive has no " + std::string(name));
    return archive->Read(*index);
  };
  Json metadata = Json::object();
  std::vector<std::string> notes;
  for (auto [member_name, key] :
       {std::pair{kConfigMember, kConfigKey}, std::pair{kMetadataMember, kArchiveMetadataKey}}) {
    auto index = archive->Find(member_name);
    if (!index) {
      notes.push_back("archive has no " + std::string(member_name));
      continue;
    }
    if (archive->entries()[*index].size > options.max_header_bytes) {
      return LimitExceeded(path + ": " + std::string(member_name) + " of " +
                           Num(archive->entries()[*index].size) + " bytes exceeds the limit of " +
                           Num(options.max_header_bytes));
    }
    MP_ASSIGN_OR_RETURN(auto bytes, archive->Read(*index));
    Json parsed = Json::parse(bytes->data(), bytes->data() + bytes->size(), nullptr, false);
    if (!parsed.is_object()) {
      return Corrupt(path + ": " + std::string(member_name) + " is not a JSON object");
    }
    metadata[std::string(key)] = std::move(parsed);
  }
  for (const zip::Entry& e : archive->entries()) {
    if (e.name != kConfigMember && e.name != kMetadataMember && e.name != kWeightsMember) {
      notes.push_back("archive member " + Quote(e.name) + " (" + Num(e.size) +
                      " bytes) is not read");
    }
  }
  auto weights = member(kWeightsMember);
  if (!weights.ok()) {
    return weights.error().code() == StatusCode::kNotFound ? Corrupt(weights.error().message())
                                                           : weights.error();
  }
  const Json* config = metadata.contains(kConfigKey) ? &metadata[kConfigKey] : nullptr;
  auto source = OpenImpl(nullptr, *weights, path + ": " + std::string(kWeightsMember), config,
                         metadata, std::move(notes), options);
  if (!source.ok()) return source.error();
  auto* h5 = static_cast<H5Source*>(source->get());
  h5->format_ = "keras";
  h5->name_ = path;
  h5->files_ = {{}, {path}};
  return source;
}

Status WriteKeras(const ModelSource& source, const std::string& path, const WriteOptions& options) {
  const std::optional<Json> config = ConfigOf(source.metadata());
  if (!config) {
    return Unsupported(path + ": a .keras archive needs the model's Keras config, which this " +
                       std::string(source.format()) +
                       " source lacks; write the weights as .weights.h5 instead");
  }
  MP_RETURN_IF_ERROR(CheckOverwrite(path, options));
  MP_ASSIGN_OR_RETURN(auto image, BuildH5(source, true, path, {kConfigKey, kArchiveMetadataKey}));
  Json meta = Json::object();
  auto it = source.metadata().find(kArchiveMetadataKey);
  if (it != source.metadata().end() && it->is_object()) {
    meta = *it;
  } else if (it != source.metadata().end() && it->is_string()) {
    Json parsed = Json::parse(it->get<std::string>(), nullptr, false);
    if (parsed.is_object()) meta = std::move(parsed);
  }
  if (meta.empty()) meta = Json{{"keras_version", "3.0.0"}};
  const std::string meta_text = meta.dump();
  const std::string config_text = config->dump();
  MP_ASSIGN_OR_RETURN(auto zip, zip::Writer::Create(path));
  auto add = [&](std::string_view name, std::span<const uint8_t> bytes) {
    const std::span<const uint8_t> parts[] = {bytes};
    return zip->AddStored(name, parts, 8);
  };
  auto text = [](const std::string& s) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  MP_RETURN_IF_ERROR(add(kMetadataMember, text(meta_text)));
  MP_RETURN_IF_ERROR(add(kConfigMember, text(config_text)));
  MP_RETURN_IF_ERROR(add(kWeightsMember, image));
  return zip->Finish(options.durable);
}

}  // namespace mp::keras
