#!/usr/bin/env bash
# Run THERE (a lent GPU machine: its python3 holds CUDA torch), as one command of the device tool:
#   run: bash bench/device_run.sh [sd|flux|zimage]    carry: [".whl", ".devtok"]    timeout_s: 600
# after bench/device_prepare.sh here.
#   sd (default): builds the random SD1.5 / SDXL checkpoints there, then the GPU workloads (SD1.5 512 px batch 4,
#       SDXL 1024 px, SDXL 1024 px with gradient checkpointing) for ours and the reference loop, one run each.
#   flux: builds FLUX.1-dev's architecture with random weights there (bench/flux_random.py, bf16 on the GPU),
#       then ours at 1024 px with caches and gradient checkpointing: fp8 + block swap 16, fp8 base, bf16 base.
#   zimage: the same for Z-Image's architecture (bench/zimage_random.py: 6 B transformer + Qwen3-4B, bf16 on the
#       GPU): fp8 + block swap 15, fp8 base, bf16 base.
#       flux and zimage: within FLUX_BUDGET_S (480 s) in all: a workload that would run past it is cut off.
# Each workload leaves its own table in $OUT/<workload>/ as it finishes (a run cut off by the time limit still
# returns what finished), and the run ends with the compact table of all (bench/device_table.py).
# Here, without a GPU: BENCH_DRY=1 bash bench/device_run.sh flux|zimage  (tiny stand-ins, this checkout's .venv;
# the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-sd}"
if [ -n "${BENCH_DRY:-}" ]; then
  PY="${PYTHON:-.venv/bin/python}"
  dry=(--dry)
else
  PY=python3
  dry=()
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site" LORA_SCRIPTS_BENCH_TOKENIZER="$PWD/.devtok"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "${OUT:-bench/results}/gpu.txt"
fi
export PYTHONUNBUFFERED=1
OUT="${OUT:-bench/results}"
WORK="${BENCH_WORK:-/tmp/benchwork}"
"$PY" -c "import torch, diffusers, transformers, lycoris; print(torch.__version__, diffusers.__version__, transformers.__version__)"
case "$mode" in
  sd) workloads="${WORKLOADS:-sdxl-1024-ckpt sd15-512-b4 sdxl-1024}"; contenders=ours,reference ;;
  flux) workloads="${WORKLOADS:-flux-1024-fp8-swap16 flux-1024-fp8 flux-1024-bf16}"; contenders=ours ;;
  zimage) workloads="${WORKLOADS:-zimage-1024-fp8-swap15 zimage-1024-fp8 zimage-1024-bf16}"; contenders=ours ;;
  *) echo "usage: bash bench/device_run.sh [sd|flux|zimage]" >&2; exit 2 ;;
esac
deadline=$(( $(date +%s) + ${FLUX_BUDGET_S:-480} ))
# one bench.run per workload, most wanted first, each writing its own table
for w in $workloads; do
  left=$(( deadline - $(date +%s) ))
  if [ "$mode" != sd ] && [ "$left" -le 30 ]; then echo "[device] $w: no time left" | tee -a "$OUT/bench.log"; continue; fi
  mkdir -p "$OUT/$w"
  timeout "$([ "$mode" != sd ] && echo "$left" || echo 3600)" "$PY" -m bench.run "${dry[@]}" --workloads "$w" \
    --contenders "$contenders" --repeats 1 --out "$OUT/$w" --work "$WORK/$w" 2>&1 | tee -a "$OUT/bench.log" || true
done
"$PY" -m bench.device_table "$OUT" | tee "$OUT/table.md"
