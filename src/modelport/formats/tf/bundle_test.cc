#include "modelport/formats/tf/bundle.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "modelport/formats/safetensors/safetensors.h"
#include "modelport/formats/tf/proto.h"
#include "test_util.h"

#ifdef MODELPORT_HAVE_LEVELDB
#include <leveldb/env.h>
#include <leveldb/iterator.h>
#include <leveldb/options.h>
#include <leveldb/table.h>
#endif

namespace mp::tf {
namespace {

namespace fs = std::filesystem;
using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

fs::path GoldenModel(const std::string& name) {
  return testing::GoldenDir() / "tf" / name / "00000123";
}

float F32(const TensorView& t) {
  EXPECT_EQ(t.info.dtype, DType::kF32);
  EXPECT_EQ(t.bytes().size(), 4u);
  float v = 0;
  std::memcpy(&v, t.bytes().data(), 4);
  return v;
}

// name -> value of every f32 scalar of `source`.
std::map<std::string, float> Scalars(const ModelSource& source) {
  std::map<std::string, float> out;
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    auto t = source.Load(i);
    EXPECT_TRUE(t.has_value()) << t.status().ToString();
    if (t) out[t->info.name] = F32(*t);
  }
  return out;
}

// A copy of a golden variables/ folder that the test may damage.
fs::path CopyVariables(const TempDir& tmp, const std::string& model) {
  const fs::path dest = tmp.path() / "variables";
  fs::copy(GoldenModel(model) / "variables", dest);
  for (const auto& e : fs::directory_iterator(dest)) {
    fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  }
  return dest;
}

TEST(TfBundleTest, Crc32cKnownValues) {
  // RFC 3720 B.4 check value and LevelDB's mask round trip.
  const std::string s = "123456789";
  EXPECT_EQ(Crc32c({reinterpret_cast<const uint8_t*>(s.data()), s.size()}), 0xe3069283u);
  EXPECT_EQ(Crc32c({}), 0u);
  for (uint32_t v : {0u, 1u, 0xe3069283u, 0xffffffffu}) EXPECT_EQ(UnmaskCrc(MaskCrc(v)), v);
  EXPECT_NE(MaskCrc(0xe3069283u), 0xe3069283u);
}

TEST(TfBundleTest, DTypeTable) {
  EXPECT_EQ(*DTypeFromTf(kDtFloat), DType::kF32);
  EXPECT_EQ(*DTypeFromTf(kDtHalf), DType::kF16);
  EXPECT_EQ(*DTypeFromTf(kDtBfloat16), DType::kBF16);
  EXPECT_EQ(*DTypeFromTf(kDtComplex64), DType::kC64);
  EXPECT_EQ(*DTypeFromTf(kDtUint64), DType::kU64);
  EXPECT_EQ(DTypeFromTf(kDtString).status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(DTypeFromTf(kDtComplex128).status().message(),
            "TensorFlow dtype DT_COMPLEX128 has no modelport dtype");
  EXPECT_EQ(TfDTypeName(101), "DT_FLOAT_REF");
  EXPECT_EQ(TfDTypeName(0), "DT_INVALID");
  EXPECT_EQ(TfDTypeName(77), "DT_77");
  for (const auto& t : AllDTypes()) {
    if (auto tf = TfFromDType(t.dtype)) {
      EXPECT_EQ(*DTypeFromTf(*tf), t.dtype) << t.name;
    }
  }
  EXPECT_FALSE(TfFromDType(DType::kQ4_0).has_value());
}

TEST(TfBundleTest, GoldenVariablesReadExactly) {
  MP_SKIP_WITHOUT_GOLDEN();
  for (IoMode mode : testing::kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto two =
        BundleSource::Open((GoldenModel("saved_model_half_plus_two_cpu") / "variables"), options);
    ASSERT_TRUE(two.has_value()) << two.status().ToString();
    EXPECT_EQ((*two)->header().num_shards, 1);
    EXPECT_EQ((*two)->header().producer, 1);
    const std::map<std::string, float> two_expected = {
        {"a", 0.5f}, {"a2", 0.5f}, {"b", 2.0f}, {"c", 3.0f}, {"c2", 3.0f}};
    EXPECT_EQ(Scalars(**two), two_expected);
    for (const auto& t : (*two)->tensors()) EXPECT_EQ(t.shape.rank(), 0u) << t.name;
    EXPECT_TRUE((*two)->notes().empty());

    auto three = BundleSource::Open(
        (GoldenModel("saved_model_half_plus_three") / "variables" / "variables.index"), options);
    ASSERT_TRUE(three.has_value()) << three.status().ToString();
    const std::map<std::string, float> three_expected = {{"a", 0.5f}, {"b", 3.0f}, {"c", 3.0f}};
    EXPECT_EQ(Scalars(**three), three_expected);

    auto counter = BundleSource::Open((GoldenModel("saved_model_counter") / "variables"), options);
    ASSERT_TRUE(counter.has_value()) << counter.status().ToString();
    const std::map<std::string, float> counter_expected = {{"counter", 0.0f}};
    EXPECT_EQ(Scalars(**counter), counter_expected);

    auto tf2 =
        BundleSource::Open(GoldenModel("saved_model_half_plus_two_tf2_cpu") / "variables", options);
    ASSERT_TRUE(tf2.has_value()) << tf2.status().ToString();
    const std::map<std::string, float> tf2_expected = {{"a/.ATTRIBUTES/VARIABLE_VALUE", 0.5f},
                                                       {"b/.ATTRIBUTES/VARIABLE_VALUE", 2.0f},
                                                       {"c/.ATTRIBUTES/VARIABLE_VALUE", 3.0f}};
    EXPECT_EQ(Scalars(**tf2), tf2_expected);
    // The object graph is a string tensor: reported, not dropped silently.
    ASSERT_EQ((*tf2)->notes().size(), 1u);
    EXPECT_EQ((*tf2)->notes()[0],
              "string tensor '_CHECKPOINTABLE_OBJECT_GRAPH' (619 bytes) is not read: modelport "
              "tensors hold numbers");
    EXPECT_EQ((*tf2)->entries().size(), 4u);
  }
}

TEST(TfBundleTest, GoldenCrcIsMaskedCrc32cOfTheBytes) {
  MP_SKIP_WITHOUT_GOLDEN();
  // TensorFlow wrote these checksums: they must be the masked crc32c of each tensor's bytes.
  auto b = BundleSource::Open(GoldenModel("saved_model_half_plus_two_cpu") / "variables", {});
  ASSERT_TRUE(b.has_value()) << b.status().ToString();
  for (const BundleEntry& e : (*b)->entries()) {
    auto raw = (*b)->RawBytes(e);
    ASSERT_TRUE(raw.has_value());
    EXPECT_EQ(e.crc32c, MaskCrc(Crc32c((*raw)->span()))) << e.name;
  }
}

TEST(TfBundleTest, FlippedDataByteIsChecksumMismatch) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir tmp;
  const fs::path vars = CopyVariables(tmp, "saved_model_half_plus_two_cpu");
  const std::string data = (vars / "variables.data-00000-of-00001").string();
  auto bytes = ReadBytes(data);
  ASSERT_EQ(bytes.size(), 20u);
  bytes[8] ^= 0x01;  // inside "b" (offset 8, 4 bytes)
  WriteBytes(data, bytes);
  for (IoMode mode : testing::kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto source = BundleSource::Open(vars.string(), options);
    ASSERT_TRUE(source.has_value()) << source.status().ToString();
    const size_t b = *(*source)->Find("b");
    auto t = (*source)->Load(b);
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.status().code(), StatusCode::kChecksumMismatch);
    EXPECT_NE(t.status().message().find("tensor 'b': crc32c of its 4 bytes is"), std::string::npos)
        << t.status().message();
    EXPECT_NE(t.status().message().find(data), std::string::npos);
    std::vector<uint8_t> dest(4);
    EXPECT_EQ((*source)->LoadInto(b, dest).code(), StatusCode::kChecksumMismatch);
    // The other tensors still read.
    EXPECT_TRUE((*source)->Load(*(*source)->Find("a")).has_value());
  }
}

