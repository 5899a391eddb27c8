// .npy/.npz rules against hand-built files: one test per rule, asserting code and message.
// numpy itself is the oracle in tests/numpy_oracle_test.cc.
#include "modelport/formats/numpy/numpy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "modelport/formats/zip/zip.h"
#include "test_util.h"

namespace mp::numpy {
namespace {

namespace fs = std::filesystem;
using testing::BytesTensor;
using testing::PatternTensor;
using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

/// A .npy file: preamble of version `major` around `dict` (padded to 64 with '\n' last) + data.
std::vector<uint8_t> Npy(const std::string& dict, const std::vector<uint8_t>& data, int major = 1) {
  const size_t fixed = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((fixed + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<uint8_t>(major), 0};
  for (size_t i = 0; i < fixed - 8; ++i)
    out.push_back(static_cast<uint8_t>(header.size() >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::string Dict(const std::string& descr, const std::string& shape, bool fortran = false) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
         ", 'shape': " + shape + ", }";
}

std::vector<uint8_t> Iota(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i);
  return v;
}

class NumpyTest : public ::testing::Test {
 protected:
  std::string Put(const std::vector<uint8_t>& bytes, const std::string& name = "arr.npy") {
    const std::string path = dir_.File(name);
    WriteBytes(path, bytes);
    return path;
  }
  /// Opening and loading fails with `code`; the message names the file and holds each phrase.
  void ExpectRejected(const std::vector<uint8_t>& bytes, StatusCode code,
                      std::vector<std::string> phrases, const std::string& name = "arr.npy") {
    const std::string path = Put(bytes, name);
    auto opened = Open(path, {});
    Status s = opened.ok() ? LoadAll(**opened).status() : opened.error();
    ASSERT_FALSE(s.ok()) << "opened and loaded";
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.message();
    EXPECT_EQ(s.message().rfind(path, 0), 0u) << "does not name the file: " << s.message();
    for (const auto& p : phrases) {
      EXPECT_NE(s.message().find(p), std::string::npos) << "lacks '" << p << "': " << s.message();
    }
  }
  /// Opens `bytes` as a .npy and returns tensor 0's bytes, checking dtype and shape.
  std::vector<uint8_t> LoadOne(const std::vector<uint8_t>& bytes, DType dtype, Shape shape) {
    const std::string path = Put(bytes);
    std::vector<uint8_t> result;
    for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
      ReadOptions o;
      o.io_mode = mode;
      auto opened = Open(path, o);
      EXPECT_TRUE(opened.ok()) << opened.status().ToString();
      if (!opened.ok()) return {};
      EXPECT_EQ((*opened)->format(), "numpy");
      EXPECT_EQ((*opened)->tensors().size(), 1u);
      const TensorInfo& info = (*opened)->tensors()[0];
      EXPECT_EQ(info.name, "arr");
      EXPECT_EQ(info.dtype, dtype);
      EXPECT_EQ(info.shape, shape);
      auto t = (*opened)->Load(0);
      EXPECT_TRUE(t.ok()) << t.status().ToString();
      if (!t.ok()) return {};
      std::vector<uint8_t> got(t->bytes().begin(), t->bytes().end());
      // LoadInto (pread for plain arrays) agrees with Load.
      std::vector<uint8_t> into(info.byte_size);
      EXPECT_TRUE((*opened)->LoadInto(0, into).ok());
      EXPECT_EQ(into, got);
      result = got;
    }
    return result;
  }

  TempDir dir_;
};

// ---- reading ----

TEST_F(NumpyTest, LittleEndianCOrderIsAZeroCopyView) {
  const std::vector<uint8_t> data = Iota(24);
  EXPECT_EQ(LoadOne(Npy(Dict("<f4", "(2, 3)"), data), DType::kF32, {2, 3}), data);
  auto opened = Open(dir_.File("arr.npy"), {});
  ASSERT_TRUE(opened.ok());
  auto a = (*opened)->Load(0), b = (*opened)->Load(0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->bytes().data(), b->bytes().data()) << "mapped data was copied";
}

TEST_F(NumpyTest, EveryDescr) {
  const struct {
    const char* descr;
    DType dtype;
  } cases[] = {
      {"|b1", DType::kBool}, {"|u1", DType::kU8},  {"|i1", DType::kI8},  {"<i2", DType::kI16},
      {"<u2", DType::kU16},  {"<f2", DType::kF16}, {"<i4", DType::kI32}, {"<u4", DType::kU32},
      {"<f4", DType::kF32},  {"<f8", DType::kF64}, {"<i8", DType::kI64}, {"<u8", DType::kU64},
      {"<c8", DType::kC64},  {"=f4", DType::kF32}, {"f8", DType::kF64},  {"<u1", DType::kU8}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.descr);
    const std::vector<uint8_t> data = Iota(3 * ElementSize(c.dtype));
    EXPECT_EQ(LoadOne(Npy(Dict(c.descr, "(3,)"), data), c.dtype, {3}), data);
  }
}

TEST_F(NumpyTest, BigEndianIsSwapped) {
  // >i2 [0x0102, 0x0304] and >c8 (1.0 + 2.0j): each float of a complex swaps on its own.
  EXPECT_EQ(LoadOne(Npy(Dict(">i2", "(2,)"), {1, 2, 3, 4}), DType::kI16, {2}),
            (std::vector<uint8_t>{2, 1, 4, 3}));
  const std::vector<uint8_t> be = {0x3F, 0x80, 0, 0, 0x40, 0, 0, 0};
  const std::vector<uint8_t> le = {0, 0, 0x80, 0x3F, 0, 0, 0, 0x40};
  EXPECT_EQ(LoadOne(Npy(Dict(">c8", "(1,)"), be), DType::kC64, {1}), le);
  EXPECT_EQ(LoadOne(Npy(Dict(">f8", "()"), {0x40, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18}),
                    DType::kF64, {}),
            (std::vector<uint8_t>{0x18, 0x2D, 0x44, 0x54, 0xFB, 0x21, 0x09, 0x40}));
}

TEST_F(NumpyTest, FortranOrderIsTransposedIntoCOrder) {
  // A 2x3 u8 array [[0,1,2],[3,4,5]] in Fortran order is stored column by column.
  EXPECT_EQ(LoadOne(Npy(Dict("|u1", "(2, 3)", true), {0, 3, 1, 4, 2, 5}), DType::kU8, {2, 3}),
            (std::vector<uint8_t>{0, 1, 2, 3, 4, 5}));
  // 2x3x2 i16, big-endian and Fortran at once: element (i,j,k) holds 100*i + 10*j + k.
  std::vector<uint8_t> f, c;
  for (int k = 0; k < 2; ++k)
    for (int j = 0; j < 3; ++j)
      for (int i = 0; i < 2; ++i) {
        const int v = 100 * i + 10 * j + k;
        f.push_back(static_cast<uint8_t>(v >> 8));
        f.push_back(static_cast<uint8_t>(v));
      }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 2; ++k) {
        const int v = 100 * i + 10 * j + k;
        c.push_back(static_cast<uint8_t>(v));
        c.push_back(static_cast<uint8_t>(v >> 8));
      }
  EXPECT_EQ(LoadOne(Npy(Dict(">i2", "(2, 3, 2)", true), f), DType::kI16, {2, 3, 2}), c);
  // Rank 1 Fortran is C.
  EXPECT_EQ(LoadOne(Npy(Dict("<u2", "(2,)", true), {1, 2, 3, 4}), DType::kU16, {2}),
            (std::vector<uint8_t>{1, 2, 3, 4}));
}

TEST_F(NumpyTest, ScalarsAndEmptyArrays) {
  EXPECT_EQ(LoadOne(Npy(Dict("<i4", "()"), {7, 0, 0, 0}), DType::kI32, {}),
            (std::vector<uint8_t>{7, 0, 0, 0}));
  EXPECT_EQ(LoadOne(Npy(Dict("<f4", "(0, 3)"), {}), DType::kF32, {0, 3}), std::vector<uint8_t>{});
  EXPECT_EQ(LoadOne(Npy(Dict("<f4", "(3, 0)", true), {}), DType::kF32, {3, 0}),
            std::vector<uint8_t>{});
}

TEST_F(NumpyTest, Versions2And3AndHeaderVariants) {
  const std::vector<uint8_t> data = Iota(8);
  EXPECT_EQ(LoadOne(Npy(Dict("<f4", "(2,)"), data, 2), DType::kF32, {2}), data);
  EXPECT_EQ(LoadOne(Npy(Dict("<f4", "(2,)"), data, 3), DType::kF32, {2}), data);
  // Keys in any order, double quotes, no trailing comma, Python 2 longs.
  EXPECT_EQ(LoadOne(Npy(R"({"shape": (2L,), "fortran_order": False, "descr": "<f4"})", data),
                    DType::kF32, {2}),
            data);
}

TEST_F(NumpyTest, NameIsTheFileStem) {
  const std::string path = Put(Npy(Dict("<f4", "(1,)"), Iota(4)), "layer.0.weight.npy");
  auto opened = Open(path, {});
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ((*opened)->tensors()[0].name, "layer.0.weight");
}

// ---- .npy rules ----

TEST_F(NumpyTest, ObjectArraysAreUnsafe) {
  for (const char* descr : {"|O", "O", "<O8"}) {
    ExpectRejected(Npy(Dict(descr, "(2,)"), {0x80, 0x02, '.'}), StatusCode::kUnsafe,
                   {"object array", "pickle", descr});
  }
}

TEST_F(NumpyTest, StructuredAndTextAndDatetimeAreUnsupported) {
  ExpectRejected(Npy("{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, "
                     "'shape': (1,), }",
                     Iota(8)),
                 StatusCode::kUnsupported, {"structured"});
  for (const char* descr : {"<U5", "|S3", "|V8", "<M8[s]", "<m8[D]"}) {
    SCOPED_TRACE(descr);
    ExpectRejected(Npy(Dict(descr, "(1,)"), Iota(20)), StatusCode::kUnsupported, {descr});
  }
  ExpectRejected(Npy(Dict("<c16", "(1,)"), Iota(16)), StatusCode::kUnsupported, {"complex128"});
  ExpectRejected(Npy(Dict("<f16", "(1,)"), Iota(16)), StatusCode::kUnsupported, {"long double"});
}

TEST_F(NumpyTest, UnknownDescrIsCorrupt) {
  for (const char* descr : {"<f3", "<x4", "", "<", "|i4", "<i4444"}) {
    SCOPED_TRACE(descr);
    ExpectRejected(Npy(Dict(descr, "(1,)"), Iota(4)), StatusCode::kCorrupt, {"descr"});
  }
}

TEST_F(NumpyTest, BadMagicAndVersion) {
  std::vector<uint8_t> bytes = Npy(Dict("<f4", "(1,)"), Iota(4));
  bytes[1] = 'n';
  ExpectRejected(bytes, StatusCode::kCorrupt, {"magic"});
  bytes = Npy(Dict("<f4", "(1,)"), Iota(4));
  bytes[6] = 4;
  ExpectRejected(bytes, StatusCode::kUnsupported, {"version 4.0"});
  bytes[6] = 1;
  bytes[7] = 1;
  ExpectRejected(bytes, StatusCode::kUnsupported, {"version 1.1"});
}

TEST_F(NumpyTest, HeaderLengthCapped) {
  // v2 with a claimed 16 MiB header.
  std::vector<uint8_t> bytes = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0, 0, 0, 1};
  ExpectRejected(bytes, StatusCode::kLimitExceeded, {"16777216", "limit of 1048576"});
  ReadOptions small;
  small.max_header_bytes = 32;
  const std::string path = Put(Npy(Dict("<f4", "(1,)"), Iota(4)));
  auto opened = Open(path, small);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), StatusCode::kLimitExceeded);
}

