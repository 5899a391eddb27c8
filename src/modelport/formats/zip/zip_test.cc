// The zip reader against hand-built archives (one per hostile case), the writer against the
// reader and against Python's zipfile module.
#include "modelport/formats/zip/zip.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "test_util.h"

namespace mp::zip {
namespace {

using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

void Put(std::vector<uint8_t>& b, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void Append(std::vector<uint8_t>& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }
void Append(std::vector<uint8_t>& b, const std::vector<uint8_t>& s) {
  b.insert(b.end(), s.begin(), s.end());
}

std::vector<uint8_t> RawDeflate(const std::vector<uint8_t>& in) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, -MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, in.size()));
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

uint32_t Crc(const std::vector<uint8_t>& d) { return Crc32(d); }

/// One entry of a hand-built archive; every field the hostile cases tamper with is settable.
struct E {
  std::string name{};
  std::vector<uint8_t> payload{};  ///< bytes placed after the local header (compressed if deflated)
  std::vector<uint8_t> plain{};    ///< uncompressed content (for CRC and size); = payload if empty
  uint16_t method = kStored;
  uint16_t flags = 0;
  std::optional<std::string> local_name{};
  std::optional<uint16_t> local_method{};
  std::optional<uint32_t> crc{};
  std::optional<uint64_t> size{};  ///< declared uncompressed size
  std::optional<uint64_t> lho{};   ///< central directory's local header offset
  bool zip64 = false;              ///< sizes and offset through ZIP64 extra fields
  bool descriptor_sig = true;      ///< with flags bit 3: write the optional signature
  std::optional<uint32_t> descriptor_crc{};
  bool write_local = true;  ///< false: no local record (the entry points at another's)
};

struct Archive {
  std::vector<E> entries{};
  std::string comment{};
  bool zip64_end = false;
  std::optional<uint64_t> cd_offset{};
  std::vector<uint8_t> junk_before_end{};  ///< bytes between central directory and end record
};

std::vector<uint8_t> Build(Archive a) {
  std::vector<uint8_t> f;
  std::vector<uint64_t> offsets;
  for (E& e : a.entries) {
    if (e.plain.empty()) e.plain = e.payload;
    offsets.push_back(f.size());
    if (!e.write_local) continue;
    const uint32_t crc = e.crc.value_or(Crc(e.plain));
    const uint64_t usize = e.size.value_or(e.plain.size());
    const bool dd = e.flags & 8;
    Put(f, 0x04034b50, 4);
    Put(f, 20, 2);
    Put(f, e.flags, 2);
    Put(f, e.local_method.value_or(e.method), 2);
    Put(f, 0, 4);
    Put(f, dd ? 0 : crc, 4);
    Put(f, dd ? 0 : (e.zip64 ? 0xFFFFFFFF : e.payload.size()), 4);
    Put(f, dd ? 0 : (e.zip64 ? 0xFFFFFFFF : usize), 4);
    const std::string ln = e.local_name.value_or(e.name);
    Put(f, ln.size(), 2);
    Put(f, e.zip64 ? 20 : 0, 2);
    Append(f, ln);
    if (e.zip64) {
      Put(f, 1, 2);
      Put(f, 16, 2);
      Put(f, usize, 8);
      Put(f, e.payload.size(), 8);
    }
    Append(f, e.payload);
    if (dd) {
      if (e.descriptor_sig) Put(f, 0x08074b50, 4);
      Put(f, e.descriptor_crc.value_or(crc), 4);
      Put(f, e.payload.size(), e.zip64 ? 8 : 4);
      Put(f, usize, e.zip64 ? 8 : 4);
    }
  }
  const uint64_t cd = f.size();
  for (size_t i = 0; i < a.entries.size(); ++i) {
    const E& e = a.entries[i];
    const uint64_t lho = e.lho.value_or(offsets[i]);
    Put(f, 0x02014b50, 4);
    Put(f, 20, 2);
    Put(f, 20, 2);
    Put(f, e.flags, 2);
    Put(f, e.method, 2);
    Put(f, 0, 4);
    Put(f, e.crc.value_or(Crc(e.plain)), 4);
    Put(f, e.zip64 ? 0xFFFFFFFF : e.payload.size(), 4);
    Put(f, e.zip64 ? 0xFFFFFFFF : e.size.value_or(e.plain.size()), 4);
    Put(f, e.name.size(), 2);
    Put(f, e.zip64 ? 28 : 0, 2);
    Put(f, 0, 2);
    Put(f, 0, 2);
    Put(f, 0, 2);
    Put(f, 0, 4);
    Put(f, e.zip64 ? 0xFFFFFFFF : lho, 4);
    Append(f, e.name);
    if (e.zip64) {
      Put(f, 1, 2);
      Put(f, 24, 2);
      Put(f, e.size.value_or(e.plain.size()), 8);
      Put(f, e.payload.size(), 8);
      Put(f, lho, 8);
    }
  }
  const uint64_t cd_size = f.size() - cd;
  Append(f, a.junk_before_end);
  const uint64_t n = a.entries.size();
  const uint64_t cd_off = a.cd_offset.value_or(cd);
  if (a.zip64_end) {
    const uint64_t rec = f.size();
    Put(f, 0x06064b50, 4);
    Put(f, 44, 8);
    Put(f, 45, 2);
    Put(f, 45, 2);
    Put(f, 0, 4);
    Put(f, 0, 4);
    Put(f, n, 8);
    Put(f, n, 8);
    Put(f, cd_size, 8);
    Put(f, cd_off, 8);
    Put(f, 0x07064b50, 4);
    Put(f, 0, 4);
    Put(f, rec, 8);
    Put(f, 1, 4);
  }
  Put(f, 0x06054b50, 4);
  Put(f, 0, 2);
  Put(f, 0, 2);
  Put(f, a.zip64_end ? 0xFFFF : n, 2);
  Put(f, a.zip64_end ? 0xFFFF : n, 2);
  Put(f, a.zip64_end ? 0xFFFFFFFF : cd_size, 4);
  Put(f, a.zip64_end ? 0xFFFFFFFF : cd_off, 4);
  Put(f, a.comment.size(), 2);
  Append(f, a.comment);
  return f;
}

class ZipTest : public ::testing::Test {
 protected:
  std::string Write(const std::vector<uint8_t>& bytes) {
    const std::string path = dir_.File("t" + std::to_string(n_++) + ".zip");
    WriteBytes(path, bytes);
    return path;
  }
  Result<std::unique_ptr<Reader>> OpenBytes(const std::vector<uint8_t>& bytes,
                                            const ReaderOptions& o = {},
                                            IoMode mode = IoMode::kMmap) {
    path_ = Write(bytes);
    MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path_, mode));
    return Reader::Open(std::move(file), o);
  }
  /// Open fails with `code`; the message names the file and holds every phrase.
  void ExpectOpenFails(const Archive& a, StatusCode code, std::vector<std::string> phrases,
                       const ReaderOptions& o = {}) {
    auto r = OpenBytes(Build(a), o);
    ASSERT_FALSE(r.ok()) << "opened";
    ExpectError(r.error(), code, phrases);
  }
  /// Open succeeds; reading entry 0 fails with `code`.
  void ExpectReadFails(const Archive& a, StatusCode code, std::vector<std::string> phrases,
                       const ReaderOptions& o = {}) {
    for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
      auto r = OpenBytes(Build(a), o, mode);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      auto data = (*r)->Read(0);
      ASSERT_FALSE(data.ok()) << "read";
      ExpectError(data.error(), code, phrases);
      std::vector<uint8_t> dest((*r)->entries()[0].size);
      Status s = (*r)->ReadInto(0, dest);
      ASSERT_FALSE(s.ok());
      ExpectError(s, code, phrases);
    }
  }
  void ExpectError(const Status& s, StatusCode code, const std::vector<std::string>& phrases) {
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.message();
    EXPECT_EQ(s.message().rfind(path_ + ": ", 0), 0u)
        << "message does not start with the file: " << s.message();
    for (const auto& p : phrases) {
      EXPECT_NE(s.message().find(p), std::string::npos) << "lacks '" << p << "': " << s.message();
    }
  }

  TempDir dir_;
  int n_ = 0;
  std::string path_;
};