TEST(TfBundleTest, FormatTableDetection) {
  MP_SKIP_WITHOUT_GOLDEN();
  for (const char* model : {"saved_model_half_plus_two_cpu", "saved_model_half_plus_two_tf2_cpu",
                            "saved_model_counter"}) {
    const fs::path index = GoldenModel(model) / "variables" / "variables.index";
    const auto bytes = ReadBytes(index.string());
    EXPECT_TRUE(Detect({bytes.data(), std::min<size_t>(kDetectBytes, bytes.size())}, bytes.size()))
        << model;
    auto f = DetectFormat(index.string());
    ASSERT_TRUE(f.has_value()) << f.status().ToString();
    EXPECT_EQ((*f)->name, "tf_bundle");
    auto d = DetectFormat((GoldenModel(model) / "variables").string());
    ASSERT_TRUE(d.has_value()) << d.status().ToString();
    EXPECT_EQ((*d)->name, "tf_bundle");
    auto opened = OpenModel(index.string());
    ASSERT_TRUE(opened.has_value()) << opened.status().ToString();
    EXPECT_EQ((*opened)->format(), "tf_bundle");
  }
  // Our own (uncompressed) index is detected too.
  TempDir tmp;
  Model m;
  ASSERT_TRUE(m.Add(testing::PatternTensor("w", DType::kF32, {2, 3}, 1)).ok());
  ASSERT_TRUE(Write(m, tmp.File("ckpt.index"), {}).ok());
  const auto ours = ReadBytes(tmp.File("ckpt.index"));
  EXPECT_TRUE(Detect({ours.data(), kDetectBytes}, ours.size()));
  const std::vector<uint8_t> zeros(64, 0);
  EXPECT_FALSE(Detect({zeros.data(), kDetectBytes}, zeros.size()));
}

