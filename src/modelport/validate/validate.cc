#include "modelport/validate/validate.h"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx-ml.pb.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <set>
#include <string_view>

#include "modelport/convert/cast.h"
#include "modelport/convert/quantize.h"
#include "modelport/core/file.h"
#include "modelport/core/hash.h"
#include "modelport/core/parallel.h"
#include "modelport/formats/format.h"
#include "modelport/formats/onnx/onnx.h"
#include "modelport/formats/zip/zip.h"
#include "modelport/validate/onnx_eval.h"
#include "modelport/validate/torchscript.h"

namespace mp::validate {
namespace {

namespace fs = std::filesystem;

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string Quote(std::string_view s) { return zip::QuoteName(s); }

std::string Num(double v) {
  if (std::isinf(v)) return "inf";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", v);
  return buf;
}

Json NumJson(double v) {
  if (std::isinf(v)) return "inf";
  if (std::isnan(v)) return nullptr;
  return v;
}

std::string FirstLine(std::string_view s) {
  std::string out(s.substr(0, s.find('\n')));
  while (!out.empty() && (out.back() == '\r' || out.back() == ' ')) out.pop_back();
  return out;
}

Check MakeCheck(std::string kind, std::string subject, Outcome outcome, std::string detail) {
  Check c;
  c.kind = std::move(kind);
  c.subject = std::move(subject);
  c.outcome = outcome;
  c.detail = std::move(detail);
  return c;
}

// Statuses that say the input is bad (a failed check), as opposed to one that could not be
// examined at all (missing file, I/O error, unsupported feature).
bool IsInputRejection(const Status& s) {
  switch (s.code()) {
    case StatusCode::kCorrupt:
    case StatusCode::kUnsafe:
    case StatusCode::kChecksumMismatch:
    case StatusCode::kLimitExceeded:
      return true;
    default:
      return false;
  }
}

// A scratch folder removed when it goes out of scope (exported registry graphs and samples).
class ScratchDir {
 public:
  static Result<ScratchDir> Make() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
    pattern += "/modelport-validate-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      return IoError("cannot create a scratch folder " + pattern + ": " + std::strerror(errno));
    }
    ScratchDir d;
    d.path_ = pattern;
    return d;
  }
  ScratchDir() = default;
  ScratchDir(ScratchDir&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  ScratchDir& operator=(ScratchDir&&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------------------------
// Integrity

// The digest a `<file>.sha256` sidecar records (sha256sum's "<hex>  <name>" line, or a bare
// hex digest, optionally "sha256:"-prefixed); nullopt when there is no sidecar.
Result<std::optional<std::string>> SidecarDigest(const std::string& file) {
  const std::string sidecar = file + ".sha256";
  std::error_code ec;
  if (!fs::is_regular_file(sidecar, ec)) return std::optional<std::string>();
  MP_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(sidecar, 64 * 1024));
  std::string token = text.substr(0, text.find_first_of(" \t\r\n"));
  if (token.rfind("sha256:", 0) == 0) token = token.substr(7);
  std::transform(token.begin(), token.end(), token.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (token.size() != 64 || token.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return Corrupt(sidecar + ": not a SHA-256 digest (expected sha256sum's \"<hex>  <name>\")");
  }
  return std::optional<std::string>(token);
}

// A Hugging Face sharded index's recorded totals ("metadata": {"total_size", and in newer
// transformers "total_parameters"}) against what the shards hold. Empty when they agree or the
// index records none.
Result<std::string> CheckIndexTotals(const std::string& index, const ModelSource& source) {
  MP_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(index, 100'000'000));
  const Json doc = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("metadata") || !doc["metadata"].is_object()) {
    return std::string();
  }
  const Json& meta = doc["metadata"];
  std::string problems;
  auto check = [&](const char* key, uint64_t actual) {
    if (!meta.contains(key) || !meta[key].is_number_unsigned()) return;
    const uint64_t recorded = meta[key].get<uint64_t>();
    if (recorded != actual) {
      problems += std::string(problems.empty() ? "" : "; ") + key + " is " +
                  std::to_string(recorded) + " in the index, the shards hold " +
                  std::to_string(actual);
    }
  };
  MP_ASSIGN_OR_RETURN(const uint64_t bytes, source.TotalBytes());
  MP_ASSIGN_OR_RETURN(const uint64_t elements, source.TotalElements());
  check("total_size", bytes);
  check("total_parameters", elements);
  return problems;
}

// Loads and hashes every tensor (the reader's own checks: bounds, CRC-32 of zip entries, SHA-1
// of ONNX external data) and every file, comparing files with their sidecars.
Result<std::vector<Check>> CheckFileIntegrity(const ModelSource& source) {
  std::vector<Check> out;
  const Result<std::vector<std::string>> tensors = TensorDigests(source);
  if (!tensors) {
    if (!IsInputRejection(tensors.error())) return tensors.error();
    out.push_back(MakeCheck("integrity", "tensors", Outcome::kFail, tensors.error().message()));
    return out;
  }
  MP_ASSIGN_OR_RETURN(const uint64_t total, source.TotalBytes());
  const ModelFiles files = source.files();
  std::vector<std::string> paths = files.files;
  if (!files.index.empty()) paths.insert(paths.begin(), files.index);
  std::vector<std::string> digests(paths.size());
  MP_RETURN_IF_ERROR(ParallelFor(paths.size(), [&](size_t i) -> Status {
    MP_ASSIGN_OR_RETURN(digests[i], FileSha256(paths[i]));
    return Status::Ok();
  }));
  if (!files.index.empty()) {
    MP_ASSIGN_OR_RETURN(const std::string problems, CheckIndexTotals(files.index, source));
    if (!problems.empty()) {
      out.push_back(MakeCheck("integrity", files.index, Outcome::kFail, problems));
    }
  }
  uint64_t with_sidecar = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    MP_ASSIGN_OR_RETURN(const std::optional<std::string> recorded, SidecarDigest(paths[i]));
    if (!recorded) continue;
    ++with_sidecar;
    if (*recorded != digests[i]) {
      Check c = MakeCheck("integrity", paths[i], Outcome::kFail,
                          "SHA-256 " + digests[i] + " differs from the " + *recorded +
                              " recorded in " + paths[i] + ".sha256");
      c.data = {{"sha256", "sha256:" + digests[i]}, {"recorded", "sha256:" + *recorded}};
      out.push_back(std::move(c));
    }
  }
  Check c =
      MakeCheck("integrity", "tensors", Outcome::kPass,
                std::to_string(source.tensors().size()) + " tensors (" + std::to_string(total) +
                    " bytes) loaded through the reader's checks and hashed; " +
                    std::to_string(paths.size()) + " file" + (paths.size() == 1 ? "" : "s") +
                    " hashed, " + std::to_string(with_sidecar) + " with a recorded .sha256");
  Json file_json = Json::array();
  for (size_t i = 0; i < paths.size(); ++i) {
    file_json.push_back({{"path", paths[i]}, {"sha256", "sha256:" + digests[i]}});
  }
  c.data = {{"tensors", source.tensors().size()},
            {"bytes", total},
            {"files", std::move(file_json)},
            {"sidecars", with_sidecar}};
  if (!out.empty()) c.outcome = Outcome::kFail, c.detail += " (but see above)";
  out.push_back(std::move(c));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Schema

bool IsTorchScript(const ModelSource& source) {
  if (source.format() != "torch") return false;
  for (const std::string& note : source.notes()) {
    if (note.find("TorchScript") != std::string::npos) return true;
  }
  return false;
}

// The ONNX checker (libonnx) on a model file. A model newer than the installed libonnx
// understands is skipped with the reason: the checker's refusal would say nothing about it.
Check RunOnnxChecker(const std::string& path, const onnx::OnnxSource& source) {
  const onnx::GraphInfo& g = source.graph_info();
  const std::string checker =
      "onnx checker (libonnx, IR " + std::to_string(::onnx::IR_VERSION) + ")";
  if (g.ir_version > ::onnx::IR_VERSION) {
    return MakeCheck("schema", checker, Outcome::kSkip,
                     "the model's IR version " + std::to_string(g.ir_version) +
                         " is newer than the installed checker's " +
                         std::to_string(::onnx::IR_VERSION));
  }
  const auto ranges = ::onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  for (const auto& [domain, version] : g.opsets) {
    const std::string d = domain == "ai.onnx" ? "" : domain;
    const auto it = ranges.find(d);
    if (it != ranges.end() && version > it->second.second) {
      return MakeCheck("schema", checker, Outcome::kSkip,
                       "opset " + (d.empty() ? std::string("ai.onnx") : d) + " " +
                           std::to_string(version) + " is newer than the installed checker's " +
                           std::to_string(it->second.second));
    }
  }
  try {
    ::onnx::checker::check_model(path);
  } catch (const std::exception& e) {
    return MakeCheck("schema", checker, Outcome::kFail, FirstLine(e.what()));
  }
  std::string opsets;
  for (const auto& [domain, version] : g.opsets) {
    opsets += (opsets.empty() ? "" : ", ") + (domain.empty() ? std::string("ai.onnx") : domain) +
              " " + std::to_string(version);
  }
  Check c = MakeCheck("schema", checker, Outcome::kPass,
                      "valid: IR " + std::to_string(g.ir_version) + ", opset " + opsets + ", " +
                          std::to_string(g.node_count) + " nodes");
  c.data = {{"ir_version", g.ir_version}, {"nodes", g.node_count}};
  return c;
}

std::vector<Check> CheckSchema(const std::string& path, const ModelSource& source,
                               const Options& options) {
  std::vector<Check> out;
  Check structure = MakeCheck("schema", std::string(source.format()) + " structure", Outcome::kPass,
                              "valid: the reader's structural rules hold for " +
                                  std::to_string(source.tensors().size()) + " tensors");
  out.push_back(std::move(structure));
  if (const auto* onnx_source = dynamic_cast<const onnx::OnnxSource*>(&source)) {
    out.push_back(RunOnnxChecker(path, *onnx_source));
  }
  if (IsTorchScript(source)) {
    if (!options.allow_torchscript) {
      out.push_back(MakeCheck("schema", "torchscript", Outcome::kSkip,
                              "not loaded: loading TorchScript runs the code stored in it "
                              "(--allow-torchscript loads it with libtorch)"));
    } else {
      const Result<std::string> loaded = LoadTorchScript(path);
      out.push_back(loaded ? MakeCheck("schema", "torchscript", Outcome::kPass,
                                       "loads in libtorch: " + *loaded)
                           : MakeCheck("schema", "torchscript", Outcome::kFail,
                                       "does not load in libtorch: " + loaded.error().message()));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Fidelity

// The binary layout of a float type: mantissa bits and the smallest normal exponent.
struct FloatFormat {
  int mantissa;
  int min_exp;
};

FloatFormat FormatOf(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return {10, -14};
    case DType::kBF16:
      return {7, -126};
    case DType::kF8E4M3:
      return {3, -6};
    case DType::kF8E5M2:
      return {2, -14};
    case DType::kF32:
      return {23, -126};
    default:
      return {52, -1022};
  }
}

// The spacing of `dtype`'s values near |x|: 2^(exponent of x - mantissa bits), no smaller than
// the subnormal spacing.
double UlpOf(DType dtype, double x) {
  const FloatFormat f = FormatOf(dtype);
  const double ax = std::fabs(x);
  const int exp = std::max(ax > 0 ? std::ilogb(ax) : f.min_exp, f.min_exp);
  return std::ldexp(1.0, exp - f.mantissa);
}

// `x` rounded to `dtype` (nearest, ties to even, as modelport's casts do).
double RoundTo(DType dtype, double x) {
  switch (dtype) {
    case DType::kF16:
      return F16ToF32(F64ToF16(x));
    case DType::kBF16:
      return BF16ToF32(F64ToBF16(x));
    case DType::kF8E4M3:
      return F8E4M3ToF32(F64ToF8E4M3(x));
    case DType::kF8E5M2:
      return F8E5M2ToF32(F64ToF8E5M2(x));
    case DType::kF32:
      return static_cast<float>(x);
    default:
      return x;
  }
}

// Signal-to-noise ratio (dB) a block-quantized type is expected to keep at least: about 6 dB a
// bit, less what the block scale spends on the block's largest value (docs/VALIDATION.md).
double DefaultMinSnr(DType d) {
  switch (d) {
    case DType::kQ8_0:
    case DType::kQ8_K:
      return 40;
    case DType::kQ6_K:
      return 28;
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ5_K:
      return 22;
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ4_K:
      return 16;
    case DType::kQ3_K:
      return 10;
    case DType::kI8:  // int8 NAME + NAME_scale, per channel or per tensor
      return 30;
    default:
      return 4;
  }
}

struct TensorCompare {
  std::string name;
  std::string rule;  // "exact", "rounded to f16 (0.5 ulp)", "q4_0 (SNR >= 16 dB)"
  bool ok = true;
  std::string why;  // when not ok
  double max_abs = 0;
  double max_ulp = 0;    // rounding rule only
  double snr_db = kInf;  // quantized only
  uint64_t mismatched = 0;
};

Status CompareTensor(const ModelSource& model, size_t i, const ModelSource& against, size_t j,
                     const Options& options, TensorCompare& r) {
  const TensorInfo& a = model.tensors()[i];
  const TensorInfo& b = against.tensors()[j];
  if (a.shape != b.shape) {
    r.ok = false;
    r.why = "shape " + a.shape.ToString() + " vs " + b.shape.ToString();
    return Status::Ok();
  }
  // An int8 tensor with its NAME_scale against a float reference is compared dequantized.
  std::optional<size_t> scale_index;
  std::optional<ChannelLayout> int8_layout;
  if (a.dtype == DType::kI8 && IsFloat(b.dtype) && !options.exact) {
    scale_index = model.Find(a.name + std::string(kScaleSuffix));
    if (scale_index) int8_layout = Int8PairLayout(a, model.tensors()[*scale_index]);
  }
  TensorView va;
  if (int8_layout) {
    MP_ASSIGN_OR_RETURN(va, DequantizeInt8Pair(model, i, *scale_index, *int8_layout));
  } else {
    MP_ASSIGN_OR_RETURN(va, model.Load(i));
  }
  MP_ASSIGN_OR_RETURN(TensorView vb, against.Load(j));
  if (!int8_layout && (a.dtype == b.dtype || options.exact)) {
    r.rule = "exact";
    if (a.dtype != b.dtype) {
      r.ok = false;
      r.why = "dtype " + std::string(DTypeName(a.dtype)) + " vs " +
              std::string(DTypeName(b.dtype)) + " (exact comparison)";
      return Status::Ok();
    }
    const auto x = va.bytes(), y = vb.bytes();
    if (x.size() != y.size() || (!x.empty() && std::memcmp(x.data(), y.data(), x.size()) != 0)) {
      r.ok = false;
      const size_t width = std::max<size_t>(1, ElementSize(a.dtype));
      for (size_t k = 0; k < x.size(); k += width) {
        if (std::memcmp(x.data() + k, y.data() + k, std::min(width, x.size() - k)) != 0) {
          ++r.mismatched;
        }
      }
      r.why = std::to_string(r.mismatched) + " elements differ (exact comparison)";
    }
    return Status::Ok();
  }
  // Different dtypes: decode both (block types dequantized to f32 first).
  TensorView da = va, db = vb;
  if (IsQuantized(a.dtype)) {
    MP_ASSIGN_OR_RETURN(da, CastTensor(va, DType::kF32));
  }
  if (IsQuantized(b.dtype)) {
    MP_ASSIGN_OR_RETURN(db, CastTensor(vb, DType::kF32));
  }
  if (DecodedWidth(da.info.dtype) != DecodedWidth(db.info.dtype)) {
    r.ok = false;
    r.why = "dtype " + std::string(DTypeName(a.dtype)) + " vs " + std::string(DTypeName(b.dtype));
    return Status::Ok();
  }
  const bool quantized = IsQuantized(a.dtype) || IsQuantized(b.dtype) || int8_layout;
  // The model's floats were rounded from the reference's: allowed the rounding error.
  const bool narrowed = IsFloat(a.dtype) && IsFloat(b.dtype) &&
                        FormatOf(a.dtype).mantissa < FormatOf(b.dtype).mantissa;
  const DType qtype = IsQuantized(a.dtype) || int8_layout ? a.dtype : b.dtype;
  const double min_snr = DefaultMinSnr(qtype);
  if (quantized) {
    r.rule = std::string(DTypeName(qtype)) + " (SNR >= " + Num(min_snr) + " dB)";
  } else if (narrowed) {
    r.rule =
        "rounded to " + std::string(DTypeName(a.dtype)) + " (" + Num(options.max_ulp) + " ulp)";
  } else {
    r.rule = "equal values";
  }
  MP_ASSIGN_OR_RETURN(const uint64_t count, a.shape.NumElements());
  const size_t width = DecodedWidth(da.info.dtype);
  constexpr uint64_t kChunk = 1 << 16;
  std::vector<double> x(kChunk * width), y(kChunk * width);
  double signal = 0, noise = 0;
  const size_t size_a = ElementSize(da.info.dtype), size_b = ElementSize(db.info.dtype);
  for (uint64_t begin = 0; begin < count; begin += kChunk) {
    const size_t n = static_cast<size_t>(std::min(kChunk, count - begin));
    MP_RETURN_IF_ERROR(DecodeToF64(da.info.dtype, da.bytes().data() + begin * size_a, n, x.data()));
    MP_RETURN_IF_ERROR(DecodeToF64(db.info.dtype, db.bytes().data() + begin * size_b, n, y.data()));
    for (size_t k = 0; k < n * width; ++k) {
      const double u = x[k], v = y[k];
      if (u == v || (std::isnan(u) && std::isnan(v))) {
        signal += std::isfinite(v) ? v * v : 0;
        continue;
      }
      double err = std::fabs(u - v);
      if (std::isnan(err)) err = kInf;
      r.max_abs = std::max(r.max_abs, err);
      signal += std::isfinite(v) ? v * v : 0;
      noise += err * err;
      bool bad = true;  // integers, bool, complex and widened floats: values must be equal
      if (quantized) {
        bad = false;  // judged by the SNR below
      } else if (narrowed) {
        // The correctly rounded value passes even where the ulp measure breaks down (a value
        // beyond the narrow type's range becomes its infinity, or e4m3fn's 448).
        const double ulps = err / UlpOf(a.dtype, v);
        if (std::isfinite(ulps)) r.max_ulp = std::max(r.max_ulp, ulps);
        bad = !(u == RoundTo(a.dtype, v) || ulps <= options.max_ulp);
      }
      if (bad) ++r.mismatched;
    }
  }
  if (quantized) {
    r.snr_db = noise == 0 ? kInf : 10 * std::log10(signal / noise);
    if (!(r.snr_db >= min_snr)) {
      r.ok = false;
      r.why = "SNR " + Num(r.snr_db) + " dB below " + Num(min_snr) + " dB";
    }
  } else if (r.mismatched > 0) {
    r.ok = false;
    r.why = std::to_string(r.mismatched) + " elements beyond " + r.rule + ", max abs error " +
            Num(r.max_abs) + (narrowed ? ", max " + Num(r.max_ulp) + " ulp" : "");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Inference

using eval::NamedTensor;

// Reads every tensor of a samples file, in file order.
Result<std::vector<NamedTensor>> ReadSamples(const std::string& path) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> source, OpenModel(path));
  std::vector<NamedTensor> out;
  for (size_t i = 0; i < source->tensors().size(); ++i) {
    MP_ASSIGN_OR_RETURN(TensorView view, source->Load(i));
    Result<eval::Tensor> t = eval::FromView(view);
    if (!t)
      return Status(t.error().code(), path + ": " + view.info.name + ": " + t.error().message());
    out.emplace_back(view.info.name, std::move(*t));
  }
  return out;
}

// Puts samples in the order `names` lists, matched by name; a single sample for a single input
// matches whatever its name.
Result<std::vector<NamedTensor>> MatchByName(std::vector<NamedTensor> given,
                                             const std::vector<std::string>& names,
                                             const std::string& what, const std::string& file) {
  if (given.size() == 1 && names.size() == 1) {
    given[0].first = names[0];
    return given;
  }
  std::vector<NamedTensor> out;
  std::set<std::string> used;
  for (const std::string& name : names) {
    auto it = std::find_if(given.begin(), given.end(),
                           [&](const NamedTensor& t) { return t.first == name; });
    if (it == given.end()) {
      return NotFound(file + " has no " + what + " named " + Quote(name));
    }
    used.insert(name);
    out.push_back(std::move(*it));
  }
  for (const NamedTensor& t : given) {
    if (!used.count(t.first) && !t.first.empty()) {
      return InvalidArgument(file + ": " + Quote(t.first) + " is not one of the model's " + what +
                             "s");
    }
  }
  return out;
}

Check CompareOutput(const std::string& name, const eval::Tensor& actual,
                    const eval::Tensor& expected, const Tolerance& tol) {
  const std::string subject = "output " + Quote(name);
  if (actual.shape != expected.shape) {
    return MakeCheck("inference", subject, Outcome::kFail,
                     "shape " + eval::Describe(actual) + " differs from the expected " +
                         eval::Describe(expected));
  }
  double max_abs = 0, max_rel = 0;
  int64_t worst = -1, mismatched = 0;
  const int64_t n = actual.NumElements();
  for (int64_t i = 0; i < n; ++i) {
    const double u = eval::GetAsDouble(actual, i), v = eval::GetAsDouble(expected, i);
    if (u == v || (std::isnan(u) && std::isnan(v))) continue;
    double err = std::fabs(u - v);
    if (std::isnan(err)) err = kInf;
    const double rel = v != 0 ? err / std::fabs(v) : kInf;
    if (worst < 0 || err > max_abs) worst = i;
    max_abs = std::max(max_abs, err);
    max_rel = std::max(max_rel, std::isnan(rel) ? kInf : rel);
    if (!(err <= tol.atol + tol.rtol * std::fabs(v))) ++mismatched;
  }
  std::string detail = "max abs error " + Num(max_abs) + ", max rel error " + Num(max_rel) +
                       " over " + std::to_string(n) + " values (atol " + Num(tol.atol) + ", rtol " +
                       Num(tol.rtol) + ")";
  Check c = MakeCheck("inference", subject, mismatched == 0 ? Outcome::kPass : Outcome::kFail, "");
  if (mismatched > 0) {
    detail = std::to_string(mismatched) + " of " + std::to_string(n) +
             " values beyond tolerance; " + detail + "; worst at flat index " +
             std::to_string(worst) + ": " + Num(eval::GetAsDouble(actual, worst)) +
             " vs expected " + Num(eval::GetAsDouble(expected, worst));
  }
  c.detail = std::move(detail);
  c.data = {{"max_abs_error", NumJson(max_abs)},
            {"max_rel_error", NumJson(max_rel)},
            {"mismatched", mismatched},
            {"elements", n},
            {"atol", tol.atol},
            {"rtol", tol.rtol}};
  return c;
}

// Runs the model at `path` (ONNX through the reference evaluator, TorchScript through libtorch)
// on the samples and compares every output.
Result<std::vector<Check>> CheckInference(const std::string& path, const ModelSource& source,
                                          const Samples& samples, const Options& options) {
  std::vector<Check> out;
  MP_ASSIGN_OR_RETURN(std::vector<NamedTensor> inputs, ReadSamples(samples.inputs));
  MP_ASSIGN_OR_RETURN(std::vector<NamedTensor> expected, ReadSamples(samples.expected));
  std::vector<NamedTensor> outputs;
  std::string backend;
  if (const auto* onnx_source = dynamic_cast<const onnx::OnnxSource*>(&source)) {
    backend = "onnx reference evaluator";
    Result<std::unique_ptr<eval::OnnxEvaluator>> prepared =
        eval::OnnxEvaluator::FromSource(*onnx_source);
    if (!prepared) return prepared.error().WithContext(path);
    const std::unique_ptr<eval::OnnxEvaluator>& evaluator = *prepared;
    MP_ASSIGN_OR_RETURN(
        inputs, MatchByName(std::move(inputs), evaluator->input_names(), "input", samples.inputs));
    MP_ASSIGN_OR_RETURN(expected, MatchByName(std::move(expected), evaluator->output_names(),
                                              "output", samples.expected));
    Result<std::vector<NamedTensor>> ran = evaluator->Run(inputs);
    if (!ran) {
      if (ran.error().code() == StatusCode::kUnsupported) return ran.error();
      out.push_back(
          MakeCheck("inference", "run", Outcome::kFail, backend + ": " + ran.error().message()));
      return out;
    }
    outputs = std::move(*ran);
  } else if (IsTorchScript(source)) {
    if (!options.allow_torchscript) {
      return Unsupported(
          "running TorchScript executes the code stored in it: pass --allow-torchscript to run "
          "it with libtorch");
    }
    backend = "libtorch";
    Result<std::vector<NamedTensor>> ran = RunTorchScript(path, inputs);
    if (!ran) {
      if (ran.error().code() == StatusCode::kUnsupported) return ran.error();
      out.push_back(
          MakeCheck("inference", "run", Outcome::kFail, backend + ": " + ran.error().message()));
      return out;
    }
    outputs = std::move(*ran);
    if (outputs.size() != expected.size()) {
      out.push_back(MakeCheck("inference", "run", Outcome::kFail,
                              "forward() returned " + std::to_string(outputs.size()) +
                                  " tensors; " + samples.expected + " holds " +
                                  std::to_string(expected.size())));
      return out;
    }
    // forward() outputs are positional: they take the expected outputs' names.
    for (size_t i = 0; i < outputs.size(); ++i) outputs[i].first = expected[i].first;
  } else {
    return Unsupported(std::string(source.format()) +
                       " holds weights only: inference needs an ONNX model or a TorchScript "
                       "archive");
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string& name = outputs[i].first;
    const auto it = samples.per_output.find(name);
    const Tolerance tol = it != samples.per_output.end() ? it->second : samples.tolerance;
    Check c = CompareOutput(name, outputs[i].second, expected[i].second, tol);
    c.data["backend"] = backend;
    out.push_back(std::move(c));
  }
  return out;
}

void Append(std::vector<Check>& to, std::vector<Check> more) {
  for (Check& c : more) to.push_back(std::move(c));
}

Status AddFidelity(const ModelSource& model, const Options& options, Report& report) {
  if (options.against == nullptr) return Status::Ok();
  MP_ASSIGN_OR_RETURN(std::vector<Check> checks,
                      CompareModels(model, *options.against, options.against_name, options));
  Append(report.checks, std::move(checks));
  return Status::Ok();
}

}  // namespace

bool Report::passed() const {
  return std::none_of(checks.begin(), checks.end(),
                      [](const Check& c) { return c.outcome == Outcome::kFail; });
}

std::string Report::FirstFailure() const {
  for (const Check& c : checks) {
    if (c.outcome == Outcome::kFail) return c.kind + " " + c.subject + ": " + c.detail;
  }
  return "";
}

Json Report::ToJson() const {
  Json doc = Json::object();
  doc["target"] = target;
  doc["format"] = format;
  doc["ok"] = passed();
  Json list = Json::array();
  for (const Check& c : checks) {
    Json j = Json::object();
    j["check"] = c.kind;
    j["subject"] = c.subject;
    j["result"] = c.outcome == Outcome::kPass   ? "pass"
                  : c.outcome == Outcome::kFail ? "fail"
                                                : "skip";
    j["detail"] = c.detail;
    for (const auto& [k, v] : c.data.items()) j[k] = v;
    list.push_back(std::move(j));
  }
  doc["checks"] = std::move(list);
  return doc;
}

// True when tensor i of `model` is the scale of an int8 tensor (NAME_scale of an i8 NAME that
// `against` holds in float): compared as part of NAME, not a tensor of its own.
bool IsInt8Scale(const ModelSource& model, size_t i, const ModelSource& against) {
  const std::string& name = model.tensors()[i].name;
  if (!name.ends_with(kScaleSuffix)) return false;
  const std::string base = name.substr(0, name.size() - kScaleSuffix.size());
  const auto q = model.Find(base);
  const auto ref = against.Find(base);
  return q && ref && IsFloat(against.tensors()[*ref].dtype) &&
         Int8PairLayout(model.tensors()[*q], model.tensors()[i]).has_value();
}

Result<std::vector<Check>> CompareModels(const ModelSource& model, const ModelSource& against,
                                         const std::string& against_name, const Options& options) {
  std::vector<Check> out;
  std::vector<std::string> only_model, only_against;
  std::vector<std::pair<size_t, size_t>> pairs;
  for (size_t i = 0; i < model.tensors().size(); ++i) {
    const std::string& name = model.tensors()[i].name;
    if (auto j = against.Find(name)) {
      pairs.emplace_back(i, *j);
    } else if (!IsInt8Scale(model, i, against)) {
      only_model.push_back(name);
    }
  }
  for (const TensorInfo& t : against.tensors()) {
    if (!model.Find(t.name)) only_against.push_back(t.name);
  }
  std::vector<TensorCompare> results(pairs.size());
  MP_RETURN_IF_ERROR(ParallelFor(pairs.size(), [&](size_t k) {
    results[k].name = model.tensors()[pairs[k].first].name;
    return CompareTensor(model, pairs[k].first, against, pairs[k].second, options, results[k]);
  }));
  auto names = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 5; ++i) s += (i ? ", " : "") + Quote(v[i]);
    if (v.size() > 5) s += ", ... (" + std::to_string(v.size()) + " in all)";
    return s;
  };
  if (!only_model.empty()) {
    out.push_back(MakeCheck(
        "fidelity", "tensors", Outcome::kFail,
        std::to_string(only_model.size()) + " not in " + against_name + ": " + names(only_model)));
  }
  if (!only_against.empty()) {
    out.push_back(MakeCheck("fidelity", "tensors", Outcome::kFail,
                            std::to_string(only_against.size()) + " of " + against_name +
                                " missing: " + names(only_against)));
  }
  size_t failed = 0;
  for (const TensorCompare& r : results) {
    if (r.ok) continue;
    ++failed;
    Check c = MakeCheck("fidelity", "tensor " + Quote(r.name), Outcome::kFail, r.why);
    c.data = {{"rule", r.rule},
              {"max_abs_error", NumJson(r.max_abs)},
              {"max_ulp", NumJson(r.max_ulp)},
              {"mismatched", r.mismatched}};
    out.push_back(std::move(c));
  }
  // The summary names the worst tensors by error (relative to their rule's allowance).
  std::vector<const TensorCompare*> order;
  for (const TensorCompare& r : results) order.push_back(&r);
  std::stable_sort(order.begin(), order.end(), [](const TensorCompare* x, const TensorCompare* y) {
    return x->max_abs > y->max_abs;
  });
  std::set<std::string> rules;
  for (const TensorCompare& r : results) rules.insert(r.rule);
  std::string rule_text;
  for (const std::string& r : rules) rule_text += (rule_text.empty() ? "" : "; ") + r;
  std::string worst;
  for (size_t k = 0; k < order.size() && k < 3 && order[k]->max_abs > 0; ++k) {
    worst += (worst.empty() ? "" : ", ") + Quote(order[k]->name) + " max abs " +
             Num(order[k]->max_abs) +
             (order[k]->max_ulp > 0 ? " (" + Num(order[k]->max_ulp) + " ulp)" : "") +
             (std::isfinite(order[k]->snr_db) ? " (SNR " + Num(order[k]->snr_db) + " dB)" : "");
  }
  const bool ok = failed == 0 && only_model.empty() && only_against.empty();
  Check summary =
      MakeCheck("fidelity", "vs " + against_name, ok ? Outcome::kPass : Outcome::kFail,
                std::to_string(results.size() - failed) + " of " + std::to_string(results.size()) +
                    " tensors pass: " + (rule_text.empty() ? std::string("exact") : rule_text) +
                    (!worst.empty() ? "; worst: " + worst
                     : failed == 0  ? std::string("; all values equal")
                                    : std::string()));
  Json worst_json = Json::array();
  for (size_t k = 0; k < order.size() && k < 3; ++k) {
    worst_json.push_back({{"name", order[k]->name},
                          {"max_abs_error", NumJson(order[k]->max_abs)},
                          {"max_ulp", NumJson(order[k]->max_ulp)}});
  }
  summary.data = {{"compared", results.size()},
                  {"failed", failed},
                  {"only_in_model", only_model},
                  {"only_in_against", only_against},
                  {"worst", std::move(worst_json)}};
  out.push_back(std::move(summary));
  return out;
}

