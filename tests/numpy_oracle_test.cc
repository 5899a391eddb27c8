// numpy (Debian's python3-numpy via /usr/bin/python3) as the oracle for .npy/.npz: numpy writes
// every dtype, byte order, memory order and format version and modelport reads them exactly;
// numpy reads exactly what modelport writes; the golden files from numpy 2.5 read exactly.
// The python side is tests/oracle/numpy_arrays.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "modelport/formats/format.h"
#include "modelport/formats/numpy/numpy.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::BytesTensor;
using testing::CommandResult;
using testing::ReadBytes;
using testing::SameModel;
using testing::TempDir;

#define MP_SKIP_WITHOUT_NUMPY()     \
  if (!testing::PythonHas("numpy")) \
  GTEST_SKIP() << "/usr/bin/python3 cannot import numpy (apt-get install python3-numpy)"

std::string Quote(const std::string& s) { return "'" + s + "'"; }

CommandResult NumpyOracle(const std::string& args) {
  const std::string script = (testing::SourceDir() / "tests/oracle/numpy_arrays.py").string();
  return testing::Run("/usr/bin/python3 " + Quote(script) + " " + args);
}

nlohmann::json ReadManifest(const std::string& dir) {
  const std::vector<uint8_t> text = ReadBytes(dir + "/manifest.json");
  return nlohmann::json::parse(text.begin(), text.end());
}

/// Every manifest entry (relative or absolute file) opens through the format table as numpy and
/// holds a tensor of that name with exactly that dtype, shape and bytes; counts them in *checked.
void ExpectManifestReadsExactly(const std::string& dir, const nlohmann::json& manifest,
                                size_t* checked) {
  for (const auto& e : manifest) {
    std::string file = e.at("file").get<std::string>();
    if (!fs::path(file).is_absolute()) file = dir + "/" + file;
    const std::string name = e.at("name").get<std::string>();
    SCOPED_TRACE(file + " : " + name);
    for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
      ReadOptions o;
      o.io_mode = mode;
      auto source = OpenModel(file, o);
      ASSERT_TRUE(source.ok()) << source.status().ToString();
      EXPECT_EQ((*source)->format(), "numpy");
      auto index = (*source)->Find(name);
      ASSERT_TRUE(index.has_value()) << "no tensor named " << name;
      const TensorInfo& info = (*source)->tensors()[*index];
      EXPECT_EQ(DTypeName(info.dtype), e.at("dtype").get<std::string>());
      EXPECT_EQ(info.shape.dims(), e.at("shape").get<std::vector<uint64_t>>());
      auto view = (*source)->Load(*index);
      ASSERT_TRUE(view.ok()) << view.status().ToString();
      const std::vector<uint8_t> want = ReadBytes(dir + "/" + e.at("raw").get<std::string>());
      EXPECT_EQ(std::vector<uint8_t>(view->bytes().begin(), view->bytes().end()), want);
      std::vector<uint8_t> into(info.byte_size);
      ASSERT_TRUE((*source)->LoadInto(*index, into).ok());
      EXPECT_EQ(into, want);
    }
    ++*checked;
  }
}

TEST(NumpyOracle, NumpyWritesEveryVariantModelportReadsExactly) {
  MP_SKIP_WITHOUT_NUMPY();
  TempDir dir;
  const std::string d = dir.path().string();
  CommandResult made = NumpyOracle("make " + Quote(d));
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  const nlohmann::json manifest = ReadManifest(d);
  // 13 dtypes x byte orders x C/F x 3 versions, specials, two .npz of 8 members.
  ASSERT_GE(manifest.size(), 150u);
  size_t checked = 0;
  ExpectManifestReadsExactly(d, manifest, &checked);
  EXPECT_EQ(checked, manifest.size());
}

TEST(NumpyOracle, GoldenFilesFromNumpy25ReadExactly) {
  MP_SKIP_WITHOUT_GOLDEN();
  MP_SKIP_WITHOUT_NUMPY();
  TempDir dir;
  const std::string d = dir.path().string();
  CommandResult dumped =
      NumpyOracle("dump " + Quote((testing::GoldenDir() / "numpy").string()) + " " + Quote(d));
  ASSERT_EQ(dumped.exit_code, 0) << dumped.out << dumped.err;
  const nlohmann::json manifest = ReadManifest(d);
  ASSERT_GE(manifest.size(), 8u);  // 4 .npy + 2 members in each of 2 .npz
  size_t checked = 0;
  ExpectManifestReadsExactly(d, manifest, &checked);
  EXPECT_EQ(checked, manifest.size());
}

