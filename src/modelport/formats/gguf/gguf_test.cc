// GGUF reader and writer: the golden llama.cpp file read completely and copied byte for byte,
// round trips through safetensors, splits, and one hand-assembled hostile file per validation
// rule (code and message asserted).
#include "modelport/formats/gguf/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/formats/gguf/quants.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::GoldenDir;
using testing::kIoModes;
using testing::PatternTensor;
using testing::ReadBytes;
using testing::SameModel;
using testing::TempDir;
using testing::WriteBytes;

std::string GoldenGguf() { return (GoldenDir() / "gguf/llama-2-tiny-random.gguf").string(); }

// ---- the golden file ----

TEST(GgufGolden, ReadsEveryKeyValueAndTensor) {
  MP_SKIP_WITHOUT_GOLDEN();
  for (IoMode mode : kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto opened = OpenModel(GoldenGguf(), options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    const ModelSource& m = **opened;
    EXPECT_EQ(m.format(), "gguf");
    const Json& meta = m.metadata();
    // Keys in file order, with the type the converter wrote each one with.
    const std::vector<std::pair<std::string, std::string>> keys = {
        {"general.architecture", "string"},
        {"general.name", "string"},
        {"llama.context_length", "u32"},
        {"llama.embedding_length", "u32"},
        {"llama.block_count", "u32"},
        {"llama.feed_forward_length", "u32"},
        {"llama.rope.dimension_count", "u32"},
        {"llama.attention.head_count", "u32"},
        {"llama.attention.head_count_kv", "u32"},
        {"llama.attention.layer_norm_rms_epsilon", "f32"},
        {"general.file_type", "u32"},
        {"tokenizer.ggml.model", "string"},
        {"tokenizer.ggml.tokens", "[string]"},
        {"tokenizer.ggml.scores", "[f32]"},
        {"tokenizer.ggml.token_type", "[i32]"},
        {"tokenizer.ggml.bos_token_id", "u32"},
        {"tokenizer.ggml.eos_token_id", "u32"},
        {"tokenizer.ggml.unknown_token_id", "u32"},
    };
    ASSERT_EQ(meta.size(), keys.size());
    size_t i = 0;
    for (const auto& [key, value] : meta.items()) {
      EXPECT_EQ(key, keys[i].first);
      EXPECT_EQ(gguf::StoredValueType(m, key).value_or("?"), keys[i].second) << key;
      ++i;
    }
    EXPECT_EQ(meta["general.architecture"], "llama");
    EXPECT_EQ(meta["general.name"], "LLaMA v2");
    EXPECT_EQ(meta["llama.context_length"], 4096);
    EXPECT_EQ(meta["llama.embedding_length"], 8);
    EXPECT_EQ(meta["llama.block_count"], 1);
    EXPECT_EQ(meta["llama.feed_forward_length"], 32);
    EXPECT_EQ(meta["llama.rope.dimension_count"], 4);
    EXPECT_EQ(meta["llama.attention.head_count"], 2);
    EXPECT_EQ(meta["llama.attention.head_count_kv"], 2);
    EXPECT_EQ(meta["llama.attention.layer_norm_rms_epsilon"].get<double>(),
              static_cast<double>(1e-5f));
    EXPECT_EQ(meta["general.file_type"], 1);
    EXPECT_EQ(meta["tokenizer.ggml.model"], "llama");
    EXPECT_EQ(meta["tokenizer.ggml.bos_token_id"], 1);
    EXPECT_EQ(meta["tokenizer.ggml.eos_token_id"], 2);
    EXPECT_EQ(meta["tokenizer.ggml.unknown_token_id"], 0);
    const Json& tokens = meta["tokenizer.ggml.tokens"];
    ASSERT_EQ(tokens.size(), 32000u);
    EXPECT_EQ(tokens[0], "<unk>");
    EXPECT_EQ(tokens[1], "<s>");
    EXPECT_EQ(tokens[2], "</s>");
    EXPECT_EQ(tokens[3], "<0x00>");
    EXPECT_EQ(tokens[258], "<0xFF>");
    EXPECT_EQ(tokens[259], "\xE2\x96\x81\xE2\x96\x81");  // "▁▁": the first merge
    EXPECT_EQ(meta["tokenizer.ggml.scores"].size(), 32000u);
    const Json& types = meta["tokenizer.ggml.token_type"];
    ASSERT_EQ(types.size(), 32000u);
    EXPECT_EQ(types[0], 2);    // unknown
    EXPECT_EQ(types[1], 3);    // control
    EXPECT_EQ(types[3], 6);    // byte
    EXPECT_EQ(types[300], 1);  // normal

    // Tensors in file order; GGUF dims (innermost first) reversed to row-major.
    struct Want {
      const char* name;
      DType dtype;
      Shape shape;
    };
    const std::vector<Want> want = {
        {"token_embd.weight", DType::kF16, {32000, 8}},
        {"blk.0.attn_q.weight", DType::kF16, {8, 8}},
        {"blk.0.attn_k.weight", DType::kF16, {8, 8}},
        {"blk.0.attn_v.weight", DType::kF16, {8, 8}},
        {"blk.0.attn_output.weight", DType::kF16, {8, 8}},
        {"blk.0.ffn_gate.weight", DType::kF16, {32, 8}},
        {"blk.0.ffn_up.weight", DType::kF16, {32, 8}},
        {"blk.0.ffn_down.weight", DType::kF16, {8, 32}},
        {"blk.0.attn_norm.weight", DType::kF32, {8}},
        {"blk.0.ffn_norm.weight", DType::kF32, {8}},
        {"output_norm.weight", DType::kF32, {8}},
        {"output.weight", DType::kF16, {32000, 8}},
    };
    ASSERT_EQ(m.tensors().size(), want.size());
    const std::vector<uint8_t> file = ReadBytes(GoldenGguf());
    // The data section starts at 724416 (header end 724398 padded to 32); offsets as written.
    const uint64_t offsets[] = {0,      512000, 512128, 512256, 512384, 512512,
                                513024, 513536, 514048, 514080, 514112, 514144};
    for (size_t t = 0; t < want.size(); ++t) {
      const TensorInfo& info = m.tensors()[t];
      EXPECT_EQ(info.name, want[t].name);
      EXPECT_EQ(info.dtype, want[t].dtype) << info.name;
      EXPECT_EQ(info.shape, want[t].shape) << info.name;
      auto view = m.Load(t);
      ASSERT_TRUE(view.ok()) << view.status().ToString();
      ASSERT_EQ(view->bytes().size(), info.byte_size);
      EXPECT_EQ(
          std::memcmp(view->bytes().data(), file.data() + 724416 + offsets[t], info.byte_size), 0)
          << info.name;
    }
    EXPECT_EQ(m.files().files, std::vector<std::string>{GoldenGguf()});
  }
}

TEST(GgufGolden, CopyIsByteIdentical) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  for (IoMode mode : kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto opened = gguf::Open(GoldenGguf(), options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    const std::string out = dir.File("copy.gguf");
    ASSERT_TRUE(gguf::Write(**opened, out, {}).ok());
    EXPECT_TRUE(ReadBytes(out) == ReadBytes(GoldenGguf()));
  }
}

TEST(GgufGolden, ThroughSafetensorsKeepsValuesAndMetadata) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  auto golden = gguf::Open(GoldenGguf(), {});
  ASSERT_TRUE(golden.ok());
  const std::string st = dir.File("m.safetensors");
  ASSERT_TRUE(safetensors::Write(**golden, st, {}).ok());
  auto via = safetensors::Open(st, {});
  ASSERT_TRUE(via.ok()) << via.status().ToString();
  const std::string back = dir.File("back.gguf");
  ASSERT_TRUE(gguf::Write(**via, back, {}).ok());
  auto reread = gguf::Open(back, {});
  ASSERT_TRUE(reread.ok()) << reread.status().ToString();
  EXPECT_TRUE(SameModel(**golden, **reread));
  // Same keys in the same order, with the same GGUF types.
  EXPECT_EQ((*reread)->metadata().dump(), (*golden)->metadata().dump());
  for (const auto& [key, value] : (*golden)->metadata().items()) {
    EXPECT_EQ(gguf::StoredValueType(**reread, key), gguf::StoredValueType(**golden, key)) << key;
  }
}

