#include "modelport/formats/tfjs/tfjs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "modelport/convert/cast.h"
#include "test_util.h"

namespace mp::tfjs {
namespace {

namespace fs = std::filesystem;
using mp::testing::kIoModes;
using mp::testing::PatternTensor;
using mp::testing::ReadBytes;
using mp::testing::SameModel;
using mp::testing::TempDir;
using mp::testing::WriteBytes;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

std::vector<uint8_t> F32Bytes(std::initializer_list<float> values) {
  std::vector<uint8_t> out(values.size() * 4);
  std::memcpy(out.data(), values.begin(), out.size());
  return out;
}

template <typename T>
std::vector<T> Values(const TensorView& t) {
  std::vector<T> out(t.info.byte_size / sizeof(T));
  std::memcpy(out.data(), t.data->data(), t.info.byte_size);
  return out;
}

std::shared_ptr<Buffer> Mem(const std::vector<uint8_t>& bytes) {
  auto buf = *Buffer::Allocate(bytes.size());
  if (!bytes.empty()) std::memcpy(buf->mutable_data(), bytes.data(), bytes.size());
  return buf;
}

/// A model.json with one group of `paths` and `weights` (JSON text of the array).
std::string Manifest(const std::string& paths, const std::string& weights) {
  return R"({"format":"layers-model","modelTopology":null,"weightsManifest":[{"paths":)" + paths +
         R"(,"weights":)" + weights + "}]}";
}

Status OpenError(const std::string& json, const std::map<std::string, std::vector<uint8_t>>& shards,
                 const ReadOptions& options = {}) {
  std::map<std::string, std::shared_ptr<Buffer>> mem;
  for (const auto& [name, bytes] : shards) mem[name] = Mem(bytes);
  auto opened = OpenFromMemory(json, mem, options);
  if (opened.ok()) return Internal("opened");
  return opened.status();
}

TEST(TfjsTest, RoundTripCutsShardsAtFixedSizes) {
  Model model;
  // 4 * 10 + 4 * 7 + 3 + 8 * 2 = 87 bytes over shards of 16: tensors run across shard ends.
  ASSERT_TRUE(model.Add(PatternTensor("fc1/kernel", DType::kF32, {2, 5}, 1)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("fc1/bias", DType::kI32, {7}, 2)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("mask", DType::kBool, {3}, 3)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("z", DType::kC64, {2}, 4)).ok());
  TempDir dir;
  WriteOptions options;
  options.shard_size = 16;
  ASSERT_TRUE(Write(model, dir.File("out"), options).ok());
  // 87 bytes: five full shards of 16 and one of 7.
  for (int k = 1; k <= 6; ++k) {
    const std::string shard = dir.File("out/group1-shard" + std::to_string(k) + "of6.bin");
    ASSERT_TRUE(fs::exists(shard)) << shard;
    EXPECT_EQ(fs::file_size(shard), k < 6 ? 16u : 7u);
  }
  EXPECT_FALSE(fs::exists(dir.File("out/group1-shard7of6.bin")));
  for (IoMode mode : kIoModes) {
    ReadOptions ro;
    ro.io_mode = mode;
    for (const std::string& path : {dir.File("out"), dir.File("out/model.json")}) {
      auto opened = Open(path, ro);
      ASSERT_TRUE(opened.ok()) << opened.status().ToString();
      EXPECT_TRUE(SameModel(model, **opened, /*compare_metadata=*/false));
      EXPECT_EQ((*opened)->files().index, dir.File("out/model.json"));
      EXPECT_EQ((*opened)->files().files.size(), 6u);
    }
  }
  auto detected = DetectFormat(dir.File("out"));
  ASSERT_TRUE(detected.ok()) << detected.status().ToString();
  EXPECT_EQ((*detected)->name, "tfjs");
}

TEST(TfjsTest, TensorInsideOneShardIsAViewOfTheMapping) {
  Model model;
  ASSERT_TRUE(model.Add(PatternTensor("a", DType::kF32, {4}, 1)).ok());  // bytes 0..16: shard 1
  ASSERT_TRUE(model.Add(PatternTensor("b", DType::kF32, {4}, 2)).ok());  // 16..32: shards 1, 2
  TempDir dir;
  WriteOptions options;
  options.shard_size = 24;
  ASSERT_TRUE(Write(model, dir.File("m"), options).ok());
  auto opened = Open(dir.File("m"), {});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  // A view of the mapping gives the same address each time; assembled bytes are fresh copies.
  EXPECT_EQ((*opened)->Load(0)->data->data(), (*opened)->Load(0)->data->data());
  EXPECT_NE((*opened)->Load(1)->data->data(), (*opened)->Load(1)->data->data());
  EXPECT_TRUE(SameModel(model, **opened, false));
}

TEST(TfjsTest, DefaultShardSizeIsFourMebibytes) {
  Model model;
  ASSERT_TRUE(model.Add(PatternTensor("big", DType::kF32, {1310720}, 5)).ok());  // 5 MiB
  TempDir dir;
  ASSERT_TRUE(Write(model, dir.File("model.json"), {}).ok());
  EXPECT_EQ(fs::file_size(dir.File("group1-shard1of2.bin")), 4u * 1024 * 1024);
  EXPECT_EQ(fs::file_size(dir.File("group1-shard2of2.bin")), 1u * 1024 * 1024);
  auto opened = Open(dir.File("model.json"), {});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_TRUE(SameModel(model, **opened, false));
}

TEST(TfjsTest, TensorSpanningHandMadeShards) {
  // Two float32 values cut after 3 and 5 bytes, as TF.js cuts a stream anywhere.
  const std::vector<uint8_t> all = F32Bytes({1.5f, -2.25f});
  const std::map<std::string, std::shared_ptr<Buffer>> shards = {
      {"a.bin", Mem({all.begin(), all.begin() + 3})},
      {"b.bin", Mem({all.begin() + 3, all.begin() + 5})},
      {"c.bin", Mem({all.begin() + 5, all.end()})}};
  auto opened = OpenFromMemory(
      Manifest(R"(["a.bin","b.bin","c.bin"])", R"([{"name":"w","shape":[2],"dtype":"float32"}])"),
      shards, {});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  auto w = (*opened)->Load(0);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(Values<float>(*w), (std::vector<float>{1.5f, -2.25f}));
}

TEST(TfjsTest, QuantizedWeightsDequantizeAsTfjs) {
  // uint8 float32: q * scale + min; uint16 int32: Math.round (halves toward +infinity).
  const std::vector<uint8_t> q8 = {0, 1, 255};
  const std::vector<uint8_t> q16 = {1, 0, 3, 0, 5, 0, 1, 0, 3, 0};
  std::vector<uint8_t> data = q8;
  data.insert(data.end(), q16.begin(), q16.end());
  const std::string json = Manifest(
      R"(["s.bin"])",
      R"([{"name":"f","shape":[3],"dtype":"float32","quantization":{"dtype":"uint8","scale":0.1,"min":-1}},
          {"name":"i","shape":[5],"dtype":"int32","quantization":{"dtype":"uint16","scale":0.5,"min":-1}}])");
  auto opened = OpenFromMemory(json, {{"s.bin", Mem(data)}}, {});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  ASSERT_EQ((*opened)->tensors()[0].dtype, DType::kF32);
  ASSERT_EQ((*opened)->tensors()[1].dtype, DType::kI32);
  auto f = (*opened)->Load(0);
  ASSERT_TRUE(f.ok());
  // Computed in double and rounded once to float32, as a Float32Array stores it.
  EXPECT_EQ(Values<float>(*f), (std::vector<float>{static_cast<float>(0 * 0.1 + -1.0),
                                                   static_cast<float>(1 * 0.1 + -1.0),
                                                   static_cast<float>(255 * 0.1 + -1.0)}));
  auto i = (*opened)->Load(1);
  ASSERT_TRUE(i.ok());
  // 1*0.5-1 = -0.5 -> -0 (0), 0.5 -> 1, 1.5 -> 2, -0.5 -> 0, 0.5 -> 1.
  EXPECT_EQ(Values<int32_t>(*i), (std::vector<int32_t>{0, 1, 2, 0, 1}));
  const Json& q = (*opened)->metadata()["tfjs.quantization"];
  EXPECT_EQ(
      q.dump(),
      R"({"f":{"dtype":"uint8","scale":0.1,"min":-1},"i":{"dtype":"uint16","scale":0.5,"min":-1}})");
  ASSERT_EQ((*opened)->notes().size(), 1u);
  EXPECT_EQ((*opened)->notes()[0],
            "2 weight(s) are stored quantized to uint8/uint16 and dequantized on load as TF.js "
            "does (q * scale + min; metadata \"tfjs.quantization\"): 'f', 'i'");
}

TEST(TfjsTest, ExactQuantizedFormsKeepTheirDType) {
  Model model;
  ASSERT_TRUE(model.Add(PatternTensor("h", DType::kF16, {3}, 1)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("u8", DType::kU8, {4}, 2)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("i8", DType::kI8, {4}, 3)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("u16", DType::kU16, {2}, 4)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("i16", DType::kI16, {2}, 5)).ok());
  TempDir dir;
  ASSERT_TRUE(Write(model, dir.File("model.json"), {}).ok());
  const std::vector<uint8_t> text = ReadBytes(dir.File("model.json"));
  const auto doc = Json::parse(text.begin(), text.end());
  const auto& w = doc["weightsManifest"][0]["weights"];
  EXPECT_EQ(w[0].dump(),
            R"({"name":"h","shape":[3],"dtype":"float32","quantization":{"dtype":"float16"}})");
  EXPECT_EQ(
      w[2].dump(),
      R"({"name":"i8","shape":[4],"dtype":"int32","quantization":{"dtype":"uint8","scale":1,"min":-128}})");
  EXPECT_EQ(w[4]["quantization"].dump(), R"({"dtype":"uint16","scale":1,"min":-32768})");
  // i8 is stored as q = v + 128.
  const std::vector<uint8_t> shard = ReadBytes(dir.File("group1-shard1of1.bin"));
  const auto i8 = *model.Load(2);
  for (size_t k = 0; k < 4; ++k) EXPECT_EQ(shard[6 + 4 + k], uint8_t(i8.data->data()[k] ^ 0x80));
  auto opened = Open(dir.File("model.json"), {});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_TRUE(SameModel(model, **opened, false));
  ASSERT_EQ((*opened)->notes().size(), 1u);
  EXPECT_NE((*opened)->notes()[0].find("5 weight(s) use TF.js quantization as exact storage"),
            std::string::npos);
}

TEST(TfjsTest, StringWeightsAreSkippedWithANote) {
  // ["ab", ""] as TF.js encodes strings (u32 length + bytes), then a float32 weight.
  std::vector<uint8_t> data = {2, 0, 0, 0, 'a', 'b', 0, 0, 0, 0};
  const std::vector<uint8_t> f = F32Bytes({3.0f});
  data.insert(data.end(), f.begin(), f.end());
  auto opened = OpenFromMemory(Manifest(R"(["s.bin"])",
                                        R"([{"name":"vocab","shape":[2],"dtype":"string"},
                                            {"name":"x","shape":[],"dtype":"float32"}])"),
                               {{"s.bin", Mem(data)}}, {});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  ASSERT_EQ((*opened)->tensors().size(), 1u);
  EXPECT_EQ(Values<float>(*(*opened)->Load(0)), std::vector<float>{3.0f});
  EXPECT_EQ((*opened)->notes(),
            std::vector<std::string>{
                "1 string weight(s) are not carried (modelport holds numeric tensors): 'vocab'"});
  EXPECT_EQ(OpenError(Manifest(R"(["s.bin"])", R"([{"name":"v","shape":[1],"dtype":"string"}])"),
                      {{"s.bin", {9, 0, 0, 0, 'a'}}})
                .ToString(),
            "Corrupt: model.json: weightsManifest group 1: weight 'v': string #0 of 9 bytes runs "
            "past the shards");
  EXPECT_EQ(OpenError(Manifest(R"(["s.bin"])", R"([{"name":"v","shape":[2],"dtype":"string"}])"),
                      {{"s.bin", {9, 0, 0, 0, 'a'}}})
                .ToString(),
            "Corrupt: model.json: weightsManifest group 1: weight 'v': its 2 string lengths run "
            "past the shards' 5 bytes");
}