// bundle -> safetensors -> bundle keeps every tensor byte, and TF's own checksums.
TEST(TfBundleTest, RoundTripThroughSafetensors) {
  MP_SKIP_WITHOUT_GOLDEN();
  for (const char* model : {"saved_model_half_plus_two_cpu", "saved_model_half_plus_two_tf2_cpu",
                            "saved_model_half_plus_three", "saved_model_counter"}) {
    TempDir tmp;
    auto original = BundleSource::Open(GoldenModel(model) / "variables", {});
    ASSERT_TRUE(original.has_value()) << original.status().ToString();
    ASSERT_TRUE(safetensors::Write(**original, tmp.File("w.safetensors"), {}).ok());
    auto st = safetensors::Open(tmp.File("w.safetensors"), {});
    ASSERT_TRUE(st.has_value()) << st.status().ToString();
    fs::create_directory(tmp.path() / "out");
    const Status w = Write(**st, tmp.File("out/ckpt.index"), {});
    ASSERT_TRUE(w.ok()) << w.ToString();
    EXPECT_TRUE(fs::exists(tmp.File("out/ckpt.data-00000-of-00001")));
    auto back = BundleSource::Open(tmp.File("out/ckpt.index"), {});
    ASSERT_TRUE(back.has_value()) << back.status().ToString();
    EXPECT_TRUE(testing::SameModel(**original, **back));
    // Same checksums as TensorFlow computed for the same bytes.
    for (const BundleEntry& e : (*back)->entries()) {
      const auto it = std::find_if((*original)->entries().begin(), (*original)->entries().end(),
                                   [&](const BundleEntry& o) { return o.name == e.name; });
      ASSERT_NE(it, (*original)->entries().end());
      EXPECT_EQ(e.crc32c, it->crc32c) << e.name;
      EXPECT_EQ(e.dtype, it->dtype);
      EXPECT_EQ(e.dims, it->dims);
    }
  }
}