TEST_F(ZipTest, StoredAndDeflatedEntriesRead) {
  std::vector<uint8_t> text(5000);
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<uint8_t>(i * 7 % 13);
  Archive a;
  a.entries.push_back({.name = "dir/stored.bin", .payload = Bytes("hello, stored")});
  a.entries.push_back(
      {.name = "deflated.bin", .payload = RawDeflate(text), .plain = text, .method = kDeflated});
  a.comment = "a comment";
  for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
    auto r = OpenBytes(Build(a), {}, mode);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ((*r)->entries().size(), 2u);
    EXPECT_EQ((*r)->comment(), "a comment");
    EXPECT_EQ((*r)->Find("deflated.bin"), std::optional<size_t>(1));
    EXPECT_EQ((*r)->Find("nope"), std::nullopt);
    auto s = (*r)->Read(0);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ(std::vector<uint8_t>(s.value()->span().begin(), s.value()->span().end()),
              Bytes("hello, stored"));
    auto d = (*r)->Read(1);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(std::vector<uint8_t>(d.value()->span().begin(), d.value()->span().end()), text);
    std::vector<uint8_t> into(text.size());
    ASSERT_TRUE((*r)->ReadInto(1, into).ok());
    EXPECT_EQ(into, text);
    auto prefix = (*r)->ReadPrefix(1, 100);
    ASSERT_TRUE(prefix.ok());
    EXPECT_EQ(std::vector<uint8_t>(prefix.value()->span().begin(), prefix.value()->span().end()),
              std::vector<uint8_t>(text.begin(), text.begin() + 100));
    // Stored data is a view of the file at the recorded offset.
    const Entry& e = (*r)->entries()[0];
    EXPECT_EQ(e.data_offset, 30u + e.name.size());
  }
}

