"""Reference float casts from numpy and torch, for src/modelport/convert/cast_test.cc.

Usage: cast_oracle.py F32_IN F64_IN OUT_DIR
F32_IN holds little-endian float32 values, F64_IN little-endian float64 values. Writes, as
little-endian uint16 bit patterns:
  OUT_DIR/np_f32_f16.bin     numpy  float32 -> float16   (astype)
  OUT_DIR/torch_f32_f16.bin  torch  float32 -> float16   (.to)
  OUT_DIR/torch_f32_bf16.bin torch  float32 -> bfloat16  (.to)
  OUT_DIR/np_f64_f16.bin     numpy  float64 -> float16   (astype, rounded once from the double)
"""
import os
import sys
import warnings

import numpy as np
import torch


def main():
    f32_path, f64_path, out_dir = sys.argv[1:4]
    f32 = np.fromfile(f32_path, dtype="<f4")
    f64 = np.fromfile(f64_path, dtype="<f8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow to inf is expected
        np_f16 = f32.astype(np.float16)
        np_f64_f16 = f64.astype(np.float16)
    t = torch.from_numpy(f32.copy())
    torch_f16 = t.to(torch.float16).view(torch.int16).numpy()
    torch_bf16 = t.to(torch.bfloat16).view(torch.int16).numpy()
    outputs = {
        "np_f32_f16.bin": np_f16.view("<u2"),
        "torch_f32_f16.bin": torch_f16.astype("<i2").view("<u2"),
        "torch_f32_bf16.bin": torch_bf16.astype("<i2").view("<u2"),
        "np_f64_f16.bin": np_f64_f16.view("<u2"),
    }
    for name, bits in outputs.items():
        bits.astype("<u2").tofile(os.path.join(out_dir, name))


if __name__ == "__main__":
    main()
