"""numpy and torch as the oracle for `modelport quantize` / `dequantize`
(tests/quantize_oracle_test.cc).

Every expectation here is computed from the source weights alone: the float casts by an exact
round-to-nearest-even in float64, int8 by numpy's own scale and rounding, the ggml block types by
a numpy transcription of ggml's reference quantizers (quantize_row_q*_ref in ggml-quants.c) and
its dequantizers. Files are read by hand (st_util for safetensors, a GGUF parser below,
torch.load for .pt), never through modelport.

Usage:
  quantize_check.py make DIR
      torch.manual_seed(0) weights of Linear/Conv/Embedding/LayerNorm layers (one all-zero row,
      a tensor with values beyond f8's range, a small and an integer tensor) as DIR/weights.pt
      (torch.save) and DIR/weights.safetensors (written by hand).
  quantize_check.py check SCHEME ORIG.safetensors QUANTIZED DEQUANTIZED REPORT.json [--per-tensor]
                    [--axis N] [--min-size N] [--include GLOB]... [--exclude GLOB]...
                    [--deq-dtype f32|f64|bf16|f16]
      QUANTIZED is what `modelport quantize` wrote (.safetensors, .pt or .gguf), DEQUANTIZED what
      `modelport dequantize` made of it (.safetensors), REPORT.json quantize's --json output.
  quantize_check.py torch_int8 ORIG.safetensors QUANTIZED.pt DEQUANTIZED.safetensors [--per-tensor]
      torch 1.13 loads the int8 checkpoint with weights_only=True; its own dequantization equals
      modelport's.
  quantize_check.py gguf_node SCHEME ORIG.safetensors QUANTIZED.gguf NODE.json INSPECT.json
                    DEQUANTIZED.safetensors
      what @huggingface/gguf (NODE.json, from tests/node/gguf_check.mjs) and `modelport inspect
      --json` (INSPECT.json) read from the file agree with the reference blocks.

Exit status 0 with one summary line on success; 1 with one line naming the first problem.
"""
import fnmatch
import json
import math
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_util  # noqa: E402

F32 = np.float32
MIN_ELEMENTS = 1024
BLOCK = 32


class Problem(Exception):
    """A check failed; the message says which and why."""


def need(cond, message):
    if not cond:
        raise Problem(message)


# --- The weights ------------------------------------------------------------------------------


def make(out_dir):
    import torch
    from torch import nn

    torch.manual_seed(0)
    emb = nn.Embedding(100, 64)
    fc1 = nn.Linear(96, 64)
    fc2 = nn.Linear(64, 40)
    fc3 = nn.Linear(40, 48)  # last dim 40: no whole ggml blocks
    conv = nn.Conv2d(8, 16, 3)
    norm = nn.LayerNorm(64)
    small = nn.Linear(16, 8)  # 128 elements: under --min-size
    with torch.no_grad():
        fc1.weight[5].zero_()  # an all-zero output channel (int8 scale 1, ggml d = 0)
        norm.weight.copy_(torch.rand(64) + 0.5)
        norm.bias.copy_(torch.randn(64) * 0.1)
        big = torch.randn(32, 64) * 200
        # e4m3 saturation (460 rounds to 448, 470 and -1000 saturate), e5m2's top binade, an f16
        # tie (1 + 2^-11 -> 1), subnormals of f16 and e4m3, values that underflow.
        specials = [448.0, 460.0, 470.0, -1000.0, 60000.0, -58000.0, 1.0 + 2.0 ** -11, 1e-9,
                    3e-5, -0.001, 0.0029296875, 2.0 ** -10 * 1.5]
        big.view(-1)[100:100 + len(specials)] = torch.tensor(specials)
    ids = torch.arange(2048, dtype=torch.int32).reshape(4, 512)  # integer: never a candidate
    state = {}
    for prefix, module in (("emb", emb), ("fc1", fc1), ("fc2", fc2), ("fc3", fc3),
                           ("conv", conv), ("norm", norm), ("small", small)):
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.detach().clone().contiguous()
    state["big.weight"] = big.contiguous()
    state["tok.ids"] = ids
    torch.save(state, os.path.join(out_dir, "weights.pt"))
    entries = []
    for name, t in state.items():
        dtype = {torch.float32: "F32", torch.int32: "I32"}[t.dtype]
        entries.append((name, dtype, list(t.shape), t.numpy().tobytes()))
    st_util.write(os.path.join(out_dir, "weights.safetensors"), entries)
    print(f"ok: {len(state)} tensors")


