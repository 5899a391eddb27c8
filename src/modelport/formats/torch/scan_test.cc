// Tests of ScanFile: hand-made streams for each rule (memo tricks, payloads after a construct
// the VM stops at, several pickles, trailing data, polyglots, text that only looks like a
// pickle), zip damage made by patching archives that zip::Writer wrote, NumPy object arrays,
// and benign files written by Debian's torch 1.13 and by torch 2.11 (golden), which must come
// out safe. The malicious files made by Python itself are in tests/scan_cli_test.cc.
#include "modelport/formats/torch/scan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "modelport/formats/zip/zip.h"
#include "test_util.h"

namespace mp::torch {
namespace {

using namespace std::string_literals;
using ::mp::testing::GoldenDir;
using ::mp::testing::PythonHas;
using ::mp::testing::ReadBytes;
using ::mp::testing::Run;
using ::mp::testing::TempDir;
using ::mp::testing::WriteBytes;

std::vector<uint8_t> Bytes(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}
std::string Str(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

// posix.system('true') through REDUCE, protocol 2 (never run: scanning executes nothing).
const std::string kEvil =
    "\x80\x02"
    "cposix\nsystem\nX\x04\x00\x00\x00true\x85R."s;
// {'a': 1}, protocol 2.
const std::string kBenign =
    "\x80\x02}q\x00X\x01\x00\x00\x00"
    "aK\x01s."s;
// LONG1 of 9 bytes: 2^64 + 1, which Python reads and the VM (64-bit ints) does not.
const std::string kBigInt = "\x8a\x09\x01\x00\x00\x00\x00\x00\x00\x00\x01"s;

FileScan ScanOf(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir.File(name);
  WriteBytes(path, Bytes(bytes));
  auto scan = ScanFile(path);
  EXPECT_TRUE(scan.has_value()) << scan.error().ToString();
  return scan.has_value() ? *scan : FileScan{};
}

size_t CountReasons(const FileScan& s, Verdict severity) {
  return static_cast<size_t>(
      std::count_if(s.reasons.begin(), s.reasons.end(),
                    [&](const ScanReason& r) { return r.severity == severity; }));
}

// True if some reason of `severity` holds `needle`.
bool HasReason(const FileScan& s, Verdict severity, const std::string& needle) {
  for (const ScanReason& r : s.reasons)
    if (r.severity == severity && r.text.find(needle) != std::string::npos) return true;
  return false;
}

std::string AllReasons(const FileScan& s) {
  std::string out;
  for (const ScanReason& r : s.reasons)
    out += std::string(VerdictName(r.severity)) + " [" + r.where + "] " + r.text + "\n";
  return out;
}

const ScannedGlobal* FindImport(const FileScan& s, const std::string& name) {
  for (const ScannedGlobal& g : s.imports)
    if (g.name == name) return &g;
  return nullptr;
}

// A zip of stored entries written by modelport's own writer (for patching afterwards).
std::vector<uint8_t> MakeZip(const TempDir& dir,
                             const std::vector<std::pair<std::string, std::string>>& entries) {
  const std::string path = dir.File("made.zip");
  auto w = zip::Writer::Create(path);
  EXPECT_TRUE(w.has_value());
  for (const auto& [name, data] : entries) {
    const std::span<const uint8_t> part(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    EXPECT_TRUE((*w)->AddStored(name, std::span(&part, 1)).ok());
  }
  EXPECT_TRUE((*w)->Finish(false).ok());
  auto bytes = ReadBytes(path);
  std::filesystem::remove(path);
  return bytes;
}

// Offset of the header with signature `sig` ("PK\1\2" or "PK\3\4") whose name is `name`.
size_t HeaderOf(const std::vector<uint8_t>& z, const std::string& sig, const std::string& name) {
  const bool central = sig == "PK\x01\x02";
  const size_t name_at = central ? 46 : 30, len_at = central ? 28 : 26;
  const std::string s = Str(z);
  for (size_t p = s.find(sig); p != std::string::npos; p = s.find(sig, p + 1)) {
    const size_t len = static_cast<uint8_t>(s[p + len_at]) |
                       static_cast<size_t>(static_cast<uint8_t>(s[p + len_at + 1])) << 8;
    if (len == name.size() && s.compare(p + name_at, len, name) == 0) return p;
  }
  ADD_FAILURE() << "no header for " << name;
  return 0;
}

void Rename(std::vector<uint8_t>& z, size_t header, size_t name_at, const std::string& to) {
  std::memcpy(z.data() + header + name_at, to.data(), to.size());
}

// A .npy with `descr` and one element of shape (1,), followed by `data`.
std::string Npy(const std::string& descr, const std::string& data) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (1,), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  const uint16_t n = static_cast<uint16_t>(header.size());
  return "\x93NUMPY\x01\x00"s + static_cast<char>(n & 0xFF) + static_cast<char>(n >> 8) + header +
         data;
}

TEST(ScanTest, PlainPickleOfAllowedConstructsIsSafe) {
  TempDir dir;
  const FileScan s = ScanOf(dir, "plain.pkl", kBenign);
  EXPECT_EQ(s.format, "pickle");
  EXPECT_EQ(s.verdict, Verdict::kSafe) << AllReasons(s);
  ASSERT_EQ(s.pickles.size(), 1u);
  EXPECT_EQ(s.pickles[0].size, kBenign.size());
  EXPECT_TRUE(s.pickles[0].stream_status.ok());
  EXPECT_TRUE(s.reasons.empty());
}

TEST(ScanTest, ReduceOfAGlobalOutsideTheAllowListIsUnsafe) {
  TempDir dir;
  const FileScan s = ScanOf(dir, "evil.bin", kEvil);
  EXPECT_EQ(s.format, "pickle");
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kUnsafe, "byte 2: pickle imports 'posix.system'"))
      << AllReasons(s);
  const ScannedGlobal* g = FindImport(s, "posix.system");
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->opcode, "GLOBAL");
  EXPECT_EQ(g->offset, 2u);
  EXPECT_FALSE(g->allowed);
  ASSERT_EQ(s.calls.size(), 1u);
  EXPECT_EQ(s.calls[0].name, "posix.system");
  EXPECT_EQ(s.calls[0].opcode, "REDUCE");
}

