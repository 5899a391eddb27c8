// `modelport registry <verb>`: the model registry (registry/registry.h, docs/REGISTRY.md).
//
// Every verb takes --registry DIR (default $MODELPORT_REGISTRY, else ~/.modelport/registry)
// and --db URL (default $MODELPORT_DB, else SQLite in DIR); read verbs take --json.
// References: NAME, NAME@3, NAME@production, NAME@<alias>, NAME@<label>, NAME@sha256:<hex>.
// Exit codes as everywhere; fsck exits 1 when it finds problems.
#include "modelport/registry/registry.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "modelport/cli/cli_util.h"
#include "modelport/formats/format.h"
#include "modelport/validate/validate.h"

namespace mp::cli {
namespace {

namespace fs = std::filesystem;
using registry::Registry;
using registry::VersionRecord;

struct RegistryOptions {
  std::string root;
  std::string db;
  bool json = false;
  // Verb arguments (each verb uses the ones it declares).
  std::string name, path, ref, alias, dst, to, key, label, from, relation = "derived", command;
  std::vector<std::string> assets, metrics, params, tags, aliases;
  std::string samples, expected, require_validation;
  std::vector<std::string> atol, rtol;
  bool allow_torchscript = false;
  int64_t expect = -1;
  int64_t grace = 3600;
  size_t limit = 0;
  bool remove = false, force = false, dry_run = false, no_verify = false, with_assets = false;
};

Result<std::unique_ptr<Registry>> OpenRegistry(const RegistryOptions& o) {
  return OpenRegistryFrom(o.root, o.db);
}

std::string RefText(const VersionRecord& v) { return v.model + "@" + std::to_string(v.version); }

Json VersionJson(const VersionRecord& v) {
  Json j = Json::object();
  j["model"] = v.model;
  j["version"] = v.version;
  j["ref"] = RefText(v);
  j["manifest"] = v.manifest;
  j["label"] = v.label.empty() ? Json(nullptr) : Json(v.label);
  j["stage"] = v.stage;
  j["format"] = v.format;
  j["tensors"] = v.tensors;
  j["bytes"] = v.logical_bytes;
  j["metrics"] = v.metrics;
  j["params"] = v.params;
  j["tags"] = v.tags;
  j["aliases"] = v.aliases;
  j["created_at"] = v.created_at;
  j["created_by"] = v.created_by;
  if (v.parent) {
    j["parent"] = {{"model", v.parent->model},
                   {"version", v.parent->version},
                   {"relation", v.parent->relation},
                   {"command", v.parent->command}};
  } else {
    j["parent"] = nullptr;
  }
  return j;
}

// "k=v" pairs into a JSON object; a value that parses as JSON keeps its type.
Result<Json> KeyValues(const std::vector<std::string>& pairs, const std::string& flag) {
  Json out = Json::object();
  for (const auto& pair : pairs) {
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument(flag + " '" + pair + "': expected KEY=VALUE");
    }
    const std::string value = pair.substr(eq + 1);
    Json parsed = Json::parse(value, nullptr, /*allow_exceptions=*/false);
    out[pair.substr(0, eq)] = parsed.is_discarded() ? Json(value) : std::move(parsed);
  }
  return out;
}

void PrintVersion(const VersionRecord& v) {
  std::printf("%s  %s  %s tensors, %s  %s by %s", RefText(v).c_str(), v.stage.c_str(),
              WithThousands(v.tensors).c_str(), HumanBytes(v.logical_bytes).c_str(),
              v.created_at.c_str(), v.created_by.c_str());
  if (!v.label.empty()) std::printf("  label %s", v.label.c_str());
  for (const auto& a : v.aliases) std::printf("  @%s", a.c_str());
  std::printf("\n");
}

Status Init(const RegistryOptions& o) {
  const std::string root = RegistryRoot(o.root);
  MP_ASSIGN_OR_RETURN(auto reg, Registry::Init(root, RegistryDb(o.db)));
  if (o.json) {
    PrintJson({{"registry", root}, {"db", RegistryDb(o.db)}});
  } else {
    std::printf("registry ready in %s\n", root.c_str());
  }
  return Status::Ok();
}

Status Push(const RegistryOptions& o) {
  MP_RETURN_IF_ERROR(registry::CheckName(o.name, "model name"));
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  MP_ASSIGN_OR_RETURN(auto model, OpenModel(o.path, KeyOptions(o.key)));
  registry::PushOptions p;
  p.assets = o.assets;
  // A folder's other files (config, tokenizer, preprocessing) are versioned with its weights.
  std::error_code ec;
  if (fs::is_directory(o.path, ec)) {
    const ModelFiles files = model->files();
    std::set<std::string> weights(files.files.begin(), files.files.end());
    if (!files.index.empty()) weights.insert(files.index);
    std::set<fs::path> weight_paths;
    for (const auto& w : weights) weight_paths.insert(fs::weakly_canonical(w, ec));
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(o.path, ec)) {
      if (!entry.is_regular_file(ec) || entry.is_symlink(ec)) continue;
      if (weight_paths.count(fs::weakly_canonical(entry.path(), ec))) continue;
      found.push_back(entry.path().string());
    }
    std::sort(found.begin(), found.end());
    p.assets.insert(p.assets.end(), found.begin(), found.end());
  }
  MP_ASSIGN_OR_RETURN(p.metrics, KeyValues(o.metrics, "--metric"));
  MP_ASSIGN_OR_RETURN(p.params, KeyValues(o.params, "--param"));
  p.tags = o.tags;
  p.aliases = o.aliases;
  p.label = o.label;
  if (!o.from.empty()) {
    MP_ASSIGN_OR_RETURN(p.from, registry::ParseRef(o.from));
  }
  p.relation = o.relation;
  p.command = o.command;
  if (o.samples.empty() != o.expected.empty()) {
    return InvalidArgument("--samples and --expected go together");
  }
  if (!o.samples.empty()) {
    MP_ASSIGN_OR_RETURN(const validate::Samples s,
                        ParseSamples(o.samples, o.expected, o.atol, o.rtol));
    registry::VersionSamples vs;
    vs.inputs = s.inputs;
    vs.expected = s.expected;
    vs.atol = s.tolerance.atol;
    vs.rtol = s.tolerance.rtol;
    for (const auto& [name, tol] : s.per_output) vs.per_output[name] = {tol.atol, tol.rtol};
    p.samples = std::move(vs);
  } else if (!o.atol.empty() || !o.rtol.empty()) {
    return InvalidArgument("--atol and --rtol go with --samples and --expected");
  }
  ProgressBar progress("pushing");
  if (progress.enabled()) {
    p.progress = [&progress](uint64_t t, uint64_t tt, uint64_t b, uint64_t bt) {
      progress.Update(t, tt, b, bt);
    };
  }
  auto version = reg->Push(o.name, *model, p);
  progress.Clear();
  if (!version) return version.error();
  if (o.json) {
    PrintJson(VersionJson(*version));
  } else {
    std::printf("pushed %s (%s tensors, %s, %zu assets)\n", RefText(*version).c_str(),
                WithThousands(version->tensors).c_str(), HumanBytes(version->logical_bytes).c_str(),
                p.assets.size());
  }
  return Status::Ok();
}