def load_original(path):
    header, _, raw = st_util.read(path)
    out = {}
    for name, entry in header.items():
        dt = {"F32": "<f4", "I32": "<i4"}[entry["dtype"]]
        out[name] = np.frombuffer(raw[name], dtype=dt).reshape(entry["shape"])
    return out


def is_candidate(scheme, arr, name="", select=None):
    """select: (min elements, include globs, exclude globs) as --min-size/--include/--exclude."""
    min_elements, include, exclude = select or (MIN_ELEMENTS, [], [])
    if include and not any(fnmatch.fnmatchcase(name, g) for g in include):
        return False
    if any(fnmatch.fnmatchcase(name, g) for g in exclude):
        return False
    if arr.dtype != np.float32 or arr.ndim < 2 or arr.size < min_elements:
        return False
    if scheme.startswith("q") and arr.shape[-1] % BLOCK != 0:
        return False
    return True


# --- Float casts: exact round to nearest even, in float64 --------------------------------------

# mantissa bits, smallest normal exponent, largest finite value, saturating
CASTS = {
    "f16": (10, -14, 65504.0, False),
    "bf16": (7, -126, float.fromhex("0x1.fe00000000000p+127"), False),
    "f8_e4m3": (3, -6, 448.0, True),
    "f8_e5m2": (2, -14, 57344.0, False),
}


def cast_reference(scheme, x):
    """(value, ulp at x) of x rounded to nearest even in the target format, as float64."""
    mbits, emin, top, saturating = CASTS[scheme]
    a = np.abs(x.astype(np.float64))
    _, ex = np.frexp(a)  # a = m * 2^ex, m in [0.5, 1)
    e = np.maximum(ex - 1, emin)
    ulp = np.ldexp(1.0, e - mbits)
    r = np.round(a / ulp) * ulp  # a / ulp is exact; np.round ties to even
    r = np.where(r > top, top if saturating else np.inf, r)
    return np.copysign(r, x.astype(np.float64)), ulp


def decode_f8(raw, scheme):
    b = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
    sign = np.where(b >> 7, -1.0, 1.0)
    if scheme == "f8_e4m3":
        e, m = (b >> 3) & 0xF, b & 7
        val = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * np.exp2(e - 7.0))
        val = np.where((e == 15) & (m == 7), np.nan, val)
    else:
        e, m = (b >> 2) & 0x1F, b & 3
        val = np.where(e == 0, m / 4.0 * 2.0 ** -14, (1 + m / 4.0) * np.exp2(e - 15.0))
        val = np.where(e == 31, np.where(m == 0, np.inf, np.nan), val)
    return sign * val


def decode_float(raw, dtype, shape):
    """float64 values of raw little-endian bytes of a float dtype (safetensors spelling)."""
    if dtype == "F32":
        v = np.frombuffer(raw, "<f4").astype(np.float64)
    elif dtype == "F64":
        v = np.frombuffer(raw, "<f8").copy()
    elif dtype == "F16":
        v = np.frombuffer(raw, "<f2").astype(np.float64)
    elif dtype == "BF16":
        v = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    elif dtype == "F8_E4M3":
        v = decode_f8(raw, "f8_e4m3")
    elif dtype == "F8_E5M2":
        v = decode_f8(raw, "f8_e5m2")
    else:
        raise Problem(f"unexpected dtype {dtype}")
    return v.reshape(shape)


# --- int8 ---------------------------------------------------------------------------------------


def int8_reference(x, per_tensor, axis):
    """(q int8, scale f32 shaped to broadcast) as numpy computes them."""
    if per_tensor:
        amax = np.abs(x).max().reshape(1)
        shape = (1,)
    else:
        axis = axis % x.ndim
        others = tuple(i for i in range(x.ndim) if i != axis)
        amax = np.abs(x).max(axis=others)
        shape = tuple(x.shape[i] if i == axis else 1 for i in range(x.ndim))
    amax = amax.astype(F32)
    scale = np.where(amax > 0, amax / F32(127), F32(1)).astype(F32).reshape(shape)
    q = np.clip(np.round((x / scale).astype(F32)), -127, 127).astype(np.int8)
    return q, scale


# --- ggml blocks: quantize_row_*_ref and dequantize_row_* in numpy --------------------------------

GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
              "i8": 24, "i16": 25, "i32": 26, "i64": 27, "f64": 28, "bf16": 30}
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24}
# llama.cpp's llama_ftype for a file "mostly" of that type (LLAMA_FTYPE_MOSTLY_*).
FILE_TYPES = {"f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "bf16": 32}
QUANT_VERSION = 2  # GGML_QNT_VERSION: the block layouts above


def f16_bytes(v):
    return v.astype(np.float16).view("<u2").astype("<u2").view(np.uint8).reshape(-1, 2)


def inverse(d):
    """1/d where d != 0, else 0 (f32), as the reference's `d ? 1.0f/d : 0.0f`."""
    safe = np.where(d != 0, d, F32(1))
    return np.where(d != 0, F32(1) / safe, F32(0)).astype(F32)


def roundf(v):
    """C's roundf: half away from zero (the addition is exact in float64)."""
    a = np.floor(np.abs(v.astype(np.float64)) + 0.5)
    return np.copysign(a, v)


def pack_nibbles(xi):
    """qs[j] = low nibble of element j | low nibble of element j + 16 << 4; qh bit k = bit 4 of
    element k."""
    lo = (xi[:, :16] & 0x0F) | ((xi[:, 16:] & 0x0F) << 4)
    bits = ((xi >> 4) & 1).astype(np.uint64)
    qh = (bits << np.arange(32, dtype=np.uint64)).sum(axis=1).astype("<u4")
    return lo.astype(np.uint8), qh.view(np.uint8).reshape(-1, 4)


def quantize_blocks(scheme, x):
    """Bytes of `x` (f32, size a multiple of 32) in ggml block type `scheme`."""
    b = x.reshape(-1, BLOCK).astype(F32)
    n = b.shape[0]
    if scheme == "q8_0":
        amax = np.abs(b).max(axis=1)
        d = (amax / F32(127)).astype(F32)
        q = roundf((b * inverse(d)[:, None]).astype(F32)).astype(np.int8)
        return np.concatenate([f16_bytes(d), q.view(np.uint8)], axis=1).tobytes()
    if scheme in ("q4_0", "q5_0"):
        half = F32(8 if scheme == "q4_0" else 16)
        top = 15 if scheme == "q4_0" else 31
        idx = np.argmax(np.abs(b), axis=1)  # the first of the largest magnitude, as `amax < |x|`
        mx = b[np.arange(n), idx]
        mx = np.where(np.abs(mx) > 0, mx, F32(0)).astype(F32)  # an all-zero block: max stays +0
        d = (mx / -half).astype(F32)
        x0 = (b * inverse(d)[:, None]).astype(F32)
        xi = np.minimum(top, np.trunc((x0 + F32(half + F32(0.5))).astype(F32))).astype(np.int64)
        qs, qh = pack_nibbles(xi)
        parts = [f16_bytes(d)] + ([qh] if scheme == "q5_0" else []) + [qs]
        return np.concatenate(parts, axis=1).tobytes()
    if scheme in ("q4_1", "q5_1"):
        mn = b[np.arange(n), np.argmin(b, axis=1)]
        mx = b[np.arange(n), np.argmax(b, axis=1)]
        levels = F32(15 if scheme == "q4_1" else 31)
        d = ((mx - mn).astype(F32) / levels).astype(F32)
        x0 = ((b - mn[:, None]).astype(F32) * inverse(d)[:, None]).astype(F32)
        xi = np.trunc((x0 + F32(0.5)).astype(F32)).astype(np.int64)
        xi = np.minimum(15, xi) if scheme == "q4_1" else (xi & 0xFF)
        qs, qh = pack_nibbles(xi)
        parts = [f16_bytes(d), f16_bytes(mn)] + ([qh] if scheme == "q5_1" else []) + [qs]
        return np.concatenate(parts, axis=1).tobytes()
    raise Problem(f"not a block scheme: {scheme}")


def block_fields(scheme, raw):
    """(d f32, m f32 or None, integer levels [n, 32]) of ggml blocks."""
    size = BLOCK_BYTES[scheme]
    need(len(raw) % size == 0, f"{len(raw)} bytes are not whole {scheme} blocks")
    a = np.frombuffer(raw, np.uint8).reshape(-1, size)
    d = a[:, 0:2].copy().view("<f2").astype(F32).reshape(-1)
    if scheme == "q8_0":
        return d, None, a[:, 2:].copy().view(np.int8).astype(np.int64)
    m = a[:, 2:4].copy().view("<f2").astype(F32).reshape(-1) if scheme.endswith("_1") else None
    qs_at = {"q4_0": 2, "q4_1": 4, "q5_0": 6, "q5_1": 8}[scheme]
    qs = a[:, qs_at:qs_at + 16].astype(np.int64)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1)
    if scheme.startswith("q5"):
        qh_at = qs_at - 4
        qh = a[:, qh_at:qh_at + 4].copy().view("<u4").astype(np.int64).reshape(-1, 1)
        q = q | (((qh >> np.arange(32)) & 1) << 4)
    return d, m, q


