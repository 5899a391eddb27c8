#include "modelport/registry/blob_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "modelport/core/hash.h"
#include "test_util.h"

namespace mp::registry {
namespace {

namespace fs = std::filesystem;
using mp::testing::TempDir;

std::vector<uint8_t> Pattern(size_t size, uint32_t seed) {
  std::vector<uint8_t> out(size);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x >> 24);
  }
  return out;
}

std::string DigestOf(std::span<const uint8_t> bytes) {
  Sha256 sha;
  sha.Update(bytes);
  return "sha256:" + ToHex(sha.Finish());
}

/// "sha256:<hex>" as the system's sha256sum prints it for `path`.
// XXH3-128 of a file by xxHash's own tool, as 32 hex digits.
std::string Xxh3sum(const std::string& path) {
  auto r = mp::testing::Run("xxhsum -H2 '" + path + "'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out.substr(0, 32);
}

std::string Sha256sum(const std::string& path) {
  auto r = mp::testing::Run("sha256sum '" + path + "'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return "sha256:" + r.out.substr(0, 64);
}

std::vector<uint8_t> Bytes(const Buffer& b) { return {b.data(), b.data() + b.size()}; }

size_t CountEntries(const fs::path& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

/// Every path under `dir` (recursively), for "nothing was touched" checks.
std::set<std::string> Tree(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.insert(e.path().string());
  return out;
}

std::unique_ptr<BlobStore> OpenStore(const std::string& root, bool create = true) {
  auto store = BlobStore::Open(root, create);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(store).value() : nullptr;
}

TEST(BlobStore, PutReadRoundTrip) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->root(), dir.File("reg"));
  EXPECT_TRUE(fs::is_directory(dir.path() / "reg/blobs/sha256"));
  EXPECT_TRUE(fs::is_directory(dir.path() / "reg/tmp"));

  for (bool durable : {true, false}) {
    const auto bytes = Pattern(1000, durable ? 1 : 2);
    auto info = store->Put(bytes, durable);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    EXPECT_EQ(info->digest, DigestOf(bytes));
    EXPECT_TRUE(IsDigest(info->digest));
    EXPECT_EQ(info->size, 1000u);
    EXPECT_TRUE(info->written);
    EXPECT_TRUE(store->Contains(info->digest));
    EXPECT_EQ(store->Size(info->digest).value_or(0), 1000u);

    const std::string hex = info->digest.substr(7);
    auto path = store->PathOf(info->digest);
    ASSERT_TRUE(path.ok());
    EXPECT_EQ(*path, dir.File("reg") + "/blobs/sha256/" + hex.substr(0, 2) + "/" + hex.substr(2));
    struct stat st {};
    ASSERT_EQ(::stat(path->c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0444u);

    for (bool verify : {true, false}) {
      auto read = store->Read(info->digest, verify);
      ASSERT_TRUE(read.ok()) << read.status().ToString();
      EXPECT_EQ(Bytes(**read), bytes);
    }
    EXPECT_TRUE(store->Verify(info->digest).ok());
  }
  EXPECT_EQ(CountEntries(dir.path() / "reg/tmp"), 0u);
}

TEST(BlobStore, EmptyBlob) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  auto info = store->Put({});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->digest,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(info->size, 0u);
  auto read = store->Read(info->digest);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ((*read)->size(), 0u);
  EXPECT_TRUE(store->Verify(info->digest).ok());
}

TEST(BlobStore, ReadBufferOutlivesRemoval) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const auto bytes = Pattern(100000, 3);
  auto info = store->Put(bytes);
  ASSERT_TRUE(info.ok());
  auto read = store->Read(info->digest);
  ASSERT_TRUE(read.ok());
  ASSERT_TRUE(store->Remove(info->digest).ok());
  EXPECT_EQ(Bytes(**read), bytes);
}

TEST(BlobStore, DigestMatchesSha256sum) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const auto bytes = Pattern(123457, 4);
  mp::testing::WriteBytes(dir.File("input"), bytes);
  auto info = store->Put(bytes);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->digest, Sha256sum(dir.File("input")));
  EXPECT_EQ(info->digest, Sha256sum(store->PathOf(info->digest).value()));
}

