#include <gtest/gtest.h>

#include <filesystem>

#include "modelport/formats/format.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

TEST(FormatTable, EveryEntryIsComplete) {
  ASSERT_FALSE(Formats().empty());
  for (const FormatDescriptor& f : Formats()) {
    EXPECT_FALSE(f.name.empty());
    EXPECT_FALSE(f.extensions.empty()) << f.name;
    EXPECT_NE(f.detect, nullptr) << f.name;
    EXPECT_TRUE(!f.caps.read || f.open != nullptr) << f.name;
    EXPECT_TRUE(!f.caps.write || f.write != nullptr) << f.name;
    EXPECT_EQ(*FindFormat(f.name), &f);
  }
  auto unknown = FindFormat("pickle");
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("known: safetensors"), std::string::npos);
}

TEST(FormatTable, DetectsByContentBeforeExtension) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(testing::PatternTensor("w", DType::kF32, {2}, 1)).ok());
  ASSERT_TRUE((*FindFormat("safetensors"))->write(m, dir.File("weights.bin"), {}).ok());
  auto f = DetectFormat(dir.File("weights.bin"));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->name, "safetensors");
  // A folder holding a model is detected too.
  fs::create_directory(dir.path() / "sub");
  ASSERT_TRUE((*FindFormat("safetensors"))->write(m, dir.File("sub/model.safetensors"), {}).ok());
  EXPECT_EQ((*DetectFormat(dir.File("sub")))->name, "safetensors");
}

TEST(FormatTable, UnknownContentAndMissingPaths) {
  TempDir dir;
  testing::WriteBytes(dir.File("x.txt"), {'h', 'i'});
  auto r = DetectFormat(dir.File("x.txt"));
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("unrecognised format"), std::string::npos);
  EXPECT_EQ(DetectFormat(dir.File("missing")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(DetectFormat(dir.path().string()).status().code(), StatusCode::kUnsupported);
}

TEST(FormatTable, OutputFormatFromExtensionOrFlag) {
  EXPECT_EQ((*FormatForOutput("a/b.safetensors"))->name, "safetensors");
  EXPECT_EQ((*FormatForOutput("a/model.safetensors.index.json"))->name, "safetensors");
  EXPECT_EQ((*FormatForOutput("a/b.weights", "safetensors"))->name, "safetensors");
  EXPECT_EQ(FormatForOutput("a/b.weights").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mp
