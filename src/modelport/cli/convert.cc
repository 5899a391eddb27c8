// `modelport convert SRC DST [--to FORMAT] [--dtype D] [--dequantize] [--shard-size SIZE] [--force]
// [--map torch-to-keras|keras-to-torch [--layer MODULE=KIND]... [--map-file F]] [--json]`:
// streams SRC tensor by tensor into DST (atomically: temporary file, fsync, rename), casting
// floating-point tensors when --dtype is given and re-laying out layers between the PyTorch and
// Keras conventions with --map (convert/keras_map.h), whose report it prints.
//
// --json fields: "source", "source_format", "destination", "format", "dtype" (null when not
// cast), "shard_size" (0: one file), "tensors", "bytes" (tensor bytes written), "seconds",
// "files" (data files written), "index" (sharded only: the index path), "map" (with --map:
// MapReport::ToJson).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "modelport/cli/cli_util.h"
#include "modelport/convert/cast.h"
#include "modelport/convert/keras_map.h"
#include "modelport/convert/quantize.h"
#include "modelport/formats/format.h"
#include "modelport/formats/tflite/tflite.h"

namespace mp::cli {
namespace {

namespace fs = std::filesystem;

struct ConvertOptions {
  std::string src;
  std::string key;
  std::string dst;
  std::string to;
  std::string dtype;
  std::string shard_size;
  std::vector<std::string> meta;    // KEY=VALUE
  std::string map;                  // torch-to-keras | keras-to-torch
  std::vector<std::string> layers;  // MODULE=KIND
  std::string map_file;
  bool dequantize = false;
  bool force = false;
  bool json = false;
};

bool Exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
}

bool SameFile(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec);
}

// `source` with metadata keys added or replaced (--meta); tensors pass through untouched.
class WithMetadata final : public ModelSource {
 public:
  WithMetadata(const ModelSource& source, Json metadata)
      : source_(source), metadata_(std::move(metadata)) {}
  std::string_view format() const override { return source_.format(); }
  const std::vector<TensorInfo>& tensors() const override { return source_.tensors(); }
  const Json& metadata() const override { return metadata_; }
  Result<TensorView> Load(size_t index) const override { return source_.Load(index); }
  Status LoadInto(size_t index, std::span<uint8_t> dest) const override {
    return source_.LoadInto(index, dest);
  }
  ModelFiles files() const override { return source_.files(); }

 private:
  const ModelSource& source_;
  Json metadata_;
};

// "KEY=VALUE" pairs over `base`. A VALUE that is JSON (4096, true, [1,2]) keeps its type, so a
// GGUF key gets a typed value; anything else is a string.
Result<Json> MergeMeta(const Json& base, const std::vector<std::string>& pairs) {
  Json merged = base.is_object() ? base : Json::object();
  for (const std::string& pair : pairs) {
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument("--meta '" + pair + "': expected KEY=VALUE");
    }
    const std::string value = pair.substr(eq + 1);
    Json parsed = Json::parse(value, nullptr, /*allow_exceptions=*/false);
    merged[pair.substr(0, eq)] = parsed.is_discarded() ? Json(value) : std::move(parsed);
  }
  return merged;
}

Result<DType> ParseTargetDType(const std::string& text) {
  auto parsed = ParseDType(text);
  const bool allowed = parsed && (*parsed == DType::kF16 || *parsed == DType::kBF16 ||
                                  *parsed == DType::kF32 || *parsed == DType::kF64);
  if (!allowed) {
    return InvalidArgument("--dtype '" + text + "': expected one of f16, bf16, f32, f64");
  }
  return *parsed;
}

// What a sharded write produces in `folder`, for the overwrite check: the index and shards
// named "model-*<ext>".
bool FolderHasShardedModel(const fs::path& folder, const FormatDescriptor& format) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    for (auto ext : format.extensions) {
      if (name == "model" + std::string(ext) + ".index.json" ||
          (name.starts_with("model-") && name.ends_with(ext))) {
        return true;
      }
    }
  }
  return false;
}