TEST(BlobStore, SecondPutDeduplicatesWithoutRewritingTheFile) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const auto bytes = Pattern(4096, 5);
  auto first = store->Put(bytes);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(first->written);
  const std::string path = store->PathOf(first->digest).value();
  struct stat before {};
  ASSERT_EQ(::stat(path.c_str(), &before), 0);

  auto again = store->Put(bytes);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->written);
  EXPECT_EQ(again->digest, first->digest);
  EXPECT_EQ(again->size, 4096u);
  mp::testing::WriteBytes(dir.File("input"), bytes);
  auto from_file = store->PutFile(dir.File("input"));
  ASSERT_TRUE(from_file.ok()) << from_file.status().ToString();
  EXPECT_FALSE(from_file->written);
  EXPECT_EQ(from_file->digest, first->digest);

  struct stat after {};
  ASSERT_EQ(::stat(path.c_str(), &after), 0);
  // The same file, not rewritten (same inode, same bytes); only its time moves forward, which
  // is what keeps a reused blob out of gc's reach until the push that reused it commits.
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(mp::testing::ReadBytes(path), bytes);
  EXPECT_GE(after.st_mtim.tv_sec * 1000000000LL + after.st_mtim.tv_nsec,
            before.st_mtim.tv_sec * 1000000000LL + before.st_mtim.tv_nsec);
  EXPECT_EQ(store->List()->size(), 1u);
  EXPECT_EQ(CountEntries(dir.path() / "reg/tmp"), 0u);
}

TEST(BlobStore, PutHashedTrustsTheDigestForPresentBlobs) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const auto bytes = Pattern(5000, 6);
  auto first = store->Put(bytes);
  ASSERT_TRUE(first.ok());

  // Present: the digest is trusted, so different bytes of the same size are neither hashed
  // nor written: proof that the fast path does no work.
  const auto other = Pattern(5000, 7);
  auto fast = store->PutHashed(other, first->digest);
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();
  EXPECT_FALSE(fast->written);
  EXPECT_EQ(fast->digest, first->digest);
  EXPECT_EQ(Bytes(**store->Read(first->digest)), bytes);

  // New and correct: written.
  auto fresh = store->PutHashed(other, DigestOf(other));
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_TRUE(fresh->written);
  EXPECT_EQ(Bytes(**store->Read(fresh->digest)), other);
  EXPECT_EQ(CountEntries(dir.path() / "reg/tmp"), 0u);
}

TEST(BlobStore, PutHashedMismatchFailsAndLeavesNothing) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const auto bytes = Pattern(10 << 20, 8);  // several chunks
  const std::string wrong = DigestOf(Pattern(16, 9));
  for (bool durable : {true, false}) {
    auto r = store->PutHashed(bytes, wrong, durable);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kChecksumMismatch);
    EXPECT_EQ(r.status().message(), wrong + ": the " + std::to_string(bytes.size()) +
                                        " bytes given hash to " + DigestOf(bytes));
    EXPECT_FALSE(store->Contains(wrong));
    EXPECT_FALSE(store->Contains(DigestOf(bytes)));
    EXPECT_EQ(CountEntries(dir.path() / "reg/tmp"), 0u);
  }
  EXPECT_TRUE(store->List()->empty());
}

TEST(BlobStore, PutHashedOfWrongSizeForPresentDigestIsChecked) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const auto bytes = Pattern(300, 10);
  auto first = store->Put(bytes);
  ASSERT_TRUE(first.ok());
  auto r = store->PutHashed(Pattern(301, 10), first->digest);
  EXPECT_EQ(r.status().code(), StatusCode::kChecksumMismatch);
  EXPECT_EQ(Bytes(**store->Read(first->digest)), bytes);
  EXPECT_EQ(CountEntries(dir.path() / "reg/tmp"), 0u);
}

