// `modelport validate TARGET`: integrity, schema, fidelity (--against) and inference (--samples
// and --expected) checks on a model file, folder or registry version (validate/validate.h,
// docs/VALIDATION.md). One line per check; exit 0 when every check passes, 1 when one fails,
// the usual codes when the target cannot be examined at all.
//
// TARGET and --against name a file or folder when one exists at that path, a registry
// reference (NAME, NAME@3, NAME@production, ...) otherwise.
//
// --json: {"target", "format", "ok", "checks": [{"check", "subject", "result" (pass | fail |
// skip), "detail", ...numbers}]}; when the target cannot be examined: {"target", "ok": false,
// "error": {"code", "message"}} (and the error line on stderr).
#include "modelport/validate/validate.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "modelport/cli/cli_util.h"
#include "modelport/formats/format.h"
#include "modelport/registry/registry.h"

namespace mp::cli {
namespace {

struct ValidateOptions {
  std::string target;
  std::string against;
  std::string samples, expected;
  std::vector<std::string> atol, rtol;
  double max_ulp = 0.5;
  bool exact = false;
  bool allow_torchscript = false;
  bool no_verify = false;
  std::string key;
  std::string root, db;
  bool json = false;
};

bool IsPath(const std::string& s) {
  std::error_code ec;
  return std::filesystem::exists(s, ec);
}

Result<double> ParseTolerance(const std::string& text, const std::string& flag) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !(v >= 0) || !std::isfinite(v)) {
    return InvalidArgument(flag + " " + text + ": expected a finite number >= 0");
  }
  return v;
}

// --atol 1e-5 sets the default; --atol NAME=1e-3 one output's.
Status ApplyTolerances(const std::vector<std::string>& values, const std::string& flag,
                       bool is_atol, validate::Samples& samples) {
  for (const std::string& v : values) {
    const size_t eq = v.rfind('=');
    if (eq == std::string::npos) {
      MP_ASSIGN_OR_RETURN(const double x, ParseTolerance(v, flag));
      (is_atol ? samples.tolerance.atol : samples.tolerance.rtol) = x;
      continue;
    }
    MP_ASSIGN_OR_RETURN(const double x, ParseTolerance(v.substr(eq + 1), flag));
    const std::string name = v.substr(0, eq);
    auto it = samples.per_output.try_emplace(name, samples.tolerance).first;
    (is_atol ? it->second.atol : it->second.rtol) = x;
  }
  return Status::Ok();
}

const char* OutcomeText(validate::Outcome o) {
  switch (o) {
    case validate::Outcome::kPass:
      return "PASS";
    case validate::Outcome::kFail:
      return "FAIL";
    default:
      return "SKIP";
  }
}

int Run(const ValidateOptions& o) {
  validate::Options options;
  options.key = o.key;
  options.exact = o.exact;
  options.max_ulp = o.max_ulp;
  options.allow_torchscript = o.allow_torchscript;
  options.verify_blobs = !o.no_verify;
  if (o.samples.empty() != o.expected.empty()) {
    return ReportError(InvalidArgument("--samples and --expected go together"));
  }
  if (!(o.max_ulp >= 0)) return ReportError(InvalidArgument("--max-ulp must be >= 0"));
  if (!o.samples.empty()) {
    Result<validate::Samples> s = ParseSamples(o.samples, o.expected, o.atol, o.rtol);
    if (!s) return ReportError(s.error());
    options.samples = std::move(*s);
  } else if (!o.atol.empty() || !o.rtol.empty()) {
    return ReportError(InvalidArgument("--atol and --rtol go with --samples and --expected"));
  }

  // The registry, opened only when a reference needs it.
  std::unique_ptr<registry::Registry> reg;
  auto registry_for = [&](const std::string& text) -> Result<registry::VersionRecord> {
    MP_ASSIGN_OR_RETURN(const registry::Ref ref, registry::ParseRef(text));
    if (!reg) {
      MP_ASSIGN_OR_RETURN(reg, OpenRegistryFrom(o.root, o.db));
    }
    return reg->Resolve(ref);
  };

  std::unique_ptr<ModelSource> against;
  if (!o.against.empty()) {
    Result<std::unique_ptr<ModelSource>> opened =
        IsPath(o.against) ? OpenModel(o.against, KeyOptions(o.key))
                          : [&]() -> Result<std::unique_ptr<ModelSource>> {
      MP_ASSIGN_OR_RETURN(const registry::VersionRecord v, registry_for(o.against));
      return reg->Load(v, !o.no_verify);
    }();
    if (!opened) return ReportError(opened.error().WithContext("--against " + o.against));
    against = std::move(*opened);
    options.against = against.get();
    options.against_name = o.against;
  }

  Result<validate::Report> report = [&]() -> Result<validate::Report> {
    if (IsPath(o.target)) return validate::ValidatePath(o.target, options);
    Result<registry::VersionRecord> v = registry_for(o.target);
    if (!v) {
      if (v.error().code() == StatusCode::kInvalidArgument) {
        return NotFound(o.target + ": no such file or folder, and not a registry reference");
      }
      if (v.error().code() == StatusCode::kNotFound) {
        return NotFound(o.target + ": no such file or folder, nor a registry version (" +
                        v.error().message() + ")");
      }
      return v.error();
    }
    return validate::ValidateVersion(*reg, *v, options);
  }();
  if (!report) {
    if (o.json) {
      PrintJson({{"target", o.target},
                 {"ok", false},
                 {"error",
                  {{"code", StatusCodeName(report.error().code())},
                   {"message", report.error().message()}}}});
    }
    return ReportError(report.error());
  }
  if (o.json) {
    PrintJson(report->ToJson());
  } else {
    PrintValidationReport(*report);
  }
  return report->passed() ? kExitOk : kExitDifferent;
}

}  // namespace

