"""Models exported by Debian's torch 1.13 for the validation tests (issue 7), with torch's own
outputs as the expected values (run with /usr/bin/python3).

  validate_models.py OUT_DIR

For each of three models, built with a fixed seed and put in eval mode:
  mlp          Linear(16, 32) - ReLU - Linear(32, 8); x f32[4, 16] -> y f32[4, 8]
  cnn          Conv2d(3, 8, 3, pad 1) - BatchNorm2d - ReLU - MaxPool2d(2) - Conv2d(8, 8, 3, pad 1)
               - ReLU - BatchNorm2d - AvgPool2d(2) - Flatten - Linear(32, 10); both batch norms
               have random affine parameters and running statistics. The first follows its conv
               directly, so torch.onnx.export folds it into the conv's weights; the second does
               not, so the ONNX graph keeps a BatchNormalization node. The average pool keeps
               torch's default count_include_pad=True, which torch 1.13 exports as a Pad node
               (of zeros) before the AveragePool, so the graph exercises Pad too.
               x f32[2, 3, 8, 8] -> y f32[2, 10]
  transformer  TransformerEncoderLayer(d_model 32, nhead 4, dim_feedforward 64,
               batch_first=True); x f32[2, 5, 32] -> y f32[2, 5, 32]
it writes to OUT_DIR:
  NAME.pt             torch.jit.trace of the model, torch.jit.save'd (TorchScript)
  NAME.onnx           torch.onnx.export: opset 17 (ONNX_MAX_OPSET of torch 1.13) or 14 below
                      that, do_constant_folding=True, input "x", output "y"
  NAME.inputs.npz     {"x": the input}
  NAME.expected.npz   {"y": the eager model's output for x}
and, for the TorchScript backend's own tests:
  multi.pt            a scripted module forward(x f32, k i64, d f64, i i32, b bool) returning
                      (x * 2, (k + 1, (d * 0.5, i - 1)), ~b): nested tuples, every dtype
  multi.inputs.npz    {"x", "k", "d", "i", "b"}
  multi.expected.npz  {"output_0" .. "output_4"}: the outputs flattened depth-first
  dict_out.pt         a scripted module whose forward(x) returns a Dict[str, Tensor]
  state_dict.pt       torch.save of the MLP's state dict (a checkpoint, not TorchScript)
  broken_code.pt      mlp.pt with the Sequential class's code replaced by text that does not compile

The traced modules are checked against the eager outputs before anything is written. Prints one
JSON line: {"torch", "opset", "models": [{"name", "input_shape", "output_shape",
"onnx_ops": {op_type: count}, "forward_args", "parameters", "buffers"}], "multi": {"name",
"forward_args", "parameters", "buffers"}, "broken_code_error"}: the last three of each model
as torch.jit.load sees NAME.pt; broken_code_error the first line of torch.jit.load's error on
broken_code.pt.
"""
import json
import os
import sys
import zipfile
from typing import Dict, Tuple

import numpy as np
import onnx
import torch
from torch import nn

SEED = 20240607


def opset():
    try:
        from torch.onnx import _constants
        top = _constants.ONNX_MAX_OPSET
    except (ImportError, AttributeError):
        top = 14
    return 17 if top >= 17 else 14


def randomize_batch_norm(bn, g):
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.2)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)


def make_mlp(g):
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    return model, torch.randn(4, 16, generator=g)


def make_cnn(g):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))
    randomize_batch_norm(model[1], g)
    randomize_batch_norm(model[6], g)
    return model, torch.randn(2, 3, 8, 8, generator=g)


def make_transformer(g):
    model = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64,
                                       batch_first=True)
    return model, torch.randn(2, 5, 32, generator=g)


class Multi(nn.Module):
    def forward(self, x: torch.Tensor, k: torch.Tensor, d: torch.Tensor, i: torch.Tensor,
                b: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, Tuple[torch.Tensor,
                                                                                  torch.Tensor]],
                                          torch.Tensor]:
        return x * 2, (k + 1, (d * 0.5, i - 1)), torch.logical_not(b)


class DictOut(nn.Module):
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"y": x + 1}