// numpy's arrays (all of them, as modelport read them) written back by modelport, as one .npy
// per array and as one .npz, read by numpy: same dtype (little-endian), shape and bytes.
TEST(NumpyOracle, NumpyReadsWhatModelportWritesExactly) {
  MP_SKIP_WITHOUT_NUMPY();
  TempDir dir;
  const std::string d = dir.path().string();
  CommandResult made = NumpyOracle("make " + Quote(d));
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  const nlohmann::json manifest = ReadManifest(d);

  Model all;
  nlohmann::json out = nlohmann::json::array();
  for (const auto& e : manifest) {
    const std::string file = e.at("file").get<std::string>();
    if (!file.ends_with(".npy")) continue;  // the .npy arrays cover every dtype and shape
    auto source = OpenModel(d + "/" + file);
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    auto view = (*source)->Load(0);
    ASSERT_TRUE(view.ok()) << view.status().ToString();
    Model one;
    ASSERT_TRUE(one.Add(*view).ok());
    const std::string ours = "ours_" + file;
    Status s = numpy::Write(one, d + "/" + ours, {});
    ASSERT_TRUE(s.ok()) << s.ToString();
    out.push_back(
        {{"file", ours}, {"dtype", e["dtype"]}, {"shape", e["shape"]}, {"raw", e["raw"]}});
    ASSERT_TRUE(all.Add(*view).ok());
    out.push_back({{"file", "ours.npz"},
                   {"key", view->info.name},
                   {"dtype", e["dtype"]},
                   {"shape", e["shape"]},
                   {"raw", e["raw"]}});
  }
  ASSERT_GE(all.tensors().size(), 100u);
  Status s = numpy::Write(all, d + "/ours.npz", {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::string check = d + "/ours.json";
  {
    std::FILE* f = std::fopen(check.c_str(), "w");
    ASSERT_NE(f, nullptr);
    const std::string text = out.dump();
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  CommandResult checked = NumpyOracle("check " + Quote(check));
  EXPECT_EQ(checked.exit_code, 0) << checked.out << checked.err;
  EXPECT_NE(checked.out.find(" 0 problems"), std::string::npos) << checked.out;
}

// Through the CLI: numpy's .npz to safetensors and back to .npz keeps every tensor; bf16 cannot
// go to numpy without a cast, and the error says how.
TEST(NumpyOracle, CliConvertsNpzToSafetensorsAndBack) {
  MP_SKIP_WITHOUT_NUMPY();
  TempDir dir;
  const std::string d = dir.path().string();
  CommandResult made = NumpyOracle("make " + Quote(d));
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  for (const std::string src : {"stored.npz", "deflated.npz"}) {
    const std::string st = d + "/" + src + ".safetensors", back = d + "/" + src + ".back.npz";
    CommandResult r1 = testing::RunCli("convert " + Quote(d + "/" + src) + " " + Quote(st));
    ASSERT_EQ(r1.exit_code, 0) << r1.out << r1.err;
    CommandResult r2 = testing::RunCli("convert " + Quote(st) + " " + Quote(back));
    ASSERT_EQ(r2.exit_code, 0) << r2.out << r2.err;
    auto original = OpenModel(d + "/" + src), via = OpenModel(st), again = OpenModel(back);
    ASSERT_TRUE(original.ok() && via.ok() && again.ok());
    EXPECT_TRUE(SameModel(**original, **via, /*compare_metadata=*/false));
    EXPECT_TRUE(SameModel(**original, **again, /*compare_metadata=*/false));
  }

  Model bf;
  ASSERT_TRUE(bf.Add(BytesTensor("emb", DType::kBF16, {2}, {0, 0x3F, 0, 0x40})).ok());
  ASSERT_TRUE(safetensors::Write(bf, d + "/bf.safetensors", {}).ok());
  CommandResult refused =
      testing::RunCli("convert " + Quote(d + "/bf.safetensors") + " " + Quote(d + "/bf.npz"));
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("'emb'"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("--dtype f32"), std::string::npos) << refused.err;
  EXPECT_FALSE(fs::exists(d + "/bf.npz"));
  CommandResult cast = testing::RunCli("convert " + Quote(d + "/bf.safetensors") + " " +
                                       Quote(d + "/bf.npz") + " --dtype f32");
  EXPECT_EQ(cast.exit_code, 0) << cast.out << cast.err;
}

// np.savez_compressed of 8 MiB of zeros deflates ~1000:1: over the default expansion-ratio cap
// (250:1 above 1 MiB), so it is refused as a possible zip bomb before anything is inflated, with
// one message naming the file once and the member.
TEST(NumpyOracle, HighlyCompressedMemberHitsTheExpansionRatioCap) {
  MP_SKIP_WITHOUT_NUMPY();
  TempDir dir;
  const std::string path = dir.File("zeros.npz");
  CommandResult made = testing::Run(
      "/usr/bin/python3 -c \"import numpy as np,sys; "
      "np.savez_compressed(sys.argv[1], small=np.arange(4), zeros=np.zeros(1 << 20))\" " +
      Quote(path));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto opened = OpenModel(path);
  ASSERT_FALSE(opened.ok());
  const Status& s = opened.error();
  EXPECT_EQ(s.code(), StatusCode::kLimitExceeded) << s.ToString();
  EXPECT_EQ(s.message().rfind(path + ": entry 'zeros.npy': ", 0), 0u) << s.message();
  EXPECT_EQ(s.message().find(path, 1), std::string::npos) << "file named twice: " << s.message();
  EXPECT_NE(s.message().find("ratio"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace mp