TEST(ScanTest, MemoTrickStackGlobalNamesAreFollowed) {
  // 'posix' and 'system' are stored in the memo as values of a dict that is then dropped;
  // STACK_GLOBAL takes both names back from the memo.
  TempDir dir;
  const std::string p =
      "\x80\x04}\x94(\x8c\x01"
      "a\x94\x8c\x05posix\x94\x8c\x01"
      "b\x94\x8c\x06system\x94u0"
      "h\x02h\x04\x93\x8c\x04true\x85R."s;
  const FileScan s = ScanOf(dir, "memo.pkl", p);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  const ScannedGlobal* g = FindImport(s, "posix.system");
  ASSERT_NE(g, nullptr) << AllReasons(s);
  EXPECT_EQ(g->opcode, "STACK_GLOBAL");
  EXPECT_FALSE(g->after_break);
}

TEST(ScanTest, PayloadAfterAConstructTheVmStopsAtIsFound) {
  // The VM keeps ints in 64 bits and stops at 2^64 + 1; pickle.load reads on and runs the call.
  TempDir dir;
  const std::string p = "\x80\x02"s + kBigInt + "0" + kEvil.substr(2);
  const FileScan s = ScanOf(dir, "after_big_int.pkl", p);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  const ScannedGlobal* g = FindImport(s, "posix.system");
  ASSERT_NE(g, nullptr) << AllReasons(s);
  EXPECT_TRUE(g->after_break);
  EXPECT_EQ(g->offset, 2u + kBigInt.size() + 1);
  EXPECT_TRUE(HasReason(s, Verdict::kUnsafe, "'posix.system' (GLOBAL) after the point where"))
      << AllReasons(s);
  EXPECT_TRUE(
      HasReason(s, Verdict::kSuspicious, "pickle at byte 0 is broken: pickle byte 2 (LONG1)"))
      << AllReasons(s);
  ASSERT_EQ(s.pickles.size(), 1u);
  EXPECT_EQ(s.pickles[0].size, p.size());  // the opcode walk found its STOP
}

TEST(ScanTest, StackGlobalWhoseNamesCannotBeFollowedAfterABreakIsUnsafe) {
  // After the break, the names come from a POP shuffle the opcode walk does not model.
  TempDir dir;
  const std::string p =
      "\x80\x04"s + kBigInt + "0\x8c\x05posix\x8c\x06system\x8c\x01x0\x93" + "\x8c\x04true\x85R.";
  const FileScan s = ScanOf(dir, "shuffle.pkl", p);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kUnsafe, "cannot be told without running the pickle"))
      << AllReasons(s);
  const ScannedGlobal* g = FindImport(s, "<unknown>");
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->opcode, "STACK_GLOBAL");
}

