// modelport_bench: one run measures the machine's own limits, modelport and its peers on the same
// 1 GiB float32 model and prints one table of medians with ratios to the limits and to the peers.
// A benchmark, not a test: targets are reported as PASS/MISS and never asserted.
//
//   modelport_bench [--dir DIR] [--reps N] [--threads N] [--no-peers] [--keep]
//                   [--only quantize|registry]
//
// Every file it makes lives in DIR (default /tmp/modelport-bench) and is removed at the end
// unless --keep is given. docs/PERFORMANCE.md explains each row.
#include <fcntl.h>
#include <onnx/onnx_pb.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "modelport/convert/cast.h"
#include "modelport/convert/quantize.h"
#include "modelport/core/buffer.h"
#include "modelport/core/file.h"
#include "modelport/core/hash.h"
#include "modelport/core/parallel.h"
#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"
#include "modelport/formats/gguf/gguf.h"
#include "modelport/formats/onnx/onnx.h"
#include "modelport/formats/safetensors/safetensors.h"
#include "modelport/formats/torch/torch.h"
#include "modelport/registry/registry.h"

extern char** environ;

namespace mp::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kHugePage = 2 * kMiB;
constexpr const char* kPython = "/usr/bin/python3";

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "modelport_bench: %s\n", message.c_str());
  std::exit(1);
}

void Check(const Status& status, const std::string& what) {
  if (!status.ok()) Die(what + ": " + status.ToString());
}

template <typename T>
T Take(Result<T> result, const std::string& what) {
  if (!result.has_value()) Die(what + ": " + result.error().ToString());
  return std::move(result).value();
}

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// Runs `body` once untimed (warm-up), then `reps` times, and returns the wall time of each
/// timed run in ms. `setup` and `teardown` run before and after each run, untimed (freeing
/// memory and deleting files stay out of the numbers).
std::vector<double> Time(int reps, const std::function<void()>& setup,
                         const std::function<void()>& body, const std::function<void()>& teardown) {
  if (setup) setup();
  body();
  if (teardown) teardown();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    if (setup) setup();
    const auto start = Clock::now();
    body();
    ms.push_back(MsSince(start));
    if (teardown) teardown();
  }
  return ms;
}

std::string Fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// The model: GPT-2-medium shapes (n_embd 1024, n_ctx 1024, 12 tensors per block). 24 blocks of
// these shapes alone hold 1.13 GiB, so the model has 20 blocks and the vocabulary is cut to
// 15098 rows, which makes the tensor bytes exactly 1 GiB in 244 tensors.

constexpr uint64_t kEmbd = 1024;
constexpr uint64_t kCtx = 1024;
constexpr int kLayers = 20;
constexpr uint64_t kVocab = 15098;

struct TensorSpec {
  std::string name;
  Shape shape;
  float center;  ///< values are center + scale * uniform(-1, 1)
  float scale;
};

std::vector<TensorSpec> ModelSpecs() {
  std::vector<TensorSpec> specs;
  specs.push_back({"wte.weight", {kVocab, kEmbd}, 0.0f, 0.02f});
  specs.push_back({"wpe.weight", {kCtx, kEmbd}, 0.0f, 0.01f});
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    specs.push_back({p + "ln_1.weight", {kEmbd}, 1.0f, 0.05f});
    specs.push_back({p + "ln_1.bias", {kEmbd}, 0.0f, 0.01f});
    specs.push_back({p + "attn.c_attn.weight", {kEmbd, 3 * kEmbd}, 0.0f, 0.02f});
    specs.push_back({p + "attn.c_attn.bias", {3 * kEmbd}, 0.0f, 0.01f});
    specs.push_back({p + "attn.c_proj.weight", {kEmbd, kEmbd}, 0.0f, 0.02f});
    specs.push_back({p + "attn.c_proj.bias", {kEmbd}, 0.0f, 0.01f});
    specs.push_back({p + "ln_2.weight", {kEmbd}, 1.0f, 0.05f});
    specs.push_back({p + "ln_2.bias", {kEmbd}, 0.0f, 0.01f});
    specs.push_back({p + "mlp.c_fc.weight", {kEmbd, 4 * kEmbd}, 0.0f, 0.02f});
    specs.push_back({p + "mlp.c_fc.bias", {4 * kEmbd}, 0.0f, 0.01f});
    specs.push_back({p + "mlp.c_proj.weight", {4 * kEmbd, kEmbd}, 0.0f, 0.02f});
    specs.push_back({p + "mlp.c_proj.bias", {kEmbd}, 0.0f, 0.01f});
  }
  specs.push_back({"ln_f.weight", {kEmbd}, 1.0f, 0.05f});
  specs.push_back({"ln_f.bias", {kEmbd}, 0.0f, 0.01f});
  return specs;
}

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Tensor `index` of the model: deterministic pseudo-random f32 values.
TensorView MakeTensor(const TensorSpec& spec, size_t index) {
  TensorInfo info = Take(TensorInfo::Make(spec.name, DType::kF32, spec.shape), spec.name);
  auto buf = Take(Buffer::Allocate(info.byte_size), spec.name);
  auto* out = reinterpret_cast<float*>(buf->mutable_data());
  const uint64_t n = info.byte_size / sizeof(float);
  uint64_t state = 0x6D6F64656C706F72ull ^ (index * 0x100000001B3ull);
  constexpr float kUnit = 1.0f / 16777216.0f;  // 24 random bits -> [0, 1)
  for (uint64_t i = 0; i < n; i += 2) {
    const uint64_t r = SplitMix64(state);
    out[i] = spec.center + spec.scale * (2.0f * static_cast<float>(r >> 40) * kUnit - 1.0f);
    if (i + 1 < n) {
      const auto lo = static_cast<float>((r >> 8) & 0xFFFFFF);
      out[i + 1] = spec.center + spec.scale * (2.0f * lo * kUnit - 1.0f);
    }
  }
  return TensorView{std::move(info), std::move(buf)};
}

/// The digest each generated tensor has, by name (regenerated one at a time: little memory).
std::map<std::string, std::string> ExpectedDigests(const std::vector<TensorSpec>& specs) {
  std::map<std::string, std::string> digests;
  for (size_t i = 0; i < specs.size(); ++i) {
    digests[specs[i].name] = TensorDigest(MakeTensor(specs[i], i));
  }
  return digests;
}

/// True if `path` is a readable model with exactly the expected names and shapes (the writer
/// may store them in another order).
bool ModelMatches(const std::string& path, const std::vector<TensorSpec>& specs) {
  auto src = OpenModel(path);
  if (!src.has_value() || (*src)->tensors().size() != specs.size()) return false;
  for (const TensorSpec& spec : specs) {
    const auto i = (*src)->Find(spec.name);
    if (!i) return false;
    const TensorInfo& t = (*src)->tensors()[*i];
    if (t.shape != spec.shape || t.dtype != DType::kF32) return false;
  }
  return true;
}

void GenerateModel(const std::string& path, const std::vector<TensorSpec>& specs) {
  const auto start = Clock::now();
  Model model;
  for (size_t i = 0; i < specs.size(); ++i) Check(model.Add(MakeTensor(specs[i], i)), "generate");
  Check(safetensors::Write(model, path, {}), "writing the benchmark model " + path);
  std::printf("generated %s (%zu tensors) in %.0f ms\n", path.c_str(), specs.size(),
              MsSince(start));
}

// ---------------------------------------------------------------------------------------------
// Machine facts and helpers around the OS.

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The number after `key` in a "Key:   123 kB" file such as /proc/self/status; -1 if absent.
int64_t ProcField(const std::string& text, const std::string& key) {
  const size_t at = text.find("\n" + key + ":");
  if (at == std::string::npos) return -1;
  return std::strtoll(text.c_str() + at + key.size() + 2, nullptr, 10);
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

std::string FilesystemOf(const std::string& path) {
  struct statfs st {};
  if (statfs(path.c_str(), &st) != 0) return "unknown";
  switch (static_cast<uint64_t>(st.f_type)) {
    case 0xEF53:
      return "ext4";
    case 0x01021994:
      return "tmpfs";
    case 0x58465342:
      return "xfs";
    case 0x9123683E:
      return "btrfs";
    case 0x794C7630:
      return "overlayfs";
    case 0x6969:
      return "nfs";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "fs type 0x%llx", static_cast<unsigned long long>(st.f_type));
      return buf;
    }
  }
}

std::string ThpSetting() {
  std::string s = ReadText("/sys/kernel/mm/transparent_hugepage/enabled");
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s.empty() ? "unavailable" : s;
}

uint64_t FileSize(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

void Remove(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);
}