TEST_F(NumpyTest, HeaderPastTheEndOfFile) {
  std::vector<uint8_t> bytes = Npy(Dict("<f4", "(1,)"), {});
  bytes.resize(40);
  ExpectRejected(bytes, StatusCode::kCorrupt, {"runs past the end"});
}

TEST_F(NumpyTest, DictRules) {
  const std::vector<uint8_t> d = Iota(4);
  const struct {
    std::string dict;
    std::string phrase;
  } cases[] = {
      {"['descr', '<f4']", "not a dict"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unknown key"},
      {"{'descr': '<f4', 'fortran_order': False}", "lacks the key 'shape'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", "twice"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1)}", "not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", "not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "non-negative"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,)}", "malformed"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "after the dict"},
      {"{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", "expected ','"},
      {"{'descr': '<f\\x34', 'fortran_order': False, 'shape': (1,)}", "escapes"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", "is not a numpy dtype"},
      {"{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}", "expected ':'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "overflows"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.dict);
    ExpectRejected(Npy(c.dict, d), StatusCode::kCorrupt, {c.phrase});
  }
}

TEST_F(NumpyTest, HugeShapeProductIsRefusedNotAllocated) {
  ExpectRejected(Npy(Dict("<f8", "(4294967296, 4294967296)"), {}), StatusCode::kLimitExceeded,
                 {"shape"});
}

