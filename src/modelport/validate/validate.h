// `modelport validate`: proves a model matches what was serialized and still computes what it
// should. Four kinds of checks, each one line in the report (docs/VALIDATION.md):
//
//   integrity  every tensor loaded through the reader's checks (bounds, zip CRC-32, ONNX
//              external-data SHA-1) and hashed; compared with recorded digests where there are
//              any: a registry version's manifest, `<file>.sha256` sidecars (sha256sum format)
//   schema     the format's structural rules (the reader's), the ONNX checker (libonnx) for
//              ONNX graphs, and "loads in libtorch" for TorchScript (only when allowed: loading
//              TorchScript runs its code)
//   fidelity   every tensor against another model's, dtype-aware: same dtype exact; a float
//              narrowed (f32 -> f16/bf16/f8) within half a unit in the last place of the
//              narrower type, the error of correct rounding; a widened one exact
//   inference  the model run on sample inputs (ONNX: the built-in reference evaluator;
//              TorchScript: libtorch, when allowed) compared with expected outputs within
//              per-output atol/rtol
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "modelport/core/status.h"
#include "modelport/core/tensor.h"
#include "modelport/registry/registry.h"

namespace mp::validate {

enum class Outcome { kPass, kFail, kSkip };

/// One line of the report.
struct Check {
  std::string kind;     ///< "integrity", "schema", "fidelity", "inference"
  std::string subject;  ///< what was checked: a file, "onnx checker", an output, "tensors"
  Outcome outcome = Outcome::kPass;
  std::string detail;          ///< one line, with the numbers
  Json data = Json::object();  ///< the numbers for --json
};

struct Report {
  std::string target;
  std::string format;
  std::vector<Check> checks;

  bool passed() const;
  /// The first failed check as "kind subject: detail" ("" when none failed).
  std::string FirstFailure() const;
  Json ToJson() const;
};

/// |actual - expected| <= atol + rtol * |expected|, elementwise.
struct Tolerance {
  double atol = 1e-5;
  double rtol = 1e-5;
};

/// Sample inputs and expected outputs: files any modelport reader opens (.npz, .npy,
/// .safetensors, ...), one tensor per input/output, named as the model's inputs/outputs (or,
/// for TorchScript, in forward()'s argument order).
struct Samples {
  std::string inputs;
  std::string expected;
  Tolerance tolerance;
  std::map<std::string, Tolerance> per_output;  ///< overrides by output name
};

struct Options {
  std::string key;  ///< --key: which object of a nested checkpoint
  /// Fidelity: the model to compare against, and what to call it in the report.
  const ModelSource* against = nullptr;
  std::string against_name;
  /// Fidelity: exact comparison for every tensor, whatever the dtypes (--exact).
  bool exact = false;
  /// Fidelity: the allowed error of a narrowed float, in units in the last place of the
  /// narrower type (0.5: correctly rounded).
  double max_ulp = 0.5;
  std::optional<Samples> samples;
  /// TorchScript: load (and run) it with libtorch, which executes code stored in the file.
  bool allow_torchscript = false;
  bool verify_blobs = true;  ///< registry versions: re-hash blobs as they load
};

/// Validates a model file or folder.
Result<Report> ValidatePath(const std::string& path, const Options& options);

/// Validates a registry version: its blobs against the manifest, its ONNX graph (when it has
/// one) through the checker and, with samples (given, or attached when it was pushed), the
/// reference evaluator.
Result<Report> ValidateVersion(registry::Registry& registry, const registry::VersionRecord& version,
                               const Options& options);

/// The fidelity checks alone (also used by ValidatePath/ValidateVersion): one line per tensor
/// that fails, plus one summary line naming the worst tensors.
Result<std::vector<Check>> CompareModels(const ModelSource& model, const ModelSource& against,
                                         const std::string& against_name, const Options& options);

}  // namespace mp::validate