TEST_F(ZipTest, StoredReadsAreZeroCopyFromTheMapping) {
  Archive a;
  a.entries.push_back({.name = "x", .payload = Bytes("0123456789")});
  auto r = OpenBytes(Build(a));
  ASSERT_TRUE(r.ok());
  auto first = (*r)->Read(0);
  auto second = (*r)->Read(0);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first.value()->data(), second.value()->data()) << "copies, not views of the mapping";
}

// ---- names ----

TEST_F(ZipTest, TraversalNamesAreUnsafe) {
  for (std::string name :
       {"../evil", "a/../../evil", "a/..", "..", "/etc/passwd", "C:/x", "c:evil"}) {
    SCOPED_TRACE(name);
    Archive a;
    a.entries.push_back({.name = name, .payload = Bytes("x")});
    ExpectOpenFails(a, StatusCode::kUnsafe, {"'" + name + "'"});
  }
}

TEST_F(ZipTest, BackslashesAreUnsafeUnlessAllowedAndNeverEscape) {
  Archive a;
  a.entries.push_back({.name = "a\\b", .payload = Bytes("x")});
  ExpectOpenFails(a, StatusCode::kUnsafe, {"backslash"});
  ReaderOptions allow;
  allow.allow_backslash = true;
  auto r = OpenBytes(Build(a), allow);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->entries()[0].name, "a\\b");
  for (std::string name : {"..\\evil", "a\\..\\..\\evil", "\\abs"}) {
    Archive b;
    b.entries.push_back({.name = name, .payload = Bytes("x")});
    ExpectOpenFails(b, StatusCode::kUnsafe, {}, allow);
  }
}

TEST_F(ZipTest, NulInNameIsUnsafe) {
  Archive a;
  a.entries.push_back({.name = std::string("ok.npy\0../x", 11), .payload = Bytes("x")});
  ExpectOpenFails(a, StatusCode::kUnsafe, {"NUL"});
}

TEST_F(ZipTest, EmptyNameIsUnsafe) {
  Archive a;
  a.entries.push_back({.name = "", .payload = Bytes("x")});
  ExpectOpenFails(a, StatusCode::kUnsafe, {"empty"});
}

TEST_F(ZipTest, DuplicateNamesAreUnsafe) {
  Archive a;
  a.entries.push_back({.name = "w", .payload = Bytes("one")});
  a.entries.push_back({.name = "w", .payload = Bytes("two")});
  ExpectOpenFails(a, StatusCode::kUnsafe, {"'w'", "twice"});
}

TEST_F(ZipTest, ControlBytesInNamesAreEscapedInMessages) {
  Archive a;
  a.entries.push_back({.name = "a\nb", .payload = Bytes("x"), .local_name = "other"});
  ExpectOpenFails(a, StatusCode::kCorrupt, {"'a\\x0ab'"});
}

// ---- structure ----

TEST_F(ZipTest, LocalAndCentralNamesMustAgree) {
  Archive a;
  a.entries.push_back({.name = "safe.npy", .payload = Bytes("x"), .local_name = "../evil"});
  ExpectOpenFails(a, StatusCode::kCorrupt, {"'safe.npy'", "'../evil'", "disagree"});
}