TEST_F(NumpyTest, RankLimit) {
  ReadOptions o;
  o.max_rank = 2;
  const std::string path = Put(Npy(Dict("|u1", "(1, 1, 1)"), {5}));
  auto opened = Open(path, o);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), StatusCode::kLimitExceeded) << opened.error().ToString();
}

TEST_F(NumpyTest, DataMustMatchTheShapeExactly) {
  ExpectRejected(Npy(Dict("<f4", "(2, 3)"), Iota(20)), StatusCode::kCorrupt,
                 {"data is 20 bytes", "needs 24"});
  ExpectRejected(Npy(Dict("<f4", "(2, 3)"), Iota(28)), StatusCode::kCorrupt,
                 {"data is 28 bytes", "needs 24"});
}

// The conformance suite writes .npz (a .npy holds one tensor); these are its truncation and
// bit-flip checks for .npy.
TEST_F(NumpyTest, EveryNpyTruncationFailsCleanly) {
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("w", DType::kF32, {3, 4}, 1)).ok());
  const std::string path = dir_.File("whole.npy");
  ASSERT_TRUE(Write(m, path, {}).ok());
  const std::vector<uint8_t> whole = ReadBytes(path);
  for (size_t len = 0; len < whole.size(); ++len) {
    const std::string cut = Put(std::vector<uint8_t>(whole.begin(), whole.begin() + len), "c.npy");
    for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
      ReadOptions o;
      o.io_mode = mode;
      auto opened = Open(cut, o);
      Status s = opened.ok() ? LoadAll(**opened).status() : opened.error();
      ASSERT_FALSE(s.ok()) << len << "-byte prefix opened";
      EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.ToString();
      EXPECT_EQ(s.message().rfind(cut + ": ", 0), 0u) << s.message();
      EXPECT_EQ(s.message().find(cut, 1), std::string::npos) << s.message();
    }
  }
}

