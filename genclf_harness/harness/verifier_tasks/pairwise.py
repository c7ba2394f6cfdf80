"""The functions the preference task YAMLs name: ``genclf_llmbar*`` and the tasks of a preference folder of
your own (``genclf_<name>``, ``genclf_<name>_pairwise``; :mod:`genclf_harness.data.preference_sets`).

Plain Python: lm-eval calls them, nothing here imports it. The evaluated model is the judge;
the decisions and reports are those of :mod:`genclf_harness.verifiers.pairwise.judge`, so lm-eval and
the Python judges agree by construction.

- ``genclf_llmbar`` (pointwise, IPO): two documents per pair, one per output, each asked
  "Does the response follow the instruction well (Yes/No)?"; the aggregations regroup them by
  pair and prefer the output with the higher P("Yes"). Metrics: ``acc`` (ties count half),
  ``acc_natural``, ``acc_adversarial``, ``ties``.
- ``genclf_llmbar_pairwise``: two documents per pair, the original order and the swapped one,
  each asked "Which output follows the instruction better, 1 or 2?". Metrics: ``acc_original``,
  ``acc_swapped``, ``acc_averaged`` (the order-averaged decision), ``consistency`` (both orders
  pick the same output), ``prefers_first`` (share of decisions for the output shown first),
  ``acc_averaged_natural``, ``acc_averaged_adversarial``.

The documents of a pair are adjacent, so ``--limit 2k`` evaluates k whole pairs; a pair with a
missing document (an odd limit) is left out of the figures. Run with ``--apply_chat_template``
for chat judges (the answer is then read right after the assistant marker, as the Python judges
do). ``--metadata '{"data_dir": "..."}'`` overrides ``$GENCLF_DATA_DIR``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from genclf_harness.verifiers.pairwise.pairs import LLMBAR, load_preference_pairs
from genclf_harness.verifiers.pairwise.judge import (
    IPO_FORMAT,
    PAIRWISE_FORMAT,
    PairwiseComparison,
    PointwiseComparison,
    decide_pairwise,
    decide_pointwise,
    pairwise_report,
    pointwise_report,
)

logger = logging.getLogger(__name__)


class JudgedDocument(NamedTuple):
    """One document's result as the aggregations receive it (picklable for gathering)."""

    pair_id: str
    subset: str
    label: int
    slot: int
    """Pointwise: which output (1, 2). Pairwise: 0 = original order, 1 = swapped."""
    first: float
    """Log-likelihood of the first answer ("Yes" or "1")."""
    second: float
    """Log-likelihood of the second answer ("No" or "2")."""


# -- documents -----------------------------------------------------------------------------------


def _dataset(rows: list[dict[str, Any]]) -> Any:
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_pointwise(dataset: str = LLMBAR, split: str | None = None, data_dir: str | None = None,
                   **metadata: Any) -> Any:
    """``genclf_<dataset>``'s documents: each output with its instruction, pair by pair (the
    evaluated split of a preference folder: LLMBar's or your own)."""
    rows = []
    for pair in load_preference_pairs(dataset, split, data_dir):
        for which in (1, 2):
            rows.append({
                "pair_id": pair.id, "subset": pair.subset, "label": pair.label, "slot": which,
                "query": IPO_FORMAT.user_message(pair.instruction, pair.output(which)),
                "gold": 0 if pair.label == which else 1,  # index into ["Yes", "No"]
            })
    return _dataset(rows)


def load_pairwise(dataset: str = LLMBAR, split: str | None = None, data_dir: str | None = None,
                  **metadata: Any) -> Any:
    """``genclf_<dataset>_pairwise``'s documents: each pair in the original and the swapped order."""
    rows = []
    for pair in load_preference_pairs(dataset, split, data_dir):
        for slot, (first, second) in enumerate(((pair.output_1, pair.output_2), (pair.output_2, pair.output_1))):
            shown_first_is_better = pair.label == (1 if slot == 0 else 2)
            rows.append({
                "pair_id": pair.id, "subset": pair.subset, "label": pair.label, "slot": slot,
                "query": PAIRWISE_FORMAT.user_message(pair.instruction, first, second),
                "gold": 0 if shown_first_is_better else 1,  # index into ["1", "2"]
            })
    return _dataset(rows)