TEST(BlobStore, PutFileStreamsManyChunksLikePut) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const auto bytes = Pattern((10 << 20) + 12345, 11);  // 10 MiB and a partial chunk
  mp::testing::WriteBytes(dir.File("big"), bytes);

  auto from_file = store->PutFile(dir.File("big"));
  ASSERT_TRUE(from_file.ok()) << from_file.status().ToString();
  EXPECT_TRUE(from_file->written);
  EXPECT_EQ(from_file->size, bytes.size());
  EXPECT_EQ(from_file->digest, Sha256sum(dir.File("big")));
  EXPECT_EQ(from_file->digest, DigestOf(bytes));
  auto from_bytes = store->Put(bytes);
  ASSERT_TRUE(from_bytes.ok());
  EXPECT_FALSE(from_bytes->written);
  EXPECT_EQ(from_bytes->digest, from_file->digest);
  EXPECT_EQ(Bytes(**store->Read(from_file->digest)), bytes);

  // Put first, then PutFile, in a second store: the same blob file results.
  auto other = OpenStore(dir.File("reg2"));
  ASSERT_TRUE(other->Put(bytes, false).ok());
  EXPECT_EQ(Sha256sum(other->PathOf(from_file->digest).value()), from_file->digest);

  mp::testing::WriteBytes(dir.File("empty"), {});
  auto empty = store->PutFile(dir.File("empty"));
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ(empty->digest, DigestOf({}));
  EXPECT_EQ(CountEntries(dir.path() / "reg/tmp"), 0u);
}

TEST(BlobStore, PutFileRefusesMissingFilesAndFolders) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  auto missing = store->PutFile(dir.File("nope"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), dir.File("nope") + ": no such file");
  auto folder = store->PutFile(dir.path().string());
  EXPECT_EQ(folder.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(folder.status().message(), dir.path().string() + ": not a regular file");
  EXPECT_EQ(CountEntries(dir.path() / "reg/tmp"), 0u);
}

TEST(BlobStore, FlippedBitIsCaughtByVerifiedReads) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  auto bytes = Pattern(9000, 12);
  auto info = store->Put(bytes);
  ASSERT_TRUE(info.ok());
  const std::string path = store->PathOf(info->digest).value();
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4321);
    f.put(static_cast<char>(bytes[4321] ^ 0x10));
  }
  ASSERT_EQ(::chmod(path.c_str(), 0444), 0);
  bytes[4321] ^= 0x10;
  const std::string now = DigestOf(bytes);
  const std::string expected = path + ": blob " + info->digest + " now hashes to " + now;

  auto verified = store->Read(info->digest, true);
  EXPECT_EQ(verified.status().code(), StatusCode::kChecksumMismatch);
  EXPECT_EQ(verified.status().message(), expected);
  Status v = store->Verify(info->digest);
  EXPECT_EQ(v.code(), StatusCode::kChecksumMismatch);
  EXPECT_EQ(v.message(), expected);
  auto unverified = store->Read(info->digest, false);
  ASSERT_TRUE(unverified.ok());
  EXPECT_EQ(Bytes(**unverified), bytes);

  // Against the XXH3 checksum recorded when it was stored: caught too, named as such.
  const std::string xxh3 = info->xxh3;
  const std::string by_xxh3 = path + ": blob " + info->digest +
                              " no longer matches its xxh3 checksum " + xxh3 + " (now " +
                              Xxh3sum(path) + ")";
  auto checked = store->Read(info->digest, true, xxh3);
  EXPECT_EQ(checked.status().code(), StatusCode::kChecksumMismatch);
  EXPECT_EQ(checked.status().message(), by_xxh3);
  EXPECT_EQ(store->Verify(info->digest, xxh3).message(), by_xxh3);
  // Without a checksum, a verified read re-hashes with SHA-256.
  EXPECT_EQ(store->Read(info->digest, true, "").status().message(), expected);
}

TEST(BlobStore, StoringPresentBytesTakesTheChecksumRecordedOnTheBlob) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const auto bytes = Pattern(70000, 23);
  auto first = store->Put(bytes, false);
  ASSERT_TRUE(first.ok());
  const std::string path = store->PathOf(first->digest).value();
  char value[64] = {};
  const ssize_t n = ::getxattr(path.c_str(), "user.modelport.xxh3", value, sizeof(value));
  if (n < 0 && errno == ENOTSUP) GTEST_SKIP() << "the filesystem keeps no user attributes";
  ASSERT_EQ(n, 32);
  EXPECT_EQ(std::string(value, 32), first->xxh3);
  // Present bytes are hashed with SHA-256 only; the checksum is the blob's attribute (changed
  // here to tell it apart from one computed again).
  const std::string other = "00112233445566778899aabbccddeeff";
  ASSERT_EQ(::setxattr(path.c_str(), "user.modelport.xxh3", other.data(), other.size(), 0), 0);
  auto again = store->Put(bytes, false);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->written);
  EXPECT_EQ(again->xxh3, other);
  auto batch = store->NewBatch(false);
  EXPECT_EQ(batch->Put(bytes).value().xxh3, other);
  // Without the attribute (or with a malformed one) it is computed from the bytes.
  ASSERT_EQ(::setxattr(path.c_str(), "user.modelport.xxh3", "not hex", 7, 0), 0);
  EXPECT_EQ(store->Put(bytes, false).value().xxh3, first->xxh3);
  ASSERT_EQ(::removexattr(path.c_str(), "user.modelport.xxh3"), 0);
  EXPECT_EQ(store->Put(bytes, false).value().xxh3, first->xxh3);
  EXPECT_EQ(store->PutHashed(bytes, first->digest, false).value().xxh3, first->xxh3);
}