TEST(TfBundleTest, EveryDTypeRoundTrips) {
  MP_SKIP_WITHOUT_GOLDEN();
  auto all = safetensors::Open(
      (testing::GoldenDir() / "safetensors" / "all_dtypes.safetensors").string(), {});
  ASSERT_TRUE(all.has_value()) << all.status().ToString();
  TempDir tmp;
  // A folder destination: folder/variables.*
  fs::create_directories(tmp.path() / "v");
  const Status w = Write(**all, tmp.File("v"), {});
  ASSERT_TRUE(w.ok()) << w.ToString();
  EXPECT_TRUE(fs::exists(tmp.File("v/variables.index")));
  auto back = OpenModel(tmp.File("v"));
  ASSERT_TRUE(back.has_value()) << back.status().ToString();
  // Metadata rides along as the _MODELPORT_METADATA string scalar.
  EXPECT_FALSE((*all)->metadata().empty());
  EXPECT_TRUE(testing::SameModel(**all, **back));
  EXPECT_TRUE((*back)->notes().empty());
}

TEST(TfBundleTest, StringScalarsAsTensorFlowStoresThem) {
  MP_SKIP_WITHOUT_GOLDEN();
  // TF2's object graph: re-encoding its decoded value gives TF's bytes and checksum exactly.
  auto b = BundleSource::Open(GoldenModel("saved_model_half_plus_two_tf2_cpu") / "variables", {});
  ASSERT_TRUE(b.has_value()) << b.status().ToString();
  const BundleEntry& graph = (*b)->entries().at(0);
  ASSERT_EQ(graph.name, "_CHECKPOINTABLE_OBJECT_GRAPH");
  auto raw = (*b)->RawBytes(graph);
  ASSERT_TRUE(raw.has_value());
  auto value = DecodeStringScalar((*raw)->span(), graph.crc32c);
  ASSERT_TRUE(value.has_value()) << value.status().ToString();
  EXPECT_EQ(value->size(), 613u);
  uint32_t crc = 0;
  const std::string again = EncodeStringScalar(*value, &crc);
  EXPECT_EQ(crc, graph.crc32c);
  EXPECT_TRUE(std::equal(again.begin(), again.end(), (*raw)->span().begin(), (*raw)->span().end(),
                         [](char a, uint8_t b) { return static_cast<uint8_t>(a) == b; }));
  EXPECT_EQ(DecodeStringScalar((*raw)->span(), graph.crc32c ^ 1).status().code(),
            StatusCode::kChecksumMismatch);
}

TEST(TfBundleTest, ShardSizeSplitsTheData) {
  Model m;
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(m.Add(testing::PatternTensor("t" + std::to_string(i), DType::kF32, {25},
                                             static_cast<uint32_t>(i)))
                    .ok());
  }
  m.mutable_metadata() = Json{{"format", "pt"}};
  TempDir tmp;
  WriteOptions options;
  options.shard_size = 250;  // two 100-byte tensors per shard
  ASSERT_TRUE(Write(m, tmp.File("ckpt.index"), options).ok());
  // Key order: _MODELPORT_METADATA (small), t0, t1 | t2, t3 | t4, t5.
  EXPECT_TRUE(fs::exists(tmp.File("ckpt.data-00002-of-00003")));
  auto back = BundleSource::Open(tmp.File("ckpt.index"), {});
  ASSERT_TRUE(back.has_value()) << back.status().ToString();
  EXPECT_EQ((*back)->header().num_shards, 3);
  EXPECT_EQ((*back)->files().files.size(), 3u);
  EXPECT_TRUE(testing::SameModel(m, **back));

  // Writers do not create missing folders.
  const Status missing = Write(m, tmp.File("no/such/ckpt.index"), {});
  EXPECT_EQ(missing.code(), StatusCode::kIoError);
}