/// Anonymous memory aligned to 2 MiB, optionally advised for transparent huge pages.
class Anon {
 public:
  Anon(uint64_t size, bool huge) : size_(size), map_len_(size + kHugePage) {
    void* p = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) Die("cannot map " + std::to_string(map_len_) + " bytes");
    base_ = static_cast<uint8_t*>(p);
    const auto addr = reinterpret_cast<uintptr_t>(base_);
    data_ = base_ + ((kHugePage - addr % kHugePage) % kHugePage);
    if (huge) madvise(data_, size_, MADV_HUGEPAGE);
  }
  ~Anon() { munmap(base_, map_len_); }
  Anon(const Anon&) = delete;
  Anon& operator=(const Anon&) = delete;

  uint8_t* data() { return data_; }
  void Fault() { std::memset(data_, 0x5A, size_); }

 private:
  uint64_t size_;
  uint64_t map_len_;
  uint8_t* base_;
  uint8_t* data_;
};

int OpenOrDie(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) Die(path + ": cannot open: " + std::strerror(errno));
  return fd;
}

/// read() of the whole file into `dest`, as few calls as the kernel allows.
void ReadAll(const std::string& path, uint8_t* dest, uint64_t size) {
  const int fd = OpenOrDie(path, O_RDONLY);
  uint64_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, dest + done, size - done);
    if (n <= 0) Die(path + ": short read");
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
}

/// `cat path > /dev/null`: read() through one reused 1 MiB buffer.
uint64_t Cat(const std::string& path) {
  static std::vector<uint8_t> buf(kMiB);
  const int fd = OpenOrDie(path, O_RDONLY);
  uint64_t total = 0;
  ssize_t n;
  while ((n = ::read(fd, buf.data(), buf.size())) > 0) total += static_cast<uint64_t>(n);
  ::close(fd);
  return total;
}

/// Writes `size` bytes of `src` to a new file in 64 MiB write() calls, optionally fsync'd.
void WriteFile(const std::string& path, const uint8_t* src, uint64_t size, bool sync) {
  const int fd = OpenOrDie(path, O_WRONLY | O_CREAT | O_TRUNC);
  for (uint64_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, src + done, std::min<uint64_t>(64 * kMiB, size - done));
    if (n <= 0) Die(path + ": write failed: " + std::strerror(errno));
    done += static_cast<uint64_t>(n);
  }
  if (sync && ::fsync(fd) != 0) Die(path + ": fsync failed");
  ::close(fd);
}

/// Drops the clean pages of `path` from the page cache.
void Evict(const std::string& path) {
  const int fd = OpenOrDie(path, O_RDONLY);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

/// Fraction of `path` resident in the page cache (mincore over a mapping).
double Resident(const std::string& path) {
  const uint64_t size = FileSize(path);
  const int fd = OpenOrDie(path, O_RDONLY);
  void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return 0;
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((size + page - 1) / page);
  double frac = 0;
  if (mincore(p, size, vec.data()) == 0) {
    frac = static_cast<double>(
               std::count_if(vec.begin(), vec.end(), [](unsigned char c) { return c & 1; })) /
           static_cast<double>(vec.size());
  }
  munmap(p, size);
  return frac;
}

/// One run of the limit L (read() into a fresh huge-page buffer), in ms.
double TimeReadLimit(const std::string& path, uint64_t size) {
  Anon buf(size, true);
  const auto start = Clock::now();
  ReadAll(path, buf.data(), size);
  return MsSince(start);
}

/// One run of the limit W (write() of `size` bytes to a new file, no fsync), in ms.
double TimeWriteLimit(const std::string& path, const uint8_t* src, uint64_t size) {
  Remove(path);
  const auto start = Clock::now();
  WriteFile(path, src, size, false);
  const double ms = MsSince(start);
  Remove(path);
  return ms;
}

/// Sum of `size` bytes at `p` as uint64 words, 4 independent sums: one thread streaming through
/// memory that is already faulted in, the per-core read bandwidth limit M.
uint64_t SumWords(const uint8_t* p, uint64_t size) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  const uint64_t n = size / 8;
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  uint64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += w[i];
    s1 += w[i + 1];
    s2 += w[i + 2];
    s3 += w[i + 3];
  }
  for (; i < n; ++i) s0 += w[i];
  return s0 + s1 + s2 + s3;
}

/// One run of the limit M over the tensors of `model` (all of them, one thread), in ms.
double TimeMemoryRead(const Model& model, unsigned threads = 1) {
  static volatile uint64_t sink = 0;
  const auto start = Clock::now();
  std::atomic<uint64_t> sum{0};
  // The tensors on `threads` threads of the worker pool (the quantize rows' pool).
  (void)ParallelFor(
      model.tensors().size(),
      [&](size_t i) {
        const TensorView t = Take(model.Load(i), "memory read");
        sum += SumWords(t.data->data(), t.data->size());
        return Status::Ok();
      },
      threads);
  const double ms = MsSince(start);
  sink = sink + sum.load();
  return ms;
}

/// Median of runs[i] / limit_runs[i + 1]: each timed run against a run of its limit made just
/// before it (in the untimed setup), which cancels most of the drift of a shared machine.
/// limit_runs[0] belongs to the warm-up run.
double PairedRatio(const std::vector<double>& runs, const std::vector<double>& limit_runs) {
  std::vector<double> r;
  for (size_t i = 0; i < runs.size() && i + 1 < limit_runs.size(); ++i) {
    r.push_back(runs[i] / limit_runs[i + 1]);
  }
  return Median(r);
}

/// The floor of an owned load: each tensor pread() into its own 2 MiB-aligned MADV_HUGEPAGE
/// mapping on `threads` threads. Not modelport code; it shows how much of LoadAll's time is the
/// library's own and what more threads would give.
void BareLoad(const ModelSource& src, const std::string& path, uint64_t data_start,
              unsigned threads, std::vector<std::unique_ptr<Anon>>& out) {
  const auto& infos = src.tensors();
  std::vector<uint64_t> offsets;
  uint64_t offset = data_start;  // the tensors tile the data section in order
  for (const TensorInfo& t : infos) {
    offsets.push_back(offset);
    offset += t.byte_size;
  }
  out.resize(infos.size());
  const int fd = OpenOrDie(path, O_RDONLY);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < infos.size(); i = next++) {
      const uint64_t size = infos[i].byte_size;
      out[i] = std::make_unique<Anon>(size, true);
      for (uint64_t done = 0; done < size;) {
        const ssize_t got =
            ::pread(fd, out[i]->data() + done, size - done, static_cast<off_t>(offsets[i] + done));
        if (got <= 0) Die(path + ": short read");
        done += static_cast<uint64_t>(got);
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  ::close(fd);
}

/// `cat in > out`: 1 MiB read()s from `in`, each written to the new file `out` (no fsync).
void CatTo(const std::string& in, const std::string& out) {
  static std::vector<uint8_t> buf(kMiB);
  const int src = OpenOrDie(in, O_RDONLY);
  const int dst = OpenOrDie(out, O_WRONLY | O_CREAT | O_TRUNC);
  ssize_t n;
  while ((n = ::read(src, buf.data(), buf.size())) > 0) {
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = ::write(dst, buf.data() + done, static_cast<size_t>(n - done));
      if (w <= 0) Die(out + ": write failed");
      done += w;
    }
  }
  ::close(src);
  ::close(dst);
}

/// Every tensor of `inner` twice ("a." and "b." + name): the 1 GiB f32 model cast to f16 is
/// then 1 GiB again, the size the GGUF rows are specified for.
class Doubled final : public ModelSource {
 public:
  explicit Doubled(const ModelSource& inner) : inner_(inner) {
    for (const char* prefix : {"a.", "b."}) {
      for (TensorInfo t : inner.tensors()) {
        t.name = prefix + t.name;
        infos_.push_back(std::move(t));
      }
    }
  }
  std::string_view format() const override { return inner_.format(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return inner_.metadata(); }
  Result<TensorView> Load(size_t index) const override {
    MP_ASSIGN_OR_RETURN(TensorView t, inner_.Load(index % inner_.tensors().size()));
    t.info = infos_[index];
    return t;
  }

 private:
  const ModelSource& inner_;
  std::vector<TensorInfo> infos_;
};

// `inner` with the tensors whose index is `k` mod 10 changed (their first byte flipped): one
// of ten fine-tunes, each touching 10% of the tensors.
class FineTune final : public ModelSource {
 public:
  FineTune(const ModelSource& inner, size_t k) : inner_(inner), k_(k) {}
  std::string_view format() const override { return inner_.format(); }
  const std::vector<TensorInfo>& tensors() const override { return inner_.tensors(); }
  const Json& metadata() const override { return inner_.metadata(); }
  Result<TensorView> Load(size_t index) const override {
    MP_ASSIGN_OR_RETURN(TensorView t, inner_.Load(index));
    if (index % 10 != k_ || t.info.byte_size == 0) return t;
    MP_ASSIGN_OR_RETURN(auto copy, Buffer::Allocate(t.info.byte_size));
    std::memcpy(copy->mutable_data(), t.data->data(), t.info.byte_size);
    copy->mutable_data()[0] ^= static_cast<uint8_t>(0x80 | (k_ + 1));
    t.data = std::move(copy);
    return t;
  }