TEST_F(NumpyTest, NpyBitFlipsFailCleanlyOrStayConsistent) {
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("w", DType::kI16, {2, 3}, 1)).ok());
  const std::string path = dir_.File("whole.npy");
  ASSERT_TRUE(Write(m, path, {}).ok());
  const std::vector<uint8_t> whole = ReadBytes(path);
  for (size_t i = 0; i < whole.size(); ++i) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x20}, uint8_t{0x80}}) {
      std::vector<uint8_t> flipped = whole;
      flipped[i] ^= mask;
      const std::string f = Put(flipped, "f.npy");
      auto opened = Open(f, {});
      Status s = opened.ok() ? LoadAll(**opened).status() : opened.error();
      if (s.ok()) {
        auto again = Open(f, {});
        ASSERT_TRUE(again.ok());
        const TensorInfo& info = (*again)->tensors()[0];
        EXPECT_EQ(ByteSize(info.dtype, info.shape).value_or(~0ull), info.byte_size);
        continue;
      }
      EXPECT_TRUE(s.code() == StatusCode::kCorrupt || s.code() == StatusCode::kUnsupported ||
                  s.code() == StatusCode::kLimitExceeded || s.code() == StatusCode::kUnsafe)
          << "byte " << i << ": " << s.ToString();
      EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.message();
    }
  }
}

