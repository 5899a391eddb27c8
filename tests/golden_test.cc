// Golden files written by the real Hugging Face safetensors 0.8 and transformers 5.17
// (../shared/golden, see its README.md): modelport must read every one exactly, and what it
// writes back from them must hold byte-identical tensor data under a header that means the same.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/core/dtype.h"
#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::GoldenDir;
using testing::RawSafetensors;
using testing::ReadBytes;
using testing::ReadRawSafetensors;
using testing::SameModel;
using testing::TempDir;

std::string AllDTypesPath() {
  return (GoldenDir() / "safetensors/all_dtypes.safetensors").string();
}
std::string TinySingle() {
  return (GoldenDir() / "transformers/tiny-gpt2-safetensors/model.safetensors").string();
}
std::string TinyShardedDir() {
  return (GoldenDir() / "transformers/tiny-gpt2-safetensors-sharded").string();
}

/// Little-endian integer element `i` of `bytes` (element size `size`), sign-extended if signed.
int64_t LoadSigned(const uint8_t* p, size_t size) {
  uint64_t u = 0;
  for (size_t b = 0; b < size; ++b) u |= uint64_t{p[b]} << (8 * b);
  if (size < 8 && (u >> (8 * size - 1)) & 1) u |= ~uint64_t{0} << (8 * size);
  return static_cast<int64_t>(u);
}
uint64_t LoadUnsigned(const uint8_t* p, size_t size) {
  uint64_t u = 0;
  for (size_t b = 0; b < size; ++b) u |= uint64_t{p[b]} << (8 * b);
  return u;
}

/// Same double bit for bit (so -0.0 != 0.0), NaN equal to NaN.
bool SameDouble(double a, double b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return a == b && std::signbit(a) == std::signbit(b);
}

/// Compares `view` with one entry of all_dtypes.expected.json.
void ExpectValues(const TensorView& view, const nlohmann::json& want) {
  SCOPED_TRACE("tensor '" + view.info.name + "'");
  auto dtype_or = testing::DTypeFromTorchName(want.at("dtype").get<std::string>());
  ASSERT_TRUE(dtype_or.ok()) << dtype_or.status().ToString();
  const DType dtype = *dtype_or;
  ASSERT_EQ(DTypeName(view.info.dtype), DTypeName(dtype));
  ASSERT_EQ(view.info.shape.dims(), want.at("shape").get<std::vector<uint64_t>>());
  const nlohmann::json& values = want.at("values");
  const uint64_t n = *view.info.shape.NumElements();
  ASSERT_EQ(values.size(), n);
  ASSERT_EQ(view.bytes().size(), view.info.byte_size);
  const DTypeKind kind = Traits(dtype).kind;
  const size_t size = ElementSize(dtype);
  const uint8_t* p = view.bytes().data();
  if (kind == DTypeKind::kFloat || kind == DTypeKind::kComplex) {
    const size_t width = DecodedWidth(dtype);
    std::vector<double> decoded(n * width);
    Status s = DecodeToF64(dtype, p, n, decoded.data());
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (size_t i = 0; i < n; ++i) {
      if (kind == DTypeKind::kComplex) {
        EXPECT_TRUE(SameDouble(decoded[2 * i], values[i][0].get<double>())) << "re " << i;
        EXPECT_TRUE(SameDouble(decoded[2 * i + 1], values[i][1].get<double>())) << "im " << i;
      } else {
        EXPECT_TRUE(SameDouble(decoded[i], values[i].get<double>()))
            << "element " << i << ": " << decoded[i] << " vs " << values[i];
      }
    }
  } else if (kind == DTypeKind::kSigned) {
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(LoadSigned(p + i * size, size), values[i].get<int64_t>()) << "element " << i;
    }
  } else {  // unsigned and bool
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(LoadUnsigned(p + i * size, size), values[i].get<uint64_t>()) << "element " << i;
    }
  }
}

