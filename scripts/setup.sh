#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with PyTorch and nasrl[dev].
# Override the interpreter with PYTHON=..., the PyTorch pins with TORCH_PINS="torch==X torchvision==Y".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_PINS="${TORCH_PINS:-torch==2.14.1 torchvision==0.29.1}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC2086  # the pins are several words on purpose
.venv/bin/python -m pip install --quiet $TORCH_PINS
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "set-up done: .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