TEST(BlobStore, Xxh3ChecksumsMatchXxhsum) {
  if (mp::testing::Run("command -v xxhsum").exit_code != 0) {
    GTEST_SKIP() << "needs xxhsum (Debian's xxhash package; scripts/setup.sh installs it)";
  }
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  // Empty, small, and several 4 MiB chunks plus a partial one (the hash is streamed).
  for (const size_t size : {size_t{0}, size_t{1000}, size_t{(9 << 20) + 4321}}) {
    const auto bytes = Pattern(size, 21);
    const std::string file = dir.File("in" + std::to_string(size));
    mp::testing::WriteBytes(file, bytes);
    const std::string want = Xxh3sum(file);
    auto put = store->Put(bytes, false);
    ASSERT_TRUE(put.ok());
    EXPECT_EQ(put->xxh3, want) << size;
    auto from_file = store->PutFile(file, false);
    ASSERT_TRUE(from_file.ok());
    EXPECT_EQ(from_file->xxh3, want) << size;
    auto hashed = store->PutHashed(bytes, put->digest, false);
    ASSERT_TRUE(hashed.ok());
    EXPECT_EQ(hashed->xxh3, want) << size;
    auto batch = store->NewBatch(false);
    auto batched = batch->Put(bytes);
    ASSERT_TRUE(batched.ok());
    EXPECT_EQ(batched->xxh3, want) << size;
    EXPECT_TRUE(store->Read(put->digest, true, want).ok());
    EXPECT_TRUE(store->Verify(put->digest, want).ok());
  }
  // A fresh store: PutHashed writes the blob and still computes the checksum.
  auto other = OpenStore(dir.File("reg2"));
  const auto bytes = Pattern(5000, 22);
  auto put = store->Put(bytes, false);
  ASSERT_TRUE(put.ok());
  auto hashed = other->PutHashed(bytes, put->digest, false);
  ASSERT_TRUE(hashed.ok());
  EXPECT_TRUE(hashed->written);
  EXPECT_EQ(hashed->xxh3, put->xxh3);
  EXPECT_TRUE(IsXxh3Hex(put->xxh3));
  EXPECT_FALSE(IsXxh3Hex(put->xxh3.substr(1)));
  EXPECT_FALSE(IsXxh3Hex("0123456789ABCDEF0123456789abcdef"));
}

TEST(BlobStore, PutRepairsABlobOfTheWrongSize) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const auto bytes = Pattern(7000, 17);
  auto info = store->Put(bytes);
  ASSERT_TRUE(info.ok());
  const std::string path = store->PathOf(info->digest).value();
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  ASSERT_EQ(::truncate(path.c_str(), 100), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0444), 0);
  EXPECT_EQ(store->Verify(info->digest).code(), StatusCode::kChecksumMismatch);

  // The size tells the damaged blob apart from a present one: the bytes are written again.
  auto again = store->Put(bytes);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->written);
  EXPECT_TRUE(store->Verify(info->digest).ok());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  EXPECT_EQ(CountEntries(dir.path() / "reg/tmp"), 0u);
}

TEST(BlobStore, AbsentBlobsAreNotFound) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const std::string d = DigestOf(Pattern(10, 13));
  const std::string msg = d + ": no such blob in " + dir.File("reg");
  EXPECT_FALSE(store->Contains(d));
  EXPECT_EQ(store->Size(d).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Size(d).status().message(), msg);
  EXPECT_EQ(store->Read(d).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Read(d).status().message(), msg);
  EXPECT_EQ(store->Verify(d).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Remove(d).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Remove(d).message(), msg);
  EXPECT_TRUE(store->PathOf(d).ok());  // a path for a well-formed digest, present or not
}

