#!/usr/bin/python3
"""Peer timings for modelport_bench: torch.load/torch.save and numpy np.load/np.save of the
same weights as the benchmark's model.safetensors. Run with Debian's /usr/bin/python3 (it has
python3-torch and python3-numpy). Prints one JSON object on stdout (times in ms, one per rep);
progress goes to stderr.

  /usr/bin/python3 bench/peers.py --dir DIR --model DIR/model.safetensors --reps 5

With --onnx PATH it only times onnx.load of that ONNX model (python3-onnx) and prints
{"onnx_load_ms": [...], "versions": ...}.

Inputs it makes once and reuses while they are newer than the model: DIR/model.pt (the state
dict, torch.save'd) and DIR/model.npy (every tensor's bytes as one flat float32 array, 1 GiB:
the fair numpy peer for "load into owned memory"). Scratch outputs are deleted after each rep.
"""

import argparse
import gc
import json
import os
import struct
import sys
import time

ST_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
             "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
             "BOOL": "bool"}


def log(*args):
    print("peers:", *args, file=sys.stderr, flush=True)


def read_safetensors(path):
    """(header dict without __metadata__, data section as a bytearray)."""
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    return header, memoryview(raw)[8 + n:]


def state_dict_from(header, data, torch):
    sd = {}
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = entry["data_offsets"]
        dtype = getattr(torch, ST_DTYPES[entry["dtype"]])
        size = torch.empty((), dtype=dtype).element_size()
        t = torch.frombuffer(data, dtype=dtype, count=(end - begin) // size, offset=begin)
        sd[name] = t.reshape(entry["shape"]).clone()
    return sd


def warm(path):
    """Reads the file once so the timed loads come from the page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass


def is_fresh(path, source):
    return os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(source)


def timed(reps, body, after=None):
    """Times `body` reps times after one untimed warm-up run; `after` runs untimed after each."""
    times = []
    for rep in range(reps + 1):
        gc.collect()
        start = time.perf_counter()
        result = body()
        if rep > 0:
            times.append((time.perf_counter() - start) * 1e3)
        del result
        if after:
            after()
    return times


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def onnx_peer(args):
    """`--onnx PATH`: onnx.load of the model, weights and all (the bench runs this after it has
    made its ONNX inputs, so it is a mode of its own)."""
    out = {"versions": "python " + sys.version.split()[0], "skipped": []}
    try:
        import onnx
        out["versions"] += ", onnx " + onnx.__version__
    except ImportError as e:
        out["skipped"].append("onnx: " + str(e))
        print(json.dumps(out))
        return
    warm(args.onnx)
    log("onnx.load x", args.reps)
    out["onnx_load_ms"] = timed(args.reps, lambda: onnx.load(args.onnx))
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--model", required=True, help="the benchmark's model.safetensors")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--onnx", help="only time onnx.load of this (inline) ONNX model")
    args = ap.parse_args()
    if args.onnx:
        onnx_peer(args)
        return
    out = {"versions": "python " + sys.version.split()[0], "skipped": []}
    pt_path = os.path.join(args.dir, "model.pt")
    npy_path = os.path.join(args.dir, "model.npy")
    scratch_pt = os.path.join(args.dir, "peer_save.pt")
    scratch_npy = os.path.join(args.dir, "peer_save.npy")

    try:
        import numpy as np
        out["versions"] += ", numpy " + np.__version__
    except ImportError as e:
        np = None
        out["skipped"].append("numpy: " + str(e))
    try:
        import torch
        out["versions"] += ", torch " + torch.__version__
        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError as e:
        torch = None
        out["skipped"].append("torch: " + str(e))

    header, data = read_safetensors(args.model)
    total = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in header.values())

    if torch is not None:
        sd = state_dict_from(header, data, torch)
        if not is_fresh(pt_path, args.model):
            log("writing", pt_path)
            torch.save(sd, pt_path)
        warm(pt_path)
        log("torch.load x", args.reps)
        loaded = torch.load(pt_path)
        # The peer must load the same weights the bench's model holds.
        for name in (next(iter(sd)), next(reversed(sd))):
            if not torch.equal(loaded[name], sd[name]):
                raise SystemExit("peers: " + pt_path + ": tensor " + name + " differs")
        del loaded
        out["torch_load_ms"] = timed(args.reps, lambda: torch.load(pt_path))
        log("torch.save x", args.reps)
        out["torch_save_ms"] = timed(args.reps, lambda: torch.save(sd, scratch_pt),
                                     lambda: remove(scratch_pt))

        def save_fsync():
            with open(scratch_pt, "wb") as f:
                torch.save(sd, f)
                f.flush()
                os.fsync(f.fileno())

        out["torch_save_fsync_ms"] = timed(args.reps, save_fsync, lambda: remove(scratch_pt))
        # The peer of `modelport convert model.pt out`: load the checkpoint, save its weights.
        log("torch.load + torch.save x", args.reps)
        out["torch_load_save_ms"] = timed(args.reps, lambda: torch.save(torch.load(pt_path),
                                                                        scratch_pt),
                                          lambda: remove(scratch_pt))
        out["pt_bytes"] = os.path.getsize(pt_path)
        del sd

    if np is not None:
        flat = np.frombuffer(data, dtype=np.float32, count=total // 4)
        if not is_fresh(npy_path, args.model):
            log("writing", npy_path)
            np.save(npy_path, flat)
        warm(npy_path)
        log("np.load x", args.reps)
        out["np_load_ms"] = timed(args.reps, lambda: np.load(npy_path))
        log("np.save x", args.reps)
        out["np_save_ms"] = timed(args.reps, lambda: np.save(scratch_npy, flat),
                                  lambda: remove(scratch_npy))
        out["npy_bytes"] = os.path.getsize(npy_path)
        del flat

    out["tensor_bytes"] = total
    print(json.dumps(out))


if __name__ == "__main__":
    main()
