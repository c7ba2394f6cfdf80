"""Reasoning problems of your own (math word problems and the like): a folder and a ``meta.json``.

Under the data root (``$GENCLF_DATA_DIR``, or a ``data_dir`` argument)::

    <name>/meta.json        {"kind": "reasoning", "answer_type": "number"}  (``gsm8k`` needs no kind)
    <name>/<split>.jsonl    one problem per line: the question, the gold answer, optionally a solution

Such a folder serves everything GSM8K serves: the lm-eval tasks ``genclf_<name>_verify`` and
``genclf_<name>_bon``, ``genclf-bench bon --task <name>``, ``genclf-train genrm`` (``data.task:
<name>``), ``GenRMReward``, and the reference-guided rationales where rows have solutions. How a
generated solution's answer is read and compared is the verifier side's
(:func:`genclf_harness.verifiers.genrm.problems.get_task`); this module reads the folder. Keys:

- ``answer_type``: ``number`` (the default: compared by value, ``1,000`` = ``1000.0``), ``text``
  (the words after the last "The answer is", case and punctuation aside), ``regex`` (the last
  match of ``answer_pattern`` in the solution, its first group if it has one, compared as text)
  or ``choices`` (one of ``choices``, e.g. ``["A", "B", "C", "D"]``);
- ``fields``: ``{"question": ..., "answer": ..., "solution": ..., "id": ...}`` (defaults: those
  names; ``problem`` is also read as the question). A ``number`` row without an answer takes it
  from its solution's ``#### N`` line (GSM8K's format);
- ``instruction``: the text before each question (default: solve step by step and end with
  "The answer is ...");
- ``splits``, ``train_split`` (default ``train``), ``eval_split`` (default ``test``, else
  ``validation``, else ``dev``, else the only one), as in a classification folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genclf_harness.data.folders import (
    chosen_split,
    default_eval_split,
    discover_splits,
    folder_kind,
    list_folders,
    mapped_fields,
    open_folder,
)
from genclf_harness.data.jsonl import iter_jsonl, not_finite
from genclf_harness.data.specs import DataError

REASONING_KIND = "reasoning"
GSM8K = "gsm8k"
ANSWER_TYPES = ("number", "text", "regex", "choices")
_FIELDS = ("question", "answer", "solution", "id")


@dataclass(frozen=True)
class ReasoningSetSpec:
    """A folder of reasoning problems: where it is, its splits, fields and answer rule."""

    name: str
    folder: str
    splits: tuple[str, ...]
    train_split: str | None
    eval_split: str
    answer_type: str = "number"
    answer_pattern: str | None = None
    choices: tuple[str, ...] = ()
    instruction: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def field(self, key: str) -> str:
        return self.fields.get(key, key)

    def path(self, split: str) -> Path:
        return Path(self.folder) / f"{split}.jsonl"


@dataclass(frozen=True, slots=True)
class ReasoningRow:
    """One problem as read (the answer as written; the verifier side parses it by the folder's rule)."""

    id: str
    question: str
    answer: Any
    solution: str | None
    where: str
    """``<file>:<line>``, for errors about the row found later (an answer that cannot be parsed)."""
    answer_field: str


def is_reasoning_set(folder: Path) -> bool:
    """Whether ``folder`` holds reasoning problems (``gsm8k``, or ``"kind": "reasoning"``)."""
    return folder_kind(folder) == REASONING_KIND


def list_reasoning_sets(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The reasoning folders under the data root (``gsm8k`` among them where present)."""
    return list_folders(REASONING_KIND, data_dir)


def reasoning_set_spec(name: str, data_dir: str | os.PathLike[str] | None = None) -> ReasoningSetSpec:
    """The spec of the reasoning folder ``name`` under the data root; a DataError naming what is wrong."""
    folder, meta, bad = open_folder(name, REASONING_KIND, data_dir, "reasoning data set")
    splits = discover_splits(meta.get("splits"), folder, bad)
    eval_split = chosen_split(meta, "eval_split", splits, None, bad) or default_eval_split(splits, bad)
    train_split = chosen_split(meta, "train_split", splits, "train" if "train" in splits else None, bad)
    answer_type = meta.get("answer_type", "number")
    if answer_type not in ANSWER_TYPES:
        raise bad(f"'answer_type' is {answer_type!r}; use one of {', '.join(ANSWER_TYPES)}.")
    pattern = meta.get("answer_pattern")
    if answer_type == "regex":
        if not isinstance(pattern, str) or not pattern:
            raise bad("'answer_type' is \"regex\" but 'answer_pattern' (the regular expression) is missing.")
        try:
            re.compile(pattern)
        except re.error as err:
            raise bad(f"'answer_pattern' is not a valid regular expression ({err}).") from None
    choices = meta.get("choices") or []
    if answer_type == "choices":
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
            raise bad(f"'answer_type' is \"choices\" but 'choices' is {choices!r}; list at least two choices.")
        if len({c.strip().lower() for c in choices}) != len(choices):
            raise bad(f"'choices' {choices} names a choice twice (case aside).")
    instruction = meta.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
        raise bad("'instruction' must be a non-empty string.")
    fields = mapped_fields(meta.get("fields"), _FIELDS, bad)
    return ReasoningSetSpec(name, str(folder.resolve()), tuple(splits), train_split, eval_split, answer_type,
                            pattern, tuple(c.strip() for c in choices), instruction, fields)


def load_reasoning_rows(spec: ReasoningSetSpec, split: str, limit: int | None = None) -> list[ReasoningRow]:
    """The rows of one split, their fields checked (the answer's form is checked by the caller's rule)."""
    if split not in spec.splits:
        raise DataError(f"reasoning data set {spec.name!r} has no split {split!r} (splits: {', '.join(spec.splits)}; "
                        f"under {spec.folder})")
    path = spec.path(split)
    rows: list[ReasoningRow] = []
    question_field, answer_field = spec.field("question"), spec.field("answer")
    solution_field, id_field = spec.field("solution"), spec.field("id")
    for line_no, row in iter_jsonl(path, DataError):
        if limit is not None and len(rows) >= limit:
            break
        where = f"{path}:{line_no}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: a row must be a JSON object.")
        name = question_field if question_field in row or "question" in spec.fields or "problem" not in row else "problem"
        question = row.get(name)
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: field {name!r} (the question) must be a non-empty string, got {question!r}.")
        solution = row.get(solution_field)
        if solution is not None and (not isinstance(solution, str) or not solution.strip()):
            raise DataError(f"{where}: field {solution_field!r} (the reference solution) must be a non-empty string "
                            f"or absent, got {solution!r}.")
        answer = row.get(answer_field)
        if answer is None or answer == "":
            if solution is None or spec.answer_type != "number":
                raise DataError(f"{where}: field {answer_field!r} (the gold answer) is missing.")
        elif isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not_finite(answer):
            raise DataError(f"{where}: field {answer_field!r} (the gold answer) must be a string or a number, "
                            f"got {answer!r}.")
        identifier = row.get(id_field)
        rows.append(ReasoningRow(str(identifier) if identifier is not None else f"{spec.name}-{split}-{line_no}",
                                 question, answer, solution, where, answer_field))
    if not rows:
        raise DataError(f"{path}: no rows (an empty split has nothing to evaluate).")
    return rows
