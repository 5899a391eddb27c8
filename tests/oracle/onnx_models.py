"""onnx (Debian's python3-onnx 1.12) and torch 1.13 as the oracle for modelport's ONNX reader
(run with /usr/bin/python3).

  make DIR            writes ONNX models to DIR and manifest.json listing, for every initializer,
                      {file, name, dtype, shape, raw}: raw is a file holding the bytes
                      onnx.numpy_helper.to_array gives (little-endian, C order; bfloat16 as its
                      bit patterns). The models: one initializer per element type made with
                      onnx.helper.make_tensor, in raw_data and in the typed fields (float8 is
                      newer than onnx 1.12: its TensorProtos are filled by hand); a
                      torch.onnx.export of a Linear/Conv/LayerNorm model inline, with all its
                      weights in one external file, and with one external file per tensor
                      (onnx.save_model(save_as_external_data=True, size_threshold=0)).
  dump OUT MODEL...   the same manifest for existing models (the golden files, libonnx-testdata);
                      each model also gets {file, graph} with its inputs, outputs, opsets,
                      ir_version, producer and node count by op type.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from numpy_arrays import values as numpy_values  # tests/oracle, beside this script

MP_NAMES = {
    TensorProto.FLOAT: "f32", TensorProto.UINT8: "u8", TensorProto.INT8: "i8",
    TensorProto.UINT16: "u16", TensorProto.INT16: "i16", TensorProto.INT32: "i32",
    TensorProto.INT64: "i64", TensorProto.BOOL: "bool", TensorProto.FLOAT16: "f16",
    TensorProto.DOUBLE: "f64", TensorProto.UINT32: "u32", TensorProto.UINT64: "u64",
    TensorProto.COMPLEX64: "c64", TensorProto.BFLOAT16: "bf16", 17: "f8_e4m3", 19: "f8_e5m2",
}


def expected_bytes(tensor, base_dir):
    """The bytes numpy_helper reads for `tensor`, as modelport lays them out."""
    a = numpy_helper.to_array(tensor, base_dir)
    if tensor.data_type == TensorProto.BFLOAT16:  # to_array widens bf16 to f32 exactly
        return (np.ascontiguousarray(a, dtype=np.float32).view(np.uint32) >> 16).astype(
            "<u2").tobytes()
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()


class Manifest:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.entries = []

    def add(self, file, name, data_type, dims, raw):
        path = "%04d.raw" % len(self.entries)
        with open(os.path.join(self.out_dir, path), "wb") as f:
            f.write(raw)
        self.entries.append({"file": file, "name": name, "dtype": MP_NAMES.get(data_type, "?"),
                             "shape": list(dims), "raw": path})

    def add_model(self, file):
        """Every initializer of the model at `file` (relative to out_dir or absolute)."""
        path = file if os.path.isabs(file) else os.path.join(self.out_dir, file)
        model = onnx.load(path, load_external_data=False)
        for t in model.graph.initializer:
            if t.data_type not in MP_NAMES:  # modelport must refuse it, naming the tensor
                self.entries.append({"file": file, "name": t.name, "unsupported": True})
                continue
            self.add(file, t.name, t.data_type, t.dims,
                     expected_bytes(t, os.path.dirname(path)))
        return model

    def save(self):
        with open(os.path.join(self.out_dir, "manifest.json"), "w") as f:
            json.dump(self.entries, f, indent=1)


def values(data_type, shape, rng):
    """Random values of an ONNX element type, as numpy_arrays.py makes them (with specials)."""
    return numpy_values(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[data_type], shape, rng)


def graph_of(initializers, name="g"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    node = helper.make_node("Identity", ["x"], ["y"])
    return helper.make_graph([node], name, [x], [y], initializer=initializers)


def save(model, path):
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


def make_dtypes(out_dir, manifest, raw):
    rng = np.random.default_rng(7 if raw else 8)
    tensors = []
    direct = {}  # name -> expected bytes where numpy_helper cannot say (see below)
    for data_type in [TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.UINT16,
                      TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL,
                      TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.UINT32,
                      TensorProto.UINT64, TensorProto.COMPLEX64]:
        name = "t_" + TensorProto.DataType.Name(data_type).lower()
        a = values(data_type, (3, 5), rng)
        if raw:
            t = numpy_helper.from_array(a, name)
        else:
            vals = a.flatten().tolist()
            if data_type == TensorProto.FLOAT16:
                vals = a.view(np.uint16).flatten().tolist()
            t = helper.make_tensor(name, data_type, a.shape, vals, raw=False)
            if data_type == TensorProto.COMPLEX64:
                # onnx 1.12's to_array fails on complex float_data (it casts the recombined
                # complex values to float32); the array make_tensor was given is the truth.
                direct[name] = a.astype("<c8").tobytes()
        tensors.append(t)
    # bfloat16: bit patterns in int32_data, or their bytes in raw_data.
    bits = rng.integers(0, 65536, size=(4, 3), dtype=np.uint16)
    bits.reshape(-1)[:3] = [0x7F80, 0xFF80, 0x8000]  # inf, -inf, -0
    t = TensorProto(name="t_bfloat16", data_type=TensorProto.BFLOAT16, dims=[4, 3])
    if raw:
        t.raw_data = bits.astype("<u2").tobytes()
    else:
        t.int32_data.extend(bits.reshape(-1).tolist())
    tensors.append(t)
    # float8 (FLOAT8E4M3FN = 17, FLOAT8E5M2 = 19): not in onnx 1.12's helpers.
    for code in (17, 19):
        b = rng.integers(0, 256, size=(2, 7), dtype=np.uint8)
        t = TensorProto(name="t_float8_%d" % code, data_type=code, dims=[2, 7])
        if raw:
            t.raw_data = b.tobytes()
        else:
            t.int32_data.extend(b.reshape(-1).tolist())
        tensors.append(t)
        direct[t.name] = b.tobytes()
    # A scalar and an empty tensor.
    tensors.append(numpy_helper.from_array(np.array(3.5, dtype=np.float32), "t_scalar"))
    tensors.append(numpy_helper.from_array(np.zeros((0, 4), dtype=np.int64), "t_empty"))
    file = "dtypes_raw.onnx" if raw else "dtypes_typed.onnx"
    model = helper.make_model(graph_of(tensors, "dtypes"), producer_name="oracle")
    helper.set_model_props(model, {"author": "modelport tests", "license": "MIT"})
    save(model, os.path.join(out_dir, file))
    for t in tensors:
        raw_bytes = direct[t.name] if t.name in direct else expected_bytes(t, out_dir)
        manifest.add(file, t.name, t.data_type, t.dims, raw_bytes)


def conv_norm_linear():
    """The small Conv2d / LayerNorm / Linear model (input [N, 3, 6, 6]) the torch exports of
    the ONNX oracles use, in eval mode, initialised from torch's current seed."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.norm = torch.nn.LayerNorm(8)
            self.fc = torch.nn.Linear(8 * 6 * 6, 10)

        def forward(self, x):
            h = self.conv(x).permute(0, 2, 3, 1)
            h = self.norm(h)
            return self.fc(torch.relu(h).flatten(1))

    return Net().eval()


