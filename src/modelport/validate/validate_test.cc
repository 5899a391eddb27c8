#include "modelport/validate/validate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/core/hash.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "modelport/formats/zip/zip.h"
#include "test_util.h"

namespace mp::validate {
namespace {

using ::mp::testing::GoldenDir;
using ::mp::testing::ReadBytes;
using ::mp::testing::TempDir;
using ::mp::testing::WriteBytes;

TensorView F32Tensor(const std::string& name, const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return ::mp::testing::BytesTensor(name, DType::kF32, Shape({values.size()}), bytes);
}

// Values across f16's range: subnormals, ties, large values, one beyond f16's max.
std::vector<float> Values() {
  std::vector<float> v;
  for (int i = 0; i < 200; ++i) v.push_back(std::sin(0.37f * i) * std::pow(2.0f, (i % 30) - 20));
  v.push_back(1e-7f);     // f16 subnormal
  v.push_back(65519.0f);  // rounds to f16 max
  v.push_back(70000.0f);  // rounds to +inf in f16
  v.push_back(-0.0f);
  return v;
}

std::unique_ptr<Model> F32Model() {
  auto m = std::make_unique<Model>();
  EXPECT_TRUE(m->Add(F32Tensor("w", Values())).ok());
  EXPECT_TRUE(m->Add(F32Tensor("b", {1.0f, -2.5f, 3.25f})).ok());
  return m;
}

// `source` with every float tensor cast to `to`, in memory.
std::unique_ptr<Model> Cast(const ModelSource& source, DType to) {
  std::unique_ptr<ModelSource> view = CastFloats(source, to);
  auto all = LoadAll(*view);
  EXPECT_TRUE(all.ok()) << all.error().message();
  return std::move(*all);
}

const Check& Summary(const std::vector<Check>& checks) { return checks.back(); }

size_t Failures(const std::vector<Check>& checks) {
  size_t n = 0;
  for (const Check& c : checks) n += c.outcome == Outcome::kFail;
  return n;
}

TEST(ValidateFidelity, NarrowedFloatsPassWithinRoundingAndFailExact) {
  auto f32 = F32Model();
  for (DType to : {DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2}) {
    SCOPED_TRACE(std::string(DTypeName(to)));
    auto narrow = Cast(*f32, to);
    Options options;
    auto checks = CompareModels(*narrow, *f32, "f32", options);
    ASSERT_TRUE(checks.ok()) << checks.error().message();
    EXPECT_EQ(Failures(*checks), 0u) << Summary(*checks).detail;
    EXPECT_EQ(Summary(*checks).outcome, Outcome::kPass);
    EXPECT_NE(Summary(*checks).detail.find("rounded to " + std::string(DTypeName(to))),
              std::string::npos)
        << Summary(*checks).detail;

    options.exact = true;
    checks = CompareModels(*narrow, *f32, "f32", options);
    ASSERT_TRUE(checks.ok());
    EXPECT_EQ(Summary(*checks).outcome, Outcome::kFail);
    EXPECT_EQ((*checks)[0].subject, "tensor 'w'");
    EXPECT_EQ((*checks)[0].detail,
              "dtype " + std::string(DTypeName(to)) + " vs f32 (exact comparison)");
  }
}

TEST(ValidateFidelity, OneUlpOffFailsAtHalfUlpAndPassesAtOne) {
  auto f32 = F32Model();
  auto f16 = Cast(*f32, DType::kF16);
  // Nudge element 5 of "w" by one f16 ulp (its bits + 1).
  auto w = LoadOwned(*f16, 0);
  ASSERT_TRUE(w.ok());
  std::vector<uint8_t> bytes(w->bytes().begin(), w->bytes().end());
  uint16_t bits;
  std::memcpy(&bits, bytes.data() + 10, 2);
  ++bits;
  std::memcpy(bytes.data() + 10, &bits, 2);
  Model nudged;
  ASSERT_TRUE(nudged.Add(::mp::testing::BytesTensor("w", DType::kF16, w->info.shape, bytes)).ok());
  ASSERT_TRUE(nudged.Add(*LoadOwned(*f16, 1)).ok());

  Options options;
  auto checks = CompareModels(nudged, *f32, "f32", options);
  ASSERT_TRUE(checks.ok());
  ASSERT_EQ(Failures(*checks), 2u);  // the tensor and the summary
  EXPECT_EQ((*checks)[0].subject, "tensor 'w'");
  EXPECT_NE((*checks)[0].detail.find("1 elements beyond rounded to f16 (0.5 ulp)"),
            std::string::npos)
      << (*checks)[0].detail;
  options.max_ulp = 1.0;
  checks = CompareModels(nudged, *f32, "f32", options);
  ASSERT_TRUE(checks.ok());
  EXPECT_EQ(Failures(*checks), 0u) << Summary(*checks).detail;
}

TEST(ValidateFidelity, WidenedFloatsMustBeExact) {
  auto f16 = Cast(*F32Model(), DType::kF16);
  auto widened = Cast(*f16, DType::kF32);
  Options options;
  auto checks = CompareModels(*widened, *f16, "f16", options);
  ASSERT_TRUE(checks.ok());
  EXPECT_EQ(Failures(*checks), 0u) << Summary(*checks).detail;
  // The original f32 values are not what the f16 model holds: widening must be exact.
  auto original = F32Model();
  checks = CompareModels(*original, *f16, "f16", options);
  ASSERT_TRUE(checks.ok());
  EXPECT_GT(Failures(*checks), 0u);
  EXPECT_NE((*checks)[0].detail.find("beyond equal values"), std::string::npos)
      << (*checks)[0].detail;
}

TEST(ValidateFidelity, MissingAndExtraTensorsAndShapesFail) {
  auto a = F32Model();
  Model b;
  ASSERT_TRUE(b.Add(F32Tensor("w", {1, 2, 3})).ok());
  ASSERT_TRUE(b.Add(F32Tensor("extra", {1})).ok());
  auto checks = CompareModels(*a, b, "B", Options());
  ASSERT_TRUE(checks.ok());
  ASSERT_EQ(checks->size(), 4u);
  EXPECT_EQ((*checks)[0].detail, "1 not in B: 'b'");
  EXPECT_EQ((*checks)[1].detail, "1 of B missing: 'extra'");
  EXPECT_EQ((*checks)[2].subject, "tensor 'w'");
  EXPECT_EQ((*checks)[2].detail, "shape [204] vs [3]");
  EXPECT_EQ(Summary(*checks).outcome, Outcome::kFail);
}

// A ggml Q8_0 tensor built from its formula (FORMAT_FACTS.md: per 32 values, d = amax / 127
// stored as f16, q = round(x / d)).
TensorView QuantizeQ8_0(const std::string& name, const std::vector<float>& x) {
  std::vector<uint8_t> bytes;
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b + i]));
    const float d = amax / 127;
    const uint16_t dh = F32ToF16(d);
    bytes.push_back(dh & 0xff);
    bytes.push_back(dh >> 8);
    for (size_t i = 0; i < 32; ++i) {
      const float q = d == 0 ? 0 : std::round(x[b + i] / d);
      bytes.push_back(static_cast<uint8_t>(static_cast<int8_t>(q)));
    }
  }
  return ::mp::testing::BytesTensor(name, DType::kQ8_0, Shape({x.size()}), bytes);
}

