"""Oracle: torch.load of the transformers pytorch_model.bin files (plain and sharded) gives the
same weights as the safetensors file FILE that modelport wrote from the golden
model.safetensors.

  gpt2_bin.py GOLDEN_TRANSFORMERS_DIR FILE

transformers ties lm_head.weight to transformer.wte.weight: the .bin state dict holds both, the
safetensors file only wte. That is the one name allowed to differ, and only if it equals wte.
"""
import json
import os
import sys

import torch

import st_util

TIED = {"lm_head.weight": "transformer.wte.weight"}


def load_bins(golden):
    plain = torch.load(os.path.join(golden, "tiny-gpt2-bin", "pytorch_model.bin"),
                       map_location="cpu")
    sharded_dir = os.path.join(golden, "tiny-gpt2-bin-sharded")
    with open(os.path.join(sharded_dir, "pytorch_model.bin.index.json")) as f:
        index = json.load(f)
    sharded = {}
    for shard in sorted(set(index["weight_map"].values())):
        sharded.update(torch.load(os.path.join(sharded_dir, shard), map_location="cpu"))
    return plain, sharded


def compare(state, header, data, label):
    problems = []
    names = set(header)
    extra_in_bin = set(state) - names
    for name in extra_in_bin:
        if name not in TIED or not torch.equal(state[name], state[TIED[name]]):
            problems.append(f"{label}: {name} is in the .bin only and is not a tied copy")
    for name in names - set(state):
        problems.append(f"{label}: {name} is in modelport's file only")
    for name in names & set(state):
        want = state[name].contiguous()
        entry = header[name]
        if entry["dtype"] != "F32" or want.dtype != torch.float32:
            problems.append(f"{label}: {name}: dtype {entry['dtype']} vs {want.dtype}")
            continue
        if list(entry["shape"]) != list(want.shape):
            problems.append(f"{label}: {name}: shape {entry['shape']} vs {list(want.shape)}")
            continue
        if want.numpy().tobytes() != data[name]:
            problems.append(f"{label}: {name}: values differ")
    return problems, sorted(extra_in_bin)


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    try:
        header, _, data = st_util.read(argv[2])
    except st_util.Problem as e:
        print(e)
        return 1
    plain, sharded = load_bins(argv[1])
    problems = []
    for label, state in (("pytorch_model.bin", plain), ("sharded .bin", sharded)):
        p, tied = compare(state, header, data, label)
        problems += p
        print(f"{label}: {len(state)} tensors, {len(header)} in modelport's file, "
              f"tied-only in .bin: {tied}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