TEST(ScanTest, PayloadBeforeAMissingStopIsUnsafe) {
  TempDir dir;
  const FileScan s = ScanOf(dir, "no_stop.pkl", kEvil.substr(0, kEvil.size() - 1));
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kUnsafe, "'posix.system'")) << AllReasons(s);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious, "without STOP")) << AllReasons(s);
}

TEST(ScanTest, EveryPickleInARowIsScanned) {
  TempDir dir;
  const FileScan s = ScanOf(dir, "two.pkl", kBenign + kEvil);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  ASSERT_EQ(s.pickles.size(), 2u);
  EXPECT_EQ(s.pickles[1].offset, kBenign.size());
  const ScannedGlobal* g = FindImport(s, "posix.system");
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->offset, kBenign.size() + 2);  // offsets count from the start of the file
  EXPECT_TRUE(HasReason(s, Verdict::kUnsafe, "byte " + std::to_string(kBenign.size() + 2) + ":"))
      << AllReasons(s);
}

TEST(ScanTest, TrailingBytesAfterThePicklesAreSuspicious) {
  TempDir dir;
  const FileScan s = ScanOf(dir, "trailing.pkl", kBenign + "\x00\x01\x02"s);
  EXPECT_EQ(s.verdict, Verdict::kSuspicious);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious,
                        "3 bytes after the pickle ending at byte " +
                            std::to_string(kBenign.size()) + " are not a pickle"))
      << AllReasons(s);
}

TEST(ScanTest, TextOpcodesOfProtocols0And1) {
  TempDir dir;
  // GLOBAL + REDUCE without a PROTO opcode; INST; OBJ.
  FileScan s = ScanOf(dir, "p0.txt", "cos\nsystem\n(S'true'\ntR.");
  EXPECT_EQ(s.format, "pickle");
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_NE(FindImport(s, "os.system"), nullptr);
  s = ScanOf(dir, "inst.txt", "(S'true'\nios\nsystem\n.");
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kUnsafe, "'os.system' (INST)")) << AllReasons(s);
  s = ScanOf(dir, "obj.txt", "(cos\nsystem\nS'true'\no.");
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kUnsafe, "'os.system' (OBJ)")) << AllReasons(s);
}

TEST(ScanTest, TextThatOnlyLooksLikeAPickleIsNotOne) {
  // "import x" is INST of module "mport x" (nothing imports it); "Git 1.7.3." is a float
  // and a STOP followed by prose; "class A:" is GLOBAL of "lass A:".
  TempDir dir;
  for (const std::string& text :
       {"import os\nimport sys\n"s, "Git 1.7.3.5 Release Notes\n=========\n"s,
        "class A:\n    pass\n"s, "{\"weight_map\": {}}\n"s,
        "\x7f"
        "ELF\x02\x01\x01"s}) {
    const FileScan s = ScanOf(dir, "text", text);
    EXPECT_EQ(s.verdict, Verdict::kNoPickle) << text << "\n" << AllReasons(s);
    EXPECT_EQ(s.format, "unknown");
    EXPECT_TRUE(s.pickles.empty());
    EXPECT_TRUE(s.reasons.empty()) << AllReasons(s);
  }
  // A whole file of clean plain-data pickles in protocol 0 is a pickle, and safe.
  const FileScan s = ScanOf(dir, "p0_list", "(lp0\nI1\naI2\na.");
  EXPECT_EQ(s.format, "pickle");
  EXPECT_EQ(s.verdict, Verdict::kSafe) << AllReasons(s);
}

