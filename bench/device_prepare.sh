#!/usr/bin/env bash
# Run HERE (the development machine, after `bash dev.sh test` has unpacked ComfyUI once) before the GPU run:
# fetches the packages the GPU machine's image lacks as Python 3.12 wheels into .whl/, and copies the CLIP
# tokenizer ComfyUI ships into .devtok/ (that machine has no network). Both folders are git-ignored and travel
# with `carry`. Then, with the device tool: run `bash bench/device_run.sh`, carry [".whl", ".devtok"].
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
rm -rf .whl .devtok
# what lora-scripts needs that the GPU image (torch, transformers, accelerate, peft, safetensors, tensorboard,
# scipy, pillow, einops ... see ../.library/device/KINDS.md) does not have; versions as in this checkout's venv
want=(diffusers lycoris-lora ImageHash PyWavelets toml importlib-metadata)
specs=()
for name in "${want[@]}"; do
  version="$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')"
  specs+=("$name${version:+==$version}")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${specs[@]}"
tok=".cache/hosts/comfyui-0.3.75/comfy/sd1_tokenizer"
[ -d "$tok" ] || "$PY" -c "import bench.workloads as w; print(w.tokenizer_dir())"
cp -r "$tok" .devtok
du -sh .whl .devtok
