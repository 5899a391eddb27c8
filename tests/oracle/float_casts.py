"""Oracle for float casts: numpy's astype(float16) and torch's .to(torch.bfloat16), both round to
nearest even, against the files modelport cast.

  float_casts.py edges OUT         writes OUT: f32 and f64 tensors full of hard cases (random bit
                                   patterns, exact ties, values just off ties, subnormals,
                                   overflow, NaN, inf)
  float_casts.py f16 SRC CAST      every float tensor of SRC, cast by numpy to float16, equals
                                   the F16 tensor of the same name in CAST bit for bit
  float_casts.py bf16 SRC CAST     same with torch and bfloat16 (F32 sources only: torch casts
                                   f64 to bf16 through f32, rounding twice)

NaN compares by NaN-ness (and sign for f16; torch makes every bf16 NaN positive): payloads are
not specified by either library's docs.
"""
import sys

import numpy as np

import st_util

NP = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


def edges(out):
    rng = np.random.default_rng(7)
    # f32: every kind of bit pattern, plus f16 ties and near-ties and bf16 ties.
    bits = rng.integers(0, 2**32, size=4096, dtype=np.uint64).astype(np.uint32)
    h = rng.integers(0, 0x7C00, size=2048, dtype=np.uint16).view(np.float16)  # finite f16
    h_next = np.nextafter(h, np.float16(np.inf))
    ties = (h.astype(np.float32) + h_next.astype(np.float32)) / 2  # exact in f32
    near = np.concatenate([np.nextafter(ties, np.float32(np.inf)),
                           np.nextafter(ties, np.float32(-np.inf))])
    bf_ties = ((rng.integers(0, 0x7F80, size=2048, dtype=np.uint32) << 16) | 0x8000)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 65504, 65519.996, 65520,
                         -65520, 1e9, 5.960464477539063e-08, 2.9802322387695312e-08,
                         2.98023259e-08, 1e-10, 3.3895314e38, 3.4028235e38], dtype=np.float32)
    f32 = np.concatenate([bits.view(np.float32), ties, -ties, near, bf_ties.view(np.float32),
                          specials]).astype(np.float32)
    # f64: values just above and below f16 ties by less than an f32 ulp, where casting through
    # f32 would round twice.
    t64 = (h.astype(np.float64) + h_next.astype(np.float64)) / 2
    ulp = np.spacing(t64)
    f64 = np.concatenate([t64, t64 + ulp * 3, t64 - ulp * 3, rng.standard_normal(512) * 1e3,
                          specials.astype(np.float64)]).astype(np.float64)
    st_util.write(out, [("f32", "F32", [f32.size], f32.tobytes()),
                        ("f64", "F64", [f64.size], f64.tobytes())])


def differing(want, got, nan_sign):
    """Indices where two float arrays of one dtype differ bitwise; two NaNs match (by sign too
    when nan_sign)."""
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.dtype.itemsize]
    both_nan = np.isnan(want) & np.isnan(got)
    bad = (want.view(uint) != got.view(uint)) & ~both_nan
    if nan_sign:
        bad |= both_nan & (np.signbit(want) != np.signbit(got))
    return np.nonzero(bad)[0]


def bf16_as_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def reference(kind, x):
    """x cast by the reference library, as floats (bf16 widened exactly to f32)."""
    if kind == "f16":
        with np.errstate(over="ignore", invalid="ignore"):
            return x.astype(np.float16)
    import torch  # only the bf16 check needs torch
    bits = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy()
    return bf16_as_f32(bits.view(np.uint16))


def check(kind, src, cast):
    sh, _, sdata = st_util.read(src)
    ch, _, cdata = st_util.read(cast)
    target = "F16" if kind == "f16" else "BF16"
    sources = ("F32", "F64") if kind == "f16" else ("F32",)
    problems = []
    checked = 0
    for name, entry in sh.items():
        if entry["dtype"] not in sources:
            continue
        if name not in ch or ch[name]["dtype"] != target or ch[name]["shape"] != entry["shape"]:
            problems.append(f"{name}: not a {target} {entry['shape']} in {cast}")
            continue
        x = np.frombuffer(sdata[name], dtype=NP[entry["dtype"]])
        want = reference(kind, x)
        raw = np.frombuffer(cdata[name], dtype=np.uint16)
        got = raw.view(np.float16) if kind == "f16" else bf16_as_f32(raw)
        # torch turns every NaN into +NaN (0x7FC0); numpy keeps the sign.
        bad = differing(want, got, nan_sign=(kind == "f16"))
        checked += x.size
        for i in bad[:5]:
            problems.append(f"{name}[{i}]: {x[i]!r} -> {got[i]!r}, reference gives {want[i]!r}")
        if bad.size > 5:
            problems.append(f"{name}: {bad.size} elements differ in all")
    for p in problems:
        print(p)
    print(f"{kind}: checked {checked} values, {len(problems)} problems")
    return 1 if problems else 0


def main(argv):
    try:
        if argv[1] == "edges":
            edges(argv[2])
            return 0
        if argv[1] in ("f16", "bf16"):
            return check(argv[1], argv[2], argv[3])
    except st_util.Problem as e:
        print(e)
        return 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