TEST(TfjsTest, MetadataRoundTripsThroughUserDefinedMetadataAndTopology) {
  Model model;
  ASSERT_TRUE(model.Add(PatternTensor("fc/kernel", DType::kF32, {2, 2}, 1)).ok());
  const Json topology = {{"class_name", "Sequential"}, {"config", {{"name", "s"}}}};
  // As safetensors keeps it: the topology encoded in a string.
  model.mutable_metadata() = Json{{"format", "pt"},
                                  {"tfjs.modelTopology", topology.dump()},
                                  {"tfjs.generatedBy", "TensorFlow.js tfjs-layers v4.22.0"}};
  TempDir dir;
  ASSERT_TRUE(Write(model, dir.File("model.json"), {}).ok());
  const std::vector<uint8_t> text = ReadBytes(dir.File("model.json"));
  const std::string head =
      R"({"format":"layers-model","generatedBy":"modelport","convertedBy":null,"modelTopology":{)";
  EXPECT_EQ(std::string(text.begin(), text.begin() + static_cast<long>(head.size())), head);
  auto opened = Open(dir.File("model.json"), {});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ((*opened)->metadata().dump(), Json({{"format", "pt"},
                                                {"tfjs.format", "layers-model"},
                                                {"tfjs.generatedBy", "modelport"},
                                                {"tfjs.convertedBy", nullptr},
                                                {"tfjs.modelTopology", topology}})
                                              .dump());
}