Result<Report> ValidatePath(const std::string& path, const Options& options) {
  Report report;
  report.target = path;
  ReadOptions read;
  read.select_key = options.key;
  Result<std::unique_ptr<ModelSource>> opened = OpenModel(path, read);
  if (!opened) {
    if (!IsInputRejection(opened.error())) return opened.error();
    report.checks.push_back(
        MakeCheck("schema", "structure", Outcome::kFail, opened.error().message()));
    return report;
  }
  const ModelSource& source = **opened;
  report.format = std::string(source.format());
  MP_ASSIGN_OR_RETURN(std::vector<Check> integrity, CheckFileIntegrity(source));
  const bool intact = std::none_of(integrity.begin(), integrity.end(),
                                   [](const Check& c) { return c.outcome == Outcome::kFail; });
  Append(report.checks, std::move(integrity));
  // The model file itself (a folder or an index resolves to the files it names).
  const ModelFiles files = source.files();
  const std::string model_path = files.files.size() == 1 ? files.files[0] : path;
  Append(report.checks, CheckSchema(model_path, source, options));
  if (!intact) return report;  // comparing or running damaged data would only add noise
  MP_RETURN_IF_ERROR(AddFidelity(source, options, report));
  if (options.samples) {
    MP_ASSIGN_OR_RETURN(std::vector<Check> inference,
                        CheckInference(model_path, source, *options.samples, options));
    Append(report.checks, std::move(inference));
  }
  return report;
}

