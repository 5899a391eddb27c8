// The conformance suite: every format in the table that can both read and write gets the same
// checks (round trip of every dtype it carries, detection by content, truncation at every byte,
// bit flips, atomic writes, sharding). Below it, the safetensors validation rules: one hostile
// file per rule, each asserting the status code and the gist of the message.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "modelport/core/dtype.h"
#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::BytesTensor;
using testing::kIoModes;
using testing::PatternTensor;
using testing::ReadBytes;
using testing::SameModel;
using testing::TempDir;
using testing::WriteBytes;

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// Names of the files in `dir` (not recursive), sorted.
std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

/// Opens `path` with `format` and loads every tensor; the first error, or the loaded model.
Result<std::unique_ptr<Model>> OpenAndLoad(const FormatDescriptor& format, const std::string& path,
                                           const ReadOptions& options) {
  MP_ASSIGN_OR_RETURN(auto source, format.open(path, options));
  return LoadAll(*source);
}

/// A model whose tensors and metadata are self-consistent: names unique, byte sizes match dtype
/// and shape, every loaded buffer holds exactly byte_size bytes.
::testing::AssertionResult Consistent(const ModelSource& model) {
  std::set<std::string> names;
  for (size_t i = 0; i < model.tensors().size(); ++i) {
    const TensorInfo& info = model.tensors()[i];
    if (!names.insert(info.name).second) {
      return ::testing::AssertionFailure() << "duplicate tensor '" << info.name << "'";
    }
    auto size = ByteSize(info.dtype, info.shape);
    if (!size || *size != info.byte_size) {
      return ::testing::AssertionFailure() << "tensor '" << info.name << "': byte_size "
                                           << info.byte_size << " disagrees with dtype x shape";
    }
    auto view = model.Load(i);
    if (!view || view->data->size() != info.byte_size) {
      return ::testing::AssertionFailure() << "tensor '" << info.name << "': bad load";
    }
  }
  if (!model.metadata().is_object()) return ::testing::AssertionFailure() << "metadata not object";
  return ::testing::AssertionSuccess();
}

/// Asserts `status` is a one-line error of `code` that does not repeat a context prefix
/// ("f: tensor 'a': tensor 'a': ...").
void ExpectCleanError(const Status& status, StatusCode code) {
  EXPECT_EQ(status.code(), code) << status.ToString();
  const std::string& m = status.message();
  EXPECT_FALSE(m.empty());
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  std::vector<std::string> parts;
  for (size_t at = 0; at <= m.size();) {
    const size_t next = std::min(m.find(": ", at), m.size());
    parts.push_back(m.substr(at, next - at));
    at = next + 2;
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    EXPECT_NE(parts[i], parts[i - 1]) << "context repeated: " << m;
  }
}

/// A ModelSource that serves `inner` but fails loading tensor `fail_at`, to prove a writer
/// leaves nothing behind when its input breaks midway.
class FailingSource final : public ModelSource {
 public:
  FailingSource(const ModelSource& inner, size_t fail_at) : inner_(inner), fail_at_(fail_at) {}
  std::string_view format() const override { return "failing"; }
  const std::vector<TensorInfo>& tensors() const override { return inner_.tensors(); }
  const Json& metadata() const override { return inner_.metadata(); }
  Result<TensorView> Load(size_t index) const override {
    if (index == fail_at_)
      return IoError("injected failure loading tensor #" + std::to_string(index));
    return inner_.Load(index);
  }

 private:
  const ModelSource& inner_;
  size_t fail_at_;
};

namespace conformance {
/// A small model (a few hundred bytes) of several dtypes for the byte-by-byte tests. `flag` is
/// the format's closest to bool (bool where it has one), `wide` its widest integer (i64 where
/// it has one; TensorFlow.js tops out at i32).
Model SmallModel(DType flag, DType wide) {
  Model m;
  EXPECT_TRUE(m.Add(PatternTensor("a.weight", DType::kF32, {3, 4}, 1)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("a.bias", DType::kF16, {4}, 2)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("b", wide, {2, 3}, 3)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("flag", flag, {5}, 4)).ok());
  m.mutable_metadata() = Json{{"format", "pt"}};
  return m;
}
Model ShardableModel(DType flag);
}  // namespace conformance

// ---------------------------------------------------------------------------------------------
// The suite over the format table.

class FormatConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto f = FindFormat(GetParam());
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    format_ = *f;
    ASSERT_FALSE(format_->extensions.empty());
  }
  /// `stem` with the format's first extension.
  std::string FileIn(const TempDir& dir, const std::string& stem) const {
    return dir.File(stem + std::string(format_->extensions.front()));
  }
  /// Writes `model` to a fresh file and returns its path (empty on failure, with a failure).
  std::string WriteSmall(const TempDir& dir, const Model& model) const {
    const std::string path = FileIn(dir, "small");
    Status s = format_->write(model, path, {});
    EXPECT_TRUE(s.ok()) << s.ToString();
    return s.ok() ? path : std::string();
  }

  /// True if the format writes a one-tensor model of `dtype` and `shape`. Formats may refuse
  /// what they cannot carry (GGUF has no bool or u8 and at most 4 dimensions), and must do so
  /// cleanly: Unsupported, one line, no file left.
  bool Carries(DType dtype, const Shape& shape) const {
    TempDir dir;
    Model probe;
    EXPECT_TRUE(probe.Add(PatternTensor("probe", dtype, shape, 7)).ok());
    const std::string path = FileIn(dir, "probe");
    Status s = format_->write(probe, path, {});
    if (s.ok()) return true;
    ExpectCleanError(s, StatusCode::kUnsupported);
    EXPECT_FALSE(fs::exists(path));
    return false;
  }
  /// The first of `candidates` the format carries.
  DType FirstCarried(std::initializer_list<DType> candidates) const {
    for (DType d : candidates) {
      if (Carries(d, {3})) return d;
    }
    ADD_FAILURE() << format_->name << " carries none of the candidate dtypes";
    return *candidates.begin();
  }
  Model SmallModel() const {
    return conformance::SmallModel(FirstCarried({DType::kBool, DType::kI8}),
                                   FirstCarried({DType::kI64, DType::kI32}));
  }
  Model ShardableModel() const {
    return conformance::ShardableModel(FirstCarried({DType::kBool, DType::kI8}));
  }

  /// `actual` holds the tensors of `expected` exactly, and every metadata key of `expected`
  /// with its value. The only keys a writer may add are those it adds to an empty model (GGUF's
  /// required general.*); for formats that add none this is exact equality.
  void ExpectSameModel(const ModelSource& expected, const ModelSource& actual) const {
    EXPECT_TRUE(SameModel(expected, actual, /*compare_metadata=*/false));
    const nlohmann::json want = nlohmann::json::parse(expected.metadata().dump());
    const nlohmann::json got = nlohmann::json::parse(actual.metadata().dump());
    for (const auto& [key, value] : want.items()) {
      ASSERT_TRUE(got.contains(key)) << "metadata key '" << key << "' lost: " << got.dump();
      EXPECT_EQ(got[key], value) << "metadata key '" << key << "'";
    }
    const std::set<std::string> own = WriterOwnKeys();
    for (const auto& [key, value] : got.items()) {
      EXPECT_TRUE(want.contains(key) || own.count(key))
          << "metadata key '" << key << "' appeared from nowhere: " << got.dump();
    }
  }
  /// Metadata keys the writer adds on its own: those of an empty model written and read back.
  std::set<std::string> WriterOwnKeys() const {
    TempDir dir;
    const std::string path = FileIn(dir, "baseline");
    std::set<std::string> keys;
    if (!format_->write(Model(), path, {}).ok()) return keys;
    auto opened = OpenModel(path);
    if (!opened.ok()) return keys;
    for (const auto& [key, value] : (*opened)->metadata().items()) keys.insert(key);
    return keys;
  }

  const FormatDescriptor* format_ = nullptr;
};

std::vector<std::string> ReadWriteFormats() {
  std::vector<std::string> names;
  for (const auto& f : Formats()) {
    // .keras archives need a model config, which these generic models lack (keras_test.cc
    // covers that writer; its HDF5 part is keras_h5, which runs here).
    if (f.caps.read && f.caps.write && f.name != "keras") names.emplace_back(f.name);
  }
  return names;
}

TEST_P(FormatConformance, RoundTripEveryDTypeAndEdgeShape) {
  TempDir dir;
  Model model;
  uint32_t seed = 100;
  for (const DTypeTraits& t : AllDTypes()) {
    // Quantized dtypes need whole blocks.
    Shape shape = t.block_elems > 1 ? Shape{2, t.block_elems} : Shape{3, 4};
    TensorView tensor = PatternTensor("dtype." + std::string(t.name), t.dtype, shape, seed++);
    Model probe;
    ASSERT_TRUE(probe.Add(tensor).ok());
    const std::string probe_path = FileIn(dir, "probe_" + std::string(t.name));
    Status s = format_->write(probe, probe_path, {});
    if (!s.ok()) {
      // A format may refuse a dtype it cannot carry, cleanly and without leaving a file.
      ExpectCleanError(s, StatusCode::kUnsupported);
      EXPECT_FALSE(fs::exists(probe_path));
      if (format_->name == "safetensors") {
        EXPECT_TRUE(t.safetensors_name.empty()) << "safetensors can carry " << t.name;
      }
      continue;
    }
    ASSERT_TRUE(model.Add(tensor).ok());
  }
  ASSERT_GE(model.tensors().size(), 1u);
  ASSERT_TRUE(model.Add(PatternTensor("scalar", DType::kF32, Shape{}, 1)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("empty", DType::kF32, {0, 3}, 2)).ok());
  const Shape rank5{2, 1, 3, 1, 2};
  const Shape high_rank = Carries(DType::kF32, rank5) ? rank5 : Shape{2, 3, 1, 2};
  ASSERT_TRUE(model.Add(PatternTensor("rank5", DType::kF32, high_rank, 3)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("unicode.名前.weight", DType::kF32, {2}, 4)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("emoji.\xF0\x9F\x99\x82", DType::kI32, {1}, 5)).ok());
  ASSERT_TRUE(model
                  .Add(PatternTensor("quote\"back\\slash\ttab",
                                     FirstCarried({DType::kU8, DType::kI8}), {3}, 6))
                  .ok());
  model.mutable_metadata() =
      Json{{"format", "pt"}, {"note", "h\xC3\xA9llo \"quoted\" \\ 名前"}, {"empty", ""}};

  const std::string path = FileIn(dir, "model");
  Status s = format_->write(model, path, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (IoMode mode : kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto opened = OpenModel(path, options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    EXPECT_EQ((*opened)->format(), format_->name);
    ExpectSameModel(model, **opened);
  }
}

TEST_P(FormatConformance, EmptyModelRoundTrips) {
  TempDir dir;
  Model model;
  const std::string path = FileIn(dir, "empty");
  ASSERT_TRUE(format_->write(model, path, {}).ok());
  auto opened = OpenModel(path);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  ExpectSameModel(model, **opened);
}

TEST_P(FormatConformance, DetectsByContentWhateverTheExtension) {
  TempDir dir;
  const std::string path = WriteSmall(dir, SmallModel());
  ASSERT_FALSE(path.empty());
  auto detected = DetectFormat(path);
  ASSERT_TRUE(detected.ok()) << detected.status().ToString();
  EXPECT_EQ((*detected)->name, format_->name);
  // A model of an index plus data files (a TF bundle) is found from the index's name: a copy
  // of the index alone is no model.
  auto written = OpenModel(path);
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  if (!(*written)->files().index.empty()) {
    GTEST_SKIP() << format_->name << " keeps its data beside the index, found by name";
  }

  for (const std::string name : {"weights.txt", "weights", "weights.bin.tmp"}) {
    const std::string renamed = dir.File(name);
    fs::copy_file(path, renamed);
    auto by_content = DetectFormat(renamed);
    ASSERT_TRUE(by_content.ok()) << by_content.status().ToString();
    EXPECT_EQ((*by_content)->name, format_->name) << name;
    auto opened = OpenModel(renamed);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    ExpectSameModel(SmallModel(), **opened);
  }
}

TEST_P(FormatConformance, EveryTruncationFailsCleanly) {
  TempDir dir;
  const std::string path = WriteSmall(dir, SmallModel());
  ASSERT_FALSE(path.empty());
  const std::vector<uint8_t> whole = ReadBytes(path);
  ASSERT_GT(whole.size(), 100u);
  ASSERT_LT(whole.size(), 4096u) << "keep this file small: the test opens every prefix";
  const std::string cut = FileIn(dir, "cut");
  for (size_t len = 0; len < whole.size(); ++len) {
    WriteBytes(cut, std::vector<uint8_t>(whole.begin(), whole.begin() + len));
    for (IoMode mode : kIoModes) {
      ReadOptions options;
      options.io_mode = mode;
      auto loaded = OpenAndLoad(*format_, cut, options);
      ASSERT_FALSE(loaded.ok()) << "a " << len << "-byte prefix of a " << whole.size()
                                << "-byte file opened and loaded";
      ExpectCleanError(loaded.status(), loaded.status().code());
      EXPECT_NE(loaded.status().code(), StatusCode::kInternal) << loaded.status().ToString();
      if (HasFailure()) return;  // one report is enough
    }
  }
}

TEST_P(FormatConformance, BitFlipsFailCleanlyOrStayConsistent) {
  TempDir dir;
  const std::string path = WriteSmall(dir, SmallModel());
  ASSERT_FALSE(path.empty());
  const std::vector<uint8_t> whole = ReadBytes(path);
  const std::string flipped_path = FileIn(dir, "flipped");
  // Every byte of the file (header region included), three different flips each.
  for (size_t i = 0; i < whole.size(); ++i) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x20}, uint8_t{0x80}}) {
      std::vector<uint8_t> flipped = whole;
      flipped[i] ^= mask;
      WriteBytes(flipped_path, flipped);
      ReadOptions options;
      options.io_mode = (i % 2) ? IoMode::kMmap : IoMode::kPread;
      auto loaded = OpenAndLoad(*format_, flipped_path, options);
      if (loaded.ok()) {
        EXPECT_TRUE(Consistent(**loaded)) << "byte " << i << " ^ " << int{mask};
      } else {
        const StatusCode code = loaded.status().code();
        // Unsafe too: a flip can turn a pickle's allow-listed global into one that is not, or
        // make zip entry names collide.
        EXPECT_TRUE(code == StatusCode::kCorrupt || code == StatusCode::kUnsupported ||
                    code == StatusCode::kLimitExceeded || code == StatusCode::kInvalidArgument ||
                    code == StatusCode::kUnsafe)
            << "byte " << i << " ^ " << int{mask} << ": " << loaded.status().ToString();
        ExpectCleanError(loaded.status(), code);
      }
      if (HasFailure()) return;
    }
  }
}

