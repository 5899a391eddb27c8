#include "modelport/cli/cli_util.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <set>
#include <thread>

#include "modelport/core/file.h"
#include "modelport/core/hash.h"
#include "modelport/formats/format.h"
#include "modelport/formats/safetensors/safetensors.h"

namespace mp::cli {
namespace fs = std::filesystem;

std::string_view ExitCodeHelp() {
  return "Exit codes:\n"
         "  0   success (diff: the models match)\n"
         "  1   checked and found different (diff: the models differ)\n"
         "  2   usage error: bad flags or arguments\n"
         "  3   not found: a file, tensor or key does not exist\n"
         "  4   input rejected: corrupt, unsafe, over a safety limit, or checksum mismatch\n"
         "  5   unsupported: valid input that modelport does not handle\n"
         "  6   I/O error, or refusing to overwrite an existing destination (use --force)\n"
         "  70  internal error (a bug in modelport)\n"
         "Every failure prints one line on stderr: \"modelport: error: <what, where, why>\".";
}

int ExitCodeFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return kExitOk;
    case StatusCode::kInvalidArgument:
      return kExitUsage;
    case StatusCode::kNotFound:
      return kExitNotFound;
    case StatusCode::kCorrupt:
    case StatusCode::kUnsafe:
    case StatusCode::kLimitExceeded:
    case StatusCode::kChecksumMismatch:
      return kExitRejected;
    case StatusCode::kUnsupported:
      return kExitUnsupported;
    case StatusCode::kIoError:
    case StatusCode::kAlreadyExists:
      return kExitIo;
    case StatusCode::kInternal:
      return kExitInternal;
  }
  return kExitInternal;
}

void PrintError(std::string_view message) {
  std::string line(message);
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::replace(line.begin(), line.end(), '\r', ' ');
  std::fflush(stdout);
  std::fprintf(stderr, "modelport: error: %s\n", line.c_str());
}

int ReportError(const Status& status) {
  if (status.ok()) return kExitOk;
  PrintError(status.message().empty() ? std::string(StatusCodeName(status.code()))
                                      : status.message());
  return ExitCodeFor(status.code());
}

Result<uint64_t> ParseSize(std::string_view text) {
  const std::string original(text);
  auto bad = [&](std::string why) {
    return InvalidArgument("size '" + original + "': " + why +
                           " (expected bytes or a number with a unit: 5GB, 500MB, 2GiB)");
  };
  size_t i = 0;
  uint64_t whole = 0;
  bool any_digit = false;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    auto mul = CheckedMul(whole, 10);
    if (!mul) return bad("too large");
    auto add = CheckedAdd(*mul, static_cast<uint64_t>(text[i] - '0'));
    if (!add) return bad("too large");
    whole = *add;
    any_digit = true;
  }
  // Fraction digits kept as numerator / 10^k, k <= 6, so numerator * factor (< 1e6 * 2^40)
  // fits in 64 bits.
  uint64_t frac_num = 0, frac_den = 1;
  if (i < text.size() && text[i] == '.') {
    ++i;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      any_digit = true;
      if (frac_den < 1'000'000) {
        frac_num = frac_num * 10 + static_cast<uint64_t>(text[i] - '0');
        frac_den *= 10;
      }
    }
  }
  if (!any_digit) return bad("no number");
  while (i < text.size() && text[i] == ' ') ++i;
  std::string unit;
  for (; i < text.size(); ++i) {
    unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  }
  struct Unit {
    std::string_view name;
    uint64_t factor;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"b", 1},
      {"kb", 1'000},
      {"mb", 1'000'000},
      {"gb", 1'000'000'000},
      {"tb", 1'000'000'000'000},
      {"kib", uint64_t{1} << 10},
      {"mib", uint64_t{1} << 20},
      {"gib", uint64_t{1} << 30},
      {"tib", uint64_t{1} << 40},
  };
  const Unit* found = nullptr;
  for (const Unit& u : kUnits) {
    if (u.name == unit) found = &u;
  }
  if (!found) return bad("unknown unit '" + unit + "'");
  auto bytes = CheckedMul(whole, found->factor);
  if (!bytes) return bad("too large");
  const uint64_t frac = frac_num * found->factor / frac_den;
  auto total = CheckedAdd(*bytes, frac);
  if (!total) return bad("too large");
  if (*total == 0) return bad("must be positive");
  return *total;
}

