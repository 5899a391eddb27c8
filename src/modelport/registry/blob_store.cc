#include "modelport/registry/blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "modelport/core/file.h"
#include "modelport/core/hash.h"

namespace mp::registry {
namespace {

constexpr std::string_view kPrefix = "sha256:";
// Chunk for streaming copies: large enough that syscalls are noise next to hashing, small
// enough to stay in cache-friendly territory and bound memory.
constexpr size_t kChunk = 4 << 20;

std::string Sha256Hex(std::span<const uint8_t> bytes) {
  Sha256 sha;
  sha.Update(bytes);
  return ToHex(sha.Finish());
}

std::string Xxh3Hex(std::span<const uint8_t> bytes) {
  Xxh3 xxh;
  xxh.Update(bytes);
  return xxh.FinishHex();
}

// Each blob file carries its XXH3 checksum in this extended attribute, so storing bytes the
// store already holds needs only their SHA-256 (a push of an unchanged model hashes once).
// Where the filesystem keeps no user attributes the checksum is computed again instead.
constexpr char kXxh3Attribute[] = "user.modelport.xxh3";

// Records `xxh3` on the blob being written (before it is made read-only).
void RecordChecksum(int fd, const std::string& xxh3) {
  (void)::fsetxattr(fd, kXxh3Attribute, xxh3.data(), xxh3.size(), 0);
}
// A blob found already present whose inode changed this recently may belong to a writer that
// has renamed it but not yet fsync'd its folder; a durable Put then fsyncs that folder itself.
constexpr int64_t kFreshSeconds = 60;

std::string Errno(const std::string& what, const std::string& path) {
  return path + ": " + what + ": " + std::strerror(errno);
}

// A user-supplied string made safe for a one-line message: printable ASCII only, bounded.
std::string Printable(std::string_view s) {
  std::string out = "'";
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < s.size() && i < 100; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > 100) out += "...";
  return out + "'";
}

Status BadDigest(std::string_view digest) {
  return InvalidArgument(Printable(digest) +
                         ": not a blob digest (expected \"sha256:\" and 64 lowercase hex digits)");
}

Status WriteAll(int fd, const uint8_t* data, size_t size, const std::string& path) {
  while (size > 0) {
    // Linux writes at most 0x7ffff000 bytes per call; ask for no more than 1 GiB at a time.
    const size_t want = std::min<size_t>(size, size_t{1} << 30);
    ssize_t n = ::write(fd, data, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError(Errno("write failed", path));
    if (n == 0) return IoError(path + ": write failed: wrote 0 bytes");
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

std::string HexOf(const std::string& digest) { return digest.substr(kPrefix.size()); }

int64_t NowNanos() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int64_t Nanos(const timespec& ts) { return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec; }

int HexValue(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

// Closes a directory stream on scope exit.
struct DirCloser {
  DIR* d;
  ~DirCloser() { ::closedir(d); }
};

// A file in tmp/ being written; unless Disarm()ed (installed), the destructor removes it.
class TempBlob {
 public:
  TempBlob(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~TempBlob() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  TempBlob(const TempBlob&) = delete;
  TempBlob& operator=(const TempBlob&) = delete;

  const std::string& path() const { return path_; }
  int fd() const { return fd_; }
  Status Close() {
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return IoError(Errno("close failed", path_));
    return Status::Ok();
  }
  void Disarm() { path_.clear(); }

 private:
  std::string path_;
  int fd_;
};

}  // namespace

bool IsDigest(std::string_view digest) {
  return digest.size() == kPrefix.size() + 64 && digest.substr(0, kPrefix.size()) == kPrefix &&
         IsLowerHex(digest.substr(kPrefix.size()));
}

struct BlobStore::Impl {
  std::string root;
  std::string blobs;  // root/blobs/sha256
  std::string tmp;    // root/tmp
  // Prefix folders whose entry in blobs/sha256 this process has fsync'd: a folder made by a
  // racing writer may not be durable yet when we first use it.
  mutable std::array<std::atomic<bool>, 256> prefix_synced{};

  std::string PrefixDir(const std::string& hex) const { return blobs + "/" + hex.substr(0, 2); }
  std::string BlobPath(const std::string& hex) const {
    return PrefixDir(hex) + "/" + hex.substr(2);
  }

  Result<std::unique_ptr<TempBlob>> CreateTemp() const;
  // Makes the entry of blob `hex`'s prefix folder in blobs/sha256 durable: always when this
  // call `created` it, else once per process (a racing writer may have just created it).
  Status SyncParentOf(const std::string& hex, bool created) const;
  Result<bool> Install(TempBlob& temp, const std::string& hex, bool durable, bool replace) const;
  // The present blob's stat (nullopt when absent; Corrupt when not a regular file); with
  // `durable`, a fresh blob's folder is fsync'd (see kFreshSeconds).
  Result<std::optional<struct stat>> Existing(const std::string& hex, bool durable) const;
  // The XXH3 checksum of present blob `hex`: the one recorded on it, else computed from
  // `bytes` (its content, as the caller holds it).
  std::string ChecksumOf(const std::string& hex, std::span<const uint8_t> bytes) const {
    char value[32];
    if (::getxattr(BlobPath(hex).c_str(), kXxh3Attribute, value, sizeof(value)) ==
        static_cast<ssize_t>(sizeof(value))) {
      std::string text(value, sizeof(value));
      if (IsXxh3Hex(text)) return text;
    }
    return Xxh3Hex(bytes);
  }
  // The whole blob, mapped; with `verify`, checked first: against its XXH3 checksum `xxh3`, or
  // its SHA-256 name when that is "".
  Result<std::shared_ptr<Buffer>> ReadBlob(const std::string& digest, bool verify,
                                           std::string_view xxh3) const;
};

Result<std::unique_ptr<TempBlob>> BlobStore::Impl::CreateTemp() const {
  static std::atomic<uint64_t> counter{0};
  static constexpr char kHex[] = "0123456789abcdef";
  std::random_device rd;
  for (int attempt = 0;; ++attempt) {
    uint64_t r = (uint64_t{rd()} << 32) ^ rd();
    std::string rand_hex(16, '0');
    for (char& c : rand_hex) {
      c = kHex[r & 15];
      r >>= 4;
    }
    std::string path = tmp + "/" + std::to_string(::getpid()) + "-" +
                       std::to_string(counter.fetch_add(1)) + "-" + rand_hex + ".tmp";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) return std::make_unique<TempBlob>(std::move(path), fd);
    if (errno == EEXIST && attempt < 16) continue;
    return IoError(Errno("cannot create temporary blob file", path));
  }
}

Status BlobStore::Impl::SyncParentOf(const std::string& hex, bool created) const {
  const size_t prefix = static_cast<size_t>(HexValue(hex[0]) * 16 + HexValue(hex[1]));
  if (!created && prefix_synced[prefix].load()) return Status::Ok();
  MP_RETURN_IF_ERROR(FsyncDir(blobs));
  prefix_synced[prefix].store(true);
  return Status::Ok();
}

Result<std::optional<struct stat>> BlobStore::Impl::Existing(const std::string& hex,
                                                             bool durable) const {
  const std::string path = BlobPath(hex);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::optional<struct stat>();
    return IoError(Errno("cannot stat blob", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return Corrupt(path + ": blob is not a regular file");
  }
  // A reused blob counts as new for gc's grace period: the push reusing it commits its version
  // later, and until then nothing else marks the blob as wanted.
  if (::utimensat(AT_FDCWD, path.c_str(), nullptr, 0) != 0) {
    // Removed by a gc since the lstat above: absent after all.
    if (errno == ENOENT || errno == ENOTDIR) return std::optional<struct stat>();
    return IoError(Errno("cannot touch blob", path));
  }
  if (durable && NowNanos() - Nanos(st.st_ctim) < kFreshSeconds * 1000000000) {
    MP_RETURN_IF_ERROR(FsyncDir(PrefixDir(hex)));
    MP_RETURN_IF_ERROR(SyncParentOf(hex, false));
  }
  return std::optional<struct stat>(st);
}

// Makes `temp` the blob `hex`. Returns false when a blob of that name was already there (a
// racing writer won; content addressing makes both identical). With `replace` (the present
// blob is known to be damaged) it is overwritten instead.
Result<bool> BlobStore::Impl::Install(TempBlob& temp, const std::string& hex, bool durable,
                                      bool replace) const {
  if (::fchmod(temp.fd(), 0444) != 0) return IoError(Errno("cannot chmod", temp.path()));
  if (durable && ::fsync(temp.fd()) != 0) return IoError(Errno("fsync failed", temp.path()));
  MP_RETURN_IF_ERROR(temp.Close());

  const std::string dir = PrefixDir(hex);
  const std::string dest = BlobPath(hex);
  bool installed = true;
  for (int attempt = 0;; ++attempt) {
    bool created = false;
    if (::mkdir(dir.c_str(), 0755) == 0) {
      created = true;
    } else if (errno != EEXIST) {
      return IoError(Errno("cannot create blob folder", dir));
    }
    if (durable) MP_RETURN_IF_ERROR(SyncParentOf(hex, created));
    int rc = 0;
    if (replace) {
      rc = ::rename(temp.path().c_str(), dest.c_str());
    } else {
      rc = ::renameat2(AT_FDCWD, temp.path().c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE);
      if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
        // The filesystem cannot refuse to replace atomically: check, then rename. A racing
        // writer could still slip in between, which only swaps one identical file for another.
        struct stat st {};
        if (::lstat(dest.c_str(), &st) == 0) {
          errno = EEXIST;
        } else {
          rc = ::rename(temp.path().c_str(), dest.c_str());
        }
      }
    }
    if (rc == 0) break;
    if (errno == EEXIST && !replace) {
      installed = false;
      break;
    }
    // A gc sweeping empty folders may remove ours between mkdir and rename: make it again.
    if (errno == ENOENT && attempt < 3) continue;
    return IoError(temp.path() + ": cannot rename to " + dest + ": " + std::strerror(errno));
  }
  // When not installed, ~TempBlob removes the temporary and the present blob is the one to
  // make durable.
  if (installed) temp.Disarm();
  if (durable) MP_RETURN_IF_ERROR(FsyncDir(dir));
  return installed;
}

Result<std::unique_ptr<BlobStore>> BlobStore::Open(const std::string& root, bool create) {
  if (root.empty()) return InvalidArgument("blob store root is empty");
  auto impl = std::make_unique<Impl>();
  impl->root = root;
  impl->blobs = root + "/blobs/sha256";
  impl->tmp = root + "/tmp";
  if (create) {
    MP_RETURN_IF_ERROR(MakeDirs(impl->blobs));
    MP_RETURN_IF_ERROR(MakeDirs(impl->tmp));
  } else {
    struct stat st {};
    const std::string blobs = root + "/blobs";
    if (::stat(blobs.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) {
        return NotFound(root + ": no registry blob store here");
      }
      return IoError(Errno("cannot stat", blobs));
    }
    if (!S_ISDIR(st.st_mode)) return NotFound(root + ": no registry blob store here");
  }
  std::unique_ptr<BlobStore> store(new BlobStore());
  store->impl_ = std::move(impl);
  return store;
}

BlobStore::~BlobStore() = default;

const std::string& BlobStore::root() const { return impl_->root; }

Result<BlobInfo> BlobStore::Put(std::span<const uint8_t> bytes, bool durable) {
  const std::string hex = Sha256Hex(bytes);
  BlobInfo info{std::string(kPrefix) + hex, bytes.size(), false, {}};
  MP_ASSIGN_OR_RETURN(auto existing, impl_->Existing(hex, durable));
  if (existing && static_cast<uint64_t>(existing->st_size) == bytes.size()) {
    info.xxh3 = impl_->ChecksumOf(hex, bytes);
    return info;
  }
  info.xxh3 = Xxh3Hex(bytes);
  MP_ASSIGN_OR_RETURN(auto temp, impl_->CreateTemp());
  MP_RETURN_IF_ERROR(WriteAll(temp->fd(), bytes.data(), bytes.size(), temp->path()));
  RecordChecksum(temp->fd(), info.xxh3);
  // A present blob of the wrong size is damaged; these bytes repair it.
  MP_ASSIGN_OR_RETURN(info.written, impl_->Install(*temp, hex, durable, existing.has_value()));
  return info;
}

Result<BlobInfo> BlobStore::PutHashed(std::span<const uint8_t> bytes, const std::string& digest,
                                      bool durable) {
  if (!IsDigest(digest)) return BadDigest(digest);
  const std::string hex = HexOf(digest);
  BlobInfo info{digest, bytes.size(), false, {}};
  MP_ASSIGN_OR_RETURN(auto existing, impl_->Existing(hex, durable));
  if (existing && static_cast<uint64_t>(existing->st_size) == bytes.size()) {
    info.xxh3 = impl_->ChecksumOf(hex, bytes);
    return info;
  }
  MP_ASSIGN_OR_RETURN(auto temp, impl_->CreateTemp());
  Sha256 sha;
  Xxh3 xxh;
  for (size_t off = 0; off < bytes.size(); off += kChunk) {
    const size_t n = std::min(kChunk, bytes.size() - off);
    sha.Update(bytes.subspan(off, n));
    xxh.Update(bytes.subspan(off, n));
    MP_RETURN_IF_ERROR(WriteAll(temp->fd(), bytes.data() + off, n, temp->path()));
  }
  info.xxh3 = xxh.FinishHex();
  RecordChecksum(temp->fd(), info.xxh3);
  const std::string actual = ToHex(sha.Finish());
  if (actual != hex) {
    return ChecksumMismatch(digest + ": the " + std::to_string(bytes.size()) +
                            " bytes given hash to sha256:" + actual);
  }
  MP_ASSIGN_OR_RETURN(info.written, impl_->Install(*temp, hex, durable, existing.has_value()));
  return info;
}

Result<BlobInfo> BlobStore::PutFile(const std::string& path, bool durable) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound(path + ": no such file");
    return IoError(Errno("cannot open", path));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return IoError(Errno("cannot stat", path));
  if (!S_ISREG(st.st_mode)) return InvalidArgument(path + ": not a regular file");
  const auto size = static_cast<uint64_t>(st.st_size);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

  // The digest is known only after reading everything, so the bytes are copied into a
  // temporary as they are hashed; when the blob turns out to be present the temporary is
  // dropped before anything forces it to disk.
  MP_ASSIGN_OR_RETURN(auto temp, impl_->CreateTemp());
  std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(size, kChunk)));
  Sha256 sha;
  Xxh3 xxh;
  uint64_t done = 0;
  while (done < size) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(size - done, buf.size()));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError(Errno("read failed", path));
    if (n == 0) {
      return IoError(path + ": file shrank while being stored (" + std::to_string(done) + " of " +
                     std::to_string(size) + " bytes read)");
    }
    sha.Update(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
    xxh.Update(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
    MP_RETURN_IF_ERROR(WriteAll(temp->fd(), buf.data(), static_cast<size_t>(n), temp->path()));
    done += static_cast<uint64_t>(n);
  }
  const std::string hex = ToHex(sha.Finish());
  BlobInfo info{std::string(kPrefix) + hex, size, false, xxh.FinishHex()};
  RecordChecksum(temp->fd(), info.xxh3);
  MP_ASSIGN_OR_RETURN(auto existing, impl_->Existing(hex, durable));
  if (existing && static_cast<uint64_t>(existing->st_size) == size) return info;  // ~TempBlob
  MP_ASSIGN_OR_RETURN(info.written, impl_->Install(*temp, hex, durable, existing.has_value()));
  return info;
}

struct BlobStore::Batch::State {
  BlobStore::Impl& store;
  bool durable;
  std::mutex mu;
  std::set<std::string> hexes;  // written in this batch
  std::vector<std::pair<std::string, std::unique_ptr<TempBlob>>> pending;
};

BlobStore::Batch::Batch(std::unique_ptr<State> state) : state_(std::move(state)) {}
BlobStore::Batch::~Batch() = default;

std::unique_ptr<BlobStore::Batch> BlobStore::NewBatch(bool durable) {
  return std::unique_ptr<Batch>(
      new Batch(std::unique_ptr<Batch::State>(new Batch::State{*impl_, durable, {}, {}, {}})));
}

Result<BlobInfo> BlobStore::Batch::Put(std::span<const uint8_t> bytes) {
  const std::string hex = Sha256Hex(bytes);
  BlobInfo info{std::string(kPrefix) + hex, bytes.size(), false, {}};
  MP_ASSIGN_OR_RETURN(auto existing, state_->store.Existing(hex, state_->durable));
  if (existing && static_cast<uint64_t>(existing->st_size) == bytes.size()) {
    info.xxh3 = state_->store.ChecksumOf(hex, bytes);
    return info;
  }
  info.xxh3 = Xxh3Hex(bytes);
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->hexes.insert(hex).second) return info;  // another tensor of this batch
  }
  MP_ASSIGN_OR_RETURN(auto temp, state_->store.CreateTemp());
  MP_RETURN_IF_ERROR(WriteAll(temp->fd(), bytes.data(), bytes.size(), temp->path()));
  RecordChecksum(temp->fd(), info.xxh3);
  if (::fchmod(temp->fd(), 0444) != 0) return IoError(Errno("cannot chmod", temp->path()));
  // Start writing it back now (asynchronously), so that Publish's sync mostly finds it done.
  if (state_->durable) (void)::sync_file_range(temp->fd(), 0, 0, SYNC_FILE_RANGE_WRITE);
  info.written = true;
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->pending.emplace_back(hex, std::move(temp));
  return info;
}

