// `modelport quantize SRC DST --scheme S` and `modelport dequantize SRC DST` (convert/quantize.h,
// convert/onnx_quantize.h): SRC is a model file, folder or registry reference; DST is written
// atomically. quantize prints one line per tensor with the error it introduced (or why it was
// kept) and the totals; --json prints QuantReport::ToJson plus "source", "destination",
// "format" and, with --push, "pushed" (the new registry version, whose lineage names SRC when
// SRC is a registry version).
#include "modelport/convert/quantize.h"

#include <stdlib.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "modelport/cli/cli_util.h"
#include "modelport/convert/onnx_quantize.h"
#include "modelport/formats/format.h"
#include "modelport/formats/onnx/onnx.h"
#include "modelport/registry/registry.h"

namespace mp::cli {
namespace {

namespace fs = std::filesystem;

struct QuantizeCliOptions {
  bool dequantize = false;
  std::string src, dst, to, key;
  std::string scheme;         // quantize
  std::string dtype = "f32";  // dequantize
  bool per_tensor = false;
  int axis = 0;
  std::vector<std::string> include, exclude;
  uint64_t min_size = 1024;
  std::string push;  // registry model name to register DST under
  std::string root, db;
  bool no_verify = false;
  bool force = false;
  bool json = false;
  std::string command_line;
};

// A uniquely named folder removed (with its contents) when the object goes.
class TempFolder {
 public:
  static Result<TempFolder> Make(const fs::path& parent) {
    std::string pattern =
        ((parent.empty() ? fs::path(".") : parent) / ".modelport-quantize-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      return IoError(pattern + ": cannot make a scratch folder: " + std::strerror(errno));
    }
    return TempFolder(pattern);
  }
  TempFolder(TempFolder&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempFolder& operator=(TempFolder&& other) noexcept {
    std::swap(path_, other.path_);
    return *this;
  }
  ~TempFolder() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  explicit TempFolder(fs::path path) : path_(std::move(path)) {}
  fs::path path_;
};

bool Exists(const std::string& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
}

std::string Num(double v, const char* format) {
  if (std::isinf(v)) return "inf";
  char text[64];
  std::snprintf(text, sizeof(text), format, v);
  return text;
}

void PrintReport(const QuantReport& report) {
  Table table({"tensor", "dtype", "bytes", "max abs err", "rmse", "snr dB", "cosine"},
              {false, false, true, true, true, true, true});
  for (const TensorQuantReport& t : report.tensors) {
    if (!t.quantized) {
      table.AddRow({t.name, std::string(DTypeName(t.from)) + " kept: " + t.reason,
                    WithThousands(t.bytes_before), "", "", "", ""});
      continue;
    }
    const std::string dtype = std::string(DTypeName(t.from)) + " -> " +
                              std::string(DTypeName(t.to)) +
                              (t.axis >= 0 ? " (axis " + std::to_string(t.axis) + ")" : "");
    const std::string bytes = WithThousands(t.bytes_before) + " -> " + WithThousands(t.bytes_after);
    if (!t.measured) {
      table.AddRow({t.name, dtype, bytes, "-", "-", "-", "-"});
      continue;
    }
    table.AddRow({t.name, dtype, bytes, Num(t.error.max_abs, "%.3g"), Num(t.error.rmse(), "%.3g"),
                  Num(t.error.snr_db(), "%.1f"), Num(t.error.cosine(), "%.6f")});
  }
  table.Print(stdout);
  const ErrorStats all = report.overall();
  const uint64_t before = report.bytes_before(), after = report.bytes_after();
  std::printf(
      "%s: %" PRIu64
      " of %zu tensors quantized; tensor bytes %s -> %s (%.1f%%); overall max abs "
      "err %s, rmse %s, snr %s dB, cosine %s\n",
      std::string(SchemeName(report.scheme)).c_str(), report.quantized_count(),
      report.tensors.size(), HumanBytes(before).c_str(), HumanBytes(after).c_str(),
      before == 0 ? 100.0 : 100.0 * static_cast<double>(after) / static_cast<double>(before),
      Num(all.max_abs, "%.3g").c_str(), Num(all.rmse(), "%.3g").c_str(),
      Num(all.snr_db(), "%.1f").c_str(), Num(all.cosine(), "%.6f").c_str());
}

Status Run(const QuantizeCliOptions& o) {
  QuantizeOptions q;
  DType dequantize_to = DType::kF32;
  if (o.dequantize) {
    MP_ASSIGN_OR_RETURN(dequantize_to, ParseDType(o.dtype));
  } else {
    MP_ASSIGN_OR_RETURN(q.scheme, ParseQuantScheme(o.scheme));
    q.per_tensor = o.per_tensor;
    q.axis = o.axis;
    q.include = o.include;
    q.exclude = o.exclude;
    q.min_elements = o.min_size;
  }
  MP_ASSIGN_OR_RETURN(const FormatDescriptor* format, FormatForOutput(o.dst, o.to));
  q.output_format = std::string(format->name);
  if (!o.dequantize && IsQuantized(SchemeDType(q.scheme)) && format->name != "gguf") {
    return InvalidArgument("--scheme " + o.scheme + " writes ggml blocks, which only GGUF holds; " +
                           "give DST a .gguf name or --to gguf (" + o.dst + " would be " +
                           std::string(format->name) + ")");
  }
  if (!o.force && Exists(o.dst)) {
    return AlreadyExists(o.dst + ": already exists (use --force to replace it)");
  }

  // SRC: a file or folder, else a registry reference.
  std::unique_ptr<registry::Registry> reg;
  std::optional<registry::VersionRecord> from_version;
  std::unique_ptr<ModelSource> source;
  if (Exists(o.src)) {
    MP_ASSIGN_OR_RETURN(source, OpenModel(o.src, KeyOptions(o.key)));
  } else {
    auto ref = registry::ParseRef(o.src);
    if (!ref) return NotFound(o.src + ": no such file or folder, and not a registry reference");
    MP_ASSIGN_OR_RETURN(reg, OpenRegistryFrom(o.root, o.db));
    MP_ASSIGN_OR_RETURN(from_version, reg->Resolve(*ref));
    MP_ASSIGN_OR_RETURN(source, reg->Load(*from_version, !o.no_verify));
  }
  for (const std::string& f : source->files().files) {
    std::error_code ec;
    if (fs::equivalent(f, o.dst, ec)) {
      return InvalidArgument(o.dst + ": destination would overwrite the source " + f);
    }
  }

  WriteOptions write;
  write.no_overwrite = !o.force;
  ProgressBar progress(o.dequantize ? "dequantizing" : "quantizing");
  if (progress.enabled()) {
    write.progress = [&progress](uint64_t t, uint64_t tt, uint64_t b, uint64_t bt) {
      progress.Update(t, tt, b, bt);
    };
  }
  QuantReport report;
  Status written;
  const auto* onnx_source = dynamic_cast<const onnx::OnnxSource*>(source.get());
  // A registry version pushed from ONNX keeps its graph: exported beside DST to rewrite it.
  std::optional<TempFolder> exported;
  if (format->name == "onnx" && onnx_source == nullptr && from_version) {
    MP_ASSIGN_OR_RETURN(exported, TempFolder::Make(fs::path(o.dst).parent_path()));
    const std::string model_path = (exported->path() / "model.onnx").string();
    WriteOptions scratch;
    scratch.durable = false;
    MP_RETURN_IF_ERROR(reg->ExportOnnx(*from_version, model_path, scratch, !o.no_verify));
    MP_ASSIGN_OR_RETURN(source, OpenModel(model_path));
    onnx_source = dynamic_cast<const onnx::OnnxSource*>(source.get());
  }
  if (format->name == "onnx") {
    if (onnx_source == nullptr) {
      return Unsupported(o.dst + ": ONNX is written from an ONNX model (the graph comes from " +
                         "it); " + o.src + " is " + std::string(source->format()));
    }
    if (o.dequantize) {
      written = DequantizeOnnx(*onnx_source, o.dst, dequantize_to, write);
    } else {
      Result<QuantReport> r = QuantizeOnnx(*onnx_source, o.dst, q, write);
      if (r) report = std::move(*r);
      written = r.status();
    }
  } else {
    if (!format->caps.write) {
      return Unsupported(o.dst + ": writing " + std::string(format->name) + " is not supported");
    }
    Result<std::unique_ptr<ModelSource>> view =
        o.dequantize ? Dequantize(*source, dequantize_to) : Quantize(*source, q, &report);
    if (!view) return view.status();
    written = format->write(**view, o.dst, write);
  }
  progress.Clear();
  MP_RETURN_IF_ERROR(written);

  std::optional<registry::VersionRecord> pushed;
  if (!o.push.empty()) {
    if (!reg) {
      MP_ASSIGN_OR_RETURN(reg, OpenRegistryFrom(o.root, o.db));
    }
    MP_ASSIGN_OR_RETURN(auto result, OpenModel(o.dst));
    registry::PushOptions p;
    if (from_version)
      p.from = registry::Ref{from_version->model, std::to_string(from_version->version)};
    p.relation = o.dequantize ? "dequantized" : "quantized";
    p.command = o.command_line;
    p.params = o.dequantize ? Json{{"dtype", o.dtype}} : Json{{"scheme", SchemeName(q.scheme)},
                                                              {"per_tensor", q.per_tensor},
                                                              {"axis", q.axis},
                                                              {"min_size", q.min_elements},
                                                              {"include", q.include},
                                                              {"exclude", q.exclude}};
    if (!o.dequantize) {
      p.metrics = {{"quantized_tensors", report.quantized_count()},
                   {"bytes_ratio", report.bytes_before() == 0
                                       ? 1.0
                                       : static_cast<double>(report.bytes_after()) /
                                             static_cast<double>(report.bytes_before())},
                   {"cosine", report.overall().cosine()}};
    }
    MP_ASSIGN_OR_RETURN(pushed, reg->Push(o.push, *result, p));
  }

  if (o.json) {
    Json doc = o.dequantize ? Json::object() : report.ToJson();
    doc["source"] = o.src;
    doc["destination"] = o.dst;
    doc["format"] = format->name;
    if (o.dequantize) doc["dtype"] = o.dtype;
    if (pushed) doc["pushed"] = pushed->model + "@" + std::to_string(pushed->version);
    PrintJson(doc);
    return Status::Ok();
  }
  if (o.dequantize) {
    std::printf("dequantized %s -> %s (%s, floats as %s)\n", o.src.c_str(), o.dst.c_str(),
                std::string(format->name).c_str(), o.dtype.c_str());
  } else {
    PrintReport(report);
    std::printf("wrote %s (%s)\n", o.dst.c_str(), std::string(format->name).c_str());
  }
  if (pushed)
    std::printf("pushed %s@%lld\n", pushed->model.c_str(), static_cast<long long>(pushed->version));
  return Status::Ok();
}

void AddCommon(CLI::App* sub, QuantizeCliOptions* o) {
  sub->add_option("SRC", o->src, "model file, folder, or registry reference (NAME@3)")->required();
  sub->add_option("DST", o->dst, "file to write (format from its extension, or --to)")->required();
  sub->add_option("--to", o->to, "output format (default: from DST's extension)");
  sub->add_flag("--force", o->force, "replace an existing DST");
  sub->add_option("--push", o->push,
                  "also register DST as a new version of this registry model, with lineage "
                  "(relation quantized/dequantized, the command, the parameters)");
  sub->add_option("--registry", o->root,
                  "registry folder (default $MODELPORT_REGISTRY, else ~/.modelport/registry)");
  sub->add_option("--db", o->db, "registry database URL (default $MODELPORT_DB, else SQLite)");
  sub->add_flag("--no-verify", o->no_verify, "registry source: skip checking blobs as they load");
  AddKeyOption(sub, &o->key);
  sub->add_flag("--json", o->json, "print one JSON document on stdout");
}

// The command as typed, for registry lineage.
std::string CommandLine(int argc, char** argv) {
  std::string line;
  for (int i = 0; i < argc; ++i) line += (i ? " " : "") + std::string(argv[i]);
  return line;
}

}  // namespace

Command AddQuantizeCommand(CLI::App& app, int argc, char** argv) {
  auto o = std::make_shared<QuantizeCliOptions>();
  o->command_line = CommandLine(argc, argv);
  CLI::App* sub = app.add_subcommand(
      "quantize",
      "Write SRC to DST with its weights quantized (docs/FORMATS.md, Quantization): casts f16, "
      "bf16, f8_e4m3, f8_e5m2; int8 symmetric per output channel (safetensors/.pt: NAME + "
      "NAME_scale; ONNX: DequantizeLinear nodes); ggml q8_0, q4_0, q4_1, q5_0, q5_1 (GGUF). "
      "Reports the error per tensor.");
  AddCommon(sub, o.get());
  sub->add_option("--scheme", o->scheme,
                  "f16, bf16, f8_e4m3, f8_e5m2, int8, q8_0, q4_0, q4_1, q5_0 or q5_1")
      ->required();
  sub->add_flag("--per-tensor", o->per_tensor, "int8: one scale per tensor, not per channel");
  sub->add_option("--axis", o->axis,
                  "int8: the output-channel axis of the scales (default 0, PyTorch's layout; "
                  "ONNX graphs: judged from each weight's consumer)");
  sub->add_option("--include", o->include,
                  "only tensors whose name matches this glob (repeatable)");
  sub->add_option("--exclude", o->exclude, "leave tensors matching this glob (repeatable)");
  sub->add_option("--min-size", o->min_size,
                  "leave tensors with fewer elements (default 1024); rank-1 tensors (biases, "
                  "norms) are always left");
  return {sub, [o] { return ReportError(Run(*o)); }};
}

Command AddDequantizeCommand(CLI::App& app, int argc, char** argv) {
  auto o = std::make_shared<QuantizeCliOptions>();
  o->dequantize = true;
  o->command_line = CommandLine(argc, argv);
  CLI::App* sub = app.add_subcommand(
      "dequantize",
      "Write SRC to DST with every quantized tensor back in floating point: int8 NAME + "
      "NAME_scale pairs, ggml block types, ONNX DequantizeLinear/Cast of initializers, and "
      "floats of another width.");
  AddCommon(sub, o.get());
  sub->add_option("--dtype", o->dtype, "f32 (default), f16, bf16 or f64");
  return {sub, [o] { return ReportError(Run(*o)); }};
}

}  // namespace mp::cli