TEST_F(ZipTest, LocalAndCentralMethodMustAgree) {
  Archive a;
  a.entries.push_back({.name = "m", .payload = Bytes("x"), .local_method = kDeflated});
  ExpectOpenFails(a, StatusCode::kCorrupt, {"'m'", "method 8"});
}

TEST_F(ZipTest, LocalAndCentralSizesMustAgree) {
  // The central directory claims the CRC of other data: local header disagrees.
  std::vector<uint8_t> f = Build({.entries = {{.name = "s", .payload = Bytes("abcd")}}});
  f[14] ^= 0xFF;  // local header CRC
  auto r = OpenBytes(f);
  ASSERT_FALSE(r.ok());
  ExpectError(r.error(), StatusCode::kCorrupt, {"'s'", "local header", "central directory"});
}

TEST_F(ZipTest, OverlappingEntriesAreRefused) {
  // Entry "outer" stores a complete local record of "inner": the central directory points at
  // both, so inner's bytes are inside outer's (the overlapped-file zip bomb).
  std::vector<uint8_t> inner_record;
  {
    const std::vector<uint8_t> nested =
        Build({.entries = {{.name = "inner", .payload = Bytes("zz")}}});
    inner_record.assign(nested.begin(), nested.begin() + 30 + 5 + 2);
  }
  Archive a;
  a.entries.push_back({.name = "outer", .payload = inner_record});
  a.entries.push_back(
      {.name = "inner", .payload = Bytes("zz"), .lho = 30 + 5, .write_local = false});
  ExpectOpenFails(a, StatusCode::kCorrupt, {"'inner'", "overlaps", "'outer'"});
}

TEST_F(ZipTest, EntryRunningIntoTheCentralDirectoryIsRefused) {
  Archive a;
  a.entries.push_back({.name = "big", .payload = Bytes("abc"), .size = 3});
  std::vector<uint8_t> f = Build(a);
  // Claim 10 bytes in both headers: the data would run into the central directory.
  f[18] = 10;
  f[22] = 10;
  const size_t cd = 30 + 3 + 3;
  f[cd + 20] = 10;
  f[cd + 24] = 10;
  auto r = OpenBytes(f);
  ASSERT_FALSE(r.ok());
  ExpectError(r.error(), StatusCode::kCorrupt, {"'big'", "central directory"});
}

TEST_F(ZipTest, LocalHeaderOffsetOutOfRange) {
  Archive a;
  a.entries.push_back({.name = "far", .payload = Bytes("x"), .lho = 1u << 30});
  ExpectOpenFails(a, StatusCode::kCorrupt, {"'far'", "out of range"});
}

TEST_F(ZipTest, NoEndRecord) {
  std::vector<uint8_t> f = Build({.entries = {{.name = "a", .payload = Bytes("x")}}});
  f.resize(f.size() - 1);
  auto r = OpenBytes(f);
  ASSERT_FALSE(r.ok());
  ExpectError(r.error(), StatusCode::kCorrupt, {"end-of-central-directory"});
  r = OpenBytes(Bytes("PK\x03\x04 not really"));
  ASSERT_FALSE(r.ok());
  ExpectError(r.error(), StatusCode::kCorrupt, {"too short"});
}

TEST_F(ZipTest, EndRecordInsideTheCommentIsNotTrusted) {
  // A fake end record inside the real comment: the last record whose comment length reaches the
  // end of the file exactly is the real one.
  std::vector<uint8_t> fake;
  Put(fake, 0x06054b50, 4);
  fake.resize(22, 0);
  Archive a;
  a.entries.push_back({.name = "real", .payload = Bytes("x")});
  a.comment = std::string(fake.begin(), fake.end()) + "tail";
  auto r = OpenBytes(Build(a));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->entries().size(), 1u);
}

TEST_F(ZipTest, CentralDirectoryMustEndAtTheEndRecord) {
  Archive a;
  a.entries.push_back({.name = "a", .payload = Bytes("x")});
  a.junk_before_end = Bytes("junk");
  ExpectOpenFails(a, StatusCode::kCorrupt, {"does not end where the end record begins"});
  Archive b;
  b.entries.push_back({.name = "a", .payload = Bytes("x")});
  b.cd_offset = 1u << 31;
  ExpectOpenFails(b, StatusCode::kCorrupt, {"central directory at offset 2147483648"});
}

