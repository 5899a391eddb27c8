// Runs many ONNX models with onnxruntime (onnxruntime-node, CPU) in one node process, for tests
// that compare a whole directory of models (starting node once per model is too slow). The job
// file is a JSON array:
//
//   [{"model": "a/model.onnx", "inputs": {"x": "x.npy", ...}, "out_dir": "out/0"}, ...]
//
// Each job's outputs are written as OUT_DIR/<index>.npy, index being the output's position in
// the session's output order (.npy v1, little-endian, C order), and one JSON line per job goes
// to stdout, in job order:
//
//   {"model": "...", "ok": true, "outputs": [{"name", "file", "dtype", "shape"}]}
//   {"model": "...", "ok": false, "error": "one line"}
//
// A model onnxruntime refuses (or fails to run) is reported as ok:false and the next job runs.
// Only a job file that cannot be read is fatal: one line on stderr, exit 1.
//
//   node ort_batch.mjs JOBS.json
import fs from "node:fs";
import path from "node:path";
import ort from "onnxruntime-node";

import { readNpy, writeNpy } from "./npy.mjs";

function oneLine(message) {
  return String(message).replace(/\s+/g, " ").trim();
}

function fail(message) {
  process.stderr.write(`ort_batch: ${oneLine(message)}\n`);
  process.exit(1);
}

const [jobFile, ...extra] = process.argv.slice(2);
if (!jobFile || extra.length) fail("usage: node ort_batch.mjs JOBS.json");

let jobs;
try {
  jobs = JSON.parse(fs.readFileSync(jobFile, "utf8"));
} catch (e) {
  fail(`${jobFile}: ${e && e.message ? e.message : e}`);
}
if (!Array.isArray(jobs)) fail(`${jobFile}: not a JSON array of jobs`);
jobs.forEach((job, i) => {
  const ok =
    job && typeof job.model === "string" && typeof job.out_dir === "string" &&
    (job.inputs === undefined || (typeof job.inputs === "object" && !Array.isArray(job.inputs)));
  if (!ok) fail(`${jobFile}: job ${i} is not {"model", "inputs", "out_dir"}`);
});

async function runJob(job) {
  // A path (not bytes), so external data files resolve relative to the model's folder.
  const session = await ort.InferenceSession.create(path.resolve(job.model), {
    executionProviders: ["cpu"],
    intraOpNumThreads: 1,
    logSeverityLevel: 3,
  });
  try {
    const feeds = {};
    for (const [name, file] of Object.entries(job.inputs ?? {})) {
      if (!session.inputNames.includes(name)) {
        throw new Error(`'${name}' is not an input of the model (${session.inputNames})`);
      }
      feeds[name] = readNpy(file);
      // onnxruntime's own mismatch message does not name the input.
      const want = (session.inputMetadata ?? []).find((m) => m.name === name)?.type;
      if (want && want !== feeds[name].type) {
        const have = feeds[name].type;
        throw new Error(`input '${name}': ${file} holds ${have}, the model takes ${want}`);
      }
    }
    const missing = session.inputNames.filter((n) => !(n in feeds));
    if (missing.length) throw new Error(`no .npy given for input(s) ${missing.join(", ")}`);

    const results = await session.run(feeds);
    fs.mkdirSync(job.out_dir, { recursive: true });
    return session.outputNames.map((name, index) => {
      const tensor = results[name];
      const file = path.join(job.out_dir, `${index}.npy`);
      writeNpy(file, tensor);
      return { name, file, dtype: tensor.type, shape: tensor.dims.map(Number) };
    });
  } finally {
    await session.release();
  }
}

for (const job of jobs) {
  let line;
  try {
    line = { model: job.model, ok: true, outputs: await runJob(job) };
  } catch (e) {
    line = { model: job.model, ok: false, error: oneLine(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(line) + "\n");
}
