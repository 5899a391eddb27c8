"""The torch side of the PyTorch <-> Keras weight-mapping proof (tests/keras_map_oracle_test.cc).

Three seeded networks built in Debian's torch and the equivalent TensorFlow.js layer specs
(tests/node/tfjs_run.mjs runs those):
  mlp   Linear-ReLU-Linear-Tanh-Linear                       (Dense)
  cnn   Conv2d-BN-ReLU, Conv2d(bias=False)-BN-ReLU, global average pooling, Linear
        (Keras is channels-last: the TF.js input is x transposed NCHW -> NHWC; BN epsilon 1e-5
        as torch's; global average pooling instead of Flatten, whose element order differs)
  lstm  LSTM(batch_first) -> last time step -> Linear         (sigmoid gates as torch's)

Usage:
  keras_map_models.py make DIR
      for each NAME: DIR/NAME/model.pt (torch.save of the eval-mode state_dict), x.npy (torch
      layout), x_keras.npy (channels-last), y.npy (torch's output), fwd.json (a tfjs_run spec
      loading DIR/NAME/tfjs/model.json, predicting y_tfjs.npy) and rev.json (a spec with random
      initialisers that saves DIR/NAME/saved/ and predicts y_saved.npy).
  keras_map_models.py check DIR
      y_tfjs.npy equals y.npy within 1e-4 (torch weights mapped to Keras and run by TF.js), and
      DIR/NAME/back.pt (mapped back from TF.js's saved weights) loads strictly into the torch
      network, whose output equals y_saved.npy within 1e-4.

Exit status 0 with one summary line; 1 with one line naming the first problem.
"""
import json
import os
import sys

import numpy as np
import torch
from torch import nn

TOL = 1e-4
NAMES = ("mlp", "cnn", "lstm")


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 16)
        self.fc2 = nn.Linear(16, 8)
        self.fc3 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


class Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def build(name):
    return {"mlp": Mlp, "cnn": Cnn, "lstm": Lstm}[name]()


def inputs(name, gen):
    shape = {"mlp": (5, 4), "cnn": (2, 3, 8, 8), "lstm": (3, 7, 5)}[name]
    x = torch.randn(*shape, generator=gen)
    keras = x.permute(0, 2, 3, 1).contiguous() if name == "cnn" else x
    return x, keras


UNIFORM = {"className": "RandomUniform", "config": {"minval": 0.5, "maxval": 1.5}}


def layers(name, random_init):
    """The TF.js layers of network `name`; random_init adds initialisers that make every weight
    non-trivial (TF.js's defaults give zero biases and identity batch norms)."""
    bias = {"biasInitializer": "randomNormal"} if random_init else {}
    bn = {"gammaInitializer": UNIFORM, "betaInitializer": "randomNormal",
          "movingMeanInitializer": "randomNormal",
          "movingVarianceInitializer": UNIFORM} if random_init else {}
    if name == "mlp":
        return [
            {"class": "dense", "config": {"name": "fc1", "units": 16, "activation": "relu",
                                          "inputShape": [4], **bias}},
            {"class": "dense", "config": {"name": "fc2", "units": 8, "activation": "tanh", **bias}},
            {"class": "dense", "config": {"name": "fc3", "units": 3, **bias}},
        ]
    if name == "cnn":
        return [
            {"class": "conv2d", "config": {"name": "features.0", "filters": 8, "kernelSize": 3,
                                           "padding": "same", "inputShape": [8, 8, 3], **bias}},
            {"class": "batchNormalization",
             "config": {"name": "features.1", "axis": -1, "epsilon": 1e-5, **bn}},
            {"class": "activation", "config": {"name": "features.2", "activation": "relu"}},
            {"class": "conv2d", "config": {"name": "features.3", "filters": 6, "kernelSize": 3,
                                           "padding": "valid", "useBias": False}},
            {"class": "batchNormalization",
             "config": {"name": "features.4", "axis": -1, "epsilon": 1e-5, **bn}},
            {"class": "activation", "config": {"name": "features.5", "activation": "relu"}},
            {"class": "globalAveragePooling2d", "config": {"name": "pool"}},
            {"class": "dense", "config": {"name": "head", "units": 4, **bias}},
        ]
    return [
        {"class": "lstm", "config": {"name": "lstm", "units": 6, "inputShape": [7, 5],
                                     "activation": "tanh", "recurrentActivation": "sigmoid",
                                     "unitForgetBias": False, "returnSequences": False, **bias}},
        {"class": "dense", "config": {"name": "head", "units": 3, **bias}},
    ]


def randomize_batchnorm(model, gen):
    """Non-trivial affine parameters and running statistics (a fresh BN is the identity)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen))
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.num_batches_tracked.fill_(12)


def make(root):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    for name in NAMES:
        d = os.path.join(root, name)
        os.makedirs(os.path.join(d, "saved"), exist_ok=True)
        model = build(name)
        randomize_batchnorm(model, gen)
        model.eval()
        x, x_keras = inputs(name, gen)
        with torch.no_grad():
            y = model(x)
        torch.save(model.state_dict(), os.path.join(d, "model.pt"))
        np.save(os.path.join(d, "x.npy"), x.numpy())
        np.save(os.path.join(d, "x_keras.npy"), x_keras.numpy())
        np.save(os.path.join(d, "y.npy"), y.numpy())
        fwd = {"layers": layers(name, False), "weights": os.path.join(d, "tfjs", "model.json"),
               "input": os.path.join(d, "x_keras.npy"), "output": os.path.join(d, "y_tfjs.npy")}
        rev = {"layers": layers(name, True), "save": os.path.join(d, "saved"),
               "input": os.path.join(d, "x_keras.npy"), "output": os.path.join(d, "y_saved.npy")}
        for file, spec in (("fwd.json", fwd), ("rev.json", rev)):
            with open(os.path.join(d, file), "w") as f:
                json.dump(spec, f)
    print("made", ", ".join(NAMES))


def max_diff(a, b, what):
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {a.shape} != {b.shape}")
    diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    if not diff <= TOL:
        raise AssertionError(f"{what}: max |diff| {diff:.3g} > {TOL}")
    return diff


def check(root):
    worst = []
    for name in NAMES:
        d = os.path.join(root, name)
        y = np.load(os.path.join(d, "y.npy"))
        worst.append(max_diff(np.load(os.path.join(d, "y_tfjs.npy")), y,
                              f"{name}: TF.js with torch's weights vs torch"))
        state = torch.load(os.path.join(d, "back.pt"), weights_only=True)
        model = build(name)
        model.load_state_dict(state, strict=True)  # raises on a missing or unexpected key
        model.eval()
        for key, value in state.items():
            if key.endswith("num_batches_tracked") and value.dtype != torch.int64:
                raise AssertionError(f"{name}: {key} is {value.dtype}, not torch.int64")
        x = torch.from_numpy(np.load(os.path.join(d, "x.npy")))
        with torch.no_grad():
            back = model(x).numpy()
        y_saved = np.load(os.path.join(d, "y_saved.npy"))
        if float(np.std(y_saved)) == 0.0:
            raise AssertionError(f"{name}: TF.js's random model gives a constant output")
        worst.append(max_diff(back, y_saved, f"{name}: torch with TF.js's weights vs TF.js"))
    print(f"ok: {len(NAMES)} networks both ways, max |diff| {max(worst):.3g}")


def main():
    try:
        {"make": make, "check": check}[sys.argv[1]](sys.argv[2])
    except Exception as e:  # one line, whatever failed
        print(f"{type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
