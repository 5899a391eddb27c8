#include "modelport/formats/keras/keras.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "modelport/formats/zip/zip.h"
#include "test_util.h"

namespace mp::keras {
namespace {

namespace fs = std::filesystem;
using testing::PatternTensor;
using testing::ReadBytes;
using testing::SameModel;
using testing::TempDir;
using testing::WriteBytes;

Model Canonical() {
  Model m;
  // Given bias before kernel: the Keras 3 writer puts them in Keras's order.
  EXPECT_TRUE(m.Add(PatternTensor("fc1/bias", DType::kF32, {3}, 1)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("fc1/kernel", DType::kF32, {4, 3}, 2)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("lstm/lstm_cell/kernel", DType::kF16, {3, 8}, 3)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("flags", DType::kBool, {5}, 4)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("step", DType::kI64, {}, 5)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("emb/embeddings", DType::kBF16, {2, 2}, 6)).ok());
  return m;
}

std::unique_ptr<ModelSource> OpenOk(const std::string& path, IoMode mode = IoMode::kMmap) {
  ReadOptions options;
  options.io_mode = mode;
  auto opened = OpenModel(path, options);
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
  return opened.ok() ? std::move(*opened) : nullptr;
}

TEST(KerasH5, Keras2LayoutRoundTripsInBothIoModes) {
  TempDir dir;
  const Model m = Canonical();
  const std::string path = dir.File("w.h5");
  ASSERT_TRUE(WriteH5(m, path, {}).ok());
  for (IoMode mode : testing::kIoModes) {
    auto back = OpenOk(path, mode);
    ASSERT_NE(back, nullptr);
    EXPECT_EQ(back->format(), "keras_h5");
    EXPECT_TRUE(SameModel(m, *back, /*compare_metadata=*/false));
    EXPECT_EQ(back->metadata().value(std::string(kKerasVersionKey), ""), kDefaultKeras2Version);
    EXPECT_EQ(back->metadata().value(std::string(kBackendKey), ""), "tensorflow");
    EXPECT_EQ(back->files().files, std::vector<std::string>{path});
  }
}

TEST(KerasH5, Keras3LayoutRoundTripsNamesAndMetadata) {
  TempDir dir;
  Model m = Canonical();
  m.mutable_metadata() = Json{{"format", "pt"}, {"note", "h\xC3\xA9llo"}};
  const std::string path = dir.File("model.weights.h5");
  ASSERT_TRUE(WriteH5(m, path, {}).ok());
  auto back = OpenOk(path);
  ASSERT_NE(back, nullptr);
  EXPECT_TRUE(SameModel(m, *back));
}

TEST(KerasH5, ContiguousDataIsZeroCopy) {
  TempDir dir;
  const std::string path = dir.File("w.h5");
  ASSERT_TRUE(WriteH5(Canonical(), path, {}).ok());
  auto back = OpenOk(path);
  ASSERT_NE(back, nullptr);
  const size_t i = *back->Find("fc1/kernel");
  auto a = back->Load(i);
  auto b = back->Load(i);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->bytes().data(), b->bytes().data()) << "two loads copied the data";
}

TEST(KerasH5, PathNamedTensorsStayWhereTheyAre) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("layers/dense/vars/1", DType::kF32, {2}, 1)).ok());
  ASSERT_TRUE(m.Add(PatternTensor("layers/dense/vars/0", DType::kF32, {2, 2}, 2)).ok());
  const std::string path = dir.File("p.weights.h5");
  ASSERT_TRUE(WriteH5(m, path, {}).ok());
  auto back = OpenOk(path);
  ASSERT_NE(back, nullptr);
  EXPECT_TRUE(SameModel(m, *back, false));
  // Read in Keras's variable order: vars/0 first.
  EXPECT_EQ(back->tensors()[0].name, "layers/dense/vars/0");
}

TEST(KerasH5, RefusesDTypesItCannotCarry) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("q", DType::kF8E4M3, {4}, 1)).ok());
  const std::string path = dir.File("w.h5");
  Status s = WriteH5(m, path, {});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_EQ(s.message(), path + ": tensor 'q': Keras HDF5 cannot carry f8_e4m3");
  EXPECT_FALSE(fs::exists(path));
}

TEST(KerasH5, RefusesNamesThatAreNoHdf5Path) {
  TempDir dir;
  for (const std::string name : {"a//b", "/a", "a/./b", "a/"}) {
    Model m;
    ASSERT_TRUE(m.Add(PatternTensor(name, DType::kF32, {1}, 1)).ok());
    const std::string path = dir.File("w.h5");
    Status s = WriteH5(m, path, {});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << name;
    EXPECT_NE(s.message().find("non-empty names between '/'"), std::string::npos) << s.message();
    EXPECT_FALSE(fs::exists(path));
  }
}

TEST(KerasH5, NoOverwriteKeepsTheFile) {
  TempDir dir;
  const std::string path = dir.File("w.h5");
  WriteBytes(path, {1, 2, 3});
  WriteOptions options;
  options.no_overwrite = true;
  Status s = WriteH5(Canonical(), path, options);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadBytes(path), (std::vector<uint8_t>{1, 2, 3}));
}