Status List(const RegistryOptions& o) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  if (o.name.empty()) {
    MP_ASSIGN_OR_RETURN(auto models, reg->ListModels());
    if (o.json) {
      Json out = Json::array();
      for (const auto& m : models) {
        out.push_back({{"name", m.name},
                       {"versions", m.versions},
                       {"latest", m.latest},
                       {"production", m.production == 0 ? Json(nullptr) : Json(m.production)}});
      }
      PrintJson(out);
      return Status::Ok();
    }
    Table table({"model", "versions", "latest", "production"}, {false, true, true, true});
    for (const auto& m : models) {
      table.AddRow({m.name, std::to_string(m.versions), std::to_string(m.latest),
                    m.production == 0 ? "-" : std::to_string(m.production)});
    }
    table.Print(stdout);
    return Status::Ok();
  }
  MP_ASSIGN_OR_RETURN(auto versions, reg->ListVersions(o.name));
  if (o.json) {
    Json out = Json::array();
    for (const auto& v : versions) out.push_back(VersionJson(v));
    PrintJson(out);
    return Status::Ok();
  }
  for (const auto& v : versions) PrintVersion(v);
  return Status::Ok();
}

Status Show(const RegistryOptions& o, bool latest_only) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  MP_ASSIGN_OR_RETURN(auto ref, registry::ParseRef(latest_only ? o.name : o.ref));
  if (latest_only) ref.selector = "latest";
  MP_ASSIGN_OR_RETURN(VersionRecord v, reg->Resolve(ref));
  if (latest_only) {
    if (o.json) {
      PrintJson(VersionJson(v));
    } else {
      std::printf("%s\n", RefText(v).c_str());
    }
    return Status::Ok();
  }
  MP_ASSIGN_OR_RETURN(auto model, reg->Load(v, /*verify=*/false));
  MP_ASSIGN_OR_RETURN(auto assets, reg->Assets(v));
  if (o.json) {
    Json doc = VersionJson(v);
    doc["metadata"] = v.metadata;
    Json tensors = Json::array();
    for (const auto& t : model->tensors()) {
      tensors.push_back({{"name", t.name},
                         {"dtype", DTypeName(t.dtype)},
                         {"shape", ShapeJson(t.shape)},
                         {"bytes", t.byte_size}});
    }
    doc["tensor_list"] = std::move(tensors);
    Json a = Json::array();
    for (const auto& [path, digest] : assets) a.push_back({{"path", path}, {"blob", digest}});
    doc["assets"] = std::move(a);
    PrintJson(doc);
    return Status::Ok();
  }
  PrintVersion(v);
  std::printf("manifest: %s\nformat:   %s\n", v.manifest.c_str(), v.format.c_str());
  if (v.parent) {
    std::printf("from:     %s@%lld (%s%s%s)\n", v.parent->model.c_str(),
                static_cast<long long>(v.parent->version), v.parent->relation.c_str(),
                v.parent->command.empty() ? "" : ": ", v.parent->command.c_str());
  }
  if (!v.metrics.empty()) std::printf("metrics:  %s\n", v.metrics.dump().c_str());
  if (!v.params.empty()) std::printf("params:   %s\n", v.params.dump().c_str());
  if (!v.tags.empty()) std::printf("tags:     %s\n", Json(v.tags).dump().c_str());
  for (const auto& [path, digest] : assets) {
    std::printf("asset:    %s  %s\n", path.c_str(), digest.c_str());
  }
  std::printf("\n");
  Table table({"name", "dtype", "shape", "bytes"}, {false, false, false, true});
  for (const auto& t : model->tensors()) {
    table.AddRow(
        {t.name, std::string(DTypeName(t.dtype)), ShapeText(t.shape), std::to_string(t.byte_size)});
  }
  table.Print(stdout);
  return Status::Ok();
}

