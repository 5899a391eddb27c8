// `modelport`: inspect, convert, verify, diff, hash and scan model files, rewrite ONNX models and
// keep versions in a registry. Each subcommand lives in the file named after it; exit codes and
// shared output helpers are in cli_util.h.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "modelport/cli/cli_util.h"
#include "modelport/validate/torchscript.h"

// MODELPORT_VERSION comes from CMake (the project version).

namespace {

int Main(int argc, char** argv) {
  using namespace mp::cli;
  CLI::App app(
      "modelport: inspect, convert, quantize, verify, validate, diff, hash and scan ML model files "
      "without executing anything they contain (unless asked: --allow-torchscript).",
      "modelport");
  // The optional backends, found without loading them.
  const std::string torchscript = mp::validate::TorchScriptPluginPath();
  app.set_version_flag("--version",
                       std::string("modelport " MODELPORT_VERSION) +
                           "\nONNX inference: built-in reference evaluator\n" +
                           "TorchScript inference: " +
                           (torchscript.empty() ? "not available (built without libtorch, or its "
                                                  "plugin is missing)"
                                                : "libtorch plugin " + torchscript));
  app.footer(std::string(ExitCodeHelp()));
  app.require_subcommand(1);
  app.fallthrough(false);

  const std::vector<Command> commands = {AddInspectCommand(app),
                                         AddConvertCommand(app),
                                         AddVerifyCommand(app),
                                         AddDiffCommand(app),
                                         AddHashCommand(app),
                                         AddScanCommand(app),
                                         AddOnnxCommand(app),
                                         AddTfCommand(app),
                                         AddRegistryCommand(app),
                                         AddValidateCommand(app),
                                         AddQuantizeCommand(app, argc, argv),
                                         AddDequantizeCommand(app, argc, argv)};
  // A subcommand's own footer (scan's verdicts and exit codes) comes before the shared table.
  for (const Command& c : commands) {
    const std::string own = c.app->get_footer();
    c.app->footer((own.empty() ? "" : own + "\n\n") + std::string(ExitCodeHelp()));
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    PrintError(std::string(e.what()) + " (see 'modelport --help')");
    return kExitUsage;
  }
  for (const Command& c : commands) {
    if (c.app->parsed()) return c.run();
  }
  PrintError("no subcommand given (see 'modelport --help')");
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::bad_alloc&) {
    mp::cli::PrintError("out of memory");
  } catch (const std::exception& e) {
    mp::cli::PrintError(std::string("internal error: ") + e.what());
  } catch (...) {
    mp::cli::PrintError("internal error: unknown exception");
  }
  return mp::cli::kExitInternal;
}