// ---- writing ----

TEST_F(NumpyTest, HeaderIsVersion1PaddedTo64) {
  auto h = BuildHeader(DType::kF32, {3, 4});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->size() % 64, 0u);
  EXPECT_EQ((*h)[6], 1);
  EXPECT_EQ(h->back(), '\n');
  EXPECT_NE(h->find("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"),
            std::string::npos);
  EXPECT_NE(BuildHeader(DType::kU8, {5})->find("'shape': (5,)"), std::string::npos);
  EXPECT_NE(BuildHeader(DType::kBool, {})->find("'descr': '|b1'"), std::string::npos);
  EXPECT_NE(BuildHeader(DType::kBool, {})->find("'shape': ()"), std::string::npos);
  // A rank-30000 shape needs more than 65535 header bytes: version 2.
  auto big = BuildHeader(DType::kU8, Shape(std::vector<uint64_t>(30000, 1)));
  ASSERT_TRUE(big.ok());
  EXPECT_EQ((*big)[6], 2);
  EXPECT_EQ(big->size() % 64, 0u);
  auto parsed = ParseHeader({reinterpret_cast<const uint8_t*>(big->data()), big->size()},
                            kMaxHeaderBytes, 100000);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->info.shape.rank(), 30000u);
  EXPECT_EQ(parsed->data_offset, big->size());
}

TEST_F(NumpyTest, NpyWriteRoundTripsAndNeedsOneTensor) {
  Model one;
  ASSERT_TRUE(one.Add(PatternTensor("w", DType::kI64, {2, 5}, 3)).ok());
  const std::string path = dir_.File("out.npy");
  ASSERT_TRUE(Write(one, path, {}).ok());
  const std::vector<uint8_t> bytes = ReadBytes(path);
  auto opened = Open(path, {});
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ((*opened)->tensors()[0].name, "out");
  auto t = (*opened)->Load(0);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->bytes().data()) % 64, 0u);
  auto want = one.Load(0);
  EXPECT_TRUE(
      std::equal(t->bytes().begin(), t->bytes().end(), want->bytes().begin(), want->bytes().end()));

  Model two;
  ASSERT_TRUE(two.Add(PatternTensor("a", DType::kF32, {2}, 1)).ok());
  ASSERT_TRUE(two.Add(PatternTensor("b", DType::kF32, {2}, 2)).ok());
  const std::string p2 = dir_.File("two.npy");
  Status s = Write(two, p2, {});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("exactly one array"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(".npz"), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(p2));
  EXPECT_EQ(Write(Model(), p2, {}).code(), StatusCode::kInvalidArgument);
}

TEST_F(NumpyTest, DTypesWithoutANumpyMatchAreRefusedByName) {
  for (DType d : {DType::kBF16, DType::kF8E4M3, DType::kF8E5M2}) {
    for (const char* name : {"x.npy", "x.npz"}) {
      Model m;
      ASSERT_TRUE(m.Add(PatternTensor("ok", DType::kF32, {2}, 1)).ok());
      ASSERT_TRUE(m.Add(PatternTensor("emb.weight", d, {2}, 1)).ok());
      Model single;
      ASSERT_TRUE(single.Add(PatternTensor("emb.weight", d, {2}, 1)).ok());
      const std::string path = dir_.File(name);
      Status s = Write(std::string(name).ends_with(".npy") ? single : m, path, {});
      EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.ToString();
      EXPECT_NE(s.message().find("'emb.weight'"), std::string::npos) << s.message();
      EXPECT_NE(s.message().find(std::string(DTypeName(d))), std::string::npos) << s.message();
      EXPECT_NE(s.message().find("--dtype f32"), std::string::npos) << s.message();
      EXPECT_FALSE(fs::exists(path));
    }
  }
}

