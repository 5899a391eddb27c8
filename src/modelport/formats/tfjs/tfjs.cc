// TensorFlow.js layers-model format: see tfjs.h for the layout.
#include "modelport/formats/tfjs/tfjs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <regex>
#include <set>
#include <unordered_set>
#include <utility>
#include <vector>

#include "modelport/core/file.h"
#include "modelport/core/json.h"
#include "modelport/formats/sharded.h"
#include "modelport/formats/zip/zip.h"

namespace mp::tfjs {
namespace {

namespace fs = std::filesystem;

std::string Quote(std::string_view s) { return zip::QuoteName(s); }

constexpr std::string_view kMetaPrefix = "tfjs.";
// Top-level fields the writer sets itself rather than copying from "tfjs.*" metadata.
constexpr std::string_view kWriterFields[] = {"format", "generatedBy", "convertedBy",
                                              "weightsManifest", "userDefinedMetadata"};

/// How a stored weight becomes the tensor Load returns.
enum class Decode {
  kRaw,         ///< stored bytes are the tensor's bytes
  kFlipSign8,   ///< uint8 q = v + 128 of an i8 tensor
  kFlipSign16,  ///< uint16 q = v + 32768 of an i16 tensor
  kAffineF32,   ///< float32 = q * scale + min
  kAffineI32,   ///< int32 = Math.round(q * scale + min)
};

/// One weight of the manifest that becomes a tensor.
struct Weight {
  size_t group = 0;
  uint64_t offset = 0;  ///< in the group's byte stream
  uint64_t stored = 0;  ///< stored bytes
  Decode decode = Decode::kRaw;
  uint32_t q_bytes = 0;  ///< 1 or 2 for the affine decodes
  double scale = 0, min = 0;
};

/// A shard: a mapped (or pread) file, or bytes in memory.
struct Shard {
  std::string name;
  std::shared_ptr<InputFile> file;
  std::shared_ptr<Buffer> memory;
  uint64_t size = 0;

  Result<std::shared_ptr<Buffer>> Read(uint64_t offset, uint64_t length) const {
    if (file) return file->Read(offset, length);
    return memory->Slice(offset, length);
  }
  Status ReadInto(uint64_t offset, uint64_t length, uint8_t* dest) const {
    if (file) return file->ReadInto(offset, length, dest);
    if (length) std::memcpy(dest, memory->data() + offset, length);
    return Status::Ok();
  }
};

struct Group {
  std::vector<Shard> shards;
  std::vector<uint64_t> starts;  ///< offset of each shard in the group stream, plus the total
};

using ShardResolver = std::function<Result<Shard>(const std::string& name)>;

/// A manifest path must name a plain file in model.json's own folder.
Status CheckPlainName(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\\') != std::string::npos || name.find('\0') != std::string::npos) {
    return Unsafe("path " + Quote(name) + " is not a plain file name in model.json's folder");
  }
  return Status::Ok();
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  const size_t shown = std::min<size_t>(names.size(), 5);
  for (size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + Quote(names[i]);
  if (names.size() > shown) out += ", ... (" + std::to_string(names.size()) + " in all)";
  return out;
}

/// A JSON value for an error message: compact, at most 40 bytes (cut at a character boundary).
std::string Brief(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() <= 40) return text;
  size_t cut = 37;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut) + "...";
}

/// The shape of a manifest entry: non-negative integers.
Result<Shape> ParseShape(const Json& value, uint64_t max_rank) {
  if (!value.is_array()) return Corrupt("\"shape\" is not an array");
  if (value.size() > max_rank) {
    return LimitExceeded("rank " + std::to_string(value.size()) + " exceeds the limit of " +
                         std::to_string(max_rank));
  }
  std::vector<uint64_t> dims;
  for (const Json& d : value) {
    if (!d.is_number_unsigned()) {
      return Corrupt("\"shape\" holds " + Brief(d) + ", not a non-negative integer");
    }
    dims.push_back(d.get<uint64_t>());
  }
  return Shape(std::move(dims));
}

// Math.round (ties toward +infinity) then ToInt32 (modulo 2^32), as an Int32Array stores it.
int32_t JsRoundToInt32(double x) {
  if (!std::isfinite(x)) return 0;
  double r = std::floor(x);
  if (x - r >= 0.5) r += 1;
  double m = std::fmod(r, 4294967296.0);
  if (m < 0) m += 4294967296.0;
  return static_cast<int32_t>(static_cast<uint32_t>(m));
}

// q * scale + min with both operations rounded to double, as JavaScript computes it (volatile:
// no fused multiply-add).
double JsAffine(uint32_t q, double scale, double min) {
  volatile double product = static_cast<double>(q) * scale;
  return product + min;
}

