// Reads a GGUF file with Hugging Face's independent parser (@huggingface/gguf) and prints what
// it found as one JSON document: {"version", "tensor_data_offset", "metadata": {key: value},
// "types": {key: gguf value type}, "tensors": [{"name", "dims" (innermost first, as stored),
// "ggml_type", "offset"}]}. Used by tests/gguf_node_test.cc as an oracle for modelport's writer.
//
//   node gguf_check.mjs FILE.gguf
import { gguf } from "@huggingface/gguf";

const path = process.argv[2];
if (!path) {
  console.error("usage: node gguf_check.mjs FILE.gguf");
  process.exit(2);
}

// u64/i64 values come back as BigInt; print them as JSON numbers when exact, else as strings.
function plain(v) {
  if (typeof v === "bigint") {
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(v)
      : v.toString();
  }
  if (Array.isArray(v)) return v.map(plain);
  return v;
}

const { metadata, tensorInfos, tensorDataOffset, typedMetadata } = await gguf(path, {
  allowLocalFile: true,
  typedMetadata: true,
});
const out = { version: plain(metadata.version), tensor_data_offset: plain(tensorDataOffset) };
out.metadata = {};
out.types = {};
for (const [key, entry] of Object.entries(typedMetadata)) {
  if (key === "version" || key === "tensor_count" || key === "kv_count") continue;
  out.metadata[key] = plain(entry.value);
  out.types[key] = entry.subType === undefined ? entry.type : [entry.type, entry.subType];
}
out.tensor_count = plain(metadata.tensor_count);
out.kv_count = plain(metadata.kv_count);
out.tensors = tensorInfos.map((t) => ({
  name: t.name,
  dims: t.shape.map(plain),
  ggml_type: t.dtype,
  offset: plain(t.offset),
}));
process.stdout.write(JSON.stringify(out));
