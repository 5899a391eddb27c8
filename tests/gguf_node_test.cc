// An independent GGUF reader checks what modelport writes: Hugging Face's @huggingface/gguf
// (npm, installed into tests/node with `npm ci --ignore-scripts`), driven by
// tests/node/gguf_check.mjs. It must see the same metadata (values and GGUF types), the same
// tensor infos, and offsets that point at exactly the source's tensor bytes.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "modelport/formats/format.h"
#include "modelport/formats/gguf/gguf.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::PatternTensor;
using testing::ReadBytes;
using testing::TempDir;

fs::path NodeDir() { return testing::SourceDir() / "tests/node"; }

/// Skips unless node and the installed package are there.
#define MP_SKIP_WITHOUT_NODE_GGUF()                                                           \
  if (testing::Run("node --version").exit_code != 0) GTEST_SKIP() << "node is not installed"; \
  if (!fs::exists(NodeDir() / "node_modules/@huggingface/gguf/package.json"))                 \
  GTEST_SKIP() << "run `npm ci --ignore-scripts` in tests/node to install @huggingface/gguf"

/// The oracle's view of `path`.
Json NodeRead(const std::string& path) {
  const testing::CommandResult r =
      testing::Run("node '" + (NodeDir() / "gguf_check.mjs").string() + "' '" + path + "'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Json doc = Json::parse(r.out, nullptr, false);
  EXPECT_FALSE(doc.is_discarded()) << r.out.substr(0, 200);
  return doc;
}

/// The oracle decodes strings with JavaScript's TextDecoder, which drops a leading byte order
/// mark (U+FEFF; llama's vocabulary has it as a token). Applies the same to modelport's values.
Json WithoutLeadingBom(Json v) {
  if (v.is_string() && v.get_ref<const std::string&>().starts_with("\xEF\xBB\xBF")) {
    return Json(v.get_ref<const std::string&>().substr(3));
  }
  if (v.is_array() || v.is_object()) {
    for (auto& item : v) item = WithoutLeadingBom(item);
  }
  return v;
}

/// Names of the first few elements where two metadata documents differ (keeps failures short).
std::string FirstDifferences(const Json& got, const Json& want) {
  std::string out;
  for (const auto& [key, value] : want.items()) {
    if (!got.contains(key)) {
      out += " missing " + key + ";";
    } else if (got[key] != value) {
      out += " " + key;
      if (value.is_array() && got[key].is_array() && value.size() == got[key].size()) {
        for (size_t i = 0; i < value.size(); ++i) {
          if (value[i] != got[key][i]) {
            out += "[" + std::to_string(i) + "]: " + got[key][i].dump() + " vs " + value[i].dump();
            break;
          }
        }
      }
      out += ";";
    }
  }
  return out;
}

/// GGUF value type ids as the oracle reports them, for modelport's type text ("u32", "[f32]").
Json TypeIds(const std::string& text) {
  static const std::vector<std::string> kNames = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                  "i32", "f32", "bool", "string", "array",
                                                  "u64", "i64", "f64"};
  auto id = [](const std::string& name) {
    for (size_t i = 0; i < kNames.size(); ++i) {
      if (kNames[i] == name) return static_cast<int>(i);
    }
    return -1;
  };
  if (text.size() > 2 && text.front() == '[' && text[1] != '[') {
    return Json::array({9, id(text.substr(1, text.size() - 2))});
  }
  return id(text);
}

/// Checks the oracle's reading of `path` (written by modelport from `source`) against
/// modelport's own reading and the source's tensor bytes.
void CheckAgainstOracle(const std::string& path, const ModelSource& source) {
  const Json doc = NodeRead(path);
  ASSERT_TRUE(doc.is_object());
  auto ours = gguf::Open(path, {});
  ASSERT_TRUE(ours.ok()) << ours.status().ToString();
  const ModelSource& m = **ours;
  EXPECT_EQ(doc["version"], 3);

  // Metadata: same keys in the same order, same values, same GGUF types.
  const Json want = WithoutLeadingBom(m.metadata());
  ASSERT_EQ(doc["metadata"].size(), m.metadata().size());
  EXPECT_EQ(doc["kv_count"], m.metadata().size());
  EXPECT_TRUE(doc["metadata"] == want) << FirstDifferences(doc["metadata"], want);
  std::vector<std::string> their_keys, our_keys;
  for (const auto& [k, v] : doc["metadata"].items()) their_keys.push_back(k);
  for (const auto& [k, v] : m.metadata().items()) our_keys.push_back(k);
  EXPECT_EQ(their_keys, our_keys);
  for (const auto& [key, value] : m.metadata().items()) {
    const auto type = gguf::StoredValueType(m, key);
    ASSERT_TRUE(type.has_value()) << key;
    if (type->starts_with("[[")) continue;  // the oracle reports nested arrays loosely
    EXPECT_EQ(doc["types"][key], TypeIds(*type)) << key << " " << *type;
  }

  // Tensor infos in order: dims innermost first, ggml type, offset -> the source's bytes.
  const std::vector<uint8_t> file = ReadBytes(path);
  const uint64_t data = doc["tensor_data_offset"].get<uint64_t>();
  EXPECT_EQ(data % 32, 0u);
  ASSERT_EQ(doc["tensors"].size(), source.tensors().size());
  EXPECT_EQ(doc["tensor_count"], source.tensors().size());
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    const Json& t = doc["tensors"][i];
    const TensorInfo& info = source.tensors()[i];
    EXPECT_EQ(t["name"], info.name);
    std::vector<uint64_t> dims(info.shape.dims().rbegin(), info.shape.dims().rend());
    EXPECT_EQ(t["dims"].get<std::vector<uint64_t>>(), dims) << info.name;
    EXPECT_EQ(t["ggml_type"], *gguf::GgmlTypeOf(info.dtype)) << info.name;
    const uint64_t at = data + t["offset"].get<uint64_t>();
    ASSERT_LE(at + info.byte_size, file.size()) << info.name;
    auto view = source.Load(i);
    ASSERT_TRUE(view.ok());
    EXPECT_EQ(std::memcmp(file.data() + at, view->bytes().data(), info.byte_size), 0)
        << "tensor bytes differ: " << info.name;
  }
}