Status BlobStore::Batch::Publish() {
  std::lock_guard<std::mutex> lock(state_->mu);
  const bool durable = state_->durable;
  auto& pending = state_->pending;
  if (pending.empty()) return Status::Ok();
  if (durable && ::syncfs(pending.front().second->fd()) != 0) {
    return IoError(Errno("syncfs failed", state_->store.tmp));
  }
  std::set<std::string> folders;
  for (auto& [hex, temp] : pending) {
    // Not durable here: the data is synced above, the folders below, once each.
    MP_RETURN_IF_ERROR(
        state_->store.Install(*temp, hex, /*durable=*/false, /*replace=*/false).status());
    folders.insert(state_->store.PrefixDir(hex));
  }
  pending.clear();
  if (durable) {
    for (const auto& dir : folders) MP_RETURN_IF_ERROR(FsyncDir(dir));
    MP_RETURN_IF_ERROR(FsyncDir(state_->store.blobs));  // folders made for this batch
  }
  return Status::Ok();
}

bool BlobStore::Contains(const std::string& digest) const {
  if (!IsDigest(digest)) return false;
  struct stat st {};
  return ::lstat(impl_->BlobPath(HexOf(digest)).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Result<uint64_t> BlobStore::Size(const std::string& digest) const {
  MP_ASSIGN_OR_RETURN(std::string path, PathOf(digest));
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return NotFound(digest + ": no such blob in " + impl_->root);
    }
    return IoError(Errno("cannot stat blob", path));
  }
  if (!S_ISREG(st.st_mode)) return Corrupt(path + ": blob is not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

Result<std::string> BlobStore::PathOf(const std::string& digest) const {
  if (!IsDigest(digest)) return BadDigest(digest);
  return impl_->BlobPath(HexOf(digest));
}

Result<std::shared_ptr<Buffer>> BlobStore::Impl::ReadBlob(const std::string& digest, bool verify,
                                                          std::string_view xxh3) const {
  if (!IsDigest(digest)) return BadDigest(digest);
  const std::string path = BlobPath(HexOf(digest));
  auto file = InputFile::Open(path);
  if (!file.ok()) {
    if (file.status().code() == StatusCode::kNotFound) {
      return NotFound(digest + ": no such blob in " + root);
    }
    return file.status();
  }
  // Every caller reads the whole blob (a blob is one tensor, asset or manifest).
  (*file)->Advise(0, (*file)->size(), AccessHint::kPopulate);
  MP_ASSIGN_OR_RETURN(auto bytes, (*file)->Read(0, (*file)->size()));
  if (!verify) return bytes;
  if (xxh3.empty()) {
    const std::string actual = Sha256Hex(bytes->span());
    if (actual != HexOf(digest)) {
      return ChecksumMismatch(path + ": blob " + digest + " now hashes to sha256:" + actual);
    }
  } else if (const std::string actual = Xxh3Hex(bytes->span()); actual != xxh3) {
    return ChecksumMismatch(path + ": blob " + digest + " no longer matches its xxh3 checksum " +
                            std::string(xxh3) + " (now " + actual + ")");
  }
  return bytes;
}

Result<std::shared_ptr<Buffer>> BlobStore::Read(const std::string& digest, bool verify,
                                                std::string_view xxh3) const {
  return impl_->ReadBlob(digest, verify, xxh3);
}

Status BlobStore::Verify(const std::string& digest, std::string_view xxh3) const {
  return impl_->ReadBlob(digest, /*verify=*/true, xxh3).status();
}

Result<std::vector<BlobStore::Entry>> BlobStore::List() const {
  std::vector<Entry> out;
  DIR* top = ::opendir(impl_->blobs.c_str());
  if (top == nullptr) return IoError(Errno("cannot list blob folder", impl_->blobs));
  DirCloser top_closer{top};
  for (;;) {
    errno = 0;
    dirent* e = ::readdir(top);
    if (e == nullptr) {
      if (errno != 0) return IoError(Errno("cannot list blob folder", impl_->blobs));
      break;
    }
    const std::string_view prefix = e->d_name;
    if (prefix.size() != 2 || !IsLowerHex(prefix)) continue;
    const std::string dir = impl_->blobs + "/" + std::string(prefix);
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;
      return IoError(Errno("cannot open blob folder", dir));
    }
    DIR* sub = ::fdopendir(dfd);
    if (sub == nullptr) {
      ::close(dfd);
      return IoError(Errno("cannot list blob folder", dir));
    }
    DirCloser sub_closer{sub};
    for (;;) {
      errno = 0;
      dirent* f = ::readdir(sub);
      if (f == nullptr) {
        if (errno != 0) return IoError(Errno("cannot list blob folder", dir));
        break;
      }
      const std::string_view rest = f->d_name;
      if (rest.size() != 62 || !IsLowerHex(rest)) continue;
      struct stat st {};
      if (::fstatat(::dirfd(sub), f->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;  // removed by a concurrent gc
        return IoError(Errno("cannot stat blob", dir + "/" + std::string(rest)));
      }
      if (!S_ISREG(st.st_mode)) continue;
      out.push_back(Entry{std::string(kPrefix) + std::string(prefix) + std::string(rest),
                          static_cast<uint64_t>(st.st_size), int64_t{st.st_mtim.tv_sec}});
    }
  }
  std::sort(out.begin(), out.end(),
            [](const Entry& a, const Entry& b) { return a.digest < b.digest; });
  return out;
}

Status BlobStore::Remove(const std::string& digest) {
  MP_ASSIGN_OR_RETURN(std::string path, PathOf(digest));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return Corrupt(path + ": blob is not a regular file");
  }
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return NotFound(digest + ": no such blob in " + impl_->root);
    }
    return IoError(Errno("cannot remove blob", path));
  }
  return Status::Ok();
}

