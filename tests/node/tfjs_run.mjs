// Runs TensorFlow.js (npm @tensorflow/tfjs, pure-JS CPU backend) for modelport's oracle tests:
// builds or loads a layers model, sets its weights from a TF.js weights manifest, predicts,
// saves, or decodes a manifest with TF.js's own decoder (tf.io.decodeWeights), as one spec asks.
// Prints one JSON line on success; errors: one line on stderr, exit 1.
//
//   node tfjs_run.mjs SPEC.json
//   SPEC = {
//     "layers": [{"class": "dense", "config": {...}}, ...],  // tf.layers[class](config), in order,
//                                                             // in a tf.sequential
//     "load": "DIR/model.json",     // instead of "layers": tf.loadLayersModel on that model.json
//                                   // (its modelTopology) and its shards
//     "weights": "DIR/model.json",  // set EVERY model weight from this manifest, matched by layer
//                                   // name (first path component) and weight short name (last
//                                   // component); a missing, ambiguous or mis-shaped weight fails
//     "input": "x.npy", "output": "y.npy",  // y = model.predict(x), float32 .npy
//     "save": "DIR",                // model.save via tf.io.withSaveHandler, written as model.json
//                                   // + group1-shardKofN.bin cut every "shardBytes" (4 MiB
//                                   // by default)
//     "shardBytes": 4194304,
//     "decode": "DIR/model.json",   // no model needed: decode every weight of this manifest with
//     "dump": "OUT_DIR"             // tf.io.decodeWeights (each group's shards concatenated) and
//                                   // write OUT_DIR/<k>.bin (the tensor's values as
//                                   // dataSync() gives them, little-endian) + OUT_DIR/index.json
//                                   // [{"name", "dtype", "shape", "file"}]
//   }
//   stdout: {"weights": [{"name", "shape"}] of the model (when there is one), "decoded": N}
import fs from "node:fs";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";

function fail(message) {
  process.stderr.write(`tfjs_run: ${String(message).replace(/\s+/g, " ").trim()}\n`);
  process.exit(1);
}

// An ArrayBuffer holding exactly the bytes of a Node Buffer.
function arrayBufferOf(buf) {
  return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
}

// The parsed model.json at `jsonPath` and each group's shards concatenated into one ArrayBuffer.
// (Passing the shards as separate buffers reads zeros for some slices in tfjs-core 4.22: its
// CompositeArrayBuffer.slice misses bytes of a later shard, e.g. bytes 856.. of shards of 301 and
// 619 bytes.)
function readManifest(jsonPath) {
  let doc;
  try {
    doc = JSON.parse(fs.readFileSync(jsonPath, "utf8"));
  } catch (e) {
    throw new Error(`${jsonPath}: ${e.message}`);
  }
  if (!Array.isArray(doc.weightsManifest)) throw new Error(`${jsonPath}: no weightsManifest`);
  const dir = path.dirname(jsonPath);
  const groups = doc.weightsManifest.map((group) => ({
    specs: group.weights,
    buffers: [
      arrayBufferOf(Buffer.concat(group.paths.map((p) => fs.readFileSync(path.join(dir, p))))),
    ],
  }));
  return { doc, groups };
}

// name -> tf.Tensor for every weight of a manifest, decoded by TF.js.
function decodeManifest(jsonPath) {
  const { groups } = readManifest(jsonPath);
  const out = {};
  for (const group of groups) Object.assign(out, tf.io.decodeWeights(group.buffers, group.specs));
  return out;
}

function buildModel(spec) {
  const model = tf.sequential();
  for (const layer of spec.layers) {
    const make = tf.layers[layer.class];
    if (typeof make !== "function") throw new Error(`unknown layer class '${layer.class}'`);
    model.add(make(layer.config ?? {}));
  }
  return model;
}

async function loadModel(jsonPath) {
  const { doc, groups } = readManifest(jsonPath);
  const handler = {
    load: async () => ({
      modelTopology: doc.modelTopology,
      trainingConfig: doc.trainingConfig,
      format: doc.format,
      generatedBy: doc.generatedBy,
      convertedBy: doc.convertedBy,
      userDefinedMetadata: doc.userDefinedMetadata,
      weightSpecs: groups.flatMap((g) => g.specs),
      weightData: arrayBufferOf(Buffer.concat(groups.map((g) => Buffer.from(g.buffers[0])))),
    }),
  };
  return tf.loadLayersModel(handler);
}