TEST(TfBundleTest, ManyTensorsSpanSeveralBlocks) {
  Model m;
  for (int i = 0; i < 700; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "layer_%04d/kernel/.ATTRIBUTES/VARIABLE_VALUE", i);
    ASSERT_TRUE(
        m.Add(testing::PatternTensor(name, i % 2 ? DType::kF16 : DType::kI64,
                                     {static_cast<uint64_t>(i % 5), 3}, static_cast<uint32_t>(i)))
            .ok());
  }
  TempDir tmp;
  ASSERT_TRUE(Write(m, tmp.File("ckpt.index"), {}).ok());
  auto back = BundleSource::Open(tmp.File("ckpt"), {});  // a bare prefix works too
  ASSERT_TRUE(back.has_value()) << back.status().ToString();
  EXPECT_TRUE(testing::SameModel(m, **back));
  EXPECT_GT(ReadBytes(tmp.File("ckpt.index")).size(), 3 * 4096u);
}

TEST(TfBundleTest, WriterRefusesWhatTfCannotHold) {
  Model m;
  ASSERT_TRUE(m.Add(testing::PatternTensor("q", DType::kQ8_0, {32}, 1)).ok());
  TempDir tmp;
  const Status s = Write(m, tmp.File("ckpt.index"), {});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_EQ(s.message(),
            "tensor 'q': a tensor bundle cannot store dtype q8_0; dequantize it first");
  EXPECT_FALSE(fs::exists(tmp.File("ckpt.index")));
  EXPECT_FALSE(fs::exists(tmp.File("ckpt.data-00000-of-00001")));

  Model ok;
  ASSERT_TRUE(ok.Add(testing::PatternTensor("w", DType::kF32, {2}, 1)).ok());
  ASSERT_TRUE(Write(ok, tmp.File("ckpt.index"), {}).ok());
  WriteOptions no_overwrite;
  no_overwrite.no_overwrite = true;
  EXPECT_EQ(Write(ok, tmp.File("ckpt.index"), no_overwrite).code(), StatusCode::kAlreadyExists);
}

// ---------------------------------------------------------------------------------------------
// Hand-built bundles: several shards, partitioned variables and hostile indexes.

struct Built {
  std::string name;
  BundleEntry entry;
  std::string extra;  // appended to the serialized entry (e.g. slices)
};

void WriteIndex(const std::string& prefix, int64_t num_shards, const std::vector<Built>& entries) {
  std::vector<TableEntry> table;
  BundleHeader h;
  h.num_shards = num_shards;
  h.producer = 1;
  table.emplace_back("", SerializeHeader(h));
  for (const auto& b : entries) table.emplace_back(b.name, SerializeEntry(b.entry) + b.extra);
  const std::string bytes = BuildTable(table);
  WriteBytes(prefix + ".index", std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

BundleEntry F32Entry(std::vector<int64_t> dims, int64_t shard, uint64_t offset,
                     const std::vector<uint8_t>& all_bytes) {
  BundleEntry e;
  e.dtype = kDtFloat;
  e.dims = std::move(dims);
  e.shard_id = shard;
  e.offset = offset;
  e.size = 4;
  for (int64_t d : e.dims) e.size *= static_cast<uint64_t>(d);
  if (offset + e.size <= all_bytes.size()) {
    e.crc32c = MaskCrc(Crc32c({all_bytes.data() + offset, static_cast<size_t>(e.size)}));
  }
  return e;
}

TEST(TfBundleTest, SeveralShards) {
  TempDir tmp;
  const std::string prefix = tmp.File("model.ckpt");
  const std::vector<uint8_t> shard0 = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40};  // 1.0, 2.0
  const std::vector<uint8_t> shard1 = {9, 9, 0, 0, 0x40, 0x40};           // pad, 3.0
  WriteBytes(DataFileName(prefix, 0, 2), shard0);
  WriteBytes(DataFileName(prefix, 1, 2), shard1);
  WriteIndex(prefix, 2,
             {{"x", F32Entry({2}, 0, 0, shard0), ""}, {"y", F32Entry({}, 1, 2, shard1), ""}});
  EXPECT_EQ(DataFileName(prefix, 1, 2), prefix + ".data-00001-of-00002");
  auto source = BundleSource::Open(prefix + ".index", {});
  ASSERT_TRUE(source.has_value()) << source.status().ToString();
  ASSERT_EQ((*source)->tensors().size(), 2u);
  EXPECT_EQ((*source)->files().files.size(), 2u);
  auto y = (*source)->Load(*(*source)->Find("y"));
  ASSERT_TRUE(y.has_value()) << y.status().ToString();
  EXPECT_EQ(F32(*y), 3.0f);
  auto x = (*source)->Load(*(*source)->Find("x"));
  ASSERT_TRUE(x.has_value());
  EXPECT_EQ(x->info.shape, Shape({2}));

  // A missing shard file is an error naming it.
  fs::remove(DataFileName(prefix, 1, 2));
  auto missing = BundleSource::Open(prefix + ".index", {});
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.status().message().find(".data-00001-of-00002"), std::string::npos)
      << missing.status().ToString();
}

