// libFuzzer target for the ONNX reference evaluator (validate/onnx_eval.h): the input bytes are
// an ONNX model; one that opens and prepares is run on zero-filled inputs shaped from its graph
// inputs (symbolic or large dimensions become small ones), with every tensor limited to 64 MiB.
// Refusing the model or the run with a Status is the expected outcome; a crash, sanitizer
// report, leak or timeout is a bug. Seeds: corpus/onnx_eval (a few node tests and the golden
// MLP). The model's folder is created and removed around each input.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "modelport/formats/format.h"
#include "modelport/formats/onnx/onnx.h"
#include "modelport/validate/onnx_eval.h"

namespace {

const std::string& ModelPath() {
  static const std::string path = mp::fuzz::ScratchPath(".eval.onnx");
  return path;
}

// Zero-filled inputs for the graph, or nothing when an input's type is not one the evaluator
// computes in.
bool MakeInputs(const mp::onnx::GraphInfo& graph, std::vector<mp::eval::NamedTensor>& inputs) {
  for (const mp::onnx::ValueInfo& in : graph.inputs) {
    auto dtype = mp::ParseDType(in.type);
    if (!dtype.has_value()) return false;
    std::vector<int64_t> shape;
    int64_t elements = 1;
    for (const std::string& d : in.dims) {
      int64_t v = 1;
      if (!d.empty() && d.size() < 4 && d.find_first_not_of("0123456789") == std::string::npos) {
        v = std::stoll(d);
      }
      v = std::min<int64_t>(v, 16);
      shape.push_back(v);
      elements *= v;
    }
    if (elements > 4096) return false;
    inputs.emplace_back(in.name, mp::eval::Tensor::Zeros(*dtype, shape));
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mp::fuzz::WriteScratch(ModelPath(), data, size);
  auto source = mp::OpenModel(ModelPath());
  const auto* onnx =
      source.has_value() ? dynamic_cast<const mp::onnx::OnnxSource*>(source->get()) : nullptr;
  if (onnx != nullptr) {
    auto evaluator = mp::eval::OnnxEvaluator::FromSource(*onnx);
    std::vector<mp::eval::NamedTensor> inputs;
    if (evaluator.has_value() && MakeInputs(onnx->graph_info(), inputs)) {
      (*evaluator)->set_max_tensor_bytes(64 << 20);
      auto outputs = (*evaluator)->Run(inputs);
      if (outputs.has_value() && outputs->size() != (*evaluator)->output_names().size()) {
        std::abort();  // Run must return one tensor per graph output
      }
    }
  }
  std::remove(ModelPath().c_str());
  return 0;
}
