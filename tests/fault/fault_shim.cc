// An LD_PRELOAD library that makes one chosen file-system call fail, for the registry's fault
// injection test (tests/registry_fault_test.cc). It counts the calls that write or commit data
// (write, pwrite, pwrite64, fsync, fdatasync, syncfs, rename, renameat, renameat2; writes to stdin,
// stdout and stderr are neither counted nor failed) and fails call number MP_FAULT_AT with
// errno MP_FAULT_ERRNO (default EIO); with MP_FAULT_STICKY=1 every call from then on fails too,
// as a full disk does. MP_FAULT_COUNT_FILE, when set, receives the number of calls made.
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

std::atomic<long> calls{0};
long fault_at = -1;
int fault_errno = EIO;
bool sticky = false;

template <typename Fn>
Fn Real(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

__attribute__((constructor)) void Init() {
  if (const char* at = std::getenv("MP_FAULT_AT")) fault_at = std::atol(at);
  if (const char* e = std::getenv("MP_FAULT_ERRNO")) fault_errno = std::atoi(e);
  if (const char* s = std::getenv("MP_FAULT_STICKY")) sticky = std::strcmp(s, "1") == 0;
}

__attribute__((destructor)) void Fini() {
  const char* path = std::getenv("MP_FAULT_COUNT_FILE");
  if (path == nullptr) return;
  static auto real_write = Real<ssize_t (*)(int, const void*, size_t)>("write");
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  char text[32];
  const int n = std::snprintf(text, sizeof text, "%ld\n", calls.load());
  (void)real_write(fd, text, static_cast<size_t>(n));
  ::close(fd);
}

// True when this call is to fail.
bool Fault() {
  const long n = ++calls;
  if (fault_at <= 0) return false;
  if (n == fault_at || (sticky && n > fault_at)) {
    errno = fault_errno;
    return true;
  }
  return false;
}

}  // namespace

extern "C" {

ssize_t write(int fd, const void* buf, size_t count) {
  static auto real = Real<ssize_t (*)(int, const void*, size_t)>("write");
  if (fd > 2 && Fault()) return -1;
  return real(fd, buf, count);
}

ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  static auto real = Real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  if (fd > 2 && Fault()) return -1;
  return real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void* buf, size_t count, off64_t offset) {
  static auto real = Real<ssize_t (*)(int, const void*, size_t, off64_t)>("pwrite64");
  if (fd > 2 && Fault()) return -1;
  return real(fd, buf, count, offset);
}

int fsync(int fd) {
  static auto real = Real<int (*)(int)>("fsync");
  if (Fault()) return -1;
  return real(fd);
}

int syncfs(int fd) {
  static auto real = Real<int (*)(int)>("syncfs");
  if (Fault()) return -1;
  return real(fd);
}

int fdatasync(int fd) {
  static auto real = Real<int (*)(int)>("fdatasync");
  if (Fault()) return -1;
  return real(fd);
}

int rename(const char* from, const char* to) {
  static auto real = Real<int (*)(const char*, const char*)>("rename");
  if (Fault()) return -1;
  return real(from, to);
}

int renameat(int olddir, const char* from, int newdir, const char* to) {
  static auto real = Real<int (*)(int, const char*, int, const char*)>("renameat");
  if (Fault()) return -1;
  return real(olddir, from, newdir, to);
}

int renameat2(int olddir, const char* from, int newdir, const char* to, unsigned int flags) {
  static auto real = Real<int (*)(int, const char*, int, const char*, unsigned int)>("renameat2");
  if (Fault()) return -1;
  return real(olddir, from, newdir, to, flags);
}

}  // extern "C"