TEST(TfBundleTest, PartitionedVariablesAreReported) {
  TempDir tmp;
  const std::string prefix = tmp.File("ckpt");
  const std::vector<uint8_t> data = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40};
  WriteBytes(DataFileName(prefix, 0, 1), data);
  BundleEntry full;
  full.dtype = kDtFloat;
  full.dims = {2};
  std::string slices;
  PutLenField(&slices, 7, "");  // two TensorSliceProto
  PutLenField(&slices, 7, "");
  // Slice data lives under encoded keys that start with a zero byte.
  WriteIndex(prefix, 1,
             {{std::string("\0\1part", 6), F32Entry({1}, 0, 0, data), ""},
              {std::string("\0\1part2", 7), F32Entry({1}, 0, 4, data), ""},
              {"part", full, slices},
              {"whole", F32Entry({1}, 0, 4, data), ""}});
  auto source = BundleSource::Open(prefix, {});
  ASSERT_TRUE(source.has_value()) << source.status().ToString();
  ASSERT_EQ((*source)->tensors().size(), 1u);
  EXPECT_EQ((*source)->tensors()[0].name, "whole");
  EXPECT_EQ((*source)->partitioned(), std::vector<std::string>{"part"});
  ASSERT_EQ((*source)->notes().size(), 1u);
  EXPECT_EQ((*source)->notes()[0],
            "1 partitioned (sliced) variable(s) not read: 'part' (2 slice entries)");
}