Result<uint64_t> BlobStore::RemoveStaleTemporaries(int64_t older_than_seconds) {
  if (older_than_seconds < 0) {
    return InvalidArgument("stale temporary age must not be negative (got " +
                           std::to_string(older_than_seconds) + ")");
  }
  DIR* d = ::opendir(impl_->tmp.c_str());
  if (d == nullptr) return IoError(Errno("cannot list temporary folder", impl_->tmp));
  DirCloser closer{d};
  const int64_t now = NowNanos();
  const int64_t min_age = older_than_seconds * 1000000000;
  uint64_t removed = 0;
  for (;;) {
    errno = 0;
    dirent* e = ::readdir(d);
    if (e == nullptr) {
      if (errno != 0) return IoError(Errno("cannot list temporary folder", impl_->tmp));
      break;
    }
    const std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // its writer finished or another gc removed it
      return IoError(Errno("cannot stat", impl_->tmp + "/" + std::string(name)));
    }
    if (S_ISDIR(st.st_mode)) continue;
    if (now - Nanos(st.st_mtim) < min_age) continue;
    if (::unlinkat(::dirfd(d), e->d_name, 0) != 0) {
      if (errno == ENOENT) continue;
      return IoError(Errno("cannot remove stale temporary", impl_->tmp + "/" + std::string(name)));
    }
    ++removed;
  }
  return removed;
}

}  // namespace mp::registry
