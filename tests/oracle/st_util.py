"""A safetensors reader and writer for the oracle scripts, written from the format's spec
(huggingface/safetensors README, "Format") and independent of modelport."""
import json
import struct

# safetensors dtype string -> (torch dtype name, element size); torch names are resolved lazily so
# the numpy-only scripts need no torch.
DTYPES = {
    "BOOL": ("bool", 1), "U8": ("uint8", 1), "I8": ("int8", 1), "I16": ("int16", 2),
    "U16": ("uint16", 2), "F16": ("float16", 2), "BF16": ("bfloat16", 2), "I32": ("int32", 4),
    "U32": ("uint32", 4), "F32": ("float32", 4), "F64": ("float64", 8), "I64": ("int64", 8),
    "U64": ("uint64", 8), "C64": ("complex64", 8), "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
}


class Problem(Exception):
    """A check failed; the message says which and why."""


def read(path):
    """(header dict without __metadata__, metadata dict, {name: bytes}) of a safetensors file,
    checking the layout rules of the spec on the way."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise Problem(f"{path}: shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise Problem(f"{path}: header length {n} past the end")
    text = blob[8:8 + n].decode("utf-8")
    if not text.startswith("{"):
        raise Problem(f"{path}: header does not start with '{{'")
    pairs = json.loads(text, object_pairs_hook=lambda kv: kv)
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Problem(f"{path}: duplicate keys in the header")
    header = dict(pairs)
    metadata = dict(header.pop("__metadata__", []) or [])
    data = blob[8 + n:]
    spans = []
    tensors = {}
    for name, entry in header.items():
        entry = dict(entry)
        header[name] = entry
        begin, end = entry["data_offsets"]
        if entry["dtype"] not in DTYPES:
            raise Problem(f"{path}: tensor {name!r}: unknown dtype {entry['dtype']}")
        numel = 1
        for d in entry["shape"]:
            numel *= d
        if end - begin != numel * DTYPES[entry["dtype"]][1]:
            raise Problem(f"{path}: tensor {name!r}: span {end - begin} != shape x dtype size")
        spans.append((begin, end, name))
        tensors[name] = data[begin:end]
    spans.sort()
    at = 0
    for begin, end, name in spans:
        if begin != at:
            raise Problem(f"{path}: tensor {name!r} starts at {begin}, expected {at}")
        at = end
    if at != len(data):
        raise Problem(f"{path}: data buffer is {len(data)} bytes, tensors cover {at}")
    return header, metadata, tensors


def write(path, entries, metadata=None, pad=True):
    """Writes [(name, safetensors dtype, shape, bytes)] in the given order. pad=False leaves the
    header unpadded, as some writers do, so the data may start at any address."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    at = 0
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + len(raw)]}
        at += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if pad:
        text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, raw in entries:
            f.write(raw)
