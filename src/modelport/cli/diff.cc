// `modelport diff A B [--atol X] [--rtol Y] [--json]`: compares two models tensor by tensor
// (any readable formats). Exit 0 when they match, 1 when they differ.
//
// A common tensor matches when shapes are equal and no element pair has |a - b| > atol +
// rtol * |b| (NaN equals NaN; an infinity equals only the same infinity). With the default
// atol = rtol = 0 the comparison is exact: a dtype difference is itself a difference, and
// integer tensors must be bit-equal. With a tolerance, tensors of different dtypes (an f32
// model and its f16 conversion) are compared by value. Values are decoded to f64 in chunks, so
// memory stays bounded however large the tensors are. Metadata is reported, not compared for
// the exit code.
//
// --json fields: "a", "b", "format_a", "format_b", "atol", "rtol", "match", "only_in_a",
// "only_in_b" (name lists), "metadata_equal", "summary": {"compared", "bit_equal", "equal",
// "within_tolerance", "different"}, "tensors": [{"name", "result" (bit-equal | equal |
// within-tolerance | different | dtype-differs | shape-differs), "dtype_a", "dtype_b",
// "shape_a", "shape_b", "bit_equal", "max_abs_error", "max_rel_error" (numbers; the string
// "inf" when infinite; null when the values could not be decoded), "mismatched_elements"}].
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "modelport/cli/cli_util.h"
#include "modelport/convert/cast.h"
#include "modelport/formats/format.h"

namespace mp::cli {
namespace {

struct DiffOptions {
  std::string a;
  std::string b;
  double atol = 0;
  double rtol = 0;
  bool json = false;
};

struct TensorDiff {
  size_t index_a = 0;
  size_t index_b = 0;
  std::string result;
  bool differs = false;
  bool bit_equal = false;
  std::optional<double> max_abs;
  std::optional<double> max_rel;
  uint64_t mismatched = 0;
};

constexpr double kInf = std::numeric_limits<double>::infinity();

bool IsExactIntegerKind(DType d) {
  const DTypeKind k = Traits(d).kind;
  return k == DTypeKind::kBool || k == DTypeKind::kUnsigned || k == DTypeKind::kSigned;
}

// Decodes both tensors in chunks and folds the element errors into `d`. False when either
// dtype cannot be decoded (quantized) or the element widths differ (complex vs real).
Result<bool> CompareValues(const TensorView& a, const TensorView& b, const DiffOptions& opt,
                           TensorDiff& d) {
  const DType da = a.info.dtype, db = b.info.dtype;
  if (IsQuantized(da) || IsQuantized(db) || DecodedWidth(da) != DecodedWidth(db)) return false;
  MP_ASSIGN_OR_RETURN(const uint64_t count, a.info.shape.NumElements());
  const size_t width = DecodedWidth(da);
  constexpr uint64_t kChunk = 1 << 16;
  std::vector<double> va(kChunk * width), vb(kChunk * width);
  const size_t size_a = ElementSize(da), size_b = ElementSize(db);
  double max_abs = 0, max_rel = 0;
  for (uint64_t begin = 0; begin < count; begin += kChunk) {
    const size_t n = static_cast<size_t>(std::min(kChunk, count - begin));
    MP_RETURN_IF_ERROR(DecodeToF64(da, a.bytes().data() + begin * size_a, n, va.data()));
    MP_RETURN_IF_ERROR(DecodeToF64(db, b.bytes().data() + begin * size_b, n, vb.data()));
    for (size_t i = 0; i < n * width; ++i) {
      const double x = va[i], y = vb[i];
      if (x == y || (std::isnan(x) && std::isnan(y))) continue;
      double abs_err = std::fabs(x - y);
      if (std::isnan(abs_err)) abs_err = kInf;
      double rel_err = y != 0 ? abs_err / std::fabs(y) : kInf;
      if (std::isnan(rel_err)) rel_err = kInf;
      max_abs = std::max(max_abs, abs_err);
      max_rel = std::max(max_rel, rel_err);
      const bool finite = std::isfinite(x) && std::isfinite(y);
      if (!finite || !(abs_err <= opt.atol + opt.rtol * std::fabs(y))) ++d.mismatched;
    }
  }
  d.max_abs = max_abs;
  d.max_rel = max_rel;
  return true;
}

Status CompareTensor(const ModelSource& sa, const ModelSource& sb, const DiffOptions& opt,
                     TensorDiff& d) {
  const TensorInfo& ia = sa.tensors()[d.index_a];
  const TensorInfo& ib = sb.tensors()[d.index_b];
  if (ia.shape != ib.shape) {
    d.result = "shape-differs";
    d.differs = true;
    return Status::Ok();
  }
  MP_ASSIGN_OR_RETURN(TensorView a, sa.Load(d.index_a));
  MP_ASSIGN_OR_RETURN(TensorView b, sb.Load(d.index_b));
  d.bit_equal =
      ia.dtype == ib.dtype && a.bytes().size() == b.bytes().size() &&
      (a.bytes().empty() || std::memcmp(a.bytes().data(), b.bytes().data(), a.bytes().size()) == 0);
  if (d.bit_equal) {
    d.result = "bit-equal";
    d.max_abs = 0;
    d.max_rel = 0;
    return Status::Ok();
  }
  const bool exact = opt.atol == 0 && opt.rtol == 0;
  MP_ASSIGN_OR_RETURN(const bool compared, CompareValues(a, b, opt, d));
  if (exact && ia.dtype != ib.dtype) {
    d.result = "dtype-differs";
    d.differs = true;
  } else if (!compared || d.mismatched > 0 || (exact && IsExactIntegerKind(ia.dtype))) {
    // Integers above 2^53 may decode to equal doubles; exact mode trusts only the bytes.
    d.result = "different";
    d.differs = true;
  } else {
    d.result = d.max_abs == 0.0 ? "equal" : "within-tolerance";
  }
  return Status::Ok();
}

std::string ErrorText(const std::optional<double>& v) {
  if (!v) return "-";
  if (std::isinf(*v)) return "inf";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", *v);
  return buf;
}

Json ErrorJson(const std::optional<double>& v) {
  if (!v) return nullptr;
  if (std::isinf(*v)) return "inf";
  return *v;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

Result<int> Diff(const DiffOptions& opt) {
  if (!(opt.atol >= 0) || !(opt.rtol >= 0) || std::isinf(opt.atol) || std::isinf(opt.rtol)) {
    return InvalidArgument("--atol and --rtol must be finite and >= 0");
  }
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> sa, OpenModel(opt.a));
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> sb, OpenModel(opt.b));

