"""numpy as the oracle for modelport's .npy/.npz support (run with /usr/bin/python3).

  make DIR            numpy writes .npy files of every numeric and bool dtype, both byte orders,
                      C and Fortran order, format versions 1.0/2.0/3.0, 0-d and empty arrays, and
                      .npz archives stored (savez) and deflated (savez_compressed). Each array's
                      expected content is dumped as raw little-endian C-order bytes; manifest.json
                      lists {file, name, dtype, shape, raw}.
  dump DIR OUT        the same manifest for existing .npy/.npz files in DIR (the golden files).
  check MANIFEST      numpy reads the files modelport wrote (listed like the above, with "key"
                      for .npz members) and finds exactly the expected dtype, shape and bytes.
"""
import json
import os
import sys
import zipfile

import numpy as np

# numpy dtype name -> modelport's canonical dtype name.
MP_NAMES = {
    "bool": "bool", "uint8": "u8", "int8": "i8", "int16": "i16", "uint16": "u16",
    "float16": "f16", "int32": "i32", "uint32": "u32", "float32": "f32", "float64": "f64",
    "int64": "i64", "uint64": "u64", "complex64": "c64",
}


def values(dtype, shape, rng):
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    a = (rng.standard_normal(shape) * 100).astype(dt)
    flat = a.reshape(-1)
    if flat.size >= 4:  # specials survive bit-exactly
        flat[:4] = [np.inf, -np.inf, -0.0, np.nan]
    return a


def raw_le_c(a):
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()


def record(out_dir, manifest, file, name, a):
    raw = f"{len(manifest):04d}.raw"
    with open(os.path.join(out_dir, raw), "wb") as f:
        f.write(raw_le_c(a))
    manifest.append({"file": file, "name": name, "dtype": MP_NAMES[a.dtype.name],
                     "shape": list(a.shape), "raw": raw})


def make(out_dir):
    rng = np.random.default_rng(5)
    manifest = []
    for dtype in MP_NAMES:
        for order in "<>":
            if np.dtype(dtype).itemsize == 1 and order == ">":
                continue
            dt = np.dtype(dtype).newbyteorder(order)
            for layout in "CF":
                for version in [(1, 0), (2, 0), (3, 0)]:
                    a = values(dtype, (3, 4, 5), rng).astype(dt)
                    a = np.asfortranarray(a) if layout == "F" else np.ascontiguousarray(a)
                    stem = f"{dtype}_{'be' if order == '>' else 'le'}_{layout}_v{version[0]}"
                    with open(os.path.join(out_dir, stem + ".npy"), "wb") as f:
                        np.lib.format.write_array(f, a, version=version)
                    record(out_dir, manifest, stem + ".npy", stem, a)
    specials = {
        "scalar_f64": np.array(3.25, dtype=">f8"),
        "scalar_bool": np.array(True),
        "empty_f32": np.zeros((0, 3), dtype="<f4"),
        "empty_fortran_i16": np.asfortranarray(np.zeros((2, 0, 3), dtype=">i2")),
        "vector_c64": values("complex64", (7,), rng),
    }
    for stem, a in specials.items():
        np.save(os.path.join(out_dir, stem + ".npy"), a)
        record(out_dir, manifest, stem + ".npy", stem, a)
    members = {
        "layer.0.weight": values("float32", (4, 6), rng),
        "layer.0.bias": values("float16", (6,), rng),
        "big_endian": values("int32", (2, 3), rng).astype(">i4"),
        "fortran": np.asfortranarray(values("float64", (3, 5), rng)),
        "nested/name": values("uint8", (9,), rng),
        "flags": values("bool", (5,), rng),
        "scalar": np.array(7, dtype="<i8"),
        "empty": np.zeros((0,), dtype="<u2"),
    }
    np.savez(os.path.join(out_dir, "stored.npz"), **members)
    np.savez_compressed(os.path.join(out_dir, "deflated.npz"), **members)
    for file in ("stored.npz", "deflated.npz"):
        for name, a in members.items():
            record(out_dir, manifest, file, name, a)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def dump(in_dir, out_dir):
    manifest = []
    for file in sorted(os.listdir(in_dir)):
        path = os.path.join(in_dir, file)
        if file.endswith(".npy"):
            record(out_dir, manifest, path, file[:-4], np.load(path, allow_pickle=False))
        elif file.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                for name in z.files:
                    record(out_dir, manifest, path, name, z[name])
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def check(manifest_path):
    base = os.path.dirname(manifest_path)
    with open(manifest_path) as f:
        manifest = json.load(f)
    problems = []
    checked_zips = set()
    for e in manifest:
        path = os.path.join(base, e["file"])
        if path.endswith(".npz"):
            if path not in checked_zips:
                with zipfile.ZipFile(path) as z:
                    bad = z.testzip()
                    if bad is not None:
                        problems.append(f"{path}: zipfile.testzip() fails at {bad}")
                checked_zips.add(path)
            with np.load(path, allow_pickle=False) as z:
                a = z[e["key"]]
        else:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                np.lib.format._read_array_header(f, version)
                if f.tell() % 64:
                    problems.append(f"{path}: data starts at {f.tell()}, not 64-aligned")
            a = np.load(path, allow_pickle=False)
        with open(os.path.join(base, e["raw"]), "rb") as f:
            raw = f.read()
        want = np.dtype(next(k for k, v in MP_NAMES.items() if v == e["dtype"]))
        where = f"{e['file']}:{e.get('key', '')}"
        if a.dtype.newbyteorder("<") != want.newbyteorder("<") or a.dtype.byteorder == ">":
            problems.append(f"{where}: dtype {a.dtype.str}, expected little-endian {want}")
        elif list(a.shape) != e["shape"]:
            problems.append(f"{where}: shape {a.shape}, expected {e['shape']}")
        elif np.ascontiguousarray(a).tobytes() != raw:
            problems.append(f"{where}: values differ")
    for p in problems:
        print(p)
    print(f"checked {len(manifest)} arrays, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2])
    elif cmd == "dump":
        dump(sys.argv[2], sys.argv[3])
    elif cmd == "check":
        sys.exit(check(sys.argv[2]))
    else:
        sys.exit(f"unknown command {cmd}")
