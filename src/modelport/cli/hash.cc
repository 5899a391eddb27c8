// `modelport hash PATH [--json]`: SHA-256 of every file of the model and the canonical content
// digest of every tensor (core/hash.h: dtype, shape and bytes, not the name, so the same
// weights hash the same in every container).
//
// --json fields: "path", "format", "files": [{"path", "sha256"}], "index" (sharded only:
// {"path", "sha256"}), "tensors": [{"name", "dtype", "shape", "bytes", "sha256"}]. Digests are
// "sha256:<64 hex digits>".
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "modelport/cli/cli_util.h"
#include "modelport/formats/format.h"

namespace mp::cli {
namespace {

struct HashOptions {
  std::string path;
  std::string key;
  bool json = false;
};

Status Hash(const HashOptions& opt) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> source,
                      OpenModel(opt.path, KeyOptions(opt.key)));
  Digests digests;
  {
    ProgressBar progress("hashing");
    MP_ASSIGN_OR_RETURN(digests, ComputeDigests(*source, &progress));
  }
  if (opt.json) {
    Json doc = Json::object();
    doc["path"] = opt.path;
    doc["format"] = source->format();
    AddDigestJson(*source, digests, doc);
    PrintJson(doc);
    return Status::Ok();
  }
  PrintDigests(*source, digests);
  return Status::Ok();
}

}  // namespace

Command AddHashCommand(CLI::App& app) {
  auto opt = std::make_shared<HashOptions>();
  CLI::App* sub = app.add_subcommand(
      "hash",
      "Print the SHA-256 of every file of a model and every tensor's content digest (over "
      "dtype, shape and bytes: equal weights give equal digests in any container).");
  sub->add_option("PATH", opt->path, "model file, sharded index, or folder")->required();
  AddKeyOption(sub, &opt->key);
  sub->add_flag("--json", opt->json, "print one JSON document on stdout");
  return {sub, [opt] { return ReportError(Hash(*opt)); }};
}

}  // namespace mp::cli
