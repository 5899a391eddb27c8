// The TorchScript backend with libtorch: built, when CMake finds Torch, as the plugin
// libmodelport_torchscript.so that torchscript.cc loads on first use (so that only a run that
// asks for TorchScript pays for loading libtorch's hundreds of shared libraries). Its entry
// points are the two extern "C" functions at the end; everything else stays hidden.
//
// libtorch reports every failure by throwing (c10::Error and its subclasses, torch::jit's
// exceptions, std::exception from the standard library it uses): each public function here
// catches everything at its boundary and returns a Status.
//
// Only the headers needed are included (not torch/script.h or ATen/Functions.h, which pull in
// every operator's declaration): they make up nearly all of this file's compile time. Beware
// ATen/Functions.h before import.h: clang 14 in C++20 mode rejects that order (std::vector of
// an incomplete c10::IValue).
#include <ATen/Parallel.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/serialization/import.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "modelport/core/file.h"
#include "modelport/core/status.h"
#include "modelport/formats/zip/zip.h"
#include "modelport/validate/eval_tensor.h"

namespace mp::validate {
namespace {

// libtorch's messages run over several lines: the error, then a C++ or TorchScript backtrace.
// An error raised while the interpreter runs TorchScript code instead starts with this line and
// ends with the Python-style "RuntimeError: ..." line that says what went wrong.
constexpr std::string_view kInterpreterPreamble =
    "The following operation failed in the TorchScript interpreter.";

std::string_view Trim(std::string_view s) {
  const size_t begin = s.find_first_not_of(" \t\r");
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(" \t\r") - begin + 1);
}

/// Where a TorchScript compile error points, from its `File "code/...py", line N` line:
/// " (code/...py, line N)"; empty when no line says.
std::string SourceLocation(const std::vector<std::string_view>& lines) {
  constexpr std::string_view kFile = "File \"";
  for (std::string_view line : lines) {
    const size_t at = line.find(kFile);
    if (at == std::string_view::npos) continue;
    std::string_view rest = line.substr(at + kFile.size());
    const size_t quote = rest.find('"');
    if (quote == std::string_view::npos) continue;
    std::string_view where = rest.substr(quote + 1);  // ", line N"
    return " (" + std::string(rest.substr(0, quote)) + std::string(Trim(where)) + ")";
  }
  return "";
}

/// One line of a libtorch message: the first non-empty line (with the code location when it is
/// a compile error), or for an interpreter error the last one. Cut at 500 bytes so a message
/// quoting a whole tensor stays readable.
std::string OneLine(std::string_view message) {
  std::vector<std::string_view> lines;
  while (!message.empty()) {
    const size_t end = message.find('\n');
    std::string_view line = Trim(message.substr(0, end));
    if (!line.empty()) lines.push_back(line);
    if (end == std::string_view::npos) break;
    message.remove_prefix(end + 1);
  }
  if (lines.empty()) return "(libtorch gave no message)";
  std::string pick(lines.front());
  if (pick == kInterpreterPreamble) {
    pick = lines.back();
  } else if (pick.ends_with(" here:")) {
    pick = pick.substr(0, pick.size() - 6) + SourceLocation(lines);
  }
  constexpr size_t kMaxBytes = 500;
  if (pick.size() > kMaxBytes) pick = pick.substr(0, kMaxBytes) + "...";
  return pick;
}

/// The message of the exception being handled, one line (call inside a catch block only).
std::string CurrentExceptionMessage() {
  try {
    throw;
  } catch (const c10::Error& e) {
    return OneLine(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return OneLine(e.what());
  } catch (...) {
    return "unknown exception";
  }
}

/// Checks with modelport's hardened zip reader that `path` is a TorchScript archive before
/// libtorch sees it: libtorch's own reader is not meant for hostile input, and a torch.save
/// checkpoint (a zip too) deserves a clearer refusal than libtorch's "constants.pkl: file not
/// found".
Status CheckArchive(const std::string& path) {
  MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path));
  auto reader = zip::Reader::Open(std::move(file));
  if (!reader.ok()) {
    // The zip reader's messages start with the path; ours does too, once.
    std::string_view why = reader.error().message();
    if (why.starts_with(path + ": ")) why.remove_prefix(path.size() + 2);
    return Status(
        reader.error().code(),
        path + ": not a TorchScript archive (torch.jit.save writes a zip): " + std::string(why));
  }
  bool has_data_pkl = false;
  bool has_constants = false;
  bool has_code = false;
  for (const zip::Entry& e : (*reader)->entries()) {
    // torch.jit.save puts every record under one top folder: <top>/data.pkl, <top>/code/...
    const size_t slash = e.name.find('/');
    if (slash == std::string::npos) continue;
    const std::string_view rest = std::string_view(e.name).substr(slash + 1);
    has_data_pkl |= rest == "data.pkl";
    has_constants |= rest == "constants.pkl";
    has_code |= rest.starts_with("code/");
  }
  if (has_data_pkl && has_constants && has_code) return Status::Ok();
  if (has_data_pkl) {
    return InvalidArgument(path +
                           ": a torch.save checkpoint, not a TorchScript archive: it holds "
                           "tensors but no code/ or constants.pkl, so there is no forward to run");
  }
  return Corrupt(path + ": not a TorchScript archive: a zip without " +
                 (has_code ? "<top>/data.pkl" : "<top>/data.pkl, constants.pkl or code/"));
}

