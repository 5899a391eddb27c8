// `modelport tf set-weights SAVED_MODEL WEIGHTS -o BASE`: a new TF Serving version of a
// SavedModel whose variables come by name from another model (a fine-tuned safetensors, a
// checkpoint, ...). The graph (saved_model.pb), fingerprint and assets are copied byte for
// byte; the version folder appears whole or not at all (tf::SaveWithVariables).
//
// --json fields: "source", "weights", "destination" (the version folder), "version",
// "replaced" (variable names given new values), "kept" (with --allow-missing: variables that
// kept their old values), "unused" (with --allow-unused: weights that matched no variable),
// "seconds".
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "modelport/cli/cli_util.h"
#include "modelport/formats/format.h"
#include "modelport/formats/tf/saved_model.h"

namespace mp::cli {
namespace {

struct TfOptions {
  std::string model;
  std::string weights;
  std::string key;
  std::string out;
  uint64_t version = 0;
  bool allow_missing = false;
  bool allow_unused = false;
  bool json = false;
};

Status RunSetWeights(const TfOptions& opt) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> weights,
                      OpenModel(opt.weights, KeyOptions(opt.key)));
  tf::SaveWithVariablesOptions options;
  options.version = opt.version;
  options.allow_missing = opt.allow_missing;
  options.allow_unused = opt.allow_unused;
  ProgressBar progress("setting variables");
  if (progress.enabled()) {
    options.write.progress = [&progress](uint64_t t, uint64_t tt, uint64_t b, uint64_t bt) {
      progress.Update(t, tt, b, bt);
    };
  }
  const auto start = std::chrono::steady_clock::now();
  auto written = tf::SaveWithVariables(opt.model, *weights, opt.out, options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.Clear();
  if (!written) return written.error();
  const tf::SaveWithVariablesReport& report = *written;
  const std::string version = std::filesystem::path(report.version_dir).filename().string();

  if (opt.json) {
    Json doc = Json::object();
    doc["source"] = report.source_dir;
    doc["weights"] = opt.weights;
    doc["destination"] = report.version_dir;
    doc["version"] = version;
    doc["replaced"] = report.replaced;
    doc["kept"] = report.kept;
    doc["unused"] = report.unused;
    doc["seconds"] = seconds;
    PrintJson(doc);
    return Status::Ok();
  }
  std::printf("wrote %s (TF Serving version %s) in %.2f s\n", report.version_dir.c_str(),
              version.c_str(), seconds);
  std::printf("replaced %zu variable(s) from %s", report.replaced.size(), opt.weights.c_str());
  if (!report.kept.empty()) std::printf("; %zu kept their old values", report.kept.size());
  if (!report.unused.empty()) {
    std::printf("; %zu weight(s) matched no variable", report.unused.size());
  }
  std::printf("\n");
  return Status::Ok();
}

}  // namespace

Command AddTfCommand(CLI::App& app) {
  CLI::App* tf = app.add_subcommand("tf", "Write TensorFlow SavedModels: set new variable values.");
  tf->require_subcommand(1);
  auto opt = std::make_shared<TfOptions>();
  CLI::App* set = tf->add_subcommand(
      "set-weights",
      "Write a new TF Serving version of SAVED_MODEL (BASE/<version>/) whose variables take "
      "their values by name from WEIGHTS (safetensors, PyTorch, GGUF, NumPy, ONNX, a tensor "
      "bundle...): each must have the variable's dtype and shape. saved_model.pb, the "
      "fingerprint and assets are copied byte for byte; the version folder appears whole or "
      "not at all.");
  set->add_option("SAVED_MODEL", opt->model,
                  "SavedModel version folder (holding saved_model.pb) or a TF Serving base "
                  "folder (its highest version is used)")
      ->required();
  set->add_option("WEIGHTS", opt->weights, "model file, sharded index or folder")->required();
  set->add_option("-o,--output", opt->out, "TF Serving base folder to write the version into")
      ->required();
  set->add_option("--version", opt->version,
                  "version folder number (default: the source's own folder name, else 1); an "
                  "existing version is never replaced");
  AddKeyOption(set, &opt->key);
  set->add_flag("--allow-missing", opt->allow_missing,
                "keep the old value of variables WEIGHTS lacks instead of failing");
  set->add_flag("--allow-unused", opt->allow_unused,
                "leave out weights that match no variable instead of failing");
  set->add_flag("--json", opt->json, "print one JSON document on stdout");
  return {tf, [opt] { return ReportError(RunSetWeights(*opt)); }};
}

}  // namespace mp::cli