TEST(ScanTest, OtherFormatsHaveNoPickleButPolyglotsAreFound) {
  TempDir dir;
  // A safetensors header of 640 bytes: the file starts "\x80\x02" like a pickle.
  std::string header = R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  header.resize(640, ' ');
  FileScan s =
      ScanOf(dir, "st", "\x80\x02\x00\x00\x00\x00\x00\x00"s + header + "\x00\x00\x80\x3f"s);
  EXPECT_EQ(s.format, "safetensors");
  EXPECT_EQ(s.verdict, Verdict::kNoPickle) << AllReasons(s);
  // GGUF magic that is also a pickle: BINFLOAT swallows "GUF" and the version.
  s = ScanOf(dir, "poly.gguf", "GGUF\x03\x00\x00\x00\x00"s + kEvil);
  EXPECT_EQ(s.format, "gguf");
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious, "file is gguf but also a pickle"))
      << AllReasons(s);
  EXPECT_NE(FindImport(s, "posix.system"), nullptr);
  // A plain GGUF header is not a pickle.
  s = ScanOf(dir, "plain.gguf", "GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"s);
  EXPECT_EQ(s.verdict, Verdict::kNoPickle) << AllReasons(s);
}

TEST(ScanTest, GoldenSafetensorsHaveNoPickle) {
  MP_SKIP_WITHOUT_GOLDEN();
  for (const auto& e : std::filesystem::recursive_directory_iterator(GoldenDir())) {
    if (e.path().extension() != ".safetensors") continue;
    auto s = ScanFile(e.path().string());
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->format, "safetensors") << e.path();
    EXPECT_EQ(s->verdict, Verdict::kNoPickle) << e.path() << "\n" << AllReasons(*s);
  }
}

TEST(ScanTest, HostileNamesStayOnOneLine) {
  TempDir dir;
  const FileScan s = ScanOf(dir, "esc.pkl",
                            "\x80\x02"
                            "cos\x1b[31m\nsys\x07tem\n."s);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  ASSERT_FALSE(s.reasons.empty());
  for (const ScanReason& r : s.reasons) {
    EXPECT_EQ(r.text.find('\x1b'), std::string::npos);
    EXPECT_EQ(r.text.find('\x07'), std::string::npos);
  }
  EXPECT_TRUE(HasReason(s, Verdict::kUnsafe, "'os\\x1b[31m.sys\\x07tem'")) << AllReasons(s);
}

TEST(ScanTest, EmptyMissingAndFolders) {
  TempDir dir;
  const FileScan s = ScanOf(dir, "empty", "");
  EXPECT_EQ(s.format, "empty");
  EXPECT_EQ(s.verdict, Verdict::kNoPickle);
  auto missing = ScanFile(dir.File("nope"));
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);
  EXPECT_FALSE(ScanFile(dir.path().string()).has_value());
}

TEST(ScanTest, NpyObjectArraysAreScannedAndPlainArraysHaveNoPickle) {
  TempDir dir;
  FileScan s = ScanOf(dir, "obj.npy", Npy("|O", kEvil));
  EXPECT_EQ(s.format, "npy");
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  ASSERT_EQ(s.pickles.size(), 1u);
  EXPECT_EQ(s.pickles[0].role, "object array");
  EXPECT_EQ(s.pickles[0].offset, Npy("|O", kEvil).size() - kEvil.size());
  EXPECT_EQ(s.pickles[0].offset % 64, 0u);
  EXPECT_NE(FindImport(s, "posix.system"), nullptr);
  s = ScanOf(dir, "f4.npy", Npy("<f4", "\x00\x00\x80\x3f"s));
  EXPECT_EQ(s.format, "npy");
  EXPECT_EQ(s.verdict, Verdict::kNoPickle) << AllReasons(s);
  // In an .npz: only the object member is a pickle.
  WriteBytes(dir.File("a.npz"), MakeZip(dir, {{"a.npy", Npy("<f4", "\x00\x00\x80\x3f"s)},
                                              {"b.npy", Npy("|O", kEvil)}}));
  auto z = ScanFile(dir.File("a.npz"));
  ASSERT_TRUE(z.has_value());
  EXPECT_EQ(z->format, "npz");
  EXPECT_EQ(z->verdict, Verdict::kUnsafe);
  ASSERT_EQ(z->pickles.size(), 1u);
  EXPECT_EQ(z->pickles[0].where, "b.npy");
  WriteBytes(dir.File("b.npz"), MakeZip(dir, {{"a.npy", Npy("<f4", "\x00\x00\x80\x3f"s)}}));
  z = ScanFile(dir.File("b.npz"));
  ASSERT_TRUE(z.has_value());
  EXPECT_EQ(z->format, "npz");
  EXPECT_EQ(z->verdict, Verdict::kNoPickle) << AllReasons(*z);
}