TEST_P(FormatConformance, WriteIntoMissingFolderFailsWithIoError) {
  TempDir dir;
  const std::string path = dir.File("no/such/folder/m" + std::string(format_->extensions[0]));
  Status s = format_->write(SmallModel(), path, {});
  ExpectCleanError(s, StatusCode::kIoError);
  EXPECT_TRUE(ListDir(dir.path().string()).empty());
}

TEST_P(FormatConformance, WriteUnderARegularFileFailsWithIoError) {
  TempDir dir;
  WriteBytes(dir.File("plain"), {1, 2, 3});
  const std::string path = dir.File("plain/m" + std::string(format_->extensions[0]));
  Status s = format_->write(SmallModel(), path, {});
  ExpectCleanError(s, StatusCode::kIoError);
  EXPECT_EQ(ListDir(dir.path().string()), std::vector<std::string>{"plain"});
}

TEST_P(FormatConformance, WriteIntoReadOnlyFolderFailsWithIoError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores folder permissions";
  TempDir dir;
  const std::string ro = dir.File("ro");
  fs::create_directory(ro);
  ::chmod(ro.c_str(), 0555);
  Status s = format_->write(SmallModel(), ro + "/m" + std::string(format_->extensions[0]), {});
  ::chmod(ro.c_str(), 0755);
  ExpectCleanError(s, StatusCode::kIoError);
  EXPECT_TRUE(ListDir(ro).empty());
}

TEST_P(FormatConformance, SourceFailingMidwayLeavesNoFile) {
  const Model model = SmallModel();
  for (size_t k = 0; k < model.tensors().size(); ++k) {
    TempDir dir;
    const std::string path = FileIn(dir, "out");
    Status s = format_->write(FailingSource(model, k), path, {});
    ExpectCleanError(s, StatusCode::kIoError);
    EXPECT_NE(s.message().find("injected failure"), std::string::npos) << s.message();
    EXPECT_TRUE(ListDir(dir.path().string()).empty()) << "failing tensor #" << k;
  }
}

TEST_P(FormatConformance, FailedWriteKeepsThePreviousFile) {
  TempDir dir;
  const std::string path = WriteSmall(dir, SmallModel());
  ASSERT_FALSE(path.empty());
  const std::vector<uint8_t> before = ReadBytes(path);
  const std::vector<std::string> files_before = ListDir(dir.path().string());
  Model other;
  ASSERT_TRUE(other.Add(PatternTensor("x", DType::kF32, {64}, 9)).ok());
  ASSERT_TRUE(other.Add(PatternTensor("y", DType::kF32, {64}, 10)).ok());
  Status s = format_->write(FailingSource(other, 1), path, {});
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(ReadBytes(path), before);
  EXPECT_EQ(ListDir(dir.path().string()), files_before);
}