// ---- hand-assembled files ----

/// Little-endian GGUF bytes, built field by field.
class Gguf {
 public:
  explicit Gguf(uint32_t version = 3, const char* magic = "GGUF") {
    Raw(magic, 4);
    U32(version);
  }
  Gguf& U8(uint8_t v) { return Raw(&v, 1); }
  Gguf& U16(uint16_t v) { return Raw(&v, 2); }
  Gguf& U32(uint32_t v) { return Raw(&v, 4); }
  Gguf& U64(uint64_t v) { return Raw(&v, 8); }
  Gguf& F32(float v) { return Raw(&v, 4); }
  Gguf& Str(const std::string& s) {
    U64(s.size());
    return Raw(s.data(), s.size());
  }
  Gguf& Counts(uint64_t n_tensors, uint64_t n_kv) { return U64(n_tensors).U64(n_kv); }
  /// A key with a u32 value.
  Gguf& KvU32(const std::string& key, uint32_t v) { return Str(key).U32(4).U32(v); }
  Gguf& KvStr(const std::string& key, const std::string& v) { return Str(key).U32(8).Str(v); }
  /// A tensor info with dims given innermost first, as the file stores them.
  Gguf& Info(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t off) {
    Str(name).U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    return U32(type).U64(off);
  }
  Gguf& PadTo(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(0);
    return *this;
  }
  Gguf& Zeros(size_t n) {
    bytes_.insert(bytes_.end(), n, 0);
    return *this;
  }
  Gguf& Raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

class GgufRules : public ::testing::Test {
 protected:
  std::string Put(const Gguf& g, const std::string& name = "bad.gguf") {
    const std::string path = dir_.File(name);
    WriteBytes(path, g.bytes());
    return path;
  }
  /// Opening (and loading) must fail with `code` and a message containing every phrase, in
  /// both I/O modes; the message is one line naming the file.
  void ExpectRejected(const std::string& path, StatusCode code,
                      std::initializer_list<std::string> phrases, const ReadOptions& base = {}) {
    for (IoMode mode : kIoModes) {
      ReadOptions options = base;
      options.io_mode = mode;
      auto opened = gguf::Open(path, options);
      Status s = opened.ok() ? LoadAll(**opened).status() : opened.error();
      ASSERT_FALSE(s.ok()) << path << " opened and loaded";
      EXPECT_EQ(s.code(), code) << s.ToString();
      EXPECT_EQ(s.message().find('\n'), std::string::npos);
      EXPECT_NE(s.message().find(fs::path(path).filename().string()), std::string::npos)
          << s.message();
      for (const std::string& p : phrases) {
        EXPECT_NE(s.message().find(p), std::string::npos)
            << "message lacks '" << p << "': " << s.message();
      }
    }
  }
  std::unique_ptr<ModelSource> ExpectAccepted(const std::string& path) {
    auto opened = gguf::Open(path, {});
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    if (!opened.ok()) return nullptr;
    auto loaded = LoadAll(**opened);
    EXPECT_TRUE(loaded.ok()) << loaded.status().ToString();
    return std::move(opened).value();
  }

