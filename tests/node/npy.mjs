// .npy (NumPy array file) reading and writing for the onnxruntime-node oracles (ort_run.mjs,
// ort_batch.mjs): arrays travel as onnxruntime tensors. Reads format v1, v2 and v3; writes v1,
// little-endian, C order. Errors are thrown as one-line Error messages naming the file.
// Assumes a little-endian host (x64, arm64).
import fs from "node:fs";
import ort from "onnxruntime-node";

// onnxruntime tensor type <-> .npy descr (without the byte-order character) and typed array.
// float16 travels as raw Uint16Array bits; bool as one byte per element, as in NumPy.
export const TYPES = {
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
export function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 10 || buf.toString("latin1", 0, 6) !== "\x93NUMPY") {
    throw new Error(`${file}: not a .npy file`);
  }
  const major = buf[6];
  if (major < 1 || major > 3) {
    throw new Error(`${file}: unsupported .npy version ${major}.${buf[7]}`);
  }
  const lenSize = major === 1 ? 2 : 4;
  const headerLen = lenSize === 2 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const dataStart = 8 + lenSize + headerLen;
  if (dataStart > buf.length) throw new Error(`${file}: header runs past the end of the file`);
  const header = buf.toString(major === 3 ? "utf8" : "latin1", 8 + lenSize, dataStart);
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header);
  const order = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !order || !shape) throw new Error(`${file}: cannot parse header ${header.trim()}`);
  if (order[1] === "True") throw new Error(`${file}: Fortran-order arrays are not supported`);
  // '<' little-endian, '|' not applicable (1-byte types), '=' native (little-endian here).
  const m = /^([<|=])([a-z]\d+)$/.exec(descr[1]);
  const type = m && Object.keys(TYPES).find((t) => TYPES[t][0] === m[2]);
  if (!type) {
    throw new Error(
      `${file}: unsupported dtype '${descr[1]}' (need little-endian numeric or bool)`,
    );
  }
  const dims = shape[1].split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
  const [, ArrayType] = TYPES[type];
  const count = dims.reduce((a, b) => a * b, 1);
  const bytes = count * ArrayType.BYTES_PER_ELEMENT;
  if (dataStart + bytes !== buf.length) {
    const have = buf.length - dataStart;
    throw new Error(`${file}: data is ${have} bytes, shape (${dims}) ${type} needs ${bytes}`);
  }
  // Copy so the typed array starts aligned (the header length need not be a multiple of 8).
  const data = new ArrayType(Uint8Array.prototype.slice.call(buf, dataStart).buffer, 0, count);
  return new ort.Tensor(type, data, dims);
}

// Writes an ort.Tensor as .npy v1 (header padded so the data starts at a multiple of 64).
export function writeNpy(file, tensor) {
  const entry = TYPES[tensor.type];
  if (!entry) throw new Error(`output type '${tensor.type}' cannot be written as .npy`);
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