TEST_P(FormatConformance, NoOverwriteRefusesAnExistingFile) {
  TempDir dir;
  const std::string path = WriteSmall(dir, SmallModel());
  ASSERT_FALSE(path.empty());
  const std::vector<uint8_t> before = ReadBytes(path);
  Model other;
  ASSERT_TRUE(other.Add(PatternTensor("x", DType::kF32, {4}, 9)).ok());
  WriteOptions options;
  options.no_overwrite = true;
  ExpectCleanError(format_->write(other, path, options), StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadBytes(path), before);
}

/// Eight f32 tensors of 64 bytes plus one of 512 bytes: with a 200-byte cap that makes several
/// shards and one oversized tensor that needs a shard of its own.
Model conformance::ShardableModel(DType flag) {
  Model m;
  for (int i = 0; i < 8; ++i) {
    EXPECT_TRUE(m.Add(PatternTensor("layer." + std::to_string(i) + ".w", DType::kF32, {4, 4},
                                    static_cast<uint32_t>(20 + i)))
                    .ok());
  }
  EXPECT_TRUE(m.Add(PatternTensor("big", DType::kF32, {128}, 40)).ok());
  EXPECT_TRUE(m.Add(PatternTensor("tiny.bool", flag, {3}, 41)).ok());
  m.mutable_metadata() = Json{{"format", "pt"}};
  return m;
}

/// Checks the Hugging Face layout of a sharded safetensors folder written from `model`.
void CheckHuggingFaceShards(const std::string& folder, const Model& model, uint64_t cap) {
  const std::vector<std::string> files = ListDir(folder);
  const std::regex shard_name(R"(model-(\d{5})-of-(\d{5})\.safetensors)");
  std::vector<std::string> shards;
  for (const auto& f : files) {
    if (f == safetensors::kIndexName) continue;
    std::smatch m;
    ASSERT_TRUE(std::regex_match(f, m, shard_name)) << "unexpected file " << f;
    shards.push_back(f);
  }
  ASSERT_GE(shards.size(), 3u);
  ASSERT_EQ(files.size(), shards.size() + 1) << "no index beside the shards";
  char expect[64];
  for (size_t k = 0; k < shards.size(); ++k) {
    std::snprintf(expect, sizeof expect, "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    EXPECT_EQ(shards[k], expect);
  }

  const std::vector<uint8_t> index_bytes =
      ReadBytes(folder + "/" + std::string(safetensors::kIndexName));
  const nlohmann::json index =
      nlohmann::json::parse(index_bytes.begin(), index_bytes.end(), nullptr, false);
  ASSERT_TRUE(index.is_object());
  ASSERT_TRUE(index.contains("metadata") && index["metadata"].contains("total_size"));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), *model.TotalBytes());
  const nlohmann::json& weight_map = index.at("weight_map");
  ASSERT_EQ(weight_map.size(), model.tensors().size());
  for (const TensorInfo& t : model.tensors()) {
    ASSERT_TRUE(weight_map.contains(t.name)) << t.name;
    EXPECT_NE(std::find(shards.begin(), shards.end(), weight_map[t.name].get<std::string>()),
              shards.end());
  }
  // Each shard is a valid file on its own holding exactly what the index maps to it, within the
  // cap unless it holds a single tensor.
  for (const std::string& shard : shards) {
    auto opened = safetensors::Open(folder + "/" + shard, {});
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    std::set<std::string> in_shard, mapped;
    for (const auto& t : (*opened)->tensors()) in_shard.insert(t.name);
    for (const auto& [name, file] : weight_map.items()) {
      if (file == shard) mapped.insert(name);
    }
    EXPECT_EQ(in_shard, mapped) << shard;
    auto bytes = (*opened)->TotalBytes();
    ASSERT_TRUE(bytes.ok());
    if (in_shard.size() > 1) {
      EXPECT_LE(*bytes, cap) << shard;
    }
  }
  const std::string big_shard = weight_map["big"].get<std::string>();
  for (const auto& [name, file] : weight_map.items()) {
    if (name != "big") {
      EXPECT_NE(file, big_shard) << name << " shares the oversized shard";
    }
  }
}

TEST_P(FormatConformance, ShardedRoundTrip) {
  if (!format_->caps.sharded) GTEST_SKIP() << format_->name << " has no sharded layout";
  const Model model = ShardableModel();
  constexpr uint64_t kCap = 200;
  WriteOptions options;
  options.shard_size = kCap;

  TempDir dir;
  const std::string folder = dir.File("sharded");
  fs::create_directory(folder);
  Status s = format_->write(model, folder, options);
  ASSERT_TRUE(s.ok()) << s.ToString();
  if (format_->name == "safetensors") CheckHuggingFaceShards(folder, model, kCap);

  auto detected = DetectFormat(folder);
  ASSERT_TRUE(detected.ok()) << detected.status().ToString();
  EXPECT_EQ((*detected)->name, format_->name);
  for (IoMode mode : kIoModes) {
    ReadOptions ro;
    ro.io_mode = mode;
    auto from_folder = OpenModel(folder, ro);
    ASSERT_TRUE(from_folder.ok()) << from_folder.status().ToString();
    ExpectSameModel(model, **from_folder);
  }
  if (format_->name == "safetensors") {
    const std::string index = folder + "/" + std::string(safetensors::kIndexName);
    auto from_index = OpenModel(index);
    ASSERT_TRUE(from_index.ok()) << from_index.status().ToString();
    ExpectSameModel(model, **from_index);

    // Writing to the index path instead of the folder gives the same layout.
    const std::string folder2 = dir.File("by_index");
    fs::create_directory(folder2);
    s = format_->write(model, folder2 + "/" + std::string(safetensors::kIndexName), options);
    ASSERT_TRUE(s.ok()) << s.ToString();
    CheckHuggingFaceShards(folder2, model, kCap);
    auto reopened = OpenModel(folder2);
    ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
    ExpectSameModel(model, **reopened);
  }
}