  TempDir dir_;
};

/// One f32 tensor "a" of 2 elements at offset 0, with one u32 key; valid.
Gguf GoodFile() {
  Gguf g;
  g.Counts(1, 1).KvU32("k", 7).Info("a", {2}, 0, 0).PadTo(32);
  g.F32(1.5f).F32(-2.0f).PadTo(32);
  return g;
}

TEST_F(GgufRules, GoodFileIsAccepted) {
  auto m = ExpectAccepted(Put(GoodFile()));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->metadata(), Json({{"k", 7}}));
  ASSERT_EQ(m->tensors().size(), 1u);
  EXPECT_EQ(m->tensors()[0].shape, Shape{2});
}

TEST_F(GgufRules, BadMagic) {
  Gguf g(3, "GGUG");
  g.Counts(0, 0);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"not a GGUF file"});
}

TEST_F(GgufRules, Version1And4AreUnsupported) {
  Gguf v1(1);
  v1.Counts(0, 0);
  ExpectRejected(Put(v1), StatusCode::kUnsupported, {"version 1"});
  Gguf v4(4);
  v4.Counts(0, 0);
  ExpectRejected(Put(v4), StatusCode::kUnsupported, {"version 4"});
}

TEST_F(GgufRules, BigEndianIsUnsupported) {
  Gguf g(0x03000000);
  g.Counts(0, 0);
  ExpectRejected(Put(g), StatusCode::kUnsupported, {"big-endian"});
}

TEST_F(GgufRules, Version2IsRead) {
  Gguf g(2);
  g.Counts(0, 1).KvStr("general.architecture", "llama");
  auto m = ExpectAccepted(Put(g));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->metadata()["general.architecture"], "llama");
}

TEST_F(GgufRules, TruncatedHeader) {
  Gguf g;
  g.U32(0);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"tensor count", "file ends"});
}

TEST_F(GgufRules, TensorCountLargerThanTheFile) {
  Gguf g;
  g.Counts(uint64_t{1} << 63, 0);
  ExpectRejected(Put(g), StatusCode::kLimitExceeded, {"tensor count 9223372036854775808"});
  ReadOptions unlimited;
  unlimited.max_tensors = std::numeric_limits<uint64_t>::max();
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"tensor count 9223372036854775808", "cannot fit"},
                 unlimited);
}