TEST(BlobStore, FailuresLeaveNoTemporaries) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const fs::path tmp = dir.path() / "reg/tmp";

  // tmp/ replaced by a regular file: the temporary cannot even be created. (Tests run as root,
  // where permission bits would not stop the write.)
  fs::remove(tmp);
  mp::testing::WriteBytes(tmp.string(), {1});
  auto r = store->Put(Pattern(100, 14));
  EXPECT_EQ(r.status().code(), StatusCode::kIoError);
  EXPECT_EQ(r.status().message().rfind(tmp.string() + "/", 0), 0u) << r.status().message();
  EXPECT_NE(r.status().message().find(": cannot create temporary blob file: Not a directory"),
            std::string::npos)
      << r.status().message();
  fs::remove(tmp);
  fs::create_directory(tmp);

  // The prefix folder is a regular file: the temporary is written in full, then installing it
  // fails; it must be gone afterwards.
  for (bool durable : {true, false}) {
    const auto bytes = Pattern(3 << 20, durable ? 15 : 16);
    const std::string digest = DigestOf(bytes);
    const fs::path prefix = dir.path() / "reg/blobs/sha256" / digest.substr(7, 2);
    mp::testing::WriteBytes(prefix.string(), {2});
    auto put = store->Put(bytes, durable);
    EXPECT_EQ(put.status().code(), StatusCode::kIoError);
    EXPECT_NE(put.status().message().find(prefix.string()), std::string::npos)
        << put.status().message();
    EXPECT_NE(put.status().message().find("Not a directory"), std::string::npos)
        << put.status().message();
    EXPECT_EQ(CountEntries(tmp), 0u);
    mp::testing::WriteBytes(dir.File("in"), bytes);
    EXPECT_EQ(store->PutFile(dir.File("in"), durable).status().code(), StatusCode::kIoError);
    EXPECT_EQ(CountEntries(tmp), 0u);
    EXPECT_EQ(store->PutHashed(bytes, digest, durable).status().code(), StatusCode::kIoError);
    EXPECT_EQ(CountEntries(tmp), 0u);
    fs::remove(prefix);
    // Once the obstacle is gone the same bytes store fine.
    auto ok = store->Put(bytes, durable);
    ASSERT_TRUE(ok.ok()) << ok.status().ToString();
    EXPECT_TRUE(ok->written);
  }
  EXPECT_EQ(CountEntries(tmp), 0u);
}

TEST(BlobStore, ListSkipsAnythingThatIsNotABlob) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  std::vector<std::string> digests;
  for (uint32_t i = 0; i < 3; ++i) {
    auto info = store->Put(Pattern(100 + i, 20 + i));
    ASSERT_TRUE(info.ok());
    digests.push_back(info->digest);
  }
  std::sort(digests.begin(), digests.end());

  const fs::path blobs = dir.path() / "reg/blobs/sha256";
  const std::string hex62(62, 'a');
  mp::testing::WriteBytes((blobs / "README").string(), {1});
  fs::create_directories(blobs / "zz");
  mp::testing::WriteBytes((blobs / "zz" / hex62).string(), {1});
  fs::create_directories(blobs / "AB");
  mp::testing::WriteBytes((blobs / "AB" / hex62).string(), {1});
  fs::create_directories(blobs / "ab");
  mp::testing::WriteBytes((blobs / "ab" / "short").string(), {1});
  mp::testing::WriteBytes((blobs / "ab" / std::string(62, 'A')).string(), {1});
  mp::testing::WriteBytes((blobs / "ab" / (hex62 + ".tmp")).string(), {1});
  fs::create_directories(blobs / "ab" / std::string(62, 'b'));
  fs::create_symlink(dir.File("elsewhere"), blobs / "ab" / std::string(62, 'c'));
  mp::testing::WriteBytes((blobs / "cd").string(), {1});  // a file where a folder belongs

  auto list = store->List();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const auto& e = (*list)[i];
    EXPECT_EQ(e.digest, digests[i]);
    EXPECT_EQ(e.size, store->Size(e.digest).value());
    struct stat st {};
    ASSERT_EQ(::stat(store->PathOf(e.digest)->c_str(), &st), 0);
    EXPECT_EQ(e.mtime, st.st_mtim.tv_sec);
  }

  ASSERT_TRUE(store->Remove(digests[1]).ok());
  EXPECT_FALSE(store->Contains(digests[1]));
  EXPECT_EQ(store->Remove(digests[1]).code(), StatusCode::kNotFound);
  list = store->List();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].digest, digests[0]);
  EXPECT_EQ((*list)[1].digest, digests[2]);
}