// Refuses to write over the source: readers map their files lazily, so replacing one while it
// is read would mix old and new bytes.
Status CheckNotSource(const ModelSource& src, const fs::path& dst, bool dst_is_folder) {
  const ModelFiles src_files = src.files();
  std::vector<std::string> all = src_files.files;
  if (!src_files.index.empty()) all.push_back(src_files.index);
  for (const auto& f : all) {
    const bool clash = dst_is_folder ? SameFile(fs::path(f).parent_path(), dst) : SameFile(f, dst);
    if (clash) {
      return InvalidArgument(dst.string() + ": destination would overwrite the source " + f);
    }
  }
  return Status::Ok();
}

// --map's options, checked before anything is opened.
Result<std::optional<MapOptions>> ParseMapOptions(const ConvertOptions& opt) {
  if (opt.map.empty()) {
    if (!opt.layers.empty() || !opt.map_file.empty()) {
      return InvalidArgument("--layer and --map-file need --map torch-to-keras|keras-to-torch");
    }
    return std::optional<MapOptions>();
  }
  MapOptions options;
  MP_ASSIGN_OR_RETURN(options.direction, ParseMapDirection(opt.map));
  if (!opt.map_file.empty()) MP_RETURN_IF_ERROR(AddLayerMapFile(opt.map_file, &options));
  for (const std::string& layer : opt.layers) MP_RETURN_IF_ERROR(AddLayerOption(layer, &options));
  return std::optional<MapOptions>(std::move(options));
}

void PrintMapReport(const MapReport& report) {
  Table table({"source", "target", "kind", "transform"}, {false, false, false, false});
  for (const MappedTensor& t : report.tensors) {
    std::string sources;
    for (const std::string& s : t.sources) sources += (sources.empty() ? "" : " + ") + s;
    table.AddRow({sources.empty() ? "-" : sources, t.target.empty() ? "-" : t.target,
                  t.kind.empty() ? "-" : t.kind, t.transform});
  }
  std::printf("mapping %.*s:\n", static_cast<int>(MapDirectionName(report.direction).size()),
              MapDirectionName(report.direction).data());
  table.Print(stdout);
  for (const auto& [name, reason] : report.unmapped) {
    std::printf("unmapped (carried over unchanged): %s: %s\n", name.c_str(), reason.c_str());
  }
  for (const std::string& note : report.notes) std::printf("note: %s\n", note.c_str());
}

