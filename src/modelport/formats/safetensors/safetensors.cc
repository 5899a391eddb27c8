#include "modelport/formats/safetensors/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <unordered_set>

#include "modelport/core/file.h"
#include "modelport/core/json.h"
#include "modelport/formats/sharded.h"

namespace mp::safetensors {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kMetadataKey = "__metadata__";

// Appended piece by piece: g++ 12 -O3 warns falsely (-Wrestrict) on "'" + std::string.
std::string Quote(std::string_view s) {
  std::string out(1, '\'');
  out += s;
  out += '\'';
  return out;
}

// Rank of each dtype in the reference implementation's Dtype enum (safetensors/src/tensor.rs).
// The reference writer orders tensors by this rank, largest first, then by name, which keeps
// every tensor naturally aligned; we do the same so our headers match the reference's.
int ReferenceRank(DType d) {
  switch (d) {
    case DType::kBool:
      return 0;
    case DType::kU8:
      return 4;
    case DType::kI8:
      return 5;
    case DType::kF8E5M2:
      return 6;
    case DType::kF8E4M3:
      return 7;
    case DType::kI16:
      return 9;
    case DType::kU16:
      return 10;
    case DType::kF16:
      return 11;
    case DType::kBF16:
      return 12;
    case DType::kI32:
      return 13;
    case DType::kU32:
      return 14;
    case DType::kF32:
      return 15;
    case DType::kC64:
      return 16;
    case DType::kF64:
      return 17;
    case DType::kI64:
      return 18;
    case DType::kU64:
      return 19;
    default:
      return -1;
  }
}

// ---------------------------------------------------------------------------------------------
// Header parsing

Result<uint64_t> JsonToU64(const Json& v, std::string_view field) {
  if (!v.is_number_unsigned()) {
    return Corrupt(std::string(field) + " must hold non-negative integers, got " +
                   (v.is_number() ? std::string("a negative or fractional number")
                                  : "a " + std::string(v.type_name())));
  }
  return v.get<uint64_t>();
}

struct Entry {
  TensorInfo info;
  uint64_t begin = 0;  // relative to the data buffer
  uint64_t end = 0;
  size_t header_position = 0;
};

Result<Entry> ParseEntry(const std::string& name, const Json& value, const ReadOptions& options) {
  if (!value.is_object()) return Corrupt("entry is not an object");
  auto field = [&](const char* key) -> Result<const Json*> {
    auto it = value.find(key);
    if (it == value.end()) return Corrupt(std::string("missing field \"") + key + "\"");
    return &*it;
  };
  MP_ASSIGN_OR_RETURN(const Json* dtype_json, field("dtype"));
  MP_ASSIGN_OR_RETURN(const Json* shape_json, field("shape"));
  MP_ASSIGN_OR_RETURN(const Json* offsets_json, field("data_offsets"));
  if (!dtype_json->is_string()) return Corrupt("\"dtype\" is not a string");
  MP_ASSIGN_OR_RETURN(DType dtype, DTypeFromSafetensors(dtype_json->get_ref<const std::string&>()));
  if (!shape_json->is_array()) return Corrupt("\"shape\" is not an array");
  if (shape_json->size() > options.max_rank) {
    return LimitExceeded("rank " + std::to_string(shape_json->size()) + " is over the limit of " +
                         std::to_string(options.max_rank));
  }
  std::vector<uint64_t> dims;
  for (const Json& d : *shape_json) {
    MP_ASSIGN_OR_RETURN(uint64_t dim, JsonToU64(d, "\"shape\""));
    dims.push_back(dim);
  }
  if (!offsets_json->is_array() || offsets_json->size() != 2) {
    return Corrupt("\"data_offsets\" must be an array of two integers");
  }
  Entry e;
  MP_ASSIGN_OR_RETURN(e.begin, JsonToU64((*offsets_json)[0], "\"data_offsets\""));
  MP_ASSIGN_OR_RETURN(e.end, JsonToU64((*offsets_json)[1], "\"data_offsets\""));
  if (e.end < e.begin) {
    return Corrupt("data_offsets end " + std::to_string(e.end) + " is before begin " +
                   std::to_string(e.begin));
  }
  MP_ASSIGN_OR_RETURN(e.info, TensorInfo::Make(name, dtype, Shape(std::move(dims))));
  if (e.end - e.begin != e.info.byte_size) {
    return Corrupt("data_offsets span " + std::to_string(e.end - e.begin) + " bytes but " +
                   std::string(DTypeName(dtype)) + " " + e.info.shape.ToString() + " needs " +
                   std::to_string(e.info.byte_size));
  }
  return e;
}

Result<Json> ParseMetadata(const Json& value) {
  if (!value.is_object()) return Corrupt("\"__metadata__\" is not an object");
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) {
      return Corrupt("\"__metadata__\" value of " + Quote(key) + " is not a string");
    }
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// One file

class FileReader final : public ModelSource {
 public:
  static Result<std::unique_ptr<FileReader>> Open(const std::string& path,
                                                  const ReadOptions& options) {
    MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path, options.io_mode));
    std::unique_ptr<FileReader> reader(new FileReader());
    reader->file_ = std::move(file);
    Status s = reader->ParseHeader(options);
    if (!s.ok()) return std::move(s).WithContext(path);
    return reader;
  }
  static Result<std::unique_ptr<ModelSource>> OpenSource(const std::string& path,
                                                         const ReadOptions& options) {
    return Open(path, options);
  }

  std::string_view format() const override { return "safetensors"; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  ModelFiles files() const override { return {{}, {file_->path()}}; }

  Result<TensorView> Load(size_t index) const override {
    if (index >= infos_.size()) return NotFound("tensor #" + std::to_string(index));
    const TensorInfo& info = infos_[index];
    auto data = file_->Read(data_start_ + begins_[index], info.byte_size);
    if (!data) return data.error().WithContext("tensor " + Quote(info.name));
    // Files from other writers may leave tensors unaligned.
    MP_ASSIGN_OR_RETURN(std::shared_ptr<Buffer> bytes, AlignedFor(info.dtype, std::move(*data)));
    return TensorView{info, std::move(bytes)};
  }

  Status LoadInto(size_t index, std::span<uint8_t> dest) const override {
    if (index >= infos_.size()) return NotFound("tensor #" + std::to_string(index));
    const TensorInfo& info = infos_[index];
    if (dest.size() != info.byte_size) {
      return InvalidArgument("tensor " + Quote(info.name) + ": destination holds " +
                             std::to_string(dest.size()) + " bytes, tensor has " +
                             std::to_string(info.byte_size));
    }
    Status s = file_->ReadInto(data_start_ + begins_[index], info.byte_size, dest.data());
    return s.ok() ? s : std::move(s).WithContext("tensor " + Quote(info.name));
  }

 private:
  FileReader() = default;

  Status ParseHeader(const ReadOptions& options) {
    const uint64_t size = file_->size();
    if (size < 8) {
      return Corrupt("file is " + std::to_string(size) +
                     " bytes, too short for the 8-byte header length");
    }
    uint8_t len_bytes[8];
    MP_RETURN_IF_ERROR(file_->ReadInto(0, 8, len_bytes));
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
    if (n > options.max_header_bytes) {
      return LimitExceeded("header length " + std::to_string(n) + " is over the limit of " +
                           std::to_string(options.max_header_bytes) + " bytes");
    }
    if (n > size - 8) {
      return Corrupt("header length " + std::to_string(n) + " is past the end of the file (" +
                     std::to_string(size) + " bytes)");
    }
    data_start_ = 8 + n;
    MP_ASSIGN_OR_RETURN(auto header, file_->Read(8, n));
    std::string_view text(reinterpret_cast<const char*>(header->data()), header->size());
    if (text.empty() || text[0] != '{') return Corrupt("header does not start with '{'");
    MP_ASSIGN_OR_RETURN(Json json, ParseStrictJson(text, "header"));
    if (!json.is_object()) return Corrupt("header is not a JSON object");
    if (json.size() > options.max_tensors + 1) {
      return LimitExceeded(std::to_string(json.size()) + " header entries is over the limit of " +
                           std::to_string(options.max_tensors) + " tensors");
    }

    std::vector<Entry> entries;
    entries.reserve(json.size());
    for (const auto& [name, value] : json.items()) {
      if (name == kMetadataKey) {
        MP_ASSIGN_OR_RETURN(metadata_, ParseMetadata(value));
        continue;
      }
      if (name.size() > options.max_name_bytes) {
        return LimitExceeded("tensor name of " + std::to_string(name.size()) +
                             " bytes is over the limit of " +
                             std::to_string(options.max_name_bytes));
      }
      auto entry = ParseEntry(name, value, options);
      if (!entry) return entry.error().WithContext("tensor " + Quote(name));
      entry->header_position = entries.size();
      entries.push_back(std::move(*entry));
    }
    MP_RETURN_IF_ERROR(CheckLayout(entries, size - data_start_));

    for (auto& e : entries) {
      begins_.push_back(e.begin);
      infos_.push_back(std::move(e.info));
    }
    return Status::Ok();
  }

  // The spec's layout rule: sorted by offset, entries tile the buffer exactly from 0 to its end.
  static Status CheckLayout(std::vector<Entry>& entries, uint64_t buffer_size) {
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return std::tie(a.begin, a.end, a.header_position) <
             std::tie(b.begin, b.end, b.header_position);
    });
    uint64_t expected = 0;
    for (const Entry& e : entries) {
      if (e.begin < expected) {
        return Corrupt("tensor " + Quote(e.info.name) +
                       " overlaps the previous tensor (begins at " + std::to_string(e.begin) +
                       ", previous ends at " + std::to_string(expected) + ")");
      }
      if (e.begin > expected) {
        return Corrupt("gap of " + std::to_string(e.begin - expected) + " bytes before tensor " +
                       Quote(e.info.name) + " (begins at " + std::to_string(e.begin) +
                       ", expected " + std::to_string(expected) + ")");
      }
      expected = e.end;
    }
    if (expected > buffer_size) {
      return Corrupt("tensor " + Quote(entries.back().info.name) + " ends at " +
                     std::to_string(expected) + ", past the data buffer (" +
                     std::to_string(buffer_size) + " bytes)");
    }
    if (expected < buffer_size) {
      return Corrupt("tensors cover " + std::to_string(expected) + " bytes but the data buffer " +
                     "holds " + std::to_string(buffer_size) + " (data must end exactly at end " +
                     "of file)");
    }
    return Status::Ok();
  }

  std::shared_ptr<InputFile> file_;
  uint64_t data_start_ = 0;
  std::vector<TensorInfo> infos_;
  std::vector<uint64_t> begins_;
  Json metadata_ = Json::object();
};