TEST(BlobStore, RemoveStaleTemporariesHonoursTheGracePeriod) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  const fs::path tmp = dir.path() / "reg/tmp";
  mp::testing::WriteBytes((tmp / "old.tmp").string(), {1});
  mp::testing::WriteBytes((tmp / "new.tmp").string(), {2});
  fs::create_directory(tmp / "folder");
  const timespec two_hours_ago[2] = {{::time(nullptr) - 7200, 0}, {::time(nullptr) - 7200, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (tmp / "old.tmp").c_str(), two_hours_ago, 0), 0);

  auto removed = store->RemoveStaleTemporaries(3600);
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_EQ(*removed, 1u);
  EXPECT_FALSE(fs::exists(tmp / "old.tmp"));
  EXPECT_TRUE(fs::exists(tmp / "new.tmp"));

  removed = store->RemoveStaleTemporaries(0);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 1u);
  EXPECT_FALSE(fs::exists(tmp / "new.tmp"));
  EXPECT_TRUE(fs::is_directory(tmp / "folder"));  // not a temporary blob: left alone

  EXPECT_EQ(store->RemoveStaleTemporaries(-1).status().code(), StatusCode::kInvalidArgument);
}

TEST(BlobStore, MalformedDigestsAreRejectedWithoutTouchingTheFilesystem) {
  TempDir dir;
  auto store = OpenStore(dir.File("reg"));
  ASSERT_TRUE(store->Put(Pattern(10, 30)).ok());
  mp::testing::WriteBytes(dir.File("x"), {7});
  const std::string hex(64, 'a');
  // 64 characters that would climb out of the store if they ever became a path.
  std::string climb;
  while (climb.size() + 3 <= 63) climb += "../";
  climb += std::string(64 - climb.size(), 'x');
  ASSERT_EQ(climb.size(), 64u);

  const std::vector<std::string> bad = {
      "",
      "sha256:",
      "sha256:../../x",
      "sha256:" + climb,
      "sha256:" + std::string(64, 'A'),
      "sha256:" + hex.substr(1),
      "sha256:" + hex + "a",
      "sha256:" + hex.substr(0, 63) + "g",
      "sha256:" + hex.substr(0, 32) + "/" + hex.substr(0, 31),
      "sha256:" + hex.substr(0, 63) + std::string(1, '\0'),
      "SHA256:" + hex,
      "sha512:" + hex,
      "sha256-" + hex,
      " sha256:" + hex,
      "sha256:" + hex + "\n",
      hex,
  };
  const auto before = Tree(dir.path());
  for (const std::string& d : bad) {
    SCOPED_TRACE(::testing::PrintToString(d));
    EXPECT_FALSE(IsDigest(d));
    EXPECT_FALSE(store->Contains(d));
    EXPECT_EQ(store->PathOf(d).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Size(d).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Read(d).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Read(d, false).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Verify(d).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store->Remove(d).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store->PutHashed(Pattern(10, 31), d).status().code(), StatusCode::kInvalidArgument);
    // One line, whatever the digest held.
    const std::string msg = store->PathOf(d).status().message();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\0'), std::string::npos) << msg;
  }
  EXPECT_EQ(Tree(dir.path()), before);
  EXPECT_EQ(store->PathOf("sha256:../../x").status().message(),
            "'sha256:../../x': not a blob digest (expected \"sha256:\" and 64 lowercase hex "
            "digits)");
  EXPECT_TRUE(IsDigest("sha256:" + hex));
}

