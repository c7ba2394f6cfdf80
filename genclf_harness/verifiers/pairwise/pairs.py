"""Preference pairs as the pairwise judges, the lm-eval tasks and the DPO pairs take them.

The pairs are read by the data layer (:mod:`genclf_harness.data.preference_sets`: LLMBar's folder,
preference folders of your own in either shape, a bare JSONL file in LLMBar's fields); this module
gives the verifier side its names for them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from genclf_harness.data.preference_sets import (  # noqa: F401  (re-exported)
    ADVERSARIAL,
    LLMBAR,
    NATURAL,
    PLAIN,
    PreferenceDataError,
    PreferencePair,
    load_preference_pairs,
    parse_row,
    read_pair_file,
)


def parse_pair(raw: Any, where: str) -> PreferencePair:
    """A :class:`PreferencePair` from one JSON record in LLMBar's fields; errors name ``where`` and the field."""
    return parse_row(raw, where, PLAIN)


def read_pairs(path: str | Path, limit: int | None = None) -> list[PreferencePair]:
    """Preference pairs from a JSONL file (the LLMBar fields); an empty file is an error."""
    return read_pair_file(path, PLAIN, limit)


def load_llmbar(split: str = "test", limit: int | None = None, data_dir: str | os.PathLike[str] | None = None
                ) -> list[PreferencePair]:
    """LLMBar (Natural + Adversarial) from ``$GENCLF_DATA_DIR/llmbar/<split>.jsonl``."""
    return load_preference_pairs(LLMBAR, split, data_dir, limit)
