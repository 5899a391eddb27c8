// Loads the TorchScript plugin (torchscript_libtorch.cc, built as libmodelport_torchscript.so
// when CMake finds libtorch) on first use. libtorch pulls in hundreds of shared libraries, so
// linking it would cost every run of the tool and every test process most of a second; loaded
// this way it costs only the runs that ask for TorchScript.
//
// The plugin is looked for beside the running executable, then where the build wrote it
// (MODELPORT_TORCHSCRIPT_PLUGIN, a CMake-generated path; empty when built without libtorch).
#include "modelport/validate/torchscript.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <string>

#ifndef MODELPORT_TORCHSCRIPT_PLUGIN
#define MODELPORT_TORCHSCRIPT_PLUGIN ""
#endif

// Sanitizer builds (the asan-ubsan test run) check for leaks before libtorch loads; see Open().
#if defined(__SANITIZE_ADDRESS__)
#define MP_LEAK_CHECK_BEFORE_LIBTORCH 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MP_LEAK_CHECK_BEFORE_LIBTORCH 1
#endif
#endif
#ifdef MP_LEAK_CHECK_BEFORE_LIBTORCH
#include <sanitizer/lsan_interface.h>
#endif

namespace mp::validate {
namespace {

using NamedTensors = std::vector<std::pair<std::string, eval::Tensor>>;
using LoadFn = void (*)(const std::string*, Result<std::string>*);
using RunFn = void (*)(const std::string*, const NamedTensors*, Result<NamedTensors>*);

constexpr char kPluginName[] = "libmodelport_torchscript.so";

struct Plugin {
  LoadFn load = nullptr;
  RunFn run = nullptr;
  std::string error;  // why it is not there
};

std::string BesideExecutable() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : (exe.parent_path() / kPluginName).string();
}

Plugin Open() {
  Plugin p;
  const std::string built = MODELPORT_TORCHSCRIPT_PLUGIN;
  if (built.empty()) {
    p.error = "modelport was built without libtorch (install libtorch-dev and rebuild)";
    return p;
  }
  std::string path = TorchScriptPluginPath();
  if (path.empty()) path = built;  // dlopen's error then says what is missing
#ifdef MP_LEAK_CHECK_BEFORE_LIBTORCH
  // LeakSanitizer's check at exit stops every thread of the process under ptrace; with
  // libtorch's thread pools alive its tracer has crashed ("Tracer caught signal 11"), failing a
  // validate run that had done its work. So the check runs now, before libtorch starts a thread,
  // and not again at exit: leaks in what follows go unchecked in processes that load libtorch.
  __lsan_do_leak_check();
#endif
  // Never closed: libtorch does not support being unloaded.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    p.error = "cannot load the TorchScript backend " + path + ": " + (why ? why : "dlopen failed");
    return p;
  }
  p.load = reinterpret_cast<LoadFn>(dlsym(handle, "mp_torchscript_load"));
  p.run = reinterpret_cast<RunFn>(dlsym(handle, "mp_torchscript_run"));
  if (p.load == nullptr || p.run == nullptr) {
    p.error = path + " is not modelport's TorchScript backend (its entry points are missing)";
  }
  return p;
}

const Plugin& GetPlugin() {
  static const Plugin plugin = Open();
  return plugin;
}

}  // namespace

std::string TorchScriptPluginPath() {
  const std::string built = MODELPORT_TORCHSCRIPT_PLUGIN;
  if (built.empty()) return "";
  for (const std::string& path : {BesideExecutable(), built}) {
    if (!path.empty() && access(path.c_str(), F_OK) == 0) return path;
  }
  return "";
}

bool TorchScriptAvailable() { return GetPlugin().error.empty(); }

Result<std::string> LoadTorchScript(const std::string& path) {
  const Plugin& p = GetPlugin();
  if (!p.error.empty()) return Unsupported(p.error);
  Result<std::string> out = Internal("the TorchScript backend returned nothing");
  p.load(&path, &out);
  return out;
}

Result<NamedTensors> RunTorchScript(const std::string& path, const NamedTensors& inputs) {
  const Plugin& p = GetPlugin();
  if (!p.error.empty()) return Unsupported(p.error);
  Result<NamedTensors> out = Internal("the TorchScript backend returned nothing");
  p.run(&path, &inputs, &out);
  return out;
}

}  // namespace mp::validate