std::string WithThousands(uint64_t value) {
  std::string digits = std::to_string(value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f %s", v, kUnits[u]);
  return buf;
}

std::string ShapeText(const Shape& shape) { return shape.ToString(); }

Json ShapeJson(const Shape& shape) {
  Json dims = Json::array();
  for (uint64_t d : shape.dims()) dims.push_back(d);
  return dims;
}

void PrintJson(const Json& doc) {
  const std::string text = doc.dump(2, ' ', false, Json::error_handler_t::replace);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

Table::Table(std::vector<std::string> header, std::vector<bool> right_align)
    : right_(std::move(right_align)) {
  right_.resize(header.size(), false);
  rows_.push_back(std::move(header));
}

void Table::AddRow(std::vector<std::string> row) {
  row.resize(right_.size());
  rows_.push_back(std::move(row));
}

namespace {

// Terminal columns a UTF-8 string takes: one per code point, two for East Asian wide and
// full-width ones (CJK, Hangul, full-width forms), so names like "unicode.名前" stay aligned.
size_t DisplayWidth(std::string_view s) {
  size_t width = 0;
  for (size_t i = 0; i < s.size();) {
    const auto lead = static_cast<unsigned char>(s[i]);
    const size_t len = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : 4;
    uint32_t cp = len == 1 ? lead : lead & (0x7F >> len);
    for (size_t k = 1; k < len && i + k < s.size(); ++k) {
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    }
    const bool wide = (cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0xA4CF) ||
                      (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
                      (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
                      (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x20000 && cp <= 0x3FFFD);
    width += wide ? 2 : 1;
    i += len;
  }
  return width;
}

}  // namespace

void Table::Print(std::FILE* out) const {
  std::vector<size_t> width(right_.size(), 0);
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], DisplayWidth(row[c]));
  }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) line += "  ";
      const size_t pad = width[c] - DisplayWidth(row[c]);
      const bool last = c + 1 == row.size();
      if (right_[c]) line.append(pad, ' ');
      line += row[c];
      if (!right_[c] && !last) line.append(pad, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), out);
  }
}

struct ProgressBar::State {
  std::mutex mu;
  std::chrono::steady_clock::time_point last{};
  bool drawn = false;
};

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)), enabled_(::isatty(STDERR_FILENO) == 1) {
  if (enabled_) state_ = std::make_unique<State>();
}

ProgressBar::~ProgressBar() { Clear(); }

void ProgressBar::Clear() {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(state_->mu);
  if (!state_->drawn) return;
  state_->drawn = false;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
}

void ProgressBar::Update(uint64_t items_done, uint64_t items_total, uint64_t bytes_done,
                         uint64_t bytes_total) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(state_->mu);
  const auto now = std::chrono::steady_clock::now();
  const bool complete = items_done >= items_total;
  if (state_->drawn && !complete && now - state_->last < std::chrono::milliseconds(100)) return;
  state_->last = now;
  state_->drawn = true;
  const double fraction =
      bytes_total > 0   ? static_cast<double>(bytes_done) / static_cast<double>(bytes_total)
      : items_total > 0 ? static_cast<double>(items_done) / static_cast<double>(items_total)
                        : 1.0;
  constexpr int kWidth = 30;
  const int filled = std::clamp(static_cast<int>(fraction * kWidth), 0, kWidth);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '.');
  std::fprintf(stderr, "\r\033[K%s [%s] %3d%%  %llu/%llu tensors  %s / %s", label_.c_str(),
               bar.c_str(), static_cast<int>(fraction * 100),
               static_cast<unsigned long long>(items_done),
               static_cast<unsigned long long>(items_total), HumanBytes(bytes_done).c_str(),
               HumanBytes(bytes_total).c_str());
  std::fflush(stderr);
}

