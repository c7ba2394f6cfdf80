"""StepWiser's step labels from Monte-Carlo rollouts: Q estimates, labelling rules, class balance.

For a solution with steps ``s_1 .. s_n`` (chunks), ``Q_k`` estimates the chance that the policy
reaches the right final answer after the first ``k`` steps: ``M`` continuations are sampled from
the prompt followed by ``s_1 .. s_k`` and ``Q_k`` is the share whose final answer (parsed from the
prefix plus the continuation, never evaluated) is right. ``Q_0`` is rolled out from the problem
alone; ``Q_n`` is the full solution's own correctness (0 or 1: nothing is left to continue).

Step ``i`` (1-based here, as in the paper; :class:`LabelledStep` stores the 0-based index) is
labelled *positive* by one of StepWiser's rules:

- ``abs_q`` (Abs-Q): ``Q_i > 0``, some continuation still succeeds;
- ``rel_ratio`` (Rel-Ratio): ``Q_i / Q_{i-1} > γ``, the step does not lower the success rate by
  more than a factor γ; when ``Q_{i-1} = 0`` the step is positive iff ``Q_i > 0``;
- ``rel_effective`` (Rel-Effective): the "effective reward" of Setlur et al. (2024, process
  advantage verifiers) that StepWiser cites, ``E_i = Q_i + α (Q_i − Q_{i-1})``, positive iff
  ``E_i > 1/n``. *Note:* the StepWiser paper's own text of this rule could not be consulted while
  this was written (no access); the formula and the ``1/n`` threshold (``n`` defaults to the number
  of rollouts ``M``, i.e. "better than one successful rollout's worth") are implemented as stated
  here and should be checked against the paper.

:func:`balance` then equalises the positive and negative classes (StepWiser trains on balanced
labels) by down-sampling the larger one with a seeded shuffle.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from genclf_harness.backends.generation import Generator
from genclf_harness.data.jsonl import iter_jsonl
from genclf_harness.verifiers.stepwise.steps import check_steps

LabelRule = Literal["abs_q", "rel_ratio", "rel_effective"]
LABEL_RULES: tuple[str, ...] = ("abs_q", "rel_ratio", "rel_effective")


@dataclass(frozen=True, slots=True)
class Trajectory:
    """A solution to label: the problem, its steps, the gold answer and the policy's prompt."""

    problem: str
    steps: tuple[str, ...]
    gold: str
    prompt: str
    """The rendered prompt the policy answered after (rollouts continue it)."""
    id: str = ""


@dataclass(frozen=True, slots=True)
class QEstimate:
    """Q_0 .. Q_n of one trajectory and the successes they come from."""

    q: tuple[float, ...]
    successes: tuple[int, ...]
    rollouts: int


@dataclass(frozen=True, slots=True)
class LabelledStep:
    """One labelled step: the judge's training example."""

    id: str
    problem: str
    steps: tuple[str, ...]
    index: int
    """0-based index of the judged step; ``steps[:index]`` are the earlier ones."""
    label: bool
    q_before: float
    q_after: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = list(self.steps)
        return out


def prefix_text(steps: Sequence[str], k: int, separator: str = "\n") -> str:
    """The first ``k`` steps as the policy would have written them (with a trailing separator)."""
    return "".join(step.strip() + separator for step in steps[:k])


def estimate_q(
    policy: Generator,
    trajectories: Sequence[Trajectory],
    is_correct: Callable[[str, str], bool],
    *,
    rollouts: int = 8,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    separator: str = "\n",
    stop: Sequence[str] = (),
    show_progress: bool = False,
) -> list[QEstimate]:
    """Q_0 .. Q_n of every trajectory by ``rollouts`` continuations per prefix (one ``generate`` call).

    ``is_correct(text, gold)`` checks a whole solution text (the prefix steps plus a continuation)
    by parsing, e.g. ``ReasoningTask.is_correct``.
    """
    if rollouts < 1:
        raise ValueError(f"rollouts must be at least 1, got {rollouts}")
    prompts, owners = [], []
    for t, trajectory in enumerate(trajectories):
        check_steps(trajectory.steps, f"trajectories[{t}].steps")
        for k in range(len(trajectory.steps)):  # Q_n needs no rollouts
            prompts.append(trajectory.prompt + prefix_text(trajectory.steps, k, separator))
            owners.append((t, k))
    samples = policy.generate(prompts, n=rollouts, max_new_tokens=max_new_tokens, temperature=temperature,
                              top_p=top_p, seed=seed, stop=stop, show_progress=show_progress) if prompts else []
    successes: list[list[int]] = [[0] * (len(t.steps) + 1) for t in trajectories]
    for (t, k), continuations in zip(owners, samples, strict=True):
        if len(continuations) != rollouts:
            raise ValueError(f"the policy returned {len(continuations)} continuations for a prefix, expected {rollouts}")
        prefix = prefix_text(trajectories[t].steps, k, separator)
        successes[t][k] = sum(bool(is_correct(prefix + c, trajectories[t].gold)) for c in continuations)
    out = []
    for t, trajectory in enumerate(trajectories):
        final = bool(is_correct(prefix_text(trajectory.steps, len(trajectory.steps), separator), trajectory.gold))
        successes[t][-1] = rollouts if final else 0
        out.append(QEstimate(tuple(s / rollouts for s in successes[t]), tuple(successes[t]), rollouts))
    return out