 private:
  const ModelSource& inner_;
  size_t k_;
};

/// Runs argv[0] with stdout captured (stderr passes through). Exit code -1 if it cannot start.
std::pair<int, std::string> Spawn(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) Die("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  std::string out;
  if (rc == 0) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (rc != 0) return {-1, out};
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

// ---------------------------------------------------------------------------------------------
// ONNX inputs without Python: a ModelProto whose initializers point, as external data, at the
// tensors inside the benchmark's safetensors file (same folder), written with libprotobuf's
// onnx classes. OnnxSource::Rewrite turns it into the real inputs.

/// ONNX TensorProto.DataType codes of the safetensors dtypes the benchmark model can hold.
int32_t OnnxTypeCode(const std::string& st_dtype) {
  static const std::map<std::string, int32_t> kCodes = {
      {"F32", 1}, {"U8", 2},   {"I8", 3},   {"I16", 5},  {"I32", 6},
      {"I64", 7}, {"BOOL", 9}, {"F16", 10}, {"F64", 11}, {"BF16", 16}};
  const auto it = kCodes.find(st_dtype);
  if (it == kCodes.end()) Die("no ONNX type for safetensors dtype " + st_dtype);
  return it->second;
}

/// Writes `onnx_path`: one initializer per tensor of the safetensors file `st_path` (in the
/// same folder), each stored as external data at that tensor's bytes in `st_path`.
void WriteOnnxPointingAt(const std::string& st_path, const std::string& onnx_path) {
  const int fd = OpenOrDie(st_path, O_RDONLY);
  uint8_t len_bytes[8];
  if (::pread(fd, len_bytes, 8, 0) != 8) Die(st_path + ": short read");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | len_bytes[i];
  std::string header(header_len, '\0');
  if (::pread(fd, header.data(), header_len, 8) != static_cast<ssize_t>(header_len)) {
    Die(st_path + ": short read of the header");
  }
  ::close(fd);
  const Json j = Json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) Die(st_path + ": header is not a JSON object");
  struct Entry {
    uint64_t begin, end;
    std::string name;
    const Json* json;
  };
  std::vector<Entry> entries;
  for (const auto& [name, value] : j.items()) {
    if (name == "__metadata__") continue;
    const auto& off = value.at("data_offsets");
    entries.push_back({off[0].get<uint64_t>(), off[1].get<uint64_t>(), name, &value});
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });

  ::onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("modelport_bench");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(17);
  auto* graph = model.mutable_graph();
  graph->set_name("bench");
  const std::string location = fs::path(st_path).filename().string();
  const uint64_t data_start = 8 + header_len;
  for (const Entry& e : entries) {
    auto* t = graph->add_initializer();
    t->set_name(e.name);
    for (const auto& d : e.json->at("shape")) t->add_dims(d.get<int64_t>());
    t->set_data_type(OnnxTypeCode(e.json->at("dtype").get<std::string>()));
    t->set_data_location(::onnx::TensorProto::EXTERNAL);
    auto add = [&](const char* key, const std::string& value) {
      auto* kv = t->add_external_data();
      kv->set_key(key);
      kv->set_value(value);
    };
    add("location", location);
    add("offset", std::to_string(data_start + e.begin));
    add("length", std::to_string(e.end - e.begin));
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) Die(onnx_path + ": cannot serialize the ModelProto");
  WriteFile(onnx_path, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), false);
}

// ---------------------------------------------------------------------------------------------
// Convert, measured in a fresh child process so its peak memory is its own.

struct ConvertResult {
  double ms = 0;
  int64_t base_anon_kib = 0;  ///< RssAnon before opening the source
  int64_t peak_anon_kib = 0;  ///< highest RssAnon seen (sampled every 1 ms)
  int64_t vmhwm_kib = 0;      ///< peak resident set, mapped file pages included
  int64_t base_rss_kib = 0;
};