TEST_F(ZipTest, TooManyEntries) {
  Archive a;
  a.entries.push_back({.name = "a", .payload = Bytes("x")});
  a.entries.push_back({.name = "b", .payload = Bytes("y")});
  ReaderOptions o;
  o.max_entries = 1;
  ExpectOpenFails(a, StatusCode::kLimitExceeded, {"2 entries", "limit of 1"}, o);
}

TEST_F(ZipTest, LongNameOverTheLimit) {
  Archive a;
  a.entries.push_back({.name = std::string(300, 'n'), .payload = Bytes("x")});
  ReaderOptions o;
  o.max_name_bytes = 100;
  ExpectOpenFails(a, StatusCode::kLimitExceeded, {"300 bytes", "limit of 100"}, o);
}

TEST_F(ZipTest, EncryptedEntriesAreUnsupported) {
  Archive a;
  a.entries.push_back({.name = "secret", .payload = Bytes("xxxx"), .flags = 1});
  ExpectOpenFails(a, StatusCode::kUnsupported, {"'secret'", "encrypted"});
}

TEST_F(ZipTest, UnknownMethodsAreUnsupported) {
  Archive a;
  a.entries.push_back({.name = "bz", .payload = Bytes("xxxx"), .method = 12});
  ExpectOpenFails(a, StatusCode::kUnsupported, {"'bz'", "method 12"});
}

TEST_F(ZipTest, CrcMismatchIsCorrupt) {
  Archive a;
  a.entries.push_back({.name = "c", .payload = Bytes("data"), .crc = 0x12345678});
  ExpectReadFails(a, StatusCode::kCorrupt, {"'c'", "CRC-32", "12345678"});
  Archive b;
  const std::vector<uint8_t> text(1000, 'q');
  b.entries.push_back({.name = "d",
                       .payload = RawDeflate(text),
                       .plain = text,
                       .method = kDeflated,
                       .crc = 0xDEADBEEF});
  ExpectReadFails(b, StatusCode::kCorrupt, {"'d'", "CRC-32", "deadbeef"});
}

// ---- deflate and bombs ----

TEST_F(ZipTest, ExpansionRatioCapStopsBombs) {
  const std::vector<uint8_t> zeros(4 << 20, 0);  // ~1000:1 under deflate
  Archive a;
  a.entries.push_back(
      {.name = "bomb", .payload = RawDeflate(zeros), .plain = zeros, .method = kDeflated});
  ExpectReadFails(a, StatusCode::kLimitExceeded, {"'bomb'", "ratio", "limit of 250"});
  // A caller that expects such data may raise the cap.
  ReaderOptions o;
  o.max_expansion_ratio = 2000;
  auto r = OpenBytes(Build(a), o);
  ASSERT_TRUE(r.ok());
  auto data = (*r)->Read(0);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_EQ(data.value()->size(), zeros.size());
}

TEST_F(ZipTest, InflatedSizeCap) {
  const std::vector<uint8_t> text(5000, 'a');
  Archive a;
  a.entries.push_back(
      {.name = "big", .payload = RawDeflate(text), .plain = text, .method = kDeflated});
  ReaderOptions o;
  o.max_inflated_bytes = 4096;
  ExpectReadFails(a, StatusCode::kLimitExceeded, {"'big'", "5000", "limit of 4096"}, o);
}

TEST_F(ZipTest, DeflateLongerThanDeclaredIsCorrupt) {
  const std::vector<uint8_t> text(5000, 'a');
  Archive a;
  a.entries.push_back({.name = "liar",
                       .payload = RawDeflate(text),
                       .plain = text,
                       .method = kDeflated,
                       .size = 100});
  ExpectReadFails(a, StatusCode::kCorrupt, {"'liar'", "more than the 100 bytes"});
}

TEST_F(ZipTest, DeflateShorterThanDeclaredIsCorrupt) {
  const std::vector<uint8_t> text(500, 'a');
  Archive a;
  a.entries.push_back({.name = "short",
                       .payload = RawDeflate(text),
                       .plain = text,
                       .method = kDeflated,
                       .size = 600});
  ExpectReadFails(a, StatusCode::kCorrupt, {"'short'", "inflates to 500 bytes"});
}

TEST_F(ZipTest, TruncatedAndInvalidDeflateAreCorrupt) {
  const std::vector<uint8_t> text(3000, 'b');
  std::vector<uint8_t> z = RawDeflate(text);
  z.resize(z.size() / 2);
  Archive a;
  a.entries.push_back({.name = "cut", .payload = z, .plain = text, .method = kDeflated});
  ExpectReadFails(a, StatusCode::kCorrupt, {"'cut'", "truncated"});
  Archive b;
  b.entries.push_back(
      {.name = "junk", .payload = {0xFF, 0xFF, 0xFF, 0xFF}, .plain = text, .method = kDeflated});
  ExpectReadFails(b, StatusCode::kCorrupt, {"'junk'", "invalid"});
}