TEST(GgufNodeOracle, ReadsAModelWrittenFromMemory) {
  MP_SKIP_WITHOUT_NODE_GGUF();
  Model model;
  uint32_t seed = 1;
  for (const DTypeTraits& t : AllDTypes()) {
    if (!gguf::GgmlTypeOf(t.dtype)) continue;
    const Shape shape = t.block_elems > 1 ? Shape{2, t.block_elems} : Shape{3, 5};
    ASSERT_TRUE(model.Add(PatternTensor("t." + std::string(t.name), t.dtype, shape, seed++)).ok());
  }
  ASSERT_TRUE(model.Add(PatternTensor("rank4", DType::kF32, {2, 1, 3, 2}, 50)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("scalar", DType::kF32, {}, 52)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("名前.weight", DType::kF16, {7}, 51)).ok());
  model.mutable_metadata() = Json{{"general.architecture", "llama"},
                                  {"general.name", "oracle"},
                                  {"llama.context_length", 2048},
                                  {"big", uint64_t{1} << 40},
                                  {"neg", -5},
                                  {"eps", 1e-5},
                                  {"exact", 0.5},
                                  {"flag", true},
                                  {"note", "h\xC3\xA9llo"},
                                  {"tokens", {"<unk>", "<s>", "a b"}},
                                  {"scores", {0.0, -1.5, 2.25}},
                                  {"types", {1, 2, 3}},
                                  {"empty", Json::array()}};
  TempDir dir;
  const std::string path = dir.File("oracle.gguf");
  ASSERT_TRUE(gguf::Write(model, path, {}).ok());
  CheckAgainstOracle(path, model);
}

TEST(GgufNodeOracle, ReadsTheGoldenModelWrittenBackThroughSafetensors) {
  MP_SKIP_WITHOUT_NODE_GGUF();
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  auto golden = gguf::Open((testing::GoldenDir() / "gguf/llama-2-tiny-random.gguf").string(), {});
  ASSERT_TRUE(golden.ok());
  const std::string st = dir.File("m.safetensors");
  ASSERT_TRUE(safetensors::Write(**golden, st, {}).ok());
  auto via = safetensors::Open(st, {});
  ASSERT_TRUE(via.ok());
  const std::string path = dir.File("back.gguf");
  ASSERT_TRUE(gguf::Write(**via, path, {}).ok());
  CheckAgainstOracle(path, **via);
  // And the oracle's metadata equals its reading of the original golden file.
  const Json original = NodeRead((testing::GoldenDir() / "gguf/llama-2-tiny-random.gguf").string());
  const Json written = NodeRead(path);
  EXPECT_TRUE(written["metadata"] == original["metadata"])
      << FirstDifferences(written["metadata"], original["metadata"]);
  EXPECT_EQ(written["types"], original["types"]);
}

// The other direction: modelport's reading of the golden llama.cpp file (all 18 keys, the
// 32000-entry vocabulary, all 12 tensors) equals the oracle's.
TEST(GgufNodeOracle, AgreesWithModelportOnTheGoldenFile) {
  MP_SKIP_WITHOUT_NODE_GGUF();
  MP_SKIP_WITHOUT_GOLDEN();
  const std::string path = (testing::GoldenDir() / "gguf/llama-2-tiny-random.gguf").string();
  auto golden = gguf::Open(path, {});
  ASSERT_TRUE(golden.ok()) << golden.status().ToString();
  ASSERT_EQ((*golden)->tensors().size(), 12u);
  CheckAgainstOracle(path, **golden);
}

TEST(GgufNodeOracle, ReadsEachSplit) {
  MP_SKIP_WITHOUT_NODE_GGUF();
  Model model;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(model.Add(PatternTensor("w" + std::to_string(i), DType::kF32, {8, 4}, i)).ok());
  }
  TempDir dir;
  WriteOptions options;
  options.shard_size = 256;
  ASSERT_TRUE(gguf::Write(model, dir.File("s.gguf"), options).ok());
  for (int k = 1; k <= 2; ++k) {
    const std::string path = dir.File("s-0000" + std::to_string(k) + "-of-00002.gguf");
    const Json doc = NodeRead(path);
    ASSERT_TRUE(doc.is_object());
    EXPECT_EQ(doc["metadata"]["split.no"], k - 1);
    EXPECT_EQ(doc["metadata"]["split.count"], 2);
    EXPECT_EQ(doc["types"]["split.no"], 2);  // u16
    ASSERT_EQ(doc["tensors"].size(), 2u);
    EXPECT_EQ(doc["tensors"][0]["name"], "w" + std::to_string(2 * (k - 1)));
    if (k == 1) {
      EXPECT_EQ(doc["metadata"]["split.tensors.count"], 4);
      EXPECT_EQ(doc["types"]["split.tensors.count"], 5);  // i32
    }
  }
}

}  // namespace
}  // namespace mp
