// What the tests that drive the ONNX node conformance tests (Debian's libonnx-testdata:
// data/node/test_*/model.onnx with test_data_set_*/input_N.pb and output_N.pb) through
// OnnxEvaluator share: which tests they take, which they leave out and why, how they read the
// stored tensors and how they compare two tensors.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/core/status.h"
#include "modelport/validate/eval_tensor.h"
#include "modelport/validate/onnx_eval.h"

// Not mp::eval::testing: that would hide mp::testing (test_util.h) inside mp::eval.
namespace mp::eval::node_tests {

/// Where libonnx-testdata installs the node tests.
inline constexpr char kNodeTestsDir[] = "/usr/share/libonnx-testdata/data/node";

/// Why a node test of supported ops is left out.
enum class ExclusionKind {
  /// The stored expected values are wrong; the evaluator runs the model, so a comparison with
  /// another runtime on the same inputs still takes the test.
  kWrongExpectedValues,
  /// The evaluator cannot run the model by design (strings, optional or sequence values,
  /// training-mode randomness); no comparison takes the test.
  kEvaluatorCannotRun,
};

/// One left-out node test: the kind of reason and the reason in words.
struct Exclusion {
  ExclusionKind kind;
  std::string reason;
};

/// The node tests of supported ops that are left out, by folder name (e.g. "test_identity_opt").
const std::map<std::string, Exclusion>& Exclusions();

/// A node test whose every node is a default-domain op the evaluator supports.
struct NodeTest {
  /// The test's folder (holds model.onnx and test_data_set_*).
  std::filesystem::path dir;
  /// The folder's name, e.g. "test_add_bcast".
  std::string name;
  /// model.onnx, parsed.
  ::onnx::ModelProto model;
  /// The op types of the graph's nodes.
  std::set<std::string> ops;
};

/// The test_* folders under `root`, sorted by name, whose model.onnx uses only default-domain
/// ops in SupportedOps() (exclusions not applied). Each model.onnx that does not parse adds a
/// line to `errors`.
std::vector<NodeTest> SupportedNodeTests(std::vector<std::string>* errors,
                                         const std::filesystem::path& root = kNodeTestsDir);

/// Parses the serialized protobuf at `path` into `proto`; false when it cannot be read or parsed.
template <typename Proto>
bool ParseFile(const std::filesystem::path& path, Proto* proto) {
  std::ifstream in(path, std::ios::binary);
  return in && proto->ParseFromIstream(&in);
}

/// ONNX 1.12's test data stores bfloat16 tensors as UINT16 (numpy has no bfloat16): a u16
/// tensor where the graph declares bf16 is taken as the bf16 bits it holds.
void FixBf16(const ::onnx::ValueInfoProto& declared, Tensor& t);

/// The test_data_set_* folders of node test `dir`, sorted by name.
std::vector<std::filesystem::path> DataSets(const std::filesystem::path& dir);

/// input_0.pb, input_1.pb, ... of data set `set`, named after and FixBf16'd against the graph
/// inputs of `model` in order. Error when a file does not parse or decode, or there are more
/// files than graph inputs.
Result<std::vector<NamedTensor>> ReadInputs(const std::filesystem::path& set,
                                            const ::onnx::ModelProto& model);

/// output_`i`.pb of data set `set`, FixBf16'd against graph output `i` of `model` when there is
/// one. Error when the file is missing, does not parse or does not decode.
Result<Tensor> ReadOutput(const std::filesystem::path& set, const ::onnx::ModelProto& model,
                          size_t i);

/// The one tensor of the file at `path` (a .npy, through OpenModel).
Result<Tensor> ReadNpy(const std::string& path);

/// Empty when `actual` matches `expected`: same dtype and shape; floats within
/// atol + rtol * |expected| (NaN matches NaN, infinities match exactly); everything else
/// bit-exact. Else the first difference, naming the sides by the labels (e.g.
/// "element 3: expected 1.5, got 2").
std::string Compare(const Tensor& expected, const Tensor& actual, double rtol, double atol,
                    std::string_view expected_label, std::string_view actual_label);

}  // namespace mp::eval::node_tests