class ScanZipTest : public ::testing::Test {
 protected:
  // a/data.pkl (benign), a/version, a/other.pkl (given), written by zip::Writer.
  std::vector<uint8_t> Archive(const std::string& other = kBenign) {
    return MakeZip(dir_, {{"a/data.pkl", kBenign}, {"a/version", "3\n"}, {"a/other.pkl", other}});
  }
  FileScan Scan(const std::vector<uint8_t>& z) {
    WriteBytes(dir_.File("z.pt"), z);
    auto s = ScanFile(dir_.File("z.pt"));
    EXPECT_TRUE(s.has_value());
    return s.has_value() ? *s : FileScan{};
  }
  TempDir dir_;
};

TEST_F(ScanZipTest, IntactArchiveScansEveryPklEntry) {
  FileScan s = Scan(Archive());
  EXPECT_EQ(s.format, "torch");
  EXPECT_EQ(s.verdict, Verdict::kSafe) << AllReasons(s);
  ASSERT_EQ(s.pickles.size(), 2u);
  EXPECT_EQ(s.pickles[0].where, "a/data.pkl");
  EXPECT_EQ(s.pickles[1].where, "a/other.pkl");
  s = Scan(Archive(kEvil));
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  ASSERT_EQ(s.imports.size(), 1u);
  EXPECT_EQ(s.imports[0].where, "a/other.pkl");
  EXPECT_EQ(s.imports[0].name, "posix.system");
}

TEST_F(ScanZipTest, CrcMismatchIsSuspiciousAndTheDataStillScanned) {
  std::vector<uint8_t> z = Archive(kEvil);
  // Corrupt the recorded CRC of a/other.pkl in both headers (so they agree).
  const size_t local = HeaderOf(z, "PK\x03\x04", "a/other.pkl");
  const size_t central = HeaderOf(z, "PK\x01\x02", "a/other.pkl");
  z[local + 14] ^= 0xFF;
  z[central + 16] ^= 0xFF;
  const FileScan s = Scan(z);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious, "CRC-32")) << AllReasons(s);
  EXPECT_NE(FindImport(s, "posix.system"), nullptr);
  // The same with a benign entry: suspicious only.
  std::vector<uint8_t> b = Archive();
  b[HeaderOf(b, "PK\x03\x04", "a/other.pkl") + 14] ^= 0xFF;
  b[HeaderOf(b, "PK\x01\x02", "a/other.pkl") + 16] ^= 0xFF;
  EXPECT_EQ(Scan(b).verdict, Verdict::kSuspicious);
}

TEST_F(ScanZipTest, LocalNameDifferingFromTheCentralNameIsFollowed) {
  std::vector<uint8_t> z = Archive(kEvil);
  Rename(z, HeaderOf(z, "PK\x03\x04", "a/other.pkl"), 30, "a/other.txt");
  const FileScan s = Scan(z);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious,
                        "central directory name 'a/other.pkl' differs from the local header name "
                        "'a/other.txt'"))
      << AllReasons(s);
  EXPECT_NE(FindImport(s, "posix.system"), nullptr);
  // And the other way round: a .pkl name in the local header only is scanned too.
  std::vector<uint8_t> y = Archive(kEvil);
  Rename(y, HeaderOf(y, "PK\x01\x02", "a/other.pkl"), 46, "a/other.txt");
  const FileScan t = Scan(y);
  EXPECT_EQ(t.verdict, Verdict::kUnsafe) << AllReasons(t);
  EXPECT_NE(FindImport(t, "posix.system"), nullptr);
}

TEST_F(ScanZipTest, EncryptionFlagInTheLocalHeaderOnlyDoesNotHideTheEntry) {
  std::vector<uint8_t> z = Archive(kEvil);
  z[HeaderOf(z, "PK\x03\x04", "a/other.pkl") + 6] |= 1;
  const FileScan s = Scan(z);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious, "encryption flag differs")) << AllReasons(s);
  EXPECT_NE(FindImport(s, "posix.system"), nullptr);
}

TEST_F(ScanZipTest, DuplicateNamesAreSuspiciousAndEveryCopyScanned) {
  std::vector<uint8_t> z =
      MakeZip(dir_, {{"a/data.pkl", kBenign}, {"a/data.pkX", kEvil}, {"a/version", "3\n"}});
  Rename(z, HeaderOf(z, "PK\x03\x04", "a/data.pkX"), 30, "a/data.pkl");
  Rename(z, HeaderOf(z, "PK\x01\x02", "a/data.pkX"), 46, "a/data.pkl");
  const FileScan s = Scan(z);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious, "name appears more than once")) << AllReasons(s);
  EXPECT_EQ(s.pickles.size(), 2u);
  EXPECT_NE(FindImport(s, "posix.system"), nullptr);
}

