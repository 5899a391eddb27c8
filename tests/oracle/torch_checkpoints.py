"""Oracle: Debian's torch 1.13 writes checkpoints of every kind modelport reads; this script
records what torch itself holds in them, for the C++ test to compare bit for bit.

  torch_checkpoints.py make DIR

writes DIR/<case>.pt and DIR/manifest.json:
  {case: {"file": "<case>.pt", "key": "" or the --key to use,
          "tensors": [{"name", "dtype", "shape", "raw"}],   raw: DIR/raw/<n>.bin, C order, LE
          "aliases": {alias: target}, "metadata": {...}, "torchscript": bool, "legacy": bool}}
"""
import json
import os
import sys
from collections import OrderedDict

import zipfile

import torch

from torch_tensors import float_edges, raw_bytes  # one definition of each, shared

DTYPE_NAMES = {
    torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16",
    torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
    torch.uint8: "u8", torch.bool: "bool", torch.complex64: "c64",
}


def every_dtype():
    g = torch.Generator().manual_seed(7)
    out = OrderedDict()
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        name = DTYPE_NAMES[dtype]
        out[name + ".edges"] = float_edges(dtype)
        out[name + ".random"] = (torch.randn(3, 4, generator=g) * 5).to(dtype)
    nan_payload = torch.tensor([0x7FC00123, -0x003FFFFF], dtype=torch.int32).view(torch.float32)
    out["f32.nan_payloads"] = nan_payload
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        info = torch.iinfo(dtype)
        out[DTYPE_NAMES[dtype]] = torch.tensor([info.min, -1, 0, 1, info.max], dtype=dtype)
    out["u8"] = torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8)
    out["bool"] = torch.tensor([[True, False], [False, True]])
    out["c64"] = torch.complex(torch.randn(5, generator=g), torch.randn(5, generator=g))
    out["scalar"] = torch.tensor(3.5)
    out["empty"] = torch.zeros(0, 3)
    out["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    return out


def views():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    out = OrderedDict()
    out["base"] = base
    out["row"] = base[1]                  # offset view, contiguous
    out["col"] = base[:, 2]               # strided
    out["t"] = base.t()                   # transposed
    out["slice"] = base[1:3, 2:5]         # offset + strided
    out["step"] = base[::2, ::3]          # steps
    out["expand"] = torch.arange(3.0).expand(4, 3)  # stride 0
    out["element"] = base[2, 3]           # a 0-d view
    out["tied"] = base                    # the same view again: tied
    return out


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight  # tied, as language models do
        self.register_buffer("steps", torch.tensor([3], dtype=torch.int64))

    def forward(self, x):
        return self.head(self.norm(self.emb(x)))


class Script(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.inner = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        self.register_buffer("counts", torch.arange(4, dtype=torch.int32))

    def forward(self, x):
        return self.inner(self.fc(x)) * 2.0 + torch.tensor([1.0, 2.0])


def rewrite_zip(src, dst, compression, force_zip64):
    """The same records as torch's file, re-packed by Python's zipfile: deflated and/or with
    ZIP64 records (a checkpoint over 4 GiB has them; torch reads both)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            with zout.open(info.filename, "w", force_zip64=force_zip64) as f:
                f.write(zin.read(info.filename))


def rewrite_big_endian(src, dst, element_sizes):
    """torch's file as a big-endian machine writes it: byteorder "big", each storage's elements
    byte-swapped (element_sizes: storage key -> bytes per element)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        folder = zin.namelist()[0].partition("/")[0]
        for info in zin.infolist():
            data = zin.read(info.filename)
            rest = info.filename.partition("/")[2]
            if rest == "byteorder":
                continue
            if rest.startswith("data/"):
                n = element_sizes[rest[5:]]
                data = b"".join(data[i:i + n][::-1] for i in range(0, len(data), n))
            zout.writestr(info, data)
        zout.writestr(folder + "/byteorder", b"big")  # torch 1.13 writes none (little)


def case(tensors, aliases=None, metadata=None, key="", **flags):
    # A snapshot: training below changes the module's tensors after some files were saved.
    tensors = OrderedDict((k, t.detach().clone()) for k, t in tensors.items())
    return {"tensors": tensors, "aliases": aliases or {}, "metadata": metadata or {}, "key": key,
            **flags}


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    d = sys.argv[2]
    os.makedirs(os.path.join(d, "raw"), exist_ok=True)
    torch.manual_seed(0)
    cases = {}

    sd = every_dtype()
    torch.save(sd, os.path.join(d, "every_dtype.pt"))
    cases["every_dtype"] = case(sd)
    for variant, compression, zip64 in (("deflated", zipfile.ZIP_DEFLATED, False),
                                        ("zip64", zipfile.ZIP_STORED, True)):
        rewrite_zip(os.path.join(d, "every_dtype.pt"), os.path.join(d, variant + ".pt"),
                    compression, zip64)
        cases[variant] = case(sd)
    torch.save(sd, os.path.join(d, "legacy.pt"), _use_new_zipfile_serialization=False)
    cases["legacy"] = case(sd, legacy=True)

    # One storage per tensor, keys 0, 1, 2 in pickling order.
    be = OrderedDict([("f32", torch.tensor([1.5, -2.0, 3.25])),
                      ("i64", torch.tensor([1, -2, 1 << 40])),
                      ("f16", torch.tensor([0.5, -65504.0], dtype=torch.float16))])
    torch.save(be, os.path.join(d, "little.pt"))
    rewrite_big_endian(os.path.join(d, "little.pt"), os.path.join(d, "big_endian.pt"),
                       {"0": 4, "1": 8, "2": 2})
    cases["big_endian"] = case(be)

    v = views()
    torch.save(v, os.path.join(d, "views.pt"))
    cases["views"] = case(OrderedDict((k, t) for k, t in v.items() if k != "tied"),
                          aliases={"tied": "base"})

    block = Block()
    torch.save(block.state_dict(), os.path.join(d, "tied.pt"))
    cases["tied"] = case(OrderedDict((k, t) for k, t in block.state_dict().items()
                                     if k != "head.weight"),
                         aliases={"head.weight": "emb.weight"})

    opt = torch.optim.SGD(block.parameters(), lr=0.1, momentum=0.9)
    block(torch.tensor([1, 2])).sum().backward()
    opt.step()
    checkpoint = {"state_dict": block.state_dict(), "optimizer": opt.state_dict(), "epoch": 7,
                  "config": {"lr": 0.1, "name": "block", "layers": [1, 2], "none": None},
                  "best": 0.5}
    torch.save(checkpoint, os.path.join(d, "nested.pt"))
    cases["nested"] = case(
        OrderedDict((k, t) for k, t in block.state_dict().items() if k != "head.weight"),
        aliases={"head.weight": "emb.weight"},
        metadata={"epoch": 7, "config": checkpoint["config"], "best": 0.5})
    momentum = OrderedDict()
    for pid, state in opt.state_dict()["state"].items():
        momentum[f"state.{pid}.momentum_buffer"] = state["momentum_buffer"]
    cases["nested_optimizer"] = case(momentum, key="optimizer")
    cases["nested_optimizer"]["file"] = "nested.pt"

    script = Script()
    torch.jit.script(script).save(os.path.join(d, "scripted.pt"))
    script_tensors = OrderedDict()
    script_tensors["counts"] = script.counts
    for k, t in script.state_dict().items():
        if k != "counts":
            script_tensors[k] = t
    cases["scripted"] = case(script.state_dict(), torchscript=True)
    traced = torch.jit.trace(script, torch.zeros(1, 3))
    traced.save(os.path.join(d, "traced.pt"))
    cases["traced"] = case(traced.state_dict(), torchscript=True)

    torch.save({"z": torch.zeros(2, dtype=torch.complex128)}, os.path.join(d, "complex128.pt"))

    manifest = {}
    n = 0
    for name, c in cases.items():
        entry = {"file": c.get("file", name + ".pt"), "key": c["key"], "aliases": c["aliases"],
                 "metadata": c["metadata"], "torchscript": c.get("torchscript", False),
                 "legacy": c.get("legacy", False), "tensors": []}
        for tname, t in c["tensors"].items():
            raw = os.path.join("raw", f"{n}.bin")
            n += 1
            with open(os.path.join(d, raw), "wb") as f:
                f.write(raw_bytes(t))
            entry["tensors"].append({"name": tname, "dtype": DTYPE_NAMES[t.dtype],
                                     "shape": list(t.shape), "raw": raw})
        manifest[name] = entry
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