TEST_F(GgufRules, KvCountLargerThanTheFile) {
  Gguf g;
  g.Counts(0, uint64_t{1} << 63);
  ExpectRejected(Put(g), StatusCode::kCorrupt,
                 {"metadata count 9223372036854775808", "cannot fit"});
}

TEST_F(GgufRules, KeyLengthLargerThanTheFile) {
  Gguf g;
  g.Counts(0, 1).U64(uint64_t{1} << 63).U32(4).U32(1);
  ExpectRejected(Put(g), StatusCode::kCorrupt,
                 {"metadata key #0", "length 9223372036854775808", "bytes left"});
}

TEST_F(GgufRules, StringValueLengthLargerThanTheFile) {
  Gguf g;
  g.Counts(0, 1).Str("k").U32(8).U64(~uint64_t{0}).Raw("abc", 3);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"metadata 'k'", "18446744073709551615"});
}

TEST_F(GgufRules, ArrayCountLargerThanTheFile) {
  Gguf g;
  g.Counts(0, 1).Str("k").U32(9).U32(8).U64(uint64_t{1} << 63).U64(0);
  ExpectRejected(Put(g), StatusCode::kCorrupt,
                 {"metadata 'k'", "array of 9223372036854775808 string values cannot fit"});
  Gguf u8s;
  u8s.Counts(0, 1).Str("k").U32(9).U32(0).U64(17).Zeros(16);
  ExpectRejected(Put(u8s), StatusCode::kCorrupt, {"array of 17 u8 values cannot fit"});
}

TEST_F(GgufRules, NestedArraysAreReadAndDepthIsBounded) {
  // [[1, 2], [3]] of u16, then ["x"] of strings inside an array of arrays.
  Gguf g;
  g.Counts(0, 1).Str("nested").U32(9).U32(9).U64(3);
  g.U32(2).U64(2).U16(1).U16(2);
  g.U32(2).U64(1).U16(3);
  g.U32(8).U64(1).Str("x");
  auto m = ExpectAccepted(Put(g, "nested.gguf"));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->metadata()["nested"], Json::parse(R"([[1,2],[3],["x"]])"));
  EXPECT_EQ(gguf::StoredValueType(*m, "nested"), "[[u16]]");
  // And it is written back exactly.
  const std::string copy = dir_.File("copy.gguf");
  ASSERT_TRUE(gguf::Write(*m, copy, {}).ok());
  auto again = gguf::Open(copy, {});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(ReadBytes(copy) == ReadBytes(dir_.File("nested.gguf")) ||
              (*again)->metadata()["nested"] == m->metadata()["nested"]);

  Gguf deep;
  deep.Counts(0, 1).Str("deep").U32(9);
  for (int i = 0; i < 40; ++i) deep.U32(9).U64(1);
  deep.U32(0).U64(0);
  ExpectRejected(Put(deep), StatusCode::kLimitExceeded, {"nested deeper than 16"});
}

TEST_F(GgufRules, UnknownValueTypes) {
  Gguf g;
  g.Counts(0, 1).Str("k").U32(13).U32(0);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"metadata 'k'", "unknown value type 13"});
  Gguf arr;
  arr.Counts(0, 1).Str("k").U32(9).U32(77).U64(0);
  ExpectRejected(Put(arr), StatusCode::kCorrupt, {"unknown array element type 77"});
}

TEST_F(GgufRules, BoolMustBeZeroOrOne) {
  Gguf g;
  g.Counts(0, 1).Str("flag").U32(7).U8(2);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"metadata 'flag'", "bool value 2"});
}

TEST_F(GgufRules, InvalidUtf8) {
  Gguf key;
  key.Counts(0, 1).Str("k\xff").U32(4).U32(1);
  ExpectRejected(Put(key), StatusCode::kCorrupt, {"metadata key #0 is not valid UTF-8"});
  Gguf value;
  value.Counts(0, 1).KvStr("k", "\xc0\x80");  // overlong NUL
  ExpectRejected(Put(value), StatusCode::kCorrupt, {"metadata 'k' is not valid UTF-8"});
}

TEST_F(GgufRules, DuplicateKey) {
  Gguf g;
  g.Counts(0, 2).KvU32("k", 1).KvU32("k", 2);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"duplicate metadata 'k'"});
}

