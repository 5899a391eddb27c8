// `modelport onnx rewrite MODEL -o OUT` and `modelport onnx set-weights MODEL WEIGHTS -o OUT`:
// write an ONNX model again with its graph untouched, its initializers inline or in one
// external data file (--inline, --external-data), and, for set-weights, initializer values
// taken by name from another model (a fine-tuned safetensors, a PyTorch checkpoint, ...).
//
// --json fields: "source", "weights" (set-weights only), "destination", "data_file" (null when
// every tensor is inline), "replaced" and "unused" (names), "inline_tensors", "inline_bytes",
// "external_tensors", "external_bytes", "model_bytes", "seconds".
#include "modelport/formats/onnx/onnx.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "modelport/cli/cli_util.h"
#include "modelport/formats/format.h"

namespace mp::cli {
namespace {

struct OnnxOptions {
  std::string model;
  std::string weights;  // set-weights only
  std::string key;      // --key into the weights
  std::string out;
  bool inline_all = false;
  bool external = false;
  std::string data_file;
  std::string size_threshold;
  bool allow_unused = false;
  bool force = false;
  bool json = false;
};

Result<onnx::RewriteOptions> MakeRewriteOptions(const OnnxOptions& opt) {
  onnx::RewriteOptions out;
  out.placement = opt.inline_all ? onnx::Placement::kInline
                  : opt.external ? onnx::Placement::kExternal
                                 : onnx::Placement::kKeep;
  if (!opt.size_threshold.empty()) {
    if (!opt.external) return InvalidArgument("--size-threshold needs --external-data");
    if (opt.size_threshold == "0") {
      out.size_threshold = 0;
    } else {
      MP_ASSIGN_OR_RETURN(out.size_threshold, ParseSize(opt.size_threshold));
    }
  }
  if (!opt.data_file.empty() && opt.inline_all) {
    return InvalidArgument("--data-file has no use with --inline");
  }
  out.data_file = opt.data_file;
  out.allow_unused_weights = opt.allow_unused;
  out.write.no_overwrite = !opt.force;
  return out;
}

Status RunRewrite(const OnnxOptions& opt) {
  MP_ASSIGN_OR_RETURN(onnx::RewriteOptions options, MakeRewriteOptions(opt));
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> model, OpenModel(opt.model));
  const auto* source = dynamic_cast<const onnx::OnnxSource*>(model.get());
  if (source == nullptr) {
    return InvalidArgument(opt.model + ": is " + std::string(model->format()) +
                           ", not an ONNX model");
  }
  std::unique_ptr<ModelSource> weights;
  if (!opt.weights.empty()) {
    MP_ASSIGN_OR_RETURN(weights, OpenModel(opt.weights, KeyOptions(opt.key)));
    options.weights = weights.get();
  }
  if (!opt.force) {
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::symlink_status(opt.out, ec))) {
      return AlreadyExists(opt.out + ": already exists (use --force to replace it)");
    }
  }

  ProgressBar progress(weights ? "setting weights" : "rewriting");
  if (progress.enabled()) {
    options.write.progress = [&progress](uint64_t t, uint64_t tt, uint64_t b, uint64_t bt) {
      progress.Update(t, tt, b, bt);
    };
  }
  const auto start = std::chrono::steady_clock::now();
  auto report = source->Rewrite(opt.out, options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.Clear();
  if (!report) return report.error();

  if (opt.json) {
    Json doc = Json::object();
    doc["source"] = opt.model;
    if (weights) doc["weights"] = opt.weights;
    doc["destination"] = opt.out;
    doc["data_file"] = report->data_path.empty() ? Json(nullptr) : Json(report->data_path);
    doc["replaced"] = report->replaced;
    doc["unused"] = report->unused;
    doc["inline_tensors"] = report->inline_tensors;
    doc["inline_bytes"] = report->inline_bytes;
    doc["external_tensors"] = report->external_tensors;
    doc["external_bytes"] = report->external_bytes;
    doc["model_bytes"] = report->model_bytes;
    doc["seconds"] = seconds;
    PrintJson(doc);
    return Status::Ok();
  }
  std::printf("wrote %s (%s): %s initializers inline (%s)", opt.out.c_str(),
              HumanBytes(report->model_bytes).c_str(),
              WithThousands(report->inline_tensors).c_str(),
              HumanBytes(report->inline_bytes).c_str());
  if (!report->data_path.empty()) {
    std::printf(", %s in %s (%s)", WithThousands(report->external_tensors).c_str(),
                report->data_path.c_str(), HumanBytes(report->external_bytes).c_str());
  }
  std::printf(" in %.2f s\n", seconds);
  if (weights) {
    std::printf("replaced %zu initializer(s) from %s", report->replaced.size(),
                opt.weights.c_str());
    if (!report->unused.empty()) {
      std::printf("; %zu weight(s) matched no initializer and were left out",
                  report->unused.size());
    }
    std::printf("\n");
  }
  return Status::Ok();
}