// Promotes; a model that requires validation has the version validated first (its stored
// samples run through the reference evaluator), and a failed check refuses the promotion with
// exit code 1, like a failed `modelport validate`.
int Promote(const RegistryOptions& o) {
  auto reg = OpenRegistry(o);
  if (!reg) return ReportError(reg.error());
  auto ref = registry::ParseRef(o.ref);
  if (!ref) return ReportError(ref.error());
  std::optional<int64_t> expect;
  if (o.expect >= 0) expect = o.expect;
  std::optional<validate::Report> report;
  auto gate = [&](const VersionRecord& v) -> Status {
    validate::Options options;
    options.allow_torchscript = o.allow_torchscript;
    MP_ASSIGN_OR_RETURN(report, validate::ValidateVersion(**reg, v, options));
    if (!o.json) PrintValidationReport(*report);
    if (!report->passed()) {
      return InvalidArgument("promotion of " + RefText(v) + " refused: " + report->FirstFailure());
    }
    return Status::Ok();
  };
  auto v = (*reg)->Promote(*ref, expect, gate);
  if (!v) {
    const int code = ReportError(v.error());
    return report && !report->passed() ? kExitDifferent : code;
  }
  if (o.json) {
    Json doc = VersionJson(*v);
    if (report) doc["validation"] = report->ToJson();
    PrintJson(doc);
  } else {
    std::printf("%s is production\n", RefText(*v).c_str());
  }
  return kExitOk;
}