TEST(TfjsTest, RefusesDTypesTfjsCannotHold) {
  TempDir dir;
  for (DType dtype : {DType::kF64, DType::kBF16, DType::kI64, DType::kU64}) {
    Model model;
    ASSERT_TRUE(model.Add(PatternTensor("ok", DType::kF32, {2}, 1)).ok());
    ASSERT_TRUE(model.Add(PatternTensor("w", dtype, {2}, 2)).ok());
    Status s = Write(model, dir.File("model.json"), {});
    const std::string hint = IsFloat(dtype) ? "; convert with --dtype f32" : "";
    EXPECT_EQ(s.ToString(), "Unsupported: tensor 'w': TF.js cannot hold " +
                                std::string(DTypeName(dtype)) +
                                " (it holds float32, int32, bool, complex64, and float16 and "
                                "8/16-bit integers through its weight quantization)" +
                                hint);
    EXPECT_TRUE(fs::is_empty(dir.path()));
  }
}

TEST(TfjsTest, ManifestPathsStayInsideTheFolder) {
  TempDir dir;
  fs::create_directory(dir.File("m"));
  // A file of exactly the right size outside the model folder, which must never be read.
  WriteBytes(dir.File("secret.bin"), F32Bytes({1.0f}));
  const std::string weights = R"([{"name":"w","shape":[1],"dtype":"float32"}])";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"(["../secret.bin"])", "path '../secret.bin' is not a plain file name"},
      {"[\"" + dir.File("secret.bin") + "\"]", "path '" + dir.File("secret.bin") + "'"},
      {R"(["..\\secret.bin"])", "is not a plain file name"},
      {R"([".."])", "path '..' is not a plain file name"},
      {R"(["a\u0000b"])", "is not a plain file name"},
  };
  for (const auto& [paths, gist] : cases) {
    WriteText(dir.File("m/model.json"), Manifest(paths, weights));
    auto opened = Open(dir.File("m/model.json"), {});
    ASSERT_FALSE(opened.ok()) << paths;
    EXPECT_EQ(opened.status().code(), StatusCode::kUnsafe) << opened.status().ToString();
    EXPECT_NE(opened.status().message().find(gist), std::string::npos)
        << opened.status().ToString();
  }
  // A symbolic link to it inside the folder is refused too.
  fs::create_symlink(dir.File("secret.bin"), dir.File("m/link.bin"));
  WriteText(dir.File("m/model.json"), Manifest(R"(["link.bin"])", weights));
  EXPECT_EQ(Open(dir.File("m/model.json"), {}).status().ToString(),
            "Unsafe: " + dir.File("m/model.json") +
                ": weightsManifest group 1: shard 'link.bin' is a symbolic link");
}