Status Convert(const ConvertOptions& opt) {
  const bool sharded = !opt.shard_size.empty();
  MP_ASSIGN_OR_RETURN(const std::optional<MapOptions> map_options, ParseMapOptions(opt));
  WriteOptions write_options;
  if (sharded) {
    MP_ASSIGN_OR_RETURN(write_options.shard_size, ParseSize(opt.shard_size));
  }
  std::optional<DType> dtype;
  if (!opt.dtype.empty()) {
    MP_ASSIGN_OR_RETURN(dtype, ParseTargetDType(opt.dtype));
  }

  std::error_code ec;
  // A sharded destination is an index file (".json") or a folder the shards go into.
  const bool dst_is_folder =
      fs::is_directory(opt.dst, ec) || (sharded && !opt.dst.ends_with(".json"));
  if (sharded && dst_is_folder && !fs::is_directory(opt.dst, ec) && FormatForOutput(opt.dst).ok()) {
    return InvalidArgument(opt.dst +
                           ": with --shard-size, DST is a folder or an index path "
                           "(model.safetensors.index.json), not a model file");
  }
  if (dst_is_folder && !sharded) {
    return InvalidArgument(opt.dst +
                           ": is a folder; give a file name (or --shard-size to "
                           "write shards into the folder)");
  }

  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> source, OpenModel(opt.src, KeyOptions(opt.key)));
  const FormatDescriptor* format = nullptr;
  if (opt.to.empty() && dst_is_folder) {
    MP_ASSIGN_OR_RETURN(format, FindFormat(source->format()));
  } else {
    MP_ASSIGN_OR_RETURN(format, FormatForOutput(opt.dst, opt.to));
  }
  if (!format->caps.write) {
    return Unsupported(opt.dst + ": writing " + std::string(format->name) + " is not supported");
  }
  if (sharded && !format->caps.sharded) {
    return Unsupported(opt.dst + ": " + std::string(format->name) +
                       " cannot be written as shards (--shard-size)");
  }
  MP_RETURN_IF_ERROR(CheckNotSource(*source, opt.dst, dst_is_folder));
  if (!opt.force) {
    const bool occupied =
        dst_is_folder ? fs::is_directory(opt.dst, ec) && FolderHasShardedModel(opt.dst, *format)
                      : Exists(opt.dst);
    if (occupied) {
      return AlreadyExists(opt.dst + ": already exists (use --force to replace it)");
    }
  }
  write_options.no_overwrite = !opt.force;

  // --dequantize: TFLite's (q - zero_point) * scale, int8 NAME + NAME_scale pairs and ggml
  // blocks become f32 (convert/quantize.h, formats/tflite/tflite.h).
  std::unique_ptr<ModelSource> dequantized;
  if (opt.dequantize) {
    if (const auto* tfl = tflite::AsTflite(*source)) {
      MP_ASSIGN_OR_RETURN(dequantized, tflite::Dequantize(*tfl));
    } else {
      MP_ASSIGN_OR_RETURN(dequantized, Dequantize(*source, DType::kF32));
    }
  }
  const ModelSource* in_ptr = dequantized ? dequantized.get() : source.get();
  std::unique_ptr<ModelSource> mapped;
  MapReport map_report;
  if (map_options) {
    MP_ASSIGN_OR_RETURN(mapped, MapLayers(*in_ptr, *map_options, &map_report));
    in_ptr = mapped.get();
  }
  std::unique_ptr<ModelSource> cast;
  if (dtype) cast = CastFloats(*in_ptr, *dtype);
  const ModelSource* out_ptr = cast ? cast.get() : in_ptr;
  std::unique_ptr<ModelSource> with_meta;
  if (!opt.meta.empty()) {
    MP_ASSIGN_OR_RETURN(Json merged, MergeMeta(out_ptr->metadata(), opt.meta));
    with_meta = std::make_unique<WithMetadata>(*out_ptr, std::move(merged));
    out_ptr = with_meta.get();
  }
  const ModelSource& out = *out_ptr;
  MP_ASSIGN_OR_RETURN(const uint64_t bytes, out.TotalBytes());

  ProgressBar progress("converting");
  if (progress.enabled()) {
    write_options.progress = [&progress](uint64_t t, uint64_t tt, uint64_t b, uint64_t bt) {
      progress.Update(t, tt, b, bt);
    };
  }
  bool made_folder = false;
  if (dst_is_folder && !fs::exists(opt.dst, ec)) {
    MP_RETURN_IF_ERROR(MakeDirs(opt.dst));
    made_folder = true;
  }
  const auto start = std::chrono::steady_clock::now();
  Status written = format->write(out, opt.dst, write_options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.Clear();
  if (!written.ok()) {
    if (made_folder) fs::remove(opt.dst, ec);  // only removes it if still empty
    return written;
  }
  // Reopening the result lists the files it is made of (and checks it parses).
  std::optional<ModelFiles> files;
  if (auto written_model = OpenModel(opt.dst)) files = (*written_model)->files();

  if (opt.json) {
    Json doc = Json::object();
    doc["source"] = opt.src;
    doc["source_format"] = source->format();
    doc["destination"] = opt.dst;
    doc["format"] = format->name;
    doc["dtype"] = dtype ? Json(DTypeName(*dtype)) : Json(nullptr);
    doc["shard_size"] = write_options.shard_size;
    doc["tensors"] = out.tensors().size();
    doc["bytes"] = bytes;
    doc["seconds"] = seconds;
    doc["files"] = files ? Json(files->files) : Json::array();
    if (files && !files->index.empty()) doc["index"] = files->index;
    if (map_options) doc["map"] = map_report.ToJson();
    PrintJson(doc);
    return Status::Ok();
  }
  if (map_options) PrintMapReport(map_report);
  std::string how(format->name);
  if (files && !files->index.empty()) {
    how += ", " + std::to_string(files->files.size()) + " shards + index";
  }
  if (dtype) how += ", floats as " + std::string(DTypeName(*dtype));
  std::printf("converted %s (%.*s) -> %s (%s): %zu tensors, %s bytes (%s) in %.2f s\n",
              opt.src.c_str(), static_cast<int>(source->format().size()), source->format().data(),
              opt.dst.c_str(), how.c_str(), out.tensors().size(), WithThousands(bytes).c_str(),
              HumanBytes(bytes).c_str(), seconds);
  return Status::Ok();
}

}  // namespace