void AddPlacementOptions(CLI::App* sub, OnnxOptions* opt) {
  sub->add_option("-o,--output", opt->out, "ONNX file to write")->required();
  auto* inline_flag = sub->add_flag(
      "--inline", opt->inline_all,
      "put every initializer in the model file (raw_data); the file must stay under 2 GiB");
  auto* external_flag = sub->add_flag(
      "--external-data", opt->external,
      "put initializers of at least --size-threshold bytes in one data file beside the model "
      "(offsets 64-byte aligned, 4 KiB pages from 1 MiB up)");
  inline_flag->excludes(external_flag);
  sub->add_option("--data-file", opt->data_file,
                  "name of the external data file, in the output's folder (default: "
                  "<output name>.data)");
  sub->add_option("--size-threshold", opt->size_threshold,
                  "with --external-data, keep tensors under SIZE inline (default 1024 bytes; "
                  "0 puts every non-empty tensor outside)");
  sub->add_flag("--force", opt->force, "replace an existing output (the model itself too)");
  sub->add_flag("--json", opt->json, "print one JSON document on stdout");
}

}  // namespace

Command AddOnnxCommand(CLI::App& app) {
  CLI::App* onnx = app.add_subcommand(
      "onnx", "Rewrite ONNX models: move weights inline or to external data, set new weights.");
  onnx->require_subcommand(1);

  auto rewrite_opt = std::make_shared<OnnxOptions>();
  CLI::App* rewrite = onnx->add_subcommand(
      "rewrite",
      "Write MODEL again with the same graph and weights, its initializers placed inline or "
      "in an external data file. Without --inline or --external-data, each stays where it was "
      "(external ones move into the output's data file).");
  rewrite->add_option("MODEL", rewrite_opt->model, "ONNX model to read")->required();
  AddPlacementOptions(rewrite, rewrite_opt.get());

  auto set_opt = std::make_shared<OnnxOptions>();
  CLI::App* set = onnx->add_subcommand(
      "set-weights",
      "Write MODEL with initializer values taken by name from WEIGHTS (safetensors, PyTorch, "
      "GGUF, NumPy or ONNX): each must have the initializer's dtype and shape. Initializers "
      "WEIGHTS does not name keep their values.");
  set->add_option("MODEL", set_opt->model, "ONNX model whose graph is kept")->required();
  set->add_option("WEIGHTS", set_opt->weights, "model file, sharded index or folder")->required();
  AddKeyOption(set, &set_opt->key);
  set->add_flag("--allow-unused", set_opt->allow_unused,
                "leave out weights that match no initializer instead of failing");
  AddPlacementOptions(set, set_opt.get());

  return {onnx, [rewrite, rewrite_opt, set_opt] {
            return ReportError(RunRewrite(rewrite->parsed() ? *rewrite_opt : *set_opt));
          }};
}

}  // namespace mp::cli