TEST_F(ScanZipTest, ZipSlipNamesAreUnsafe) {
  std::vector<uint8_t> z = MakeZip(dir_, {{"a/data.pkl", kBenign}, {"aa/x", "x"}});
  Rename(z, HeaderOf(z, "PK\x03\x04", "aa/x"), 30, "../x");
  Rename(z, HeaderOf(z, "PK\x01\x02", "aa/x"), 46, "../x");
  const FileScan s = Scan(z);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  ASSERT_EQ(CountReasons(s, Verdict::kUnsafe), 1u) << AllReasons(s);
  EXPECT_TRUE(HasReason(s, Verdict::kUnsafe, "zip-slip")) << AllReasons(s);
  ASSERT_EQ(s.pickles.size(), 1u);  // a/data.pkl, benign: the name alone is unsafe
  EXPECT_TRUE(s.pickles[0].stream_status.ok());
}

TEST_F(ScanZipTest, MissingCentralDirectoryFallsBackToLocalHeaders) {
  std::vector<uint8_t> z = Archive(kEvil);
  z.resize(HeaderOf(z, "PK\x01\x02", "a/data.pkl"));  // cut the directory and end record
  const FileScan s = Scan(z);
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious, "no end of central directory record"))
      << AllReasons(s);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious, "found by walking local headers"))
      << AllReasons(s);
  EXPECT_EQ(s.pickles.size(), 2u);
}

TEST_F(ScanZipTest, ZipAppendedToAPickleIsScannedToo) {
  // torch.load reads the pickle at byte 0; zipfile reads the archive at the end.
  const std::vector<uint8_t> z = Archive(kEvil);
  std::vector<uint8_t> file = Bytes(kBenign);
  file.insert(file.end(), z.begin(), z.end());
  const FileScan s = Scan(file);
  EXPECT_EQ(s.format, "pickle");
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious, "a zip archive is appended")) << AllReasons(s);
  const ScannedGlobal* g = FindImport(s, "posix.system");
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->where, "a/other.pkl");
}

TEST_F(ScanZipTest, TorchScriptClassesAreSuspiciousOnlyInTorchScriptArchives) {
  // NEWOBJ of a __torch__ class, then BUILD with its attributes: what torch.jit.save writes.
  const std::string script =
      "\x80\x02"
      "c__torch__\nM\n)\x81}b."s;
  FileScan s = Scan(MakeZip(dir_, {{"a/data.pkl", script},
                                   {"a/constants.pkl", "\x80\x02)."s},
                                   {"a/code/__torch__.py", "def forward(self): ...\n"}}));
  EXPECT_EQ(s.format, "torchscript");
  EXPECT_EQ(s.verdict, Verdict::kSuspicious) << AllReasons(s);
  EXPECT_TRUE(HasReason(s, Verdict::kSuspicious, "TorchScript archive")) << AllReasons(s);
  ASSERT_NE(FindImport(s, "__torch__.M"), nullptr);
  EXPECT_TRUE(FindImport(s, "__torch__.M")->allowed);
  EXPECT_TRUE(s.pickles[0].torchscript);
  // Without constants.pkl torch.load unpickles data.pkl with Python: __torch__.M is an import
  // like any other.
  s = Scan(MakeZip(dir_, {{"a/data.pkl", script}, {"a/version", "3\n"}}));
  EXPECT_EQ(s.format, "torch");
  EXPECT_EQ(s.verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(s, Verdict::kUnsafe, "'__torch__.M'")) << AllReasons(s);
}

// ---- Benign files written by real torch ----------------------------------------------------