// ---- data descriptors ----

TEST_F(ZipTest, DataDescriptorWithAndWithoutSignature) {
  for (bool sig : {true, false}) {
    const std::vector<uint8_t> text(2000, 'c');
    Archive a;
    a.entries.push_back({.name = "dd",
                         .payload = RawDeflate(text),
                         .plain = text,
                         .method = kDeflated,
                         .flags = 8,
                         .descriptor_sig = sig});
    a.entries.push_back({.name = "after", .payload = Bytes("ok")});
    auto r = OpenBytes(Build(a));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto data = (*r)->Read(0);
    ASSERT_TRUE(data.ok()) << data.status().ToString();
    EXPECT_EQ(data.value()->size(), text.size());
  }
}

TEST_F(ZipTest, DataDescriptorDisagreeingWithCentralDirectory) {
  Archive a;
  a.entries.push_back(
      {.name = "dd", .payload = Bytes("abc"), .flags = 8, .descriptor_crc = 0x1111});
  ExpectOpenFails(a, StatusCode::kCorrupt, {"'dd'", "data descriptor"});
}

// ---- ZIP64 ----

TEST_F(ZipTest, Zip64ExtraFieldsAndEndRecords) {
  Archive a;
  a.entries.push_back({.name = "z1", .payload = Bytes("first"), .zip64 = true});
  const std::vector<uint8_t> text(3000, 'd');
  a.entries.push_back({.name = "z2",
                       .payload = RawDeflate(text),
                       .plain = text,
                       .method = kDeflated,
                       .zip64 = true});
  a.zip64_end = true;
  for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
    auto r = OpenBytes(Build(a), {}, mode);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ((*r)->entries().size(), 2u);
    EXPECT_EQ((*r)->entries()[0].size, 5u);
    EXPECT_EQ((*r)->entries()[1].size, 3000u);
    EXPECT_GT((*r)->entries()[1].local_header_offset, 0u);
    auto d = (*r)->Read(1);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d.value()->size(), 3000u);
  }
}

TEST_F(ZipTest, Zip64SentinelWithoutExtraFieldIsCorrupt) {
  std::vector<uint8_t> f = Build({.entries = {{.name = "s", .payload = Bytes("abcd")}}});
  const size_t cd = 30 + 1 + 4;
  for (int i = 0; i < 4; ++i) f[cd + 24 + i] = 0xFF;  // central uncompressed size
  auto r = OpenBytes(f);
  ASSERT_FALSE(r.ok());
  ExpectError(r.error(), StatusCode::kCorrupt, {"'s'", "ZIP64 extra field does not hold it"});
}

TEST_F(ZipTest, Zip64EndRecordMustAgreeWithTheClassicOne) {
  Archive a;
  a.entries.push_back({.name = "a", .payload = Bytes("x")});
  a.zip64_end = true;
  std::vector<uint8_t> f = Build(a);
  // The classic record's entry count (2 bytes at end - 22 + 10) says 7, ZIP64 says 1.
  f[f.size() - 22 + 10] = 7;
  f[f.size() - 22 + 11] = 0;
  auto r = OpenBytes(f);
  ASSERT_FALSE(r.ok());
  ExpectError(r.error(), StatusCode::kCorrupt, {"disagree"});
}

TEST_F(ZipTest, Zip64LocatorPointingNowhere) {
  Archive a;
  a.entries.push_back({.name = "a", .payload = Bytes("x")});
  a.zip64_end = true;
  std::vector<uint8_t> f = Build(a);
  // Locator's record offset (8 bytes at locator + 8) to past the file.
  const size_t loc = f.size() - 22 - 20;
  for (int i = 0; i < 8; ++i) f[loc + 8 + i] = 0x7F;
  auto r = OpenBytes(f);
  ASSERT_FALSE(r.ok());
  ExpectError(r.error(), StatusCode::kCorrupt, {"ZIP64 end record offset"});
}

// ---- the writer ----