/// Loads `path` on the CPU, in eval mode. Corrupt with libtorch's message when it does not load.
Result<torch::jit::Module> Load(const std::string& path) {
  MP_RETURN_IF_ERROR(CheckArchive(path));
  try {
    torch::jit::Module module = torch::jit::load(path, c10::Device(c10::kCPU));
    module.eval();
    return module;
  } catch (...) {
    return Corrupt(path + ": libtorch could not load it: " + CurrentExceptionMessage());
  }
}

/// The inputs of forward as its schema names them (without self), and how many have no default.
struct ForwardSignature {
  std::vector<std::string> names;
  size_t required = 0;
};

Result<ForwardSignature> Signature(const torch::jit::Module& module, const std::string& path) {
  std::optional<torch::jit::Method> forward;
  if (auto found = module.find_method("forward")) forward.emplace(*found);
  if (!forward) return InvalidArgument(path + ": the TorchScript module has no forward method");
  ForwardSignature sig;
  const auto& args = forward->function().getSchema().arguments();
  for (size_t i = 1; i < args.size(); ++i) {  // args[0] is self
    sig.names.push_back(args[i].name());
    if (!args[i].default_value()) sig.required = sig.names.size();
  }
  return sig;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

std::optional<c10::ScalarType> TorchType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return c10::kFloat;
    case DType::kF64:
      return c10::kDouble;
    case DType::kI64:
      return c10::kLong;
    case DType::kI32:
      return c10::kInt;
    case DType::kBool:
      return c10::kBool;
    default:
      return std::nullopt;
  }
}

std::optional<DType> ModelportType(c10::ScalarType type) {
  switch (type) {
    case c10::kFloat:
      return DType::kF32;
    case c10::kDouble:
      return DType::kF64;
    case c10::kLong:
      return DType::kI64;
    case c10::kInt:
      return DType::kI32;
    case c10::kBool:
      return DType::kBool;
    default:
      return std::nullopt;
  }
}

/// A copy of `t` as a libtorch tensor. InvalidArgument when its dtype is not one of the five or
/// its bytes do not match its shape.
Result<at::Tensor> ToTorch(const std::string& name, const eval::Tensor& t) {
  const std::optional<c10::ScalarType> type = TorchType(t.dtype);
  if (!type) {
    return InvalidArgument("input '" + name + "': element type " + std::string(DTypeName(t.dtype)) +
                           " is not one the TorchScript backend passes (f32, f64, i64, i32, bool)");
  }
  uint64_t count = 1;
  for (int64_t d : t.shape) {
    if (d < 0 || (d > 0 && count > (uint64_t{1} << 40) / static_cast<uint64_t>(d))) {
      return InvalidArgument("input '" + name + "': bad shape (a negative or huge dimension)");
    }
    count *= static_cast<uint64_t>(d);
  }
  if (t.bytes.size() != count * ElementSize(t.dtype)) {
    return InvalidArgument("input '" + name + "': " + std::to_string(t.bytes.size()) +
                           " bytes for " + std::to_string(count) + " elements of " +
                           std::string(DTypeName(t.dtype)));
  }
  // from_blob does not own the bytes (and needs a non-const pointer, though nothing writes
  // through it): clone makes the tensor libtorch runs with its own.
  void* data = const_cast<uint8_t*>(t.bytes.data());
  return at::from_blob(data, c10::IntArrayRef(t.shape), at::TensorOptions().dtype(*type)).clone();
}

Result<eval::Tensor> FromTorch(const std::string& name, const at::Tensor& tensor) {
  const std::optional<DType> dtype = ModelportType(tensor.scalar_type());
  if (!dtype) {
    return Unsupported(name + ": element type " + std::string(c10::toString(tensor.scalar_type())) +
                       " is not one the TorchScript backend returns (f32, f64, i64, i32, bool)");
  }
  const at::Tensor dense = tensor.to(c10::kCPU).contiguous();
  eval::Tensor out;
  out.dtype = *dtype;
  out.shape.assign(dense.sizes().begin(), dense.sizes().end());
  const size_t bytes = dense.numel() * dense.element_size();
  out.bytes.resize(bytes);
  if (bytes > 0) std::memcpy(out.bytes.data(), dense.data_ptr(), bytes);
  return out;
}