// ---------------------------------------------------------------------------------------------
// Sharded (Hugging Face index)

// The index file in `dir`, if any: model.safetensors.index.json, else the only
// *.safetensors.index.json there.
std::optional<std::string> FindIndexInDir(const std::string& dir) {
  const fs::path preferred = fs::path(dir) / kIndexName;
  std::error_code ec;
  if (fs::is_regular_file(preferred, ec)) return preferred.string();
  std::optional<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 23 && name.ends_with(".safetensors.index.json")) {
      if (found) return std::nullopt;  // ambiguous
      found = entry.path().string();
    }
  }
  return found;
}

// The single .safetensors file in `dir`: model.safetensors, else the only one there.
std::optional<std::string> FindFileInDir(const std::string& dir) {
  const fs::path preferred = fs::path(dir) / "model.safetensors";
  std::error_code ec;
  if (fs::is_regular_file(preferred, ec)) return preferred.string();
  std::optional<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".safetensors") {
      if (found) return std::nullopt;
      found = entry.path().string();
    }
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Writing

std::string MetadataValueAsString(const Json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// Order in which tensors are laid out: the reference's (dtype rank descending, then name).
Result<std::vector<size_t>> WriteOrder(const std::vector<TensorInfo>& infos,
                                       const std::vector<size_t>& subset) {
  for (size_t i : subset) {
    if (Traits(infos[i].dtype).safetensors_name.empty()) {
      return Unsupported("tensor " + Quote(infos[i].name) + ": safetensors cannot store dtype " +
                         std::string(DTypeName(infos[i].dtype)) +
                         (IsQuantized(infos[i].dtype)
                              ? "; dequantize it (convert --dtype f32, f16 or bf16)"
                              : ""));
    }
  }
  std::vector<size_t> order = subset;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const int ra = ReferenceRank(infos[a].dtype), rb = ReferenceRank(infos[b].dtype);
    if (ra != rb) return ra > rb;
    return infos[a].name < infos[b].name;
  });
  return order;
}