TEST_P(FormatConformance, DamagedOrMissingShardFailsCleanly) {
  if (!format_->caps.sharded) GTEST_SKIP() << format_->name << " has no sharded layout";
  const Model model = ShardableModel();
  WriteOptions options;
  options.shard_size = 200;
  TempDir dir;
  const std::string good = dir.File("good");
  fs::create_directory(good);
  ASSERT_TRUE(format_->write(model, good, options).ok());
  const std::vector<std::string> files = ListDir(good);
  ASSERT_GE(files.size(), 3u);
  for (const std::string& damaged : files) {
    for (bool remove : {false, true}) {
      const bool is_index = damaged.find("index") != std::string::npos;
      if (remove && is_index) continue;  // shards without their index may be a model of their own
      SCOPED_TRACE((remove ? "removed " : "cut in half: ") + damaged);
      const std::string copy = dir.File("copy");
      fs::remove_all(copy);
      fs::copy(good, copy);
      const std::string target = copy + "/" + damaged;
      if (remove) {
        fs::remove(target);
      } else {
        fs::resize_file(target, fs::file_size(target) / 2);
      }
      auto loaded = OpenAndLoad(*format_, copy, {});
      ASSERT_FALSE(loaded.ok()) << "a damaged sharded model opened and loaded";
      const StatusCode code = loaded.status().code();
      EXPECT_TRUE(code == StatusCode::kCorrupt || code == StatusCode::kNotFound ||
                  code == StatusCode::kUnsupported)
          << loaded.status().ToString();
      ExpectCleanError(loaded.status(), code);
      EXPECT_NE(loaded.status().message().find(damaged), std::string::npos)
          << "message does not name the damaged file: " << loaded.status().message();
    }
  }
}

TEST_P(FormatConformance, ShardedWriteFailingMidwayLeavesNothing) {
  if (!format_->caps.sharded) GTEST_SKIP() << format_->name << " has no sharded layout";
  const Model model = ShardableModel();
  WriteOptions options;
  options.shard_size = 200;
  for (size_t k : {size_t{0}, size_t{4}, model.tensors().size() - 1}) {
    TempDir dir;
    Status s = format_->write(FailingSource(model, k), dir.path().string(), options);
    ExpectCleanError(s, StatusCode::kIoError);
    EXPECT_TRUE(ListDir(dir.path().string()).empty()) << "failing tensor #" << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, FormatConformance, ::testing::ValuesIn(ReadWriteFormats()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// ---------------------------------------------------------------------------------------------
// safetensors validation rules. Each test hand-assembles a hostile file: u64 LE header length,
// header text, data bytes.

std::vector<uint8_t> StFile(std::string_view header, const std::vector<uint8_t>& data,
                            std::optional<uint64_t> declared_length = std::nullopt) {
  const uint64_t n = declared_length.value_or(header.size());
  std::vector<uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<uint8_t> Iota(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 1);
  return v;
}

class SafetensorsRules : public ::testing::Test {
 protected:
  /// Writes `bytes` as bad.safetensors and returns its path.
  std::string Put(const std::vector<uint8_t>& bytes, const std::string& name = "bad.safetensors") {
    const std::string path = dir_.File(name);
    WriteBytes(path, bytes);
    return path;
  }
  /// Opening `path` must fail (in both I/O modes, at open time: these are header rules) with
  /// `code`, a one-line message naming the file and containing every phrase in `phrases`
  /// (case-insensitive).
  void ExpectRejected(const std::string& path, StatusCode code,
                      std::initializer_list<std::string_view> phrases, ReadOptions options = {}) {
    for (IoMode mode : kIoModes) {
      options.io_mode = mode;
      auto opened = safetensors::Open(path, options);
      ASSERT_FALSE(opened.ok()) << path << " opened";
      const Status& s = opened.error();
      ExpectCleanError(s, code);
      RecordProperty("message", s.ToString());
      const std::string msg = Lower(s.message());
      EXPECT_NE(msg.find(Lower(fs::path(path).filename().string())), std::string::npos)
          << "message does not name the file: " << s.message();
      for (std::string_view p : phrases) {
        EXPECT_NE(msg.find(Lower(std::string(p))), std::string::npos)
            << "message lacks '" << p << "': " << s.message();
      }
    }
  }
  /// The file opens and every tensor loads.
  std::unique_ptr<Model> ExpectAccepted(const std::string& path) {
    std::unique_ptr<Model> last;
    for (IoMode mode : kIoModes) {
      ReadOptions options;
      options.io_mode = mode;
      auto opened = safetensors::Open(path, options);
      EXPECT_TRUE(opened.ok()) << opened.status().ToString();
      if (!opened.ok()) return nullptr;
      auto loaded = LoadAll(**opened);
      EXPECT_TRUE(loaded.ok()) << loaded.status().ToString();
      if (!loaded.ok()) return nullptr;
      last = std::move(*loaded);
    }
    return last;
  }

  TempDir dir_;
};

constexpr char kGoodHeader[] = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})";

TEST_F(SafetensorsRules, GoodFileIsAccepted) {
  auto model = ExpectAccepted(Put(StFile(kGoodHeader, Iota(12))));
  ASSERT_NE(model, nullptr);
  ASSERT_EQ(model->tensors().size(), 2u);
  auto a = model->Load(*model->Find("a"));
  ASSERT_TRUE(a.ok());
  const std::vector<uint8_t> want = Iota(12);
  EXPECT_TRUE(std::equal(a->bytes().begin(), a->bytes().end(), want.begin(), want.begin() + 8));
}

TEST_F(SafetensorsRules, FileShorterThanLengthPrefix) {
  ExpectRejected(Put({8, 0, 0}), StatusCode::kCorrupt, {"8"});
}

TEST_F(SafetensorsRules, HeaderLengthAboveConfiguredCap) {
  ReadOptions options;
  options.max_header_bytes = 64;
  const std::string path = Put(StFile(kGoodHeader, Iota(12)));
  ExpectRejected(path, StatusCode::kLimitExceeded, {"header", "64"}, options);
  // The same file passes with the default cap.
  ExpectAccepted(path);
}

TEST_F(SafetensorsRules, HugeHeaderLength) {
  ExpectRejected(Put(StFile(kGoodHeader, Iota(12), uint64_t{1} << 63)), StatusCode::kLimitExceeded,
                 {"header"});
  ExpectRejected(Put(StFile(kGoodHeader, Iota(12), std::numeric_limits<uint64_t>::max())),
                 StatusCode::kLimitExceeded, {"header"});
}

TEST_F(SafetensorsRules, HeaderLengthPastEndOfFile) {
  const std::string header = kGoodHeader;
  ExpectRejected(Put(StFile(header, {}, header.size() + 100)), StatusCode::kCorrupt,
                 {"header", "file"});
}

TEST_F(SafetensorsRules, HeaderNotStartingWithBrace) {
  ExpectRejected(Put(StFile(R"([{"a":1}]   )", {})), StatusCode::kCorrupt, {"'{'"});
  ExpectRejected(Put(StFile(std::string(" ") + kGoodHeader, Iota(12))), StatusCode::kCorrupt,
                 {"'{'"});
}

TEST_F(SafetensorsRules, HeaderIsNotValidJson) {
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"F32",)", {})), StatusCode::kCorrupt, {"json"});
  // Trailing garbage after the object (padding must be spaces).
  ExpectRejected(Put(StFile(std::string(kGoodHeader) + "  x", Iota(12))), StatusCode::kCorrupt,
                 {"json"});
}