TEST(Golden, AllDTypesReadExactly) {
  MP_SKIP_WITHOUT_GOLDEN();
  const std::vector<uint8_t> text =
      ReadBytes((GoldenDir() / "safetensors/all_dtypes.expected.json").string());
  const nlohmann::json expected = nlohmann::json::parse(text.begin(), text.end());
  for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
    ReadOptions options;
    options.io_mode = mode;
    auto model = OpenModel(AllDTypesPath(), options);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    EXPECT_EQ((*model)->format(), "safetensors");
    ASSERT_EQ((*model)->tensors().size(), expected.size());
    for (const auto& [name, want] : expected.items()) {
      auto index = (*model)->Find(name);
      ASSERT_TRUE(index.has_value()) << "missing tensor '" << name << "'";
      auto view = (*model)->Load(*index);
      ASSERT_TRUE(view.ok()) << view.status().ToString();
      ExpectValues(*view, want);
    }
    // __metadata__ as the header holds it, parsed without modelport.
    const RawSafetensors raw = ReadRawSafetensors(AllDTypesPath());
    EXPECT_EQ(nlohmann::json::parse((*model)->metadata().dump()), raw.header.at("__metadata__"));
  }
}

TEST(Golden, EveryDTypeOfTheTableIsInTheGoldenFile) {
  MP_SKIP_WITHOUT_GOLDEN();
  auto model = OpenModel(AllDTypesPath());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  for (const DTypeTraits& t : AllDTypes()) {
    if (t.safetensors_name.empty()) continue;
    const bool present = std::any_of((*model)->tensors().begin(), (*model)->tensors().end(),
                                     [&](const TensorInfo& i) { return i.dtype == t.dtype; });
    EXPECT_TRUE(present) << t.name;
  }
}

TEST(Golden, TinyGpt2SingleAndShardedHoldTheSameTensors) {
  MP_SKIP_WITHOUT_GOLDEN();
  auto single = OpenModel(TinySingle());
  ASSERT_TRUE(single.ok()) << single.status().ToString();
  ASSERT_EQ((*single)->tensors().size(), 28u);  // lm_head.weight is tied to wte and not saved
  EXPECT_EQ(nlohmann::json::parse((*single)->metadata().dump()),
            nlohmann::json({{"format", "pt"}}));

  const std::string index = TinyShardedDir() + "/" + std::string(safetensors::kIndexName);
  for (const std::string& path : {TinyShardedDir(), index}) {
    auto detected = DetectFormat(path);
    ASSERT_TRUE(detected.ok()) << detected.status().ToString();
    EXPECT_EQ((*detected)->name, "safetensors");
    for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
      ReadOptions options;
      options.io_mode = mode;
      auto sharded = OpenModel(path, options);
      ASSERT_TRUE(sharded.ok()) << sharded.status().ToString();
      // Shards carry {"format":"pt"} each and the index its own metadata; compare tensors only.
      EXPECT_TRUE(SameModel(**single, **sharded, /*compare_metadata=*/false)) << path;
    }
  }
}

/// Bytes of every tensor in a raw file, keyed by name.
std::map<std::string, std::vector<uint8_t>> AllTensorBytes(const RawSafetensors& raw) {
  std::map<std::string, std::vector<uint8_t>> out;
  for (const auto& [name, entry] : raw.header.items()) {
    if (name != "__metadata__") out[name] = raw.TensorBytes(name);
  }
  return out;
}

/// Tensor names in data order.
std::vector<std::string> DataOrder(const RawSafetensors& raw) {
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [name, entry] : raw.header.items()) {
    if (name != "__metadata__") order.emplace_back(entry["data_offsets"][0].get<uint64_t>(), name);
  }
  std::sort(order.begin(), order.end());
  std::vector<std::string> names;
  for (auto& [begin, name] : order) names.push_back(name);
  return names;
}