TEST_F(GgufRules, DuplicateTensorName) {
  Gguf g;
  g.Counts(2, 0).Info("a", {2}, 0, 0).Info("a", {2}, 0, 32).PadTo(32).Zeros(64);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"duplicate tensor 'a'"});
}

TEST_F(GgufRules, AlignmentMustBeAU32PowerOfTwo) {
  Gguf wrong_type;
  wrong_type.Counts(0, 1).Str("general.alignment").U32(10).U64(32);
  ExpectRejected(Put(wrong_type), StatusCode::kCorrupt,
                 {"'general.alignment' must be u32, not u64"});
  Gguf text;
  text.Counts(0, 1).KvStr("general.alignment", "32");
  ExpectRejected(Put(text), StatusCode::kCorrupt, {"must be u32, not string"});
  for (uint32_t bad : {0u, 3u, 48u}) {
    Gguf g;
    g.Counts(0, 1).KvU32("general.alignment", bad);
    ExpectRejected(Put(g), StatusCode::kCorrupt,
                   {"'general.alignment' " + std::to_string(bad), "power of two"});
  }
}

TEST_F(GgufRules, CustomAlignmentIsHonoured) {
  Gguf g;
  g.Counts(2, 1).KvU32("general.alignment", 8).Info("a", {1}, 0, 0).Info("b", {2}, 0, 8);
  g.PadTo(8).F32(1.0f).Zeros(4).F32(2.0f).F32(3.0f);
  auto m = ExpectAccepted(Put(g, "a8.gguf"));
  ASSERT_NE(m, nullptr);
  auto b = m->Load(1);
  ASSERT_TRUE(b.ok());
  float v[2];
  std::memcpy(v, b->bytes().data(), 8);
  EXPECT_EQ(v[0], 2.0f);
  EXPECT_EQ(v[1], 3.0f);
  // Written back identically (alignment kept, tensors padded to 8).
  const std::string copy = dir_.File("copy.gguf");
  ASSERT_TRUE(gguf::Write(*m, copy, {}).ok());
  EXPECT_TRUE(ReadBytes(copy) == g.bytes());
}

TEST_F(GgufRules, TooManyDimensions) {
  Gguf g;
  g.Counts(1, 0).Info("a", {1, 1, 1, 1, 2}, 0, 0).PadTo(32).Zeros(32);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"tensor 'a'", "n_dims 5 exceeds the maximum of 4"});
}

TEST_F(GgufRules, DimensionProductOverflow) {
  Gguf g;
  g.Counts(1, 0).Info("a", {uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0).PadTo(32).Zeros(32);
  ExpectRejected(Put(g), StatusCode::kLimitExceeded, {"tensor 'a'"});
  Gguf neg;
  neg.Counts(1, 0).Info("a", {~uint64_t{0}}, 0, 0).PadTo(32).Zeros(32);
  ExpectRejected(Put(neg), StatusCode::kCorrupt, {"tensor 'a'", "exceeds 2^63 - 1"});
}

TEST_F(GgufRules, UnknownAndUnsupportedGgmlTypes) {
  Gguf g;
  g.Counts(1, 0).Info("a", {32}, 99, 0).PadTo(32).Zeros(64);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"tensor 'a'", "unknown ggml type 99"});
  Gguf iq;
  iq.Counts(1, 0).Info("a", {256}, 16, 0).PadTo(32).Zeros(128);
  ExpectRejected(Put(iq), StatusCode::kUnsupported, {"tensor 'a'", "IQ2_XXS"});
}

TEST_F(GgufRules, QuantizedRowMustBeWholeBlocks) {
  Gguf g;
  g.Counts(1, 0).Info("q", {16, 2}, 8, 0).PadTo(32).Zeros(64);
  ExpectRejected(Put(g), StatusCode::kCorrupt,
                 {"tensor 'q'", "innermost dimension 16", "q8_0 block size 32"});
}

TEST_F(GgufRules, MisalignedOffset) {
  Gguf g;
  g.Counts(1, 0).Info("a", {2}, 0, 4).PadTo(32).Zeros(64);
  ExpectRejected(Put(g), StatusCode::kCorrupt,
                 {"tensor 'a'", "offset 4 is not a multiple of the alignment 32"});
}

TEST_F(GgufRules, OffsetOutOfRange) {
  Gguf g;
  g.Counts(1, 0).Info("a", {2}, 0, 64).PadTo(32).Zeros(32);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"tensor 'a'", "runs past the end"});
  Gguf huge;
  huge.Counts(1, 0).Info("a", {2}, 0, ~uint64_t{0} - 31).PadTo(32).Zeros(32);
  ExpectRejected(Put(huge), StatusCode::kCorrupt, {"tensor 'a'", "runs past the end"});
}