TEST_F(SafetensorsRules, HeaderIsNotValidUtf8) {
  ExpectRejected(
      Put(StFile("{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", {7})),
      StatusCode::kCorrupt, {"utf-8"});
  // An overlong encoding of '/' is invalid UTF-8 too.
  ExpectRejected(
      Put(StFile("{\"a\xc0\xaf\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", {7})),
      StatusCode::kCorrupt, {"utf-8"});
}

TEST_F(SafetensorsRules, EntryIsNotAnObject) {
  ExpectRejected(Put(StFile(R"({"a":[0,4]})", Iota(4))), StatusCode::kCorrupt, {"'a'"});
}

TEST_F(SafetensorsRules, EntryMissingDtype) {
  ExpectRejected(Put(StFile(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", Iota(4))),
                 StatusCode::kCorrupt, {"'a'", "dtype"});
}

TEST_F(SafetensorsRules, EntryMissingShape) {
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", Iota(4))),
                 StatusCode::kCorrupt, {"'a'", "shape"});
}

TEST_F(SafetensorsRules, EntryMissingDataOffsets) {
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"F32","shape":[1]}})", Iota(4))), StatusCode::kCorrupt,
                 {"'a'", "data_offsets"});
}

TEST_F(SafetensorsRules, DataOffsetsNotAPairOfIntegers) {
  ExpectRejected(
      Put(StFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", Iota(8))),
      StatusCode::kCorrupt, {"'a'", "data_offsets"});
  ExpectRejected(
      Put(StFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})", Iota(4))),
      StatusCode::kCorrupt, {"'a'", "data_offsets"});
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", Iota(4))),
                 StatusCode::kCorrupt, {"'a'", "data_offsets"});
}

TEST_F(SafetensorsRules, UnknownDtypeIsCorrupt) {
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", Iota(4))),
                 StatusCode::kCorrupt, {"'a'", "F33"});
  ExpectRejected(Put(StFile(R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", Iota(4))),
                 StatusCode::kCorrupt, {"'a'", "dtype"});
}

TEST_F(SafetensorsRules, KnownButUnsupportedDtype) {
  ExpectRejected(
      Put(StFile(R"({"a":{"dtype":"F8_E8M0","shape":[4],"data_offsets":[0,4]}})", Iota(4))),
      StatusCode::kUnsupported, {"'a'", "F8_E8M0"});
}

TEST_F(SafetensorsRules, NegativeDimension) {
  ExpectRejected(
      Put(StFile(R"({"a":{"dtype":"U8","shape":[-1,4],"data_offsets":[0,4]}})", Iota(4))),
      StatusCode::kCorrupt, {"'a'", "shape"});
}

TEST_F(SafetensorsRules, NonIntegerDimension) {
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", Iota(1))),
                 StatusCode::kCorrupt, {"'a'", "shape"});
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"U8","shape":["2"],"data_offsets":[0,2]}})", Iota(2))),
                 StatusCode::kCorrupt, {"'a'", "shape"});
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"U8","shape":4,"data_offsets":[0,4]}})", Iota(4))),
                 StatusCode::kCorrupt, {"'a'", "shape"});
  // Too big for any integer type: JSON parsers turn it into a float.
  ExpectRejected(
      Put(StFile(R"({"a":{"dtype":"U8","shape":[1e30],"data_offsets":[0,4]}})", Iota(4))),
      StatusCode::kCorrupt, {"'a'", "shape"});
}

TEST_F(SafetensorsRules, ShapeProductOverflows) {
  ExpectRejected(
      Put(StFile(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,2],"data_offsets":[0,0]}})",
                 {})),
      StatusCode::kLimitExceeded, {"'a'"});
  // Elements fit in 64 bits, bytes do not.
  ExpectRejected(
      Put(StFile(R"({"a":{"dtype":"F32","shape":[9223372036854775807],"data_offsets":[0,0]}})",
                 {})),
      StatusCode::kLimitExceeded, {"'a'"});
}

