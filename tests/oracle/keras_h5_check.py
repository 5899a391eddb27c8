"""Keras HDF5 oracle for modelport's tests, using Debian's h5py (no Keras needed).

  make DIR            writes into DIR, exactly as Keras does with h5py:
                        k2_full.h5       model.save("m.h5") layout (Keras 2)
                        k2_weights.h5    model.save_weights("w.h5") layout (Keras 2)
                        k3.weights.h5    Keras 3 model.save_weights layout
                        k3.keras         Keras 3 archive (metadata.json, config.json, weights)
                        hostile_*.h5     files modelport must refuse
                      and expect.json: {file: {tensor name: {"dtype", "shape", "values"}}}
  check DIR           checks DIR/out_k2.h5 (Keras 2 save_weights layout) and
                      DIR/out_k3.weights.h5 (Keras 3 layout) written by modelport from the
                      model `Model()` below describes; prints "ok" or one line and exits 1.
Values follow one formula on both sides: element i of tensor number k is ((i * 7 + k) % 13) - 6
(times 0.25 for floats; != 0 for bool).
"""
import json
import os
import sys
import zipfile

import h5py
import numpy as np


def values(k, dtype, shape):
    n = int(np.prod(shape)) if shape else 1
    v = (np.arange(n, dtype=np.int64) * 7 + k) % 13 - 6
    if dtype == np.bool_:
        a = v != 0
    elif np.issubdtype(dtype, np.floating):
        a = (v * 0.25).astype(dtype)
    else:
        a = v.astype(np.int64).astype(dtype) if np.issubdtype(dtype, np.signedinteger) else (v + 6).astype(dtype)
    return a.reshape(shape)


# The model both sides build: (canonical name, numpy dtype, shape).
def Model():
    return [
        ("dense/kernel", np.float32, (4, 3)),
        ("dense/bias", np.float32, (3,)),
        ("bn/gamma", np.float32, (3,)),
        ("bn/beta", np.float32, (3,)),
        ("bn/moving_mean", np.float32, (3,)),
        ("bn/moving_variance", np.float32, (3,)),
        ("lstm/lstm_cell/kernel", np.float32, (3, 8)),
        ("lstm/lstm_cell/recurrent_kernel", np.float32, (2, 8)),
        ("lstm/lstm_cell/bias", np.float32, (8,)),
        ("emb/embeddings", np.float16, (5, 2)),
        ("counts/table", np.int64, (2, 2)),
        ("flags/mask", np.bool_, (3,)),
        ("scalar/step", np.float64, ()),
    ]


DTYPE_NAMES = {np.float32: "f32", np.float16: "f16", np.float64: "f64", np.int64: "i64",
               np.bool_: "bool", np.int8: "i8", np.uint8: "u8", np.int32: "i32"}


def record(expect, fname, name, arr):
    expect.setdefault(fname, {})[name] = {
        "dtype": DTYPE_NAMES[arr.dtype.type], "shape": list(arr.shape),
        "values": arr.astype(np.float64).ravel().tolist()}


def save_attributes(group, name, data):
    # keras hdf5_format.save_attributes_to_hdf5_group, as Keras 2 runs it.
    data_npy = np.asarray(data)
    group.attrs[name] = data_npy if len(data) else data


def write_keras2_layers(f, layers, expect, fname):
    # keras hdf5_format.save_weights_to_hdf5_group: layer_names, backend, keras_version, then one
    # group per layer (sorted by name) with weight_names and a dataset per weight.
    save_attributes(f, "layer_names", [n.encode("utf8") for n, _ in layers])
    f.attrs["backend"] = np.bytes_(b"tensorflow")
    f.attrs["keras_version"] = np.bytes_(b"2.13.1")
    k = 0
    for lname, weights in sorted(layers, key=lambda x: x[0]):
        g = f.create_group(lname)
        names = [w.encode("utf8") for w, _, _ in weights]
        save_attributes(g, "weight_names", names)
        for wname, dtype, shape in weights:
            val = values(k, dtype, shape)
            k += 1
            d = g.create_dataset(wname, val.shape, dtype=val.dtype)
            if not val.shape:
                d[()] = val
            else:
                d[:] = val
            record(expect, fname, wname[:-2] if wname.endswith(":0") else wname, val)


