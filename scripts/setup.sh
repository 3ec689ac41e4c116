#!/usr/bin/env bash
# Create .venv and install knotwork with everything the demo and the tests need.
# Installs the CPU build of torch first where no torch is present, so pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.knotwork-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "torch==${KNOTWORK_TORCH_VERSION:-2.13.0}" \
    || python -m pip install -q --index-url https://download.pytorch.org/whl/cpu torch
fi
python -m pip install -q -e ".[all,test]"
touch "$stamp"