TEST_F(ZipTest, WriterAlignsDataAndReadsBack) {
  for (bool force64 : {false, true}) {
    const std::string path = dir_.File(force64 ? "w64.zip" : "w.zip");
    WriterOptions wo;
    wo.force_zip64 = force64;
    wo.comment = "note";
    auto w = Writer::Create(path, wo);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    const std::vector<uint8_t> a = Bytes("alpha"), b(1000, 7), empty;
    const std::span<const uint8_t> pa[] = {a}, pb[] = {b, a}, pe[] = {empty};
    ASSERT_TRUE((*w)->AddStored("archive/data/0", pa, 64).ok());
    ASSERT_TRUE((*w)->AddStored("archive/data/1", pb, 64).ok());
    ASSERT_TRUE((*w)->AddStored("名前", pe).ok());
    EXPECT_EQ((*w)->AddStored("archive/data/0", pa).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ((*w)->AddStored("../x", pa).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ((*w)->AddStored("y", pa, 48).code(), StatusCode::kInvalidArgument);
    ASSERT_TRUE((*w)->Finish(false).ok());

    auto file = InputFile::Open(path);
    ASSERT_TRUE(file.ok());
    auto r = Reader::Open(*file);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ((*r)->entries().size(), 3u);
    EXPECT_EQ((*r)->comment(), "note");
    EXPECT_EQ((*r)->entries()[0].data_offset % 64, 0u);
    EXPECT_EQ((*r)->entries()[1].data_offset % 64, 0u);
    auto d1 = (*r)->Read(1);
    ASSERT_TRUE(d1.ok());
    std::vector<uint8_t> want = b;
    want.insert(want.end(), a.begin(), a.end());
    EXPECT_EQ(std::vector<uint8_t>(d1.value()->span().begin(), d1.value()->span().end()), want);
    EXPECT_EQ((*r)->entries()[2].name, "名前");
    EXPECT_EQ((*r)->entries()[2].flags & (1u << 11), 1u << 11) << "UTF-8 flag";
  }
}

TEST_F(ZipTest, WriterIsDeterministic) {
  std::vector<std::vector<uint8_t>> outs;
  for (int i = 0; i < 2; ++i) {
    const std::string path = dir_.File("d" + std::to_string(i) + ".zip");
    auto w = Writer::Create(path);
    ASSERT_TRUE(w.ok());
    const std::vector<uint8_t> a = Bytes("same");
    const std::span<const uint8_t> pa[] = {a};
    ASSERT_TRUE((*w)->AddStored("x", pa, 64).ok());
    ASSERT_TRUE((*w)->Finish(false).ok());
    outs.push_back(ReadBytes(path));
  }
  EXPECT_EQ(outs[0], outs[1]);
}

TEST_F(ZipTest, WriterLeavesNothingWhenNotFinished) {
  const std::string path = dir_.File("unfinished.zip");
  {
    auto w = Writer::Create(path);
    ASSERT_TRUE(w.ok());
    const std::vector<uint8_t> a = Bytes("x");
    const std::span<const uint8_t> pa[] = {a};
    ASSERT_TRUE((*w)->AddStored("x", pa).ok());
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path()));
}

// Python's zipfile (an implementation nobody here wrote) reads what the writer writes.
TEST_F(ZipTest, PythonZipfileReadsTheWritersArchives) {
  if (!testing::PythonHas("zipfile")) GTEST_SKIP() << "/usr/bin/python3 is missing";
  for (bool force64 : {false, true}) {
    const std::string path = dir_.File(force64 ? "py64.zip" : "py.zip");
    WriterOptions wo;
    wo.force_zip64 = force64;
    wo.comment = "c";
    auto w = Writer::Create(path, wo);
    ASSERT_TRUE(w.ok());
    std::vector<uint8_t> big(100000);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i % 251);
    const std::vector<uint8_t> small = Bytes("tiny");
    const std::span<const uint8_t> pb[] = {big}, ps[] = {small};
    ASSERT_TRUE((*w)->AddStored("m/data/0", pb, 64).ok());
    ASSERT_TRUE((*w)->AddStored("m/名前", ps, 64).ok());
    ASSERT_TRUE((*w)->Finish(false).ok());
    const std::string script =
        "import zipfile,sys\n"
        "z=zipfile.ZipFile(sys.argv[1])\n"
        "assert z.testzip() is None\n"
        "assert z.namelist()==['m/data/0','m/名前'], z.namelist()\n"
        "assert z.read('m/data/0')==bytes(i%251 for i in range(100000))\n"
        "assert z.read('m/名前')==b'tiny'\n"
        "assert z.comment==b'c'\n"
        "for i in z.infolist():\n"
        "  f=open(sys.argv[1],'rb'); f.seek(i.header_offset); h=f.read(30)\n"
        "  n=int.from_bytes(h[26:28],'little'); e=int.from_bytes(h[28:30],'little')\n"
        "  assert (i.header_offset+30+n+e)%64==0, i.filename\n"
        "print('ok')\n";
    const std::string script_path = dir_.File("check.py");
    WriteBytes(script_path, Bytes(script));
    auto res = testing::Run("/usr/bin/python3 " + script_path + " " + path);
    EXPECT_EQ(res.exit_code, 0) << res.out << res.err;
    EXPECT_EQ(res.out, "ok\n");
  }
}

