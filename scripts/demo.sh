#!/usr/bin/env bash
# The main job on the small real models shipped in tests/data: inspect the GPT-2, convert it to
# f16, to shards and to PyTorch, verify, diff and hash; rewrite the ONNX MLP's weights. Each command is
# printed before it runs. `make demo` builds the CLI and calls this.
#   scripts/demo.sh [path/to/modelport] [output folder]
set -euo pipefail
cd "$(dirname "$0")/.."

MP=${1:-build-release/modelport}
OUT=${2:-out/demo}
MODEL=tests/data/tiny-gpt2/model.safetensors

if [[ ! -x "$MP" ]]; then
  echo "demo: $MP is not built (run: make demo)" >&2
  exit 1
fi

bold='' plain=''
if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; fi
step=0
announce() {
  step=$((step + 1))
  printf '\n%s[%d] $ %s%s\n' "$bold" "$step" "$*" "$plain"
}
run() {
  announce "$@"
  "$@"
}

echo "modelport demo: a tiny real GPT-2 (Hugging Face transformers 5.17, safetensors 0.8)"
echo "outputs go to $OUT/ (not tracked by git)"
rm -rf "$OUT"
mkdir -p "$OUT"

run "$MP" inspect "$MODEL"
run "$MP" convert "$MODEL" "$OUT/tiny-gpt2-f16.safetensors" --dtype f16
run "$MP" convert "$MODEL" "$OUT/tiny-gpt2-sharded" --shard-size 200KB
run ls -l "$OUT/tiny-gpt2-sharded"
run "$MP" verify "$OUT/tiny-gpt2-f16.safetensors"
run "$MP" verify "$OUT/tiny-gpt2-sharded"
# Sharding moves bytes, never changes them: exact comparison (exit 0 only if equal).
run "$MP" diff "$MODEL" "$OUT/tiny-gpt2-sharded"
# f16 rounds each weight to nearest even: relative error at most 2^-11 for normal values.
run "$MP" diff "$OUT/tiny-gpt2-f16.safetensors" "$MODEL" --rtol 1e-3 --atol 1e-6
# Tensor digests ignore the container, so the one-file original and the sharded copy hash the
# same (file digests differ; tensor digests do not).
run "$MP" hash "$MODEL"
tensor_digests() { "$MP" hash "$1" | sed -n '/^tensors:/,$p'; }
announce "cmp <($MP hash $MODEL | sed -n '/^tensors:/,\$p')" \
  "<($MP hash $OUT/tiny-gpt2-sharded | sed -n '/^tensors:/,\$p')"
cmp <(tensor_digests "$MODEL") <(tensor_digests "$OUT/tiny-gpt2-sharded")
echo "tensor digests of $MODEL and $OUT/tiny-gpt2-sharded are identical"

# PyTorch: a zip checkpoint torch.load(weights_only=True) loads; read back without running
# pickle, bit-exact; `scan` judges it safe (exit 0).
run "$MP" convert "$MODEL" "$OUT/tiny-gpt2.pt"
run "$MP" diff "$MODEL" "$OUT/tiny-gpt2.pt"
run "$MP" scan "$OUT/tiny-gpt2.pt"

# ONNX: the graph in inspect; weights moved to an external data file, extracted to
# safetensors, and dropped back into the graph with set-weights; nothing changed on the way.
ONNX=tests/data/mlp-onnx/model.onnx
run "$MP" inspect "$ONNX"
run "$MP" onnx rewrite "$ONNX" -o "$OUT/mlp-external.onnx" --external-data --size-threshold 0
run "$MP" convert "$OUT/mlp-external.onnx" "$OUT/mlp.safetensors"
run "$MP" onnx set-weights "$ONNX" "$OUT/mlp.safetensors" -o "$OUT/mlp-set.onnx"
announce cmp "$ONNX" "$OUT/mlp-set.onnx"
cmp "$ONNX" "$OUT/mlp-set.onnx"
echo "$OUT/mlp-set.onnx is byte-identical to $ONNX"

# Validation: the MLP run by modelport's reference evaluator on a sample input reproduces
# torch's output; the f16 copy of the GPT-2 is its f32 source correctly rounded, and not equal.
run "$MP" validate "$ONNX" --samples tests/data/mlp-onnx/x.npy --expected tests/data/mlp-onnx/y.npy
run "$MP" validate "$OUT/tiny-gpt2-f16.safetensors" --against "$MODEL"
announce "$MP" validate "$OUT/tiny-gpt2-f16.safetensors" --against "$MODEL" --exact
rc=0
"$MP" validate "$OUT/tiny-gpt2-f16.safetensors" --against "$MODEL" --exact | tail -2 || rc=$?
echo "exit $rc"
if [[ $rc -ne 1 ]]; then
  echo "demo: expected exit code 1 for an exact comparison of f16 with f32, got $rc" >&2
  exit 1
fi

# Quantization: int8 per channel (compressed-tensors layout) and ggml q4_0 in GGUF, each with
# the error it introduced per tensor; validate judges both against the float original; the
# MLP as an int8 QDQ ONNX model still reproduces torch's output within 1e-2.
run "$MP" quantize "$MODEL" "$OUT/tiny-gpt2-int8.safetensors" --scheme int8 --force
run "$MP" validate "$OUT/tiny-gpt2-int8.safetensors" --against "$MODEL"
run "$MP" quantize "$MODEL" "$OUT/tiny-gpt2-q4_0.gguf" --scheme q4_0 --force
run "$MP" dequantize "$OUT/tiny-gpt2-q4_0.gguf" "$OUT/tiny-gpt2-q4_0-back.safetensors" --force
run "$MP" quantize "$ONNX" "$OUT/mlp-int8.onnx" --scheme int8 --min-size 64 --force
run "$MP" validate "$OUT/mlp-int8.onnx" --samples tests/data/mlp-onnx/x.npy --expected tests/data/mlp-onnx/y.npy --atol 1e-2

# A damaged file is refused with one line on stderr and exit code 4 (input rejected).
announce head -c 100000 "$MODEL" ">$OUT/truncated.safetensors"
head -c 100000 "$MODEL" >"$OUT/truncated.safetensors"
announce "$MP" verify "$OUT/truncated.safetensors"
rc=0
"$MP" verify "$OUT/truncated.safetensors" 2>&1 || rc=$?
echo "exit $rc"
if [[ $rc -ne 4 ]]; then
  echo "demo: expected exit code 4 for a truncated file, got $rc" >&2
  exit 1
fi

printf '\ndemo: all %d steps did what they should; outputs are in %s/\n' "$step" "$OUT"