// ---- .npz ----

TEST_F(NumpyTest, NpzRoundTripAlignedZeroCopyWithMetadata) {
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("a/b.weight", DType::kF32, {3, 5}, 1)).ok());
  ASSERT_TRUE(m.Add(PatternTensor("c", DType::kC64, {7}, 2)).ok());
  ASSERT_TRUE(m.Add(PatternTensor("d", DType::kU8, {3}, 3)).ok());
  m.mutable_metadata() = Json{{"format", "pt"}, {"n", 3}};
  const std::string path = dir_.File("m.npz");
  ASSERT_TRUE(Write(m, path, {}).ok());
  for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
    ReadOptions o;
    o.io_mode = mode;
    auto opened = Open(path, o);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    EXPECT_TRUE(testing::SameModel(m, **opened));
    EXPECT_EQ((*opened)->metadata(), m.metadata());
    for (size_t i = 0; i < 3; ++i) {
      auto t = (*opened)->Load(i);
      ASSERT_TRUE(t.ok());
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t->bytes().data()) % 64, 0u);
      std::vector<uint8_t> into(t->info.byte_size);
      ASSERT_TRUE((*opened)->LoadInto(i, into).ok());
      EXPECT_TRUE(std::equal(into.begin(), into.end(), t->bytes().begin()));
    }
    if (mode == IoMode::kMmap) {
      auto a = (*opened)->Load(0), b = (*opened)->Load(0);
      EXPECT_EQ(a->bytes().data(), b->bytes().data()) << "stored member was copied";
    }
  }
  // Each member's data starts at a multiple of 64 in the file (the array, after its header).
  auto file = InputFile::Open(path);
  auto archive = zip::Reader::Open(*file);
  ASSERT_TRUE(archive.ok());
  for (const auto& e : (*archive)->entries()) EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
}

TEST_F(NumpyTest, NpzMemberCrcIsCheckedOnEveryLoadPath) {
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("w", DType::kF32, {16}, 1)).ok());
  const std::string path = dir_.File("c.npz");
  ASSERT_TRUE(Write(m, path, {}).ok());
  std::vector<uint8_t> bytes = ReadBytes(path);
  // Flip one bit of the array's last byte (just before the central directory).
  auto file = InputFile::Open(path);
  auto archive = zip::Reader::Open(*file);
  ASSERT_TRUE(archive.ok());
  const auto& e = (*archive)->entries()[0];
  bytes[e.data_offset + e.size - 1] ^= 1;
  WriteBytes(path, bytes);
  auto opened = Open(path, {});
  ASSERT_TRUE(opened.ok());
  auto t = (*opened)->Load(0);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(t.error().message().find("CRC-32"), std::string::npos) << t.error().message();
  std::vector<uint8_t> into(64);
  Status s = (*opened)->LoadInto(0, into);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.ToString();
  EXPECT_NE(s.message().find("CRC-32"), std::string::npos) << s.message();
}

TEST_F(NumpyTest, NpzWithANonArrayMemberIsUnsupported) {
  const std::string path = dir_.File("odd.npz");
  auto w = zip::Writer::Create(path);
  ASSERT_TRUE(w.ok());
  auto header = BuildHeader(DType::kU8, {1});
  const std::vector<uint8_t> one = {1};
  const std::span<const uint8_t> arr[] = {
      {reinterpret_cast<const uint8_t*>(header->data()), header->size()}, one};
  const std::span<const uint8_t> pkl[] = {one};
  ASSERT_TRUE((*w)->AddStored("a.npy", arr).ok());
  ASSERT_TRUE((*w)->AddStored("data.pkl", pkl).ok());
  ASSERT_TRUE((*w)->Finish(false).ok());
  auto opened = Open(path, {});
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), StatusCode::kUnsupported);
  EXPECT_NE(opened.error().message().find("'data.pkl'"), std::string::npos);
}