// Runs a Python script file (TorchScript needs source it can read) with `dir` as argv[1].
void RunScript(const TempDir& dir, const std::string& script) {
  const std::string py = dir.File("make.py");
  std::ofstream(py) << script;
  auto r = Run("/usr/bin/python3 '" + py + "' '" + dir.path().string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST(ScanTorchTest, Torch113CheckpointsAreSafe) {
  if (!PythonHas("torch")) GTEST_SKIP() << "/usr/bin/python3 lacks torch";
  TempDir dir;
  RunScript(dir, R"(
import os, sys, torch
d = sys.argv[1]
t = {}
for name, dt in [('f32', torch.float32), ('f64', torch.float64), ('f16', torch.float16),
                 ('bf16', torch.bfloat16), ('i64', torch.int64), ('i32', torch.int32),
                 ('i16', torch.int16), ('i8', torch.int8), ('u8', torch.uint8),
                 ('b', torch.bool), ('c64', torch.complex64)]:
    t[name] = (torch.arange(12) % 5).reshape(3, 4).to(dt)
base = torch.arange(20, dtype=torch.float32).reshape(4, 5)
t['view'] = base[1:3, ::2]
t['tied_a'] = base
t['tied_b'] = base
torch.save(t, os.path.join(d, 'dtypes.pt'))
torch.save(t, os.path.join(d, 'dtypes_legacy.pt'), _use_new_zipfile_serialization=False)
net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
opt = torch.optim.Adam(net.parameters())
net(torch.ones(2, 4)).sum().backward()
opt.step()
torch.save(net.state_dict(), os.path.join(d, 'state_dict.pt'))
torch.save({'state_dict': net.state_dict(), 'optimizer': opt.state_dict(), 'epoch': 3,
            'config': {'lr': 1e-3, 'name': 'net', 'layers': [4, 3]}},
           os.path.join(d, 'checkpoint.pt'))
torch.save({'p': torch.nn.Parameter(torch.ones(3))}, os.path.join(d, 'parameter.pt'))
torch.save(net, os.path.join(d, 'whole_module.pt'))
)");
  for (const std::string name :
       {"dtypes.pt", "state_dict.pt", "checkpoint.pt", "parameter.pt", "dtypes_legacy.pt"}) {
    auto s = ScanFile(dir.File(name));
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->verdict, Verdict::kSafe) << name << "\n" << AllReasons(*s);
    EXPECT_TRUE(s->reasons.empty()) << name;
    for (const ScannedGlobal& g : s->imports) EXPECT_TRUE(g.allowed) << name << ": " << g.name;
    EXPECT_NE(FindImport(*s, "torch._utils._rebuild_tensor_v2"), nullptr) << name;
  }
  auto legacy = ScanFile(dir.File("dtypes_legacy.pt"));
  ASSERT_TRUE(legacy.has_value());
  EXPECT_EQ(legacy->format, "torch-legacy");
  ASSERT_EQ(legacy->pickles.size(), 5u);
  const std::vector<std::string> roles = {"magic number", "protocol version", "sys_info", "object",
                                          "storage keys"};
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(legacy->pickles[i].role, roles[i]);
  EXPECT_EQ(ScanFile(dir.File("dtypes.pt"))->format, "torch");
  // Saving the whole module pickles its classes: unsafe, naming them.
  auto whole = ScanFile(dir.File("whole_module.pt"));
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->verdict, Verdict::kUnsafe);
  EXPECT_TRUE(HasReason(*whole, Verdict::kUnsafe, "'torch.nn.modules.linear.Linear'"))
      << AllReasons(*whole);
  // Bytes after the last storage of a legacy file are not part of it.
  auto bytes = ReadBytes(dir.File("dtypes_legacy.pt"));
  bytes.insert(bytes.end(), {'j', 'u', 'n', 'k'});
  WriteBytes(dir.File("legacy_trailing.pt"), bytes);
  auto trailing = ScanFile(dir.File("legacy_trailing.pt"));
  ASSERT_TRUE(trailing.has_value());
  EXPECT_EQ(trailing->verdict, Verdict::kSuspicious);
  EXPECT_TRUE(HasReason(*trailing, Verdict::kSuspicious, "4 bytes after the last storage"))
      << AllReasons(*trailing);
}

