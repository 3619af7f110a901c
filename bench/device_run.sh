#!/usr/bin/env bash
# Run THERE (a lent GPU machine: its python3 holds CUDA torch), as one command of the device tool:
#   run: bash bench/device_run.sh    carry: [".whl", ".devtok"]    timeout_s: 600
# after bench/device_prepare.sh here. Builds the random SD1.5 / SDXL checkpoints on that machine, then measures
# the GPU workloads (SD1.5 512 px batch 4, SDXL 1024 px, SDXL 1024 px with gradient checkpointing) for ours and
# the reference loop, one run each (the device budget is 15 minutes), and leaves the tables in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site" PYTHONUNBUFFERED=1 LORA_SCRIPTS_BENCH_TOKENIZER="$PWD/.devtok"
OUT="${OUT:-bench/results}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers, transformers, lycoris; print(torch.__version__, diffusers.__version__, transformers.__version__)"
# one bench.run per workload, most wanted first, each writing its own table: a run cut off by the time limit
# still returns what finished
for w in ${WORKLOADS:-sdxl-1024-ckpt sd15-512-b4 sdxl-1024}; do
  mkdir -p "$OUT/$w"
  python3 -m bench.run --workloads "$w" --contenders ours,reference --repeats 1 --out "$OUT/$w" \
    --work "/tmp/benchwork/$w" 2>&1 | tee -a "$OUT/bench.log"
done
