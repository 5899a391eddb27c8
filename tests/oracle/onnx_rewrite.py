"""onnx 1.12 and torch 1.13 (Debian's, run with /usr/bin/python3) as the oracle for models that
modelport rewrites (`modelport onnx rewrite`, `modelport onnx set-weights`).

  check MODEL...        onnx.checker.check_model on each path (the path form, which follows
                        external data and accepts models past 2 GiB); prints {path: "ok" or the
                        checker's message} and exits 1 if any failed.
  feeds OUT MODEL...    inputs for onnxruntime: a model's folder's test_data_set_0/input_N.pb
                        (libonnx-testdata) when present, else seeded random values for each
                        graph input with fixed dims (symbolic dims become 2). Writes .npy files
                        to OUT; prints {model: ["NAME=FILE.npy", ...]} (models with inputs that
                        are not tensors are left out).
  tuned DIR             a torch model exported to DIR/model.onnx with its weights named as in its
                        state dict; DIR/x.npy an input; DIR/tuned.pt new weights for every
                        parameter (a fine-tune) and DIR/tuned_y.npy what torch computes with
                        them; DIR/y.npy what the original weights compute; DIR/extra.pt the
                        new weights plus one the graph does not have; DIR/wrong.pt the new
                        weights with fc.bias of the wrong shape.
  big DIR BYTES         DIR/big.onnx: y = Gather(w, idx) + b, w a u8 [BYTES] initializer in
                        external data DIR/w.bin (a sparse file with a few known bytes), b inline;
                        DIR/idx.npy the indices of the known bytes and DIR/y.npy their expected sum.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def check(paths):
    results, failed = {}, False
    for path in paths:
        try:
            onnx.checker.check_model(path)
            results[path] = "ok"
        except Exception as e:  # the checker raises ValidationError and friends
            results[path] = str(e).splitlines()[0] if str(e) else type(e).__name__
            failed = True
    print(json.dumps(results))
    return 1 if failed else 0


NP_OF = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64,
         TensorProto.FLOAT16: np.float16, TensorProto.INT64: np.int64,
         TensorProto.INT32: np.int32, TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8,
         TensorProto.BOOL: np.bool_}


def feeds(out_dir, models):
    rng = np.random.default_rng(7)
    result = {}
    for k, path in enumerate(models):
        model = onnx.load(path, load_external_data=False)
        init = {t.name for t in model.graph.initializer}
        inputs = [v for v in model.graph.input if v.name not in init]
        data_set = os.path.join(os.path.dirname(path), "test_data_set_0")
        arrays = []
        if os.path.isdir(data_set):
            for i, v in enumerate(inputs):
                pb = os.path.join(data_set, "input_%d.pb" % i)
                if not os.path.exists(pb):
                    break
                t = TensorProto()
                with open(pb, "rb") as f:
                    t.ParseFromString(f.read())
                arrays.append((v.name, numpy_helper.to_array(t)))
        else:
            for v in inputs:
                tt = v.type.tensor_type
                if not v.type.HasField("tensor_type") or tt.elem_type not in NP_OF:
                    break
                shape = [d.dim_value if d.HasField("dim_value") else 2 for d in tt.shape.dim]
                a = rng.standard_normal(shape).astype(NP_OF[tt.elem_type])
                arrays.append((v.name, a))
        if len(arrays) != len(inputs):
            continue
        pairs = []
        for i, (name, a) in enumerate(arrays):
            if a.dtype not in [np.dtype(t) for t in NP_OF.values()]:
                break
            file = os.path.join(out_dir, "%d_%d.npy" % (k, i))
            np.save(file, a)
            pairs.append("%s=%s" % (name, file))
        if len(pairs) == len(inputs):
            result[path] = pairs
    print(json.dumps(result))
    return 0


def tuned(out_dir):
    import torch

    from onnx_models import conv_norm_linear  # tests/oracle, beside this script

    torch.manual_seed(5)
    net = conv_norm_linear()
    x = torch.randn(2, 3, 6, 6)
    # Without constant folding every parameter stays an initializer named after its state-dict
    # key (folding may turn one into a renamed, transposed copy), which is what set-weights
    # matches on.
    torch.onnx.export(net, x, os.path.join(out_dir, "model.onnx"), input_names=["x"],
                      output_names=["y"], opset_version=13, do_constant_folding=False,
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    np.save(os.path.join(out_dir, "x.npy"), x.numpy())
    with torch.no_grad():
        np.save(os.path.join(out_dir, "y.npy"), net(x).numpy())
        new_state = {k: v * 1.5 + 0.125 for k, v in net.state_dict().items()}
        net.load_state_dict(new_state)
        np.save(os.path.join(out_dir, "tuned_y.npy"), net(x).numpy())
    torch.save(new_state, os.path.join(out_dir, "tuned.pt"))
    extra = dict(new_state)
    extra["head.weight"] = torch.zeros(3)
    torch.save(extra, os.path.join(out_dir, "extra.pt"))
    wrong = dict(new_state)
    wrong["fc.bias"] = torch.zeros(11)
    torch.save(wrong, os.path.join(out_dir, "wrong.pt"))
    return 0


def big(out_dir, size):
    marks = {0: 1, 1: 2, size // 2: 3, (1 << 31) + 5: 4, size - 1: 5}
    with open(os.path.join(out_dir, "w.bin"), "wb") as f:
        f.truncate(size)
        for pos, value in marks.items():
            f.seek(pos)
            f.write(bytes([value]))
    w = TensorProto()
    w.name = "w"
    w.data_type = TensorProto.UINT8
    w.dims.append(size)
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(size))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    b = numpy_helper.from_array(np.array([10], dtype=np.uint8), "b")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["w", "idx"], ["g"]), helper.make_node("Add", ["g", "b"], ["y"])],
        "big", [helper.make_tensor_value_info("idx", TensorProto.INT64, [len(marks)])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [len(marks)])], [w, b])
    model = helper.make_model(graph, producer_name="oracle",
                              opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    with open(os.path.join(out_dir, "big.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    np.save(os.path.join(out_dir, "idx.npy"), np.array(list(marks), dtype=np.int64))
    np.save(os.path.join(out_dir, "y.npy"), np.array(list(marks.values()), dtype=np.uint8) + 10)
    return 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "check":
        return check(args)
    if cmd == "feeds":
        return feeds(args[0], args[1:])
    if cmd == "tuned":
        return tuned(args[0])
    if cmd == "big":
        return big(args[0], int(args[1]))
    print("unknown command " + cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
