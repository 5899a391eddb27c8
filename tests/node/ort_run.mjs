// Runs an ONNX model with onnxruntime (onnxruntime-node, CPU) on inputs read from .npy files and
// writes every output as OUT_DIR/<output name>.npy (.npy v1, little-endian, C order; characters
// of the name outside [A-Za-z0-9._-] become '_'). Prints one JSON line: {"outputs": [{"name",
// "file", "dtype", "shape"}]}. Used by tests/ort_oracle_test.cc as an independent runtime.
// External data files resolve beside the model (onnxruntime reads them relative to its path).
// Errors: one line on stderr, exit 1. Assumes a little-endian host (x64, arm64).
//
//   node ort_run.mjs MODEL.onnx OUT_DIR [NAME=INPUT.npy ...]
//   node ort_run.mjs MODEL.onnx OUT_DIR INPUT.npy        (models with one input)
import fs from "node:fs";
import path from "node:path";
import ort from "onnxruntime-node";

function fail(message) {
  process.stderr.write(`ort_run: ${String(message).replace(/\s+/g, " ").trim()}\n`);
  process.exit(1);
}

// onnxruntime tensor type <-> .npy descr (without the byte-order character) and typed array.
// float16 travels as raw Uint16Array bits; bool as one byte per element, as in NumPy.
const TYPES = {
  float32: ["f4", Float32Array],
  float64: ["f8", Float64Array],
  float16: ["f2", Uint16Array],
  int64: ["i8", BigInt64Array],
  int32: ["i4", Int32Array],
  int16: ["i2", Int16Array],
  int8: ["i1", Int8Array],
  uint64: ["u8", BigUint64Array],
  uint32: ["u4", Uint32Array],
  uint16: ["u2", Uint16Array],
  uint8: ["u1", Uint8Array],
  bool: ["b1", Uint8Array],
};

// Parses a .npy file (format v1, v2 or v3) into an ort.Tensor.
function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 10 || buf.toString("latin1", 0, 6) !== "\x93NUMPY") {
    fail(`${file}: not a .npy file`);
  }
  const major = buf[6];
  if (major < 1 || major > 3) fail(`${file}: unsupported .npy version ${major}.${buf[7]}`);
  const lenSize = major === 1 ? 2 : 4;
  const headerLen = lenSize === 2 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const dataStart = 8 + lenSize + headerLen;
  if (dataStart > buf.length) fail(`${file}: header runs past the end of the file`);
  const header = buf.toString(major === 3 ? "utf8" : "latin1", 8 + lenSize, dataStart);
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header);
  const order = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !order || !shape) fail(`${file}: cannot parse header ${header.trim()}`);
  if (order[1] === "True") fail(`${file}: Fortran-order arrays are not supported`);
  // '<' little-endian, '|' not applicable (1-byte types), '=' native (little-endian here).
  const m = /^([<|=])([a-z]\d+)$/.exec(descr[1]);
  const type = m && Object.keys(TYPES).find((t) => TYPES[t][0] === m[2]);
  if (!type) fail(`${file}: unsupported dtype '${descr[1]}' (need little-endian numeric or bool)`);
  const dims = shape[1].split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
  const [, ArrayType] = TYPES[type];
  const count = dims.reduce((a, b) => a * b, 1);
  const bytes = count * ArrayType.BYTES_PER_ELEMENT;
  if (dataStart + bytes !== buf.length) {
    const have = buf.length - dataStart;
    fail(`${file}: data is ${have} bytes, shape (${dims}) ${type} needs ${bytes}`);
  }
  // Copy so the typed array starts aligned (the header length need not be a multiple of 8).
  const data = new ArrayType(Uint8Array.prototype.slice.call(buf, dataStart).buffer, 0, count);
  return new ort.Tensor(type, data, dims);
}

// Writes an ort.Tensor as .npy v1 (header padded so the data starts at a multiple of 64).
function writeNpy(file, tensor) {
  const entry = TYPES[tensor.type];
  if (!entry) fail(`output type '${tensor.type}' cannot be written as .npy`);
  const byteOrder = entry[0].endsWith("1") ? "|" : "<";
  const dims = tensor.dims.map(Number);
  const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(", ")})`;
  let header = `{'descr': '${byteOrder}${entry[0]}', 'fortran_order': False, 'shape': ${shape}, }`;
  header += " ".repeat(63 - ((10 + header.length) % 64)) + "\n";
  const prefix = Buffer.alloc(10);
  prefix.write("\x93NUMPY\x01\x00", 0, "latin1");
  prefix.writeUInt16LE(header.length, 8);
  const data = tensor.data;
  const raw = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  fs.writeFileSync(file, Buffer.concat([prefix, Buffer.from(header, "latin1"), raw]));
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