Result<Digests> ComputeDigests(const ModelSource& source, ProgressBar* progress) {
  Digests out;
  out.files = source.files();
  const auto& infos = source.tensors();
  const size_t n_files = out.files.files.size();
  const size_t n_index = out.files.index.empty() ? 0 : 1;
  out.file_sha256.resize(n_files);
  out.tensor_sha256.resize(infos.size());
  MP_ASSIGN_OR_RETURN(const uint64_t total_bytes, source.TotalBytes());
  std::atomic<uint64_t> tensors_done{0}, bytes_done{0};

  auto task = [&](size_t i) -> Status {
    if (i < n_files) {
      MP_ASSIGN_OR_RETURN(std::string hex, FileSha256(out.files.files[i]));
      out.file_sha256[i] = "sha256:" + hex;
      return Status::Ok();
    }
    if (i < n_files + n_index) {
      MP_ASSIGN_OR_RETURN(std::string hex, FileSha256(out.files.index));
      out.index_sha256 = "sha256:" + hex;
      return Status::Ok();
    }
    const size_t t = i - n_files - n_index;
    MP_ASSIGN_OR_RETURN(TensorView view, source.Load(t));
    if (view.info.byte_size != infos[t].byte_size || !view.data ||
        view.data->size() != infos[t].byte_size) {
      return Internal("tensor '" + infos[t].name + "': loaded " +
                      std::to_string(view.data ? view.data->size() : 0) +
                      " bytes but the index says " + std::to_string(infos[t].byte_size));
    }
    out.tensor_sha256[t] = "sha256:" + TensorDigest(view);
    const uint64_t done = tensors_done.fetch_add(1) + 1;
    const uint64_t bytes = bytes_done.fetch_add(infos[t].byte_size) + infos[t].byte_size;
    if (progress) progress->Update(done, infos.size(), bytes, total_bytes);
    return Status::Ok();
  };
  MP_RETURN_IF_ERROR(ParallelFor(n_files + n_index + infos.size(), task));
  return out;
}

void AddDigestJson(const ModelSource& source, const Digests& digests, Json& doc) {
  Json files = Json::array();
  for (size_t i = 0; i < digests.files.files.size(); ++i) {
    files.push_back({{"path", digests.files.files[i]}, {"sha256", digests.file_sha256[i]}});
  }
  doc["files"] = std::move(files);
  if (!digests.files.index.empty()) {
    doc["index"] = {{"path", digests.files.index}, {"sha256", digests.index_sha256}};
  }
  Json tensors = Json::array();
  const auto& infos = source.tensors();
  for (size_t i = 0; i < infos.size(); ++i) {
    tensors.push_back({{"name", infos[i].name},
                       {"dtype", DTypeName(infos[i].dtype)},
                       {"shape", ShapeJson(infos[i].shape)},
                       {"bytes", infos[i].byte_size},
                       {"sha256", digests.tensor_sha256[i]}});
  }
  doc["tensors"] = std::move(tensors);
}

void PrintDigests(const ModelSource& source, const Digests& digests) {
  std::printf("files:\n");
  if (!digests.files.index.empty()) {
    std::printf("  %s  %s\n", digests.index_sha256.c_str(), digests.files.index.c_str());
  }
  for (size_t i = 0; i < digests.files.files.size(); ++i) {
    std::printf("  %s  %s\n", digests.file_sha256[i].c_str(), digests.files.files[i].c_str());
  }
  std::printf("tensors:\n");
  const auto& infos = source.tensors();
  for (size_t i = 0; i < infos.size(); ++i) {
    std::printf("  %s  %s\n", digests.tensor_sha256[i].c_str(), infos[i].name.c_str());
  }
}

void AddKeyOption(CLI::App* sub, std::string* key) {
  sub->add_option("--key", *key,
                  "checkpoints that nest their tensors: the dotted key of the state dict to read "
                  "(PyTorch {\"state_dict\": ..., \"ema\": ...}); default: the state dict found");
}

ReadOptions KeyOptions(const std::string& key) {
  ReadOptions options;
  options.select_key = key;
  return options;
}

}  // namespace mp::cli