def dequantize_blocks(scheme, raw):
    """f32 values, as ggml's dequantize_row_* computes them."""
    d, m, q = block_fields(scheme, raw)
    if scheme == "q8_0":
        return (q.astype(F32) * d[:, None]).astype(F32).reshape(-1)
    if scheme in ("q4_0", "q5_0"):
        off = 8 if scheme == "q4_0" else 16
        return ((q - off).astype(F32) * d[:, None]).astype(F32).reshape(-1)
    return ((q.astype(F32) * d[:, None]).astype(F32) + m[:, None]).astype(F32).reshape(-1)


def block_bound(scheme, x):
    """Per element: half a step of the block's grid (or the distance to the grid's end for the
    values the reference clamps), plus what rounding the scale (and min) to f16 moves the grid,
    plus f32 slack. Computed from x alone."""
    b = x.reshape(-1, BLOCK).astype(np.float64)
    n = b.shape[0]
    if scheme in ("q8_0", "q4_0", "q5_0"):
        if scheme == "q8_0":
            d = np.abs(b).max(axis=1) / 127
            lo, hi, kmax = -127.0, 127.0, 127.0
        else:
            half = 8.0 if scheme == "q4_0" else 16.0
            mx = b[np.arange(n), np.argmax(np.abs(b), axis=1)]
            d = mx / -half
            lo, hi, kmax = -half, half - 1, half
        d32 = d.astype(F32).astype(np.float64)
        d16 = d32.astype(np.float16).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(d32[:, None] != 0, b / d32[:, None], 0.0)
        over = np.abs(t - np.clip(t, lo, hi))
        bound = np.abs(d32)[:, None] * (over + 0.5) + kmax * np.abs(d16 - d32)[:, None]
    else:
        levels = 15.0 if scheme == "q4_1" else 31.0
        mn, mx = b.min(axis=1), b.max(axis=1)
        d32 = ((mx - mn) / levels).astype(F32).astype(np.float64)
        d16 = d32.astype(np.float16).astype(np.float64)
        m16 = mn.astype(np.float16).astype(np.float64)
        bound = (d32 / 2 + levels * np.abs(d16 - d32) + np.abs(m16 - mn))[:, None] + 0 * b
    slack = 4 * np.spacing(np.abs(b).astype(F32)).astype(np.float64) + 1e-6 * np.abs(d32)[:, None]
    return (bound + slack).reshape(-1)


# --- GGUF, parsed by hand (ggml's docs/gguf.md) ------------------------------------------------


def read_gguf(path):
    """(metadata {key: value}, [(name, dims innermost first, ggml type, absolute offset)], blob)."""
    with open(path, "rb") as f:
        blob = f.read()
    at = 0

    def take(fmt):
        nonlocal at
        vals = struct.unpack_from("<" + fmt, blob, at)
        at += struct.calcsize("<" + fmt)
        return vals[0]

    def string():
        nonlocal at
        n = take("Q")
        s = blob[at:at + n].decode("utf-8")
        at += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
              12: "d"}

    def value(t):
        if t in scalar:
            return take(scalar[t])
        if t == 8:
            return string()
        if t == 9:
            sub = take("I")
            return [value(sub) for _ in range(take("Q"))]
        raise Problem(f"{path}: unknown GGUF value type {t}")

    need(blob[:4] == b"GGUF", f"{path}: no GGUF magic")
    at = 4
    take("I")  # version
    n_tensors, n_kv = take("Q"), take("Q")
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        infos.append((name, dims, take("I"), take("Q")))
    align = meta.get("general.alignment", 32)
    start = (at + align - 1) // align * align
    return meta, [(n, d, t, start + o) for n, d, t, o in infos], blob


# --- The checks -------------------------------------------------------------------------------


def stored_tensors(path):
    """{name: (dtype name as modelport spells it, shape, raw bytes)} of a quantized file."""
    out = {}
    if path.endswith(".safetensors"):
        header, meta, raw = st_util.read(path)
        for name, e in header.items():
            out[name] = (e["dtype"].lower(), list(e["shape"]), raw[name])
        return out, meta
    if path.endswith(".gguf"):
        meta, infos, blob = read_gguf(path)
        names = {v: k for k, v in GGML_TYPES.items()}
        for name, dims, t, at in infos:
            shape = list(reversed(dims))
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            dtype = names.get(t, str(t))
            if dtype in BLOCK_BYTES:
                size = count // BLOCK * BLOCK_BYTES[dtype]
            else:
                size = count * np.dtype({"f32": "f4", "f16": "f2", "bf16": "u2", "i8": "i1",
                                          "i16": "i2", "i32": "i4", "i64": "i8",
                                          "f64": "f8"}[dtype]).itemsize
            need(at + size <= len(blob), f"{path}: tensor {name} runs past the end")
            out[name] = (dtype, shape, blob[at:at + size])
        return out, meta
    if path.endswith(".pt"):
        import torch
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name, t in state.items():
            t = t.contiguous()
            dtype = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
                     torch.int8: "i8", torch.int32: "i32", torch.float64: "f64"}[t.dtype]
            raw = t.view(torch.int16 if t.element_size() == 2 else t.dtype).numpy().tobytes()
            out[name] = (dtype, list(t.shape), raw)
        return out, {}
    raise Problem(f"unexpected output {path}")


