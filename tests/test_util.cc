#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

namespace mp::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "modelport_test_XXXXXX").string();
  char* made = ::mkdtemp(tmpl.data());
  if (made == nullptr) std::abort();
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

fs::path SourceDir() {
  if (const char* env = std::getenv("MODELPORT_SOURCE_DIR")) return env;
  return MODELPORT_SOURCE_DIR;
}

fs::path GoldenDir() { return SourceDir().parent_path() / "shared" / "golden"; }

namespace {
std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

CommandResult Run(const std::string& command) {
  TempDir tmp;
  const std::string out = tmp.File("out"), err = tmp.File("err");
  const std::string full = "(" + command + ") >'" + out + "' 2>'" + err + "' </dev/null";
  int rc = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  r.out = Slurp(out);
  r.err = Slurp(err);
  return r;
}

CommandResult RunCli(const std::string& args) {
  return Run(std::string("'") + MODELPORT_CLI + "' " + args);
}

bool PythonHas(const std::string& modules) {
  std::string imports;
  std::istringstream in(modules);
  for (std::string m; in >> m;) imports += "import " + m + ";";
  return Run("/usr/bin/python3 -c '" + imports + "'").exit_code == 0;
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::string s = Slurp(path);
  return {s.begin(), s.end()};
}

void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

TensorView BytesTensor(const std::string& name, DType dtype, Shape shape,
                       const std::vector<uint8_t>& bytes) {
  auto info = TensorInfo::Make(name, dtype, std::move(shape));
  if (!info || info->byte_size != bytes.size()) std::abort();
  auto buf = *Buffer::Allocate(bytes.size());
  if (!bytes.empty()) std::memcpy(buf->mutable_data(), bytes.data(), bytes.size());
  return TensorView{*info, buf};
}

TensorView PatternTensor(const std::string& name, DType dtype, Shape shape, uint32_t seed) {
  auto info = TensorInfo::Make(name, dtype, shape);
  if (!info) std::abort();
  std::vector<uint8_t> bytes(info->byte_size);
  std::mt19937 rng(seed);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  if (dtype == DType::kBool) {
    for (auto& b : bytes) b &= 1;
  }
  return BytesTensor(name, dtype, std::move(shape), bytes);
}

}  // namespace mp::testing
