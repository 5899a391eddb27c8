// `modelport verify PATH [--json]`: opens the model (the reader validates the whole structure),
// loads every tensor (bounds and data checks), hashes every file and every tensor on a worker
// pool, and prints the digests. Any problem ends with its exit code (cli_util.h).
//
// --json fields: "path", "format", "ok" (true, or false with "error": {"code", "message"}),
// "tensor_count", "total_bytes", "files": [{"path", "sha256"}], "index" (sharded only:
// {"path", "sha256"}), "tensors": [{"name", "dtype", "shape", "bytes", "sha256"}].
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "modelport/cli/cli_util.h"
#include "modelport/formats/format.h"

namespace mp::cli {
namespace {

struct VerifyOptions {
  std::string path;
  std::string key;
  bool json = false;
};

Status Verify(const VerifyOptions& opt) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> source,
                      OpenModel(opt.path, KeyOptions(opt.key)));
  MP_ASSIGN_OR_RETURN(const uint64_t total_bytes, source->TotalBytes());
  Digests digests;
  {
    ProgressBar progress("verifying");
    MP_ASSIGN_OR_RETURN(digests, ComputeDigests(*source, &progress));
  }
  if (opt.json) {
    Json doc = Json::object();
    doc["path"] = opt.path;
    doc["format"] = source->format();
    doc["ok"] = true;
    doc["tensor_count"] = source->tensors().size();
    doc["total_bytes"] = total_bytes;
    AddDigestJson(*source, digests, doc);
    PrintJson(doc);
    return Status::Ok();
  }
  PrintDigests(*source, digests);
  std::printf("OK: %s (%.*s): %zu tensors, %s bytes, %zu file%s verified\n", opt.path.c_str(),
              static_cast<int>(source->format().size()), source->format().data(),
              source->tensors().size(), WithThousands(total_bytes).c_str(),
              digests.files.files.size(), digests.files.files.size() == 1 ? "" : "s");
  return Status::Ok();
}

int RunVerify(const VerifyOptions& opt) {
  const Status status = Verify(opt);
  if (!status.ok() && opt.json) {
    Json doc = Json::object();
    doc["path"] = opt.path;
    doc["ok"] = false;
    doc["error"] = {{"code", StatusCodeName(status.code())}, {"message", status.message()}};
    PrintJson(doc);
  }
  return ReportError(status);
}

}  // namespace

Command AddVerifyCommand(CLI::App& app) {
  auto opt = std::make_shared<VerifyOptions>();
  CLI::App* sub = app.add_subcommand(
      "verify",
      "Validate a model fully: structure, every tensor's bounds and data, the SHA-256 of every "
      "file (each shard of a sharded model) and every tensor's content digest. Exits non-zero "
      "on any problem.");
  sub->add_option("PATH", opt->path, "model file, sharded index, or folder")->required();
  AddKeyOption(sub, &opt->key);
  sub->add_flag("--json", opt->json, "print one JSON document on stdout");
  return {sub, [opt] { return RunVerify(*opt); }};
}

}  // namespace mp::cli
