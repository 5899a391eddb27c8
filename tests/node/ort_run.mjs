// Runs an ONNX model with onnxruntime (onnxruntime-node, CPU) on inputs read from .npy files and
// writes every output as OUT_DIR/<output name>.npy (.npy v1, little-endian, C order; characters
// of the name outside [A-Za-z0-9._-] become '_'). Prints one JSON line: {"outputs": [{"name",
// "file", "dtype", "shape"}]}. Used by tests/ort_oracle_test.cc as an independent runtime.
// External data files resolve beside the model (onnxruntime reads them relative to its path).
// The .npy helpers live in npy.mjs (shared with ort_batch.mjs); their errors land in the catch.
// Errors: one line on stderr, exit 1. Assumes a little-endian host (x64, arm64).
//
//   node ort_run.mjs MODEL.onnx OUT_DIR [NAME=INPUT.npy ...]
//   node ort_run.mjs MODEL.onnx OUT_DIR INPUT.npy        (models with one input)
import fs from "node:fs";
import path from "node:path";
import ort from "onnxruntime-node";

import { readNpy, writeNpy } from "./npy.mjs";

function fail(message) {
  process.stderr.write(`ort_run: ${String(message).replace(/\s+/g, " ").trim()}\n`);
  process.exit(1);
}

const [model, outDir, ...args] = process.argv.slice(2);
if (!model || !outDir) fail("usage: node ort_run.mjs MODEL.onnx OUT_DIR [NAME=INPUT.npy ...]");

try {
  // A path (not bytes), so external data files resolve relative to the model's folder.
  const session = await ort.InferenceSession.create(path.resolve(model), {
    executionProviders: ["cpu"],
  });
  const feeds = {};
  for (const arg of args) {
    const eq = arg.indexOf("=");
    let name = eq > 0 ? arg.slice(0, eq) : "";
    let file = arg.slice(eq + 1);
    if (!session.inputNames.includes(name)) {
      // A bare INPUT.npy (which may itself contain '=') is fine when the model has one input.
      if (session.inputNames.length !== 1 || args.length !== 1) {
        fail(`'${arg}' is not NAME=INPUT.npy for an input of ${model} (${session.inputNames})`);
      }
      [name, file] = [session.inputNames[0], arg];
    }
    if (name in feeds) fail(`input '${name}' given twice`);
    feeds[name] = readNpy(file);
    // onnxruntime's own mismatch message does not name the input.
    const want = (session.inputMetadata ?? []).find((m) => m.name === name)?.type;
    if (want && want !== feeds[name].type) {
      fail(`input '${name}': ${file} holds ${feeds[name].type}, the model takes ${want}`);
    }
  }
  const missing = session.inputNames.filter((n) => !(n in feeds));
  if (missing.length) fail(`${model}: no .npy given for input(s) ${missing.join(", ")}`);

  const results = await session.run(feeds);
  fs.mkdirSync(outDir, { recursive: true });
  const outputs = [];
  const used = new Set();
  for (const name of session.outputNames) {
    const tensor = results[name];
    const base = name.replace(/[^A-Za-z0-9._-]/g, "_") + ".npy";
    if (used.has(base)) fail(`outputs collide on file name ${base}`);
    used.add(base);
    const file = path.join(outDir, base);
    writeNpy(file, tensor);
    outputs.push({ name, file, dtype: tensor.type, shape: tensor.dims.map(Number) });
  }
  process.stdout.write(JSON.stringify({ outputs }) + "\n");
} catch (e) {
  fail(e && e.message ? e.message : e);
}
