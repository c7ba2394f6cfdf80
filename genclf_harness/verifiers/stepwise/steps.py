"""Stepwise judging: steps, the step-judge prompt, verdicts, the first wrong step, ProcessBench.

Plain Python (no torch, no lm-eval): the judge (:mod:`genclf_harness.verifiers.stepwise.judge`), the
lm-eval tasks (:mod:`genclf_harness.harness.verifier_tasks.stepwise`), the Monte-Carlo labels
(:mod:`genclf_harness.verifiers.stepwise.labels`) and StepWiser training all use these definitions.

The step-judge prompt judges step ``i`` given the problem and steps ``0 .. i-1``::

    user:      Problem:
               {problem}

               Earlier steps:
               Step 1: {steps[0]}
               ...                        ("(none)" for the first step)

               New step:
               Step {i+1}: {steps[i]}

               Is the new step correct (Yes/No)?
    assistant: Yes                        <- scored: P("Yes") normalised over Yes/No

Steps are numbered from 1 in the prompt (as a reader counts) and indexed from 0 everywhere in
code and data (ProcessBench's ``label``/``first_error_step`` is 0-based). The answers follow
:mod:`genclf_harness.verifiers.format`: bare ``Yes``/``No`` right after a chat assistant marker,
``" Yes"``/``" No"`` after a space in running text.

The generated-verdict mode asks instead for an answer ending in ``Verdict: Yes`` or
``Verdict: No`` (optionally after reasoning, StepWiser's judge) and parses it with
:func:`parse_verdict`.

A step is judged wrong when its P(Yes) is *below* the threshold (default 0.5); the predicted
first wrong step is the first such step, or ``-1`` when there is none (:func:`first_error`).
ProcessBench (Zheng et al. 2024) scores those predictions: accuracy on the erroneous solutions
(the predicted index equals the labelled one exactly), accuracy on the correct ones (the
prediction is ``-1``) and their harmonic mean, "F1" (:func:`processbench_scores`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from genclf_harness.data.step_sets import PROCESSBENCH, StepRow, load_step_rows, split_steps, step_set_spec

__all__ = [
    "ProcessBenchExample",
    "ProcessBenchScores",
    "StepJudgeFormat",
    "DEFAULT_STEP_FORMAT",
    "first_error",
    "load_processbench",
    "parse_verdict",
    "processbench_scores",
    "split_steps",
]


# -- splitting (the data layer's rule, re-exported: stepwise judging and StepWiser cut the same way)


def check_steps(steps: Sequence[str], where: str = "steps") -> list[str]:
    """``steps`` as a list of non-empty strings, or a ValueError naming the bad one."""
    if isinstance(steps, str):
        raise TypeError(f"{where}: expected a list of step strings, got one string (split it with split_steps)")
    steps = list(steps)
    if not steps:
        raise ValueError(f"{where}: no steps (a solution needs at least one step to judge)")
    for index, step in enumerate(steps):
        if not isinstance(step, str) or not step.strip():
            raise ValueError(f"{where}[{index}]: a step must be a non-empty string, got {step!r}")
    return steps


# -- the prompt ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepJudgeFormat:
    """How a (problem, earlier steps, new step) triple is put to the judge."""

    template: str = "Problem:\n{problem}\n\nEarlier steps:\n{earlier}\n\nNew step:\n{step}\n\n{ask}"
    step_label: str = "Step {number}: {text}"
    no_earlier: str = "(none)"
    question: str = "Is the new step correct (Yes/No)?"
    verdict_instruction: str = 'Is the new step correct? Answer with "Verdict: Yes" or "Verdict: No".'
    reasoning_instruction: str = (
        "Check the new step carefully: is it correct, given the problem and the earlier steps? "
        'Explain briefly, then end with "Verdict: Yes" if it is correct or "Verdict: No" if it is not.'
    )
    yes: str = "Yes"
    no: str = "No"

    def user_message(self, problem: str, steps: Sequence[str], index: int, *, ask: str | None = None) -> str:
        """The prompt judging ``steps[index]`` after ``steps[:index]``."""
        steps = check_steps(steps)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(steps):
            raise IndexError(f"step index {index!r} is out of range for a solution of {len(steps)} steps (0-based)")
        earlier = "\n".join(self.step_label.format(number=i + 1, text=s.strip()) for i, s in enumerate(steps[:index]))
        return self.template.format(
            problem=problem.strip(),
            earlier=earlier or self.no_earlier,
            step=self.step_label.format(number=index + 1, text=steps[index].strip()),
            ask=self.question if ask is None else ask,
        )

    def answers(self, *, after_marker: bool) -> tuple[str, str]:
        """(yes, no) continuations: bare after a chat assistant marker, else after a space."""
        return (self.yes, self.no) if after_marker else (" " + self.yes, " " + self.no)

    def verdict_text(self, correct: bool) -> str:
        """The verdict line a generated judgement ends with."""
        return f"Verdict: {self.yes if correct else self.no}"


DEFAULT_STEP_FORMAT = StepJudgeFormat()

_VERDICT = re.compile(r"verdict\W{0,6}(yes|no|correct|incorrect|positive|negative)\b", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*(yes|no|correct|incorrect|positive|negative)\b", re.IGNORECASE)
_LEADING = re.compile(r"^\W{0,4}(yes|no)\b", re.IGNORECASE)
_POSITIVE = {"yes", "correct", "positive"}


def parse_verdict(text: str) -> bool | None:
    """A generated judgement's verdict: True (correct), False (wrong) or None (none readable).

    Read, in this order: the last ``Verdict: Yes/No`` (also correct/incorrect, positive/negative,
    StepWiser's words), the last ``\\boxed{...}`` holding one of those words, or a bare Yes/No at
    the very start of the text. Parsing only; nothing is evaluated.
    """
    if not text:
        return None
    for pattern in (_VERDICT, _BOXED):
        matches = pattern.findall(text)
        if matches:
            return matches[-1].lower() in _POSITIVE
    leading = _LEADING.match(text.strip())
    if leading:
        return leading.group(1).lower() == "yes"
    return None


# -- first error and the ProcessBench metric ----------------------------------------------------


def first_error(p_yes: Sequence[float], threshold: float = 0.5) -> int:
    """The index of the first step with P(Yes) below ``threshold``, or -1 when every step passes."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    for index, value in enumerate(p_yes):
        value = float(value)
        if math.isnan(value):
            raise ValueError(f"step {index}: P(Yes) is NaN; a judge score must be a number")
        if value < threshold:
            return index
    return -1


@dataclass(frozen=True, slots=True)
class ProcessBenchScores:
    """ProcessBench's figures (fractions in [0, 1]; the paper prints them times 100)."""

    acc_erroneous: float
    """Share of erroneous solutions (label >= 0) whose first wrong step is predicted exactly."""
    acc_correct: float
    """Share of correct solutions (label -1) predicted to have no wrong step."""
    f1: float
    """Harmonic mean of the two accuracies (0 when both are 0; NaN when a class is missing)."""
    num_erroneous: int
    num_correct: int

    def as_dict(self) -> dict[str, float]:
        return {"acc_erroneous": self.acc_erroneous, "acc_correct": self.acc_correct, "f1": self.f1,
                "num_erroneous": self.num_erroneous, "num_correct": self.num_correct}


def harmonic_mean(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def processbench_scores(predicted: Sequence[int], labels: Sequence[int]) -> ProcessBenchScores:
    """ProcessBench's metric on predicted and labelled first-error indices (-1: no error)."""
    if len(predicted) != len(labels):
        raise ValueError(f"{len(predicted)} predictions but {len(labels)} labels")
    erroneous = [int(p) == int(g) for p, g in zip(predicted, labels) if int(g) != -1]
    correct = [int(p) == -1 for p, g in zip(predicted, labels) if int(g) == -1]
    for p, g in zip(predicted, labels):
        if int(g) < -1 or int(p) < -1:
            raise ValueError(f"a first-error index is -1 (no error) or a 0-based step index, got {min(p, g)}")
    acc_err = sum(erroneous) / len(erroneous) if erroneous else math.nan
    acc_cor = sum(correct) / len(correct) if correct else math.nan
    return ProcessBenchScores(acc_err, acc_cor, harmonic_mean(acc_err, acc_cor), len(erroneous), len(correct))


def best_threshold_scores(step_scores: Sequence[Sequence[float]], labels: Sequence[int]) -> tuple[float, ProcessBenchScores]:
    """The threshold (among the scores themselves, and 0 and 1) with the highest F1 on *these*
    solutions, and its scores: an oracle upper bound for an uncalibrated judge, not a fair figure."""
    candidates = sorted({0.0, 1.0} | {float(v) for scores in step_scores for v in scores})
    # A threshold just above a score flips that step; use midpoints so each flip is reachable.
    thresholds = [0.0] + [(a + b) / 2 for a, b in zip(candidates, candidates[1:])] + [1.0]
    best: tuple[float, ProcessBenchScores] | None = None
    for threshold in thresholds:
        scores = processbench_scores([first_error(s, threshold) for s in step_scores], labels)
        if best is None or (scores.f1 > best[1].f1):
            best = (threshold, scores)
    assert best is not None
    return best


# -- data ---------------------------------------------------------------------------------------


ProcessBenchExample = StepRow
"""One solution: ``id``, ``problem``, ``steps``, ``label`` (the first wrong step, 0-based, -1 for none)."""


PROCESSBENCH_SPLITS = ("gsm8k", "math", "olympiadbench", "omnimath")
"""ProcessBench's four official splits; every ``processbench/<split>.jsonl`` present is read, these or others."""


def load_processbench(split: str, data_dir: str | os.PathLike[str] | None = None,
                      limit: int | None = None, *, dataset: str = PROCESSBENCH) -> list[ProcessBenchExample]:
    """One split of a step-labelled folder: ProcessBench's ``<data_dir>/processbench/<split>.jsonl``
    by default, or the folder ``dataset`` (``meta.json`` with ``"kind": "steps"`` and its field
    mapping; :mod:`genclf_harness.data.step_sets`). A bad row raises a DataError naming its line
    and field."""
    return load_step_rows(step_set_spec(dataset, data_dir), split, limit)