TEST(TfjsTest, ShardErrorsNameTheFile) {
  TempDir dir;
  const std::string weights = R"([{"name":"w","shape":[3],"dtype":"float32"}])";
  WriteText(dir.File("model.json"), Manifest(R"(["a.bin","b.bin"])", weights));
  WriteBytes(dir.File("a.bin"), std::vector<uint8_t>(8));
  EXPECT_EQ(Open(dir.path().string(), {}).status().ToString(),
            "Corrupt: " + dir.File("model.json") +
                ": weightsManifest group 1: shard 'b.bin' is missing in " + dir.path().string());
  WriteBytes(dir.File("b.bin"), std::vector<uint8_t>(2));
  EXPECT_EQ(Open(dir.path().string(), {}).status().ToString(),
            "Corrupt: " + dir.File("model.json") +
                ": weightsManifest group 1: the weights need more bytes than the group's shards "
                "hold: weight 'w' ends at byte 12 of 10 ('a.bin' 8, 'b.bin' 2)");
  WriteBytes(dir.File("b.bin"), std::vector<uint8_t>(6));
  EXPECT_EQ(Open(dir.path().string(), {}).status().ToString(),
            "Corrupt: " + dir.File("model.json") +
                ": weightsManifest group 1: the shards hold 14 bytes ('a.bin' 8, 'b.bin' 6) but "
                "the weights need 12");
  fs::remove(dir.File("model.json"));
  EXPECT_EQ(Open(dir.path().string(), {}).status().ToString(),
            "NotFound: " + dir.path().string() + ": folder holds no model.json");
}