def expect_close_report(tr, err, name):
    """The report's error for one tensor equals what numpy measures on the same values."""
    e = tr.get("error") or {}
    want = float(np.max(np.abs(err))) if err.size else 0.0
    need(math.isclose(e.get("max_abs", -1.0), want, rel_tol=1e-9, abs_tol=1e-30),
         f"{name}: report max_abs {e.get('max_abs')} != numpy's {want}")
    rmse = float(np.sqrt(np.mean(err * err)))
    need(math.isclose(e.get("rmse", -1.0), rmse, rel_tol=1e-6, abs_tol=1e-30),
         f"{name}: report rmse {e.get('rmse')} != numpy's {rmse}")


def check(argv):
    scheme, orig_path, quant_path, deq_path, report_path = argv[:5]
    rest = argv[5:]
    per_tensor = "--per-tensor" in rest
    axis = int(rest[rest.index("--axis") + 1]) if "--axis" in rest else 0
    deq_dtype = rest[rest.index("--deq-dtype") + 1] if "--deq-dtype" in rest else "f32"
    min_elements = int(rest[rest.index("--min-size") + 1]) if "--min-size" in rest else MIN_ELEMENTS
    include = [rest[i + 1] for i, a in enumerate(rest) if a == "--include"]
    exclude = [rest[i + 1] for i, a in enumerate(rest) if a == "--exclude"]
    select = (min_elements, include, exclude)
    orig = load_original(orig_path)
    stored, qmeta = stored_tensors(quant_path)
    dheader, dmeta, draw = st_util.read(deq_path)
    with open(report_path) as f:
        report = json.load(f)
    need(report.get("scheme") == scheme, f"report scheme {report.get('scheme')} != {scheme}")
    rows = {t["name"]: t for t in report["tensors"]}
    need(sorted(rows) == sorted(orig), f"report tensors {sorted(rows)} != {sorted(orig)}")
    need(sorted(dheader) == sorted(orig),
         f"dequantized tensors {sorted(dheader)} != the source's {sorted(orig)}")
    want_stored = set(orig)
    if scheme == "int8":
        want_stored |= {n + "_scale" for n, a in orig.items() if is_candidate(scheme, a, n, select)}
    need(set(stored) == want_stored,
         f"quantized file holds {sorted(stored)}, want {sorted(want_stored)}")

    deq_st = {"f32": "F32", "f64": "F64", "bf16": "BF16", "f16": "F16"}[deq_dtype]
    quantized = kept = 0
    worst = 0.0
    all_err = []
    bytes_before = bytes_after = 0
    for name, x in orig.items():
        row = rows[name]
        cand = is_candidate(scheme, x, name, select)
        need(row["quantized"] == cand,
             f"{name}: report says quantized={row['quantized']}, want {cand}")
        dtype, shape, raw = stored[name]
        need(shape == list(x.shape), f"{name}: stored shape {shape} != {list(x.shape)}")
        de = dheader[name]
        need(de["shape"] == list(x.shape), f"{name}: dequantized shape {de['shape']}")
        bytes_before += x.nbytes
        if not cand:
            kept += 1
            want_dtype = {np.dtype("float32"): "f32", np.dtype("int32"): "i32"}[x.dtype]
            need(dtype == want_dtype, f"{name}: kept tensor stored as {dtype}")
            need(raw == x.tobytes(), f"{name}: kept tensor's bytes changed in {quant_path}")
            if x.dtype == np.float32 and deq_dtype != "f32":
                continue  # cast by dequantize --dtype; checked below only for f32
            need(de["dtype"] == ("I32" if x.dtype == np.int32 else "F32"),
                 f"{name}: dequantized kept tensor is {de['dtype']}")
            need(draw[name] == x.tobytes(), f"{name}: kept tensor's bytes changed by dequantize")
            need(row["bytes_after"] == x.nbytes, f"{name}: kept bytes_after {row['bytes_after']}")
            bytes_after += x.nbytes
            continue
        quantized += 1
        need(de["dtype"] == deq_st, f"{name}: dequantized to {de['dtype']}, want {deq_st}")
        got = decode_float(draw[name], de["dtype"], x.shape)
        x64 = x.astype(np.float64)
        if scheme in CASTS:
            want_dtype = scheme
            need(dtype == want_dtype, f"{name}: stored as {dtype}, want {want_dtype}")
            ref, ulp = cast_reference(scheme, x)
            stored_vals = decode_float(raw, dtype.upper(), x.shape)
            bad = np.flatnonzero(stored_vals != ref)
            need(bad.size == 0, f"{name}: stored {scheme} value at flat {bad[:1]} is "
                 f"{stored_vals.reshape(-1)[bad[:1]]}, round-to-nearest-even gives "
                 f"{ref.reshape(-1)[bad[:1]]} for {x.reshape(-1)[bad[:1]]}")
            finite = np.abs(x64) <= CASTS[scheme][2]
            err = np.abs(ref - x64)
            need(np.all(err[finite] <= ulp[finite] / 2), f"{name}: error beyond half an ulp")
            if scheme == "f8_e4m3":  # saturating: beyond 448 stays +-448
                need(np.all(np.abs(ref[~finite]) == 448.0), f"{name}: e4m3 did not saturate")
            if scheme == "f16":
                need(raw == x.astype(np.float16).tobytes(), f"{name}: f16 bytes != numpy astype")
            if scheme in ("f16", "bf16"):
                import torch
                tdt = torch.float16 if scheme == "f16" else torch.bfloat16
                want = torch.from_numpy(x.copy()).to(tdt).view(torch.int16).numpy().tobytes()
                need(raw == want, f"{name}: {scheme} bytes != torch .to({tdt})")
            expect = ref
            bytes_after += x.size * (2 if scheme in ("f16", "bf16") else 1)
        elif scheme == "int8":
            q, s = int8_reference(x, per_tensor, axis)
            need(dtype == "i8", f"{name}: stored as {dtype}, want i8")
            need(raw == q.tobytes(), f"{name}: int8 values differ from numpy's "
                 f"clip(round(x / scale), -127, 127) at flat "
                 f"{np.flatnonzero(np.frombuffer(raw, np.int8) != q.reshape(-1))[:3]}")
            sdtype, sshape, sraw = stored[name + "_scale"]
            need(sdtype == "f32" and sshape == list(s.shape),
                 f"{name}_scale: {sdtype} {sshape}, want f32 {list(s.shape)}")
            need(sraw == s.tobytes(), f"{name}_scale: scales differ from numpy's max|x|/127")
            # per tensor has no axis: the report says null (or -1).
            want_axis = (None, -1) if per_tensor else (axis % x.ndim,)
            need(row.get("axis") in want_axis,
                 f"{name}: report axis {row.get('axis')}, want {want_axis[0]}")
            expect = (q.astype(F32) * s).astype(F32).astype(np.float64)
            bound = np.broadcast_to(s.astype(np.float64), x.shape) * (0.5 + 2.0 ** -20) + \
                np.spacing(np.abs(x)).astype(np.float64)
            need(np.all(np.abs(expect - x64) <= bound), f"{name}: int8 error beyond half a scale")
            bytes_after += x.size + s.nbytes
        else:
            need(dtype == scheme, f"{name}: stored as {dtype}, want {scheme}")
            want_raw = quantize_blocks(scheme, x)
            if raw != want_raw:
                a = np.frombuffer(raw, np.uint8)
                b = np.frombuffer(want_raw, np.uint8)
                first = int(np.flatnonzero(a[:b.size] != b[:a.size])[0]) if a.size == b.size else -1
                raise Problem(f"{name}: {scheme} bytes differ from the reference formulas "
                              f"(sizes {a.size}/{b.size}, first at byte {first}, block "
                              f"{first // BLOCK_BYTES[scheme]})")
            expect = dequantize_blocks(scheme, want_raw).astype(np.float64).reshape(x.shape)
            bound = block_bound(scheme, x).reshape(x.shape)
            over = np.abs(expect - x64) > bound
            need(not over.any(), f"{name}: {scheme} error beyond half a step at flat "
                 f"{np.flatnonzero(over)[:3]}")
            bytes_after += len(want_raw)
        # dequantize gives the expected values, rounded once to the requested dtype.
        if deq_dtype == "f16":
            want_deq = expect.astype(F32).astype(np.float16).astype(np.float64)
        elif deq_dtype == "bf16":
            want_deq, _ = cast_reference("bf16", expect.astype(F32))
        else:
            want_deq = expect
        bad = np.flatnonzero(got != want_deq)
        need(bad.size == 0, f"{name}: dequantized value at flat {bad[:3]} is "
             f"{got.reshape(-1)[bad[:3]]}, want {want_deq.reshape(-1)[bad[:3]]}")
        need(row["bytes_before"] == x.nbytes, f"{name}: bytes_before {row['bytes_before']}")
        err = expect - x64
        expect_close_report(row, err, name)
        all_err.append(err.reshape(-1))
        worst = max(worst, float(np.max(np.abs(err))))
    if deq_dtype == "f32":
        need(report["bytes_before"] == bytes_before,
             f"report bytes_before {report['bytes_before']} != {bytes_before}")
        need(report["bytes_after"] == bytes_after,
             f"report bytes_after {report['bytes_after']} != {bytes_after}")
    need(report["quantized"] == quantized and report["kept"] == kept,
         f"report quantized/kept {report['quantized']}/{report['kept']} != {quantized}/{kept}")
    need(quantized > 0, "nothing was quantized")
    overall = report["error"]
    need(math.isclose(overall["max_abs"], worst, rel_tol=1e-9),
         f"overall max_abs {overall['max_abs']} != {worst}")
    if quant_path.endswith(".safetensors"):
        # issue 8: int8 in safetensors carries a compressed-tensors quantization section (the
        # casts are plain safetensors dtypes and need none).
        if scheme == "int8":
            need("quantization_config" in qmeta, f"no quantization_config in {sorted(qmeta)}")
            cfg = json.loads(qmeta["quantization_config"])
            need(isinstance(cfg, dict), "quantization_config is not a JSON object")
            check_compressed_tensors(cfg, per_tensor)
        need("quantization_config" not in dmeta, "dequantize kept quantization_config")
    if quant_path.endswith(".gguf") and scheme in FILE_TYPES:
        need(qmeta.get("general.file_type") == FILE_TYPES[scheme],
             f"general.file_type {qmeta.get('general.file_type')}, llama.cpp's "
             f"LLAMA_FTYPE_MOSTLY_{scheme.upper()} is {FILE_TYPES[scheme]}")
        if scheme in BLOCK_BYTES:
            need(qmeta.get("general.quantization_version") == QUANT_VERSION,
                 f"general.quantization_version {qmeta.get('general.quantization_version')}")
    print(f"ok: {scheme} {os.path.basename(quant_path)}: {quantized} quantized, {kept} kept, "
          f"max error {worst:.6g}")