TEST(KerasH5, TruncatedFileIsOneCorruptLine) {
  TempDir dir;
  const std::string path = dir.File("w.h5");
  ASSERT_TRUE(WriteH5(Canonical(), path, {}).ok());
  std::vector<uint8_t> bytes = ReadBytes(path);
  bytes.resize(bytes.size() / 2);
  const std::string cut = dir.File("cut.h5");
  WriteBytes(cut, bytes);
  for (IoMode mode : testing::kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto opened = OpenH5(cut, options);
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.error().code(), StatusCode::kCorrupt);
    EXPECT_TRUE(opened.error().message().starts_with(cut + ": not a readable HDF5 file: "))
        << opened.error().message();
    // The pread mode opens the file through libhdf5's file driver, which says why.
    if (mode == IoMode::kPread) {
      EXPECT_NE(opened.error().message().find("truncated file"), std::string::npos)
          << opened.error().message();
    }
    EXPECT_EQ(opened.error().message().find('\n'), std::string::npos);
  }
}

TEST(KerasH5, SignatureWithoutAFile) {
  TempDir dir;
  const std::string path = dir.File("x.h5");
  std::vector<uint8_t> bytes(kHdf5Signature.begin(), kHdf5Signature.end());
  bytes.resize(200, 0xff);
  WriteBytes(path, bytes);
  auto detected = DetectFormat(path);
  ASSERT_TRUE(detected.ok());
  EXPECT_EQ((*detected)->name, "keras_h5");
  auto opened = OpenH5(path, {});
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), StatusCode::kCorrupt);
  EXPECT_TRUE(opened.error().message().starts_with(path + ": not a readable HDF5 file: "))
      << opened.error().message();
  WriteBytes(path, {0x89, 'H'});
  opened = OpenH5(path, {});
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().message(), path + ": not an HDF5 file (2 bytes, no signature)");
}

TEST(KerasH5, LimitsApply) {
  TempDir dir;
  const std::string path = dir.File("w.h5");
  ASSERT_TRUE(WriteH5(Canonical(), path, {}).ok());
  ReadOptions options;
  options.max_tensors = 2;
  auto opened = OpenH5(path, options);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), StatusCode::kLimitExceeded) << opened.error().ToString();
  options = {};
  options.max_rank = 1;
  opened = OpenH5(path, options);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), StatusCode::kLimitExceeded);
  EXPECT_NE(opened.error().message().find("rank 2 exceeds the limit of 1"), std::string::npos)
      << opened.error().message();
}

TEST(KerasArchive, NeedsAConfig) {
  TempDir dir;
  const std::string path = dir.File("m.keras");
  Status s = WriteKeras(Canonical(), path, {});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_EQ(s.message(), path +
                             ": a .keras archive needs the model's Keras config, which this "
                             "memory source lacks; write the weights as .weights.h5 instead");
  EXPECT_FALSE(fs::exists(path));
}

TEST(KerasArchive, RoundTripsConfigAndCanonicalNames) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("dense/bias", DType::kF32, {3}, 1)).ok());
  ASSERT_TRUE(m.Add(PatternTensor("dense/kernel", DType::kF32, {2, 3}, 2)).ok());
  const Json config = Json::parse(
      R"({"class_name": "Sequential", "config": {"name": "s", "layers": [)"
      R"({"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense"}}]}})");
  // As text, the way a safetensors round trip carries it.
  m.mutable_metadata() = Json{{std::string(kConfigKey), config.dump()}, {"other", "x"}};
  const std::string path = dir.File("m.keras");
  ASSERT_TRUE(WriteKeras(m, path, {}).ok());
  auto detected = DetectFormat(path);
  ASSERT_TRUE(detected.ok());
  EXPECT_EQ((*detected)->name, "keras");
  auto back = OpenOk(path);
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->format(), "keras");
  EXPECT_TRUE(SameModel(m, *back, false));
  EXPECT_EQ(back->metadata()[std::string(kConfigKey)], config);
  EXPECT_EQ(back->metadata()["other"], "x");
  auto file = InputFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto zip = zip::Reader::Open(*file);
  ASSERT_TRUE(zip.ok());
  ASSERT_EQ((*zip)->entries().size(), 3u);
  EXPECT_EQ((*zip)->entries()[0].name, "metadata.json");
  EXPECT_EQ((*zip)->entries()[1].name, "config.json");
  EXPECT_EQ((*zip)->entries()[2].name, "model.weights.h5");
}

TEST(KerasArchive, MissingWeightsIsCorrupt) {
  TempDir dir;
  const std::string path = dir.File("m.keras");
  auto w = zip::Writer::Create(path);
  ASSERT_TRUE(w.ok());
  const std::string text = "{}";
  const std::span<const uint8_t> parts[] = {
      {reinterpret_cast<const uint8_t*>(text.data()), text.size()}};
  ASSERT_TRUE((*w)->AddStored("config.json", parts).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto opened = OpenKeras(path, {});
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), StatusCode::kCorrupt);
  EXPECT_EQ(opened.error().message(), path + ": archive has no model.weights.h5");
}

}  // namespace
}  // namespace mp::keras