TEST(TfBundleTest, HostileIndexes) {
  TempDir tmp;
  const std::string prefix = tmp.File("ckpt");
  const std::vector<uint8_t> data = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40};
  WriteBytes(DataFileName(prefix, 0, 1), data);
  auto open_error = [&]() {
    auto s = BundleSource::Open(prefix + ".index", {});
    return s.has_value() ? Status::Ok() : s.status();
  };

  // Offsets past the data file.
  WriteIndex(prefix, 1, {{"w", F32Entry({2}, 0, 4, data), ""}});
  Status s = open_error();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.message(), prefix + ".index: tensor 'w': bytes [4, 12) are past the end of " +
                             DataFileName(prefix, 0, 1) + " (8 bytes)");

  // offset + size overflowing.
  BundleEntry huge = F32Entry({1}, 0, 0, data);
  huge.offset = UINT64_MAX - 1;
  WriteIndex(prefix, 1, {{"w", huge, ""}});
  EXPECT_EQ(open_error().code(), StatusCode::kCorrupt);

  // Shard id past num_shards.
  WriteIndex(prefix, 1, {{"w", F32Entry({1}, 3, 0, data), ""}});
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.message(), prefix + ".index: tensor 'w': shard_id 3 is not below num_shards 1");

  // num_shards absurd.
  WriteIndex(prefix, 1000000, {});
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("num_shards 1000000 is not between 1 and"), std::string::npos);

  // Size that does not match dtype and shape.
  BundleEntry wrong = F32Entry({2}, 0, 0, data);
  wrong.dims = {3};
  WriteIndex(prefix, 1, {{"w", wrong, ""}});
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.message(), prefix + ".index: tensor 'w': size 8 but f32 [3] needs 12");

  // Negative dimension.
  BundleEntry negative = F32Entry({2}, 0, 0, data);
  negative.dims = {-2};
  WriteIndex(prefix, 1, {{"w", negative, ""}});
  EXPECT_EQ(open_error().code(), StatusCode::kCorrupt);

  // A table whose first key is not the header.
  {
    const std::string bytes = BuildTable({{"w", SerializeEntry(F32Entry({2}, 0, 0, data))}});
    WriteBytes(prefix + ".index", std::vector<uint8_t>(bytes.begin(), bytes.end()));
    s = open_error();
    EXPECT_EQ(s.code(), StatusCode::kCorrupt);
    EXPECT_EQ(s.message(),
              prefix + ".index: no header entry (key \"\"): not a tensor bundle index");
  }

  // A good index, then damaged copies of it.
  WriteIndex(prefix, 1, {{"w", F32Entry({2}, 0, 0, data), ""}});
  ASSERT_TRUE(open_error().ok());
  const auto good = ReadBytes(prefix + ".index");

  auto truncated = good;
  truncated.resize(30);
  WriteBytes(prefix + ".index", truncated);
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.message(), prefix + ".index: table is 30 bytes, shorter than its 48-byte footer");

  auto bad_magic = good;
  bad_magic.back() ^= 0xff;
  WriteBytes(prefix + ".index", bad_magic);
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.message(), prefix + ".index: table footer has no LevelDB table magic");

  auto flipped = good;
  flipped[5] ^= 0x40;  // inside the data block
  WriteBytes(prefix + ".index", flipped);
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("block at offset 0: crc32c is"), std::string::npos) << s.message();

  // Every truncation and every single-byte change of a real index fails cleanly or reads.
  for (size_t n = 0; n < good.size(); ++n) {
    WriteBytes(prefix + ".index", std::vector<uint8_t>(good.begin(), good.begin() + n));
    EXPECT_FALSE(open_error().ok()) << n;
  }
  for (size_t i = 0; i < good.size(); ++i) {
    auto damaged = good;
    damaged[i] ^= 0xa5;
    WriteBytes(prefix + ".index", damaged);
    (void)open_error();
  }
}

TEST(TfBundleTest, HostileTables) {
  // A snappy block that claims a huge uncompressed size: refused before allocating.
  std::string block;
  PutVarint(&block, uint64_t{1} << 31);
  block += std::string(1, '\0') + "x";  // one literal byte
  std::string file = block;
  file.push_back('\1');  // snappy
  const uint32_t crc = Crc32c({reinterpret_cast<const uint8_t*>(file.data()), file.size()});
  for (int i = 0; i < 4; ++i) file.push_back(static_cast<char>(MaskCrc(crc) >> (8 * i)));
  // Index block: one entry pointing at the snappy block.
  std::string handle;
  PutVarint(&handle, 0);
  PutVarint(&handle, block.size());
  std::string index;
  index += '\0';
  index += '\1';
  PutVarint(&index, handle.size());
  index += "z" + handle;
  index += std::string("\0\0\0\0\1\0\0\0", 8);
  const uint64_t index_offset = file.size();
  file += index;
  file.push_back('\0');
  const uint32_t icrc =
      Crc32c({reinterpret_cast<const uint8_t*>(file.data()) + index_offset, index.size() + 1});
  for (int i = 0; i < 4; ++i) file.push_back(static_cast<char>(MaskCrc(icrc) >> (8 * i)));
  std::string footer;
  PutVarint(&footer, index_offset);  // metaindex: any valid block will do
  PutVarint(&footer, index.size());
  PutVarint(&footer, index_offset);
  PutVarint(&footer, index.size());
  footer.resize(40, '\0');
  for (int i = 0; i < 8; ++i) footer.push_back(static_cast<char>(0xdb4775248b80fb57ull >> (8 * i)));
  file += footer;
  auto r = ReadTable({reinterpret_cast<const uint8_t*>(file.data()), file.size()}, 1 << 20, 100);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), StatusCode::kLimitExceeded);
  EXPECT_EQ(r.status().message(),
            "block at offset 0: snappy block claims 2147483648 bytes uncompressed, over the "
            "limit of 1048576");
}

