// The ONNX reference evaluator against onnxruntime (npm onnxruntime-node, CPU) on the same
// inputs: every node conformance test of a supported op (libonnx-testdata, selected by
// onnx_node_tests.h; of its exclusions only those the evaluator cannot run are left out), fed
// test_data_set_0's inputs, must give the same outputs in both runtimes, independently of the
// expected values stored beside the tests. All models go through
// tests/node/ort_batch.mjs in one node process. Also the golden MLP of tests/data/mlp-onnx.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"
#include "modelport/formats/numpy/numpy.h"
#include "modelport/validate/eval_tensor.h"
#include "modelport/validate/onnx_eval.h"
#include "onnx_node_tests.h"
#include "test_util.h"

namespace mp::eval {
namespace {

namespace fs = std::filesystem;

using node_tests::ReadNpy;

// Two runtimes computing the same float graph may order sums differently; anything past these
// is a real disagreement. Integers and bools must match exactly.
constexpr double kRtol = 1e-4;
constexpr double kAtol = 1e-6;

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Writes `t` as a .npy v1 file; the error when numpy (and so ort_batch.mjs) has no dtype for it.
Status WriteNpy(const Tensor& t, const fs::path& path) {
  std::vector<uint64_t> dims(t.shape.begin(), t.shape.end());
  Result<std::string> header = numpy::BuildHeader(t.dtype, Shape(std::move(dims)));
  if (!header.ok()) {
    return Unsupported(path.string() + ": no .npy dtype for " + Describe(t) + " (" +
                       header.status().ToString() + ")");
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(header->data(), static_cast<std::streamsize>(header->size()));
  out.write(reinterpret_cast<const char*>(t.bytes.data()),
            static_cast<std::streamsize>(t.bytes.size()));
  if (!out) return IoError(path.string() + ": write failed");
  return Status::Ok();
}

// One model for onnxruntime and the evaluator.
struct Job {
  std::string name;  // for messages
  fs::path model;
  std::vector<NamedTensor> inputs;
  std::map<std::string, std::string> input_files;  // name -> .npy
  fs::path out_dir;
  std::string unfeedable;  // why onnxruntime-node cannot take an input; empty when it can
};

// What onnxruntime made of one job (a line of ort_batch.mjs's output).
struct OrtResult {
  bool ok = false;
  std::string error;
  std::vector<std::string> names;
  std::vector<std::string> files;
};

// Runs every job through ort_batch.mjs in one node process. Fails the test (and returns an
// empty vector) when the runner itself fails or answers the wrong number of lines.
std::vector<OrtResult> RunOrtBatch(const std::vector<Job>& jobs, const fs::path& job_file) {
  Json doc = Json::array();
  for (const Job& job : jobs) {
    Json inputs = Json::object();
    for (const auto& [name, file] : job.input_files) inputs[name] = file;
    doc.push_back({{"model", job.model.string()}, {"inputs", inputs}, {"out_dir", job.out_dir}});
  }
  {
    std::ofstream out(job_file);
    out << doc.dump();
  }
  const testing::CommandResult r = testing::Run(
      "node " + ShellQuote((testing::SourceDir() / "tests/node/ort_batch.mjs").string()) + " " +
      ShellQuote(job_file.string()));
  if (r.exit_code != 0) {
    ADD_FAILURE() << "ort_batch.mjs exited " << r.exit_code << ": " << r.err;
    return {};
  }
  std::vector<OrtResult> results;
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    const Json j = Json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("ok")) {
      ADD_FAILURE() << "ort_batch.mjs printed a line that is not a job result: " << line;
      return {};
    }
    OrtResult result;
    result.ok = j["ok"].get<bool>();
    if (!result.ok) result.error = j.value("error", "");
    if (result.ok) {
      for (const Json& o : j.at("outputs")) {
        result.names.push_back(o.at("name").get<std::string>());
        result.files.push_back(o.at("file").get<std::string>());
      }
    }
    results.push_back(std::move(result));
  }
  if (results.size() != jobs.size()) {
    ADD_FAILURE() << "ort_batch.mjs answered " << results.size() << " of " << jobs.size()
                  << " jobs; stderr: " << r.err;
    return {};
  }
  return results;
}

// Empty when the evaluator reproduces onnxruntime's outputs of `job`; else why not.
std::string EvaluatorAgrees(const Job& job, const OrtResult& ort) {
  Result<std::unique_ptr<OnnxEvaluator>> evaluator = OnnxEvaluator::Open(job.model);
  if (!evaluator.ok()) return "evaluator: open: " + evaluator.status().ToString();
  Result<std::vector<NamedTensor>> got = (*evaluator)->Run(job.inputs);
  if (!got.ok()) return "evaluator: " + got.status().ToString();
  if (got->size() != ort.names.size()) {
    return "onnxruntime gives " + std::to_string(ort.names.size()) + " outputs, the evaluator " +
           std::to_string(got->size());
  }
  for (size_t i = 0; i < got->size(); ++i) {
    if ((*got)[i].first != ort.names[i]) {
      return "output " + std::to_string(i) + " is '" + ort.names[i] + "' in onnxruntime, '" +
             (*got)[i].first + "' in the evaluator";
    }
    Result<Tensor> want = ReadNpy(ort.files[i]);
    if (!want.ok()) return "onnxruntime's output " + ort.names[i] + ": " + want.status().ToString();
    std::string diff =
        node_tests::Compare(*want, (*got)[i].second, kRtol, kAtol, "onnxruntime", "evaluator");
    if (!diff.empty()) return "output " + ort.names[i] + ": " + diff;
  }
  return "";
}

// The job for one node test: test_data_set_0's inputs, decoded and written as .npy under
// `dir`; `unfeedable` says why when an input has no .npy (so no onnxruntime-node) dtype.
Result<Job> NodeTestJob(const node_tests::NodeTest& test, const fs::path& dir) {
  Job job;
  job.name = test.name;
  job.model = test.dir / "model.onnx";
  job.out_dir = dir / "ort";
  fs::create_directories(dir);
  MP_ASSIGN_OR_RETURN(std::vector<NamedTensor> inputs,
                      node_tests::ReadInputs(test.dir / "test_data_set_0", test.model));
  for (size_t i = 0; i < inputs.size(); ++i) {
    const fs::path file = dir / ("input_" + std::to_string(i) + ".npy");
    const Status written = WriteNpy(inputs[i].second, file);
    if (written.code() == StatusCode::kUnsupported) job.unfeedable = written.ToString();
    if (!written.ok() && job.unfeedable.empty()) return written;
    job.input_files[inputs[i].first] = file.string();
  }
  job.inputs = std::move(inputs);
  return job;
}

TEST(OnnxOrtNodeAgreement, EvaluatorMatchesOnnxruntimeOnEveryNodeTest) {
  MP_SKIP_WITHOUT_ORT();
  if (!fs::is_directory(node_tests::kNodeTestsDir)) {
    GTEST_SKIP() << node_tests::kNodeTestsDir << " is absent (install Debian's libonnx-testdata)";
  }
  std::vector<std::string> unparsable;
  const std::vector<node_tests::NodeTest> tests = node_tests::SupportedNodeTests(&unparsable);
  for (const std::string& e : unparsable) ADD_FAILURE() << e;

  testing::TempDir tmp;
  int total = 0;
  std::vector<Job> jobs;
  std::vector<std::string> refused, disagreements;
  for (const node_tests::NodeTest& test : tests) {
    // Tests left out for wrong stored expected values still run: onnxruntime is the reference.
    auto exclusion = node_tests::Exclusions().find(test.name);
    if (exclusion != node_tests::Exclusions().end() &&
        exclusion->second.kind == node_tests::ExclusionKind::kEvaluatorCannotRun) {
      continue;
    }
    ++total;
    Result<Job> job = NodeTestJob(test, tmp.path() / std::to_string(jobs.size()));
    if (!job.ok()) {
      disagreements.push_back(test.name + ": reading test_data_set_0: " + job.status().ToString());
      continue;
    }
    if (!job->unfeedable.empty()) {
      // onnxruntime-node has no tensor type for the input's dtype (bfloat16).
      refused.push_back(test.name + ": cannot be fed: " + job->unfeedable);
      continue;
    }
    jobs.push_back(std::move(job).value());
  }
  const std::vector<OrtResult> ort = RunOrtBatch(jobs, tmp.path() / "jobs.json");
  ASSERT_EQ(ort.size(), jobs.size());

  int agree = 0;
  for (size_t k = 0; k < jobs.size(); ++k) {
    if (!ort[k].ok) {
      refused.push_back(jobs[k].name + ": " + ort[k].error);
      continue;
    }
    std::string why = EvaluatorAgrees(jobs[k], ort[k]);
    if (why.empty()) ++agree;
    if (!why.empty()) disagreements.push_back(jobs[k].name + ": " + why);
  }

  std::cout << "onnxruntime agreement: " << agree << " of " << total << " node tests agree ("
            << refused.size() << " refused by onnxruntime)\n";
  for (const std::string& r : refused) std::cout << "  refused " << r << "\n";
  std::string list;
  for (const std::string& d : disagreements) list += "\n  " + d;
  EXPECT_TRUE(disagreements.empty()) << disagreements.size() << " node tests disagree:" << list;
  EXPECT_EQ(agree + static_cast<int>(refused.size() + disagreements.size()), total);
  EXPECT_GT(agree, 0);
}

// The MLP of tests/data/mlp-onnx (Linear, GELU, LayerNorm, Linear as torch exported it).
TEST(OnnxOrtNodeAgreement, GoldenMlp) {
  MP_SKIP_WITHOUT_ORT();
  const fs::path dir = testing::SourceDir() / "tests/data/mlp-onnx";
  Result<Tensor> x = ReadNpy((dir / "x.npy").string());
  ASSERT_TRUE(x.ok()) << x.status().ToString();
  testing::TempDir tmp;
  Job job;
  job.name = "mlp-onnx";
  job.model = dir / "model.onnx";
  job.out_dir = tmp.path() / "ort";
  Result<std::unique_ptr<OnnxEvaluator>> evaluator = OnnxEvaluator::Open(job.model);
  ASSERT_TRUE(evaluator.ok()) << evaluator.status().ToString();
  ASSERT_EQ((*evaluator)->input_names().size(), 1u);
  const std::string& input = (*evaluator)->input_names()[0];
  job.inputs.emplace_back(input, *x);
  job.input_files[input] = (dir / "x.npy").string();
  const std::vector<OrtResult> ort = RunOrtBatch({job}, tmp.path() / "jobs.json");
  ASSERT_EQ(ort.size(), 1u);
  ASSERT_TRUE(ort[0].ok) << ort[0].error;
  ASSERT_EQ(ort[0].names.size(), 1u);
  EXPECT_EQ(EvaluatorAgrees(job, ort[0]), "");
}

}  // namespace
}  // namespace mp::eval
