// `modelport scan PATH... [--json]`: tells whether pickle-based files (.pt, .pth, .bin, .pkl,
// .ckpt, .npy/.npz with object arrays; judged by content) would run code when loaded, without
// loading them (formats/torch/scan.h). Folders are scanned recursively; symbolic links inside
// them are not followed and are reported as skipped (a path named on the command line is
// scanned even when it is a link).
//
// Exit codes: 0 every file safe or without pickles, 1 something suspicious and nothing unsafe,
// 4 something unsafe (wins over everything else), 3 a path not found, 6 a file unreadable,
// 2 usage.
//
// --json: one document {"files": [ScanToJson per file], "skipped": [{"path", "reason"}],
// "errors": [{"path", "error"}], "summary": {"files", "unsafe", "suspicious", "safe",
// "no_pickle", "skipped", "errors"}, "exit_code"}.
#include "modelport/formats/torch/scan.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "modelport/cli/cli_util.h"

namespace mp::cli {
namespace {

namespace fs = std::filesystem;
using torch::FileScan;
using torch::ScannedGlobal;
using torch::Verdict;

struct ScanCliOptions {
  std::vector<std::string> paths;
  bool json = false;
};

// Lines of reasons printed per file before "... and N more" (--json has them all).
constexpr size_t kMaxReasonLines = 20;
// Distinct imports/calls printed per file.
constexpr size_t kMaxGlobals = 12;

struct Skipped {
  std::string path;
  std::string reason;
};

struct Failed {
  std::string path;
  Status status;
};

// The files to scan under `path` (named on the command line), in a stable order.
void Collect(const std::string& path, std::vector<std::string>& files,
             std::vector<Skipped>& skipped, std::vector<Failed>& failed) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    const fs::file_status lst = fs::symlink_status(path, ec);
    if (!ec && fs::is_symlink(lst)) {
      failed.push_back({path, NotFound(path + ": symbolic link to nothing")});
    } else {
      failed.push_back({path, NotFound(path + ": no such file or folder")});
    }
    return;
  }
  if (!fs::is_directory(st)) {
    if (fs::is_regular_file(st)) {
      files.push_back(path);
    } else {
      skipped.push_back({path, "not a regular file"});
    }
    return;
  }
  std::vector<std::pair<std::string, bool>> found;  // path, is a link
  std::vector<std::string> odd;
  fs::recursive_directory_iterator it(path, fs::directory_options::none, ec);
  if (ec) {
    failed.push_back({path, IoError(path + ": cannot list the folder: " + ec.message())});
    return;
  }
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      failed.push_back({path, IoError(path + ": cannot list the folder: " + ec.message())});
      return;
    }
    const fs::directory_entry& e = *it;
    std::error_code ec2;
    if (e.is_symlink(ec2)) {
      found.emplace_back(e.path().string(), true);
    } else if (e.is_regular_file(ec2)) {
      found.emplace_back(e.path().string(), false);
    } else if (!e.is_directory(ec2)) {
      odd.push_back(e.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  std::sort(odd.begin(), odd.end());
  for (const auto& [p, link] : found) {
    if (link) {
      skipped.push_back({p, "symbolic link, not followed"});
    } else {
      files.push_back(p);
    }
  }
  for (const std::string& p : odd) skipped.push_back({p, "not a regular file"});
}

std::string Location(const std::string& where, const std::string& text) {
  return where.empty() ? text : where + ": " + text;
}

// "name x3 [refused]" lists, first appearance first, refused ones before the rest.
std::string GlobalList(const std::vector<ScannedGlobal>& list, bool with_opcode) {
  struct Group {
    std::string label;
    bool allowed = true;
    size_t count = 0;
    size_t first = 0;
  };
  std::map<std::string, Group> groups;
  for (size_t i = 0; i < list.size(); ++i) {
    const ScannedGlobal& g = list[i];
    std::string label = g.name + (with_opcode ? " (" + g.opcode + ")" : "");
    const std::string key = label + (g.allowed ? "+" : "-");
    auto [it, inserted] = groups.try_emplace(key);
    if (inserted) {
      it->second.label = std::move(label);
      it->second.allowed = g.allowed;
      it->second.first = i;
    }
    ++it->second.count;
  }
  std::vector<const Group*> order;
  for (const auto& [key, g] : groups) order.push_back(&g);
  std::sort(order.begin(), order.end(), [](const Group* a, const Group* b) {
    if (a->allowed != b->allowed) return !a->allowed;
    return a->first < b->first;
  });
  std::string out;
  for (size_t i = 0; i < order.size() && i < kMaxGlobals; ++i) {
    const Group& g = *order[i];
    out += (i == 0 ? "" : ", ") + g.label;
    if (g.count > 1) out += " x" + std::to_string(g.count);
    if (!g.allowed) out += " [refused]";
  }
  if (order.size() > kMaxGlobals)
    out += ", ... " + std::to_string(order.size() - kMaxGlobals) + " more";
  return out;
}

void PrintScan(const FileScan& s) {
  std::string head = s.path + ": " + std::string(torch::VerdictName(s.verdict)) + " (" + s.format;
  if (!s.pickles.empty())
    head +=
        ", " + std::to_string(s.pickles.size()) + (s.pickles.size() == 1 ? " pickle" : " pickles");
  head += ")";
  std::printf("%s\n", head.c_str());
  size_t shown = 0;
  for (const Verdict severity : {Verdict::kUnsafe, Verdict::kSuspicious}) {
    for (const auto& r : s.reasons) {
      if (r.severity != severity) continue;
      if (shown++ < kMaxReasonLines)
        std::printf("  %-10s  %s\n", std::string(torch::VerdictName(r.severity)).c_str(),
                    Location(r.where, r.text).c_str());
    }
  }
  if (shown > kMaxReasonLines)
    std::printf("  ... and %zu more reasons (--json lists them all)\n", shown - kMaxReasonLines);
  if (!s.imports.empty()) std::printf("  imports     %s\n", GlobalList(s.imports, false).c_str());
  if (!s.calls.empty()) std::printf("  calls       %s\n", GlobalList(s.calls, true).c_str());
}

int Scan(const ScanCliOptions& opt) {
  std::vector<std::string> files;
  std::vector<Skipped> skipped;
  std::vector<Failed> failed;
  for (const std::string& p : opt.paths) Collect(p, files, skipped, failed);
  std::map<Verdict, size_t> counts;
  Json docs = Json::array();
  for (const std::string& f : files) {
    auto scan = torch::ScanFile(f);
    if (!scan.has_value()) {
      failed.push_back({f, scan.error()});
      continue;
    }
    ++counts[scan->verdict];
    if (opt.json) {
      docs.push_back(torch::ScanToJson(*scan));
    } else {
      PrintScan(*scan);
    }
  }
  const size_t scanned = counts[Verdict::kUnsafe] + counts[Verdict::kSuspicious] +
                         counts[Verdict::kSafe] + counts[Verdict::kNoPickle];
  int code = kExitOk;
  if (counts[Verdict::kUnsafe] > 0) {
    code = kExitRejected;
  } else if (!failed.empty()) {
    code = ExitCodeFor(failed.front().status.code());
  } else if (counts[Verdict::kSuspicious] > 0) {
    code = kExitDifferent;
  }
  if (opt.json) {
    Json doc = Json::object();
    doc["files"] = std::move(docs);
    Json sk = Json::array();
    for (const Skipped& s : skipped) sk.push_back({{"path", s.path}, {"reason", s.reason}});
    doc["skipped"] = std::move(sk);
    Json errors = Json::array();
    for (const Failed& f : failed)
      errors.push_back({{"path", f.path}, {"error", f.status.message()}});
    doc["errors"] = std::move(errors);
    doc["summary"] = {{"files", scanned},
                      {"unsafe", counts[Verdict::kUnsafe]},
                      {"suspicious", counts[Verdict::kSuspicious]},
                      {"safe", counts[Verdict::kSafe]},
                      {"no_pickle", counts[Verdict::kNoPickle]},
                      {"skipped", skipped.size()},
                      {"errors", failed.size()}};
    doc["exit_code"] = code;
    PrintJson(doc);
  } else {
    for (const Skipped& s : skipped)
      std::printf("%s: skipped (%s)\n", s.path.c_str(), s.reason.c_str());
    if (scanned + skipped.size() + failed.size() > 1)
      std::printf(
          "%zu scanned: %zu unsafe, %zu suspicious, %zu safe, %zu without pickles; %zu "
          "skipped, %zu errors\n",
          scanned, counts[Verdict::kUnsafe], counts[Verdict::kSuspicious], counts[Verdict::kSafe],
          counts[Verdict::kNoPickle], skipped.size(), failed.size());
  }
  std::fflush(stdout);
  for (const Failed& f : failed) PrintError(f.status.message());
  return code;
}

}  // namespace

