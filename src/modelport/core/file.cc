#include "modelport/core/file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace mp {
namespace {

std::string Errno(const std::string& what, const std::string& path) {
  return path + ": " + what + ": " + std::strerror(errno);
}

// Temporary output files that a signal handler must remove. The handler may only use
// async-signal-safe calls, so the slots are plain atomics holding heap strings that outlive
// their registration.
constexpr int kTempSlots = 64;
std::atomic<const char*> g_temp_files[kTempSlots];

void RemoveTempFilesAndReraise(int sig) {
  for (auto& slot : g_temp_files) {
    const char* p = slot.load();
    if (p != nullptr) unlink(p);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void InstallSignalCleanupOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction old {};
      sigaction(sig, nullptr, &old);
      if (old.sa_handler == SIG_DFL) signal(sig, RemoveTempFilesAndReraise);
    }
  });
}

void RegisterTemp(const char* path) {
  for (auto& slot : g_temp_files) {
    const char* expected = nullptr;
    if (slot.compare_exchange_strong(expected, path)) return;
  }
}

void UnregisterTemp(const char* path) {
  for (auto& slot : g_temp_files) {
    const char* expected = path;
    if (slot.compare_exchange_strong(expected, nullptr)) return;
  }
}

}  // namespace

Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError(Errno("cannot open folder to fsync", dir));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return IoError(Errno("fsync of folder failed", dir));
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// InputFile

Result<std::shared_ptr<InputFile>> InputFile::Open(const std::string& path, IoMode mode) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound(path + ": no such file");
    return IoError(Errno("cannot open", path));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return IoError(Errno("cannot stat", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(path + ": not a regular file");
  }
  std::shared_ptr<InputFile> file(new InputFile());
  file->path_ = path;
  file->mode_ = mode;
  file->fd_ = fd;
  file->size_ = static_cast<uint64_t>(st.st_size);
  file->device_ = static_cast<uint64_t>(st.st_dev);
  file->inode_ = static_cast<uint64_t>(st.st_ino);
  if (mode == IoMode::kMmap && file->size_ > 0) {
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      // Some filesystems cannot map; fall back to pread rather than fail.
      file->mode_ = IoMode::kPread;
    } else {
      const size_t len = file->size_;
      file->base_ = static_cast<const uint8_t*>(p);
      file->mapping_ = std::shared_ptr<const void>(
          p, [len](const void* q) { ::munmap(const_cast<void*>(q), len); });
    }
  }
  return file;
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status InputFile::CheckRange(uint64_t offset, uint64_t length) const {
  if (offset > size_ || length > size_ - offset) {
    return Corrupt(path_ + ": byte range [" + std::to_string(offset) + ", +" +
                   std::to_string(length) + ") is past the end of the file (" +
                   std::to_string(size_) + " bytes)");
  }
  return Status::Ok();
}

Result<std::shared_ptr<Buffer>> InputFile::Read(uint64_t offset, uint64_t length) const {
  MP_RETURN_IF_ERROR(CheckRange(offset, length));
  if (base_ != nullptr) return Buffer::Wrap(base_ + offset, length, mapping_);
  MP_ASSIGN_OR_RETURN(auto buf, Buffer::Allocate(length));
  MP_RETURN_IF_ERROR(ReadInto(offset, length, buf->mutable_data()));
  return buf;
}

Status InputFile::ReadInto(uint64_t offset, uint64_t length, uint8_t* dest) const {
  MP_RETURN_IF_ERROR(CheckRange(offset, length));
  // Even when the file is mapped, large copies use pread: the kernel copies from the page cache
  // directly, without faulting the mapping's pages in one by one.
  constexpr uint64_t kPreadAbove = 64 * 1024;
  if (base_ != nullptr && length <= kPreadAbove) {
    if (length) std::memcpy(dest, base_ + offset, length);
    return Status::Ok();
  }
  uint64_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd_, dest + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError(Errno("read failed", path_));
    if (n == 0) return Corrupt(path_ + ": file shrank while being read");
    done += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

void InputFile::Advise(uint64_t offset, uint64_t length, AccessHint hint) const {
  if (base_ == nullptr || !CheckRange(offset, length).ok() || length == 0) return;
  int advice = MADV_NORMAL;
  switch (hint) {
    case AccessHint::kNormal:
      advice = MADV_NORMAL;
      break;
    case AccessHint::kSequential:
      advice = MADV_SEQUENTIAL;
      break;
    case AccessHint::kWillNeed:
      advice = MADV_WILLNEED;
      break;
    case AccessHint::kRandom:
      advice = MADV_RANDOM;
      break;
    case AccessHint::kPopulate:
      advice = MADV_POPULATE_READ;  // Linux 5.14; older kernels refuse it, and faults do the work
      break;
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t start = offset / page * page;
  ::madvise(const_cast<uint8_t*>(base_ + start), offset + length - start, advice);
}

// ---------------------------------------------------------------------------------------------
// AtomicFile

Result<std::unique_ptr<AtomicFile>> AtomicFile::Create(const std::string& dest) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(dest, ec)) return InvalidArgument(dest + ": is a folder, not a file");
  static std::atomic<int> counter{0};
  std::unique_ptr<AtomicFile> f(new AtomicFile());
  f->dest_ = dest;
  f->tmp_ = dest + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  InstallSignalCleanupOnce();
  f->fd_ = ::open(f->tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (f->fd_ < 0) return IoError(Errno("cannot create temporary file", f->tmp_));
  RegisterTemp(f->tmp_.c_str());
  return f;
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) {
    ::unlink(tmp_.c_str());
  }
  UnregisterTemp(tmp_.c_str());
}

Status AtomicFile::Write(const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd_, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError(Errno("write failed", tmp_));
    done += static_cast<size_t>(n);
  }
  written_ += size;
  return Status::Ok();
}

Status AtomicFile::WriteZeros(size_t size) {
  static const uint8_t kZeros[4096] = {};
  while (size > 0) {
    const size_t n = size < sizeof(kZeros) ? size : sizeof(kZeros);
    MP_RETURN_IF_ERROR(Write(kZeros, n));
    size -= n;
  }
  return Status::Ok();
}

Status AtomicFile::Commit(bool durable) {
  if (committed_) return Internal(dest_ + ": committed twice");
  if (durable && ::fsync(fd_) != 0) return IoError(Errno("fsync failed", tmp_));
  if (::close(fd_) != 0) {
    fd_ = -1;
    return IoError(Errno("close failed", tmp_));
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), dest_.c_str()) != 0) {
    return IoError(Errno("cannot rename temporary file onto destination", dest_));
  }
  committed_ = true;
  if (!durable) return Status::Ok();
  std::string dir = std::filesystem::path(dest_).parent_path().string();
  return FsyncDir(dir.empty() ? "." : dir);
}

Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IoError(dir + ": cannot create folder: " + ec.message());
  return Status::Ok();
}

Result<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes) {
  MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path, IoMode::kPread));
  if (file->size() > max_bytes) {
    return LimitExceeded(path + ": " + std::to_string(file->size()) +
                         " bytes is over the limit of " + std::to_string(max_bytes));
  }
  std::string out(file->size(), '\0');
  MP_RETURN_IF_ERROR(file->ReadInto(0, file->size(), reinterpret_cast<uint8_t*>(out.data())));
  return out;
}

}  // namespace mp
