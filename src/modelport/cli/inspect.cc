// `modelport inspect PATH [--json]`: what a model holds, from its index alone (no tensor data
// is read).
//
// --json fields: "path", "format", "shards" (data files: 1 unless sharded), "files" (their
// paths), "index" (sharded only: the index path), "tensor_count", "parameters" (total element
// count), "total_bytes", "metadata" (the format's metadata object), "notes" (how the file was
// read: TorchScript, tied or shared tensors, which state dict), "tensors": [{"name", "dtype",
// "shape", "bytes"}]; ONNX models add "graph" (onnx::GraphInfoJson: inputs, outputs, opsets,
// producer, IR version, node count by op type, metadata_props); SavedModels add "saved_model"
// (tf::SavedModelJson: schema version, meta graphs with tags and signatures); TFLite models add
// "tflite" (tflite::GraphInfoJson: operator codes, subgraphs with tensors, inputs, outputs and
// operators, signatures, metadata).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "modelport/cli/cli_util.h"
#include "modelport/formats/format.h"
#include "modelport/formats/onnx/onnx.h"
#include "modelport/formats/tf/saved_model.h"
#include "modelport/formats/tflite/tflite.h"

namespace mp::cli {
namespace {

struct InspectOptions {
  std::string path;
  std::string key;
  bool json = false;
};

std::string CompactJson(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Long arrays (a GGUF vocabulary of 32000 tokens) are summarised by their length, element kind
// and first few elements: "[32000 strings: '<unk>', '<s>', '</s>', ... ]".
std::string MetadataValueText(const Json& value) {
  constexpr size_t kShown = 3, kLongArray = 8;
  if (value.is_string()) return value.get<std::string>();
  if (!value.is_array() || value.size() <= kLongArray) return CompactJson(value);
  const bool strings =
      std::all_of(value.begin(), value.end(), [](const Json& v) { return v.is_string(); });
  const bool numbers =
      std::all_of(value.begin(), value.end(), [](const Json& v) { return v.is_number(); });
  std::string out = "[" + std::to_string(value.size()) +
                    (strings   ? " strings: "
                     : numbers ? " numbers: "
                               : " values: ");
  for (size_t i = 0; i < kShown; ++i) {
    out += strings ? "'" + value[i].get<std::string>() + "'" : CompactJson(value[i]);
    out += ", ";
  }
  return out + "... ]";
}

std::string ValueText(const onnx::ValueInfo& v) {
  std::string dims;
  for (const std::string& d : v.dims) dims += (dims.empty() ? "" : ", ") + d;
  return v.name + ": " + v.type + (v.has_shape ? " [" + dims + "]" : "");
}

// The graph of an ONNX model: what goes in and out, which operators, which opsets.
void PrintGraph(const onnx::GraphInfo& g) {
  std::printf("graph:\n");
  std::printf("  ir version:  %lld\n", static_cast<long long>(g.ir_version));
  std::printf("  producer:    %s %s\n", g.producer_name.c_str(), g.producer_version.c_str());
  std::string opsets;
  for (const auto& [domain, version] : g.opsets) {
    opsets += (opsets.empty() ? "" : ", ") + (domain.empty() ? "ai.onnx" : domain) + " " +
              std::to_string(version);
  }
  std::printf("  opsets:      %s\n", opsets.c_str());
  for (const auto& v : g.inputs) std::printf("  input:       %s\n", ValueText(v).c_str());
  for (const auto& v : g.outputs) std::printf("  output:      %s\n", ValueText(v).c_str());
  std::string ops;
  for (const auto& [op, n] : g.op_counts) {
    ops += (ops.empty() ? "" : ", ") + op + " " + std::to_string(n);
  }
  std::printf("  nodes:       %llu (%s)\n", static_cast<unsigned long long>(g.node_count),
              ops.c_str());
}

Status Inspect(const InspectOptions& opt) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> source,
                      OpenModel(opt.path, KeyOptions(opt.key)));
  const ModelFiles files = source->files();
  MP_ASSIGN_OR_RETURN(const uint64_t parameters, source->TotalElements());
  MP_ASSIGN_OR_RETURN(const uint64_t total_bytes, source->TotalBytes());
  const auto& infos = source->tensors();

