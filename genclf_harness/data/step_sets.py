"""Step-labelled solutions of your own ("which step is the first wrong one"), a folder and a ``meta.json``.

Under the data root (``$GENCLF_DATA_DIR``, or a ``data_dir`` argument)::

    <name>/meta.json        {"kind": "steps"}  (the folder ``processbench`` needs no meta.json kind)
    <name>/<split>.jsonl    one solution per line: the problem, its steps, the first wrong step

Every split becomes the lm-eval task ``genclf_<name>_<split>`` and the folder the group
``genclf_<name>``, whose figures are the unweighted mean over the splits (ProcessBench's average
F1); the StepWiser recipe evaluates on such a folder too. ``meta.json`` keys, all optional but
``kind`` (same names and rules as a classification folder's where they mean the same):

- ``splits``: the split names, a list or ``{name: row count}`` (default: every ``*.jsonl`` file);
- ``fields``: where each value is in a row, ``{"problem": ..., "steps": ..., "first_error": ...,
  "id": ..., "answer": ...}`` (defaults ``problem``, ``steps``, ``first_error_step`` else ``label``,
  ``id``, ``answer``; the gold final answer is optional, for Monte-Carlo step labels);
- ``steps_split``: how a solution given as one string is cut into steps, ``paragraphs`` (blank
  lines, the default) or ``lines``; a list of strings is taken as it is;
- ``index_base``: ``0`` (the default, ProcessBench's) or ``1`` when the file counts steps from 1;
- ``no_error``: the extra value that means "every step is right" besides ``-1`` and ``null``
  (which always do), e.g. ``0`` for a 1-based file that writes 0 for no error.

A row's problem must be a non-empty string, its steps non-empty strings, its first wrong step an
integer within the steps (or a no-error value); a bad row names its file, line and field before any
model work. Keys it does not know (``source``, ``license`` ...) are ignored, as in a classification
folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from genclf_harness.data.folders import discover_splits, folder_kind, list_folders, mapped_fields, open_folder
from genclf_harness.data.jsonl import iter_jsonl, not_finite
from genclf_harness.data.specs import DataError

STEPS_KIND = "steps"
PROCESSBENCH = "processbench"
"""The folder read as step-labelled solutions by name (ProcessBench's own files need no ``kind``)."""

SplitRule = Literal["lines", "paragraphs"]
_FIELDS = ("problem", "steps", "first_error", "id", "answer")
_DEFAULT_FIELDS = {"problem": ("problem",), "steps": ("steps",), "first_error": ("first_error_step", "label"),
                   "id": ("id",), "answer": ("answer",)}
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")  # no "_": the task name is genclf_<name>_<split>


def split_steps(text: str, by: SplitRule = "paragraphs") -> list[str]:
    """Split an unsplit solution into steps.

    ``paragraphs``: blocks separated by one or more blank lines (ProcessBench's steps and most
    chat-model solutions); ``lines``: every non-empty line. Steps are stripped; empty ones are
    dropped. A text with no separator is one step. An empty text is an error (nothing to judge).
    """
    if not isinstance(text, str):
        raise TypeError(f"split_steps needs a str, got {type(text).__name__}")
    if by == "paragraphs":
        parts = re.split(r"\n[ \t]*\n+", text.replace("\r\n", "\n"))
    elif by == "lines":
        parts = text.replace("\r\n", "\n").split("\n")
    else:
        raise ValueError(f"unknown split rule {by!r}: use 'lines' or 'paragraphs'")
    steps = [part.strip() for part in parts if part.strip()]
    if not steps:
        raise ValueError("the solution is empty: there are no steps to judge")
    return steps


@dataclass(frozen=True)
class StepSetSpec:
    """A folder of step-labelled solutions: where it is, its splits and how its rows are read."""

    name: str
    folder: str
    splits: tuple[str, ...]
    fields: dict[str, tuple[str, ...]]
    steps_split: SplitRule = "paragraphs"
    index_base: int = 0
    no_error: Any = None

    def path(self, split: str) -> Path:
        return Path(self.folder) / f"{split}.jsonl"


@dataclass(frozen=True, slots=True)
class StepRow:
    """One solution as read (ProcessBench's ``ProcessBenchExample``)."""

    id: str
    problem: str
    steps: tuple[str, ...]
    label: int
    """0-based index of the first wrong step; -1 when every step is right."""
    final_answer_correct: bool | None = None
    answer: str | None = None
    """The problem's gold final answer where the row has one (``fields.answer``; Monte-Carlo labels)."""


def is_step_set(folder: Path) -> bool:
    """Whether ``folder`` holds step-labelled solutions (``processbench``, or ``"kind": "steps"``)."""
    return folder_kind(folder) == STEPS_KIND


def list_step_sets(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The step-labelled folders under the data root, by name."""
    return list_folders(STEPS_KIND, data_dir)


def step_set_spec(name: str, data_dir: str | os.PathLike[str] | None = None) -> StepSetSpec:
    """The spec of the step-labelled folder ``name`` under the data root; a clear DataError when the
    folder is missing, is another kind of data set, or its ``meta.json`` is wrong."""
    folder, meta, bad = open_folder(name, STEPS_KIND, data_dir, "step-labelled data set")
    splits = discover_splits(meta.get("splits"), folder, bad, usual_only=False, name=_SPLIT_NAME)
    fields = dict(_DEFAULT_FIELDS)
    fields.update((role, (field,)) for role, field in mapped_fields(meta.get("fields"), _FIELDS, bad).items())
    steps_split = meta.get("steps_split", "paragraphs")
    if steps_split not in ("paragraphs", "lines"):
        raise bad(f"'steps_split' is {steps_split!r}; use \"paragraphs\" or \"lines\".")
    index_base = meta.get("index_base", 0)
    if index_base not in (0, 1) or isinstance(index_base, bool):
        raise bad(f"'index_base' is {index_base!r}; use 0 (first step is 0) or 1 (first step is 1).")
    no_error = meta.get("no_error")
    if no_error is not None and (isinstance(no_error, bool) or not isinstance(no_error, (int, str))):
        raise bad(f"'no_error' is {no_error!r}; use an integer or a string (-1 and null always mean no error).")
    return StepSetSpec(name, str(folder.resolve()), tuple(splits), fields, steps_split, index_base, no_error)


def load_step_rows(spec: StepSetSpec, split: str, limit: int | None = None) -> list[StepRow]:
    """The rows of one split, each checked; a bad row raises a DataError naming file, line and field."""
    if split not in spec.splits:
        raise DataError(f"step-labelled data set {spec.name!r} has no split {split!r} "
                        f"(splits: {', '.join(spec.splits)}; under {spec.folder})")
    path = spec.path(split)
    rows: list[StepRow] = []
    for line_no, row in iter_jsonl(path, DataError):
        where = f"{path}:{line_no}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: a row must be a JSON object.")
        rows.append(_row(spec, row, where, f"{spec.name}-{split}-{line_no}"))
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise DataError(f"{path}: no rows (an empty split has nothing to evaluate).")
    return rows


def _value(row: dict[str, Any], names: tuple[str, ...]) -> tuple[str, Any]:
    for name in names:
        if name in row:
            return name, row[name]
    return names[0], None


def _row(spec: StepSetSpec, row: dict[str, Any], where: str, default_id: str) -> StepRow:
    field, problem = _value(row, spec.fields["problem"])
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(f"{where}: field {field!r} (the problem) must be a non-empty string, got {problem!r}.")
    field, raw_steps = _value(row, spec.fields["steps"])
    if isinstance(raw_steps, str):
        try:
            steps = split_steps(raw_steps, spec.steps_split)
        except ValueError:
            raise DataError(f"{where}: field {field!r} (the steps) is an empty string.") from None
    elif isinstance(raw_steps, list) and raw_steps:
        for index, step in enumerate(raw_steps):
            if not isinstance(step, str) or not step.strip():
                raise DataError(f"{where}: field {field!r}[{index}]: a step must be a non-empty string, got {step!r}.")
        steps = list(raw_steps)
    else:
        raise DataError(f"{where}: field {field!r} (the steps) must be a list of strings or one string to split, "
                        f"got {raw_steps!r}.")
    field, label = _value(row, spec.fields["first_error"])
    if field not in row:
        raise DataError(f"{where}: no field {' or '.join(repr(f) for f in spec.fields['first_error'])} "
                        "(the first wrong step; -1 or null when every step is right).")
    first_error = _first_error(spec, label, len(steps), where, field)
    id_field, identifier = _value(row, spec.fields["id"])
    if identifier is None:
        identifier = default_id
    elif isinstance(identifier, bool) or not isinstance(identifier, (str, int)) or not_finite(identifier):
        raise DataError(f"{where}: field {id_field!r} (the id) must be a string or an integer, got {identifier!r}.")
    final = row.get("final_answer_correct")
    answer_field, answer = _value(row, spec.fields["answer"])
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not_finite(answer)):
        raise DataError(f"{where}: field {answer_field!r} (the gold answer) must be a string or a number, got {answer!r}.")
    return StepRow(str(identifier), problem, tuple(steps), first_error, final if isinstance(final, bool) else None,
                   None if answer is None else str(answer))


def _first_error(spec: StepSetSpec, label: Any, n_steps: int, where: str, field: str) -> int:
    if label is None or label == -1 or (spec.no_error is not None and label == spec.no_error
                                        and type(label) is type(spec.no_error)):
        return -1
    if isinstance(label, bool) or not isinstance(label, int):
        raise DataError(f"{where}: field {field!r} (the first wrong step) must be an integer step index, -1 or null, "
                        f"got {label!r}.")
    index = label - spec.index_base
    if not 0 <= index < n_steps:
        first, last = spec.index_base, n_steps - 1 + spec.index_base
        raise DataError(f"{where}: field {field!r} is {label}, out of range for {n_steps} steps "
                        f"(steps count from {spec.index_base}: {first}..{last}, or -1/null for no error).")
    return index