def label_steps(q: Sequence[float], rule: LabelRule = "rel_ratio", *, gamma: float = 0.8, alpha: float = 1.0,
                n: int | None = None) -> list[bool]:
    """Labels of steps 1..len(q)-1 from Q_0..Q_n under a rule (see the module docstring).

    ``n`` is Rel-Effective's threshold denominator (required for that rule).
    """
    values = [float(v) for v in q]
    if len(values) < 2:
        raise ValueError(f"need Q_0 and at least one step's Q, got {len(values)} value(s)")
    for k, v in enumerate(values):
        if math.isnan(v) or not 0.0 <= v <= 1.0:
            raise ValueError(f"Q_{k} = {v} is not a probability in [0, 1]")
    if rule == "abs_q":
        return [values[i] > 0 for i in range(1, len(values))]
    if rule == "rel_ratio":
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        return [values[i] > 0 if values[i - 1] == 0 else values[i] / values[i - 1] > gamma
                for i in range(1, len(values))]
    if rule == "rel_effective":
        if n is None or n < 1:
            raise ValueError(f"rel_effective needs n >= 1 (the threshold is 1/n), got {n}")
        return [values[i] + alpha * (values[i] - values[i - 1]) > 1.0 / n for i in range(1, len(values))]
    raise ValueError(f"unknown labelling rule {rule!r}; choose one of {', '.join(LABEL_RULES)}")


def labelled_steps(trajectories: Sequence[Trajectory], estimates: Sequence[QEstimate], rule: LabelRule = "rel_ratio",
                   *, gamma: float = 0.8, alpha: float = 1.0, n: int | None = None) -> list[LabelledStep]:
    """One :class:`LabelledStep` per step of every trajectory (``n`` defaults to the rollout count)."""
    if len(trajectories) != len(estimates):
        raise ValueError(f"{len(trajectories)} trajectories but {len(estimates)} Q estimates")
    out = []
    for t, (trajectory, estimate) in enumerate(zip(trajectories, estimates)):
        if len(estimate.q) != len(trajectory.steps) + 1:
            raise ValueError(f"trajectory {t}: {len(trajectory.steps)} steps need {len(trajectory.steps) + 1} Q values, "
                             f"got {len(estimate.q)}")
        labels = label_steps(estimate.q, rule, gamma=gamma, alpha=alpha, n=n if n is not None else estimate.rollouts)
        for i, label in enumerate(labels):
            out.append(LabelledStep(trajectory.id or f"trajectory-{t}", trajectory.problem, trajectory.steps, i, label,
                                    estimate.q[i], estimate.q[i + 1]))
    return out


def steps_from_first_errors(solutions: Sequence[Any], max_steps: int | None = None) -> list[LabelledStep]:
    """Labelled steps from solutions with a known first wrong step (``problem``, ``steps``, ``label``:
    0-based, -1 for none, as :func:`~genclf_harness.verifiers.stepwise.steps.load_processbench` gives them):
    every step before it is right, it is wrong, the steps after it are left out (a step after an
    error has no agreed label). ``max_steps`` keeps the first N steps of each solution. No Q values:
    ``q_before``/``q_after`` are NaN."""
    out = []
    for solution in solutions:
        first_error = int(solution.label)
        last = len(solution.steps) - 1 if first_error == -1 else first_error
        if max_steps is not None:
            last = min(last, max_steps - 1)
        for index in range(last + 1):
            out.append(LabelledStep(str(solution.id), solution.problem, tuple(solution.steps), index,
                                    index != first_error, math.nan, math.nan))
    return out


def balance(steps: Sequence[LabelledStep], *, seed: int = 0) -> list[LabelledStep]:
    """Equal numbers of positive and negative steps: the larger class is down-sampled (seeded);
    the result keeps the input order. Empty when a class is missing."""
    positives = [i for i, s in enumerate(steps) if s.label]
    negatives = [i for i, s in enumerate(steps) if not s.label]
    size = min(len(positives), len(negatives))
    rng = random.Random(seed)
    keep = set(rng.sample(positives, size)) | set(rng.sample(negatives, size))
    return [s for i, s in enumerate(steps) if i in keep]


def write_labels(path: str | os.PathLike[str], steps: Sequence[LabelledStep]) -> None:
    """A JSONL file of labelled steps (written whole, then renamed: never half-written)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for step in steps:
            handle.write(json.dumps(step.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(target)


def read_labels(path: str | os.PathLike[str]) -> list[LabelledStep]:
    """Labelled steps from a JSONL file of :meth:`LabelledStep.to_dict` rows (each row checked)."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such step-labels file")
    out = []
    for line_no, row in iter_jsonl(source):
        where = f"{source}:{line_no}"
        try:
            steps = tuple(check_steps(row["steps"], f"{where}: steps"))
            index, label = row["index"], row["label"]
            problem = str(row["problem"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{where}: expected a labelled step (problem, steps, index, label): {err}") from None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(steps):
            raise ValueError(f"{where}: index {index!r} is not a step of a {len(steps)}-step solution")
        if not isinstance(label, bool):
            raise ValueError(f"{where}: label must be true or false, got {label!r}")
        out.append(LabelledStep(str(row.get("id", "")), problem, steps, index, label,
                                float(row.get("q_before", math.nan)), float(row.get("q_after", math.nan))))
    return out