KERAS2_LAYERS = [
    ("dense", [("dense/kernel:0", np.float32, (4, 3)), ("dense/bias:0", np.float32, (3,))]),
    ("dropout", []),
    ("batch_normalization", [
        ("batch_normalization/gamma:0", np.float32, (3,)),
        ("batch_normalization/beta:0", np.float32, (3,)),
        ("batch_normalization/moving_mean:0", np.float32, (3,)),
        ("batch_normalization/moving_variance:0", np.float32, (3,))]),
    ("lstm", [("lstm/lstm_cell/kernel:0", np.float32, (3, 8)),
              ("lstm/lstm_cell/recurrent_kernel:0", np.float32, (2, 8)),
              ("lstm/lstm_cell/bias:0", np.float32, (8,))]),
    ("embedding", [("embedding/embeddings:0", np.float16, (5, 2))]),
    ("mask", [("mask/flags:0", np.bool_, (3,)), ("mask/step:0", np.int64, ())]),
]

CONFIG = {"module": "keras", "class_name": "Sequential", "config": {"name": "seq", "layers": [
    {"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "units": 3}},
    {"module": "keras.layers", "class_name": "BatchNormalization",
     "config": {"name": "bn", "center": True, "scale": True}},
    {"module": "keras.layers", "class_name": "LSTM", "config": {"name": "lstm", "units": 2}},
    {"module": "keras.layers", "class_name": "Lambda",
     "config": {"name": "lam", "function": "c29tZSBjb2Rl"}},
    {"module": "evil.module", "class_name": "Custom", "config": {"name": "custom"}},
    {"module": "keras.layers", "class_name": "Embedding", "config": {"name": "emb"}}]}}


def write_keras3(path, expect, fname):
    # keras saving_lib H5IOStore: a "vars" group per saveable object, datasets "0".."n-1".
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        k = 100
        def layer(obj, weights):
            nonlocal k
            g = f.create_group(obj).create_group("vars")
            for i, (name, dtype, shape) in enumerate(weights):
                val = values(k, dtype, shape)
                k += 1
                g[str(i)] = val
                record(expect, fname, name, val)
        f.create_group("layers")
        layer("layers/dense", [("dense/kernel", np.float32, (4, 3)), ("dense/bias", np.float32, (3,))])
        layer("layers/bn", [("bn/gamma", np.float32, (3,)), ("bn/beta", np.float32, (3,)),
                            ("bn/moving_mean", np.float32, (3,)), ("bn/moving_variance", np.float32, (3,))])
        f.create_group("layers/lstm").create_group("vars")
        layer("layers/lstm/cell", [("lstm/lstm_cell/kernel", np.float32, (3, 8)),
                                   ("lstm/lstm_cell/recurrent_kernel", np.float32, (2, 8)),
                                   ("lstm/lstm_cell/bias", np.float32, (8,))])
        layer("layers/emb", [("emb/embeddings", np.float16, (5, 2))])
        f.create_group("layers/lam").create_group("vars")
        many = [("many/w%d" % i, np.int8, (2,)) for i in range(12)]
        layer("layers/many", many)


def make(d):
    expect = {}
    with h5py.File(os.path.join(d, "k2_full.h5"), "w") as f:
        f.attrs["keras_version"] = np.bytes_(b"2.13.1")
        f.attrs["backend"] = np.bytes_(b"tensorflow")
        f.attrs["model_config"] = json.dumps(CONFIG).encode("utf8")
        f.attrs["training_config"] = json.dumps({"loss": "mse"}).encode("utf8")
        write_keras2_layers(f.create_group("model_weights"), KERAS2_LAYERS, expect, "k2_full.h5")
        opt = f.create_group("optimizer_weights")
        opt.attrs["weight_names"] = [b"iter:0"]
        opt["iter:0"] = np.int64(3)
    with h5py.File(os.path.join(d, "k2_weights.h5"), "w") as f:
        write_keras2_layers(f, KERAS2_LAYERS, expect, "k2_weights.h5")
    write_keras3(os.path.join(d, "k3.weights.h5"), expect, "k3.weights.h5")
    with zipfile.ZipFile(os.path.join(d, "k3.keras"), "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.3.3", "date_saved": "2024"}))
        z.writestr("config.json", json.dumps(CONFIG))
        with open(os.path.join(d, "k3.weights.h5"), "rb") as w:
            z.writestr("model.weights.h5", w.read())
    expect["k3.keras"] = expect["k3.weights.h5"]

    # Hostile files: each holds one thing modelport refuses.
    def base(name):
        f = h5py.File(os.path.join(d, name), "w")
        f.create_group("layers/ok/vars")["0"] = np.ones(3, np.float32)
        return f
    with base("hostile_external_link.h5") as f:
        f["layers/ok/vars/1"] = h5py.ExternalLink("/etc/passwd", "/x")
    with base("hostile_soft_link.h5") as f:
        f["layers/ok/vars/1"] = h5py.SoftLink("/layers/ok/vars/0")
    with open(os.path.join(d, "raw.bin"), "wb") as r:
        r.write(b"\0" * 12)
    with base("hostile_external_storage.h5") as f:
        f.create_dataset("layers/ok/vars/1", (3,), np.float32, external=[("raw.bin", 0, 12)])
    for fname, fid in (("hostile_unknown_filter.h5", 200), ("hostile_plugin_filter.h5", 32001)):
        with base(fname) as f:
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_chunk((3,))
            dcpl.set_filter(fid, h5py.h5z.FLAG_OPTIONAL, (1, 2))
            space = h5py.h5s.create_simple((3,))
            ds = h5py.h5d.create(f["layers/ok/vars"].id, b"1", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
            ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ones(3, np.float32))
    with base("chunked_deflate.h5") as f:
        f.create_dataset("layers/ok/vars/1", data=np.arange(1000, dtype=">f4"),
                         chunks=(100,), compression="gzip", shuffle=True, fletcher32=True)
    with open(os.path.join(d, "expect.json"), "w") as out:
        json.dump(expect, out)
    print("ok")