def make_torch(out_dir, manifest):
    import torch

    torch.manual_seed(3)
    net = conv_norm_linear()
    x = torch.randn(2, 3, 6, 6)
    inline = os.path.join(out_dir, "torch_inline.onnx")
    torch.onnx.export(net, x, inline, input_names=["x"], output_names=["y"], opset_version=13,
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    manifest.add_model("torch_inline.onnx")
    model = onnx.load(inline)
    onnx.save_model(model, os.path.join(out_dir, "torch_one.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="torch_one.weights",
                    size_threshold=0)
    manifest.add_model("torch_one.onnx")
    many = os.path.join(out_dir, "many")
    os.makedirs(many)
    model = onnx.load(inline)
    onnx.save_model(model, os.path.join(many, "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)
    manifest.add_model("many/model.onnx")


def graph_summary(model):
    init = {t.name for t in model.graph.initializer}

    def value(v):
        tt = v.type.tensor_type
        dims = None
        if tt.HasField("shape"):
            dims = [str(d.dim_value) if d.HasField("dim_value") else
                    (d.dim_param if d.HasField("dim_param") else "?") for d in tt.shape.dim]
        return {"name": v.name, "elem_type": tt.elem_type, "shape": dims}

    ops = {}
    for n in model.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else n.domain + "." + n.op_type
        ops[key] = ops.get(key, 0) + 1
    return {
        "ir_version": model.ir_version, "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "opset_import": {o.domain: o.version for o in model.opset_import},
        "inputs": [value(v) for v in model.graph.input if v.name not in init],
        "outputs": [value(v) for v in model.graph.output],
        "node_count": len(model.graph.node), "op_counts": ops,
        "metadata_props": {p.key: p.value for p in model.metadata_props},
    }


def main():
    cmd = sys.argv[1]
    if cmd == "make":
        out_dir = sys.argv[2]
        manifest = Manifest(out_dir)
        make_dtypes(out_dir, manifest, raw=True)
        make_dtypes(out_dir, manifest, raw=False)
        make_torch(out_dir, manifest)
        manifest.save()
    elif cmd == "dump":
        out_dir = sys.argv[2]
        manifest = Manifest(out_dir)
        graphs = []
        for file in sys.argv[3:]:
            model = manifest.add_model(file)
            graphs.append({"file": file, "graph": graph_summary(model)})
        manifest.save()
        with open(os.path.join(out_dir, "graphs.json"), "w") as f:
            json.dump(graphs, f, indent=1)
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