/// The child: open SRC, cast floats to f16 (cast "f16") or not ("none"), write DST as
/// safetensors, durably (fsync, as the CLI does) or not ("scratch", as cat and torch.save);
/// prints one JSON line.
int ConvertChild(const std::string& src_path, const std::string& dst_path, const std::string& io,
                 const std::string& cast_to, const std::string& write_mode) {
  // Reset the peak RSS (VmHWM) to the current RSS (proc(5), clear_refs "5").
  std::ofstream("/proc/self/clear_refs") << "5";
  std::atomic<bool> stop{false};
  std::atomic<int64_t> peak_anon{0};
  const std::string before = ReadText("/proc/self/status");
  const int64_t base_anon = ProcField(before, "RssAnon");
  std::thread sampler([&] {
    while (!stop.load()) {
      const int64_t anon = ProcField(ReadText("/proc/self/status"), "RssAnon");
      if (anon > peak_anon.load()) peak_anon.store(anon);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  ReadOptions options;
  options.io_mode = io == "pread" ? IoMode::kPread : IoMode::kMmap;
  const auto start = Clock::now();
  auto src = Take(OpenModel(src_path, options), "convert: open " + src_path);
  WriteOptions write;
  write.durable = write_mode != "scratch";
  if (cast_to == "f16") {
    auto cast = CastFloats(*src, DType::kF16);
    Check(safetensors::Write(*cast, dst_path, write), "convert: write " + dst_path);
  } else {
    Check(safetensors::Write(*src, dst_path, write), "convert: write " + dst_path);
  }
  const double ms = MsSince(start);
  stop.store(true);
  sampler.join();
  const std::string after = ReadText("/proc/self/status");
  std::printf("{\"ms\": %.3f, \"base_anon_kib\": %" PRId64 ", \"peak_anon_kib\": %" PRId64
              ", \"vmhwm_kib\": %" PRId64 ", \"base_rss_kib\": %" PRId64 "}\n",
              ms, base_anon, std::max(peak_anon.load(), ProcField(after, "RssAnon")),
              ProcField(after, "VmHWM"), ProcField(before, "VmRSS"));
  return 0;
}

ConvertResult RunConvertChild(const std::string& src, const std::string& dst, const std::string& io,
                              const std::string& cast_to = "f16",
                              const std::string& write_mode = "durable") {
  auto [code, out] =
      Spawn({"/proc/self/exe", "--convert-child", src, dst, io, cast_to, write_mode});
  if (code != 0) Die("convert child failed (exit " + std::to_string(code) + ")");
  const Json j = Json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) Die("convert child printed no JSON: " + out);
  ConvertResult r;
  r.ms = j.value("ms", 0.0);
  r.base_anon_kib = j.value("base_anon_kib", int64_t{0});
  r.peak_anon_kib = j.value("peak_anon_kib", int64_t{0});
  r.vmhwm_kib = j.value("vmhwm_kib", int64_t{0});
  r.base_rss_kib = j.value("base_rss_kib", int64_t{0});
  return r;
}

// ---------------------------------------------------------------------------------------------
// The table.

/// Median and best of a measurement's timed runs; ms < 0 means "no time".
struct Stat {
  double ms = -1;
  double best = -1;
};

Stat Summarize(const std::vector<double>& ms) {
  if (ms.empty()) return {};
  return {Median(ms), *std::min_element(ms.begin(), ms.end())};
}

struct Row {
  std::string name;
  Stat time = {};
  uint64_t bytes = 0;  ///< for GB/s (at the median); 0: none
  std::string vs_limit = {};
  std::string vs_peer = {};
  std::string target = {};  ///< "<= 5 ms: PASS"
  bool section = false;
};

Row Section(std::string name) { return Row{.name = std::move(name), .section = true}; }

std::string GBs(uint64_t bytes, double ms) {
  return ms > 0 && bytes ? Fmt("%.2f", static_cast<double>(bytes) / (ms * 1e6)) : "";
}

std::string MsText(double ms) {
  if (ms < 0) return "";
  if (ms < 10) return Fmt("%.3f", ms);
  if (ms < 100) return Fmt("%.1f", ms);
  return Fmt("%.0f", ms);
}

/// "1.08x L": how many times the limit's (median) time this takes.
std::string VsLimit(double ms, double limit_ms, const std::string& limit) {
  return limit_ms > 0 ? Fmt("%.2fx ", ms / limit_ms) + limit : "";
}

/// "5.3x faster than torch.load" or "1.4x slower than ...".
std::string VsPeer(double ms, const Stat& peer, const std::string& name) {
  if (peer.ms <= 0) return "";
  const double r = peer.ms / ms;
  return r >= 1 ? Fmt("%.1fx faster than ", r) + name : Fmt("%.1fx slower than ", 1 / r) + name;
}

std::string Join(const std::string& a, const std::string& b) {
  return a.empty() ? b : b.empty() ? a : a + ", " + b;
}

std::string Verdict(bool pass) { return pass ? "PASS" : "MISS"; }

void PrintTable(const std::vector<Row>& rows) {
  size_t w[6] = {11, 9, 7, 5, 8, 8};
  for (const Row& r : rows) {
    if (r.section) continue;
    w[0] = std::max(w[0], r.name.size());
    w[4] = std::max(w[4], r.vs_limit.size());
    w[5] = std::max(w[5], r.vs_peer.size());
  }
  auto line = [&](const std::string& name, const std::string& ms, const std::string& best,
                  const std::string& gbs, const std::string& limit, const std::string& peer,
                  const std::string& target) {
    std::printf("%-*s  %*s  %*s  %*s  %-*s  %-*s  %s\n", static_cast<int>(w[0]), name.c_str(),
                static_cast<int>(w[1]), ms.c_str(), static_cast<int>(w[2]), best.c_str(),
                static_cast<int>(w[3]), gbs.c_str(), static_cast<int>(w[4]), limit.c_str(),
                static_cast<int>(w[5]), peer.c_str(), target.c_str());
  };
  std::printf("\n");
  line("measurement", "median ms", "best ms", "GB/s", "vs limit", "vs peers", "target");
  for (const Row& r : rows) {
    if (r.section) {
      std::printf("-- %s\n", r.name.c_str());
      continue;
    }
    line(r.name, MsText(r.time.ms), MsText(r.time.best), GBs(r.bytes, r.time.ms), r.vs_limit,
         r.vs_peer, r.target);
  }
}

// ---------------------------------------------------------------------------------------------

struct Options {
  std::string dir = "/tmp/modelport-bench";
  int reps = 5;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  bool peers = true;
  bool keep = false;
  std::string only;  ///< "quantize": the memory-read limit and the quantize rows only
};

struct Peers {
  Stat torch_load, torch_save, torch_save_fsync, torch_load_save, np_load, np_save;
  std::string versions;
};

Peers RunPeers(const Options& opt, const std::string& model_path) {
  Peers p;
  if (!opt.peers) return p;
  if (access(kPython, X_OK) != 0) {
    std::printf("peers: %s not found; peer columns left empty\n", kPython);
    return p;
  }
  std::printf("peers: running %s %s (torch, numpy) ...\n", kPython, MODELPORT_PEERS_SCRIPT);
  std::fflush(stdout);
  auto [code, out] = Spawn({kPython, MODELPORT_PEERS_SCRIPT, "--dir", opt.dir, "--model",
                            model_path, "--reps", std::to_string(opt.reps)});
  const Json j = Json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (code != 0 || j.is_discarded() || !j.is_object()) {
    std::printf("peers: peers.py failed (exit %d); peer columns left empty\n", code);
    return p;
  }
  auto stat = [&](const char* key) -> Stat {
    if (!j.contains(key) || !j[key].is_array()) return {};
    return Summarize(j[key].get<std::vector<double>>());
  };
  p.torch_load = stat("torch_load_ms");
  p.torch_save = stat("torch_save_ms");
  p.torch_save_fsync = stat("torch_save_fsync_ms");
  p.torch_load_save = stat("torch_load_save_ms");
  p.np_load = stat("np_load_ms");
  p.np_save = stat("np_save_ms");
  p.versions = j.value("versions", "");
  if (j.contains("skipped") && !j["skipped"].empty()) {
    std::printf("peers: skipped: %s\n", j["skipped"].dump().c_str());
  }
  return p;
}

/// peers.py --onnx: onnx.load of the inline ONNX model (python3-onnx); "no time" without peers.
std::pair<Stat, std::string> RunOnnxPeer(const Options& opt, const std::string& model_path,
                                         const std::string& onnx_path) {
  if (!opt.peers || access(kPython, X_OK) != 0) return {};
  std::printf("peers: running %s %s --onnx (onnx.load) ...\n", kPython, MODELPORT_PEERS_SCRIPT);
  std::fflush(stdout);
  auto [code, out] = Spawn({kPython, MODELPORT_PEERS_SCRIPT, "--dir", opt.dir, "--model",
                            model_path, "--reps", std::to_string(opt.reps), "--onnx", onnx_path});
  const Json j = Json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (code != 0 || j.is_discarded() || !j.is_object()) {
    std::printf("peers: peers.py --onnx failed (exit %d); onnx.load row left out\n", code);
    return {};
  }
  if (!j.contains("onnx_load_ms") || !j["onnx_load_ms"].is_array()) {
    std::printf("peers: onnx.load skipped: %s\n", j.value("skipped", Json::array()).dump().c_str());
    return {};
  }
  return {Summarize(j["onnx_load_ms"].get<std::vector<double>>()), j.value("versions", "")};
}

std::string LoadAvg() {
  std::string s = ReadText("/proc/loadavg");
  const size_t third = s.find(' ', s.find(' ', s.find(' ') + 1) + 1);
  return third == std::string::npos ? s : s.substr(0, third);
}

/// The machine-limit rows. Returns the limits the modelport rows are compared with.
struct Limits {
  double read_huge = 0, write = 0, write_sync = 0, sha_mt = 0;
  int64_t huge_kib = 0;
};

Limits MeasureLimits(const Options& opt, const std::string& model_path, const std::string& scratch,
                     uint64_t n, std::vector<Row>& rows) {
  const int reps = opt.reps;
  Limits lim;
  rows.push_back(Section("machine limits (as many bytes as the model file)"));
  Anon src(n, true), dst(n, true);
  src.Fault();
  dst.Fault();
  rows.push_back({.name = "memcpy, pre-faulted buffers",
                  .time = Summarize(Time(
                      reps, nullptr, [&] { std::memcpy(dst.data(), src.data(), n); }, nullptr)),
                  .bytes = n});

  std::unique_ptr<Anon> fresh;
  const Stat read_huge = Summarize(Time(
      reps, [&] { fresh = std::make_unique<Anon>(n, true); },
      [&] { ReadAll(model_path, fresh->data(), n); },
      [&] {
        lim.huge_kib = ProcField(ReadText("/proc/self/smaps_rollup"), "AnonHugePages");
        fresh.reset();
      }));
  lim.read_huge = read_huge.ms;
  rows.push_back({.name = "read() into fresh huge-page buffer [L]", .time = read_huge, .bytes = n});
  rows.push_back({.name = "read() into pre-faulted huge-page buffer",
                  .time = Summarize(Time(
                      reps,
                      [&] {
                        fresh = std::make_unique<Anon>(n, true);
                        fresh->Fault();
                      },
                      [&] { ReadAll(model_path, fresh->data(), n); }, [&] { fresh.reset(); })),
                  .bytes = n});
  rows.push_back({.name = "read() into fresh 4 KiB-page buffer",
                  .time = Summarize(Time(
                      reps, [&] { fresh = std::make_unique<Anon>(n, false); },
                      [&] { ReadAll(model_path, fresh->data(), n); }, [&] { fresh.reset(); })),
                  .bytes = n});
  rows.push_back({.name = "cat > /dev/null (1 MiB read()s)",
                  .time = Summarize(Time(
                      reps, nullptr, [&] { Cat(model_path); }, nullptr)),
                  .bytes = n});

  auto unlink_scratch = [&] { Remove(scratch); };
  const Stat write = Summarize(Time(
      reps, unlink_scratch, [&] { WriteFile(scratch, src.data(), n, false); }, unlink_scratch));
  lim.write = write.ms;
  rows.push_back({.name = "write() to page cache, no fsync [W]", .time = write, .bytes = n});
  const Stat write_sync = Summarize(Time(
      reps, unlink_scratch, [&] { WriteFile(scratch, src.data(), n, true); }, unlink_scratch));
  lim.write_sync = write_sync.ms;
  rows.push_back({.name = "write() + fsync [WS]", .time = write_sync, .bytes = n});

  rows.push_back({.name = "SHA-256, 1 thread (libcrypto)",
                  .time = Summarize(Time(
                      reps, nullptr,
                      [&] {
                        Sha256 sha;
                        sha.Update(std::span<const uint8_t>(src.data(), n));
                        (void)sha.Finish();
                      },
                      nullptr)),
                  .bytes = n});
  const Stat sha_mt = Summarize(Time(
      reps, nullptr,
      [&] {
        std::vector<std::thread> pool;
        const uint64_t part = n / opt.threads;
        for (unsigned t = 0; t < opt.threads; ++t) {
          pool.emplace_back([&, t] {
            const uint64_t len = t + 1 == opt.threads ? n - t * part : part;
            Sha256 sha;
            sha.Update(std::span<const uint8_t>(src.data() + t * part, len));
            (void)sha.Finish();
          });
        }
        for (auto& th : pool) th.join();
      },
      nullptr));
  lim.sha_mt = sha_mt.ms;
  rows.push_back({.name = "SHA-256, " + std::to_string(opt.threads) + " threads [H]",
                  .time = sha_mt,
                  .bytes = n});
  return lim;
}

/// The quantize rows: `mp::Quantize` (with its report) over the 1 GiB f32 model loaded into
/// memory, `Load()` of every tensor of the view, result discarded; int8 per channel and q8_0, on
/// 1 thread and on opt.threads. Each is held per core (input bytes / time / threads) to the
/// memory read of the same loaded model by as many threads, per core (M on 1 thread, Mt on
/// opt.threads: where one core already takes all the memory bandwidth there is, a core's share
/// of it is Mt / t), which also runs once just before every timed run (the paired ratio the
/// PASS/MISS uses). The M rows go to `*m_rows` (machine limits), the others to `rows`.
void QuantizeRows(const Options& opt, const std::string& model_path, uint64_t raw_bytes,
                  std::vector<Row>* m_rows, std::vector<Row>& rows) {
  const std::unique_ptr<Model> model =
      Take(LoadAll(*Take(OpenModel(model_path), "open")), "LoadAll");
  std::vector<unsigned> thread_counts = {1u};
  if (opt.threads > 1) thread_counts.push_back(opt.threads);
  std::map<unsigned, Stat> mem;
  for (const unsigned threads : thread_counts) {
    mem[threads] = Summarize(Time(
        opt.reps, nullptr, [&] { (void)TimeMemoryRead(*model, threads); }, nullptr));
    m_rows->push_back({.name = threads == 1
                                   ? "memory read, 1 thread (sum of the loaded model's words) [M]"
                                   : "memory read, " + std::to_string(threads) + " threads [M" +
                                         std::to_string(threads) + "]",
                       .time = mem[threads],
                       .bytes = raw_bytes});
  }
  rows.push_back(Section("quantize (the 1 GiB f32 model in memory, Load() of every tensor)"));
  for (const QuantScheme scheme : {QuantScheme::kInt8, QuantScheme::kQ8_0}) {
    for (const unsigned threads : thread_counts) {
      const std::string m = threads == 1 ? "M" : "M" + std::to_string(threads);
      QuantizeOptions o;
      o.scheme = scheme;
      o.threads = threads;
      QuantReport report;
      std::vector<double> m_runs;
      const std::vector<double> runs = Time(
          opt.reps, [&] { m_runs.push_back(TimeMemoryRead(*model, threads)); },
          [&] {
            report = QuantReport();
            auto view = Take(Quantize(*model, o, &report), "quantize");
            for (size_t i = 0; i < view->tensors().size(); ++i) {
              (void)Take(view->Load(i), "quantize: load");
            }
          },
          nullptr);
      const Stat t = Summarize(runs);
      // Per core, against the memory read per core: time of M over time of this run.
      const double per_core = static_cast<double>(raw_bytes) / (t.ms * 1e6) / threads;
      const double mem_per_core =
          static_cast<double>(raw_bytes) / (mem[threads].ms * 1e6) / threads;
      const double paired_time = PairedRatio(runs, m_runs);
      const double paired = 1 / paired_time;
      const ErrorStats err = report.overall();
      rows.push_back(
          {.name = std::string("quantize ") +
                   (scheme == QuantScheme::kInt8 ? "int8 per-channel" : "q8_0") + " (" +
                   std::to_string(threads) + (threads == 1 ? " thread)" : " threads)"),
           .time = t,
           .bytes = raw_bytes,
           .vs_limit =
               Fmt("%.2fx ", t.ms / mem[threads].ms) + m + Fmt(" (paired %.2fx)", paired_time),
           .vs_peer = std::to_string(report.quantized_count()) + " tensors quantized, " +
                      Fmt("SNR %.1f dB", err.snr_db()),
           .target = Fmt("per core: %.2f GB/s", per_core) +
                     Fmt(" = %.0f%% of memory read per core (", 100 * per_core / mem_per_core) + m +
                     "/" + std::to_string(threads) +
                     Fmt(", paired %.0f%%); target >= 50%%: ", 100 * paired) +
                     Verdict(paired >= 0.5)});
    }
  }
}

/// The registry rows: push the model into a fresh registry (durable: every new blob fsync'd) and
/// push it again (nothing new to store), both against H, SHA-256 of as many bytes on all
/// threads; export a version to safetensors against `cat in > out` [C] (no fsync, like cat);
/// and ten fine-tunes of the model, each changing 10% of its tensors, reported as stored /
/// logical.
void RegistryRows(const Options& opt, const std::string& model_path, const std::string& scratch,
                  const Limits& lim, std::vector<Row>& rows) {
  const int reps = opt.reps;
  const std::string root = opt.dir + "/registry";
  auto src = Take(OpenModel(model_path), "open");
  const uint64_t bytes = Take(src->TotalBytes(), "bytes");
  std::unique_ptr<registry::Registry> reg;
  auto fresh = [&] {
    reg.reset();
    fs::remove_all(root);
    reg = Take(registry::Registry::Init(root, ""), "registry init");
  };
  auto push = [&](const ModelSource& m, bool durable) {
    registry::PushOptions o;
    o.durable = durable;
    return Take(reg->Push("m", m, o), "push");
  };
  rows.push_back({.name = "-- registry (the 1 GiB model)"});
  const Stat first = Summarize(Time(
      reps, fresh, [&] { push(*src, true); }, nullptr));
  rows.push_back({.name = "push, new (durable)",
                  .time = first,
                  .bytes = bytes,
                  .vs_limit = VsLimit(first.ms, lim.sha_mt, "H"),
                  .target = "<= 1.2x H: " + Verdict(first.ms <= 1.2 * lim.sha_mt)});
  const Stat again = Summarize(Time(
      reps, nullptr, [&] { push(*src, true); }, nullptr));
  rows.push_back({.name = "push again (all blobs present)",
                  .time = again,
                  .bytes = bytes,
                  .vs_limit = VsLimit(again.ms, lim.sha_mt, "H"),
                  .target = "<= 1.2x H: " + Verdict(again.ms <= 1.2 * lim.sha_mt)});
  const registry::VersionRecord v =
      Take(reg->Resolve(Take(registry::ParseRef("m@1"), "ref")), "resolve");
  ::sync();  // the pushes' writeback would otherwise throttle the rows below
  const Stat cat = Summarize(Time(
      reps, nullptr, [&] { CatTo(model_path, scratch); }, [&] { Remove(scratch); }));
  rows.push_back({.name = "cat in > out, the model [C]", .time = cat, .bytes = bytes});
  WriteOptions scratch_write;
  scratch_write.durable = false;
  const Stat exported = Summarize(Time(
      reps, nullptr,
      [&] {
        // As `registry export` does: every blob re-hashed on all cores, then streamed.
        Check(reg->Verify(v), "verify version");
        auto stored = Take(reg->Load(v, /*verify=*/false), "load version");
        Check(safetensors::Write(*stored, scratch, scratch_write), "export");
      },
      [&] { Remove(scratch); }));
  rows.push_back({.name = "export -> safetensors (verified first)",
                  .time = exported,
                  .bytes = bytes,
                  .vs_limit = VsLimit(exported.ms, cat.ms, "C"),
                  .target = "<= 1.3x C: " + Verdict(exported.ms <= 1.3 * cat.ms)});
  fresh();
  push(*src, false);
  for (size_t k = 0; k < 10; ++k) push(FineTune(*src, k), false);
  const registry::StorageReport du = Take(reg->Du(), "du");
  rows.push_back(
      {.name = "base + 10 fine-tunes (10% each): stored / logical",
       .target = Fmt("%.3f",
                     static_cast<double>(du.stored_bytes) / static_cast<double>(du.logical_bytes)) +
                 Fmt(" (%.2f GiB of ", static_cast<double>(du.stored_bytes) / (1 << 30)) +
                 Fmt("%.2f GiB)", static_cast<double>(du.logical_bytes) / (1 << 30))});
  reg.reset();
  fs::remove_all(root);
}

int RunBench(const Options& opt) {
  Check(MakeDirs(opt.dir), "bench folder");
  const std::string model_path = opt.dir + "/model.safetensors";
  const std::string scratch = opt.dir + "/scratch.bin";
  const std::string save_path = opt.dir + "/save.safetensors";
  const std::string f16_path = opt.dir + "/convert_f16.safetensors";
  const int reps = opt.reps;

  struct utsname uts {};
  uname(&uts);
  const double ram_gib = static_cast<double>(sysconf(_SC_PHYS_PAGES)) *
                         static_cast<double>(sysconf(_SC_PAGESIZE)) / static_cast<double>(kGiB);
  std::printf("machine: %s, %u CPUs, %.1f GiB RAM, Linux %s; %s on %s; THP %s\n",
              CpuModel().c_str(), std::thread::hardware_concurrency(), ram_gib, uts.release,
              opt.dir.c_str(), FilesystemOf(opt.dir).c_str(), ThpSetting().c_str());
  std::printf("load average at start: %s\n", LoadAvg().c_str());
  std::printf(
      "each measurement: 1 warm-up + %d timed runs; median and best shown; "
      "GB/s = 1e9 bytes/s at the median\n",
      reps);

  const std::vector<TensorSpec> specs = ModelSpecs();
  if (ModelMatches(model_path, specs)) {
    std::printf("reusing %s\n", model_path.c_str());
  } else {
    GenerateModel(model_path, specs);
  }
  const uint64_t file_bytes = FileSize(model_path);
  uint64_t raw_bytes = 0, largest = 0;
  {
    auto src = Take(OpenModel(model_path), "open " + model_path);
    raw_bytes = Take(src->TotalBytes(), "total bytes");
    for (const auto& t : src->tensors()) largest = std::max(largest, t.byte_size);
  }

  // Warm the page cache: every read below comes from memory, not from the disk.
  Cat(model_path);
  std::printf("page cache: %s read once before the measurements: %.1f%% resident\n",
              model_path.c_str(), 100 * Resident(model_path));
  std::printf("model: %zu f32 tensors, %" PRIu64 " tensor bytes, file %" PRIu64
              " bytes, largest tensor %" PRIu64 " bytes\n",
              specs.size(), raw_bytes, file_bytes, largest);
  std::fflush(stdout);

  const std::string m_legend =
      "M = one thread summing the 64-bit words of the model loaded into memory (LoadAll, "
      "pre-faulted), Mt the same on t threads: the memory-read bandwidth per core (Mt / t) the "
      "quantize rows on as many threads are held to, per core; their (paired Nx) and "
      "PASS/MISS use a run of M or Mt made just before each run.";
  auto finish = [&](const std::vector<Row>& rows, const std::string& legend) {
    std::printf("\nload average at end: %s\n", LoadAvg().c_str());
    std::printf("%s\n", legend.c_str());
    PrintTable(rows);
    Remove(scratch);
    if (!opt.keep) {
      for (const char* f : {"model.safetensors", "model.pt", "model.npy"}) {
        Remove(opt.dir + "/" + f);
      }
      std::error_code ec;
      fs::remove(opt.dir, ec);  // only if now empty
    } else {
      std::printf("\nkept the generated inputs in %s (remove them with rm -r)\n", opt.dir.c_str());
    }
  };

  std::vector<Row> rows;
  if (opt.only == "quantize") {
    rows.push_back(Section("machine limits"));
    std::vector<Row> m_rows;
    QuantizeRows(opt, model_path, raw_bytes, &m_rows, rows);
    rows.insert(rows.begin() + 1, m_rows.begin(), m_rows.end());
    finish(rows, m_legend);
    return 0;
  }

  const std::map<std::string, std::string> expected = ExpectedDigests(specs);
  const Limits lim = MeasureLimits(opt, model_path, scratch, file_bytes, rows);
  const size_t limits_end = rows.size();
  if (opt.only == "registry") {
    RegistryRows(opt, model_path, scratch, lim, rows);
    finish(rows, "");
    return 0;
  }

  // The peers run between the limits and modelport, while this process holds little memory.
  const Peers peers = RunPeers(opt, model_path);
  rows.push_back(Section("peers (" + (peers.versions.empty() ? "none" : peers.versions) + ")"));
  auto peer_row = [&](const std::string& name, const Stat& t, const std::string& limit) {
    if (t.ms < 0) return;
    rows.push_back({.name = name,
                    .time = t,
                    .bytes = raw_bytes,
                    .vs_limit = limit == "L"   ? VsLimit(t.ms, lim.read_huge, "L")
                                : limit == "W" ? VsLimit(t.ms, lim.write, "W")
                                               : VsLimit(t.ms, lim.write_sync, "WS")});
  };
  peer_row("torch.load (.pt, 1.13 zip format)", peers.torch_load, "L");
  peer_row("np.load (one 1 GiB .npy)", peers.np_load, "L");
  peer_row("torch.save, no fsync", peers.torch_save, "W");
  peer_row("torch.save + fsync", peers.torch_save_fsync, "WS");
  peer_row("np.save, no fsync", peers.np_save, "W");

  // --- modelport ------------------------------------------------------------------------------
  rows.push_back(Section("modelport"));
  Cat(model_path);  // the peers may have pushed it out of the page cache
  const Stat open = Summarize(Time(
      std::max(20, reps * 4), nullptr, [&] { (void)Take(OpenModel(model_path), "open"); },
      nullptr));
  rows.push_back(
      {.name = "open (index only)", .time = open, .target = "<= 5 ms: " + Verdict(open.ms <= 5)});

  // Cold: the file evicted from the page cache first (POSIX_FADV_DONTNEED drops this file's
  // clean pages only), so open pays for reading the header from the disk.
  const Stat cold_open = Summarize(Time(
      reps, [&] { Evict(model_path); }, [&] { (void)Take(OpenModel(model_path), "open"); },
      nullptr));
  rows.push_back({.name = "open, file evicted from page cache first",
                  .time = cold_open,
                  .target = "<= 5 ms: " + Verdict(cold_open.ms <= 5)});
  Cat(model_path);

  std::unique_ptr<Model> loaded;
  std::vector<double> l_runs;
  const std::vector<double> load_runs = Time(
      reps, [&] { l_runs.push_back(TimeReadLimit(model_path, file_bytes)); },
      [&] { loaded = Take(LoadAll(*Take(OpenModel(model_path), "open")), "LoadAll"); },
      [&] { loaded.reset(); });
  const Stat load = Summarize(load_runs);
  const double load_paired = PairedRatio(load_runs, l_runs);
  const bool load_pass =
      load_paired <= 1.25 && (peers.torch_load.ms < 0 || peers.torch_load.ms / load.ms >= 4);
  rows.push_back(
      {.name = "load into owned memory (LoadAll)",
       .time = load,
       .bytes = raw_bytes,
       .vs_limit = VsLimit(load.ms, lim.read_huge, "L") + Fmt(" (paired %.2fx)", load_paired),
       .vs_peer = Join(VsPeer(load.ms, peers.torch_load, "torch.load"),
                       VsPeer(load.ms, peers.np_load, "np.load")),
       .target = "<= 1.25x L and >= 4x torch.load: " + Verdict(load_pass)});

  std::vector<TensorView> views;
  const Stat pread = Summarize(Time(
      reps, nullptr,
      [&] {
        ReadOptions ro;
        ro.io_mode = IoMode::kPread;
        auto src = Take(OpenModel(model_path, ro), "open");
        for (size_t i = 0; i < src->tensors().size(); ++i) {
          views.push_back(Take(src->Load(i), "load"));
        }
      },
      [&] { views.clear(); }));
  rows.push_back({.name = "load, pread mode (Load() each tensor)",
                  .time = pread,
                  .bytes = raw_bytes,
                  .vs_limit = VsLimit(pread.ms, lim.read_huge, "L"),
                  .vs_peer = Join(VsPeer(pread.ms, peers.torch_load, "torch.load"),
                                  VsPeer(pread.ms, peers.np_load, "np.load"))});

  // Not modelport code: the bare minimum of an owned load, each tensor pread() into its own
  // 2 MiB-aligned MADV_HUGEPAGE mapping (numpy's allocator makes the same madvise), to show how
  // much of LoadAll's time is the library's own.
  std::vector<std::unique_ptr<Anon>> owned;
  for (unsigned threads : {1u, opt.threads}) {
    const Stat bare = Summarize(Time(
        reps, nullptr,
        [&] {
          auto src = Take(OpenModel(model_path), "open");
          BareLoad(*src, model_path, file_bytes - raw_bytes, threads, owned);
        },
        [&] { owned.clear(); }));
    rows.push_back(
        {.name = "  reference: bare pread() into huge pages, " + std::to_string(threads) + " thr.",
         .time = bare,
         .bytes = raw_bytes,
         .vs_limit = VsLimit(bare.ms, lim.read_huge, "L"),
         .vs_peer = Join(VsPeer(bare.ms, peers.torch_load, "torch.load"),
                         VsPeer(bare.ms, peers.np_load, "np.load"))});
    if (opt.threads == 1) break;
  }

  bool digests_ok = true;
  const Stat verify = Summarize(Time(
      reps, nullptr,
      [&] {
        auto src = Take(OpenModel(model_path), "open");
        const auto got = Take(TensorDigests(*src, opt.threads), "TensorDigests");
        for (size_t i = 0; i < got.size(); ++i) {
          const auto it = expected.find(src->tensors()[i].name);
          digests_ok = digests_ok && it != expected.end() && it->second == got[i];
        }
      },
      nullptr));
  rows.push_back(
      {.name = "load + verify digests (TensorDigests, " + std::to_string(opt.threads) + " thr.)",
       .time = verify,
       .bytes = raw_bytes,
       .vs_limit = VsLimit(verify.ms, lim.sha_mt, "H"),
       .target = std::string("all digests ") + (digests_ok ? "match" : "DIFFER")});

  loaded = Take(LoadAll(*Take(OpenModel(model_path), "open")), "LoadAll");
  Anon w_src(file_bytes, false);
  w_src.Fault();
  // Save twice: without fsync against the page-cache write limit W (the target), and durable
  // (fsync of file and folder, the default) against write + fsync WS.
  uint64_t saved_bytes = 0;
  for (const bool durable : {false, true}) {
    std::vector<double> limit_runs;
    WriteOptions save_options;
    save_options.durable = durable;
    const std::vector<double> save_runs = Time(
        reps,
        [&] {
          limit_runs.push_back(durable ? lim.write_sync
                                       : TimeWriteLimit(scratch, w_src.data(), file_bytes));
          Remove(save_path);
        },
        [&] { Check(safetensors::Write(*loaded, save_path, save_options), "save"); },
        [&] {
          saved_bytes = FileSize(save_path);
          Remove(save_path);
        });
    const Stat save = Summarize(save_runs);
    if (!durable) {
      const double paired = PairedRatio(save_runs, limit_runs);
      rows.push_back({.name = "save, durable=false (tmp file, rename)",
                      .time = save,
                      .bytes = saved_bytes,
                      .vs_limit = VsLimit(save.ms, lim.write, "W") + Fmt(" (paired %.2fx)", paired),
                      .vs_peer = VsPeer(save.ms, peers.torch_save, "torch.save"),
                      .target = "<= 1.2x W: " + Verdict(paired <= 1.2)});
    } else {
      rows.push_back({.name = "save, durable (tmp file, fsync, rename, fsync folder)",
                      .time = save,
                      .bytes = saved_bytes,
                      .vs_limit = VsLimit(save.ms, lim.write_sync, "WS"),
                      .vs_peer = VsPeer(save.ms, peers.torch_save_fsync, "torch.save+fsync"),
                      .target = ""});
    }
  }
  loaded.reset();

  const double overhead =
      static_cast<double>(file_bytes - raw_bytes) / static_cast<double>(raw_bytes);
  rows.push_back(
      {.name = "storage overhead: " + std::to_string(file_bytes - raw_bytes) + " bytes of header",
       .target = Fmt("%.4f%% <= 0.1%%: ", 100 * overhead) + Verdict(overhead <= 0.001)});

  const double cap_mib = static_cast<double>(largest + 64 * kMiB) / static_cast<double>(kMiB);
  for (const std::string io : {"mmap", "pread"}) {
    // Timed inside the child (process start-up excluded); the worst peak over the runs counts.
    int64_t peak_kib = 0, hwm_kib = 0;
    uint64_t out_bytes = 0;
    std::vector<double> ms;
    for (int i = 0; i <= reps; ++i) {  // run 0 is the warm-up
      Remove(f16_path);
      const ConvertResult r = RunConvertChild(model_path, f16_path, io);
      peak_kib = std::max(peak_kib, r.peak_anon_kib - r.base_anon_kib);
      hwm_kib = std::max(hwm_kib, r.vmhwm_kib - r.base_rss_kib);
      if (i > 0) ms.push_back(r.ms);
      out_bytes = FileSize(f16_path);
    }
    Remove(f16_path);
    const double peak_mib = static_cast<double>(peak_kib) / 1024;
    const Stat t = Summarize(ms);
    rows.push_back({.name = "convert f32 -> f16, " + io + " reader",
                    .time = t,
                    .bytes = raw_bytes,
                    .vs_limit = VsLimit(t.ms,
                                        lim.write_sync * static_cast<double>(out_bytes) /
                                            static_cast<double>(file_bytes),
                                        "WS(out)"),
                    .target = Fmt("heap peak +%.0f MiB", peak_mib) +
                              Fmt(" <= %.0f MiB: ", cap_mib) + Verdict(peak_mib <= cap_mib)});
    rows.push_back({.name = "  its peak RSS incl. mapped file pages",
                    .target = Fmt("VmHWM +%.0f MiB", static_cast<double>(hwm_kib) / 1024)});
  }

  // GGUF: the same weights doubled and cast to f16 (1 GiB of f16), as GGUF and as safetensors.
  // Open is index-only; conversions both ways are held to `cat in > out` [C] of the same file.
  {
    const std::string gguf_path = opt.dir + "/f16.gguf", st_path = opt.dir + "/f16.safetensors";
    WriteOptions scratch_write;
    scratch_write.durable = false;
    {
      auto src = Take(OpenModel(model_path), "open");
      const Doubled doubled(*src);
      auto f16 = CastFloats(doubled, DType::kF16);
      Check(gguf::Write(*f16, gguf_path, scratch_write), "write " + gguf_path);
      Check(safetensors::Write(*f16, st_path, scratch_write), "write " + st_path);
    }
    Cat(gguf_path);  // into the page cache, as every other input here
    Cat(st_path);
    const uint64_t gguf_bytes = FileSize(gguf_path);
    const Stat cat = Summarize(Time(
        reps, nullptr, [&] { CatTo(gguf_path, scratch); }, [&] { Remove(scratch); }));
    rows.push_back({.name = "-- gguf (1 GiB of f16)"});
    rows.push_back({.name = "cat in > out, the f16 GGUF [C]", .time = cat, .bytes = gguf_bytes});
    const Stat open_gguf = Summarize(Time(
        reps, nullptr, [&] { (void)Take(OpenModel(gguf_path), "open gguf"); }, nullptr));
    rows.push_back({.name = "open GGUF (index only)",
                    .time = open_gguf,
                    .target = "< 5 ms: " + Verdict(open_gguf.ms < 5)});
    for (const bool to_safetensors : {true, false}) {
      const std::string& from = to_safetensors ? gguf_path : st_path;
      const Stat t = Summarize(Time(
          reps, nullptr,
          [&] {
            auto src = Take(OpenModel(from), "open " + from);
            Check(to_safetensors ? safetensors::Write(*src, scratch, scratch_write)
                                 : gguf::Write(*src, scratch, scratch_write),
                  "convert " + from);
          },
          [&] { Remove(scratch); }));
      rows.push_back({.name = to_safetensors ? "convert GGUF -> safetensors (f16)"
                                             : "convert safetensors -> GGUF (f16)",
                      .time = t,
                      .bytes = gguf_bytes,
                      .vs_limit = VsLimit(t.ms, cat.ms, "C"),
                      .target = "<= 2x C: " + Verdict(t.ms <= 2 * cat.ms)});
    }
    Remove(gguf_path);
    Remove(st_path);
  }

  // PyTorch: the same weights as a zip checkpoint written by torch.save (peers.py leaves it in
  // DIR/model.pt; without peers modelport writes the same layout). Converting it to safetensors
  // is held to `cat in > out` [C] of the .pt and to torch.load + torch.save of the same weights.
  {
    const std::string pt_path = opt.dir + "/model.pt", out_path = opt.dir + "/from_pt.safetensors";
    if (access(pt_path.c_str(), R_OK) != 0) {
      auto src = Take(OpenModel(model_path), "open");
      WriteOptions scratch_write;
      scratch_write.durable = false;
      Check(torch::Write(*src, pt_path, scratch_write), "write " + pt_path);
    }
    Cat(pt_path);
    const uint64_t pt_bytes = FileSize(pt_path);
    const Stat cat = Summarize(Time(
        reps, nullptr, [&] { CatTo(pt_path, scratch); }, [&] { Remove(scratch); }));
    rows.push_back({.name = "-- torch (1 GiB .pt, zip checkpoint)"});
    rows.push_back({.name = "cat in > out, the .pt [C]", .time = cat, .bytes = pt_bytes});
    const Stat open_pt = Summarize(Time(
        reps, nullptr, [&] { (void)Take(OpenModel(pt_path), "open .pt"); }, nullptr));
    rows.push_back({.name = "open .pt (pickle VM, index only)",
                    .time = open_pt,
                    .target = "< 5 ms: " + Verdict(open_pt.ms < 5)});
    int64_t peak_kib = 0;
    std::vector<double> ms;
    for (int i = 0; i <= reps; ++i) {  // run 0 is the warm-up
      Remove(out_path);
      // No fsync, like the two it is held to (cat, torch.save).
      const ConvertResult r = RunConvertChild(pt_path, out_path, "mmap", "none", "scratch");
      peak_kib = std::max(peak_kib, r.peak_anon_kib - r.base_anon_kib);
      if (i > 0) ms.push_back(r.ms);
    }
    Remove(out_path);
    const Stat t = Summarize(ms);
    const double peak_mib = static_cast<double>(peak_kib) / 1024;
    rows.push_back(
        {.name = "convert .pt -> safetensors",
         .time = t,
         .bytes = pt_bytes,
         .vs_limit = VsLimit(t.ms, cat.ms, "C"),
         .vs_peer = VsPeer(t.ms, peers.torch_load_save, "torch.load+save"),
         .target = "<= 2x C: " + Verdict(t.ms <= 2 * cat.ms) +
                   (peers.torch_load_save.ms > 0
                        ? ", >= 2x peer: " + Verdict(peers.torch_load_save.ms >= 2 * t.ms)
                        : "")});
    rows.push_back({.name = "  its heap peak",
                    .target = Fmt("+%.0f MiB", peak_mib) + Fmt(" <= %.0f MiB: ", cap_mib) +
                              Verdict(peak_mib <= cap_mib)});
  }

  // ONNX: the same weights as a model with external data (model.onnx + model.onnx.data, every
  // initializer in the data file) and as an inline model (all raw_data in the .onnx), both made
  // by OnnxSource::Rewrite from a model pointing into model.safetensors. Extracting the weights
  // to safetensors is held to `cat in > out` [C] of the data file; open is index only.
  {
    const std::string ptr_path = opt.dir + "/onnx_src.onnx";
    const std::string ext_path = opt.dir + "/model.onnx", ext_data = ext_path + ".data";
    const std::string inline_path = opt.dir + "/inline.onnx";
    const std::string rw_path = opt.dir + "/rewrite.onnx", rw_data = rw_path + ".data";
    const std::string out_path = opt.dir + "/from_onnx.safetensors";
    WriteOnnxPointingAt(model_path, ptr_path);
    auto rewrite = [](const std::string& from, const std::string& to, onnx::Placement placement) {
      auto src = Take(OpenModel(from), "open " + from);
      const auto* onnx_src = dynamic_cast<const onnx::OnnxSource*>(src.get());
      if (onnx_src == nullptr) Die(from + ": did not open as ONNX");
      onnx::RewriteOptions ro;
      ro.placement = placement;
      ro.size_threshold = 0;
      ro.write.durable = false;
      (void)Take(onnx_src->Rewrite(to, ro), "rewrite " + from + " -> " + to);
    };
    rewrite(ptr_path, ext_path, onnx::Placement::kExternal);
    rewrite(ptr_path, inline_path, onnx::Placement::kInline);
    Remove(ptr_path);
    // Rewrite wrote 2 GiB without fsync: flush it now, or its writeback would throttle the
    // writes measured below.
    ::sync();
    for (const std::string& p : {ext_path, ext_data, inline_path}) Cat(p);
    const uint64_t data_bytes = FileSize(ext_data);

    const Stat cat = Summarize(Time(
        reps, nullptr, [&] { CatTo(ext_data, scratch); }, [&] { Remove(scratch); }));
    rows.push_back({.name = "-- onnx (1 GiB of weights)"});
    rows.push_back({.name = "cat in > out, the .onnx.data [C]", .time = cat, .bytes = data_bytes});
    // The peer: what Python's onnx takes to give the same index (it parses the whole file).
    const auto [onnx_load, onnx_versions] = RunOnnxPeer(opt, model_path, inline_path);
    if (onnx_load.ms >= 0) {
      rows.push_back({.name = "peer: onnx.load, the inline .onnx (" + onnx_versions + ")",
                      .time = onnx_load,
                      .bytes = data_bytes});
    }
    Cat(inline_path);  // the peer may have pushed it out of the page cache
    for (const bool inline_model : {true, false}) {
      const std::string& path = inline_model ? inline_path : ext_path;
      const Stat t = Summarize(Time(
          std::max(20, reps * 4), nullptr, [&] { (void)Take(OpenModel(path), "open " + path); },
          nullptr));
      rows.push_back({.name = inline_model ? "open inline .onnx (index only)"
                                           : "open external .onnx (index only)",
                      .time = t,
                      .vs_peer = inline_model ? VsPeer(t.ms, onnx_load, "onnx.load") : "",
                      .target = inline_model ? "< 50 ms: " + Verdict(t.ms < 50) : ""});
    }
    std::vector<double> ms;
    for (int i = 0; i <= reps; ++i) {  // run 0 is the warm-up
      Remove(out_path);
      // No fsync, like cat.
      const ConvertResult r = RunConvertChild(ext_path, out_path, "mmap", "none", "scratch");
      if (i > 0) ms.push_back(r.ms);
    }
    if (!ModelMatches(out_path, specs)) Die(out_path + ": not the benchmark's tensors");
    Remove(out_path);
    const Stat convert = Summarize(ms);
    rows.push_back({.name = "convert external .onnx -> safetensors",
                    .time = convert,
                    .bytes = data_bytes,
                    .vs_limit = VsLimit(convert.ms, cat.ms, "C"),
                    .target = "<= 2x C: " + Verdict(convert.ms <= 2 * cat.ms)});
    for (const bool to_external : {true, false}) {
      const std::string& from = to_external ? inline_path : ext_path;
      const Stat t = Summarize(Time(
          reps, nullptr,
          [&] {
            rewrite(from, rw_path,
                    to_external ? onnx::Placement::kExternal : onnx::Placement::kInline);
          },
          [&] {
            Remove(rw_path);
            Remove(rw_data);
          }));
      rows.push_back({.name = to_external ? "rewrite inline -> external .onnx"
                                          : "rewrite external -> inline .onnx",
                      .time = t,
                      .bytes = data_bytes,
                      .vs_limit = VsLimit(t.ms, cat.ms, "C")});
    }
    for (const std::string& p : {ext_path, ext_data, inline_path}) Remove(p);
  }

  RegistryRows(opt, model_path, scratch, lim, rows);

  // Quantize: the M limit joins the machine limits, the quantize rows come last.
  {
    Cat(model_path);
    std::vector<Row> m_rows;
    QuantizeRows(opt, model_path, raw_bytes, &m_rows, rows);
    rows.insert(rows.begin() + static_cast<std::ptrdiff_t>(limits_end), m_rows.begin(),
                m_rows.end());
  }

  char legend[1024];
  std::snprintf(
      legend, sizeof(legend),
      "L = read() of the model file (page cache) into a fresh 2 MiB-aligned MADV_HUGEPAGE "
      "buffer, not pre-faulted (THP gave %" PRId64
      " MiB of huge pages in this process); W = write() to the page cache without fsync; "
      "WS = write() + fsync; WS(out) = WS scaled to the output size; H = SHA-256 on %u "
      "threads. (paired Nx): median over the runs of (this run / a run of the limit made just "
      "before it); the PASS/MISS of load and save use it. ",
      lim.huge_kib / 1024, opt.threads);
  finish(rows, legend + m_legend);
  return digests_ok ? 0 : 1;
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 6 && args[0] == "--convert-child") {
    return ConvertChild(args[1], args[2], args[3], args[4], args[5]);
  }
  Options opt;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) Die(a + " needs a value");
      return args[++i];
    };
    if (a == "--dir") {
      opt.dir = value();
    } else if (a == "--reps") {
      opt.reps = std::max(1, std::atoi(value().c_str()));
    } else if (a == "--threads") {
      opt.threads = static_cast<unsigned>(std::max(1, std::atoi(value().c_str())));
    } else if (a == "--no-peers") {
      opt.peers = false;
    } else if (a == "--keep") {
      opt.keep = true;
    } else if (a == "--only") {
      opt.only = value();
      if (opt.only != "quantize" && opt.only != "registry") {
        Die("--only takes 'quantize' or 'registry', not '" + opt.only + "'");
      }
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: modelport_bench [--dir DIR] [--reps N] [--threads N] [--no-peers] [--keep]\n"
          "                       [--only quantize|registry]\n"
          "  --dir DIR    scratch folder for the generated model and outputs "
          "(default /tmp/modelport-bench; needs ~4 GiB)\n"
          "  --reps N     repetitions per measurement, median reported (default 5)\n"
          "  --threads N  threads for the digest and quantize measurements (default: all CPUs)\n"
          "  --no-peers   skip torch/numpy/onnx (bench/peers.py)\n"
          "  --keep       keep the generated inputs for the next run\n"
          "  --only quantize  only the memory-read limit M and the quantize rows\n"
          "  --only registry  only the machine limits and the registry rows\n");
      return 0;
    } else {
      Die("unknown argument '" + a + "' (see --help)");
    }
  }
  return RunBench(opt);
}

}  // namespace
}  // namespace mp::bench

int main(int argc, char** argv) { return mp::bench::Main(argc, argv); }
