#include "onnx_node_tests.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <sstream>
#include <utility>

#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"

namespace mp::eval::node_tests {

namespace fs = std::filesystem;

const std::map<std::string, Exclusion>& Exclusions() {
  static const auto* kExcluded = [] {
    constexpr ExclusionKind kCannotRun = ExclusionKind::kEvaluatorCannotRun;
    // Every expected value is the input's upper 16 bits; Cast's spec (and ONNX 1.14's
    // regenerated data, torch, numpy-style casts) rounds to nearest even, as modelport does.
    const Exclusion truncated_bf16{ExclusionKind::kWrongExpectedValues,
                                   "ONNX 1.12's expected bf16 values truncate instead of rounding"};
    const Exclusion strings{kCannotRun, "string tensors"};
    const Exclusion dropout{kCannotRun, "training-mode Dropout draws random numbers"};
    return new std::map<std::string, Exclusion>{
        {"test_identity_opt",
         {kCannotRun, "optional-typed values (the evaluator computes on tensors only)"}},
        {"test_identity_sequence",
         {kCannotRun, "sequence-typed values (the evaluator computes on tensors only)"}},
        {"test_cast_FLOAT_to_STRING", strings},
        {"test_cast_STRING_to_FLOAT", strings},
        {"test_castlike_FLOAT_to_STRING_expanded", strings},
        {"test_castlike_STRING_to_FLOAT_expanded", strings},
        {"test_cast_FLOAT_to_BFLOAT16", truncated_bf16},
        {"test_castlike_FLOAT_to_BFLOAT16_expanded", truncated_bf16},
        {"test_training_dropout", dropout},
        {"test_training_dropout_default", dropout},
        {"test_training_dropout_default_mask", dropout},
        {"test_training_dropout_mask", dropout},
    };
  }();
  return *kExcluded;
}

std::vector<NodeTest> SupportedNodeTests(std::vector<std::string>* errors, const fs::path& root) {
  const std::vector<std::string> supported_list = SupportedOps();
  const std::set<std::string> supported(supported_list.begin(), supported_list.end());
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.path().filename().string().rfind("test_", 0) == 0) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  std::vector<NodeTest> tests;
  for (const fs::path& dir : dirs) {
    NodeTest test;
    if (!ParseFile(dir / "model.onnx", &test.model)) {
      errors->push_back((dir / "model.onnx").string() + ": does not parse as a ModelProto");
      continue;
    }
    bool all_supported = true;
    for (const auto& node : test.model.graph().node()) {
      const bool default_domain = node.domain().empty() || node.domain() == "ai.onnx";
      all_supported &= default_domain && supported.count(node.op_type()) > 0;
      test.ops.insert(node.op_type());
    }
    if (!all_supported) continue;
    test.dir = dir;
    test.name = dir.filename().string();
    tests.push_back(std::move(test));
  }
  return tests;
}

void FixBf16(const ::onnx::ValueInfoProto& declared, Tensor& t) {
  if (t.dtype == DType::kU16 &&
      declared.type().tensor_type().elem_type() == ::onnx::TensorProto::BFLOAT16) {
    t.dtype = DType::kBF16;
  }
}

std::vector<fs::path> DataSets(const fs::path& dir) {
  std::vector<fs::path> sets;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind("test_data_set_", 0) == 0) {
      sets.push_back(entry.path());
    }
  }
  std::sort(sets.begin(), sets.end());
  return sets;
}

namespace {

// The decoded TensorProto in `file` of data set `set`.
Result<Tensor> ReadTensorFile(const fs::path& set, const std::string& file) {
  const std::string where = set.filename().string() + "/" + file;
  ::onnx::TensorProto proto;
  if (!ParseFile(set / file, &proto)) {
    return InvalidArgument(where + ": missing or not a TensorProto");
  }
  Result<Tensor> t = FromTensorProto(proto);
  if (!t.ok()) return InvalidArgument(where + ": " + t.status().ToString());
  return t;
}

}  // namespace

Result<std::vector<NamedTensor>> ReadInputs(const fs::path& set, const ::onnx::ModelProto& model) {
  std::vector<NamedTensor> inputs;
  for (int i = 0; fs::exists(set / ("input_" + std::to_string(i) + ".pb")); ++i) {
    const std::string file = "input_" + std::to_string(i) + ".pb";
    if (i >= model.graph().input_size()) {
      return InvalidArgument(set.filename().string() + "/" + file + ": more input files than " +
                             std::to_string(model.graph().input_size()) + " graph inputs");
    }
    MP_ASSIGN_OR_RETURN(Tensor t, ReadTensorFile(set, file));
    FixBf16(model.graph().input(i), t);
    inputs.emplace_back(model.graph().input(i).name(), std::move(t));
  }
  return inputs;
}

Result<Tensor> ReadOutput(const fs::path& set, const ::onnx::ModelProto& model, size_t i) {
  MP_ASSIGN_OR_RETURN(Tensor t, ReadTensorFile(set, "output_" + std::to_string(i) + ".pb"));
  if (static_cast<int>(i) < model.graph().output_size()) {
    FixBf16(model.graph().output(static_cast<int>(i)), t);
  }
  return t;
}

Result<Tensor> ReadNpy(const std::string& path) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> source, OpenModel(path));
  if (source->tensors().size() != 1) return InvalidArgument(path + ": expected one tensor");
  MP_ASSIGN_OR_RETURN(TensorView view, source->Load(0));
  return FromView(view);
}

std::string Compare(const Tensor& expected, const Tensor& actual, double rtol, double atol,
                    std::string_view expected_label, std::string_view actual_label) {
  std::ostringstream s;
  s.precision(9);
  if (expected.dtype != actual.dtype || expected.shape != actual.shape) {
    s << expected_label << " " << Describe(expected) << ", " << actual_label << " "
      << Describe(actual);
    return s.str();
  }
  const bool is_float = IsFloat(expected.dtype);
  const size_t size = ElementSize(expected.dtype);
  for (int64_t i = 0, n = expected.NumElements(); i < n; ++i) {
    if (is_float) {
      const double e = GetAsDouble(expected, i), a = GetAsDouble(actual, i);
      if (std::isnan(e) && std::isnan(a)) continue;
      if (e == a || std::fabs(a - e) <= atol + rtol * std::fabs(e)) continue;
      s << "element " << i << ": " << expected_label << " " << e << ", " << actual_label << " "
        << a;
      return s.str();
    }
    if (std::memcmp(expected.bytes.data() + i * size, actual.bytes.data() + i * size, size)) {
      s << "element " << i << ": " << expected_label << " " << GetAsInt64(expected, i) << ", "
        << actual_label << " " << GetAsInt64(actual, i);
      return s.str();
    }
  }
  return "";
}

}  // namespace mp::eval::node_tests
