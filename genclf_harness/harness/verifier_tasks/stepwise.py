"""The functions the ProcessBench task YAMLs name: the loader, per-solution results, aggregations.

Plain Python; lm-eval calls these, and the task class that expands a solution into one Yes/No
request pair per step is :class:`genclf_harness.harness.verifier_tasks.step_task.ProcessBenchTask`.

Each document is one solution of a step-labelled folder's split: ``$GENCLF_DATA_DIR/processbench/<split>.jsonl``
for ``genclf_processbench_<split>``, or a folder of your own (:mod:`genclf_harness.data.step_sets`). Step ``i``
is asked in the step-judge format (:mod:`genclf_harness.verifiers.stepwise.steps`): the problem, steps
``0..i-1`` and step ``i``, then "Is the new step correct (Yes/No)?"; its score is P("Yes")
normalised over Yes/No. The predicted first wrong step is the first step below the threshold
(``--metadata '{"threshold": 0.3}'``, default 0.5), -1 if none. Metrics (ProcessBench's):

- ``acc_erroneous``: exact first-error index on the solutions with an error;
- ``acc_correct``: prediction -1 on the solutions without one;
- ``step_f1``: their harmonic mean (ProcessBench's headline "F1");
- ``step_f1_oracle``: the same at the threshold that maximises it on the evaluated solutions
  themselves, an upper bound that shows what calibration could give (reported beside, never
  instead of, ``step_f1``).

``f1`` and ``f1_oracle`` were these metrics' names before (lm-eval registers ``f1`` for
scikit-learn's F1); they still resolve, with a deprecation warning, until the next release.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from genclf_harness.data.step_sets import PROCESSBENCH
from genclf_harness.harness.metrics import deprecated_names
from genclf_harness.verifiers.stepwise.steps import (
    DEFAULT_STEP_FORMAT,
    best_threshold_scores,
    first_error,
    load_processbench,
    processbench_scores,
)

PROCESSBENCH_METRICS: tuple[str, ...] = ("acc_erroneous", "acc_correct", "step_f1", "step_f1_oracle")
RENAMED_METRICS: dict[str, str] = {"f1": "step_f1", "f1_oracle": "step_f1_oracle"}


class SolutionItem(NamedTuple):
    """One solution's result as the aggregations receive it (picklable for gathering)."""

    id: str
    label: int
    predicted: int
    p_yes: tuple[float, ...]


def _rows(dataset: str, split: str, threshold: float, data_dir: str | None) -> list[dict[str, Any]]:
    rows = []
    for example in load_processbench(split, data_dir, dataset=dataset):
        queries = [DEFAULT_STEP_FORMAT.user_message(example.problem, example.steps, i) for i in range(len(example.steps))]
        rows.append({
            "id": example.id,
            "problem": example.problem,
            "steps": list(example.steps),
            "label": example.label,
            "num_steps": len(example.steps),
            "step_queries": queries,
            "query": queries[-1],
            "threshold": threshold,
        })
    return rows


def _threshold(metadata: dict[str, Any]) -> float:
    value = metadata.get("threshold", 0.5)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"--metadata threshold must be a number in [0, 1], got {value!r}")
    return float(value)


def load_split(dataset: str = PROCESSBENCH, split: str = "gsm8k", data_dir: str | None = None,
               **metadata: Any) -> Any:
    """The documents of ``genclf_<dataset>_<split>``: one per solution of a step-labelled folder's
    split (``dataset_kwargs`` name both; ``--metadata`` may give ``threshold`` and ``data_dir``)."""
    import datasets

    rows = _rows(dataset, split, _threshold(metadata), data_dir)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def p_yes_from_pair(yes: float, no: float) -> float:
    """sigmoid(log P(Yes) - log P(No)), stable for large margins; NaN log-likelihoods are an error."""
    margin = float(yes) - float(no)
    if math.isnan(margin):
        raise ValueError(f"a step's Yes/No log-likelihoods are not numbers ({yes!r}, {no!r})")
    return 1.0 / (1.0 + math.exp(-margin)) if margin >= 0 else math.exp(margin) / (1.0 + math.exp(margin))


def process_solution(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    """Per solution: the step P(Yes) from each (Yes, No) result pair, and the predicted first error."""
    steps = int(doc["num_steps"])
    if len(results) != 2 * steps:
        raise ValueError(f"solution {doc['id']}: {len(results)} results for {steps} steps (expected one Yes/No pair per step)")
    scores = tuple(p_yes_from_pair(results[2 * i][0], results[2 * i + 1][0]) for i in range(steps))
    item = SolutionItem(str(doc["id"]), int(doc["label"]), first_error(scores, float(doc["threshold"])), scores)
    return {name: item for name in PROCESSBENCH_METRICS}


def _scores(items: Sequence[SolutionItem]):
    return processbench_scores([i.predicted for i in items], [i.label for i in items])


def acc_erroneous(items: Sequence[SolutionItem]) -> float:
    """Accuracy on erroneous solutions: the exact first wrong step."""
    return _scores(items).acc_erroneous


def acc_correct(items: Sequence[SolutionItem]) -> float:
    """Accuracy on correct solutions: no step judged wrong."""
    return _scores(items).acc_correct


def step_f1(items: Sequence[SolutionItem]) -> float:
    """Harmonic mean of acc_erroneous and acc_correct (ProcessBench's F1)."""
    return _scores(items).f1


def step_f1_oracle(items: Sequence[SolutionItem]) -> float:
    """F1 at the threshold best for these very solutions (an upper bound, not a fair figure)."""
    return best_threshold_scores([i.p_yes for i in items], [i.label for i in items])[1].f1


__getattr__ = deprecated_names(globals(), RENAMED_METRICS)
