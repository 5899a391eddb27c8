// Shared helpers for tests: temporary folders, the golden files, running the CLI and
// /usr/bin/python3 (Debian's torch and numpy), and building small models.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "modelport/core/file.h"
#include "modelport/core/tensor.h"

namespace mp::testing {

/// Both ways a reader can touch a file; tests that read run over each.
inline constexpr IoMode kIoModes[] = {IoMode::kMmap, IoMode::kPread};

/// A fresh folder under the system temp dir, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// ../shared/golden beside the source tree (CI lays shared/ beside its clone).
std::filesystem::path GoldenDir();
/// The repository root.
std::filesystem::path SourceDir();

struct CommandResult {
  int exit_code = -1;
  std::string out;  ///< stdout
  std::string err;  ///< stderr
};
/// Runs `command` through /bin/sh, capturing stdout and stderr separately.
CommandResult Run(const std::string& command);
/// Runs the built `modelport` binary with `args` (already shell-quoted as needed).
CommandResult RunCli(const std::string& args);
/// True when /usr/bin/python3 can import every module in `modules` (e.g. "torch numpy").
bool PythonHas(const std::string& modules);
/// True when node runs and tests/node has onnxruntime-node installed (`npm ci` there).
bool NodeHasOrt();
/// Runs `model` with onnxruntime (CPU) through tests/node/ort_run.mjs, writing each output to
/// `out_dir`/<name>.npy; `inputs` are "NAME=INPUT.npy" (or one bare INPUT.npy for a model with
/// one input). On success `out` is one JSON line {"outputs": [{"name", "file", "dtype",
/// "shape"}]}; on failure exit_code is 1 and `err` one line.
CommandResult RunOrt(const std::string& model, const std::string& out_dir,
                     const std::vector<std::string>& inputs);

/// True when node runs and tests/node has @tensorflow/tfjs installed (`npm ci` there).
inline bool NodeHasTfjs() {
  static const bool has =
      Run("node --version").exit_code == 0 &&
      std::filesystem::exists(SourceDir() /
                              "tests/node/node_modules/@tensorflow/tfjs/package.json");
  return has;
}
/// Runs tests/node/tfjs_run.mjs on the spec file `spec_json` (see that script for the spec's
/// fields); exit_code 0 on success, else 1 with one line in `err`.
inline CommandResult RunTfjs(const std::string& spec_json) {
  return Run("node '" + (SourceDir() / "tests/node/tfjs_run.mjs").string() + "' '" + spec_json +
             "'");
}

/// Whole file as bytes.
std::vector<uint8_t> ReadBytes(const std::string& path);
void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes);

/// A tensor of `dtype` and `shape` whose bytes are a deterministic pattern from `seed`.
TensorView PatternTensor(const std::string& name, DType dtype, Shape shape, uint32_t seed);
/// A tensor holding exactly `bytes`.
TensorView BytesTensor(const std::string& name, DType dtype, Shape shape,
                       const std::vector<uint8_t>& bytes);

}  // namespace mp::testing

namespace mp::testing {

/// Every tensor of `actual` matches `expected` by name: same count, dtype, shape and bytes
/// (order may differ). Metadata is compared too when `compare_metadata` (as unordered JSON).
::testing::AssertionResult SameModel(const ModelSource& expected, const ModelSource& actual,
                                     bool compare_metadata = true);

/// The JSON header of a safetensors file, parsed independently of modelport's reader, and the
/// file offset where its data buffer starts. Aborts the test (via ADD_FAILURE + empty json) if
/// the file is too short.
struct RawSafetensors {
  nlohmann::json header;       ///< the whole header object, including "__metadata__" if any
  uint64_t data_start = 0;     ///< 8 + N
  std::vector<uint8_t> bytes;  ///< the whole file
  /// Bytes of tensor `name` as its data_offsets say.
  std::vector<uint8_t> TensorBytes(const std::string& name) const;
};
RawSafetensors ReadRawSafetensors(const std::string& path);

}  // namespace mp::testing

namespace mp::testing {

/// The DType for a torch dtype as str(t.dtype) prints it ("torch.float32", "torch.bfloat16",
/// "torch.float8_e4m3fn"); NotFound for dtypes modelport has no match for.
Result<DType> DTypeFromTorchName(const std::string& name);

}  // namespace mp::testing

/// Skips the current test unless NodeHasOrt().
#define MP_SKIP_WITHOUT_ORT()       \
  if (!::mp::testing::NodeHasOrt()) \
  GTEST_SKIP() << "node or onnxruntime-node is missing (npm ci --ignore-scripts in tests/node)"

/// Skips the current test unless NodeHasTfjs().
#define MP_SKIP_WITHOUT_TFJS()       \
  if (!::mp::testing::NodeHasTfjs()) \
  GTEST_SKIP() << "node or @tensorflow/tfjs is missing (npm ci --ignore-scripts in tests/node)"

/// Skips the current test when ../shared/golden is not beside the checkout.
#define MP_SKIP_WITHOUT_GOLDEN()                            \
  if (!std::filesystem::exists(::mp::testing::GoldenDir())) \
  GTEST_SKIP() << ::mp::testing::GoldenDir() << " is absent"