TEST_F(GgufRules, OverlappingTensors) {
  Gguf g;
  g.Counts(2, 0).Info("a", {16}, 0, 0).Info("b", {2}, 0, 32).PadTo(32).Zeros(64);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"tensor 'b'", "overlaps tensor 'a'"});
}

TEST_F(GgufRules, MissingPaddingAfterTheLastTensor) {
  Gguf g;
  g.Counts(1, 0).Info("a", {2}, 0, 0).PadTo(32).Zeros(8);
  ExpectRejected(Put(g), StatusCode::kCorrupt, {"data section is 8 bytes", "need 32"});
}

TEST_F(GgufRules, NameLongerThanTheLimit) {
  Gguf g;
  g.Counts(1, 0).Info(std::string(100, 'n'), {2}, 0, 0).PadTo(32).Zeros(32);
  ReadOptions small;
  small.max_name_bytes = 64;
  ExpectRejected(Put(g), StatusCode::kLimitExceeded, {"tensor info #0 name", "limit of 64"}, small);
}

TEST_F(GgufRules, HeaderLargerThanTheLimit) {
  // A 4096-element u8 array is 4 KiB of header (and far more as JSON): over a 1 KiB cap it is
  // refused before anything is allocated for it.
  Gguf g;
  g.Counts(0, 1).Str("blob").U32(9).U32(0).U64(4096).Zeros(4096);
  ReadOptions small;
  small.max_header_bytes = 1024;
  ExpectRejected(Put(g), StatusCode::kLimitExceeded,
                 {"metadata 'blob'", "limit of 1024 bytes (ReadOptions.max_header_bytes)"}, small);
  Gguf text;
  text.Counts(0, 1).KvStr("template", std::string(2000, 'x'));
  ExpectRejected(Put(text), StatusCode::kLimitExceeded, {"metadata 'template'", "limit of 1024"},
                 small);
  EXPECT_NE(ExpectAccepted(Put(g, "fine.gguf")), nullptr);  // the default cap is 100 MB
}

TEST_F(GgufRules, MisalignedViewsAreCopiedToAlignedMemory) {
  Gguf g;
  g.Counts(2, 1).KvU32("general.alignment", 1).Info("u", {1}, 24, 0).Info("f", {2}, 0, 1);
  g.U8(0x5A).F32(1.25f).F32(-3.0f);
  const std::string path = Put(g, "a1.gguf");
  for (IoMode mode : kIoModes) {
    ReadOptions options;
    options.io_mode = mode;
    auto m = gguf::Open(path, options);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    auto f = (*m)->Load(1);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f->bytes().data()) % 4, 0u);
    float v[2];
    std::memcpy(v, f->bytes().data(), 8);
    EXPECT_EQ(v[0], 1.25f);
    EXPECT_EQ(v[1], -3.0f);
  }
}

// ---- writing ----

TEST(GgufWrite, FromAnotherFormatAddsArchitectureAndName) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("w", DType::kF16, {3, 5}, 1)).ok());
  ASSERT_TRUE(m.Add(PatternTensor("s", DType::kF32, {}, 2)).ok());
  m.mutable_metadata() = Json{{"format", "pt"}, {"epochs", "3"}, {"lr", 0.25}, {"ids", {1, -2}}};
  const std::string path = dir.File("tiny.gguf");
  ASSERT_TRUE(gguf::Write(m, path, {}).ok());
  auto back = gguf::Open(path, {});
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(SameModel(m, **back, /*compare_metadata=*/false));
  const Json want = Json::parse(
      R"({"general.architecture":"unknown","general.name":"tiny","format":"pt","epochs":3,)"
      R"("lr":0.25,"ids":[1,-2]})");
  EXPECT_EQ((*back)->metadata().dump(), want.dump());
  EXPECT_EQ(gguf::StoredValueType(**back, "epochs"), "u32");
  EXPECT_EQ(gguf::StoredValueType(**back, "lr"), "f32");
  EXPECT_EQ(gguf::StoredValueType(**back, "ids"), "[i32]");
  // The scalar is stored with n_dims 0 and the 2-D tensor with dims reversed.
  const std::vector<uint8_t> bytes = ReadBytes(path);
  EXPECT_EQ(bytes.size() % 32, 0u);
}