Command AddScanCommand(CLI::App& app) {
  auto opt = std::make_shared<ScanCliOptions>();
  CLI::App* sub = app.add_subcommand(
      "scan",
      "Tell whether pickle-based files (.pt, .pth, .bin, .pkl, .ckpt, .npy/.npz) would run code "
      "when loaded, without loading them.");
  sub->footer(
      "Files are judged by content (zip, legacy or raw pickle, .npy object arrays), whatever the "
      "extension. Each file gets a verdict with its reasons and every global its pickles import "
      "and every call they make: 'safe' (allow-listed torch constructs only), 'suspicious' "
      "(nothing outside the allow-list would run, but a stream or archive is damaged or tampered "
      "with, or the file is TorchScript, whose code torch.jit.load runs), 'unsafe' (imports or "
      "calls outside the allow-list: it could run code; or zip-slip names), or 'no pickle'. "
      "Folders are scanned recursively; symbolic links inside them are skipped, not followed.\n"
      "Exit codes of scan: 0 all safe or without pickles, 1 something suspicious and nothing "
      "unsafe, 4 something unsafe (wins over the others), 3 a path not found, 6 a file "
      "unreadable, 2 usage.");
  sub->add_option("PATH", opt->paths, "files or folders to scan")->required();
  sub->add_flag("--json", opt->json, "print one JSON document on stdout (for CI)");
  return {sub, [opt] { return Scan(*opt); }};
}

}  // namespace mp::cli