TEST_F(NumpyTest, NpzMemberWithObjectArrayIsUnsafe) {
  const std::string path = dir_.File("obj.npz");
  auto w = zip::Writer::Create(path);
  ASSERT_TRUE(w.ok());
  const std::vector<uint8_t> npy = Npy(Dict("|O", "(1,)"), {0x80, 0x02, '.'});
  const std::span<const uint8_t> parts[] = {npy};
  ASSERT_TRUE((*w)->AddStored("evil.npy", parts).ok());
  ASSERT_TRUE((*w)->Finish(false).ok());
  auto opened = Open(path, {});
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), StatusCode::kUnsafe);
  EXPECT_NE(opened.error().message().find("'evil.npy'"), std::string::npos)
      << opened.error().message();
  EXPECT_NE(opened.error().message().find("pickle"), std::string::npos);
}

TEST_F(NumpyTest, NpzTraversalMemberIsUnsafe) {
  // Built by hand through a zip writer that allows it would be refused; patch the bytes instead.
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("xx/evil", DType::kU8, {1}, 1)).ok());
  const std::string path = dir_.File("slip.npz");
  ASSERT_TRUE(Write(m, path, {}).ok());
  std::vector<uint8_t> bytes = ReadBytes(path);
  for (size_t i = 0; i + 2 <= bytes.size(); ++i) {
    if (bytes[i] == 'x' && bytes[i + 1] == 'x') bytes[i] = bytes[i + 1] = '.';
  }
  WriteBytes(path, bytes);
  auto opened = Open(path, {});
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), StatusCode::kUnsafe) << opened.error().ToString();
  EXPECT_NE(opened.error().message().find("'../evil.npy'"), std::string::npos);
}

TEST_F(NumpyTest, NpzNamesThatCannotBeMembersAreRefusedOnWrite) {
  for (const std::string& name :
       {std::string("../x"), std::string("/abs"), std::string("nul\0x", 5)}) {
    Model m;
    ASSERT_TRUE(m.Add(PatternTensor(name, DType::kU8, {1}, 1)).ok());
    const std::string path = dir_.File("bad.npz");
    Status s = Write(m, path, {});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_FALSE(fs::exists(path));
  }
}

TEST_F(NumpyTest, NpzMetadataTooLargeForTheCommentIsRefused) {
  Model m;
  ASSERT_TRUE(m.Add(PatternTensor("w", DType::kU8, {1}, 1)).ok());
  m.mutable_metadata() = Json{{"big", std::string(70000, 'x')}};
  const std::string path = dir_.File("meta.npz");
  Status s = Write(m, path, {});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.ToString();
  EXPECT_NE(s.message().find("65535"), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(path));
}

// ---- detection ----

TEST(NumpyDetect, ClaimsNpyAndNpzButNotOtherZips) {
  auto span = [](const std::string& s) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  EXPECT_TRUE(Detect(span("\x93NUMPY\x01"), 100));
  EXPECT_FALSE(Detect(span("\x93NUMPX\x01"), 100));
  auto local = [](const std::string& name) {
    std::string h = "PK\x03\x04";
    h += std::string(22, '\0');
    h += static_cast<char>(name.size());
    h += '\0';
    h += std::string(2, '\0');
    return h + name;
  };
  EXPECT_TRUE(Detect(span(local("w.npy")), 1000));
  EXPECT_FALSE(Detect(span(local("archive/data.pkl")), 1000)) << "a torch checkpoint";
  EXPECT_FALSE(Detect(span(local("w.npy").substr(0, 32)), 1000)) << "name cut by the prefix";
}

}  // namespace
}  // namespace mp::numpy