Result<validate::Samples> ParseSamples(const std::string& inputs, const std::string& expected,
                                       const std::vector<std::string>& atol,
                                       const std::vector<std::string>& rtol) {
  validate::Samples s;
  s.inputs = inputs;
  s.expected = expected;
  // Defaults first, so NAME=X entries start from them whatever the flag order.
  auto plain = [](const std::vector<std::string>& v, bool want_plain) {
    std::vector<std::string> out;
    for (const auto& x : v) {
      if ((x.find('=') == std::string::npos) == want_plain) out.push_back(x);
    }
    return out;
  };
  MP_RETURN_IF_ERROR(ApplyTolerances(plain(atol, true), "--atol", true, s));
  MP_RETURN_IF_ERROR(ApplyTolerances(plain(rtol, true), "--rtol", false, s));
  MP_RETURN_IF_ERROR(ApplyTolerances(plain(atol, false), "--atol", true, s));
  MP_RETURN_IF_ERROR(ApplyTolerances(plain(rtol, false), "--rtol", false, s));
  return s;
}

void PrintValidationReport(const validate::Report& report) {
  std::printf("validate %s (%s)\n", report.target.c_str(), report.format.c_str());
  size_t failed = 0, skipped = 0;
  for (const validate::Check& c : report.checks) {
    failed += c.outcome == validate::Outcome::kFail;
    skipped += c.outcome == validate::Outcome::kSkip;
    std::printf("%s  %-9s  %s: %s\n", OutcomeText(c.outcome), c.kind.c_str(), c.subject.c_str(),
                c.detail.c_str());
  }
  const size_t n = report.checks.size();
  if (failed == 0) {
    std::printf("PASSED: %zu check%s passed%s\n", n - skipped, n - skipped == 1 ? "" : "s",
                skipped ? (", " + std::to_string(skipped) + " skipped").c_str() : "");
  } else {
    std::printf("FAILED: %zu of %zu checks failed\n", failed, n);
  }
}

Command AddValidateCommand(CLI::App& app) {
  auto o = std::make_shared<ValidateOptions>();
  CLI::App* sub = app.add_subcommand(
      "validate",
      "Check a model (file, folder, or registry reference): integrity (every tensor loaded "
      "through the reader's checks and hashed; recorded digests compared), schema (the "
      "format's rules, the ONNX checker), fidelity against another model (--against; exact for "
      "equal dtypes, correctly rounded for narrowed floats), and inference on sample inputs "
      "(--samples, --expected; ONNX through the built-in reference evaluator, TorchScript "
      "through libtorch with --allow-torchscript). Exit 0 when every check passes, 1 when one "
      "fails.");
  sub->add_option("TARGET", o->target, "model file, folder, or registry reference (NAME@3)")
      ->required();
  sub->add_option("--against", o->against,
                  "fidelity: compare every tensor with this model (file or registry reference)");
  sub->add_flag("--exact", o->exact, "fidelity: every tensor bit-exact, whatever the dtypes");
  sub->add_option("--max-ulp", o->max_ulp,
                  "fidelity: allowed error of narrowed floats, in ulps of the narrow type "
                  "(default 0.5: correctly rounded)");
  sub->add_option("--samples", o->samples,
                  "inference: the inputs (.npz, .npy, .safetensors), named as the model's "
                  "inputs (TorchScript: in forward()'s order)");
  sub->add_option("--expected", o->expected, "inference: the expected outputs");
  sub->add_option("--atol", o->atol,
                  "inference: absolute tolerance, or NAME=X for one output (default 1e-5; "
                  "repeatable)");
  sub->add_option("--rtol", o->rtol,
                  "inference: relative tolerance, or NAME=X for one output (default 1e-5; "
                  "repeatable)");
  sub->add_flag("--allow-torchscript", o->allow_torchscript,
                "load and run TorchScript with libtorch (this executes code stored in the file)");
  sub->add_flag("--no-verify", o->no_verify, "registry: skip checking blobs as they load");
  AddKeyOption(sub, &o->key);
  sub->add_option("--registry", o->root,
                  "registry folder for references (default $MODELPORT_REGISTRY, else "
                  "~/.modelport/registry)");
  sub->add_option("--db", o->db, "registry database URL (default $MODELPORT_DB, else SQLite)");
  sub->add_flag("--json", o->json, "print one JSON document on stdout");
  return {sub, [o] { return Run(*o); }};
}

}  // namespace mp::cli