Status Policy(const RegistryOptions& o) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  if (!o.require_validation.empty()) {
    if (o.require_validation != "on" && o.require_validation != "off") {
      return InvalidArgument("--require-validation takes on or off, not " + o.require_validation);
    }
    MP_RETURN_IF_ERROR(reg->SetRequireValidation(o.name, o.require_validation == "on"));
  }
  MP_ASSIGN_OR_RETURN(const bool required, reg->RequiresValidation(o.name));
  if (o.json) {
    PrintJson({{"model", o.name}, {"require_validation", required}});
  } else {
    std::printf("%s: promotion %s validation\n", o.name.c_str(),
                required ? "requires" : "does not require");
  }
  return Status::Ok();
}

Status Archive(const RegistryOptions& o) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  MP_ASSIGN_OR_RETURN(auto ref, registry::ParseRef(o.ref));
  MP_ASSIGN_OR_RETURN(VersionRecord v, reg->Archive(ref, o.force));
  if (o.json) {
    PrintJson(VersionJson(v));
  } else {
    std::printf("%s is archived\n", RefText(v).c_str());
  }
  return Status::Ok();
}

Status Rollback(const RegistryOptions& o) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  MP_ASSIGN_OR_RETURN(VersionRecord v, reg->Rollback(o.name));
  if (o.json) {
    PrintJson(VersionJson(v));
  } else {
    std::printf("%s is production again\n", RefText(v).c_str());
  }
  return Status::Ok();
}

Status Alias(const RegistryOptions& o) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  MP_ASSIGN_OR_RETURN(auto ref, registry::ParseRef(o.ref));
  if (o.remove) {
    if (!ref.selector.empty()) return InvalidArgument("--rm takes NAME ALIAS, not a version");
    MP_RETURN_IF_ERROR(reg->RemoveAlias(ref.name, o.alias));
    if (!o.json) std::printf("removed %s@%s\n", ref.name.c_str(), o.alias.c_str());
    return Status::Ok();
  }
  MP_RETURN_IF_ERROR(reg->SetAlias(ref, o.alias));
  MP_ASSIGN_OR_RETURN(VersionRecord v, reg->Resolve({ref.name, o.alias}));
  if (o.json) {
    PrintJson(VersionJson(v));
  } else {
    std::printf("%s@%s -> %s\n", ref.name.c_str(), o.alias.c_str(), RefText(v).c_str());
  }
  return Status::Ok();
}

Status Export(const RegistryOptions& o) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  MP_ASSIGN_OR_RETURN(auto ref, registry::ParseRef(o.ref));
  MP_ASSIGN_OR_RETURN(VersionRecord v, reg->Resolve(ref));
  MP_ASSIGN_OR_RETURN(const FormatDescriptor* format, FormatForOutput(o.dst, o.to));
  // Every blob is checked up front, on all cores (against the XXH3 checksum its manifest keeps,
  // or its SHA-256 for versions pushed before manifests kept one), so a damaged version fails
  // before anything is written; the export then reads the checked blobs as they are.
  if (!o.no_verify) MP_RETURN_IF_ERROR(reg->Verify(v));
  MP_ASSIGN_OR_RETURN(auto model, reg->Load(v, /*verify=*/false));
  // ONNX needs a graph: versions pushed from ONNX keep theirs (Registry::ExportOnnx).
  const bool to_onnx = format->name == "onnx";
  if (!format->caps.write && !to_onnx) {
    return Unsupported(o.dst + ": writing " + std::string(format->name) + " is not supported");
  }
  std::error_code ec;
  if (!o.force && fs::exists(fs::symlink_status(o.dst, ec))) {
    return AlreadyExists(o.dst + ": already exists (use --force to replace it)");
  }
  WriteOptions w;
  w.no_overwrite = !o.force;
  ProgressBar progress("exporting");
  if (progress.enabled()) {
    w.progress = [&progress](uint64_t t, uint64_t tt, uint64_t b, uint64_t bt) {
      progress.Update(t, tt, b, bt);
    };
  }
  // A version pushed from a TorchScript archive exports to torch as that archive.
  bool scripted = false;
  if (format->name == "torch") {
    MP_ASSIGN_OR_RETURN(scripted, reg->ExportTorchScript(v, o.dst, w, /*verify=*/false));
  }
  Status written = scripted  ? Status::Ok()
                   : to_onnx ? reg->ExportOnnx(v, o.dst, w, /*verify=*/false)
                             : format->write(*model, o.dst, w);
  progress.Clear();
  MP_RETURN_IF_ERROR(written);
  std::vector<std::string> asset_files;
  if (o.with_assets) {
    MP_ASSIGN_OR_RETURN(auto assets, reg->Assets(v));
    const fs::path folder = fs::path(o.dst).parent_path();
    for (const auto& [name, digest] : assets) {
      const std::string dest = (folder / name).string();
      if (!o.force && fs::exists(fs::symlink_status(dest, ec))) {
        return AlreadyExists(dest + ": already exists (use --force to replace it)");
      }
      MP_RETURN_IF_ERROR(reg->ExportAsset(digest, dest));
      asset_files.push_back(dest);
    }
  }
  if (o.json) {
    PrintJson({{"ref", RefText(v)},
               {"destination", o.dst},
               {"format", format->name},
               {"tensors", v.tensors},
               {"assets", asset_files}});
  } else {
    std::printf(
        "exported %s -> %s (%.*s, %s tensors%s)\n", RefText(v).c_str(), o.dst.c_str(),
        static_cast<int>(format->name.size()), format->name.data(),
        WithThousands(v.tensors).c_str(),
        asset_files.empty() ? "" : (", " + std::to_string(asset_files.size()) + " assets").c_str());
  }
  return Status::Ok();
}