  if (opt.json) {
    Json doc = Json::object();
    doc["path"] = opt.path;
    doc["format"] = source->format();
    doc["shards"] = files.files.size();
    doc["files"] = files.files;
    if (!files.index.empty()) doc["index"] = files.index;
    doc["tensor_count"] = infos.size();
    doc["parameters"] = parameters;
    doc["total_bytes"] = total_bytes;
    doc["metadata"] = source->metadata().is_null() ? Json::object() : source->metadata();
    doc["notes"] = source->notes();
    if (const auto* o = dynamic_cast<const onnx::OnnxSource*>(source.get())) {
      doc["graph"] = onnx::GraphInfoJson(o->graph_info());
    }
    if (const auto* sm = dynamic_cast<const tf::SavedModelSource*>(source.get())) {
      doc["saved_model"] = tf::SavedModelJson(sm->info());
    }
    if (const auto* tfl = tflite::AsTflite(*source)) {
      doc["tflite"] = tflite::GraphInfoJson(tfl->graph_info());
    }
    Json tensors = Json::array();
    for (const TensorInfo& t : infos) {
      tensors.push_back({{"name", t.name},
                         {"dtype", DTypeName(t.dtype)},
                         {"shape", ShapeJson(t.shape)},
                         {"bytes", t.byte_size}});
    }
    doc["tensors"] = std::move(tensors);
    PrintJson(doc);
    return Status::Ok();
  }

  std::printf("path:        %s\n", opt.path.c_str());
  std::printf("format:      %.*s\n", static_cast<int>(source->format().size()),
              source->format().data());
  if (!files.index.empty()) {
    std::printf("shards:      %zu (index %s)\n", files.files.size(), files.index.c_str());
  }
  std::printf("tensors:     %zu\n", infos.size());
  std::printf("parameters:  %s\n", WithThousands(parameters).c_str());
  std::printf("total bytes: %s (%s)\n", WithThousands(total_bytes).c_str(),
              HumanBytes(total_bytes).c_str());
  const Json& metadata = source->metadata();
  if (metadata.is_object() && !metadata.empty()) {
    std::printf("metadata:\n");
    for (const auto& [key, value] : metadata.items()) {
      std::printf("  %s: %s\n", key.c_str(), MetadataValueText(value).c_str());
    }
  }
  if (const auto* o = dynamic_cast<const onnx::OnnxSource*>(source.get())) {
    PrintGraph(o->graph_info());
  }
  if (const auto* sm = dynamic_cast<const tf::SavedModelSource*>(source.get())) {
    std::printf("\n%s", tf::FormatSignatures(sm->info()).c_str());
  }
  if (const auto* tfl = tflite::AsTflite(*source)) {
    std::printf("\n");
    for (const std::string& line : tflite::GraphSummary(tfl->graph_info())) {
      std::printf("%s\n", line.c_str());
    }
  }
  if (const auto notes = source->notes(); !notes.empty()) {
    std::printf("notes:\n");
    for (const auto& note : notes) std::printf("  - %s\n", note.c_str());
  }
  std::printf("\n");
  Table table({"name", "dtype", "shape", "bytes"}, {false, false, false, true});
  for (const TensorInfo& t : infos) {
    table.AddRow(
        {t.name, std::string(DTypeName(t.dtype)), ShapeText(t.shape), std::to_string(t.byte_size)});
  }
  table.Print(stdout);
  return Status::Ok();
}

}  // namespace

Command AddInspectCommand(CLI::App& app) {
  auto opt = std::make_shared<InspectOptions>();
  CLI::App* sub = app.add_subcommand(
      "inspect",
      "Show a model's format, tensors (name, dtype, shape, bytes), parameter count, "
      "total bytes, metadata and shards. Reads only the index, never tensor data.");
  sub->add_option("PATH", opt->path, "model file, sharded index, or folder")->required();
  AddKeyOption(sub, &opt->key);
  sub->add_flag("--json", opt->json, "print one JSON document on stdout");
  return {sub, [opt] { return ReportError(Inspect(*opt)); }};
}

}  // namespace mp::cli