def check_compressed_tensors(cfg, per_tensor):
    """compressed-tensors' description of symmetric 8-bit integer weights."""
    need(cfg.get("quant_method") == "compressed-tensors",
         f"quant_method {cfg.get('quant_method')!r}, want 'compressed-tensors'")
    groups = cfg.get("config_groups")
    need(isinstance(groups, dict) and groups, "no config_groups")
    for group in groups.values():
        w = group.get("weights") or {}
        need(w.get("num_bits") == 8 and w.get("type") == "int" and w.get("symmetric") is True,
             f"weights {w} are not symmetric 8-bit int")
        want = "tensor" if per_tensor else "channel"
        need(w.get("strategy") == want, f"strategy {w.get('strategy')!r}, want {want!r}")


def torch_int8(argv):
    import torch
    orig_path, pt_path, deq_path = argv[:3]
    per_tensor = "--per-tensor" in argv[3:]
    orig = load_original(orig_path)
    state = torch.load(pt_path, map_location="cpu", weights_only=True)
    dheader, _, draw = st_util.read(deq_path)
    checked = 0
    for name, x in orig.items():
        if not is_candidate("int8", x):
            t = state[name]
            need(t.numpy().tobytes() == x.tobytes(), f"{name}: kept tensor changed")
            continue
        q, s = state[name], state[name + "_scale"]
        need(q.dtype == torch.int8, f"{name}: torch reads {q.dtype}")
        need(s.dtype == torch.float32, f"{name}_scale: torch reads {s.dtype}")
        ours = np.frombuffer(draw[name], "<f4").reshape(x.shape)
        plain = (q.float() * s).numpy()
        need(plain.tobytes() == ours.tobytes(), f"{name}: q.float() * scale != modelport's")
        if per_tensor:
            qt = torch._make_per_tensor_quantized_tensor(q, float(s.reshape(())), 0)
            requant = torch.quantize_per_tensor(torch.from_numpy(x.copy()), float(s.reshape(())),
                                                0, torch.qint8)
        else:
            scales = s.reshape(-1).double()
            zeros = torch.zeros(scales.numel(), dtype=torch.int64)
            qt = torch._make_per_channel_quantized_tensor(q, scales, zeros, 0)
            requant = torch.quantize_per_channel(torch.from_numpy(x.copy()), scales, zeros, 0,
                                                 torch.qint8)
        need(qt.dequantize().numpy().tobytes() == ours.tobytes(),
             f"{name}: torch's quantized tensor dequantizes differently from modelport")
        # torch quantizes with x * (1 / scale) instead of x / scale: the two may round apart only
        # where x / scale sits at a tie (within a few ulps of k + 0.5).
        diff = requant.int_repr().numpy().astype(np.int64) - q.numpy().astype(np.int64)
        t = x.astype(np.float64) / np.broadcast_to(s.numpy().astype(np.float64), x.shape)
        near_tie = np.abs(np.abs(t - np.trunc(t)) - 0.5) < 1e-5
        need(np.all((diff == 0) | ((np.abs(diff) == 1) & near_tie)),
             f"{name}: torch.quantize_per_channel gives other int8 values away from ties")
        checked += 1
    need(checked > 0, "no int8 tensor in the checkpoint")
    print(f"ok: torch read {checked} int8 tensors and dequantized them as modelport does")