TEST(ValidateFidelity, QuantizedJudgedBySnr) {
  std::vector<float> x(256);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.1f * i) * (1 + i % 7);
  Model reference, quantized;
  ASSERT_TRUE(reference.Add(F32Tensor("w", x)).ok());
  ASSERT_TRUE(quantized.Add(QuantizeQ8_0("w", x)).ok());
  auto checks = CompareModels(quantized, reference, "f32", Options());
  ASSERT_TRUE(checks.ok()) << checks.error().message();
  EXPECT_EQ(Failures(*checks), 0u) << Summary(*checks).detail;
  EXPECT_NE(Summary(*checks).detail.find("q8_0 (SNR >= 40 dB)"), std::string::npos)
      << Summary(*checks).detail;
  // A damaged block scale drags the SNR far below the budget.
  auto q = LoadOwned(quantized, 0);
  std::vector<uint8_t> bytes(q->bytes().begin(), q->bytes().end());
  bytes[1] ^= 0x10;
  Model damaged;
  ASSERT_TRUE(
      damaged.Add(::mp::testing::BytesTensor("w", DType::kQ8_0, q->info.shape, bytes)).ok());
  checks = CompareModels(damaged, reference, "f32", Options());
  ASSERT_TRUE(checks.ok());
  EXPECT_EQ((*checks)[0].subject, "tensor 'w'");
  EXPECT_NE((*checks)[0].detail.find("dB below 40 dB"), std::string::npos) << (*checks)[0].detail;
}

class ValidatePathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("model.safetensors");
    WriteOptions w;
    w.durable = false;
    ASSERT_TRUE(safetensors::Write(*F32Model(), path_, w).ok());
  }
  TempDir dir_;
  std::string path_;
};

TEST_F(ValidatePathTest, PassesAndRecordsDigests) {
  auto report = ValidatePath(path_, Options());
  ASSERT_TRUE(report.ok()) << report.error().message();
  EXPECT_TRUE(report->passed()) << report->FirstFailure();
  EXPECT_EQ(report->format, "safetensors");
  ASSERT_GE(report->checks.size(), 2u);
  EXPECT_EQ(report->checks[0].kind, "integrity");
  auto sha = FileSha256(path_);
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(report->checks[0].data["files"][0]["sha256"], "sha256:" + *sha);
  const Json doc = report->ToJson();
  EXPECT_EQ(doc["ok"], true);
  EXPECT_EQ(doc["checks"][0]["result"], "pass");
}