class TfjsSource final : public ModelSource {
 public:
  static Result<std::unique_ptr<ModelSource>> Make(std::string_view text, const std::string& label,
                                                   const ShardResolver& resolve,
                                                   const ReadOptions& options,
                                                   std::string json_path) {
    std::unique_ptr<TfjsSource> source(new TfjsSource());
    source->json_path_ = std::move(json_path);
    Status s = source->Init(text, resolve, options);
    if (!s.ok()) return std::move(s).WithContext(label);
    return std::unique_ptr<ModelSource>(std::move(source));
  }

  std::string_view format() const override { return "tfjs"; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  std::vector<std::string> notes() const override { return notes_; }
  ModelFiles files() const override {
    ModelFiles files;
    if (json_path_.empty()) return files;
    files.index = json_path_;
    for (const Group& g : groups_) {
      for (const Shard& s : g.shards) {
        if (s.file) files.files.push_back(s.file->path());
      }
    }
    return files;
  }

  Result<TensorView> Load(size_t index) const override {
    if (index >= infos_.size()) return NotFound("tensor #" + std::to_string(index));
    const TensorInfo& info = infos_[index];
    const Weight& w = weights_[index];
    auto raw = Stored(w);
    if (!raw.ok()) return raw.status().WithContext("tensor " + Quote(info.name));
    std::shared_ptr<Buffer> bytes = std::move(*raw);
    switch (w.decode) {
      case Decode::kRaw:
        break;
      case Decode::kFlipSign8:
      case Decode::kFlipSign16: {
        MP_ASSIGN_OR_RETURN(auto out, Buffer::Allocate(info.byte_size));
        const size_t step = w.decode == Decode::kFlipSign8 ? 1 : 2;
        std::memcpy(out->mutable_data(), bytes->data(), info.byte_size);
        // Little-endian: the sign bit is in the last byte of each element.
        for (size_t i = step - 1; i < info.byte_size; i += step) out->mutable_data()[i] ^= 0x80;
        bytes = std::move(out);
        break;
      }
      case Decode::kAffineF32:
      case Decode::kAffineI32: {
        MP_ASSIGN_OR_RETURN(auto out, Buffer::Allocate(info.byte_size));
        const uint8_t* q = bytes->data();
        const size_t n = info.byte_size / 4;
        for (size_t i = 0; i < n; ++i) {
          const uint32_t v = w.q_bytes == 1 ? q[i]
                                            : static_cast<uint32_t>(q[2 * i]) |
                                                  static_cast<uint32_t>(q[2 * i + 1]) << 8;
          const double x = JsAffine(v, w.scale, w.min);
          if (w.decode == Decode::kAffineF32) {
            const float f = static_cast<float>(x);
            std::memcpy(out->mutable_data() + 4 * i, &f, 4);
          } else {
            const int32_t k = JsRoundToInt32(x);
            std::memcpy(out->mutable_data() + 4 * i, &k, 4);
          }
        }
        bytes = std::move(out);
        break;
      }
    }
    MP_ASSIGN_OR_RETURN(bytes, AlignedFor(info.dtype, std::move(bytes)));
    return TensorView{info, std::move(bytes)};
  }

 private:
  TfjsSource() = default;

  /// The stored bytes of `w`: a view when they lie in one shard, else assembled.
  Result<std::shared_ptr<Buffer>> Stored(const Weight& w) const {
    const Group& g = groups_[w.group];
    // The shard holding the first byte (the last one starting at or before it; for empty
    // tensors any shard will do, as none of its bytes are read).
    size_t k = static_cast<size_t>(
        std::upper_bound(g.starts.begin(), g.starts.end() - 1, w.offset) - g.starts.begin());
    if (k == 0 || g.shards.empty()) {
      return Buffer::Wrap(reinterpret_cast<const uint8_t*>(""), 0, nullptr);
    }
    --k;
    if (w.offset + w.stored <= g.starts[k + 1]) {
      return g.shards[k].Read(w.offset - g.starts[k], w.stored);
    }
    MP_ASSIGN_OR_RETURN(auto out, Buffer::Allocate(w.stored));
    uint64_t done = 0;
    for (; done < w.stored; ++k) {
      const uint64_t at = w.offset + done;
      const uint64_t take = std::min(w.stored - done, g.starts[k + 1] - at);
      MP_RETURN_IF_ERROR(g.shards[k].ReadInto(at - g.starts[k], take, out->mutable_data() + done));
      done += take;
    }
    return out;
  }

  /// Reads `length` bytes at `offset` of group `g`'s stream (bounds already checked).
  Status GroupRead(const Group& g, uint64_t offset, uint64_t length, uint8_t* dest) const {
    size_t k = static_cast<size_t>(std::upper_bound(g.starts.begin(), g.starts.end() - 1, offset) -
                                   g.starts.begin() - 1);
    for (uint64_t done = 0; done < length; ++k) {
      const uint64_t at = offset + done;
      const uint64_t take = std::min(length - done, g.starts[k + 1] - at);
      MP_RETURN_IF_ERROR(g.shards[k].ReadInto(at - g.starts[k], take, dest + done));
      done += take;
    }
    return Status::Ok();
  }

  /// Bytes a string weight of `count` elements takes at `offset` of `g` (u32 length + bytes
  /// per element), within the group's `total`.
  Result<uint64_t> StringBytes(const Group& g, uint64_t offset, uint64_t count,
                               uint64_t total) const {
    uint64_t at = offset;
    if (count > (total - std::min(total, offset)) / 4) {
      return Corrupt("its " + std::to_string(count) + " string lengths run past the shards' " +
                     std::to_string(total) + " bytes");
    }
    for (uint64_t i = 0; i < count; ++i) {
      if (total - at < 4) return Corrupt("string #" + std::to_string(i) + " runs past the shards");
      uint8_t len_bytes[4];
      MP_RETURN_IF_ERROR(GroupRead(g, at, 4, len_bytes));
      const uint64_t len = static_cast<uint64_t>(len_bytes[0]) | uint64_t{len_bytes[1]} << 8 |
                           uint64_t{len_bytes[2]} << 16 | uint64_t{len_bytes[3]} << 24;
      at += 4;
      if (total - at < len) {
        return Corrupt("string #" + std::to_string(i) + " of " + std::to_string(len) +
                       " bytes runs past the shards");
      }
      at += len;
    }
    return at - offset;
  }

  Status Init(std::string_view text, const ShardResolver& resolve, const ReadOptions& options);
  Status InitGroup(size_t gi, const Json& group, const ShardResolver& resolve,
                   const ReadOptions& options, std::set<std::string>& names,
                   std::set<std::string>& paths);
  /// Parses one manifest entry into `w` and its tensor info (nullopt for a string weight,
  /// whose byte size is found from the data).
  Status ParseEntry(const Json& entry, const ReadOptions& options, Weight& w,
                    std::optional<TensorInfo>& info, uint64_t& string_count);

  std::string json_path_;
  std::vector<Group> groups_;
  std::vector<TensorInfo> infos_;
  std::vector<Weight> weights_;
  Json metadata_ = Json::object();
  std::vector<std::string> notes_;
  std::vector<std::string> dequantized_, narrowed_, strings_;
  Json quantization_ = Json::object();  ///< "tfjs.quantization"
};

Status TfjsSource::Init(std::string_view text, const ShardResolver& resolve,
                        const ReadOptions& options) {
  MP_ASSIGN_OR_RETURN(Json doc, ParseStrictJson(text, "the manifest", kMaxJsonDepth));
  if (!doc.is_object()) return Corrupt("not a JSON object");
  if (!doc.contains("weightsManifest")) return Corrupt("no \"weightsManifest\"");
  const Json& manifest = doc["weightsManifest"];
  if (!manifest.is_array()) return Corrupt("\"weightsManifest\" is not an array");

  std::set<std::string> names, paths;
  for (size_t gi = 0; gi < manifest.size(); ++gi) {
    Status s = InitGroup(gi, manifest[gi], resolve, options, names, paths);
    if (!s.ok()) return std::move(s).WithContext("weightsManifest group " + std::to_string(gi + 1));
  }

  if (doc.contains("userDefinedMetadata") && doc["userDefinedMetadata"].is_object()) {
    for (const auto& [key, value] : doc["userDefinedMetadata"].items()) metadata_[key] = value;
  }
  for (const auto& [key, value] : doc.items()) {
    if (key == "weightsManifest") continue;
    if (key == "userDefinedMetadata" && value.is_object()) continue;
    metadata_[std::string(kMetaPrefix) + key] = value;
  }
  if (!quantization_.empty()) metadata_["tfjs.quantization"] = quantization_;
  if (!dequantized_.empty()) {
    notes_.push_back(std::to_string(dequantized_.size()) +
                     " weight(s) are stored quantized to uint8/uint16 and dequantized on load as "
                     "TF.js does (q * scale + min; metadata \"tfjs.quantization\"): " +
                     JoinNames(dequantized_));
  }
  if (!narrowed_.empty()) {
    notes_.push_back(std::to_string(narrowed_.size()) +
                     " weight(s) use TF.js quantization as exact storage (float16, or 8/16-bit "
                     "integers at scale 1) and are read in that dtype; TF.js widens them to "
                     "float32/int32 with the same values: " +
                     JoinNames(narrowed_));
  }
  if (!strings_.empty()) {
    notes_.push_back(std::to_string(strings_.size()) +
                     " string weight(s) are not carried (modelport holds numeric tensors): " +
                     JoinNames(strings_));
  }
  return Status::Ok();
}

Status TfjsSource::InitGroup(size_t gi, const Json& group, const ShardResolver& resolve,
                             const ReadOptions& options, std::set<std::string>& names,
                             std::set<std::string>& paths) {
  if (!group.is_object()) return Corrupt("is not an object");
  if (!group.contains("paths") || !group["paths"].is_array())
    return Corrupt("has no \"paths\" array");
  if (!group.contains("weights") || !group["weights"].is_array())
    return Corrupt("has no \"weights\" array");

  Group g;
  g.starts.push_back(0);
  for (const Json& p : group["paths"]) {
    if (!p.is_string()) return Corrupt("\"paths\" holds " + Brief(p) + ", not a string");
    const std::string& name = p.get_ref<const std::string&>();
    MP_RETURN_IF_ERROR(CheckPlainName(name));
    if (!paths.insert(name).second) return Corrupt("path " + Quote(name) + " is listed twice");
    if (paths.size() > options.max_shards) {
      return LimitExceeded("more than " + std::to_string(options.max_shards) + " shard files");
    }
    MP_ASSIGN_OR_RETURN(Shard shard, resolve(name));
    MP_ASSIGN_OR_RETURN(uint64_t end, CheckedAdd(g.starts.back(), shard.size));
    g.starts.push_back(end);
    g.shards.push_back(std::move(shard));
  }
  const uint64_t total = g.starts.back();
  groups_.push_back(std::move(g));
  const Group& stored_group = groups_.back();
  // The shard sizes, for errors: a damaged shard is one of them.
  auto sizes = [&stored_group] {
    std::string out;
    for (size_t k = 0; k < stored_group.shards.size() && k < 8; ++k) {
      out += (k ? ", " : "") + Quote(stored_group.shards[k].name) + " " +
             std::to_string(stored_group.shards[k].size);
    }
    if (stored_group.shards.size() > 8) out += ", ...";
    return out;
  };

  uint64_t offset = 0;
  for (const Json& entry : group["weights"]) {
    Weight w;
    w.group = gi;
    w.offset = offset;
    std::optional<TensorInfo> info;
    uint64_t string_count = 0;
    const std::string label =
        entry.is_object() && entry.contains("name") && entry["name"].is_string()
            ? "weight " + Quote(entry["name"].get<std::string>())
            : "weight #" + std::to_string(names.size() + 1);
    Status s = ParseEntry(entry, options, w, info, string_count);
    if (!s.ok()) return std::move(s).WithContext(label);
    const std::string name = entry["name"].get<std::string>();
    if (!names.insert(name).second) return Corrupt(label + " is listed twice");
    if (names.size() > options.max_tensors) {
      return LimitExceeded("more than " + std::to_string(options.max_tensors) + " weights");
    }
    if (!info) {
      auto bytes = StringBytes(stored_group, offset, string_count, total);
      if (!bytes.ok()) return bytes.status().WithContext(label);
      w.stored = *bytes;
      strings_.push_back(name);
    }
    if (w.stored > total - std::min(total, offset)) {
      return Corrupt("the weights need more bytes than the group's shards hold: " + label +
                     " ends at byte " + std::to_string(offset + w.stored) + " of " +
                     std::to_string(total) + " (" + sizes() + ")");
    }
    offset += w.stored;
    if (info) {
      infos_.push_back(std::move(*info));
      weights_.push_back(w);
    }
  }
  if (offset != total) {
    return Corrupt("the shards hold " + std::to_string(total) + " bytes (" + sizes() +
                   ") but the weights need " + std::to_string(offset));
  }
  return Status::Ok();
}

Status TfjsSource::ParseEntry(const Json& entry, const ReadOptions& options, Weight& w,
                              std::optional<TensorInfo>& info, uint64_t& string_count) {
  if (!entry.is_object()) return Corrupt("is not an object");
  if (!entry.contains("name") || !entry["name"].is_string()) return Corrupt("has no \"name\"");
  const std::string& name = entry["name"].get_ref<const std::string&>();
  if (name.size() > options.max_name_bytes) {
    return LimitExceeded("name of " + std::to_string(name.size()) + " bytes exceeds the limit of " +
                         std::to_string(options.max_name_bytes));
  }
  if (!entry.contains("shape")) return Corrupt("has no \"shape\"");
  MP_ASSIGN_OR_RETURN(Shape shape, ParseShape(entry["shape"], options.max_rank));
  if (!entry.contains("dtype") || !entry["dtype"].is_string()) return Corrupt("has no \"dtype\"");
  const std::string& dtype = entry["dtype"].get_ref<const std::string&>();
  MP_ASSIGN_OR_RETURN(const uint64_t count, shape.NumElements());

  const Json* q = entry.contains("quantization") ? &entry["quantization"] : nullptr;
  if (q && !q->is_null()) {
    if (!q->is_object() || !q->contains("dtype") || !(*q)["dtype"].is_string()) {
      return Corrupt("\"quantization\" is not an object with a \"dtype\"");
    }
    const std::string& qtype = (*q)["dtype"].get_ref<const std::string&>();
    DType out;
    if (qtype == "float16") {
      if (dtype != "float32") {
        return Unsupported("float16 quantization of a " + dtype + " weight (TF.js allows float32)");
      }
      out = DType::kF16;
      narrowed_.push_back(name);
    } else if (qtype == "uint8" || qtype == "uint16") {
      if (dtype != "float32" && dtype != "int32") {
        return Unsupported(qtype + " quantization of a " + dtype +
                           " weight (TF.js allows float32 and int32)");
      }
      if (!q->contains("scale") || !(*q)["scale"].is_number() || !q->contains("min") ||
          !(*q)["min"].is_number()) {
        return Corrupt(qtype + " quantization without numeric \"scale\" and \"min\"");
      }
      w.q_bytes = qtype == "uint8" ? 1 : 2;
      w.scale = (*q)["scale"].get<double>();
      w.min = (*q)["min"].get<double>();
      const double sign_min = qtype == "uint8" ? -128.0 : -32768.0;
      if (dtype == "int32" && w.scale == 1.0 && (w.min == 0.0 || w.min == sign_min)) {
        // Exact storage of 8/16-bit integers: keep their dtype.
        const bool is_signed = w.min != 0.0;
        out = qtype == "uint8" ? (is_signed ? DType::kI8 : DType::kU8)
                               : (is_signed ? DType::kI16 : DType::kU16);
        w.decode = !is_signed ? Decode::kRaw
                              : (qtype == "uint8" ? Decode::kFlipSign8 : Decode::kFlipSign16);
        narrowed_.push_back(name);
      } else {
        out = dtype == "float32" ? DType::kF32 : DType::kI32;
        w.decode = dtype == "float32" ? Decode::kAffineF32 : Decode::kAffineI32;
        Json record = Json::object();
        record["dtype"] = qtype;
        record["scale"] = (*q)["scale"];
        record["min"] = (*q)["min"];
        quantization_[name] = std::move(record);
        dequantized_.push_back(name);
      }
    } else {
      return Unsupported("quantization dtype " + Quote(qtype) +
                         " (TF.js knows uint8, uint16 and float16)");
    }
    MP_ASSIGN_OR_RETURN(w.stored, CheckedMul(count, qtype == "uint8" ? 1 : 2));
    MP_ASSIGN_OR_RETURN(TensorInfo made, TensorInfo::Make(name, out, std::move(shape)));
    info = std::move(made);
    return Status::Ok();
  }

  DType out;
  if (dtype == "float32") {
    out = DType::kF32;
  } else if (dtype == "int32") {
    out = DType::kI32;
  } else if (dtype == "bool") {
    out = DType::kBool;
  } else if (dtype == "complex64") {
    out = DType::kC64;
  } else if (dtype == "string") {
    string_count = count;
    return Status::Ok();
  } else {
    return Unsupported("dtype " + Quote(dtype) +
                       " is not a TF.js weight dtype (float32, int32, bool, complex64, string)");
  }
  MP_ASSIGN_OR_RETURN(TensorInfo made, TensorInfo::Make(name, out, std::move(shape)));
  w.stored = made.byte_size;
  info = std::move(made);
  return Status::Ok();
}

/// The folder a model.json path lives in.
std::string FolderOf(const std::string& json_path) {
  const fs::path parent = fs::path(json_path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// How a tensor is stored: its TF.js dtype and quantization.
struct StoredForm {
  std::string dtype;
  Json quantization;  ///< null when none
  bool flip_sign = false;
};

Result<StoredForm> StoredFormOf(const TensorInfo& info) {
  auto quant = [](const char* dtype, double min) {
    Json q = Json::object();
    q["dtype"] = dtype;
    q["scale"] = 1;
    q["min"] = static_cast<int64_t>(min);
    return q;
  };
  switch (info.dtype) {
    case DType::kF32:
      return StoredForm{"float32", nullptr};
    case DType::kI32:
      return StoredForm{"int32", nullptr};
    case DType::kBool:
      return StoredForm{"bool", nullptr};
    case DType::kC64:
      return StoredForm{"complex64", nullptr};
    case DType::kF16:
      return StoredForm{"float32", Json{{"dtype", "float16"}}};
    case DType::kU8:
      return StoredForm{"int32", quant("uint8", 0)};
    case DType::kI8:
      return StoredForm{"int32", quant("uint8", -128), true};
    case DType::kU16:
      return StoredForm{"int32", quant("uint16", 0)};
    case DType::kI16:
      return StoredForm{"int32", quant("uint16", -32768), true};
    default:
      break;
  }
  std::string hint;
  if (IsFloat(info.dtype)) hint = "; convert with --dtype f32";
  return Unsupported("tensor " + Quote(info.name) + ": TF.js cannot hold " +
                     std::string(DTypeName(info.dtype)) +
                     " (it holds float32, int32, bool, complex64, and float16 and 8/16-bit "
                     "integers through its weight quantization)" +
                     hint);
}

/// A metadata value as model.json holds it: formats whose metadata values are strings
/// (safetensors) keep JSON objects and arrays encoded in a string, which is decoded back.
Json MetadataJson(const Json& value) {
  if (!value.is_string()) return value;
  // One level less: the value sits one level down in model.json, which must stay readable.
  auto parsed = ParseStrictJson(value.get_ref<const std::string&>(), "metadata", kMaxJsonDepth - 1);
  if (parsed.ok() && (parsed->is_object() || parsed->is_array())) return *parsed;
  return value;
}

/// Cuts the group's byte stream into shard files of `cap` bytes in `dir`.
class ShardWriter {
 public:
  ShardWriter(std::string dir, uint64_t cap, size_t count, bool durable)
      : dir_(std::move(dir)), cap_(cap), count_(count), durable_(durable) {}

  static std::string Name(size_t k, size_t n) {
    return "group1-shard" + std::to_string(k) + "of" + std::to_string(n) + ".bin";
  }

  Status Write(const uint8_t* data, uint64_t size) {
    while (size > 0) {
      if (!file_ || file_->bytes_written() == cap_) MP_RETURN_IF_ERROR(Next());
      const uint64_t take = std::min(size, cap_ - file_->bytes_written());
      MP_RETURN_IF_ERROR(file_->Write(data, static_cast<size_t>(take)));
      data += take;
      size -= take;
    }
    return Status::Ok();
  }
  /// Commits the last shard and creates the empty ones a zero-byte stream still names.
  Status Finish() {
    while (index_ < count_) MP_RETURN_IF_ERROR(Next());
    if (file_) MP_RETURN_IF_ERROR(file_->Commit(durable_));
    file_.reset();
    return Status::Ok();
  }

 private:
  Status Next() {
    if (file_) MP_RETURN_IF_ERROR(file_->Commit(durable_));
    ++index_;
    if (index_ > count_) return Internal("tfjs writer: more shard bytes than planned");
    MP_ASSIGN_OR_RETURN(file_,
                        AtomicFile::Create((fs::path(dir_) / Name(index_, count_)).string()));
    return Status::Ok();
  }

  std::string dir_;
  uint64_t cap_;
  size_t count_;
  bool durable_;
  size_t index_ = 0;
  std::unique_ptr<AtomicFile> file_;
};

/// The shard names an existing model.json lists that follow TF.js's naming, to remove once a new
/// model replaces it (best effort: an unreadable old manifest leaves its files).
std::vector<std::string> OldShards(const std::string& json_path) {
  std::vector<std::string> out;
  auto text = ReadSmallFile(json_path, 100'000'000);
  if (!text.ok()) return out;
  auto doc = ParseStrictJson(*text, "model.json", kMaxJsonDepth);
  if (!doc.ok() || !doc->is_object() || !doc->contains("weightsManifest") ||
      !(*doc)["weightsManifest"].is_array()) {
    return out;
  }
  static const std::regex kShardName(R"(group\d+-shard\d+of\d+(\.bin)?)");
  for (const Json& group : (*doc)["weightsManifest"]) {
    if (!group.is_object() || !group.contains("paths") || !group["paths"].is_array()) continue;
    for (const Json& p : group["paths"]) {
      if (p.is_string() && std::regex_match(p.get<std::string>(), kShardName)) {
        out.push_back(p.get<std::string>());
      }
    }
  }
  return out;
}

Status Rename(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) return IoError(from.string() + ": cannot rename to " + to.string() + ": " + ec.message());
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<ModelSource>> Open(const std::string& path, const ReadOptions& options) {
  std::error_code ec;
  std::string json_path = path;
  if (fs::is_directory(path, ec)) {
    json_path = (fs::path(path) / kModelJson).string();
    if (!fs::exists(json_path, ec)) {
      return NotFound(path + ": folder holds no " + std::string(kModelJson));
    }
  }
  MP_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(json_path, options.max_index_bytes));
  const std::string dir = FolderOf(json_path);
  const ShardResolver resolve = [&](const std::string& name) -> Result<Shard> {
    Status s = CheckShardName(dir, name);
    // A missing shard leaves the model incomplete: Corrupt, like a short one.
    if (s.code() == StatusCode::kNotFound) return Corrupt(s.message() + " in " + dir);
    MP_RETURN_IF_ERROR(s);
    auto file = InputFile::Open((fs::path(dir) / name).string(), options.io_mode);
    if (!file.ok()) return file.status();
    return Shard{name, *file, nullptr, (*file)->size()};
  };
  return TfjsSource::Make(text, json_path, resolve, options, json_path);
}

Result<std::unique_ptr<ModelSource>> OpenFromMemory(
    std::string_view model_json, const std::map<std::string, std::shared_ptr<Buffer>>& shards,
    const ReadOptions& options, const std::string& label) {
  if (model_json.size() > options.max_index_bytes) {
    return LimitExceeded(label + ": " + std::to_string(model_json.size()) +
                         " bytes exceeds the limit of " + std::to_string(options.max_index_bytes));
  }
  const ShardResolver resolve = [&](const std::string& name) -> Result<Shard> {
    auto it = shards.find(name);
    if (it == shards.end()) return Corrupt("shard " + Quote(name) + " is missing");
    return Shard{name, nullptr, it->second, it->second->size()};
  };
  return TfjsSource::Make(model_json, label, resolve, options, "");
}

Status Write(const ModelSource& source, const std::string& path, const WriteOptions& options) {
  std::error_code ec;
  std::string dest = path;
  while (dest.size() > 1 && dest.back() == '/') dest.pop_back();
  const bool to_json = dest.ends_with(".json");
  const fs::path folder = to_json ? fs::path(FolderOf(dest)) : fs::path(dest);
  const std::string json_name =
      to_json ? fs::path(dest).filename().string() : std::string(kModelJson);
  const fs::path json_path = folder / json_name;

  // Everything that can be refused is refused before a file is made.
  std::vector<StoredForm> forms;
  uint64_t total = 0;
  for (const TensorInfo& info : source.tensors()) {
    MP_ASSIGN_OR_RETURN(StoredForm form, StoredFormOf(info));
    forms.push_back(std::move(form));
    MP_ASSIGN_OR_RETURN(total, CheckedAdd(total, info.byte_size));
  }
  Json doc = Json::object();
  const Json& meta = source.metadata();
  Json user = Json::object();
  doc["format"] = "layers-model";
  if (meta.is_object() && meta.contains("tfjs.format") && meta["tfjs.format"].is_string())
    doc["format"] = meta["tfjs.format"];
  doc["generatedBy"] = "modelport";
  doc["convertedBy"] = nullptr;
  doc["modelTopology"] = nullptr;
  if (meta.is_object()) {
    for (const auto& [key, value] : meta.items()) {
      if (!key.starts_with(kMetaPrefix)) {
        user[key] = value;
        continue;
      }
      const std::string field = key.substr(kMetaPrefix.size());
      if (field == "quantization" || std::find(std::begin(kWriterFields), std::end(kWriterFields),
                                               field) != std::end(kWriterFields)) {
        continue;
      }
      doc[field] = MetadataJson(value);
    }
  }
  const uint64_t cap = options.shard_size ? options.shard_size : kDefaultShardBytes;
  const size_t count = source.tensors().empty()
                           ? 0
                           : static_cast<size_t>(std::max<uint64_t>(1, (total + cap - 1) / cap));
  Json manifest = Json::array();
  if (!source.tensors().empty()) {
    Json group = Json::object();
    group["paths"] = Json::array();
    for (size_t k = 1; k <= count; ++k) group["paths"].push_back(ShardWriter::Name(k, count));
    group["weights"] = Json::array();
    for (size_t i = 0; i < forms.size(); ++i) {
      const TensorInfo& info = source.tensors()[i];
      Json entry = Json::object();
      entry["name"] = info.name;
      entry["shape"] = info.shape.dims();
      entry["dtype"] = forms[i].dtype;
      if (!forms[i].quantization.is_null()) entry["quantization"] = forms[i].quantization;
      group["weights"].push_back(std::move(entry));
    }
    manifest.push_back(std::move(group));
  }
  doc["weightsManifest"] = std::move(manifest);
  if (!user.empty()) doc["userDefinedMetadata"] = std::move(user);
  std::string text;
  try {
    // Compact, no trailing newline: every proper prefix of the file is invalid JSON.
    text = doc.dump();
  } catch (const Json::exception& e) {
    return InvalidArgument(path + ": tensor name or metadata is not valid UTF-8: " + e.what());
  }

  if (options.no_overwrite && fs::exists(json_path, ec)) {
    return AlreadyExists(json_path.string() + ": exists");
  }
  // A folder that exists gets the files through a hidden folder inside it, model.json renamed
  // last; a new folder is built whole beside its destination and renamed into place.
  const bool folder_exists = fs::is_directory(folder, ec);
  if (!folder_exists && fs::exists(folder, ec)) return IoError(folder.string() + ": not a folder");
  if (!folder_exists && to_json) return IoError(folder.string() + ": no such folder");
  static std::atomic<uint64_t> counter{0};
  const std::string tag = ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  const fs::path parent = folder.has_parent_path() && !folder.parent_path().empty()
                              ? folder.parent_path()
                              : fs::path(".");
  const fs::path tmp = folder_exists ? folder / ("." + json_name + tag)
                                     : parent / ("." + folder.filename().string() + tag);
  if (!fs::create_directory(tmp, ec) || ec) {
    return IoError(tmp.string() +
                   ": cannot create folder: " + (ec ? ec.message() : std::string("exists")));
  }
  const std::vector<std::string> old_shards =
      folder_exists ? OldShards(json_path.string()) : std::vector<std::string>{};

  auto build = [&]() -> Status {
    WriteProgress progress{&options.progress, source.tensors().size(), total};
    ShardWriter shards(tmp.string(), cap, count, options.durable);
    for (size_t i = 0; i < forms.size(); ++i) {
      MP_ASSIGN_OR_RETURN(TensorView t, source.Load(i));
      const TensorInfo& info = source.tensors()[i];
      if (t.data->size() != info.byte_size) {
        return Internal("tensor " + Quote(info.name) + ": loaded " +
                        std::to_string(t.data->size()) + " bytes, expected " +
                        std::to_string(info.byte_size));
      }
      if (forms[i].flip_sign) {
        // i8 / i16 stored as q = v - min with min the type's minimum: flip the sign bit.
        MP_ASSIGN_OR_RETURN(auto flipped, Buffer::Allocate(info.byte_size));
        std::memcpy(flipped->mutable_data(), t.data->data(), info.byte_size);
        const size_t step = info.dtype == DType::kI8 ? 1 : 2;
        for (size_t b = step - 1; b < info.byte_size; b += step) flipped->mutable_data()[b] ^= 0x80;
        t.data = std::move(flipped);
      }
      MP_RETURN_IF_ERROR(shards.Write(t.data->data(), info.byte_size));
      progress.Tick(info.byte_size);
    }
    MP_RETURN_IF_ERROR(shards.Finish());
    MP_ASSIGN_OR_RETURN(auto json, AtomicFile::Create((tmp / json_name).string()));
    MP_RETURN_IF_ERROR(json->Write(text.data(), text.size()));
    MP_RETURN_IF_ERROR(json->Commit(options.durable));
    if (options.durable) MP_RETURN_IF_ERROR(FsyncDir(tmp.string()));
    if (!folder_exists) {
      MP_RETURN_IF_ERROR(Rename(tmp, folder));
      if (options.durable) MP_RETURN_IF_ERROR(FsyncDir(parent.string()));
      return Status::Ok();
    }
    for (size_t k = 1; k <= count; ++k) {
      const std::string name = ShardWriter::Name(k, count);
      MP_RETURN_IF_ERROR(Rename(tmp / name, folder / name));
    }
    MP_RETURN_IF_ERROR(Rename(tmp / json_name, json_path));
    if (options.durable) MP_RETURN_IF_ERROR(FsyncDir(folder.string()));
    return Status::Ok();
  };
  Status s = build();
  fs::remove_all(tmp, ec);
  if (!s.ok()) return std::move(s).WithContext(path);
  std::set<std::string> written;
  for (size_t k = 1; k <= count; ++k) written.insert(ShardWriter::Name(k, count));
  for (const std::string& old : old_shards) {
    if (!written.count(old)) fs::remove(folder / old, ec);
  }
  return Status::Ok();
}

bool Detect(std::span<const uint8_t> prefix, uint64_t /*file_size*/) {
  const std::string_view text(reinterpret_cast<const char*>(prefix.data()), prefix.size());
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || text[first] != '{') return false;
  return text.find("\"weightsManifest\"") != std::string_view::npos ||
         text.find("\"modelTopology\"") != std::string_view::npos;
}

bool DetectDir(const std::string& dir) {
  const std::string json_path = (fs::path(dir) / kModelJson).string();
  auto file = InputFile::Open(json_path, IoMode::kPread);
  if (!file.ok()) return false;
  const uint64_t n = std::min<uint64_t>((*file)->size(), kDetectBytes);
  std::vector<uint8_t> prefix(n);
  if (!(*file)->ReadInto(0, n, prefix.data()).ok()) return false;
  return Detect(prefix, (*file)->size());
}

}  // namespace mp::tfjs