std::string BuildHeader(const std::vector<TensorInfo>& infos, const std::vector<size_t>& order,
                        const Json& metadata) {
  // Serialised by hand in compact form, keeping __metadata__ first and tensors in layout order.
  const auto dump = [](const Json& j) {
    return j.dump(-1, ' ', false, Json::error_handler_t::strict);
  };
  std::string h = "{";
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata.items()) meta[k] = MetadataValueAsString(v);
    h += dump(std::string(kMetadataKey)) + ":" + dump(meta);
  }
  uint64_t offset = 0;
  for (size_t i : order) {
    const TensorInfo& t = infos[i];
    Json entry = Json::object();
    entry["dtype"] = Traits(t.dtype).safetensors_name;
    entry["shape"] = t.shape.dims();
    entry["data_offsets"] = {offset, offset + t.byte_size};
    offset += t.byte_size;
    if (h.size() > 1) h += ",";
    h += dump(t.name) + ":" + dump(entry);
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  return h;
}

// Writes the tensors `subset` of `source` as one safetensors file at `file`. Nothing appears at
// `file` until Commit(), which the caller does once every file of the model is written.
Result<std::unique_ptr<AtomicFile>> WriteOneFile(const ModelSource& source,
                                                 const std::vector<size_t>& subset,
                                                 const std::string& file, WriteProgress& progress) {
  const auto& infos = source.tensors();
  MP_ASSIGN_OR_RETURN(std::vector<size_t> order, WriteOrder(infos, subset));
  std::string header;
  try {
    header = BuildHeader(infos, order, source.metadata());
  } catch (const Json::exception& e) {
    return InvalidArgument("tensor name or metadata is not valid UTF-8: " + std::string(e.what()));
  }
  MP_ASSIGN_OR_RETURN(auto out, AtomicFile::Create(file));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  MP_RETURN_IF_ERROR(out->Write(len, 8));
  MP_RETURN_IF_ERROR(out->Write(header.data(), header.size()));
  for (size_t i : order) {
    auto tensor = source.Load(i);
    if (!tensor) return tensor.error();
    if (tensor->info.byte_size != infos[i].byte_size || tensor->info.dtype != infos[i].dtype) {
      return Internal("tensor " + Quote(infos[i].name) + " loaded with another dtype or shape " +
                      "than its index says");
    }
    MP_RETURN_IF_ERROR(out->Write(tensor->data->data(), tensor->data->size()));
    progress.Tick(tensor->data->size());
  }
  return out;
}