def script_facts(module):
    """What torch.jit.load sees in a TorchScript file: forward's argument names (without self)
    and the parameter and buffer counts (recursive)."""
    return {"forward_args": [a.name for a in module.forward.schema.arguments[1:]],
            "parameters": len(list(module.parameters())), "buffers": len(list(module.buffers()))}


def onnx_ops(path):
    counts = {}
    for node in onnx.load(path).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def export(name, model, x, out_dir, version):
    model.eval()
    # Run and traced with autograd on, as torch.onnx.export traces: an eval-mode
    # TransformerEncoderLayer then takes its plain path (under no_grad it would call the fused
    # aten::_transformer_encoder_layer_fwd instead), so y, NAME.pt and NAME.onnx all hold the same
    # computation. The trace's own check reruns under no_grad, so it is off; the assert_close
    # below checks the trace instead.
    y = model(x).detach()
    traced = torch.jit.trace(model, (x,), check_trace=False)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), y, rtol=0, atol=1e-6)
    pt = os.path.join(out_dir, name + ".pt")
    traced.save(pt)
    onnx_path = os.path.join(out_dir, name + ".onnx")
    torch.onnx.export(model, (x,), onnx_path, opset_version=version, do_constant_folding=True,
                      input_names=["x"], output_names=["y"])
    onnx.checker.check_model(onnx.load(onnx_path))
    np.savez(os.path.join(out_dir, name + ".inputs.npz"), x=x.numpy())
    np.savez(os.path.join(out_dir, name + ".expected.npz"), y=y.numpy())
    return dict({"name": name, "input_shape": list(x.shape), "output_shape": list(y.shape),
                 "onnx_ops": onnx_ops(onnx_path)}, **script_facts(torch.jit.load(pt)))


def write_extras(out_dir, mlp, g):
    inputs = {
        "x": torch.randn(2, 3, generator=g),
        "k": torch.tensor([[-3, 0, 7]], dtype=torch.int64),
        "d": torch.randn(4, generator=g, dtype=torch.float64),
        "i": torch.tensor([5, -2], dtype=torch.int32),
        "b": torch.tensor([[True, False], [False, True]]),
    }
    multi = torch.jit.script(Multi())
    multi.save(os.path.join(out_dir, "multi.pt"))
    flat = []

    def flatten(v):
        if isinstance(v, tuple):
            for e in v:
                flatten(e)
        else:
            flat.append(v)

    flatten(multi(*inputs.values()))
    np.savez(os.path.join(out_dir, "multi.inputs.npz"), **{k: v.numpy() for k, v in inputs.items()})
    np.savez(os.path.join(out_dir, "multi.expected.npz"),
             **{"output_%d" % n: v.numpy() for n, v in enumerate(flat)})
    torch.jit.script(DictOut()).save(os.path.join(out_dir, "dict_out.pt"))
    torch.save(mlp.state_dict(), os.path.join(out_dir, "state_dict.pt"))
    # A TorchScript archive whose code does not compile: torch.jit.load must fail on it.
    with zipfile.ZipFile(os.path.join(out_dir, "mlp.pt")) as src, \
            zipfile.ZipFile(os.path.join(out_dir, "broken_code.pt"), "w") as dst:
        replaced = False
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("code/__torch__/torch/nn/modules/container.py"):
                data, replaced = b"class Broken(\n  def forward(self x) ->\n", True
            dst.writestr(info.filename, data)
        if not replaced:
            raise RuntimeError("mlp.pt has no code/__torch__/torch/nn/modules/container.py")
    try:
        torch.jit.load(os.path.join(out_dir, "broken_code.pt"))
    except RuntimeError as e:
        return str(e).splitlines()[0]
    raise RuntimeError("torch.jit.load accepted broken_code.pt")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: validate_models.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    version = opset()
    models = []
    mlp, mlp_x = make_mlp(g)
    for name, (model, x) in (("mlp", (mlp, mlp_x)), ("cnn", make_cnn(g)),
                             ("transformer", make_transformer(g))):
        models.append(export(name, model, x, out_dir, version))
    broken_error = write_extras(out_dir, mlp, g)
    multi = dict({"name": "multi"},
                 **script_facts(torch.jit.load(os.path.join(out_dir, "multi.pt"))))
    print(json.dumps({"torch": torch.__version__, "opset": version, "models": models,
                      "multi": multi, "broken_code_error": broken_error}))


if __name__ == "__main__":
    main()
