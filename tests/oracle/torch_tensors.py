"""Oracle: Debian's torch makes tensors of every dtype it has; modelport stores them; this script
checks modelport's file against torch's own tensors bit for bit.

  torch_tensors.py make DIR    DIR/manifest.json + one raw-bytes file per tensor (C order,
                               little-endian) + DIR/originals.pt (torch.save of the same tensors)
                               + DIR/torch_written.safetensors (this script's own writer,
                               header unpadded so the data sits at odd addresses)
  torch_tensors.py check DIR FILE   FILE (written by modelport) holds exactly the originals
"""
import json
import math
import os
import sys

import torch

import st_util

# torch dtype -> safetensors name, from the safetensors spec's dtype list.
TO_SAFETENSORS = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
    torch.int32: "I32", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float32: "F32", torch.float64: "F64", torch.complex64: "C64",
}
FROM_SAFETENSORS = {v: k for k, v in TO_SAFETENSORS.items()}


def raw_bytes(t):
    """Little-endian C-order bytes of t, independent of its strides."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def float_edges(dtype):
    info = torch.finfo(dtype)
    vals = [0.0, -0.0, math.inf, -math.inf, math.nan, 1.0, -1.0, math.pi, info.max, -info.max,
            info.tiny, -info.tiny, info.eps, info.tiny / 4]  # tiny / 4: a subnormal
    return torch.tensor(vals, dtype=torch.float64).to(dtype)


def make_tensors():
    g = torch.Generator().manual_seed(1234)
    out = {}
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        short = str(dtype).split(".")[1]
        out[f"{short}.random"] = torch.randn(3, 5, generator=g, dtype=torch.float32).to(dtype) * 7
        out[f"{short}.edges"] = float_edges(dtype)
        out[f"{short}.scalar"] = torch.tensor(-2.5, dtype=dtype)
        out[f"{short}.empty"] = torch.empty(0, 3, dtype=dtype)
        out[f"{short}.transposed"] = (torch.randn(4, 6, generator=g) * 3).to(dtype).t()
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        short = str(dtype).split(".")[1]
        info = torch.iinfo(dtype)
        out[f"{short}.edges"] = torch.tensor([info.min, info.min + 1, -1 if info.min < 0 else 1,
                                              0, 1, info.max - 1, info.max], dtype=dtype)
        out[f"{short}.random"] = torch.randint(info.min, info.max, (2, 3, 4), generator=g,
                                               dtype=dtype)
        out[f"{short}.scalar"] = torch.tensor(info.max, dtype=dtype)
    out["bool.random"] = torch.rand(4, 4, generator=g) > 0.5
    out["bool.scalar"] = torch.tensor(True)
    out["bool.empty"] = torch.empty(2, 0, dtype=torch.bool)
    re = torch.randn(2, 3, generator=g)
    out["complex64.random"] = torch.complex(re, -re * 2)
    out["complex64.edges"] = torch.complex(float_edges(torch.float32),
                                           float_edges(torch.float32).flip(0))
    # Non-contiguous sources: a strided slice, a permuted rank-4 tensor, an expanded view.
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    out["float32.strided"] = base[:, ::3]
    out["float32.rank4"] = torch.randn(2, 3, 4, 5, generator=g).permute(3, 1, 0, 2)
    out["int64.expanded"] = torch.arange(3).expand(4, 3)
    out["float32.rank0"] = torch.tensor(7.0)
    out["unicode.名前.weight"] = torch.ones(2)
    return out


def make(folder):
    tensors = make_tensors()
    manifest = []
    entries = []
    for i, (name, t) in enumerate(tensors.items()):
        raw = raw_bytes(t)
        file = f"t{i:03d}.bin"
        with open(os.path.join(folder, file), "wb") as f:
            f.write(raw)
        manifest.append({"name": name, "dtype": str(t.dtype), "shape": list(t.shape),
                         "file": file})
        entries.append((name, TO_SAFETENSORS[t.dtype], list(t.shape), raw))
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False)
    torch.save({k: v.contiguous() for k, v in tensors.items()},
               os.path.join(folder, "originals.pt"))
    # Reverse order with an unpadded header: nothing like modelport's own layout.
    st_util.write(os.path.join(folder, "torch_written.safetensors"), entries[::-1],
                  metadata={"writer": "torch oracle"}, pad=False)


def check(folder, path):
    originals = torch.load(os.path.join(folder, "originals.pt"))
    header, _, data = st_util.read(path)
    problems = []
    if set(header) != set(originals):
        problems.append(f"names differ: extra {sorted(set(header) - set(originals))}, "
                        f"missing {sorted(set(originals) - set(header))}")
    for name, want in originals.items():
        if name not in header:
            continue
        entry = header[name]
        if entry["dtype"] != TO_SAFETENSORS[want.dtype]:
            problems.append(f"{name}: dtype {entry['dtype']}, torch has {want.dtype}")
            continue
        if list(entry["shape"]) != list(want.shape):
            problems.append(f"{name}: shape {entry['shape']}, torch has {list(want.shape)}")
            continue
        dtype = FROM_SAFETENSORS[entry["dtype"]]
        raw = data[name]
        if len(raw) == 0:
            got = torch.empty(entry["shape"], dtype=dtype)
        else:
            got = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(entry["shape"])
        # Bitwise: NaN payloads and -0.0 included.
        if raw_bytes(got) != raw_bytes(want):
            problems.append(f"{name}: bytes differ from torch's tensor")
        elif not want.is_floating_point() and not want.is_complex() and not torch.equal(got, want):
            problems.append(f"{name}: torch.equal is false")
    for p in problems:
        print(p)
    print(f"checked {len(originals)} tensors, {len(problems)} problems")
    return 1 if problems else 0


def main(argv):
    if argv[1] == "make":
        make(argv[2])
        return 0
    if argv[1] == "check":
        try:
            return check(argv[2], argv[3])
        except st_util.Problem as e:
            print(e)
            return 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