Status Rm(const RegistryOptions& o) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  MP_ASSIGN_OR_RETURN(auto ref, registry::ParseRef(o.ref));
  MP_ASSIGN_OR_RETURN(VersionRecord v, reg->Resolve(ref));
  MP_RETURN_IF_ERROR(reg->Remove({v.model, std::to_string(v.version)}, o.force));
  if (!o.json) std::printf("removed %s (its blobs go at the next gc)\n", RefText(v).c_str());
  return Status::Ok();
}

Status Gc(const RegistryOptions& o) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  MP_ASSIGN_OR_RETURN(auto r, reg->Gc(o.grace, o.dry_run));
  if (o.json) {
    PrintJson({{"removed_blobs", r.removed_blobs},
               {"removed_bytes", r.removed_bytes},
               {"kept_young", r.kept_young},
               {"removed_temporaries", r.removed_temporaries},
               {"dry_run", o.dry_run}});
  } else {
    std::printf("%s %s blobs (%s); kept %s unreferenced blobs younger than %lld s\n",
                o.dry_run ? "would remove" : "removed", WithThousands(r.removed_blobs).c_str(),
                HumanBytes(r.removed_bytes).c_str(), WithThousands(r.kept_young).c_str(),
                static_cast<long long>(o.grace));
  }
  return Status::Ok();
}

int Fsck(const RegistryOptions& o) {
  auto reg = OpenRegistry(o);
  if (!reg) return ReportError(reg.error());
  auto r = (*reg)->Fsck();
  if (!r) return ReportError(r.error());
  if (o.json) {
    PrintJson({{"blobs_checked", r->blobs_checked},
               {"versions_checked", r->versions_checked},
               {"problems", r->problems},
               {"clean", r->problems.empty()}});
  } else {
    for (const auto& p : r->problems) std::printf("problem: %s\n", p.c_str());
    std::printf("%s: %s blobs re-hashed, %s versions checked, %zu problems\n",
                r->problems.empty() ? "clean" : "NOT clean",
                WithThousands(r->blobs_checked).c_str(), WithThousands(r->versions_checked).c_str(),
                r->problems.size());
  }
  return r->problems.empty() ? kExitOk : kExitDifferent;
}

Status Log(const RegistryOptions& o) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  MP_ASSIGN_OR_RETURN(auto events, reg->Log(o.name, o.limit));
  if (o.json) {
    Json out = Json::array();
    for (const auto& e : events) {
      out.push_back({{"seq", e.seq},
                     {"at", e.at},
                     {"who", e.who},
                     {"action", e.action},
                     {"model", e.model},
                     {"version", e.version},
                     {"detail", e.detail}});
    }
    PrintJson(out);
    return Status::Ok();
  }
  for (const auto& e : events) {
    std::printf("%s  %-8s %-8s %s@%lld  %s\n", e.at.c_str(), e.who.c_str(), e.action.c_str(),
                e.model.c_str(), static_cast<long long>(e.version), e.detail.dump().c_str());
  }
  return Status::Ok();
}