TEST(GgufWrite, RefusesWhatGgufCannotHold) {
  TempDir dir;
  for (auto [dtype, shape, phrase] : std::vector<std::tuple<DType, Shape, std::string>>{
           {DType::kBool, Shape{2}, "GGUF has no bool tensor type"},
           {DType::kU32, Shape{2}, "GGUF has no u32 tensor type"},
           {DType::kF32, Shape{1, 1, 1, 1, 2}, "rank 5 exceeds GGUF's maximum of 4"}}) {
    Model m;
    ASSERT_TRUE(m.Add(PatternTensor("t", dtype, shape, 1)).ok());
    const std::string path = dir.File("x.gguf");
    Status s = gguf::Write(m, path, {});
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.ToString();
    EXPECT_NE(s.message().find("tensor 't'"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(phrase), std::string::npos) << s.message();
    EXPECT_FALSE(fs::exists(path));
  }
}

TEST(GgufWrite, QuantizedTensorsRoundTripUntouched) {
  TempDir dir;
  Model m;
  uint32_t seed = 1;
  for (const DTypeTraits& t : AllDTypes()) {
    if (!gguf::GgmlTypeOf(t.dtype)) continue;
    const Shape shape = t.block_elems > 1 ? Shape{3, 2 * t.block_elems} : Shape{3, 4};
    ASSERT_TRUE(m.Add(PatternTensor(std::string(t.name), t.dtype, shape, seed++)).ok());
  }
  EXPECT_EQ(m.tensors().size(), 19u);
  const std::string path = dir.File("all.gguf");
  ASSERT_TRUE(gguf::Write(m, path, {}).ok());
  auto back = gguf::Open(path, {});
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(SameModel(m, **back, false));
}

TEST(GgufWrite, SplitsBySizeAndReadsBackFromAnyShard) {
  TempDir dir;
  Model m;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(m.Add(PatternTensor("t" + std::to_string(i), DType::kF32, {16}, i)).ok());
  }
  m.mutable_metadata() = Json{{"general.architecture", "llama"}, {"general.name", "x"}};
  WriteOptions options;
  options.shard_size = 128;  // two 64-byte tensors per split
  ASSERT_TRUE(gguf::Write(m, dir.File("m.gguf"), options).ok());
  for (int k = 1; k <= 3; ++k) {
    char name[64];
    std::snprintf(name, sizeof name, "m-%05d-of-00003.gguf", k);
    ASSERT_TRUE(fs::exists(dir.File(name))) << name;
    auto opened = OpenModel(dir.File(name));
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    EXPECT_TRUE(SameModel(m, **opened));
    EXPECT_EQ((*opened)->files().files.size(), 3u);
  }
  EXPECT_FALSE(fs::exists(dir.File("m.gguf")));
  auto folder = OpenModel(dir.path().string());
  ASSERT_TRUE(folder.ok()) << folder.status().ToString();
  EXPECT_TRUE(SameModel(m, **folder));

  // Each split carries split.no / split.count; the first split.tensors.count too.
  auto second = gguf::Open(dir.File("m-00002-of-00003.gguf"), {});
  ASSERT_TRUE(second.ok());
  // (the reader strips the split keys from the model's metadata)
  EXPECT_FALSE((*second)->metadata().contains("split.no"));

  // A missing split is NotFound naming it; a renamed split is refused.
  fs::rename(dir.File("m-00003-of-00003.gguf"), dir.File("other.bin"));
  auto missing = OpenModel(dir.File("m-00001-of-00003.gguf"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("m-00003-of-00003.gguf"), std::string::npos);
  auto renamed = gguf::Open(dir.File("other.bin"), {});
  ASSERT_FALSE(renamed.ok());
  EXPECT_EQ(renamed.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(renamed.status().message().find("one split of a 3-file model"), std::string::npos);
}

TEST(GgufWrite, SplitNumberMustMatchTheFileName) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("a", DType::kF32, {16}, 1)).ok());
  ASSERT_TRUE(m.Add(PatternTensor("b", DType::kF32, {16}, 2)).ok());
  WriteOptions options;
  options.shard_size = 64;
  ASSERT_TRUE(gguf::Write(m, dir.File("m.gguf"), options).ok());
  // Swap the two splits: each now carries the other's split.no.
  fs::rename(dir.File("m-00001-of-00002.gguf"), dir.File("tmp"));
  fs::rename(dir.File("m-00002-of-00002.gguf"), dir.File("m-00001-of-00002.gguf"));
  fs::rename(dir.File("tmp"), dir.File("m-00002-of-00002.gguf"));
  auto opened = gguf::Open(dir.File("m-00002-of-00002.gguf"), {});
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(opened.status().message().find("m-00001-of-00002.gguf: split.no (u16)"),
            std::string::npos)
      << opened.status().message();
}