  std::vector<std::string> only_a, only_b;
  std::vector<TensorDiff> diffs;
  for (size_t i = 0; i < sa->tensors().size(); ++i) {
    const auto j = sb->Find(sa->tensors()[i].name);
    if (!j) {
      only_a.push_back(sa->tensors()[i].name);
      continue;
    }
    TensorDiff d;
    d.index_a = i;
    d.index_b = *j;
    diffs.push_back(std::move(d));
  }
  for (const TensorInfo& t : sb->tensors()) {
    if (!sa->Find(t.name)) only_b.push_back(t.name);
  }
  MP_RETURN_IF_ERROR(
      ParallelFor(diffs.size(), [&](size_t k) { return CompareTensor(*sa, *sb, opt, diffs[k]); }));

  uint64_t n_bit = 0, n_equal = 0, n_tol = 0, n_diff = 0;
  for (const TensorDiff& d : diffs) {
    if (d.differs) {
      ++n_diff;
    } else if (d.bit_equal) {
      ++n_bit;
    } else if (d.result == "equal") {
      ++n_equal;
    } else {
      ++n_tol;
    }
  }
  const bool match = n_diff == 0 && only_a.empty() && only_b.empty();
  const bool metadata_equal = sa->metadata() == sb->metadata();

  if (opt.json) {
    Json doc = Json::object();
    doc["a"] = opt.a;
    doc["b"] = opt.b;
    doc["format_a"] = sa->format();
    doc["format_b"] = sb->format();
    doc["atol"] = opt.atol;
    doc["rtol"] = opt.rtol;
    doc["match"] = match;
    doc["only_in_a"] = only_a;
    doc["only_in_b"] = only_b;
    doc["metadata_equal"] = metadata_equal;
    doc["summary"] = {{"compared", diffs.size()},
                      {"bit_equal", n_bit},
                      {"equal", n_equal},
                      {"within_tolerance", n_tol},
                      {"different", n_diff}};
    Json tensors = Json::array();
    for (const TensorDiff& d : diffs) {
      const TensorInfo& ia = sa->tensors()[d.index_a];
      const TensorInfo& ib = sb->tensors()[d.index_b];
      tensors.push_back({{"name", ia.name},
                         {"result", d.result},
                         {"dtype_a", DTypeName(ia.dtype)},
                         {"dtype_b", DTypeName(ib.dtype)},
                         {"shape_a", ShapeJson(ia.shape)},
                         {"shape_b", ShapeJson(ib.shape)},
                         {"bit_equal", d.bit_equal},
                         {"max_abs_error", ErrorJson(d.max_abs)},
                         {"max_rel_error", ErrorJson(d.max_rel)},
                         {"mismatched_elements", d.mismatched}});
    }
    doc["tensors"] = std::move(tensors);
    PrintJson(doc);
  } else {
    if (!only_a.empty())
      std::printf("only in A (%zu): %s\n", only_a.size(), JoinNames(only_a).c_str());
    if (!only_b.empty())
      std::printf("only in B (%zu): %s\n", only_b.size(), JoinNames(only_b).c_str());
    if (!metadata_equal) std::printf("metadata differs (not counted as a difference)\n");
    Table table({"name", "result", "dtype", "shape", "max_abs", "max_rel", "mismatched"},
                {false, false, false, false, true, true, true});
    for (const TensorDiff& d : diffs) {
      const TensorInfo& ia = sa->tensors()[d.index_a];
      const TensorInfo& ib = sb->tensors()[d.index_b];
      std::string dtype(DTypeName(ia.dtype));
      if (ia.dtype != ib.dtype) dtype += " / " + std::string(DTypeName(ib.dtype));
      std::string shape = ShapeText(ia.shape);
      if (ia.shape != ib.shape) shape += " / " + ShapeText(ib.shape);
      table.AddRow({ia.name, d.result, dtype, shape, ErrorText(d.max_abs), ErrorText(d.max_rel),
                    std::to_string(d.mismatched)});
    }
    if (!diffs.empty()) table.Print(stdout);
    std::printf(
        "%zu compared: %llu bit-equal, %llu equal, %llu within tolerance, %llu different; "
        "%zu only in A, %zu only in B\n",
        diffs.size(), static_cast<unsigned long long>(n_bit),
        static_cast<unsigned long long>(n_equal), static_cast<unsigned long long>(n_tol),
        static_cast<unsigned long long>(n_diff), only_a.size(), only_b.size());
    std::printf("%s\n", match ? "models match" : "models differ");
  }
  return match ? kExitOk : kExitDifferent;
}

}  // namespace

Command AddDiffCommand(CLI::App& app) {
  auto opt = std::make_shared<DiffOptions>();
  CLI::App* sub = app.add_subcommand(
      "diff",
      "Compare two models tensor by tensor: names only in A or B, dtype and shape differences, "
      "bit equality, max abs and max rel error. A tensor differs when any |a-b| > atol + "
      "rtol*|b| (NaN equals NaN). Exact by default (dtypes must match); with a tolerance, "
      "different dtypes are compared by value. Exit 0 when they match, 1 when they differ.");
  sub->add_option("A", opt->a, "first model (file, sharded index, or folder)")->required();
  sub->add_option("B", opt->b, "second model; relative errors are relative to B")->required();
  sub->add_option("--atol", opt->atol, "absolute tolerance (default 0)");
  sub->add_option("--rtol", opt->rtol, "relative tolerance, times |b| (default 0)");
  sub->add_flag("--json", opt->json, "print one JSON document on stdout");
  return {sub, [opt] {
            Result<int> code = Diff(*opt);
            return code ? *code : ReportError(code.error());
          }};
}

}  // namespace mp::cli
