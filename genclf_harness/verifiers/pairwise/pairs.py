"""Preference pairs: an instruction, two outputs and which is better (LLMBar's fields).

The pairwise judges (:mod:`genclf_harness.verifiers.pairwise.judge`), the lm-eval tasks and the
DPO pairs read pairs through :func:`read_pairs`; LLMBar is ``$GENCLF_DATA_DIR/llmbar/<split>.jsonl``
(``id``, ``subset``, ``instruction``, ``output_1``, ``output_2``, ``label`` = 1 or 2, the better output).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genclf_harness.data.jsonl import iter_jsonl

NATURAL = "natural"
ADVERSARIAL = "adversarial"


# -- data ----------------------------------------------------------------------------------------


class PreferenceDataError(ValueError):
    """Malformed preference data; the message names the file, line and field."""


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """One instruction with two outputs; ``label`` is the better one (1 or 2)."""

    id: str
    instruction: str
    output_1: str
    output_2: str
    label: int
    subset: str = ""

    def __post_init__(self) -> None:
        if self.label not in (1, 2) or isinstance(self.label, bool):
            raise PreferenceDataError(f"pair {self.id!r}: label {self.label!r} is not 1 or 2 (output_1 or output_2)")

    @property
    def group(self) -> str:
        """``natural`` or ``adversarial`` (LLMBar's four adversarial subsets pooled)."""
        return ADVERSARIAL if self.subset.startswith(ADVERSARIAL) else NATURAL if self.subset == NATURAL else self.subset

    def output(self, which: int) -> str:
        return self.output_1 if which == 1 else self.output_2


_LABEL_NAMES = {"output_1": 1, "output_2": 2, "1": 1, "2": 2}


def parse_pair(raw: Any, where: str) -> PreferencePair:
    """A :class:`PreferencePair` from one JSON record; errors name ``where`` and the field."""
    if not isinstance(raw, dict):
        raise PreferenceDataError(f"{where}: a row must be a JSON object, got {type(raw).__name__}")
    texts = {}
    for name in ("instruction", "output_1", "output_2"):
        value = raw.get(name)
        if not isinstance(value, str):
            problem = "missing" if value is None else f"not a string ({type(value).__name__})"
            raise PreferenceDataError(f"{where}: field {name!r} is {problem}")
        texts[name] = value
    label = raw.get("label")
    if isinstance(label, str) and label in _LABEL_NAMES:
        label = _LABEL_NAMES[label]
    if isinstance(label, bool) or label not in (1, 2):
        problem = "missing" if label is None else f"{label!r}, an unknown label"
        raise PreferenceDataError(f"{where}: field 'label' is {problem}; expected 1 or 2 (or 'output_1'/'output_2')")
    return PreferencePair(str(raw.get("id", where)), texts["instruction"], texts["output_1"], texts["output_2"],
                          int(label), str(raw.get("subset", "")))


def read_pairs(path: str | Path, limit: int | None = None) -> list[PreferencePair]:
    """Preference pairs from a JSONL file (the LLMBar fields); an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise PreferenceDataError(f"{path} does not exist")
    pairs: list[PreferencePair] = []
    for line_no, raw in iter_jsonl(path, PreferenceDataError):
        if limit is not None and len(pairs) >= limit:
            break
        where = f"{path}:{line_no}"
        pairs.append(parse_pair(raw, where))
    if not pairs:
        raise PreferenceDataError(f"{path}: no preference pairs")
    return pairs


def load_llmbar(split: str = "test", limit: int | None = None, data_dir: str | None = None) -> list[PreferencePair]:
    """LLMBar (Natural + Adversarial) from ``$GENCLF_DATA_DIR/llmbar/<split>.jsonl``."""
    from genclf_harness.data.loader import resolve_data_root
    from genclf_harness.data.specs import DataError

    root = resolve_data_root(data_dir)
    if root is None:
        raise DataError("LLMBar is read from $GENCLF_DATA_DIR/llmbar/<split>.jsonl; set GENCLF_DATA_DIR")
    path = Path(root) / "llmbar" / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"LLMBar split {split!r} not found: {path} does not exist")
    return read_pairs(path, limit)
