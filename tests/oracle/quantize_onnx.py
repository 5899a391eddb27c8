"""torch 1.13 (Debian's, run with /usr/bin/python3) exports the float models that
tests/quantize_onnx_oracle_test.cc quantizes to int8 QDQ with modelport and runs in onnxruntime.

  export DIR    writes, for each NAME of mlp, cnn and emb, DIR/NAME.onnx (opset 13, eval mode,
                constant folding on, so BatchNorm is folded into the convolutions as a deployed
                export would be) and DIR/NAME_x.npy, a seeded input:
                  mlp  Linear 256->512->512->10 with ReLU (Gemm, transB=1), x f32 [8, 256]
                  cnn  Conv(3->32->64->128, 3x3) + BatchNorm + ReLU, global average pool,
                       Linear 128->256->10, x f32 [4, 3, 16, 16]
                  emb  Embedding(4000, 64) (Gather), mean over the sequence, Linear 64->10,
                       x i64 [4, 12]
                Prints {"NAME": "DIR/NAME.onnx", ...}.
"""
import json
import os
import sys

import numpy as np
import torch
from torch import nn


class Emb(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(4000, 64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.emb(x).mean(dim=1))


def conv_block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]


def models():
    mlp = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                        nn.Linear(512, 10))
    cnn = nn.Sequential(*conv_block(3, 32), *conv_block(32, 64), *conv_block(64, 128),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 256), nn.ReLU(),
                        nn.Linear(256, 10))
    # Running statistics that are not the identity, so the folded weights differ per channel.
    for m in cnn.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return {
        "mlp": (mlp, torch.randn(8, 256)),
        "cnn": (cnn, torch.randn(4, 3, 16, 16)),
        "emb": (Emb(), torch.randint(0, 4000, (4, 12))),
    }


def export(out_dir):
    torch.manual_seed(20261126)
    written = {}
    for name, (net, x) in models().items():
        net.eval()
        path = os.path.join(out_dir, name + ".onnx")
        torch.onnx.export(net, x, path, input_names=["x"], output_names=["y"], opset_version=13,
                          do_constant_folding=True)
        np.save(os.path.join(out_dir, name + "_x.npy"), x.numpy())
        written[name] = path
    print(json.dumps(written))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "export":
        export(sys.argv[2])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