Command AddConvertCommand(CLI::App& app) {
  auto opt = std::make_shared<ConvertOptions>();
  CLI::App* sub = app.add_subcommand(
      "convert",
      "Convert SRC to DST, tensor by tensor (memory bounded by the largest tensor). DST appears "
      "atomically: a failure or Ctrl-C leaves no partial file.");
  sub->add_option("SRC", opt->src, "model file, sharded index, or folder to read")->required();
  sub->add_option("DST", opt->dst,
                  "file to write; with --shard-size an index path (.json) or a folder")
      ->required();
  sub->add_option("--to", opt->to, "output format (default: from DST's extension)");
  sub->add_option("--dtype", opt->dtype,
                  "cast floating-point tensors to f16, bf16, f32 or f64 (round to nearest even); "
                  "integer, bool and complex tensors are kept");
  sub->add_option("--shard-size", opt->shard_size,
                  "write shards of at most SIZE tensor bytes plus an index: 5GB (5*10^9 "
                  "bytes, as Hugging Face reads it), 500MB, 2GiB (2*2^30 bytes) or plain bytes");
  sub->add_option("--meta", opt->meta,
                  "add or replace a metadata key: KEY=VALUE, repeatable; VALUE is kept typed "
                  "when it is JSON (4096, true), else a string (e.g. --meta general.name=tiny)");
  sub->add_flag("--dequantize", opt->dequantize,
                "turn quantized tensors into f32 first: TFLite int8/uint8 with scale and zero "
                "point, int8 NAME + NAME_scale pairs, ggml block types");
  sub->add_option("--map", opt->map,
                  "re-lay out layers between PyTorch and Keras conventions: torch-to-keras or "
                  "keras-to-torch (Linear/Dense, conv, depthwise, norms, embedding, LSTM, GRU); "
                  "prints what each tensor became; unmapped tensors are carried over and listed");
  sub->add_option("--layer", opt->layers,
                  "with --map: the kind of a module/layer the tensors cannot tell, MODULE=KIND, "
                  "repeatable (linear, conv, conv_transpose, depthwise[:M], batchnorm, layernorm, "
                  "embedding, lstm, gru, rnn)")
      ->allow_extra_args(false);
  sub->add_option("--map-file", opt->map_file,
                  "with --map: a JSON file {\"MODULE\": \"KIND\", ...} of --layer choices");
  sub->add_flag("--force", opt->force, "replace an existing DST");
  AddKeyOption(sub, &opt->key);
  sub->add_flag("--json", opt->json, "print one JSON document on stdout");
  return {sub, [opt] { return ReportError(Convert(*opt)); }};
}

}  // namespace mp::cli
