#include "modelport/formats/tf/saved_model.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <set>

#include "modelport/formats/tf/proto.h"

namespace mp::tf {
namespace {

namespace fs = std::filesystem;

std::string Quote(std::string_view s) {
  std::string out(1, '\'');
  out += s;
  out += '\'';
  return out;
}

constexpr uint64_t kMaxRank = 256;

bool IsVersionName(const std::string& name) {
  return !name.empty() && name.size() <= 19 &&
         std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

Result<SignatureTensor> ParseTensorInfo(std::span<const uint8_t> bytes) {
  SignatureTensor t;
  Reader r(bytes);
  while (r.left() > 0) {
    MP_ASSIGN_OR_RETURN(Field f, r.Next());
    if (f.number == 1 && f.wire == kWireLen) {
      t.name = AsString(f.bytes);
      t.encoding = "name";
    } else if (f.number == 2 && f.wire == kWireVarint) {
      t.dtype = static_cast<int32_t>(f.value);
    } else if (f.number == 3 && f.wire == kWireLen) {
      t.dims.clear();
      MP_RETURN_IF_ERROR(ParseShapeProto(f.bytes, kMaxRank, &t.dims, &t.unknown_rank));
    } else if (f.number == 4 && f.wire == kWireLen) {
      t.encoding = "coo_sparse";
    } else if (f.number == 5 && f.wire == kWireLen) {
      t.encoding = "composite_tensor";
    }
  }
  return t;
}

// A map<string, Message> entry: key = 1, value = 2.
Result<std::pair<std::string, std::span<const uint8_t>>> ParseMapEntry(
    std::span<const uint8_t> bytes) {
  std::pair<std::string, std::span<const uint8_t>> out;
  Reader r(bytes);
  while (r.left() > 0) {
    MP_ASSIGN_OR_RETURN(Field f, r.Next());
    if (f.number == 1 && f.wire == kWireLen) out.first = AsString(f.bytes);
    if (f.number == 2 && f.wire == kWireLen) out.second = f.bytes;
  }
  return out;
}

Status ParseTensorMap(std::span<const uint8_t> bytes, std::vector<SignatureTensor>* out) {
  MP_ASSIGN_OR_RETURN(auto entry, ParseMapEntry(bytes));
  auto t = ParseTensorInfo(entry.second);
  if (!t) return t.error().WithContext(Quote(entry.first));
  t->key = entry.first;
  out->push_back(std::move(*t));
  return Status::Ok();
}

Result<Signature> ParseSignature(std::span<const uint8_t> bytes) {
  Signature s;
  Reader r(bytes);
  while (r.left() > 0) {
    MP_ASSIGN_OR_RETURN(Field f, r.Next());
    if (f.number == 1 && f.wire == kWireLen) {
      MP_RETURN_IF_ERROR(ParseTensorMap(f.bytes, &s.inputs).WithContext("input"));
    } else if (f.number == 2 && f.wire == kWireLen) {
      MP_RETURN_IF_ERROR(ParseTensorMap(f.bytes, &s.outputs).WithContext("output"));
    } else if (f.number == 3 && f.wire == kWireLen) {
      s.method_name = AsString(f.bytes);
    }
  }
  auto by_key = [](const SignatureTensor& a, const SignatureTensor& b) { return a.key < b.key; };
  std::sort(s.inputs.begin(), s.inputs.end(), by_key);
  std::sort(s.outputs.begin(), s.outputs.end(), by_key);
  return s;
}

Result<MetaGraph> ParseMetaGraph(std::span<const uint8_t> bytes) {
  MetaGraph m;
  Reader r(bytes);
  while (r.left() > 0) {
    MP_ASSIGN_OR_RETURN(Field f, r.Next());
    if (f.wire != kWireLen) continue;
    if (f.number == 1) {
      Reader info(f.bytes);
      while (info.left() > 0) {
        auto inf = info.Next();
        if (!inf) return inf.error().WithContext("meta_info_def");
        if (inf->number == 4 && inf->wire == kWireLen) m.tags.push_back(AsString(inf->bytes));
        if (inf->number == 5 && inf->wire == kWireLen) m.tensorflow_version = AsString(inf->bytes);
      }
    } else if (f.number == 2) {
      m.graph_def_bytes = f.bytes.size();
    } else if (f.number == 5) {
      auto entry = ParseMapEntry(f.bytes);
      if (!entry) return entry.error().WithContext("signature_def");
      auto sig = ParseSignature(entry->second);
      if (!sig) return sig.error().WithContext("signature_def " + Quote(entry->first));
      sig->key = entry->first;
      m.signatures.push_back(std::move(*sig));
    } else if (f.number == 6) {
      Reader a(f.bytes);
      while (a.left() > 0) {
        auto af = a.Next();
        if (!af) return af.error().WithContext("asset_file_def");
        if (af->number == 2 && af->wire == kWireLen) m.asset_files.push_back(AsString(af->bytes));
      }
    } else if (f.number == 7) {
      m.has_object_graph = true;
    }
  }
  std::sort(m.signatures.begin(), m.signatures.end(),
            [](const Signature& a, const Signature& b) { return a.key < b.key; });
  return m;
}

Json TensorJson(const SignatureTensor& t) {
  Json j = Json::object();
  if (!t.name.empty()) j["name"] = t.name;
  if (t.encoding != "name") j["encoding"] = t.encoding;
  j["dtype"] = TfDTypeName(t.dtype);
  if (t.unknown_rank) {
    j["shape"] = nullptr;
  } else {
    j["shape"] = t.dims;
  }
  return j;
}

std::string ShapeText(const SignatureTensor& t) {
  if (t.unknown_rank) return "unknown_rank";
  std::string s = "(";
  for (size_t i = 0; i < t.dims.size(); ++i) {
    s += (i ? ", " : "") + std::to_string(t.dims[i]);
  }
  if (t.dims.size() == 1) s += ",";
  return s + ")";
}

Status CopyFile(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::none, ec);
  if (ec) return IoError(from.string() + ": cannot copy to " + to.string() + ": " + ec.message());
  fs::permissions(to, fs::perms::owner_write, fs::perm_options::add, ec);
  return Status::Ok();
}

Status CopyTree(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  MP_RETURN_IF_ERROR(MakeDirs(to.string()));
  for (const auto& entry : fs::directory_iterator(from, ec)) {
    const auto status = entry.symlink_status(ec);
    if (fs::is_symlink(status)) {
      return Unsafe(entry.path().string() + ": symbolic link in a SavedModel folder; not copied");
    }
    if (fs::is_directory(status)) {
      MP_RETURN_IF_ERROR(CopyTree(entry.path(), to / entry.path().filename()));
    } else if (fs::is_regular_file(status)) {
      MP_RETURN_IF_ERROR(CopyFile(entry.path(), to / entry.path().filename()));
    }
  }
  if (ec) return IoError(from.string() + ": " + ec.message());
  return Status::Ok();
}

}  // namespace

Result<SavedModelInfo> ParseSavedModel(std::span<const uint8_t> bytes) {
  SavedModelInfo info;
  Reader r(bytes);
  while (r.left() > 0) {
    auto f = r.Next();
    if (!f) return f.error().WithContext("SavedModel");
    if (f->number == 1 && f->wire == kWireVarint) {
      info.schema_version = static_cast<int64_t>(f->value);
    } else if (f->number == 2 && f->wire == kWireLen) {
      auto m = ParseMetaGraph(f->bytes);
      if (!m) {
        return m.error().WithContext("meta_graphs[" + std::to_string(info.meta_graphs.size()) +
                                     "]");
      }
      info.meta_graphs.push_back(std::move(*m));
    }
  }
  if (info.meta_graphs.empty()) return Corrupt("SavedModel holds no MetaGraphDef");
  return info;
}

Json SavedModelJson(const SavedModelInfo& info) {
  Json graphs = Json::array();
  for (const MetaGraph& m : info.meta_graphs) {
    Json sigs = Json::object();
    for (const Signature& s : m.signatures) {
      Json in = Json::object(), out = Json::object();
      for (const auto& t : s.inputs) in[t.key] = TensorJson(t);
      for (const auto& t : s.outputs) out[t.key] = TensorJson(t);
      sigs[s.key] = {{"method_name", s.method_name}, {"inputs", in}, {"outputs", out}};
    }
    Json g = {{"tags", m.tags}, {"signatures", sigs}, {"asset_files", m.asset_files}};
    if (!m.tensorflow_version.empty()) g["tensorflow_version"] = m.tensorflow_version;
    graphs.push_back(std::move(g));
  }
  return {{"schema_version", info.schema_version}, {"meta_graphs", graphs}};
}

std::string FormatSignatures(const SavedModelInfo& info) {
  std::string out;
  for (const MetaGraph& m : info.meta_graphs) {
    std::string tags;
    for (const auto& t : m.tags) tags += (tags.empty() ? "" : ", ") + t;
    out += "MetaGraphDef with tag-set: '" + tags + "' contains the following SignatureDefs:\n";
    for (const Signature& s : m.signatures) {
      out += "\nsignature_def['" + s.key + "']:\n";
      auto list = [&](const char* what, const char* word,
                      const std::vector<SignatureTensor>& tensors) {
        out += std::string("  The given SavedModel SignatureDef contains the following ") + what +
               ":\n";
        for (const auto& t : tensors) {
          out += std::string("    ") + word + "['" + t.key + "'] tensor_info:\n";
          out += "        dtype: " + TfDTypeName(t.dtype) + "\n";
          out += "        shape: " + ShapeText(t) + "\n";
          if (t.encoding == "name") {
            out += "        name: " + t.name + "\n";
          } else {
            out += "        encoding: " + t.encoding + "\n";
          }
        }
      };
      list("input(s)", "inputs", s.inputs);
      list("output(s)", "outputs", s.outputs);
      out += "  Method name is: " + s.method_name + "\n";
    }
    out += "\n";
  }
  return out;
}

Result<std::string> ResolveVersionDir(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (p.filename() == "saved_model.pb" && fs::is_regular_file(p, ec)) {
    const std::string parent = p.parent_path().string();
    return parent.empty() ? std::string(".") : parent;
  }
  if (!fs::is_directory(p, ec)) return NotFound(path + ": no SavedModel folder");
  if (fs::is_regular_file(p / "saved_model.pb", ec)) return path;
  std::optional<std::pair<uint64_t, fs::path>> best;
  for (const auto& entry : fs::directory_iterator(p, ec)) {
    const std::string name = entry.path().filename().string();
    if (!IsVersionName(name) || !fs::is_regular_file(entry.path() / "saved_model.pb", ec)) {
      continue;
    }
    const uint64_t v = std::stoull(name);
    if (!best || v > best->first) best = std::make_pair(v, entry.path());
  }
  if (!best) {
    return NotFound(path + ": no saved_model.pb here nor in a numeric version folder");
  }
  return best->second.string();
}

Result<std::unique_ptr<SavedModelSource>> SavedModelSource::Open(const std::string& path,
                                                                 const ReadOptions& options) {
  MP_ASSIGN_OR_RETURN(std::string dir, ResolveVersionDir(path));
  std::unique_ptr<SavedModelSource> source(new SavedModelSource());
  source->dir_ = dir;
  const std::string pb = (fs::path(dir) / "saved_model.pb").string();
  MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(pb, options.io_mode));
  MP_ASSIGN_OR_RETURN(auto bytes, file->Read(0, file->size()));
  auto info = ParseSavedModel(bytes->span());
  if (!info) return info.error().WithContext(pb);
  source->info_ = std::move(*info);
  if (dir != path && fs::path(path).filename() != "saved_model.pb") {
    source->notes_.push_back("read version folder " + dir + " (the highest numeric version)");
  }
  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / "variables" / "variables.index", ec)) {
    MP_ASSIGN_OR_RETURN(source->variables_,
                        BundleSource::Open((fs::path(dir) / "variables").string(), options));
  } else {
    source->notes_.push_back("SavedModel has no variables/ bundle: no tensors");
  }
  return source;
}