Status Du(const RegistryOptions& o) {
  MP_ASSIGN_OR_RETURN(auto reg, OpenRegistry(o));
  MP_ASSIGN_OR_RETURN(auto r, reg->Du());
  const double ratio = r.logical_bytes == 0 ? 0.0
                                            : static_cast<double>(r.stored_bytes) /
                                                  static_cast<double>(r.logical_bytes);
  if (o.json) {
    PrintJson({{"versions", r.versions},
               {"logical_bytes", r.logical_bytes},
               {"stored_bytes", r.stored_bytes},
               {"blobs", r.blobs},
               {"stored_over_logical", ratio}});
  } else {
    std::printf("%s versions: %s logical, %s stored in %s blobs (stored/logical %.3f)\n",
                WithThousands(r.versions).c_str(), HumanBytes(r.logical_bytes).c_str(),
                HumanBytes(r.stored_bytes).c_str(), WithThousands(r.blobs).c_str(), ratio);
  }
  return Status::Ok();
}

}  // namespace

std::string RegistryRoot(const std::string& root) {
  if (!root.empty()) return root;
  if (const char* r = std::getenv("MODELPORT_REGISTRY"); r != nullptr && *r != '\0') return r;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr && *home != '\0' ? home : ".") + "/.modelport/registry";
}

std::string RegistryDb(const std::string& db) {
  if (!db.empty()) return db;
  const char* env = std::getenv("MODELPORT_DB");
  return env != nullptr ? env : "";
}

Result<std::unique_ptr<Registry>> OpenRegistryFrom(const std::string& root, const std::string& db) {
  return Registry::Open(RegistryRoot(root), RegistryDb(db));
}

