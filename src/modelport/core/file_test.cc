#include "modelport/core/file.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "modelport/core/hash.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

size_t CountEntries(const fs::path& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST(InputFile, ReadsRangesInBothModes) {
  TempDir dir;
  testing::WriteBytes(dir.File("f"), {1, 2, 3, 4, 5});
  for (IoMode mode : {IoMode::kMmap, IoMode::kPread}) {
    auto f = InputFile::Open(dir.File("f"), mode);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ((*f)->size(), 5u);
    auto b = (*f)->Read(1, 3);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(std::vector<uint8_t>(b.value()->span().begin(), b.value()->span().end()),
              (std::vector<uint8_t>{2, 3, 4}));
    auto past = (*f)->Read(3, 3);
    EXPECT_EQ(past.status().code(), StatusCode::kCorrupt);
    EXPECT_NE(past.status().message().find("past the end of the file (5 bytes)"),
              std::string::npos);
    // Offsets near 2^64 must not wrap around the bounds check.
    EXPECT_EQ((*f)->Read(~0ull - 1, 4).status().code(), StatusCode::kCorrupt);
  }
}

TEST(InputFile, SliceOutlivesFile) {
  TempDir dir;
  testing::WriteBytes(dir.File("f"), {9, 8, 7});
  std::shared_ptr<Buffer> slice;
  {
    auto f = InputFile::Open(dir.File("f"));
    ASSERT_TRUE(f.ok());
    slice = *(*f)->Read(0, 3);
  }
  EXPECT_EQ(slice->data()[2], 7);  // the mapping is still alive
}

TEST(InputFile, RefusesMissingAndFolders) {
  TempDir dir;
  EXPECT_EQ(InputFile::Open(dir.File("nope")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(InputFile::Open(dir.path().string()).status().code(), StatusCode::kInvalidArgument);
}

TEST(AtomicFile, NothingAtDestinationUntilCommit) {
  TempDir dir;
  const std::string dest = dir.File("out.bin");
  {
    auto f = AtomicFile::Create(dest);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE((*f)->Write("abc", 3).ok());
    EXPECT_FALSE(fs::exists(dest));
  }  // destroyed uncommitted
  EXPECT_EQ(CountEntries(dir.path()), 0u);
  auto f = AtomicFile::Create(dest);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Write("abc", 3).ok());
  ASSERT_TRUE((*f)->Commit().ok());
  EXPECT_EQ(testing::ReadBytes(dest), (std::vector<uint8_t>{'a', 'b', 'c'}));
  EXPECT_EQ(CountEntries(dir.path()), 1u);
}

TEST(AtomicFile, FailsCleanlyInMissingFolder) {
  TempDir dir;
  auto f = AtomicFile::Create(dir.File("no/such/dir/out.bin"));
  EXPECT_EQ(f.status().code(), StatusCode::kIoError);
}

TEST(AtomicFile, InterruptRemovesTemporaryFile) {
  TempDir dir;
  const std::string dest = dir.File("out.bin");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto f = AtomicFile::Create(dest);
    if (!f.ok() || !(*f)->Write("partial", 7).ok()) _exit(3);
    raise(SIGINT);  // as a user's Ctrl-C would
    _exit(4);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGINT);
  EXPECT_EQ(CountEntries(dir.path()), 0u);
}

TEST(Hash, Sha256KnownVectorsAndTensorDigest) {
  Sha256 sha;
  sha.Update(std::string_view("abc"));
  EXPECT_EQ(ToHex(sha.Finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  TempDir dir;
  testing::WriteBytes(dir.File("abc"), {'a', 'b', 'c'});
  EXPECT_EQ(*FileSha256(dir.File("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  // The digest covers dtype, shape and bytes, but not the name.
  auto a = testing::BytesTensor("a", DType::kU8, {2, 2}, {1, 2, 3, 4});
  auto b = testing::BytesTensor("b", DType::kU8, {2, 2}, {1, 2, 3, 4});
  auto c = testing::BytesTensor("a", DType::kU8, {4}, {1, 2, 3, 4});
  auto d = testing::BytesTensor("a", DType::kI8, {2, 2}, {1, 2, 3, 4});
  EXPECT_EQ(TensorDigest(a), TensorDigest(b));
  EXPECT_NE(TensorDigest(a), TensorDigest(c));
  EXPECT_NE(TensorDigest(a), TensorDigest(d));
  // Pinned: "modelport.tensor.v1\nu8\n2,2\n" followed by 01 02 03 04 (docs/FORMATS.md).
  Sha256 manual;
  manual.Update(std::string_view("modelport.tensor.v1\nu8\n2,2\n\x01\x02\x03\x04", 31));
  EXPECT_EQ(TensorDigest(a), ToHex(manual.Finish()));
}

TEST(Hash, ParallelDigestsMatchSerialOnes) {
  Model m;
  for (int i = 0; i < 9; ++i) {
    ASSERT_TRUE(m.Add(testing::PatternTensor("t" + std::to_string(i), DType::kF32,
                                             {static_cast<uint64_t>(100 + i)}, i))
                    .ok());
  }
  auto digests = TensorDigests(m, 4);
  ASSERT_TRUE(digests.ok());
  for (size_t i = 0; i < 9; ++i) EXPECT_EQ((*digests)[i], TensorDigest(*m.Load(i)));
}

}  // namespace
}  // namespace mp