TEST_F(SafetensorsRules, SpanDisagreesWithShapeTimesDtype) {
  ExpectRejected(
      Put(StFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", Iota(12))),
      StatusCode::kCorrupt, {"'a'", "12", "8"});
}

TEST_F(SafetensorsRules, OffsetsNotStartingAtZero) {
  ExpectRejected(
      Put(StFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", Iota(12))),
      StatusCode::kCorrupt, {"'a'"});
}

TEST_F(SafetensorsRules, GapBetweenTensors) {
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                            Iota(20))),
                 StatusCode::kCorrupt, {"'b'"});
}

TEST_F(SafetensorsRules, OverlappingTensors) {
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            Iota(12))),
                 StatusCode::kCorrupt, {"overlap"});
  // Two tensors sharing exactly the same bytes are an overlap too.
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                            Iota(8))),
                 StatusCode::kCorrupt, {"overlap"});
}

TEST_F(SafetensorsRules, TrailingBytesAfterData) {
  ExpectRejected(Put(StFile(kGoodHeader, Iota(16))), StatusCode::kCorrupt, {"16", "12"});
}

TEST_F(SafetensorsRules, DataEndsBeforeOffsets) {
  ExpectRejected(Put(StFile(kGoodHeader, Iota(10))), StatusCode::kCorrupt, {"'b'", "12", "10"});
}

TEST_F(SafetensorsRules, EndBeforeBegin) {
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                            R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}})",
                            Iota(4))),
                 StatusCode::kCorrupt, {"'b'"});
}

TEST_F(SafetensorsRules, DuplicateTensorNames) {
  ExpectRejected(Put(StFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("a":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
                            Iota(12))),
                 StatusCode::kCorrupt, {"duplicate", "'a'"});
}

TEST_F(SafetensorsRules, DuplicateMetadataKeys) {
  ExpectRejected(Put(StFile(R"({"__metadata__":{"k":"1","k":"2"},)"
                            R"("a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                            Iota(1))),
                 StatusCode::kCorrupt, {"duplicate", "k"});
}

TEST_F(SafetensorsRules, MetadataValueNotAString) {
  ExpectRejected(Put(StFile(R"({"__metadata__":{"epoch":3},)"
                            R"("a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                            Iota(1))),
                 StatusCode::kCorrupt, {"__metadata__", "epoch"});
}

TEST_F(SafetensorsRules, MetadataNotAnObject) {
  ExpectRejected(Put(StFile(R"({"__metadata__":"pt",)"
                            R"("a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                            Iota(1))),
                 StatusCode::kCorrupt, {"__metadata__"});
}

// The reference reader (safetensors/src/tensor.rs TensorInfo) derives Deserialize without
// deny_unknown_fields, so an entry with extra keys is valid there; modelport accepts it too.
TEST_F(SafetensorsRules, ExtraEntryFieldsAreIgnored) {
  auto model = ExpectAccepted(Put(StFile(
      R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3],"quant":{"x":1},"stride":[1]}})",
      Iota(3))));
  ASSERT_NE(model, nullptr);
  ASSERT_EQ(model->tensors().size(), 1u);
  EXPECT_EQ(model->tensors()[0].shape, (Shape{3}));
}

TEST_F(SafetensorsRules, UnsortedEntriesAreFine) {
  // Writers other than the reference may list entries in any order.
  auto model = ExpectAccepted(Put(StFile(R"({"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]},)"
                                         R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                         Iota(12))));
  ASSERT_NE(model, nullptr);
  auto b = model->Load(*model->Find("b"));
  ASSERT_TRUE(b.ok());
  const std::vector<uint8_t> want = Iota(12);
  EXPECT_TRUE(std::equal(b->bytes().begin(), b->bytes().end(), want.begin() + 8, want.end()));
}

TEST_F(SafetensorsRules, MisalignedDataIsReadExactlyAndHandedOutAligned) {
  // An odd header length and a 1-byte tensor first put every later tensor at an odd address.
  const float f32[3] = {1.5f, -0.0f, 3.4028235e38f};
  const double f64[2] = {-2.25, 1e-300};
  std::vector<uint8_t> data = {0x5A};
  const auto append = [&data](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    data.insert(data.end(), b, b + n);
  };
  append(f32, sizeof f32);
  append(f64, sizeof f64);
  std::string header = R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("f":{"dtype":"F32","shape":[3],"data_offsets":[1,13]},)"
                       R"("d":{"dtype":"F64","shape":[2],"data_offsets":[13,29]}})";
  if (header.size() % 2 == 0) header += ' ';
  const std::string path = Put(StFile(header, data));
  for (IoMode mode : kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto opened = safetensors::Open(path, options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    auto f = (*opened)->Load(*(*opened)->Find("f"));
    auto d = (*opened)->Load(*(*opened)->Find("d"));
    ASSERT_TRUE(f.ok() && d.ok());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f->bytes().data()) % alignof(float), 0u)
        << "misaligned f32 view handed out";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(d->bytes().data()) % alignof(double), 0u)
        << "misaligned f64 view handed out";
    ASSERT_EQ(f->bytes().size(), sizeof f32);
    ASSERT_EQ(d->bytes().size(), sizeof f64);
    EXPECT_EQ(std::memcmp(f->bytes().data(), f32, sizeof f32), 0);
    EXPECT_EQ(std::memcmp(d->bytes().data(), f64, sizeof f64), 0);
    // Read through the (now aligned) pointer: UBSan would flag a misaligned one.
    if (reinterpret_cast<uintptr_t>(f->bytes().data()) % alignof(float) == 0) {
      const float* values = reinterpret_cast<const float*>(f->bytes().data());
      EXPECT_EQ(values[0], 1.5f);
      EXPECT_TRUE(std::signbit(values[1]));
      EXPECT_EQ(values[2], 3.4028235e38f);
    }
  }
}