// Sets every weight of `model` from the manifest, by layer name and weight short name.
function setWeights(model, jsonPath) {
  const decoded = decodeManifest(jsonPath);
  const names = Object.keys(decoded);
  for (const layer of model.layers) {
    const values = layer.weights.map((w) => {
      const parts = w.originalName.split("/");
      const short = parts[parts.length - 1];
      const hits = names.filter((n) => {
        const p = n.split("/");
        return p[0] === layer.name && p[p.length - 1] === short;
      });
      if (hits.length === 0) throw new Error(`${jsonPath}: no weight for ${layer.name}/${short}`);
      if (hits.length > 1) {
        throw new Error(`${jsonPath}: ${layer.name}/${short} matches ${hits.join(", ")}`);
      }
      const t = decoded[hits[0]];
      if (!tf.util.arraysEqual(t.shape, w.shape)) {
        throw new Error(
          `${jsonPath}: weight '${hits[0]}' has shape [${t.shape}], ` +
            `${layer.name}/${short} needs [${w.shape}]`,
        );
      }
      return t;
    });
    if (values.length) layer.setWeights(values);
  }
}

// model.save through a save handler, written in the standard layout.
async function saveModel(model, dir, shardBytes) {
  fs.mkdirSync(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const data = Array.isArray(artifacts.weightData)
        ? Buffer.concat(artifacts.weightData.map((b) => Buffer.from(b)))
        : Buffer.from(artifacts.weightData);
      const count = Math.max(1, Math.ceil(data.length / shardBytes));
      const paths = [];
      for (let k = 0; k < count; ++k) {
        const name = `group1-shard${k + 1}of${count}.bin`;
        fs.writeFileSync(path.join(dir, name), data.subarray(k * shardBytes, (k + 1) * shardBytes));
        paths.push(name);
      }
      const json = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        weightsManifest: [{ paths, weights: artifacts.weightSpecs }],
      };
      if (artifacts.trainingConfig) json.trainingConfig = artifacts.trainingConfig;
      if (artifacts.userDefinedMetadata) json.userDefinedMetadata = artifacts.userDefinedMetadata;
      fs.writeFileSync(path.join(dir, "model.json"), JSON.stringify(json));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" } };
    }),
  );
}

function dumpManifest(jsonPath, outDir) {
  const decoded = decodeManifest(jsonPath);
  fs.mkdirSync(outDir, { recursive: true });
  const index = [];
  Object.entries(decoded).forEach(([name, t], k) => {
    const file = path.join(outDir, `${k}.bin`);
    const values = t.dataSync();
    if (t.dtype === "string") {
      fs.writeFileSync(file, JSON.stringify(values.map((v) => Buffer.from(v).toString("base64"))));
    } else {
      fs.writeFileSync(file, Buffer.from(values.buffer, values.byteOffset, values.byteLength));
    }
    index.push({ name, dtype: t.dtype, shape: t.shape, file });
  });
  fs.writeFileSync(path.join(outDir, "index.json"), JSON.stringify(index));
  return index.length;
}

async function main() {
  const specPath = process.argv[2];
  if (!specPath) fail("usage: node tfjs_run.mjs SPEC.json");
  const spec = JSON.parse(fs.readFileSync(specPath, "utf8"));
  tf.enableProdMode(); // no "install tfjs-node" banner
  await tf.setBackend("cpu");
  await tf.ready();

  const result = {};
  let model = null;
  if (spec.load) model = await loadModel(spec.load);
  else if (spec.layers) model = buildModel(spec);
  if (model) {
    if (spec.weights) setWeights(model, spec.weights);
    if (spec.input) {
      const { readNpy, writeNpy } = await import("./npy.mjs");
      const x = readNpy(spec.input);
      const y = model.predict(tf.tensor(x.data, x.dims.map(Number), "float32"));
      if (!spec.output) throw new Error("\"input\" needs \"output\"");
      writeNpy(spec.output, { type: "float32", data: y.dataSync(), dims: y.shape });
    }
    if (spec.save) await saveModel(model, spec.save, spec.shardBytes ?? 4 * 1024 * 1024);
    result.weights = model.weights.map((w) => ({ name: w.originalName, shape: w.shape }));
  } else if (spec.weights || spec.input || spec.save) {
    throw new Error("\"weights\", \"input\" and \"save\" need \"layers\" or \"load\"");
  }
  if (spec.decode) {
    if (!spec.dump) throw new Error("\"decode\" needs \"dump\"");
    result.decoded = dumpManifest(spec.decode, spec.dump);
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}

try {
  await main();
} catch (e) {
  fail(e && e.message ? e.message : e);
}