TEST(TfjsTest, HostileManifestsFailWithOneClearError) {
  const std::vector<uint8_t> four(4);
  const std::map<std::string, std::vector<uint8_t>> shard = {{"s.bin", four}};
  struct Case {
    std::string weights;
    std::string error;
  };
  const std::vector<Case> cases = {
      {R"([{"name":"w","shape":[1],"dtype":"float64"}])",
       "Unsupported: model.json: weightsManifest group 1: weight 'w': dtype 'float64' is not a "
       "TF.js weight dtype (float32, int32, bool, complex64, string)"},
      {R"([{"name":"w","shape":[-1],"dtype":"float32"}])",
       "Corrupt: model.json: weightsManifest group 1: weight 'w': \"shape\" holds -1, not a "
       "non-negative integer"},
      {R"([{"name":"w","shape":[1.5],"dtype":"float32"}])",
       "Corrupt: model.json: weightsManifest group 1: weight 'w': \"shape\" holds 1.5, not a "
       "non-negative integer"},
      {R"([{"name":"w","shape":[4611686018427387904,4],"dtype":"float32"}])", "LimitExceeded"},
      {R"([{"name":"w","shape":[1],"dtype":"float32"},{"name":"w","shape":[],"dtype":"bool"}])",
       "Corrupt: model.json: weightsManifest group 1: weight 'w' is listed twice"},
      {R"([{"name":"w","shape":[4],"dtype":"float32","quantization":{"dtype":"uint8"}}])",
       "Corrupt: model.json: weightsManifest group 1: weight 'w': uint8 quantization without "
       "numeric \"scale\" and \"min\""},
      {R"([{"name":"w","shape":[2],"dtype":"int32","quantization":{"dtype":"float16"}}])",
       "Unsupported: model.json: weightsManifest group 1: weight 'w': float16 quantization of a "
       "int32 weight (TF.js allows float32)"},
      {R"([{"name":"w","shape":[4],"dtype":"bool","quantization":{"dtype":"uint8","scale":1,"min":0}}])",
       "Unsupported: model.json: weightsManifest group 1: weight 'w': uint8 quantization of a bool "
       "weight (TF.js allows float32 and int32)"},
      {R"([{"name":"w","shape":[4],"dtype":"float32","quantization":{"dtype":"int4"}}])",
       "Unsupported: model.json: weightsManifest group 1: weight 'w': quantization dtype 'int4' "
       "(TF.js knows uint8, uint16 and float16)"},
      {R"([{"shape":[1],"dtype":"float32"}])",
       "Corrupt: model.json: weightsManifest group 1: weight #1: has no \"name\""},
      {R"([7])", "Corrupt: model.json: weightsManifest group 1: weight #1: is not an object"},
  };
  for (const Case& c : cases) {
    const Status s = OpenError(Manifest(R"(["s.bin"])", c.weights), shard);
    EXPECT_EQ(s.ToString().substr(0, c.error.size()), c.error) << c.weights;
    EXPECT_EQ(s.message().find('\n'), std::string::npos);
  }
  EXPECT_EQ(OpenError("[1]", {}).ToString(), "Corrupt: model.json: not a JSON object");
  EXPECT_EQ(OpenError("{}", {}).ToString(), "Corrupt: model.json: no \"weightsManifest\"");
  EXPECT_EQ(OpenError("{", {}).ToString().rfind(
                "Corrupt: model.json: the manifest is not valid JSON: ", 0),
            0u);
  EXPECT_EQ(OpenError(R"({"weightsManifest":[{"paths":["s.bin","s.bin"],"weights":[]}]})", shard)
                .ToString(),
            "Corrupt: model.json: weightsManifest group 1: path 's.bin' is listed twice");
  EXPECT_EQ(
      OpenError("{\"weightsManifest\":" + std::string(200, '[') + std::string(200, ']') + "}", {})
          .code(),
      StatusCode::kCorrupt);
  ReadOptions tight;
  tight.max_rank = 2;
  EXPECT_EQ(OpenError(Manifest(R"(["s.bin"])", R"([{"name":"w","shape":[1,1,1],"dtype":"bool"}])"),
                      shard, tight)
                .ToString(),
            "LimitExceeded: model.json: weightsManifest group 1: weight 'w': rank 3 exceeds the "
            "limit of 2");
  tight = {};
  tight.max_shards = 1;
  EXPECT_EQ(OpenError(Manifest(R"(["s.bin","t.bin"])", "[]"), shard, tight).ToString(),
            "LimitExceeded: model.json: weightsManifest group 1: more than 1 shard files");
}

