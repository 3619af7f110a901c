#!/usr/bin/env bash
# One command per job, set-up included (Python 3.10+; no GPU, no model downloads needed):
#   bash dev.sh quickstart   # set up .venv, train the quickstart LoRA on the built-in toy model, draw the grid
#   bash dev.sh test         # set up .venv, lint, run the whole test suite
# torch is installed only when missing (TORCH_SPEC, default torch==2.13.0); it is never upgraded.
set -euo pipefail
cd "$(dirname "$0")"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi

setup() {
  local extra="${1:-}"
  if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
  if ! python -c "import torch" >/dev/null 2>&1; then
    python -m pip install -q --upgrade pip
    # --no-compile: modules are byte-compiled as they are first imported, not all at install (torch: ~10 s)
    python -m pip install -q --no-compile "${TORCH_SPEC:-torch==2.13.0}"
  fi
  local stamp=".venv/.lora-scripts-deps"
  local want
  want="$(cat requirements.txt requirements-dev.txt pyproject.toml $extra | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    python -m pip install -q --no-compile -r requirements.txt -r requirements-dev.txt ${extra:+-r $extra}
    # the engine itself, editable, so `python tools/...` and `python -m lorascripts` work from anywhere
    python -m pip install -q --no-deps -e .
    echo "$want" > "$stamp"
  fi
}

browser() {
  # the HTML-report and front-end tests drive a real headless Chromium
  if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will fail" >&2
  fi
}

case "${1:-}" in
  quickstart)
    setup
    python train.py --config configs/quickstart.yaml
    python tools/quickstart_grid.py --config configs/quickstart.yaml
    ;;
  test)
    # the host tests run a real ComfyUI 0.3.75 (tests/comfy_host.py); its packages come from requirements-hosts.txt
    setup requirements-hosts.txt
    browser
    ruff check .
    ruff format --check .
    python -m pytest tests -q "${@:2}"
    ;;
  *)
    echo "usage: bash dev.sh quickstart | test [pytest args]" >&2
    exit 2
    ;;
esac