struct ShardPlan {
  std::string dir;
  std::string prefix;  // "model"
};

ShardPlan PlanFromPath(const std::string& path) {
  const fs::path p(path);
  const std::string name = p.filename().string();
  for (std::string_view suffix :
       {std::string_view(".safetensors.index.json"), std::string_view(".safetensors")}) {
    if (name.size() > suffix.size() && name.ends_with(suffix)) {
      return {p.parent_path().string(), name.substr(0, name.size() - suffix.size())};
    }
  }
  return {path, "model"};  // a folder
}

}  // namespace

Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (auto index = FindIndexInDir(path))
      return OpenShardedIndex(*index, options, FileReader::OpenSource);
    if (auto file = FindFileInDir(path)) return FileReader::Open(*file, options);
    return NotFound(path + ": folder holds no model.safetensors or *.safetensors.index.json");
  }
  if (path.ends_with(".index.json")) return OpenShardedIndex(path, options, FileReader::OpenSource);
  return FileReader::Open(path, options);
}

Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options) {
  const auto& infos = source.tensors();
  WriteProgress progress{&options.progress};
  progress.tensors_total = infos.size();
  MP_ASSIGN_OR_RETURN(progress.bytes_total, source.TotalBytes());

  std::vector<size_t> all(infos.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;

  std::error_code ec;
  const bool to_folder = fs::is_directory(path, ec) || path.ends_with("/");
  if (options.shard_size == 0 && !to_folder) {
    if (options.no_overwrite && fs::exists(path, ec)) return AlreadyExists(path + ": exists");
    MP_ASSIGN_OR_RETURN(auto out, WriteOneFile(source, all, path, progress));
    return out->Commit(options.durable);
  }

  // Sharded (or a folder destination): Hugging Face's greedy split in source order; a tensor
  // larger than the cap gets a shard of its own.
  const ShardPlan plan = PlanFromPath(path);
  MP_RETURN_IF_ERROR(MakeDirs(plan.dir));
  const std::vector<std::vector<size_t>> shards = PlanShards(infos, options.shard_size);

  if (shards.size() == 1) {
    const std::string file = (fs::path(plan.dir) / (plan.prefix + ".safetensors")).string();
    if (options.no_overwrite && fs::exists(file, ec)) return AlreadyExists(file + ": exists");
    MP_ASSIGN_OR_RETURN(auto out, WriteOneFile(source, all, file, progress));
    return out->Commit(options.durable);
  }

  const std::string index_path =
      (fs::path(plan.dir) / (plan.prefix + ".safetensors.index.json")).string();
  if (options.no_overwrite && fs::exists(index_path, ec)) {
    return AlreadyExists(index_path + ": exists");
  }
  std::vector<std::unique_ptr<AtomicFile>> files;
  Json weight_map = Json::object();
  std::map<std::string, std::string> sorted_map;
  for (size_t k = 0; k < shards.size(); ++k) {
    const std::string name = ShardFileName(plan.prefix, k + 1, shards.size(), ".safetensors");
    MP_ASSIGN_OR_RETURN(
        auto out, WriteOneFile(source, shards[k], (fs::path(plan.dir) / name).string(), progress));
    files.push_back(std::move(out));
    for (size_t i : shards[k]) sorted_map[infos[i].name] = name;
  }
  for (const auto& [tensor, file] : sorted_map) weight_map[tensor] = file;
  MP_ASSIGN_OR_RETURN(uint64_t total_elements, source.TotalElements());
  Json index = {
      {"metadata", {{"total_parameters", total_elements}, {"total_size", progress.bytes_total}}},
      {"weight_map", weight_map}};
  const std::string text = index.dump(2) + "\n";
  MP_ASSIGN_OR_RETURN(auto index_file, AtomicFile::Create(index_path));
  MP_RETURN_IF_ERROR(index_file->Write(text.data(), text.size()));
  // Shards first, index last: a reader never sees an index whose shards are not all in place.
  for (auto& f : files) MP_RETURN_IF_ERROR(f->Commit(options.durable));
  return index_file->Commit(options.durable);
}

bool Detect(std::span<const uint8_t> prefix, uint64_t file_size) {
  if (prefix.size() < 10 || file_size < 10) return false;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];
  if (n < 2 || n > file_size - 8) return false;
  if (prefix[8] != '{') return false;
  const uint8_t next = prefix[9];
  return next == '"' || next == '}' || next == ' ';
}

bool DetectDir(const std::string& dir) {
  return FindIndexInDir(dir).has_value() || FindFileInDir(dir).has_value();
}

}  // namespace mp::safetensors
