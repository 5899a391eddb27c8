// mp::torch::Write, checked by real peers: Debian's torch 1.13 loads what it writes with
// weights_only=True (tests/oracle/torch_load_check.py) and its own torch.save writes the same
// data.pkl; dtypes torch 1.13 lacks are checked against the pickle form of a file torch 2.11
// wrote (shared/golden).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "modelport/formats/torch/torch.h"
#include "modelport/formats/zip/zip.h"
#include "test_util.h"

namespace mp::torch {
namespace {

namespace fs = std::filesystem;
using testing::BytesTensor;
using testing::CommandResult;
using testing::PatternTensor;
using testing::PythonHas;
using testing::ReadBytes;
using testing::TempDir;

#define MP_SKIP_WITHOUT_TORCH() \
  if (!PythonHas("torch numpy")) GTEST_SKIP() << "/usr/bin/python3 cannot import torch and numpy"

std::string ShellQuote(const std::string& s) { return "'" + s + "'"; }

CommandResult Oracle(const std::string& args) {
  const std::string script = (testing::SourceDir() / "tests/oracle/torch_load_check.py").string();
  return testing::Run("/usr/bin/python3 " + ShellQuote(script) + " " + args);
}

std::string TorchDTypeName(DType d) {
  static const std::map<DType, std::string> kNames = {
      {DType::kBool, "torch.bool"},
      {DType::kU8, "torch.uint8"},
      {DType::kI8, "torch.int8"},
      {DType::kI16, "torch.int16"},
      {DType::kI32, "torch.int32"},
      {DType::kI64, "torch.int64"},
      {DType::kF16, "torch.float16"},
      {DType::kBF16, "torch.bfloat16"},
      {DType::kF32, "torch.float32"},
      {DType::kF64, "torch.float64"},
      {DType::kC64, "torch.complex64"},
      {DType::kU16, "torch.uint16"},
      {DType::kU32, "torch.uint32"},
      {DType::kU64, "torch.uint64"},
      {DType::kF8E4M3, "torch.float8_e4m3fn"},
      {DType::kF8E5M2, "torch.float8_e5m2"},
  };
  return kNames.at(d);
}

std::string Hex(std::span<const uint8_t> bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    s += kDigits[b >> 4];
    s += kDigits[b & 15];
  }
  return s;
}

struct ManifestOptions {
  bool same_pickle = false;  // also compare data.pkl with torch.save's
};

// The manifest torch_load_check.py checks against: every tensor of `model` in order (bytes as
// hex, or a raw file beside the manifest when large), then its aliases, and the metadata the
// writer should keep (everything but the aliases).
std::string WriteManifest(const TempDir& dir, const Model& model, ManifestOptions opts = {}) {
  nlohmann::json entries = nlohmann::json::array();
  for (size_t i = 0; i < model.tensors().size(); ++i) {
    auto t = model.Load(i);
    EXPECT_TRUE(t.ok());
    nlohmann::json e = {{"name", t->info.name},
                        {"dtype", TorchDTypeName(t->info.dtype)},
                        {"shape", t->info.shape.dims()}};
    if (t->info.byte_size > 4096) {
      const std::string file = "raw." + std::to_string(i);
      testing::WriteBytes(dir.File(file), {t->bytes().begin(), t->bytes().end()});
      e["file"] = file;
    } else {
      e["hex"] = Hex(t->bytes());
    }
    entries.push_back(e);
  }
  nlohmann::json metadata = nlohmann::json::object();
  for (const auto& [key, value] : model.metadata().items()) {
    if (key != kAliasesKey) {
      metadata[key] = nlohmann::json::parse(value.dump());
      continue;
    }
    for (const auto& [alias, target] : value.items()) {
      nlohmann::json e = entries[*model.Find(target.get<std::string>())];
      e["name"] = alias;
      e["tied_to"] = target;
      entries.push_back(e);
    }
  }
  nlohmann::json manifest = {{"entries", entries}, {"torch_save_same_pickle", opts.same_pickle}};
  if (!metadata.empty()) manifest["metadata"] = metadata;
  const std::string path = dir.File("manifest.json");
  const std::string text = manifest.dump();
  testing::WriteBytes(path, {text.begin(), text.end()});
  return path;
}

// Writes `model` to DIR/model.pt and runs the oracle in `mode` ("check" or "pickle") on it.
void WriteAndCheck(const Model& model, const std::string& mode, ManifestOptions opts = {}) {
  TempDir dir;
  const std::string pt = dir.File("model.pt");
  Status s = Write(model, pt, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::string manifest = WriteManifest(dir, model, opts);
  CommandResult r = Oracle(mode + " " + ShellQuote(pt) + " " + ShellQuote(manifest));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

void Add(Model& model, TensorView t) {
  Status s = model.Add(std::move(t));
  ASSERT_TRUE(s.ok()) << s.ToString();
}

template <typename T>
TensorView ValuesTensor(const std::string& name, DType dtype, Shape shape,
                        const std::vector<T>& values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return BytesTensor(name, dtype, std::move(shape), bytes);
}

std::vector<std::string> FilesIn(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return names;
}

// ---------------------------------------------------------------------------------------------
// torch 1.13 loads what modelport writes

TEST(TorchWriter, EveryTorch113DTypeLoadsBitExactly) {
  MP_SKIP_WITHOUT_TORCH();
  Model model;
  const DType dtypes[] = {DType::kF32, DType::kF64,  DType::kF16, DType::kBF16,
                          DType::kI8,  DType::kI16,  DType::kI32, DType::kI64,
                          DType::kU8,  DType::kBool, DType::kC64};
  uint32_t seed = 1;
  for (DType d : dtypes) {
    const std::string n(DTypeName(d));
    Add(model, PatternTensor(n + ".matrix", d, {3, 5}, seed++));
    Add(model, PatternTensor(n + ".vector", d, {7}, seed++));
    Add(model, PatternTensor(n + ".rank4", d, {2, 1, 3, 2}, seed++));  // MARK..TUPLE shapes
  }
  WriteAndCheck(model, "check", {.same_pickle = true});
}

TEST(TorchWriter, EdgeFloatValuesKeepTheirBits) {
  MP_SKIP_WITHOUT_TORCH();
  Model model;
  // NaN with payloads (quiet and signalling, both signs), -0, +-inf, smallest subnormals, max.
  Add(model,
      ValuesTensor<uint32_t>("f32", DType::kF32, {9},
                             {0x7FC00001u, 0xFFC12345u, 0x7F800001u, 0x80000000u, 0x7F800000u,
                              0xFF800000u, 0x00000001u, 0x807FFFFFu, 0x7F7FFFFFu}));
  Add(model,
      ValuesTensor<uint64_t>("f64", DType::kF64, {5},
                             {0x7FF8000000000123ull, 0xFFF0000000000001ull, 0x8000000000000000ull,
                              0x0000000000000001ull, 0xFFF0000000000000ull}));
  Add(model, ValuesTensor<uint16_t>("f16", DType::kF16, {6},
                                    {0x7E01, 0xFD55, 0x8000, 0x7C00, 0x0001, 0x83FF}));
  Add(model, ValuesTensor<uint16_t>("bf16", DType::kBF16, {6},
                                    {0x7FC1, 0xFF81, 0x8000, 0xFF80, 0x0001, 0x807F}));
  Add(model, ValuesTensor<uint32_t>("c64", DType::kC64, {2},
                                    {0x7FC00007u, 0x80000000u, 0x00000001u, 0xFF800000u}));
  WriteAndCheck(model, "check", {.same_pickle = true});
}

TEST(TorchWriter, ScalarsAndZeroSizeTensors) {
  MP_SKIP_WITHOUT_TORCH();
  Model model;
  Add(model, ValuesTensor<float>("scalar.f32", DType::kF32, {}, {-2.5f}));
  Add(model, ValuesTensor<int64_t>("scalar.i64", DType::kI64, {}, {-7}));
  Add(model, PatternTensor("scalar.bool", DType::kBool, {}, 3));
  Add(model, PatternTensor("empty.0", DType::kF32, {0}, 0));
  Add(model, PatternTensor("empty.0x3", DType::kF16, {0, 3}, 0));
  Add(model, PatternTensor("empty.2x0", DType::kI32, {2, 0}, 0));
  Add(model, PatternTensor("empty.3x0x2", DType::kBF16, {3, 0, 2}, 0));
  // Sizes and strides past 2^31 pickle as LONG1 (and torch still agrees on the strides).
  Add(model, PatternTensor("empty.huge", DType::kF32, {0, 3'000'000'000}, 0));
  Add(model, PatternTensor("empty.huge2", DType::kI8, {5'000'000'000, 0, 70'000}, 0));
  WriteAndCheck(model, "check", {.same_pickle = true});
}

TEST(TorchWriter, LargeTensorStreamsThrough) {
  MP_SKIP_WITHOUT_TORCH();
  Model model;
  Add(model, PatternTensor("small", DType::kF16, {3}, 1));
  Add(model, PatternTensor("large", DType::kF32, {640, 513}, 2));  // 1.25 MiB
  Add(model, PatternTensor("after", DType::kI64, {70'000}, 3));    // numel as BININT
  WriteAndCheck(model, "check", {.same_pickle = true});
}

TEST(TorchWriter, TiedTensorsShareOneStorage) {
  MP_SKIP_WITHOUT_TORCH();
  Model model;
  Add(model, PatternTensor("wte.weight", DType::kF32, {4, 3}, 1));
  Add(model, PatternTensor("ln.bias", DType::kF16, {3}, 2));
  Add(model, PatternTensor("scale", DType::kBF16, {}, 3));
  model.mutable_metadata()[std::string(kAliasesKey)] = {{"lm_head.weight", "wte.weight"},
                                                        {"ln.bias.copy", "ln.bias"},
                                                        {"wte.again", "wte.weight"},
                                                        {"scale.tied", "scale"}};
  // torch.save of the same OrderedDict with each alias a detach()ed view writes the same pickle.
  WriteAndCheck(model, "check", {.same_pickle = true});
}

TEST(TorchWriter, OtherMetadataGoesToItsOwnRecordThatTorchIgnores) {
  MP_SKIP_WITHOUT_TORCH();
  Model model;
  Add(model, PatternTensor("w", DType::kF32, {2, 2}, 1));
  Add(model, PatternTensor("b", DType::kF32, {2}, 2));
  model.mutable_metadata()["epoch"] = 3;
  model.mutable_metadata()["config"] = {{"lr", 0.125}, {"name", "tiny é"}, {"layers", {1, 2}}};
  model.mutable_metadata()[std::string(kAliasesKey)] = {{"b2", "b"}};
  model.mutable_metadata()["format"] = "pt";
  WriteAndCheck(model, "check", {.same_pickle = true});
}

TEST(TorchWriter, ManyTensorsCrossSetItemsBatchesAndLongMemo) {
  MP_SKIP_WITHOUT_TORCH();
  // 2001 entries: SETITEMS batches of 1000, 1000, then one SETITEM; memo indices pass 255
  // (LONG_BINPUT / LONG_BINGET).
  Model model;
  for (uint32_t i = 0; i < 2001; ++i) {
    Add(model, PatternTensor("layer." + std::to_string(i) + ".w",
                             i % 3 == 0   ? DType::kF32
                             : i % 3 == 1 ? DType::kI64
                                          : DType::kF16,
                             {i % 4 + 1}, i));
  }
  WriteAndCheck(model, "check", {.same_pickle = true});
}

TEST(TorchWriter, OneTensorAndNoTensors) {
  MP_SKIP_WITHOUT_TORCH();
  Model one;
  Add(one, PatternTensor("only", DType::kF32, {2}, 1));
  WriteAndCheck(one, "check", {.same_pickle = true});
  Model none;
  WriteAndCheck(none, "check", {.same_pickle = true});
}

TEST(TorchWriter, NonAsciiNamesLoad) {
  MP_SKIP_WITHOUT_TORCH();
  Model model;
  Add(model, PatternTensor("poids.é.名前", DType::kF32, {2}, 1));
  Add(model, PatternTensor("", DType::kI8, {1}, 2));
  WriteAndCheck(model, "check", {.same_pickle = true});
}

// ---------------------------------------------------------------------------------------------
// Dtypes torch 1.13 lacks: the pickle form torch 2.x writes

TEST(TorchWriter, Float8AndWideUnsignedUseRebuildTensorV3) {
  if (!PythonHas("numpy")) GTEST_SKIP() << "/usr/bin/python3 is missing";
  Model model;
  Add(model, PatternTensor("w", DType::kF32, {2}, 1));
  Add(model, PatternTensor("f8", DType::kF8E4M3, {3}, 2));
  Add(model, PatternTensor("f8.e5m2", DType::kF8E5M2, {2, 2}, 3));
  Add(model, PatternTensor("u16", DType::kU16, {3}, 4));
  Add(model, PatternTensor("u32", DType::kU32, {2, 1}, 5));
  Add(model, PatternTensor("u64", DType::kU64, {}, 6));
  Add(model, PatternTensor("u64.empty", DType::kU64, {0, 2}, 6));
  Add(model, PatternTensor("h", DType::kF16, {2}, 7));
  model.mutable_metadata()[std::string(kAliasesKey)] = {{"f8.tied", "f8"}, {"u16.tied", "u16"}};
  WriteAndCheck(model, "pickle");
}

TEST(TorchWriter, Float8PickleMatchesTorch2Golden) {
  MP_SKIP_WITHOUT_GOLDEN();
  // current_torch_state_dict.pt (torch 2.11) holds float32 "w", float16 "b", ..., then
  // float8_e4m3fn "f8". Its root is a plain dict, so its "w" is the first to name
  // OrderedDict (for the hooks) while ours named it for the root; from "b" on, the memo holds
  // the same objects in both, so the opcodes must be the same, GLOBALs included.
  const std::string golden = (testing::GoldenDir() / "torch/current_torch_state_dict.pt").string();
  TempDir dir;
  Model model;
  Add(model, PatternTensor("w", DType::kF32, {4, 3}, 1));
  Add(model, PatternTensor("b", DType::kF16, {3}, 2));
  Add(model, PatternTensor("f8", DType::kF8E4M3, {3}, 3));
  const std::string pt = dir.File("model.pt");
  Status s = Write(model, pt, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (const std::string name : {"b", "f8"}) {
    CommandResult r =
        Oracle("form " + ShellQuote(pt) + " " + name + " " + ShellQuote(golden) + " " + name);
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.out << r.err;
  }
}

// ---------------------------------------------------------------------------------------------
// Layout, determinism, options

TEST(TorchWriter, LayoutMatchesTorch2RecordsAlignedAt64) {
  Model model;
  Add(model, PatternTensor("a", DType::kF32, {5}, 1));
  Add(model, PatternTensor("b", DType::kI8, {3}, 2));
  Add(model, PatternTensor("c", DType::kF16, {0}, 3));
  model.mutable_metadata()["k"] = "v";
  TempDir dir;
  const std::string pt = dir.File("my model.v2.pt");
  Status s = Write(model, pt, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto file = InputFile::Open(pt);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto reader = zip::Reader::Open(*file);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  std::vector<std::string> names;
  for (const auto& e : (*reader)->entries()) {
    names.push_back(e.name);
    EXPECT_EQ(e.method, zip::kStored) << e.name;
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name << " data at " << e.data_offset;
  }
  // torch names the folder after the file without its last extension; the space is replaced.
  const std::vector<std::string> want = {"my_model.v2/data.pkl",
                                         "my_model.v2/.format_version",
                                         "my_model.v2/.storage_alignment",
                                         "my_model.v2/byteorder",
                                         "my_model.v2/data/0",
                                         "my_model.v2/data/1",
                                         "my_model.v2/data/2",
                                         "my_model.v2/version",
                                         "my_model.v2/modelport_metadata.json"};
  EXPECT_EQ(names, want);
  auto version = (*reader)->Read(*(*reader)->Find("my_model.v2/version"));
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(std::string(version.value()->span().begin(), version.value()->span().end()), "3\n");
  auto data1 = (*reader)->Read(*(*reader)->Find("my_model.v2/data/1"));
  ASSERT_TRUE(data1.ok());
  auto b = model.Load(1);
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(std::equal(b->bytes().begin(), b->bytes().end(), data1.value()->span().begin(),
                         data1.value()->span().end()));
}

TEST(TorchWriter, TopFolderFallsBackToArchive) {
  Model model;
  Add(model, PatternTensor("a", DType::kF32, {1}, 1));
  TempDir dir;
  for (const std::string name : {".pt", "..pt", "noext"}) {
    const std::string pt = dir.File(name);
    Status s = Write(model, pt, {});
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto file = InputFile::Open(pt);
    ASSERT_TRUE(file.ok());
    auto reader = zip::Reader::Open(*file);
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    const std::string want = name == "noext" ? "noext/data.pkl" : "archive/data.pkl";
    EXPECT_EQ((*reader)->entries()[0].name, want) << name;
  }
}

TEST(TorchWriter, SameInputSameBytes) {
  Model model;
  Add(model, PatternTensor("a", DType::kF32, {64, 7}, 1));
  Add(model, PatternTensor("b", DType::kF8E5M2, {9}, 2));
  model.mutable_metadata()[std::string(kAliasesKey)] = {{"a2", "a"}};
  model.mutable_metadata()["note"] = "x";
  TempDir one, two;
  ASSERT_TRUE(Write(model, one.File("m.pt"), {}).ok());
  WriteOptions not_durable;
  not_durable.durable = false;
  ASSERT_TRUE(Write(model, two.File("m.pt"), not_durable).ok());
  const auto a = ReadBytes(one.File("m.pt")), b = ReadBytes(two.File("m.pt"));
  EXPECT_GT(a.size(), 64u * 7 * 4);
  EXPECT_EQ(a, b);
}

TEST(TorchWriter, ProgressAfterEachTensor) {
  Model model;
  Add(model, PatternTensor("a", DType::kF32, {4}, 1));
  Add(model, PatternTensor("b", DType::kI8, {3}, 2));
  Add(model, PatternTensor("c", DType::kF64, {0}, 3));
  model.mutable_metadata()[std::string(kAliasesKey)] = {{"a2", "a"}};
  std::vector<std::vector<uint64_t>> calls;
  WriteOptions options;
  options.progress = [&](uint64_t t, uint64_t tn, uint64_t b, uint64_t bn) {
    calls.push_back({t, tn, b, bn});
  };
  TempDir dir;
  Status s = Write(model, dir.File("m.pt"), options);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::vector<std::vector<uint64_t>> want = {{1, 3, 16, 19}, {2, 3, 19, 19}, {3, 3, 19, 19}};
  EXPECT_EQ(calls, want);
}

TEST(TorchWriter, FolderDestinationGetsPytorchModelBin) {
  Model model;
  Add(model, PatternTensor("a", DType::kF32, {2}, 1));
  TempDir dir;
  Status s = Write(model, dir.path().string(), {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(FilesIn(dir.path()), std::vector<std::string>{"pytorch_model.bin"});
  auto file = InputFile::Open(dir.File("pytorch_model.bin"));
  ASSERT_TRUE(file.ok());
  auto reader = zip::Reader::Open(*file);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->entries()[0].name, "pytorch_model/data.pkl");
}

// ---------------------------------------------------------------------------------------------
// Errors leave nothing behind

TEST(TorchWriter, QuantizedTensorRefusedNamingItAndDtypeFlag) {
  Model model;
  Add(model, PatternTensor("ok", DType::kF32, {2}, 1));
  Add(model, PatternTensor("blk.0.attn_q.weight", DType::kQ8_0, {2, 32}, 2));
  TempDir dir;
  const std::string pt = dir.File("q.pt");
  Status s = Write(model, pt, {});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_EQ(s.message(), pt + ": tensor 'blk.0.attn_q.weight': PyTorch has no dtype for ggml q8_0" +
                             "; dequantize it (convert --dtype f32, f16 or bf16)");
  EXPECT_TRUE(FilesIn(dir.path()).empty());
}

TEST(TorchWriter, NoOverwriteKeepsTheExistingFile) {
  Model model;
  Add(model, PatternTensor("a", DType::kF32, {2}, 1));
  TempDir dir;
  const std::string pt = dir.File("m.pt");
  testing::WriteBytes(pt, {1, 2, 3});
  WriteOptions options;
  options.no_overwrite = true;
  Status s = Write(model, pt, options);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(), pt + ": exists");
  EXPECT_EQ(ReadBytes(pt), (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(FilesIn(dir.path()).size(), 1u);
  // Without the option it is replaced.
  ASSERT_TRUE(Write(model, pt, {}).ok());
  EXPECT_GT(ReadBytes(pt).size(), 3u);
}

TEST(TorchWriter, BadAliasesRefused) {
  struct Case {
    Json aliases;
    StatusCode code;
    std::string message;
  };
  const std::string kNotMap = "metadata modelport.aliases is not an object of tensor names";
  const std::vector<Case> cases = {
      {{{"lm_head.weight", "missing"}},
       StatusCode::kInvalidArgument,
       "alias 'lm_head.weight' points to 'missing', which is not a tensor of the model"},
      {{{"b", "a"}}, StatusCode::kInvalidArgument, "alias 'b' has the name of another tensor"},
      {{{"x", "a"}, {"y", "x"}},
       StatusCode::kInvalidArgument,
       "alias 'y' points to 'x', which is not a tensor of the model"},
      {R"({"x": "missing"})",  // the JSON-text form safetensors metadata carries
       StatusCode::kInvalidArgument,
       "alias 'x' points to 'missing', which is not a tensor of the model"},
      {{{"x", 3}}, StatusCode::kCorrupt, kNotMap},
      {Json::array({"a"}), StatusCode::kCorrupt, kNotMap},
      {"not json", StatusCode::kCorrupt, kNotMap},
  };
  for (const Case& c : cases) {
    Model model;
    Add(model, PatternTensor("a", DType::kF32, {2}, 1));
    Add(model, PatternTensor("b", DType::kF32, {2}, 2));
    model.mutable_metadata()[std::string(kAliasesKey)] = c.aliases;
    TempDir dir;
    const std::string pt = dir.File("m.pt");
    Status s = Write(model, pt, {});
    EXPECT_EQ(s.code(), c.code) << c.aliases.dump();
    EXPECT_EQ(s.message(), pt + ": " + c.message);
    EXPECT_TRUE(FilesIn(dir.path()).empty()) << c.aliases.dump();
  }
}

TEST(TorchWriter, AliasesAsJsonTextAreTiedToo) {
  MP_SKIP_WITHOUT_TORCH();
  Model model;
  Add(model, PatternTensor("wte", DType::kF32, {3, 2}, 1));
  model.mutable_metadata()[std::string(kAliasesKey)] = R"({"lm_head": "wte"})";
  TempDir dir;
  const std::string pt = dir.File("m.pt");
  ASSERT_TRUE(Write(model, pt, {}).ok());
  Model expected;  // the same model with the map as an object, for the manifest
  Add(expected, PatternTensor("wte", DType::kF32, {3, 2}, 1));
  expected.mutable_metadata()[std::string(kAliasesKey)] = {{"lm_head", "wte"}};
  const std::string manifest = WriteManifest(dir, expected);
  CommandResult r = Oracle("check " + ShellQuote(pt) + " " + ShellQuote(manifest));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST(TorchWriter, InvalidUtf8NameRefused) {
  Model model;
  Add(model, PatternTensor("bad\xff", DType::kF32, {2}, 1));
  TempDir dir;
  Status s = Write(model, dir.File("m.pt"), {});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), dir.File("m.pt") + ": tensor name 'bad\\xff' is not UTF-8");
  EXPECT_TRUE(FilesIn(dir.path()).empty());
}

// Tensors of 40, 24, 64, 8, 100 and 12 bytes with a 64-byte cap: shards {a, b}, {c}, {d},
// {e}, {f}; ties to "a" and "e" go with them.
Model ShardedModel() {
  Model model;
  Add(model, PatternTensor("a", DType::kF32, {10}, 1));
  Add(model, PatternTensor("b", DType::kF16, {3, 4}, 2));
  Add(model, PatternTensor("c", DType::kI64, {8}, 3));
  Add(model, PatternTensor("d", DType::kU8, {8}, 4));
  Add(model, PatternTensor("e", DType::kBF16, {50}, 5));
  Add(model, PatternTensor("f", DType::kF32, {3}, 6));
  model.mutable_metadata()[std::string(kAliasesKey)] = {{"a.tied", "a"}, {"e.tied", "e"}};
  model.mutable_metadata()["epoch"] = 2;
  return model;
}

TEST(TorchWriter, ShardedBinWithIndex) {
  const Model model = ShardedModel();
  TempDir dir;
  WriteOptions options;
  options.shard_size = 64;
  const std::string out = dir.File("out");
  Status s = Write(model, out + "/", options);
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::vector<std::string> files = FilesIn(out);
  std::sort(files.begin(), files.end());
  const std::vector<std::string> want_files = {
      "pytorch_model-00001-of-00005.bin", "pytorch_model-00002-of-00005.bin",
      "pytorch_model-00003-of-00005.bin", "pytorch_model-00004-of-00005.bin",
      "pytorch_model-00005-of-00005.bin", "pytorch_model.bin.index.json"};
  EXPECT_EQ(files, want_files);
  const auto text = ReadBytes(out + "/pytorch_model.bin.index.json");
  const auto index = nlohmann::json::parse(text.begin(), text.end());
  const nlohmann::json want_map = {{"a", "pytorch_model-00001-of-00005.bin"},
                                   {"a.tied", "pytorch_model-00001-of-00005.bin"},
                                   {"b", "pytorch_model-00001-of-00005.bin"},
                                   {"c", "pytorch_model-00002-of-00005.bin"},
                                   {"d", "pytorch_model-00003-of-00005.bin"},
                                   {"e", "pytorch_model-00004-of-00005.bin"},
                                   {"e.tied", "pytorch_model-00004-of-00005.bin"},
                                   {"f", "pytorch_model-00005-of-00005.bin"}};
  EXPECT_EQ(index.at("weight_map"), want_map);
  EXPECT_EQ(index.at("metadata").at("total_size"), 40 + 24 + 64 + 8 + 100 + 12);

  // modelport's reader gets the same model back from the index.
  for (const std::string& where : {out + "/pytorch_model.bin.index.json", out}) {
    auto back = Open(where, {});
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_TRUE(testing::SameModel(model, **back, /*compare_metadata=*/true)) << where;
  }

  if (!PythonHas("torch numpy")) GTEST_SKIP() << "/usr/bin/python3 cannot import torch";
  const std::string manifest = WriteManifest(dir, model);
  CommandResult r = Oracle("sharded " + ShellQuote(out + "/pytorch_model.bin.index.json") + " " +
                           ShellQuote(manifest));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST(TorchWriter, ShardedNamesFollowTheGivenFile) {
  const Model model = ShardedModel();
  TempDir dir;
  WriteOptions options;
  options.shard_size = 200;  // {a..d}, {e, f}
  Status s = Write(model, dir.File("model.pt"), options);
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::vector<std::string> files = FilesIn(dir.path());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"model-00001-of-00002.pt", "model-00002-of-00002.pt",
                                             "model.pt.index.json"}));
  auto file = InputFile::Open(dir.File("model-00002-of-00002.pt"));
  ASSERT_TRUE(file.ok());
  auto reader = zip::Reader::Open(*file);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->entries()[0].name, "model-00002-of-00002/data.pkl");
  // Everything fits one shard: a single file, no index.
  TempDir one;
  options.shard_size = 1 << 20;
  ASSERT_TRUE(Write(model, one.path().string(), options).ok());
  EXPECT_EQ(FilesIn(one.path()), std::vector<std::string>{"pytorch_model.bin"});
}

TEST(TorchWriter, ShardedNoOverwriteChecksEveryFile) {
  const Model model = ShardedModel();
  TempDir dir;
  testing::WriteBytes(dir.File("pytorch_model-00003-of-00005.bin"), {7});
  WriteOptions options;
  options.shard_size = 64;
  options.no_overwrite = true;
  Status s = Write(model, dir.path().string(), options);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(), dir.File("pytorch_model-00003-of-00005.bin") + ": exists");
  EXPECT_EQ(FilesIn(dir.path()), std::vector<std::string>{"pytorch_model-00003-of-00005.bin"});
}

// A source whose tensor `fail_at` cannot be loaded (a read error half-way through).
class FailingSource final : public ModelSource {
 public:
  FailingSource(const Model& inner, size_t fail_at) : inner_(inner), fail_at_(fail_at) {}
  std::string_view format() const override { return "failing"; }
  const std::vector<TensorInfo>& tensors() const override { return inner_.tensors(); }
  const Json& metadata() const override { return inner_.metadata(); }
  Result<TensorView> Load(size_t index) const override {
    if (index == fail_at_) return IoError("disk on fire");
    return inner_.Load(index);
  }

 private:
  const Model& inner_;
  size_t fail_at_;
};

TEST(TorchWriter, ShardedLoadErrorLeavesNothing) {
  const Model model = ShardedModel();
  FailingSource source(model, 4);  // "e", in the fourth shard
  TempDir dir;
  testing::WriteBytes(dir.File("pytorch_model-00001-of-00005.bin"), {5});  // an older file
  WriteOptions options;
  options.shard_size = 64;
  Status s = Write(source, dir.path().string(), options);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message(), dir.File("pytorch_model-00004-of-00005.bin") + ": disk on fire");
  EXPECT_EQ(FilesIn(dir.path()), std::vector<std::string>{"pytorch_model-00001-of-00005.bin"});
  EXPECT_EQ(ReadBytes(dir.File("pytorch_model-00001-of-00005.bin")), std::vector<uint8_t>{5});
}

TEST(TorchWriter, LoadErrorHalfwayLeavesNothing) {
  Model model;
  Add(model, PatternTensor("a", DType::kF32, {1000}, 1));
  Add(model, PatternTensor("b", DType::kF32, {1000}, 2));
  Add(model, PatternTensor("c", DType::kF32, {1000}, 3));
  FailingSource source(model, 2);
  TempDir dir;
  const std::string pt = dir.File("m.pt");
  Status s = Write(source, pt, {});
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message(), pt + ": disk on fire");
  EXPECT_TRUE(FilesIn(dir.path()).empty());
  // And an existing file at the destination survives the failed write untouched.
  testing::WriteBytes(pt, {9});
  EXPECT_EQ(Write(source, pt, {}).code(), StatusCode::kIoError);
  EXPECT_EQ(ReadBytes(pt), std::vector<uint8_t>{9});
  EXPECT_EQ(FilesIn(dir.path()).size(), 1u);
}

// ---------------------------------------------------------------------------------------------
// modelport's own reader reads back exactly what was written

TEST(TorchWriter, RoundTripThroughOpen) {
  Model model;
  uint32_t seed = 1;
  for (const auto& row : AllDTypes()) {
    if (IsQuantized(row.dtype)) continue;
    const std::string n(row.name);
    Add(model, PatternTensor(n + ".m", row.dtype, {3, 4}, seed++));
    Add(model, PatternTensor(n + ".scalar", row.dtype, {}, seed++));
    Add(model, PatternTensor(n + ".empty", row.dtype, {0, 2}, seed++));
  }
  model.mutable_metadata()["epoch"] = 7;
  model.mutable_metadata()["config"] = {{"lr", 0.5}, {"tags", {"a", "b"}}};
  model.mutable_metadata()[std::string(kAliasesKey)] = {
      {"f32.m.tied", "f32.m"}, {"f8_e4m3.m.tied", "f8_e4m3.m"}, {"u16.scalar.tied", "u16.scalar"}};
  TempDir dir;
  const std::string pt = dir.File("model.pt");
  Status s = Write(model, pt, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (IoMode mode : testing::kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto opened = Open(pt, options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    const ModelSource& back = **opened;
    EXPECT_TRUE(testing::SameModel(model, back, /*compare_metadata=*/true));
    ASSERT_EQ(back.tensors().size(), model.tensors().size());
    for (size_t i = 0; i < model.tensors().size(); ++i) {
      EXPECT_EQ(back.tensors()[i].name, model.tensors()[i].name);  // same order too
    }
    EXPECT_EQ(back.metadata().at(std::string(kAliasesKey)),
              model.metadata().at(std::string(kAliasesKey)));
  }
}

// torch 2.11's pytorch_model.bin (shared/golden), read by modelport and written again: torch
// 1.13 finds the same tensors in both files.
TEST(TorchWriter, GoldenGpt2BinRewrittenLoadsTheSame) {
  MP_SKIP_WITHOUT_GOLDEN();
  MP_SKIP_WITHOUT_TORCH();
  const std::string golden =
      (testing::GoldenDir() / "transformers/tiny-gpt2-bin/pytorch_model.bin").string();
  auto source = Open(golden, {});
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  TempDir dir;
  const std::string pt = dir.File("pytorch_model.bin");
  Status s = Write(**source, pt, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  CommandResult r = Oracle("same " + ShellQuote(pt) + " " + ShellQuote(golden));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

}  // namespace
}  // namespace mp::torch