def fail(msg):
    print(msg)
    sys.exit(1)


def check_dataset(ds, k, dtype, shape, where):
    want = values(k, dtype, shape)
    if ds.dtype != want.dtype:
        fail("%s: dtype %s, want %s" % (where, ds.dtype, want.dtype))
    if ds.shape != want.shape:
        fail("%s: shape %s, want %s" % (where, ds.shape, want.shape))
    if not np.array_equal(ds[()], want):
        fail("%s: values differ" % where)
    if ds.chunks is not None or ds.compression is not None:
        fail("%s: not contiguous" % where)


def check_fixed_bytes(attrs, name, want, where):
    a = attrs.get_id(name)
    t = a.get_type()
    if t.get_class() != h5py.h5t.STRING or t.is_variable_str():
        fail("%s: attribute %s is not a fixed-length string" % (where, name))
    got = attrs[name]
    got = [x for x in np.atleast_1d(got).tolist()]
    if got != want:
        fail("%s: attribute %s is %r, want %r" % (where, name, got, want))


def check(d):
    model = Model()
    # Keras 2 save_weights layout.
    path = os.path.join(d, "out_k2.h5")
    with h5py.File(path, "r") as f:
        layers = []
        for name, _, _ in model:
            lname = name.split("/")[0]
            if lname not in layers:
                layers.append(lname)
        check_fixed_bytes(f.attrs, "layer_names", [l.encode() for l in layers], path)
        check_fixed_bytes(f.attrs, "backend", [b"tensorflow"], path)
        check_fixed_bytes(f.attrs, "keras_version", [b"2.15.0"], path)
        if sorted(f.keys()) != sorted(layers):
            fail("%s: root groups %s, want %s" % (path, sorted(f.keys()), sorted(layers)))
        for lname in layers:
            wn = [(n + ":0").encode() for n, _, _ in model if n.split("/")[0] == lname]
            check_fixed_bytes(f[lname].attrs, "weight_names", wn, path + ":" + lname)
        for k, (name, dtype, shape) in enumerate(model):
            lname = name.split("/")[0]
            check_dataset(f[lname][name + ":0"], k, dtype, shape, "%s:%s/%s:0" % (path, lname, name))
    # Keras 3 layout: variables in Keras's order whatever the order modelport got them in.
    path = os.path.join(d, "out_k3.weights.h5")
    k_of = {name: k for k, (name, _, _) in enumerate(model)}
    spec = {name: (dtype, shape) for name, dtype, shape in model}
    want = {
        "layers/dense/vars": ["dense/kernel", "dense/bias"],
        "layers/bn/vars": ["bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"],
        "layers/lstm/vars": [],
        "layers/lstm/cell/vars": ["lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel",
                                  "lstm/lstm_cell/bias"],
        "layers/emb/vars": ["emb/embeddings"],
        "layers/counts/vars": ["counts/table"],
        "layers/flags/vars": ["flags/mask"],
        "layers/scalar/vars": ["scalar/step"],
        "vars": [],
    }
    with h5py.File(path, "r") as f:
        groups = []
        f.visit(lambda n: groups.append(n) if n.endswith("vars") else None)
        if sorted(groups) != sorted(want):
            fail("%s: vars groups %s, want %s" % (path, sorted(groups), sorted(want)))
        for g, names in want.items():
            if sorted(f[g].keys(), key=int) != [str(i) for i in range(len(names))]:
                fail("%s: %s holds %s" % (path, g, list(f[g].keys())))
            for i, name in enumerate(names):
                dtype, shape = spec[name]
                check_dataset(f[g][str(i)], k_of[name], dtype, shape, "%s:%s/%d" % (path, g, i))
    print("ok")


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](sys.argv[2])