Command AddRegistryCommand(CLI::App& app) {
  auto o = std::make_shared<RegistryOptions>();
  CLI::App* reg = app.add_subcommand(
      "registry",
      "Versioned model registry: content-addressed, deduplicated storage with versions, "
      "aliases, stages, lineage and an event log (docs/REGISTRY.md).");
  reg->require_subcommand(1);
  reg->fallthrough();  // --registry, --db and --json may follow the verb
  reg->add_option("--registry", o->root,
                  "registry folder (default: $MODELPORT_REGISTRY, else ~/.modelport/registry)");
  reg->add_option("--db", o->db,
                  "metadata database: postgresql://... for a shared server (default: "
                  "$MODELPORT_DB, else SQLite in the registry folder)");
  reg->add_flag("--json", o->json, "print one JSON document on stdout");

  std::vector<std::pair<CLI::App*, std::function<int()>>> verbs;
  auto verb = [&](const char* name, const char* help, std::function<int()> run) {
    CLI::App* sub = reg->add_subcommand(name, help);
    verbs.emplace_back(sub, std::move(run));
    return sub;
  };
  auto status = [o](Status (*fn)(const RegistryOptions&)) {
    return [o, fn] { return ReportError(fn(*o)); };
  };

  verb("init", "Create a registry (folder and database); a no-op on an existing one.",
       status(Init));

  CLI::App* push = verb("push",
                        "Register PATH (a model file, sharded index or folder) as the next "
                        "version of NAME. A folder's other files are versioned as assets.",
                        status(Push));
  push->add_option("NAME", o->name, "model name")->required();
  push->add_option("PATH", o->path, "model file, sharded index, or folder")->required();
  push->add_option("--asset", o->assets, "a file versioned with the weights (repeatable)");
  push->add_option("--metric", o->metrics, "KEY=VALUE (repeatable; JSON values keep their type)");
  push->add_option("--param", o->params, "KEY=VALUE (repeatable)");
  push->add_option("--tag", o->tags, "a tag (repeatable)");
  push->add_option("--alias", o->aliases, "an alias to move to this version (repeatable)");
  push->add_option("--label", o->label, "a label unique within the model (e.g. 1.2.0)");
  push->add_option("--from", o->from, "lineage: the version this one was made from (REF)");
  push->add_option("--samples", o->samples,
                   "validation: sample inputs (.npz, .npy, .safetensors) stored with the version");
  push->add_option("--expected", o->expected, "validation: the outputs expected for --samples");
  push->add_option("--atol", o->atol,
                   "validation: absolute tolerance, or NAME=X for one output (default 1e-5)");
  push->add_option("--rtol", o->rtol,
                   "validation: relative tolerance, or NAME=X for one output (default 1e-5)");
  push->add_option("--relation", o->relation,
                   "lineage: how (converted, quantized, fine-tuned; default derived)");
  push->add_option("--command", o->command, "lineage: the command that made it");
  AddKeyOption(push, &o->key);

  CLI::App* list = verb("list", "List models, or the versions of NAME.", status(List));
  list->add_option("NAME", o->name, "model name");

  CLI::App* show = verb("show", "Show a version: stage, metrics, lineage, assets, tensors.",
                        [o] { return ReportError(Show(*o, false)); });
  show->add_option("REF", o->ref, "NAME, NAME@3, NAME@production, NAME@alias ...")->required();

  CLI::App* latest = verb("latest", "Print the latest version of NAME.",
                          [o] { return ReportError(Show(*o, true)); });
  latest->add_option("NAME", o->name, "model name")->required();

  CLI::App* promote =
      verb("promote",
           "Make REF the production version; the previous one is archived. A model whose policy "
           "requires validation has REF validated first; a failed check refuses (exit 1).",
           [o] { return Promote(*o); });
  promote->add_option("REF", o->ref, "the version to promote")->required();
  promote->add_option("--expect", o->expect,
                      "only if production is this version now (0: none); racing promotions "
                      "with the same expectation: exactly one wins");
  promote->add_flag("--allow-torchscript", o->allow_torchscript,
                    "validation may load TorchScript with libtorch (runs its code)");

  CLI::App* policy = verb("policy",
                          "Show or set a model's promotion policy: with --require-validation on, "
                          "promote first validates the version (integrity, schema, and its "
                          "samples' outputs) and refuses on any failure.",
                          status(Policy));
  policy->add_option("NAME", o->name, "model name")->required();
  policy->add_option("--require-validation", o->require_validation, "on or off");

  CLI::App* archive = verb("archive", "Move a version to the archived stage (its blobs are kept).",
                           status(Archive));
  archive->add_option("REF", o->ref, "the version")->required();
  archive->add_flag("--force", o->force, "archive even the production version");

  CLI::App* rollback =
      verb("rollback", "Put production back on the version that held it before.", status(Rollback));
  rollback->add_option("NAME", o->name, "model name")->required();

  CLI::App* alias =
      verb("alias", "Point ALIAS at REF (moving it), or remove it with --rm.", status(Alias));
  alias->add_option("REF", o->ref, "the version (NAME with --rm)")->required();
  alias->add_option("ALIAS", o->alias, "alias name (champion, staging, ...)")->required();
  alias->add_flag("--rm", o->remove, "remove the alias");

  CLI::App* exp =
      verb("export", "Write a version to DST in any format modelport writes.", status(Export));
  exp->add_option("REF", o->ref, "the version")->required();
  exp->add_option("DST", o->dst, "file to write")->required();
  exp->add_option("--to", o->to, "output format (default: from DST's extension)");
  exp->add_flag("--assets", o->with_assets, "also write the version's assets beside DST");
  exp->add_flag("--no-verify", o->no_verify, "skip checking the blobs before writing");
  exp->add_flag("--force", o->force, "replace existing files");

  CLI::App* rm = verb("rm", "Remove a version (its blobs go at the next gc).", status(Rm));
  rm->add_option("REF", o->ref, "the version")->required();
  rm->add_flag("--force", o->force, "remove even the production version");

  CLI::App* gc = verb("gc",
                      "Delete blobs no version references, older than the grace period (safe "
                      "while pushes run).",
                      status(Gc));
  gc->add_option("--grace", o->grace, "seconds an unreferenced blob is kept (default 3600)");
  gc->add_flag("--dry-run", o->dry_run, "only report");

  verb("fsck", "Re-hash every blob and check every version's references (exit 1 if not clean).",
       [o] { return Fsck(*o); });

  CLI::App* log =
      verb("log", "The event log (newest first), of NAME or of all models.", status(Log));
  log->add_option("NAME", o->name, "model name");
  log->add_option("--limit", o->limit, "at most this many events");

  verb("du", "Logical versus stored bytes: what deduplication saves.", status(Du));

  return {reg, [verbs] {
            for (const auto& [sub, run] : verbs) {
              if (sub->parsed()) return run();
            }
            PrintError("registry: no verb given (see 'modelport registry --help')");
            return kExitUsage;
          }};
}

}  // namespace mp::cli