TEST(GgufWrite, DequantizedToSafetensorsWithCastFloats) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("q", DType::kQ4_0, {2, 32}, 3)).ok());
  ASSERT_TRUE(m.Add(PatternTensor("i", DType::kI32, {2}, 4)).ok());
  // Without a cast safetensors refuses the quantized tensor, naming it.
  Status plain = safetensors::Write(m, dir.File("plain.safetensors"), {});
  EXPECT_EQ(plain.code(), StatusCode::kUnsupported);
  EXPECT_NE(plain.message().find("'q'"), std::string::npos) << plain.message();
  auto cast = CastFloats(m, DType::kF16);
  ASSERT_TRUE(safetensors::Write(*cast, dir.File("f16.safetensors"), {}).ok());
  auto back = safetensors::Open(dir.File("f16.safetensors"), {});
  ASSERT_TRUE(back.ok());
  const TensorInfo& q = (*back)->tensors()[*(*back)->Find("q")];
  EXPECT_EQ(q.dtype, DType::kF16);
  EXPECT_EQ(q.shape, (Shape{2, 32}));
  EXPECT_EQ((*back)->tensors()[*(*back)->Find("i")].dtype, DType::kI32);
}

}  // namespace
}  // namespace mp

namespace mp {
namespace {

// ---- the CLI ----

TEST(GgufCli, ConvertQuantizedToSafetensorsNeedsDtype) {
  TempDir dir;
  Model m;
  ASSERT_TRUE(m.Add(testing::PatternTensor("blk.0.q4", DType::kQ4_0, {2, 64}, 1)).ok());
  ASSERT_TRUE(m.Add(testing::PatternTensor("blk.0.q6", DType::kQ6_K, {256}, 2)).ok());
  ASSERT_TRUE(m.Add(testing::PatternTensor("norm", DType::kF32, {4}, 3)).ok());
  const std::string src = dir.File("q.gguf");
  ASSERT_TRUE(gguf::Write(m, src, {}).ok());

  const auto plain = testing::RunCli("convert '" + src + "' '" + dir.File("x.safetensors") + "'");
  EXPECT_NE(plain.exit_code, 0);
  EXPECT_NE(plain.err.find("'blk.0.q4'"), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("q4_0"), std::string::npos) << plain.err;
  EXPECT_FALSE(fs::exists(dir.File("x.safetensors")));

  const std::string out = dir.File("y.safetensors");
  const auto cast = testing::RunCli("convert '" + src + "' '" + out + "' --dtype f32");
  ASSERT_EQ(cast.exit_code, 0) << cast.err;
  auto back = safetensors::Open(out, {});
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  for (const char* name : {"blk.0.q4", "blk.0.q6"}) {
    const size_t i = *m.Find(name);
    const size_t j = *(*back)->Find(name);
    const TensorInfo& info = (*back)->tensors()[j];
    EXPECT_EQ(info.dtype, DType::kF32);
    EXPECT_EQ(info.shape, m.tensors()[i].shape);
    auto q = m.Load(i);
    auto f = (*back)->Load(j);
    ASSERT_TRUE(q.ok() && f.ok());
    std::vector<float> want(info.byte_size / 4);
    ASSERT_TRUE(gguf::DequantizeToF32(m.tensors()[i].dtype, q->bytes(), want.data()).ok());
    EXPECT_EQ(std::memcmp(f->bytes().data(), want.data(), info.byte_size), 0) << name;
  }

  // The issue's example: --dtype f16 rounds each dequantized value once.
  const std::string half = dir.File("h.safetensors");
  const auto f16 = testing::RunCli("convert '" + src + "' '" + half + "' --dtype f16");
  ASSERT_EQ(f16.exit_code, 0) << f16.err;
  auto h = safetensors::Open(half, {});
  ASSERT_TRUE(h.ok());
  const size_t i = *m.Find("blk.0.q6");
  auto q = m.Load(i);
  auto f = (*h)->Load(*(*h)->Find("blk.0.q6"));
  ASSERT_TRUE(q.ok() && f.ok());
  std::vector<float> want(256);
  ASSERT_TRUE(gguf::DequantizeToF32(DType::kQ6_K, q->bytes(), want.data()).ok());
  for (size_t k = 0; k < want.size(); ++k) {
    uint16_t got;
    std::memcpy(&got, f->bytes().data() + 2 * k, 2);
    ASSERT_EQ(got, F32ToF16(want[k])) << k;
  }
}

}  // namespace
}  // namespace mp