TEST(TfjsTest, WriteReplacesAnOlderModelAndItsShards) {
  TempDir dir;
  Model big;
  ASSERT_TRUE(big.Add(PatternTensor("w", DType::kF32, {64}, 1)).ok());
  WriteOptions options;
  options.shard_size = 100;
  ASSERT_TRUE(Write(big, dir.path().string(), options).ok());
  EXPECT_TRUE(fs::exists(dir.File("group1-shard3of3.bin")));
  WriteBytes(dir.File("notes.txt"), {1});
  Model small;
  ASSERT_TRUE(small.Add(PatternTensor("v", DType::kI32, {2}, 2)).ok());
  options.no_overwrite = true;
  EXPECT_EQ(Write(small, dir.path().string(), options).code(), StatusCode::kAlreadyExists);
  options.no_overwrite = false;
  ASSERT_TRUE(Write(small, dir.path().string(), options).ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path())) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"group1-shard1of1.bin", "model.json", "notes.txt"}));
  auto opened = Open(dir.path().string(), {});
  ASSERT_TRUE(opened.ok());
  EXPECT_TRUE(SameModel(small, **opened, false));
}

TEST(TfjsTest, WriteBuildsANewFolderWhole) {
  TempDir dir;
  Model model;
  ASSERT_TRUE(model.Add(PatternTensor("w", DType::kF32, {8}, 1)).ok());
  ASSERT_TRUE(Write(model, dir.File("new/"), {}).ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path())) names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"new"});
  EXPECT_TRUE(fs::exists(dir.File("new/model.json")));
  EXPECT_TRUE(fs::exists(dir.File("new/group1-shard1of1.bin")));
  EXPECT_EQ(Write(model, dir.File("a/b"), {}).code(), StatusCode::kIoError);
  EXPECT_FALSE(fs::exists(dir.File("a")));
}

TEST(TfjsTest, DetectsByContent) {
  const std::string a = R"(  {"modelTopology": {}, "weightsManifest": []})";
  const std::string b = R"({"format":"layers-model","weightsManifest":[]})";
  const std::string c = R"({"weight_map": {}})";
  auto span = [](const std::string& s) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  EXPECT_TRUE(Detect(span(a), a.size()));
  EXPECT_TRUE(Detect(span(b), b.size()));
  EXPECT_FALSE(Detect(span(c), c.size()));
  EXPECT_FALSE(Detect(span("[\"weightsManifest\"]"), 19));
}

}  // namespace
}  // namespace mp::tfjs
