"""The plain zero-shot classification prompt of each data set.

A document renders to three parts, which lm-eval assembles (with demonstrations for few-shot):

    <instruction>\n\n            (once, as the task description)
    <input + answer cue>         (the document, e.g. "Review: ...\nSentiment:")
    " " + <label word>           (each candidate continuation)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genclf_harness.data.specs import DataError, DatasetSpec


def join_labels(words: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b or c"``."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} or {words[-1]}"


def render_instruction(spec: DatasetSpec) -> str:
    return spec.instruction.format(labels=join_labels(spec.label_words))


def render_input(spec: DatasetSpec, doc: Mapping[str, Any]) -> str:
    """The document as the model sees it, ending with the answer cue (no trailing space)."""
    try:
        return spec.template.format(**{name: doc[name] for name in spec.input_fields})
    except KeyError as err:
        raise DataError(f"data set {spec.name!r}: document {doc.get('id', '?')!r} has no field {err}.") from None


@dataclass(frozen=True)
class ClassificationPrompt:
    """A rendered document: what lm-eval's multiple-choice task needs."""

    instruction: str
    query: str
    choices: tuple[str, ...]
    gold: int

    @classmethod
    def render(cls, spec: DatasetSpec, doc: Mapping[str, Any]) -> ClassificationPrompt:
        return cls(
            instruction=render_instruction(spec),
            query=render_input(spec, doc),
            choices=spec.label_words,
            gold=int(doc["label"]),
        )