/// `ours` (written by modelport) means the same as `theirs`: same entries with the same dtype,
/// shape and bytes, same __metadata__; header padded to 8 and every tensor naturally aligned.
void ExpectSameMeaning(const std::string& theirs_path, const std::string& ours_path) {
  const RawSafetensors theirs = ReadRawSafetensors(theirs_path);
  const RawSafetensors ours = ReadRawSafetensors(ours_path);
  ASSERT_TRUE(theirs.header.is_object() && ours.header.is_object());
  EXPECT_EQ(ours.header.size(), theirs.header.size());
  EXPECT_EQ(ours.header.value("__metadata__", nlohmann::json()),
            theirs.header.value("__metadata__", nlohmann::json()));
  for (const auto& [name, entry] : theirs.header.items()) {
    if (name == "__metadata__") continue;
    ASSERT_TRUE(ours.header.contains(name)) << "missing '" << name << "'";
    EXPECT_EQ(ours.header[name]["dtype"], entry["dtype"]) << name;
    EXPECT_EQ(ours.header[name]["shape"], entry["shape"]) << name;
    if (DataOrder(ours) == DataOrder(theirs)) {
      EXPECT_EQ(ours.header[name]["data_offsets"], entry["data_offsets"]) << name;
    }
  }
  EXPECT_TRUE(AllTensorBytes(ours) == AllTensorBytes(theirs)) << "tensor bytes differ";
  if (DataOrder(ours) == DataOrder(theirs)) {
    EXPECT_TRUE(std::equal(
        ours.bytes.begin() + static_cast<std::ptrdiff_t>(ours.data_start), ours.bytes.end(),
        theirs.bytes.begin() + static_cast<std::ptrdiff_t>(theirs.data_start), theirs.bytes.end()))
        << "same order, different data buffer";
  }
  // modelport's own layout promises.
  EXPECT_EQ(ours.data_start % 8, 0u) << "header not padded to 8 bytes";
  for (const auto& [name, entry] : ours.header.items()) {
    if (name == "__metadata__") continue;
    auto dtype = DTypeFromSafetensors(entry["dtype"].get<std::string>());
    ASSERT_TRUE(dtype.ok());
    const uint64_t at = ours.data_start + entry["data_offsets"][0].get<uint64_t>();
    const uint64_t align = std::min<uint64_t>(ElementSize(*dtype), 8);
    EXPECT_EQ(at % align, 0u) << "'" << name << "' not naturally aligned";
  }
}

TEST(Golden, WritingBackKeepsBytesAndMeaning) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  for (const std::string& golden : {AllDTypesPath(), TinySingle()}) {
    SCOPED_TRACE(golden);
    auto model = OpenModel(golden);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    const std::string out = dir.File(fs::path(golden).filename().string());
    Status s = safetensors::Write(**model, out, {});
    ASSERT_TRUE(s.ok()) << s.ToString();
    ExpectSameMeaning(golden, out);
    auto reread = OpenModel(out);
    ASSERT_TRUE(reread.ok()) << reread.status().ToString();
    EXPECT_TRUE(SameModel(**model, **reread));
  }
}

TEST(Golden, ShardedGoldenWrittenAsOneFileMatchesTheSingleFile) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  auto sharded = OpenModel(TinyShardedDir());
  ASSERT_TRUE(sharded.ok()) << sharded.status().ToString();
  const std::string out = dir.File("merged.safetensors");
  Status s = safetensors::Write(**sharded, out, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  const RawSafetensors ours = ReadRawSafetensors(out);
  const RawSafetensors theirs = ReadRawSafetensors(TinySingle());
  EXPECT_TRUE(AllTensorBytes(ours) == AllTensorBytes(theirs));
  for (const auto& [name, entry] : theirs.header.items()) {
    if (name == "__metadata__") continue;
    ASSERT_TRUE(ours.header.contains(name)) << name;
    EXPECT_EQ(ours.header[name]["dtype"], entry["dtype"]);
    EXPECT_EQ(ours.header[name]["shape"], entry["shape"]);
  }
}

TEST(Golden, ShardedGoldenWrittenBackAsShards) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  auto sharded = OpenModel(TinyShardedDir());
  ASSERT_TRUE(sharded.ok()) << sharded.status().ToString();
  WriteOptions options;
  options.shard_size = 100 * 1000;  // golden shards are ~67-83 kB
  Status s = safetensors::Write(**sharded, dir.path().string(), options);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::vector<uint8_t> ours_text = ReadBytes(dir.File(std::string(safetensors::kIndexName)));
  const std::vector<uint8_t> theirs_text =
      ReadBytes(TinyShardedDir() + "/" + std::string(safetensors::kIndexName));
  const auto ours = nlohmann::json::parse(ours_text.begin(), ours_text.end());
  const auto theirs = nlohmann::json::parse(theirs_text.begin(), theirs_text.end());
  EXPECT_EQ(ours["metadata"]["total_size"], theirs["metadata"]["total_size"]);
  ASSERT_EQ(ours["weight_map"].size(), theirs["weight_map"].size());
  for (const auto& [name, file] : theirs["weight_map"].items()) {
    EXPECT_TRUE(ours["weight_map"].contains(name)) << name;
  }
  auto reread = OpenModel(dir.path().string());
  ASSERT_TRUE(reread.ok()) << reread.status().ToString();
  EXPECT_TRUE(SameModel(**sharded, **reread, /*compare_metadata=*/false));
}

}  // namespace
}  // namespace mp
