"""TorchScript archives through modelport's registry (tests/registry_torchscript_test.cc).

  make DIR   scripts a small MLP with Debian's torch (torch.jit.script, seeded) and saves
             DIR/s1.pt, a fine-tune DIR/s2.pt (only fc2.weight changed), DIR/x.npy and the
             outputs DIR/y1.npy, DIR/y2.npy.
  check DIR  loads DIR/e1.pt and DIR/e2.pt (exported by modelport) with torch.jit.load, runs
             them on x and prints one JSON line: whether each output equals y1 / y2 exactly and
             whether every record of s1.pt / s2.pt is in e1.pt / e2.pt with the same bytes.
"""
import json
import os
import sys
import zipfile

import numpy as np
import torch


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 4)
        self.register_buffer("shift", torch.arange(4, dtype=torch.float32))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) + self.shift


def make(d):
    torch.manual_seed(0)
    m = Mlp().eval()
    x = torch.randn(8, 16)
    s1 = torch.jit.script(m)
    s1.save(os.path.join(d, "s1.pt"))
    with torch.no_grad():
        np.save(os.path.join(d, "y1.npy"), s1(x).numpy())
        m.fc2.weight.add_(0.25)
    s2 = torch.jit.script(m)
    s2.save(os.path.join(d, "s2.pt"))
    with torch.no_grad():
        np.save(os.path.join(d, "y2.npy"), s2(x).numpy())
    np.save(os.path.join(d, "x.npy"), x.numpy())


def records(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def check(d):
    x = torch.from_numpy(np.load(os.path.join(d, "x.npy")))
    out = {}
    for k in ("1", "2"):
        e = torch.jit.load(os.path.join(d, "e" + k + ".pt"))
        with torch.no_grad():
            y = e(x).numpy()
        out["equal" + k] = bool(np.array_equal(y, np.load(os.path.join(d, "y" + k + ".npy"))))
        src, exp = records(os.path.join(d, "s" + k + ".pt")), records(os.path.join(d, "e" + k + ".pt"))
        out["records" + k] = sorted(n for n in src if exp.get(n) != src[n])  # differing ones
        out["count" + k] = [len(src), len(exp)]
    print(json.dumps(out))


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](sys.argv[2])