def gguf_node(argv):
    scheme, orig_path, gguf_path, node_path, inspect_path, deq_path = argv[:6]
    orig = load_original(orig_path)
    with open(node_path) as f:
        node = json.load(f)
    with open(inspect_path) as f:
        inspect = json.load(f)
    with open(gguf_path, "rb") as f:
        blob = f.read()
    dheader, _, draw = st_util.read(deq_path)
    ours = {t["name"]: t for t in inspect["tensors"]}
    theirs = {t["name"]: t for t in node["tensors"]}
    need(sorted(theirs) == sorted(orig), f"@huggingface/gguf lists {sorted(theirs)}")
    need(sorted(ours) == sorted(orig), f"modelport inspect lists {sorted(ours)}")
    need(node["metadata"].get("general.file_type") == FILE_TYPES[scheme],
         f"@huggingface/gguf reads general.file_type {node['metadata'].get('general.file_type')}")
    need(node["types"].get("general.file_type") == 4, "general.file_type is not a GGUF u32")
    need(node["metadata"].get("general.quantization_version") == QUANT_VERSION,
         "@huggingface/gguf reads general.quantization_version "
         f"{node['metadata'].get('general.quantization_version')}")
    base = node["tensor_data_offset"]
    count = 0
    for name, x in orig.items():
        t, o = theirs[name], ours[name]
        cand = is_candidate(scheme, x)
        if x.dtype == np.int32:
            want = "i32"
        else:
            want = scheme if cand else "f32"
        need(t["ggml_type"] == GGML_TYPES[want],
             f"{name}: @huggingface/gguf reads ggml type {t['ggml_type']}, "
             f"want {GGML_TYPES[want]} ({want})")
        need(t["dims"] == list(reversed(x.shape)), f"{name}: @huggingface/gguf dims {t['dims']}")
        need(o["dtype"] == want, f"{name}: modelport inspect says {o['dtype']}, want {want}")
        need(o["shape"] == list(x.shape), f"{name}: modelport inspect shape {o['shape']}")
        want_raw = quantize_blocks(scheme, x) if cand else x.tobytes()
        need(o["bytes"] == len(want_raw),
             f"{name}: modelport inspect bytes {o['bytes']} != {len(want_raw)}")
        at = base + t["offset"]
        need(blob[at:at + len(want_raw)] == want_raw,
             f"{name}: bytes at @huggingface/gguf's offset differ from the reference blocks")
        got = np.frombuffer(draw[name], "<f4" if x.dtype == np.float32 else "<i4")
        if cand:
            want_vals = dequantize_blocks(scheme, want_raw)
            need(got.tobytes() == want_vals.tobytes(), f"{name}: dequantized values differ")
            count += 1
        else:
            need(got.tobytes() == x.tobytes(), f"{name}: kept tensor changed")
    need(count > 0, "no tensor was quantized")
    print(f"ok: {scheme}: {count} block tensors agree with @huggingface/gguf and modelport inspect")


def main():
    cmd, argv = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "make":
            make(argv[0])
        elif cmd == "check":
            check(argv)
        elif cmd == "torch_int8":
            torch_int8(argv)
        elif cmd == "gguf_node":
            gguf_node(argv)
        else:
            raise Problem(f"unknown command {cmd}")
    except (Problem, st_util.Problem) as e:
        print(f"FAIL: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