// And the reader reads what Python's zipfile writes, stored and deflated, with and without
// ZIP64 and data descriptors (zipfile streams with descriptors when writing to a pipe-like file).
TEST_F(ZipTest, ReaderReadsPythonZipfileArchives) {
  if (!testing::PythonHas("zipfile")) GTEST_SKIP() << "/usr/bin/python3 is missing";
  const std::string path = dir_.File("bypy.zip");
  const std::string script =
      "import zipfile,sys,io\n"
      "class W(io.RawIOBase):\n"
      "  def __init__(s,f): s.f=f\n"
      "  def writable(s): return True\n"
      "  def write(s,b): return s.f.write(b)\n"
      "f=open(sys.argv[1],'wb')\n"
      "z=zipfile.ZipFile(W(f),'w')\n"
      "z.writestr(zipfile.ZipInfo('s'),b'stored'*100)\n"
      "with z.open(zipfile.ZipInfo('d'),'w',force_zip64=True) as o: o.write(b'deflate me '*500)\n"
      "i=zipfile.ZipInfo('d2'); i.compress_type=zipfile.ZIP_DEFLATED\n"
      "with z.open(i,'w') as o: o.write(b'x'*7000)\n"
      "z.close(); f.close()\n";
  const std::string script_path = dir_.File("make.py");
  WriteBytes(script_path, Bytes(script));
  auto res = testing::Run("/usr/bin/python3 " + script_path + " " + path);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  auto file = InputFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto r = Reader::Open(*file);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ((*r)->entries().size(), 3u);
  EXPECT_NE((*r)->entries()[1].flags & 8, 0) << "expected a data descriptor";
  std::string want_s, want_d;
  for (int i = 0; i < 100; ++i) want_s += "stored";
  for (int i = 0; i < 500; ++i) want_d += "deflate me ";
  auto s = (*r)->Read(0);
  auto d = (*r)->Read(1);
  auto d2 = (*r)->Read(2);
  ASSERT_TRUE(s.ok() && d.ok() && d2.ok())
      << s.status().ToString() << d.status().ToString() << d2.status().ToString();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(s.value()->data()), s.value()->size()),
            want_s);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(d.value()->data()), d.value()->size()),
            want_d);
  EXPECT_EQ(d2.value()->size(), 7000u);
}

TEST(ZipCrc, CombineMatchesWhole) {
  const std::vector<uint8_t> a = Bytes("hello "), b = Bytes("world");
  std::vector<uint8_t> ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  EXPECT_EQ(Crc32Combine(Crc32(a), Crc32(b), b.size()), Crc32(ab));
  EXPECT_EQ(Crc32(Bytes("123456789")), 0xCBF43926u);  // the CRC-32 check value
}

}  // namespace
}  // namespace mp::zip

namespace mp::zip {
namespace {

// Large spans are checked on several threads and the pieces combined: the result must be
// zlib's own CRC of the whole span, for sizes that do not split evenly and a running CRC.
TEST(Crc32Test, ParallelCrcOfLargeSpansEqualsZlib) {
  std::vector<uint8_t> data((size_t{40} << 20) + 12345);
  uint32_t x = 0x9e3779b9;
  for (auto& b : data) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  for (size_t size : {data.size(), (size_t{16} << 20), (size_t{16} << 20) - 1, size_t{33554433}}) {
    SCOPED_TRACE(size);
    const std::span<const uint8_t> span(data.data(), size);
    EXPECT_EQ(Crc32(span), static_cast<uint32_t>(::crc32_z(0, span.data(), span.size())));
    const uint32_t running = 0x12345678;
    EXPECT_EQ(Crc32(span, running),
              static_cast<uint32_t>(::crc32_z(running, span.data(), span.size())));
  }
}

}  // namespace
}  // namespace mp::zip