# -- per document --------------------------------------------------------------------------------

POINTWISE_METRICS: tuple[str, ...] = ("acc", "acc_natural", "acc_adversarial", "ties")
PAIRWISE_METRICS: tuple[str, ...] = (
    "acc_original", "acc_swapped", "acc_averaged", "consistency", "prefers_first",
    "acc_averaged_natural", "acc_averaged_adversarial",
)


def _document(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> JudgedDocument:
    (first, _), (second, _) = results[:2]
    return JudgedDocument(str(doc["pair_id"]), str(doc["subset"]), int(doc["label"]), int(doc["slot"]),
                          float(first), float(second))


def process_pointwise(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    """Per document: its item under every metric (the aggregations regroup the pairs)."""
    item = _document(doc, results)
    return {name: item for name in POINTWISE_METRICS}


def process_pairwise(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    item = _document(doc, results)
    return {name: item for name in PAIRWISE_METRICS}


# -- regrouping and aggregations -----------------------------------------------------------------


def _by_pair(items: Sequence[JudgedDocument], slots: tuple[int, int]) -> list[tuple[JudgedDocument, JudgedDocument]]:
    grouped: dict[str, dict[int, JudgedDocument]] = {}
    for item in items:
        grouped.setdefault(item.pair_id, {})[item.slot] = item
    complete = [(members[slots[0]], members[slots[1]]) for members in grouped.values() if set(slots) <= set(members)]
    if len(complete) < len(grouped):
        logger.warning("%d of %d pairs lack one of their two documents (--limit?); left out",
                       len(grouped) - len(complete), len(grouped))
    return complete


def pointwise_comparisons(items: Sequence[JudgedDocument]) -> list[PointwiseComparison]:
    """IPO decisions from the documents' Yes/No log-likelihoods."""
    return [
        decide_pointwise(one.pair_id, one.subset, one.label, one.first - one.second, two.first - two.second)
        for one, two in _by_pair(items, (1, 2))
    ]


def pairwise_comparisons(items: Sequence[JudgedDocument]) -> list[PairwiseComparison]:
    """Both-order decisions from the documents' ``1``/``2`` log-likelihoods."""
    return [
        decide_pairwise(original.pair_id, original.subset, original.label,
                        (original.first, original.second), (swapped.first, swapped.second))
        for original, swapped in _by_pair(items, (0, 1))
    ]


def _aggregation(name: str, report: Callable[..., dict[str, Any]],
                 comparisons: Callable[[Sequence[JudgedDocument]], list[Any]]) -> Callable[[Sequence[JudgedDocument]], float]:
    def aggregate(items: Sequence[JudgedDocument]) -> float:
        found = comparisons(items)
        if not found:
            return float("nan")
        return float(report(found).get(name, float("nan")))

    aggregate.__name__ = aggregate.__qualname__ = name
    aggregate.__doc__ = f"{name} over the preference pairs (documents regrouped by pair)."
    return aggregate


acc = _aggregation("acc", pointwise_report, pointwise_comparisons)
acc_natural = _aggregation("acc_natural", pointwise_report, pointwise_comparisons)
acc_adversarial = _aggregation("acc_adversarial", pointwise_report, pointwise_comparisons)
ties = _aggregation("ties", pointwise_report, pointwise_comparisons)

acc_original = _aggregation("acc_original", pairwise_report, pairwise_comparisons)
acc_swapped = _aggregation("acc_swapped", pairwise_report, pairwise_comparisons)
acc_averaged = _aggregation("acc_averaged", pairwise_report, pairwise_comparisons)
consistency = _aggregation("consistency", pairwise_report, pairwise_comparisons)
prefers_first = _aggregation("prefers_first", pairwise_report, pairwise_comparisons)
acc_averaged_natural = _aggregation("acc_averaged_natural", pairwise_report, pairwise_comparisons)
acc_averaged_adversarial = _aggregation("acc_averaged_adversarial", pairwise_report, pairwise_comparisons)