TEST(BlobStore, ConcurrentWritersOfTheSameBlobBothSucceed) {
  TempDir dir;
  const std::string root = dir.File("reg");
  ASSERT_NE(OpenStore(root), nullptr);
  const auto bytes = Pattern(50 << 20, 40);
  mp::testing::WriteBytes(dir.File("in"), bytes);

  // Both children wait on one pipe so they start together; each reports through its exit
  // code: 10 written, 11 deduplicated, anything else failed.
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  std::vector<pid_t> kids;
  for (int i = 0; i < 2; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(go[1]);
      char c;
      if (::read(go[0], &c, 1) != 0) ::_exit(3);
      auto store = BlobStore::Open(root, false);
      if (!store.ok()) ::_exit(2);
      auto info = i == 0 ? (*store)->Put(bytes) : (*store)->PutFile(dir.File("in"));
      if (!info.ok()) ::_exit(1);
      ::_exit(info->written ? 10 : 11);
    }
    kids.push_back(pid);
  }
  ::close(go[0]);
  ::close(go[1]);  // EOF releases both
  std::vector<int> codes;
  for (pid_t pid : kids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    codes.push_back(WEXITSTATUS(status));
  }
  std::sort(codes.begin(), codes.end());
  EXPECT_EQ(codes, (std::vector<int>{10, 11}));

  auto store = OpenStore(root, false);
  auto list = store->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].digest, DigestOf(bytes));
  EXPECT_EQ((*list)[0].size, bytes.size());
  EXPECT_TRUE(store->Verify(DigestOf(bytes)).ok());
  EXPECT_EQ(CountEntries(dir.path() / "reg/tmp"), 0u);
}

TEST(BlobStore, OpenWithoutCreateNeedsAStore) {
  TempDir dir;
  fs::create_directory(dir.path() / "empty");
  auto empty = BlobStore::Open(dir.File("empty"), false);
  EXPECT_EQ(empty.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(empty.status().message(), dir.File("empty") + ": no registry blob store here");
  EXPECT_TRUE(fs::is_empty(dir.path() / "empty"));
  auto missing = BlobStore::Open(dir.File("missing"), false);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), dir.File("missing") + ": no registry blob store here");
  EXPECT_FALSE(fs::exists(dir.path() / "missing"));

  auto created = BlobStore::Open(dir.File("empty"), true);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto info = (*created)->Put(Pattern(10, 50));
  ASSERT_TRUE(info.ok());
  auto reopened = BlobStore::Open(dir.File("empty"), false);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_TRUE((*reopened)->Contains(info->digest));
  // Creating again over an existing store keeps its blobs.
  auto again = BlobStore::Open(dir.File("empty"), true);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)->Contains(info->digest));
}

}  // namespace
}  // namespace mp::registry

namespace mp::registry {
namespace {

TEST(BlobStoreBatch, NothingIsVisibleBeforePublishAndEachBlobOnce) {
  TempDir dir;
  auto store = BlobStore::Open(dir.File("reg"), true);
  ASSERT_TRUE(store.ok());
  const std::vector<uint8_t> a(5000, 1), b(70000, 2);
  std::string digest_a;
  {
    auto batch = (*store)->NewBatch();
    auto pa = batch->Put(a);
    ASSERT_TRUE(pa.ok()) << pa.status().ToString();
    EXPECT_TRUE(pa->written);
    auto again = batch->Put(a);  // the same bytes twice in one batch: one blob
    ASSERT_TRUE(again.ok());
    EXPECT_FALSE(again->written);
    ASSERT_TRUE(batch->Put(b).ok());
    digest_a = pa->digest;
    EXPECT_FALSE((*store)->Contains(digest_a));  // not before Publish
    EXPECT_EQ(std::distance(fs::directory_iterator(dir.File("reg/tmp")), fs::directory_iterator()),
              2);
    ASSERT_TRUE(batch->Publish().ok());
    EXPECT_TRUE((*store)->Contains(digest_a));
    EXPECT_TRUE((*store)->Verify(digest_a).ok());
    EXPECT_EQ(std::distance(fs::directory_iterator(dir.File("reg/tmp")), fs::directory_iterator()),
              0);
  }
  auto list = (*store)->List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u);
  // A batch dropped without Publish leaves nothing, and a stored blob is not written again.
  {
    auto batch = (*store)->NewBatch();
    auto pa = batch->Put(a);
    ASSERT_TRUE(pa.ok());
    EXPECT_FALSE(pa->written);
    ASSERT_TRUE(batch->Put(std::vector<uint8_t>(10, 3)).ok());
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.File("reg/tmp")), fs::directory_iterator()),
            0);
  EXPECT_EQ((*store)->List()->size(), 2u);
}

}  // namespace
}  // namespace mp::registry