TEST(ScanTorchTest, GoldenTorch211FilesAreSafe) {
  MP_SKIP_WITHOUT_GOLDEN();
  std::vector<std::filesystem::path> files = {
      GoldenDir() / "torch" / "current_torch_state_dict.pt",
      GoldenDir() / "torch" / "current_torch_checkpoint.pt",
      GoldenDir() / "transformers" / "tiny-gpt2-bin" / "pytorch_model.bin"};
  for (const auto& e :
       std::filesystem::directory_iterator(GoldenDir() / "transformers" / "tiny-gpt2-bin-sharded"))
    if (e.path().extension() == ".bin") files.push_back(e.path());
  ASSERT_EQ(files.size(), 6u);
  for (const auto& f : files) {
    auto s = ScanFile(f.string());
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->format, "torch") << f;
    EXPECT_EQ(s->verdict, Verdict::kSafe) << f << "\n" << AllReasons(*s);
  }
  // float8 through _rebuild_tensor_v3 and an untyped storage.
  auto st = ScanFile((GoldenDir() / "torch" / "current_torch_state_dict.pt").string());
  EXPECT_NE(FindImport(*st, "torch._utils._rebuild_tensor_v3"), nullptr);
  EXPECT_NE(FindImport(*st, "torch.float8_e4m3fn"), nullptr);
}

TEST(ScanTorchTest, TorchScriptIsSuspiciousWithTheReason) {
  if (!PythonHas("torch")) GTEST_SKIP() << "/usr/bin/python3 lacks torch";
  TempDir dir;
  RunScript(dir, R"(
import os, sys, torch
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
    def forward(self, x):
        return torch.relu(self.fc(x)) * 2
d = sys.argv[1]
torch.jit.save(torch.jit.script(Net()), os.path.join(d, 'scripted.pt'))
torch.jit.save(torch.jit.trace(Net(), torch.ones(1, 3)), os.path.join(d, 'traced.pt'))
)");
  for (const std::string name : {"scripted.pt", "traced.pt"}) {
    auto s = ScanFile(dir.File(name));
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->format, "torchscript") << name;
    EXPECT_EQ(s->verdict, Verdict::kSuspicious) << name << "\n" << AllReasons(*s);
    ASSERT_EQ(s->reasons.size(), 1u) << AllReasons(*s);
    EXPECT_TRUE(HasReason(*s, Verdict::kSuspicious,
                          "TorchScript archive: torch.jit.load compiles "
                          "and runs the code"));
    // data.pkl, constants.pkl and the code's debug pickles.
    std::vector<std::string> where;
    for (const ScannedPickle& p : s->pickles) where.push_back(p.where);
    const std::string stem = name.substr(0, name.size() - 3);
    EXPECT_NE(std::find(where.begin(), where.end(), stem + "/data.pkl"), where.end());
    EXPECT_NE(std::find(where.begin(), where.end(), stem + "/constants.pkl"), where.end());
    bool found = false;
    for (const ScannedGlobal& g : s->imports) found |= g.name.starts_with("__torch__.");
    EXPECT_TRUE(found);
  }
}

TEST(ScanTest, JsonHasEveryField) {
  TempDir dir;
  const FileScan s = ScanOf(dir, "no_stop.pkl", kEvil.substr(0, kEvil.size() - 1));
  const Json j = ScanToJson(s);
  EXPECT_EQ(j["path"], dir.File("no_stop.pkl"));
  EXPECT_EQ(j["format"], "pickle");
  EXPECT_EQ(j["verdict"], "unsafe");
  ASSERT_EQ(j["reasons"].size(), 2u);
  EXPECT_EQ(j["reasons"][0]["severity"], "unsafe");
  EXPECT_EQ(j["reasons"][0]["reason"],
            "byte 2: pickle imports 'posix.system', which is not allow-listed");
  EXPECT_FALSE(j["reasons"][0].contains("where"));
  EXPECT_EQ(j["reasons"][1]["severity"], "suspicious");
  ASSERT_EQ(j["imports"].size(), 1u);
  EXPECT_EQ(j["imports"][0]["name"], "posix.system");
  EXPECT_EQ(j["imports"][0]["opcode"], "GLOBAL");
  EXPECT_EQ(j["imports"][0]["offset"], 2);
  EXPECT_EQ(j["imports"][0]["allowed"], false);
  ASSERT_EQ(j["calls"].size(), 1u);
  EXPECT_EQ(j["calls"][0]["opcode"], "REDUCE");
  ASSERT_EQ(j["pickles"].size(), 1u);
  EXPECT_EQ(j["pickles"][0]["offset"], 0);
  EXPECT_EQ(j["pickles"][0]["bytes"], kEvil.size() - 1);
  EXPECT_EQ(j["pickles"][0]["status"],
            "pickle ends at byte " + std::to_string(kEvil.size() - 1) + " without STOP");
}

}  // namespace
}  // namespace mp::torch