/// Appends the tensors of `value` to `out` in order, tuples and lists flattened depth-first.
Status Flatten(const c10::IValue& value, std::vector<std::pair<std::string, eval::Tensor>>* out) {
  if (value.isTensor()) {
    std::string name = "output_" + std::to_string(out->size());
    MP_ASSIGN_OR_RETURN(eval::Tensor t, FromTorch(name, value.toTensor()));
    out->emplace_back(std::move(name), std::move(t));
    return Status::Ok();
  }
  if (value.isTuple()) {
    for (const c10::IValue& e : value.toTupleRef().elements()) MP_RETURN_IF_ERROR(Flatten(e, out));
    return Status::Ok();
  }
  if (value.isList()) {
    for (const c10::IValue& e : value.toListRef()) MP_RETURN_IF_ERROR(Flatten(e, out));
    return Status::Ok();
  }
  return Unsupported("output_" + std::to_string(out->size()) + " is a " + value.type()->str() +
                     ": the TorchScript backend compares tensors and tuples/lists of tensors");
}

Result<std::string> Summarize(const std::string& path) {
  try {
    MP_ASSIGN_OR_RETURN(torch::jit::Module module, Load(path));
    MP_ASSIGN_OR_RETURN(ForwardSignature sig, Signature(module, path));
    return "forward(" + JoinNames(sig.names) + ") · " + std::to_string(module.parameters().size()) +
           " parameters, " + std::to_string(module.buffers().size()) + " buffers";
  } catch (...) {
    return Corrupt(path + ": " + CurrentExceptionMessage());
  }
}

Result<std::vector<std::pair<std::string, eval::Tensor>>> Run(
    const std::string& path, const std::vector<std::pair<std::string, eval::Tensor>>& inputs) {
  try {
    MP_ASSIGN_OR_RETURN(torch::jit::Module module, Load(path));
    MP_ASSIGN_OR_RETURN(ForwardSignature sig, Signature(module, path));
    std::vector<std::string> given;
    for (const auto& [name, tensor] : inputs) given.push_back(name);
    if (inputs.size() < sig.required || inputs.size() > sig.names.size()) {
      const std::string takes =
          sig.required == sig.names.size()
              ? std::to_string(sig.required)
              : std::to_string(sig.required) + " to " + std::to_string(sig.names.size());
      return InvalidArgument(path + ": forward(" + JoinNames(sig.names) + ") takes " + takes +
                             (takes == "1" ? " input" : " inputs") + "; got " +
                             std::to_string(inputs.size()) +
                             (inputs.empty() ? "" : " (" + JoinNames(given) + ")"));
    }
    c10::NoGradGuard no_grad;
    // One thread: outputs do not depend on the machine's core count, and no thread pool
    // outlives the run (LeakSanitizer cannot stop threads it may not ptrace).
    at::set_num_threads(1);
    std::vector<c10::IValue> args;
    for (const auto& [name, tensor] : inputs) {
      Result<at::Tensor> t = ToTorch(name, tensor);
      if (!t.ok()) return t.error().WithContext(path);
      args.emplace_back(std::move(t).value());
    }
    c10::IValue result;
    try {
      result = module.forward(std::move(args));
    } catch (...) {
      return InvalidArgument(path + ": forward(" + JoinNames(given) +
                             ") failed: " + CurrentExceptionMessage());
    }
    std::vector<std::pair<std::string, eval::Tensor>> outputs;
    Status flat = Flatten(result, &outputs);
    if (!flat.ok()) return flat.WithContext(path);
    if (outputs.empty()) {
      return Unsupported(path + ": forward returned " + result.type()->str() +
                         " with no tensors in it: nothing to compare");
    }
    return outputs;
  } catch (...) {
    return Internal(path + ": " + CurrentExceptionMessage());
  }
}

}  // namespace
}  // namespace mp::validate

// The plugin's entry points (torchscript.h's contract; torchscript.cc calls them).
extern "C" __attribute__((visibility("default"))) void mp_torchscript_load(
    const std::string* path, mp::Result<std::string>* out) {
  *out = mp::validate::Summarize(*path);
}

extern "C" __attribute__((visibility("default"))) void mp_torchscript_run(
    const std::string* path, const std::vector<std::pair<std::string, mp::eval::Tensor>>* inputs,
    mp::Result<std::vector<std::pair<std::string, mp::eval::Tensor>>>* out) {
  *out = mp::validate::Run(*path, *inputs);
}
