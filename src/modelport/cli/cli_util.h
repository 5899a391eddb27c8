// Shared pieces of the `modelport` command: exit codes, error reporting, sizes, table and JSON
// output, the progress bar, the files behind a model and the worker pool.
//
// Exit codes (also printed in `modelport --help`):
//   0   success; for diff, the models match
//   1   the command checked and found a difference or failure (diff found differences)
//   2   usage error: bad flags or arguments (CLI parse errors, StatusCode::kInvalidArgument)
//   3   not found: a file, tensor or key does not exist (kNotFound)
//   4   input rejected: corrupt, unsafe, over a safety limit, or a checksum mismatch
//       (kCorrupt, kUnsafe, kLimitExceeded, kChecksumMismatch)
//   5   unsupported: valid input that modelport does not handle (kUnsupported)
//   6   I/O error, or refusing to overwrite an existing destination (kIoError, kAlreadyExists)
//   70  internal error: a bug in modelport (kInternal, unexpected exceptions)
// Every failure prints exactly one line on stderr: "modelport: error: <message>".
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/core/parallel.h"
#include "modelport/core/status.h"
#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"

namespace CLI {
class App;
}  // namespace CLI

namespace mp::registry {
class Registry;
}  // namespace mp::registry

namespace mp::validate {
struct Report;
struct Samples;
}  // namespace mp::validate

namespace mp::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitDifferent = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitNotFound = 3;
inline constexpr int kExitRejected = 4;
inline constexpr int kExitUnsupported = 5;
inline constexpr int kExitIo = 6;
inline constexpr int kExitInternal = 70;

/// The exit-code table above as --help epilog text.
std::string_view ExitCodeHelp();

/// The exit code for a failed status (never 0).
int ExitCodeFor(StatusCode code);

/// Prints "modelport: error: <message>" (one line; embedded newlines become spaces) to stderr.
void PrintError(std::string_view message);

/// Prints the status as one error line and returns its exit code.
int ReportError(const Status& status);

/// A subcommand: its CLI11 app and what runs it once the command line parsed.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

/// Each adds its subcommand (flags, help) to `app`; defined in the file named after it.
Command AddInspectCommand(CLI::App& app);
Command AddConvertCommand(CLI::App& app);
Command AddVerifyCommand(CLI::App& app);
Command AddDiffCommand(CLI::App& app);
Command AddHashCommand(CLI::App& app);
Command AddScanCommand(CLI::App& app);
Command AddOnnxCommand(CLI::App& app);
Command AddRegistryCommand(CLI::App& app);
Command AddValidateCommand(CLI::App& app);
Command AddTfCommand(CLI::App& app);
/// quantize and dequantize record their command line (registry lineage with --push).
Command AddQuantizeCommand(CLI::App& app, int argc, char** argv);
Command AddDequantizeCommand(CLI::App& app, int argc, char** argv);

/// The registry at `root` (empty: $MODELPORT_REGISTRY, else ~/.modelport/registry) with its
/// database at `db` (empty: $MODELPORT_DB, else SQLite in the folder).
std::string RegistryRoot(const std::string& root);
std::string RegistryDb(const std::string& db);
Result<std::unique_ptr<registry::Registry>> OpenRegistryFrom(const std::string& root,
                                                             const std::string& db);

/// Prints a validation report: one aligned line per check, then PASSED/FAILED with counts
/// (validate.cc; `registry promote` prints the report of its gate the same way).
void PrintValidationReport(const validate::Report& report);
/// Samples from --samples/--expected with --atol/--rtol values: "X" sets the default, "NAME=X"
/// one output's (starting from the defaults whatever the order). InvalidArgument for a value
/// that is not a finite number >= 0.
Result<validate::Samples> ParseSamples(const std::string& inputs, const std::string& expected,
                                       const std::vector<std::string>& atol,
                                       const std::vector<std::string>& rtol);

/// Adds `--key PATH` (which nested state dict of a checkpoint to read) to a subcommand.
void AddKeyOption(CLI::App* sub, std::string* key);
/// ReadOptions with select_key = `key`.
ReadOptions KeyOptions(const std::string& key);

/// Parses a byte size: plain bytes ("1048576") or a number with a unit, case-insensitive,
/// optionally fractional ("5GB", "1.5 GB", "500MB", "2GiB"). Decimal units are powers of 1000
/// (KB, MB, GB, TB, as Hugging Face reads "5GB"), binary ones powers of 1024 (KiB .. TiB).
/// InvalidArgument for anything else, for zero and on overflow.
Result<uint64_t> ParseSize(std::string_view text);

/// "482,304".
std::string WithThousands(uint64_t value);
/// "471.0 KiB"; "12 B" below 1 KiB.
std::string HumanBytes(uint64_t bytes);
/// "[2, 3]" for shape dims.
std::string ShapeText(const Shape& shape);
/// A shape as a JSON array of integers.
Json ShapeJson(const Shape& shape);

/// Writes `doc` to stdout as one pretty-printed JSON document followed by a newline. Invalid
/// UTF-8 in strings is replaced rather than thrown on.
void PrintJson(const Json& doc);

/// An aligned text table: columns padded to their widest cell; right-aligned columns for
/// numbers.
class Table {
 public:
  Table(std::vector<std::string> header, std::vector<bool> right_align);
  void AddRow(std::vector<std::string> row);
  void Print(std::FILE* out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_;
};

/// A one-line progress bar redrawn on stderr, only when stderr is a terminal; otherwise every
/// call is a no-op. Destroying it clears the line so an error message starts clean.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  bool enabled() const { return enabled_; }
  /// Thread-safe; redraws at most every 100 ms and always at completion.
  void Update(uint64_t items_done, uint64_t items_total, uint64_t bytes_done, uint64_t bytes_total);
  /// Erases the bar (if drawn) so the next output starts on a clean line.
  void Clear();

 private:
  struct State;
  std::string label_;
  bool enabled_ = false;
  std::unique_ptr<State> state_;
};

/// File SHA-256 of every model file and the canonical digest of every tensor, computed on the
/// worker pool (loading every tensor also makes the reader check its bounds and data).
struct Digests {
  ModelFiles files;
  std::vector<std::string> file_sha256;    ///< parallel to files.files; "sha256:<hex>"
  std::string index_sha256;                ///< of files.index when sharded
  std::vector<std::string> tensor_sha256;  ///< parallel to source.tensors(); "sha256:<hex>"
};
Result<Digests> ComputeDigests(const ModelSource& source, ProgressBar* progress);

/// The JSON shared by `hash` and `verify`: "files": [{"path", "sha256"}], "index" (sharded
/// only: {"path", "sha256"}), "tensors": [{"name", "dtype", "shape", "bytes", "sha256"}].
void AddDigestJson(const ModelSource& source, const Digests& digests, Json& doc);
/// Human form of the same: "sha256:<hex>  <file>" lines, then "sha256:<hex>  <tensor>" lines.
void PrintDigests(const ModelSource& source, const Digests& digests);

}  // namespace mp::cli
