#!/usr/bin/python3
"""Writes the seed files in fuzz/corpus/ (standard library only).

Each safetensors seed follows the layout: u64 little-endian header length, a JSON header
padded with spaces to a multiple of 8, then the data buffer. Run from anywhere:
    /usr/bin/python3 fuzz/make_corpus.py
"""
import json
import os
import struct

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def safetensors_bytes(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes), written in order."""
    header, data, offset = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


SEEDS = {
    # One float32 matrix and string metadata.
    "f32_matrix.safetensors": safetensors_bytes(
        [("w", "F32", [2, 3], struct.pack("<6f", 0.5, -1.0, 2.0, 0.0, 3.25, -0.125))],
        metadata={"format": "pt"}),
    # Several dtypes, a scalar, an empty tensor, odd sizes that leave later tensors misaligned.
    "mixed_dtypes.safetensors": safetensors_bytes([
        ("flag", "BOOL", [3], bytes([1, 0, 1])),
        ("half", "F16", [2], struct.pack("<2e", 1.5, -2.0)),
        ("brain", "BF16", [], bytes([0x80, 0x3f])),
        ("count", "I64", [1], struct.pack("<q", -7)),
        ("none", "F32", [0, 4], b""),
        ("byte", "U8", [2, 1], bytes([7, 255])),
        ("f8", "F8_E4M3", [2], bytes([0x38, 0xb8])),
    ]),
    # No tensors at all.
    "empty.safetensors": safetensors_bytes([]),
}

# Indexes for safetensors_index_fuzz, whose scratch folder holds s1.safetensors (tensor "a"),
# s2.safetensors ("b"), sub/s3.safetensors ("c") and link.safetensors -> s1.safetensors.
INDEX_SEEDS = {
    "two_shards.json": {"metadata": {"total_size": 8},
                        "weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}},
    "one_shard.json": {"weight_map": {"b": "s2.safetensors"}},
    "via_link.json": {"weight_map": {"a": "link.safetensors"}},
}


def write_all(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, blob in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(blob)
        print(f"{os.path.basename(folder)}/{name}: {len(blob)} bytes")


if __name__ == "__main__":
    write_all(os.path.join(CORPUS, "safetensors"), SEEDS)
    write_all(os.path.join(CORPUS, "safetensors_index"),
              {k: (json.dumps(v, indent=2) + "\n").encode() for k, v in INDEX_SEEDS.items()})