Result<Report> ValidateVersion(registry::Registry& registry, const registry::VersionRecord& version,
                               const Options& options) {
  Report report;
  report.target = version.model + "@" + std::to_string(version.version);
  report.format = version.format;
  const Status verified = registry.Verify(version);
  if (!verified.ok()) {
    if (!IsInputRejection(verified) && verified.code() != StatusCode::kNotFound) return verified;
    report.checks.push_back(MakeCheck("integrity", "blobs", Outcome::kFail, verified.message()));
    return report;
  }
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> model,
                      registry.Load(version, options.verify_blobs));
  MP_ASSIGN_OR_RETURN(auto assets, registry.Assets(version));
  Check integrity =
      MakeCheck("integrity", "blobs", Outcome::kPass,
                "manifest " + version.manifest + " and the blobs of " +
                    std::to_string(model->tensors().size()) + " tensors and " +
                    std::to_string(assets.size()) + " assets re-hashed: every SHA-256 matches");
  report.checks.push_back(std::move(integrity));
  report.checks.push_back(MakeCheck("schema", "manifest", Outcome::kPass,
                                    "valid: " + std::to_string(model->tensors().size()) +
                                        " tensors, pushed from " + version.format));

  MP_ASSIGN_OR_RETURN(ScratchDir scratch, ScratchDir::Make());
  std::string onnx_path;
  std::unique_ptr<ModelSource> exported;  // the stored graph with its weights, as a file
  if (version.format == "onnx") {
    onnx_path = scratch.Join("model.onnx");
    WriteOptions write;
    write.durable = false;
    MP_RETURN_IF_ERROR(registry.ExportOnnx(version, onnx_path, write, /*verify=*/false));
    MP_ASSIGN_OR_RETURN(exported, OpenModel(onnx_path));
    if (const auto* o = dynamic_cast<const onnx::OnnxSource*>(exported.get())) {
      report.checks.push_back(RunOnnxChecker(onnx_path, *o));
    }
  }
  MP_RETURN_IF_ERROR(AddFidelity(*model, options, report));

  std::optional<Samples> samples = options.samples;
  if (!samples) {
    MP_ASSIGN_OR_RETURN(std::optional<registry::VersionSamples> stored,
                        registry.SamplesOf(version));
    if (stored) {
      Samples s;
      s.inputs = scratch.Join("inputs-" + stored->inputs);
      s.expected = scratch.Join("expected-" + stored->expected);
      for (const auto& [asset, digest] : assets) {
        if (asset == stored->inputs) MP_RETURN_IF_ERROR(registry.ExportAsset(digest, s.inputs));
        if (asset == stored->expected) {
          MP_RETURN_IF_ERROR(registry.ExportAsset(digest, s.expected));
        }
      }
      s.tolerance = {stored->atol, stored->rtol};
      for (const auto& [name, tol] : stored->per_output)
        s.per_output[name] = {tol.first, tol.second};
      samples = std::move(s);
    }
  }
  if (samples) {
    if (exported == nullptr) {
      return Unsupported(report.target + " was pushed from " + version.format +
                         ", which holds weights only: inference needs a version pushed from "
                         "ONNX");
    }
    MP_ASSIGN_OR_RETURN(std::vector<Check> inference,
                        CheckInference(onnx_path, *exported, *samples, options));
    Append(report.checks, std::move(inference));
  }
  return report;
}

}  // namespace mp::validate
