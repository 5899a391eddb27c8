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

namespace {
/// `s` as one /bin/sh word.
std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
}  // namespace

bool NodeHasOrt() {
  static const bool has =
      Run("node --version").exit_code == 0 &&
      fs::exists(SourceDir() / "tests/node/node_modules/onnxruntime-node/package.json");
  return has;
}

CommandResult RunOrt(const std::string& model, const std::string& out_dir,
                     const std::vector<std::string>& inputs) {
  std::string command = "node " + ShellQuote((SourceDir() / "tests/node/ort_run.mjs").string()) +
                        " " + ShellQuote(model) + " " + ShellQuote(out_dir);
  for (const std::string& input : inputs) command += " " + ShellQuote(input);
  return Run(command);
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::string s = Slurp(path);
  return {s.begin(), s.end()};
}

void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
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

namespace mp::testing {

::testing::AssertionResult SameModel(const ModelSource& expected, const ModelSource& actual,
                                     bool compare_metadata) {
  if (expected.tensors().size() != actual.tensors().size()) {
    return ::testing::AssertionFailure() << "tensor count " << actual.tensors().size()
                                         << ", expected " << expected.tensors().size();
  }
  for (size_t i = 0; i < expected.tensors().size(); ++i) {
    const TensorInfo& want = expected.tensors()[i];
    auto j = actual.Find(want.name);
    if (!j) return ::testing::AssertionFailure() << "tensor '" << want.name << "' missing";
    const TensorInfo& got = actual.tensors()[*j];
    if (got.dtype != want.dtype || got.shape != want.shape || got.byte_size != want.byte_size) {
      return ::testing::AssertionFailure()
             << "tensor '" << want.name << "': " << DTypeName(got.dtype) << got.shape.ToString()
             << " (" << got.byte_size << " bytes), expected " << DTypeName(want.dtype)
             << want.shape.ToString() << " (" << want.byte_size << " bytes)";
    }
    auto a = expected.Load(i);
    auto b = actual.Load(*j);
    if (!a || !b) {
      return ::testing::AssertionFailure()
             << "tensor '" << want.name << "': load failed: " << a.status().ToString() << " / "
             << b.status().ToString();
    }
    if (b->data->size() != want.byte_size ||
        !std::equal(a->bytes().begin(), a->bytes().end(), b->bytes().begin(), b->bytes().end())) {
      return ::testing::AssertionFailure() << "tensor '" << want.name << "': bytes differ";
    }
  }
  if (compare_metadata) {
    const nlohmann::json want = nlohmann::json::parse(expected.metadata().dump());
    const nlohmann::json got = nlohmann::json::parse(actual.metadata().dump());
    if (want != got) {
      return ::testing::AssertionFailure()
             << "metadata " << got.dump() << ", expected " << want.dump();
    }
  }
  return ::testing::AssertionSuccess();
}

RawSafetensors ReadRawSafetensors(const std::string& path) {
  RawSafetensors raw;
  raw.bytes = ReadBytes(path);
  if (raw.bytes.size() < 8) {
    ADD_FAILURE() << path << ": shorter than 8 bytes";
    return raw;
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | raw.bytes[static_cast<size_t>(i)];
  if (n > raw.bytes.size() - 8) {
    ADD_FAILURE() << path << ": header length " << n << " past the end";
    return raw;
  }
  raw.data_start = 8 + n;
  raw.header = nlohmann::json::parse(raw.bytes.begin() + 8, raw.bytes.begin() + 8 + n, nullptr,
                                     /*allow_exceptions=*/false);
  if (raw.header.is_discarded()) ADD_FAILURE() << path << ": header is not JSON";
  return raw;
}

std::vector<uint8_t> RawSafetensors::TensorBytes(const std::string& name) const {
  const auto& offsets = header.at(name).at("data_offsets");
  const uint64_t begin = data_start + offsets[0].get<uint64_t>();
  const uint64_t end = data_start + offsets[1].get<uint64_t>();
  if (begin > end || end > bytes.size()) {
    ADD_FAILURE() << "tensor '" << name << "': offsets out of bounds";
    return {};
  }
  return {bytes.begin() + static_cast<std::ptrdiff_t>(begin),
          bytes.begin() + static_cast<std::ptrdiff_t>(end)};
}

}  // namespace mp::testing

namespace mp::testing {

Result<DType> DTypeFromTorchName(const std::string& name) {
  static const std::pair<const char*, DType> kNames[] = {
      {"torch.bool", DType::kBool},
      {"torch.uint8", DType::kU8},
      {"torch.int8", DType::kI8},
      {"torch.int16", DType::kI16},
      {"torch.uint16", DType::kU16},
      {"torch.float16", DType::kF16},
      {"torch.bfloat16", DType::kBF16},
      {"torch.int32", DType::kI32},
      {"torch.uint32", DType::kU32},
      {"torch.float32", DType::kF32},
      {"torch.float64", DType::kF64},
      {"torch.int64", DType::kI64},
      {"torch.uint64", DType::kU64},
      {"torch.complex64", DType::kC64},
      {"torch.float8_e4m3fn", DType::kF8E4M3},
      {"torch.float8_e5m2", DType::kF8E5M2},
  };
  for (const auto& [torch_name, dtype] : kNames) {
    if (name == torch_name) return dtype;
  }
  return NotFound("no modelport dtype for torch dtype '" + name + "'");
}

}  // namespace mp::testing