TEST_F(ValidatePathTest, SidecarDigestCatchesAFlippedByte) {
  auto sha = FileSha256(path_);
  ASSERT_TRUE(sha.ok());
  WriteBytes(path_ + ".sha256", std::vector<uint8_t>(sha->begin(), sha->end()));
  {
    auto report = ValidatePath(path_, Options());
    ASSERT_TRUE(report.ok());
    EXPECT_TRUE(report->passed()) << report->FirstFailure();
    EXPECT_NE(report->checks[0].detail.find("1 with a recorded .sha256"), std::string::npos);
  }
  std::vector<uint8_t> bytes = ReadBytes(path_);
  bytes[bytes.size() - 3] ^= 0x01;  // tensor data, not the header
  WriteBytes(path_, bytes);
  auto report = ValidatePath(path_, Options());
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->passed());
  EXPECT_EQ(report->checks[0].kind, "integrity");
  EXPECT_EQ(report->checks[0].subject, path_);
  EXPECT_NE(report->checks[0].detail.find("differs from the " + *sha), std::string::npos)
      << report->checks[0].detail;
}

TEST_F(ValidatePathTest, BrokenStructureIsAFailedSchemaCheck) {
  std::vector<uint8_t> bytes = ReadBytes(path_);
  bytes[9] = '[';  // the JSON header no longer parses as an object
  WriteBytes(path_, bytes);
  auto report = ValidatePath(path_, Options());
  ASSERT_TRUE(report.ok()) << report.error().message();
  ASSERT_EQ(report->checks.size(), 1u);
  EXPECT_EQ(report->checks[0].kind, "schema");
  EXPECT_EQ(report->checks[0].outcome, Outcome::kFail);
  // A path that does not exist is not a failed check but an error.
  EXPECT_EQ(ValidatePath(dir_.File("absent.safetensors"), Options()).error().code(),
            StatusCode::kNotFound);
}

TEST(ValidateSharded, TheIndexTotalsMustMatchTheShards) {
  TempDir dir;
  WriteOptions w;
  w.durable = false;
  w.shard_size = 512;
  ASSERT_TRUE(safetensors::Write(*F32Model(), dir.File("model.safetensors"), w).ok());
  const std::string index = dir.File("model.safetensors.index.json");
  ASSERT_TRUE(std::filesystem::exists(index));
  auto clean = ValidatePath(dir.path().string(), Options());
  ASSERT_TRUE(clean.ok()) << clean.error().message();
  EXPECT_TRUE(clean->passed()) << clean->FirstFailure();
  // The index says the model is one byte larger than its shards.
  Json doc = Json::parse(testing::ReadBytes(index));
  const uint64_t total = doc["metadata"]["total_size"].get<uint64_t>();
  doc["metadata"]["total_size"] = total + 1;
  const std::string text = doc.dump();
  WriteBytes(index, std::vector<uint8_t>(text.begin(), text.end()));
  auto report = ValidatePath(dir.path().string(), Options());
  ASSERT_TRUE(report.ok()) << report.error().message();
  EXPECT_FALSE(report->passed());
  EXPECT_EQ(report->checks[0].subject, index);
  EXPECT_EQ(report->checks[0].detail, "total_size is " + std::to_string(total + 1) +
                                          " in the index, the shards hold " +
                                          std::to_string(total));
}

TEST(ValidateTorch, ZipCrcCatchesAFlippedByteInATorchCheckpoint) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  const std::string path = dir.File("ckpt.pt");
  std::filesystem::copy_file(GoldenDir() / "torch/current_torch_state_dict.pt", path);
  auto clean = ValidatePath(path, Options());
  ASSERT_TRUE(clean.ok()) << clean.error().message();
  EXPECT_TRUE(clean->passed()) << clean->FirstFailure();
  // Flip a byte inside a stored tensor record (an entry ending in /data/0).
  uint64_t data_offset = 0;
  {
    auto file = InputFile::Open(path, IoMode::kPread);
    ASSERT_TRUE(file.ok());
    auto zip = zip::Reader::Open(std::move(*file));
    ASSERT_TRUE(zip.ok()) << zip.error().message();
    for (const zip::Entry& e : (*zip)->entries()) {
      if (e.name.ends_with("/data/0") && e.size > 0) data_offset = e.data_offset;
    }
  }
  ASSERT_GT(data_offset, 0u);
  std::vector<uint8_t> bytes = ReadBytes(path);
  bytes[data_offset] ^= 0x40;
  WriteBytes(path, bytes);
  auto report = ValidatePath(path, Options());
  ASSERT_TRUE(report.ok()) << report.error().message();
  EXPECT_FALSE(report->passed());
  EXPECT_EQ(report->checks[0].kind, "integrity");
  EXPECT_NE(report->checks[0].detail.find("CRC"), std::string::npos) << report->checks[0].detail;
}

}  // namespace
}  // namespace mp::validate