const std::vector<TensorInfo>& SavedModelSource::tensors() const {
  static const std::vector<TensorInfo> kNone;
  return variables_ ? variables_->tensors() : kNone;
}

Result<TensorView> SavedModelSource::Load(size_t index) const {
  if (!variables_) return NotFound("tensor #" + std::to_string(index));
  return variables_->Load(index);
}

Status SavedModelSource::LoadInto(size_t index, std::span<uint8_t> dest) const {
  if (!variables_) return NotFound("tensor #" + std::to_string(index));
  return variables_->LoadInto(index, dest);
}

ModelFiles SavedModelSource::files() const {
  ModelFiles f;
  f.index = (fs::path(dir_) / "saved_model.pb").string();
  if (variables_) {
    f.files = variables_->files().files;
  }
  return f;
}

std::vector<std::string> SavedModelSource::notes() const {
  std::vector<std::string> out = notes_;
  if (variables_) {
    for (auto& n : variables_->notes()) out.push_back(std::move(n));
  }
  return out;
}

Result<SaveWithVariablesReport> SaveWithVariables(const std::string& saved_model_dir,
                                                  const ModelSource& weights,
                                                  const std::string& out_dir,
                                                  const SaveWithVariablesOptions& options) {
  MP_ASSIGN_OR_RETURN(std::string src_dir, ResolveVersionDir(saved_model_dir));
  MP_ASSIGN_OR_RETURN(auto source, SavedModelSource::Open(src_dir, ReadOptions{}));
  const BundleSource* vars = source->variables();
  if (vars == nullptr) return InvalidArgument(src_dir + ": SavedModel has no variables to replace");
  if (!vars->partitioned().empty()) {
    return Unsupported(src_dir + ": partitioned variables cannot be replaced (" +
                       vars->partitioned().front() + ", ...)");
  }

  // Plan: every entry of the old bundle, its bytes from `weights` when a tensor matches.
  std::vector<BundleItem> items;
  SaveWithVariablesReport report;
  std::vector<std::string> missing, mismatched;
  std::set<std::string> used;
  for (const BundleEntry& e : vars->entries()) {
    BundleItem item;
    item.name = e.name;
    item.dtype = e.dtype;
    item.dims = e.dims;
    const auto index = e.dtype == kDtString ? std::nullopt : weights.Find(e.name);
    if (index) {
      used.insert(e.name);
      const TensorInfo& w = weights.tensors()[*index];
      auto want = DTypeFromTf(e.dtype);
      std::vector<uint64_t> dims(e.dims.begin(), e.dims.end());
      if (!want || w.dtype != *want || w.shape.dims() != dims) {
        mismatched.push_back(Quote(e.name) + " is " + TfDTypeName(e.dtype) + " " +
                             Shape(dims).ToString() + ", new tensor is " +
                             std::string(DTypeName(w.dtype)) + " " + w.shape.ToString());
        continue;
      }
      report.replaced.push_back(e.name);
      const size_t i = *index;
      item.bytes = w.byte_size;
      item.load = [&weights, i]() -> Result<std::shared_ptr<Buffer>> {
        MP_ASSIGN_OR_RETURN(TensorView t, weights.Load(i));
        return t.data;
      };
    } else {
      if (e.dtype != kDtString && (e.name.empty() || e.name[0] != '\0')) {
        missing.push_back(Quote(e.name));
        report.kept.push_back(e.name);
      }
      item.keep_crc32c = e.crc32c;
      item.bytes = e.size;
      const BundleEntry* entry = &e;
      item.load = [vars, entry]() { return vars->RawBytes(*entry); };
    }
    items.push_back(std::move(item));
  }
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  if (!mismatched.empty()) {
    return InvalidArgument("new weights do not match the SavedModel's variables: " +
                           join(mismatched));
  }
  if (!missing.empty() && !options.allow_missing) {
    return InvalidArgument(std::to_string(missing.size()) +
                           " variable(s) have no tensor in the new weights: " + join(missing));
  }
  std::vector<std::string> unused;
  for (const auto& t : weights.tensors()) {
    if (!used.count(t.name)) {
      unused.push_back(Quote(t.name));
      report.unused.push_back(t.name);
    }
  }
  if (!unused.empty() && !options.allow_unused) {
    return InvalidArgument(std::to_string(unused.size()) +
                           " new tensor(s) match no variable of the SavedModel: " + join(unused));
  }

  std::string version = std::to_string(options.version);
  if (options.version == 0) {
    const std::string name = fs::path(src_dir).filename().string();
    version = IsVersionName(name) ? name : "1";
  }
  const fs::path final_dir = fs::path(out_dir) / version;
  std::error_code ec;
  if (fs::exists(final_dir, ec)) return AlreadyExists(final_dir.string() + ": exists");
  MP_RETURN_IF_ERROR(MakeDirs(out_dir));
  static std::atomic<uint64_t> counter{0};
  // A hidden, non-numeric name: TF Serving only loads numeric version folders.
  const fs::path tmp = fs::path(out_dir) / ("." + version + ".tmp." + std::to_string(::getpid()) +
                                            "." + std::to_string(counter++));
  auto build = [&]() -> Status {
    MP_RETURN_IF_ERROR(MakeDirs(tmp.string()));
    const fs::path src(src_dir);
    MP_RETURN_IF_ERROR(CopyFile(src / "saved_model.pb", tmp / "saved_model.pb"));
    for (const char* extra : {"fingerprint.pb", "saved_model.pbtxt"}) {
      if (fs::is_regular_file(src / extra, ec))
        MP_RETURN_IF_ERROR(CopyFile(src / extra, tmp / extra));
    }
    for (const char* tree : {"assets", "assets.extra"}) {
      if (fs::is_directory(src / tree, ec)) MP_RETURN_IF_ERROR(CopyTree(src / tree, tmp / tree));
    }
    MP_RETURN_IF_ERROR(MakeDirs((tmp / "variables").string()));
    WriteOptions w = options.write;
    w.no_overwrite = false;
    MP_RETURN_IF_ERROR(
        WriteBundle((tmp / "variables" / "variables").string(), std::move(items), w));
    if (options.write.durable) MP_RETURN_IF_ERROR(FsyncDir(tmp.string()));
    fs::rename(tmp, final_dir, ec);
    if (ec) {
      return IoError(tmp.string() + ": cannot rename to " + final_dir.string() + ": " +
                     ec.message());
    }
    if (options.write.durable) MP_RETURN_IF_ERROR(FsyncDir(out_dir));
    return Status::Ok();
  };
  Status s = build();
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return s;
  }
  report.source_dir = src_dir;
  report.version_dir = final_dir.string();
  return report;
}

Result<std::unique_ptr<ModelSource>> OpenSavedModel(const std::string& path,
                                                    const ReadOptions& options) {
  return SavedModelSource::Open(path, options);
}

bool DetectSavedModel(std::span<const uint8_t> prefix, uint64_t file_size) {
  size_t pos = 0;
  if (prefix.size() >= 2 && prefix[0] == 0x08) {
    if (prefix[1] != 0x01) return false;  // saved_model_schema_version is 1
    pos = 2;
  }
  if (pos >= prefix.size() || prefix[pos] != 0x12) return false;
  ++pos;
  uint64_t len = 0;
  for (size_t i = 0;; ++i) {
    if (pos >= prefix.size() || i >= 10) return false;
    const uint8_t b = prefix[pos++];
    len |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) break;
  }
  if (len > file_size || pos >= prefix.size()) return false;
  // A MetaGraphDef field tag: fields 1 to 7, all length-delimited.
  const uint8_t tag = prefix[pos];
  return (tag & 7) == 2 && (tag >> 3) >= 1 && (tag >> 3) <= 7;
}

bool DetectSavedModelDir(const std::string& dir) { return ResolveVersionDir(dir).has_value(); }

}  // namespace mp::tf
