// The TorchScript inference backend: loads and runs a torch.jit.save archive with libtorch's
// C++ API (Debian's libtorch-dev 1.13), CPU only. Optional at build time: with CMake's
// MODELPORT_WITH_LIBTORCH (AUTO finds Torch), torchscript_libtorch.cc becomes the plugin
// libmodelport_torchscript.so, which torchscript.cc loads on first use; without it every call
// answers Unsupported.
//
// Loading TorchScript compiles and runs code stored in the file (its code/ folder and the
// classes its pickles name); callers use this only when the user asked for it
// (--allow-torchscript), never while scanning or converting.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "modelport/core/status.h"
#include "modelport/validate/eval_tensor.h"

namespace mp::validate {

/// Where the libtorch plugin would be loaded from (without loading it): the path, or "" when
/// modelport was built without libtorch or the plugin file is missing.
std::string TorchScriptPluginPath();

/// True when the libtorch plugin loads (modelport was built with libtorch and the plugin is
/// beside the executable or where the build put it).
bool TorchScriptAvailable();

/// Loads the TorchScript archive at `path` with libtorch (CPU) — this EXECUTES code stored in
/// the file, so callers run it only on the user's explicit request (--allow-torchscript) — and
/// returns a one-line summary ("forward(x) · 12 parameters, 3 buffers"). Unsupported when built
/// without libtorch; InvalidArgument/Corrupt with libtorch's message (one line) when it does not
/// load.
Result<std::string> LoadTorchScript(const std::string& path);

/// Loads and runs forward(inputs...) with the inputs in the given order (names are for
/// messages); outputs: one tensor -> {"output_0"}, a tuple/list of tensors -> output_0..N-1 in
/// order (nested tuples flattened depth-first); anything else Unsupported naming its type.
/// Tensors go in and out as eval::Tensor (f32 f64 i64 i32 bool). Runs under torch::NoGradGuard,
/// in eval mode.
Result<std::vector<std::pair<std::string, eval::Tensor>>> RunTorchScript(
    const std::string& path, const std::vector<std::pair<std::string, eval::Tensor>>& inputs);

}  // namespace mp::validate