// ---- sharded index rules ----

class SafetensorsIndexRules : public SafetensorsRules {
 protected:
  /// Writes a shard "s1.safetensors" holding a (F32 [2]) and "s2.safetensors" holding b (U8 [4]).
  void SetUp() override {
    Put(StFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Iota(8)),
        "s1.safetensors");
    Put(StFile(R"({"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", Iota(4)),
        "s2.safetensors");
  }
  std::string PutIndex(const std::string& weight_map) {
    const std::string text = R"({"metadata":{"total_size":12},"weight_map":)" + weight_map + "}";
    return Put(std::vector<uint8_t>(text.begin(), text.end()),
               std::string(safetensors::kIndexName));
  }
  /// Opening the index path and the folder must both fail with `code`; the message must contain
  /// every phrase.
  void ExpectIndexRejected(const std::string& index, StatusCode code,
                           std::initializer_list<std::string_view> phrases) {
    for (const std::string& path : {index, dir_.path().string()}) {
      auto opened = safetensors::Open(path, {});
      Status s = opened.ok() ? LoadAll(**opened).status() : opened.error();
      ASSERT_FALSE(s.ok()) << path << " opened and loaded";
      RecordProperty("message", s.ToString());
      ExpectCleanError(s, code);
      for (std::string_view p : phrases) {
        EXPECT_NE(Lower(s.message()).find(Lower(std::string(p))), std::string::npos)
            << "message lacks '" << p << "': " << s.message();
      }
    }
  }
};

TEST_F(SafetensorsIndexRules, GoodIndexIsAccepted) {
  const std::string index = PutIndex(R"({"a":"s1.safetensors","b":"s2.safetensors"})");
  for (const std::string& path : {index, dir_.path().string()}) {
    auto opened = OpenModel(path);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    auto loaded = LoadAll(**opened);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    ASSERT_EQ((*loaded)->tensors().size(), 2u);
    EXPECT_TRUE(Consistent(**loaded));
  }
}

TEST_F(SafetensorsIndexRules, ParentDirectoryEscapeIsUnsafe) {
  ExpectIndexRejected(PutIndex(R"({"a":"../s1.safetensors","b":"s2.safetensors"})"),
                      StatusCode::kUnsafe, {"../s1.safetensors"});
}

TEST_F(SafetensorsIndexRules, SubfolderPathIsUnsafe) {
  fs::create_directory(dir_.File("sub"));
  fs::copy_file(dir_.File("s1.safetensors"), dir_.File("sub/s1.safetensors"));
  ExpectIndexRejected(PutIndex(R"({"a":"sub/s1.safetensors","b":"s2.safetensors"})"),
                      StatusCode::kUnsafe, {"sub/s1.safetensors"});
}

TEST_F(SafetensorsIndexRules, AbsolutePathIsUnsafe) {
  const std::string abs = dir_.File("s1.safetensors");
  ExpectIndexRejected(PutIndex(R"({"a":")" + abs + R"(","b":"s2.safetensors"})"),
                      StatusCode::kUnsafe, {abs});
}

TEST_F(SafetensorsIndexRules, MissingShardIsNotFound) {
  ExpectIndexRejected(PutIndex(R"({"a":"s1.safetensors","b":"s3.safetensors"})"),
                      StatusCode::kNotFound, {"s3.safetensors"});
}

TEST_F(SafetensorsIndexRules, IndexNamesATensorTheShardLacks) {
  ExpectIndexRejected(
      PutIndex(R"({"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"})"),
      StatusCode::kCorrupt, {"'c'", "s2.safetensors"});
}

// A shard holding a tensor the index does not list (transformers would silently skip it) means
// index and shards disagree; modelport refuses rather than guess which one is right.
TEST_F(SafetensorsIndexRules, ShardHoldsATensorTheIndexOmits) {
  Put(StFile(R"({"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
             R"("extra":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
             Iota(6)),
      "s2.safetensors");
  ExpectIndexRejected(PutIndex(R"({"a":"s1.safetensors","b":"s2.safetensors"})"),
                      StatusCode::kCorrupt, {"'extra'", "s2.safetensors"});
}

TEST_F(SafetensorsIndexRules, SameTensorInTwoShards) {
  Put(StFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
             Iota(12)),
      "s2.safetensors");
  ExpectIndexRejected(PutIndex(R"({"a":"s1.safetensors","b":"s2.safetensors"})"),
                      StatusCode::kCorrupt, {"'a'"});
}

TEST_F(SafetensorsIndexRules, DuplicateKeyInWeightMap) {
  ExpectIndexRejected(
      PutIndex(R"({"a":"s1.safetensors","b":"s2.safetensors","a":"s2.safetensors"})"),
      StatusCode::kCorrupt, {"duplicate", "'a'"});
}

TEST_F(SafetensorsIndexRules, WeightMapMissingOrMalformed) {
  const std::string text = R"({"metadata":{"total_size":12}})";
  const std::string index =
      Put(std::vector<uint8_t>(text.begin(), text.end()), std::string(safetensors::kIndexName));
  ExpectIndexRejected(index, StatusCode::kCorrupt, {"weight_map"});
  ExpectIndexRejected(PutIndex(R"(["s1.safetensors"])"), StatusCode::kCorrupt, {"weight_map"});
  ExpectIndexRejected(PutIndex(R"({"a":1,"b":"s2.safetensors"})"), StatusCode::kCorrupt, {"'a'"});
}

TEST_F(SafetensorsIndexRules, IndexIsNotJson) {
  const std::string text = R"({"weight_map":{"a":"s1.safetensors")";
  ExpectIndexRejected(
      Put(std::vector<uint8_t>(text.begin(), text.end()), std::string(safetensors::kIndexName)),
      StatusCode::kCorrupt, {"json"});
}

}  // namespace
}  // namespace mp