TEST(TfBundleTest, TableRoundTrip) {
  std::vector<TableEntry> entries;
  for (int i = 0; i < 2000; ++i) {
    entries.emplace_back("key/" + std::to_string(100000 + i), std::string(i % 37, 'v'));
  }
  const std::string bytes = BuildTable(entries);
  auto back =
      ReadTable({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, 1 << 30, 1 << 20);
  ASSERT_TRUE(back.has_value()) << back.status().ToString();
  EXPECT_EQ(*back, entries);
  auto limited =
      ReadTable({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, 1 << 30, 10);
  EXPECT_EQ(limited.status().code(), StatusCode::kLimitExceeded);
}

#ifdef MODELPORT_HAVE_LEVELDB
// Every entry of the table at `path`, read by Debian's libleveldb with checksums verified.
std::vector<TableEntry> LevelDbRead(const std::string& path) {
  leveldb::Env* env = leveldb::Env::Default();
  leveldb::RandomAccessFile* file = nullptr;
  uint64_t size = 0;
  EXPECT_TRUE(env->GetFileSize(path, &size).ok());
  EXPECT_TRUE(env->NewRandomAccessFile(path, &file).ok());
  leveldb::Options options;
  options.paranoid_checks = true;
  leveldb::Table* table = nullptr;
  const leveldb::Status s = leveldb::Table::Open(options, file, size, &table);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::vector<TableEntry> out;
  if (s.ok()) {
    leveldb::ReadOptions read;
    read.verify_checksums = true;
    leveldb::Iterator* it = table->NewIterator(read);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      out.emplace_back(it->key().ToString(), it->value().ToString());
    }
    EXPECT_TRUE(it->status().ok()) << it->status().ToString();
    delete it;
    delete table;
  }
  delete file;
  return out;
}

TEST(TfBundleTest, LevelDbAgreesOnGoldenIndexes) {
  MP_SKIP_WITHOUT_GOLDEN();
  for (const char* model : {"saved_model_half_plus_two_cpu", "saved_model_half_plus_two_tf2_cpu",
                            "saved_model_half_plus_three", "saved_model_counter"}) {
    const std::string path = (GoldenModel(model) / "variables" / "variables.index").string();
    const auto bytes = ReadBytes(path);
    auto ours = ReadTable({bytes.data(), bytes.size()}, 1 << 20, 1000);
    ASSERT_TRUE(ours.has_value()) << ours.status().ToString();
    EXPECT_EQ(*ours, LevelDbRead(path)) << model;
  }
}

TEST(TfBundleTest, LevelDbReadsOurTables) {
  TempDir tmp;
  Model m;
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE(
        m.Add(testing::PatternTensor("dense_" + std::to_string(i) + "/kernel", DType::kF32,
                                     {3, static_cast<uint64_t>(i % 4)}, static_cast<uint32_t>(i)))
            .ok());
  }
  ASSERT_TRUE(Write(m, tmp.File("ckpt.index"), {}).ok());
  const auto bytes = ReadBytes(tmp.File("ckpt.index"));
  auto ours = ReadTable({bytes.data(), bytes.size()}, 1 << 30, 1 << 20);
  ASSERT_TRUE(ours.has_value());
  const auto theirs = LevelDbRead(tmp.File("ckpt.index"));
  ASSERT_EQ(theirs.size(), 501u);
  EXPECT_EQ(*ours, theirs);
  EXPECT_EQ(theirs[0].first, "");  // the header sorts first
}
#endif

}  // namespace
}  // namespace mp::tf
