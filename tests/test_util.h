// Shared helpers for tests: temporary folders, the golden files, running the CLI and
// /usr/bin/python3 (Debian's torch and numpy), and building small models.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "modelport/core/tensor.h"

namespace mp::testing {

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

/// Whole file as bytes.
std::vector<uint8_t> ReadBytes(const std::string& path);
void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes);

/// A tensor of `dtype` and `shape` whose bytes are a deterministic pattern from `seed`.
TensorView PatternTensor(const std::string& name, DType dtype, Shape shape, uint32_t seed);
/// A tensor holding exactly `bytes`.
TensorView BytesTensor(const std::string& name, DType dtype, Shape shape,
                       const std::vector<uint8_t>& bytes);

}  // namespace mp::testing
