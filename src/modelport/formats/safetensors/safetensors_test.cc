#include "modelport/formats/safetensors/safetensors.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace mp::safetensors {
namespace {

namespace fs = std::filesystem;
using mp::testing::GoldenDir;
using mp::testing::PatternTensor;
using mp::testing::ReadBytes;
using mp::testing::TempDir;

Model SmallModel() {
  Model m;
  EXPECT_TRUE(m.Add(PatternTensor("b.weight", DType::kF32, {3, 4}, 1)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("a.bias", DType::kF16, {4}, 2)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("c.ids", DType::kI64, {2}, 3)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("mask", DType::kBool, {5}, 4)).ok());
  m.mutable_metadata()["format"] = "pt";
  return m;
}

void ExpectSameTensors(const ModelSource& a, const ModelSource& b) {
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const TensorInfo& ta = a.tensors()[i];
    auto j = b.Find(ta.name);
    ASSERT_TRUE(j.has_value()) << ta.name;
    const TensorInfo& tb = b.tensors()[*j];
    EXPECT_EQ(ta.dtype, tb.dtype) << ta.name;
    EXPECT_EQ(ta.shape, tb.shape) << ta.name;
    auto va = a.Load(i);
    auto vb = b.Load(*j);
    ASSERT_TRUE(va.ok() && vb.ok()) << ta.name;
    EXPECT_TRUE(
        std::equal(va->bytes().begin(), va->bytes().end(), vb->bytes().begin(), vb->bytes().end()))
        << ta.name;
  }
}

TEST(Safetensors, RoundTripKeepsTensorsAndMetadata) {
  TempDir dir;
  Model m = SmallModel();
  const std::string path = dir.File("m.safetensors");
  ASSERT_TRUE(Write(m, path, {}).ok());
  auto r = Open(path, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectSameTensors(m, **r);
  EXPECT_EQ((*r)->metadata(), m.metadata());
  // Laid out like the reference writer: widest dtype first, then by name.
  std::vector<std::string> names;
  for (const auto& t : (*r)->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"c.ids", "b.weight", "a.bias", "mask"}));
  // Header padded to a multiple of 8; no temporary files left behind.
  auto bytes = ReadBytes(path);
  EXPECT_EQ(bytes[0] % 8, 0);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(Safetensors, ReadsThroughPreadAsWellAsMmap) {
  TempDir dir;
  Model m = SmallModel();
  ASSERT_TRUE(Write(m, dir.File("m.safetensors"), {}).ok());
  ReadOptions pread;
  pread.io_mode = IoMode::kPread;
  auto r = Open(dir.File("m.safetensors"), pread);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectSameTensors(m, **r);
}

TEST(Safetensors, MmapLoadIsZeroCopy) {
  TempDir dir;
  Model m = SmallModel();
  ASSERT_TRUE(Write(m, dir.File("m.safetensors"), {}).ok());
  auto r = Open(dir.File("m.safetensors"), {});
  ASSERT_TRUE(r.ok());
  auto a = (*r)->Load(0);
  auto b = (*r)->Load(0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->data->data(), b->data->data());  // both point into the one mapping
}

TEST(Safetensors, OwnedLoadsMatchViewsInBothModes) {
  TempDir dir;
  Model m = SmallModel();
  ASSERT_TRUE(m.Add(PatternTensor("big", DType::kF32, {300, 100}, 9)).ok());  // > 64 KiB: pread
  ASSERT_TRUE(Write(m, dir.File("m.safetensors"), {}).ok());
  for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
    ReadOptions opts;
    opts.io_mode = mode;
    auto r = Open(dir.File("m.safetensors"), opts);
    ASSERT_TRUE(r.ok());
    auto owned = LoadAll(**r);
    ASSERT_TRUE(owned.ok()) << owned.status().ToString();
    ExpectSameTensors(m, **owned);
    auto view = (*r)->Load(0);
    auto copy = LoadOwned(**r, 0);
    ASSERT_TRUE(view.ok() && copy.ok());
    EXPECT_NE(view->data->data(), copy->data->data());
    std::vector<uint8_t> wrong_size(3);
    EXPECT_EQ((*r)->LoadInto(0, wrong_size).code(), StatusCode::kInvalidArgument);
  }
}

TEST(Safetensors, RewriteOfGoldenFileIsByteIdentical) {
  const fs::path golden = GoldenDir() / "safetensors" / "all_dtypes.safetensors";
  if (!fs::exists(golden)) GTEST_SKIP() << "no " << golden;
  auto r = Open(golden.string(), {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->tensors().size(), 20u);
  TempDir dir;
  ASSERT_TRUE(Write(**r, dir.File("copy.safetensors"), {}).ok());
  EXPECT_EQ(ReadBytes(dir.File("copy.safetensors")), ReadBytes(golden.string()));
}

TEST(Safetensors, ShardedGoldenEqualsSingleFile) {
  const fs::path single = GoldenDir() / "transformers" / "tiny-gpt2-safetensors";
  const fs::path sharded = GoldenDir() / "transformers" / "tiny-gpt2-safetensors-sharded";
  if (!fs::exists(single) || !fs::exists(sharded)) GTEST_SKIP() << "no golden tiny-gpt2";
  auto a = Open(single.string(), {});
  auto b = Open(sharded.string(), {});
  auto c = Open((sharded / std::string(kIndexName)).string(), {});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*a)->tensors().size(), 28u);
  ExpectSameTensors(**a, **b);
  ExpectSameTensors(**b, **c);
  // The single file rewritten is byte-identical to what transformers wrote.
  TempDir dir;
  ASSERT_TRUE(Write(**a, dir.File("model.safetensors"), {}).ok());
  EXPECT_EQ(ReadBytes(dir.File("model.safetensors")),
            ReadBytes((single / "model.safetensors").string()));
}

TEST(Safetensors, WritesHuggingFaceShards) {
  TempDir dir;
  Model m;
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(m.Add(PatternTensor("layer." + std::to_string(i), DType::kF32, {16}, i)).ok());
  }
  WriteOptions opts;
  opts.shard_size = 130;  // two 64-byte tensors per shard
  ASSERT_TRUE(Write(m, dir.File("out"), opts).ok());
  for (const char* name : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                           "model-00003-of-00003.safetensors", "model.safetensors.index.json"}) {
    EXPECT_TRUE(fs::exists(dir.path() / "out" / name)) << name;
  }
  auto index = Json::parse(ReadBytes(dir.File("out/model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], 6 * 64);
  EXPECT_EQ(index["weight_map"]["layer.4"], "model-00003-of-00003.safetensors");
  auto r = Open(dir.File("out"), {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectSameTensors(m, **r);
}

TEST(Safetensors, TensorLargerThanShardSizeGetsItsOwnShard) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("small", DType::kU8, {10}, 1)).ok());
  ASSERT_TRUE(m.Add(PatternTensor("big", DType::kU8, {1000}, 2)).ok());
  ASSERT_TRUE(m.Add(PatternTensor("tail", DType::kU8, {10}, 3)).ok());
  WriteOptions opts;
  opts.shard_size = 100;
  ASSERT_TRUE(Write(m, dir.File("x.safetensors"), opts).ok());
  auto index = Json::parse(ReadBytes(dir.File("x.safetensors.index.json")));
  EXPECT_EQ(index["weight_map"]["small"], "x-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["big"], "x-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["tail"], "x-00003-of-00003.safetensors");
}

class FailingSource final : public ModelSource {
 public:
  explicit FailingSource(Model& inner) : inner_(inner) {}
  std::string_view format() const override { return "test"; }
  const std::vector<TensorInfo>& tensors() const override { return inner_.tensors(); }
  const Json& metadata() const override { return inner_.metadata(); }
  Result<TensorView> Load(size_t i) const override {
    if (i == 1) return IoError("disk on fire");
    return inner_.Load(i);
  }

 private:
  Model& inner_;
};

TEST(Safetensors, FailedWriteLeavesNothingBehind) {
  TempDir dir;
  Model m = SmallModel();
  FailingSource failing(m);
  Status s = Write(failing, dir.File("m.safetensors"), {});
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  WriteOptions sharded;
  sharded.shard_size = 16;
  s = Write(failing, dir.File("shards"), sharded);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_TRUE(fs::is_empty(dir.path() / "shards"));
  EXPECT_FALSE(fs::exists(dir.path() / "m.safetensors"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// A header small enough to pass every size cap but nested 100,000 levels deep: refused while
// parsing, never walked recursively (an error message that printed the value used to overflow
// the stack here).
TEST(Safetensors, RefusesDeeplyNestedHeader) {
  TempDir dir;
  std::string header = R"({"a":{"dtype":"U8","shape":)";
  header += std::string(100000, '[') + "1" + std::string(100000, ']');
  header += R"(,"data_offsets":[0,1]}})";
  std::vector<uint8_t> bytes(8);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.push_back(7);
  testing::WriteBytes(dir.File("deep.safetensors"), bytes);
  auto r = Open(dir.File("deep.safetensors"), {});
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status().message().find("header nests deeper than 8 levels"), std::string::npos)
      << r.status().message();
  EXPECT_LT(r.status().message().size(), 200u);
}

TEST(Safetensors, RefusesSymlinkedShard) {
  TempDir dir;
  Model m;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(m.Add(PatternTensor("t" + std::to_string(i), DType::kF32, {8}, i)).ok());
  }
  WriteOptions opts;
  opts.shard_size = 32;
  ASSERT_TRUE(Write(m, dir.File("out"), opts).ok());
  // Swap one shard for a symbolic link to an identical file elsewhere.
  const fs::path shard = dir.path() / "out" / "model-00002-of-00002.safetensors";
  fs::rename(shard, dir.path() / "elsewhere.safetensors");
  fs::create_symlink(dir.path() / "elsewhere.safetensors", shard);
  auto r = Open(dir.File("out"), {});
  EXPECT_EQ(r.status().code(), StatusCode::kUnsafe);
  EXPECT_NE(
      r.status().message().find("shard 'model-00002-of-00002.safetensors' is a symbolic link"),
      std::string::npos)
      << r.status().message();
}

TEST(Safetensors, RefusesQuantizedDtypes) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("q", DType::kQ8_0, {32}, 1)).ok());
  Status s = Write(m, dir.File("q.safetensors"), {});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("cannot store dtype q8_0"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace mp::safetensors
