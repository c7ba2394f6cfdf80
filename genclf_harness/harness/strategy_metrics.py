"""Metrics of the strategy tasks that the classification template's metrics do not cover.

- Uncertainty tasks (``*_unc``, scored): the label set has the extra answer "uncertain".
  ``acc`` counts "uncertain" as wrong; ``coverage`` is the share of documents answered with a
  real label; ``acc_covered`` the accuracy on those (selective accuracy; NaN if none);
  ``acc_forced`` the accuracy of the best real label ("uncertain" ignored).
- Generative tasks (``*_gen``): the greedy answer is read by `genclf_harness.prompts.answers`.
  ``acc`` counts unparseable answers as wrong; ``unparseable`` is their share; with the
  uncertainty label also ``coverage`` and ``acc_covered``.

``macro_f1`` is over the real classes that occur in the gold labels or the real predictions; an
"uncertain" or unparseable prediction is a miss of the gold class and no class of its own.

These tasks use `StrategyTask` (lm-eval's plain ``ConfigurableTask``) so the YAML's
``process_results`` applies.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from lm_eval.api.task import ConfigurableTask

from genclf_harness.data import get_spec
from genclf_harness.harness.metrics import deprecated_names
from genclf_harness.prompts import AnswerParser, LabelSet, PromptStrategy


class StrategyTask(ConfigurableTask):
    """lm-eval's ``ConfigurableTask`` under the name a YAML's ``class:`` gives, replacing the
    template's calibrated task class where the metrics differ (uncertainty and generative tasks)."""

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        from genclf_harness.harness.classification_task import complete_config

        config, self.genclf_spec = complete_config(config)
        strategy = (config.get("dataset_kwargs") or {}).get("strategy")
        if strategy is not None:  # before any model work, not at the first answer
            PromptStrategy.from_value(strategy).check(self.genclf_spec,
                                                      generative=config.get("output_type") == "generate_until")
        super().__init__(config=config, **kwargs)


class Prediction(NamedTuple):
    """One document's outcome, as the aggregations receive it (picklable for gathering)."""

    doc_id: Any
    gold: int
    pred: int | None
    """Index into the document's choices; None when a generated answer could not be read."""
    num_classes: int
    """K real labels; ``pred == K`` is "uncertain"."""
    status: str
    """``scored`` for scored tasks; the answer parser's status for generative ones."""

    @property
    def covered(self) -> bool:
        return self.pred is not None and self.pred < self.num_classes

    @property
    def correct(self) -> bool:
        return self.pred == self.gold


def process_results_uncertain(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    """Scored decoding with the uncertainty label as the last choice."""
    lls = [float(ll) for ll, _ in results][: len(doc["choices"])]
    if any(not math.isfinite(ll) for ll in lls):
        raise ValueError(f"document {doc.get('id', '?')!r}: non-finite label log-likelihoods {lls}")
    num_classes = len(lls) - 1
    gold = int(doc["gold"])
    pred = max(range(len(lls)), key=lls.__getitem__)  # first maximum, as numpy's argmax
    forced = max(range(num_classes), key=lls.__getitem__)
    item = Prediction(doc.get("id"), gold, pred, num_classes, "scored")
    return {
        "acc": float(item.correct),
        "coverage": float(item.covered),
        "acc_covered": item,
        "acc_forced": float(forced == gold),
        "macro_f1": item,
    }


def process_results_generative(doc: dict[str, Any], results: Sequence[str]) -> dict[str, Any]:
    """Generative decoding: the answer parsed to a label."""
    item = parse_prediction(doc, results[0])
    return {"acc": float(item.correct), "macro_f1": item, "unparseable": float(item.pred is None)}


def process_results_generative_uncertain(doc: dict[str, Any], results: Sequence[str]) -> dict[str, Any]:
    """Generative decoding with the uncertainty label."""
    item = parse_prediction(doc, results[0])
    return {
        "acc": float(item.correct),
        "macro_f1": item,
        "unparseable": float(item.pred is None),
        "coverage": float(item.covered),
        "acc_covered": item,
    }


def parse_prediction(doc: dict[str, Any], answer: str) -> Prediction:
    """A strategy row's generated answer, read against its label set."""
    parser = _parser(doc["dataset"], doc["strategy"])
    if list(parser.label_set.choices) != list(doc["choices"]):
        raise ValueError(f"document {doc.get('id', '?')!r}: choices {doc['choices']} differ from "
                         f"strategy {doc['strategy']!r}'s label set {parser.label_set.choices}")
    parsed = parser.parse(answer)
    return Prediction(doc.get("id"), int(doc["gold"]), parsed.index, parser.label_set.num_classes, parsed.status)


@functools.lru_cache(maxsize=64)
def _parser(dataset: str, strategy: str) -> AnswerParser:
    chosen = PromptStrategy.parse(strategy)
    return AnswerParser.of(LabelSet.of(get_spec(dataset), chosen.label_style, chosen.uncertainty))


def macro_f1(items: Sequence[Prediction]) -> float:
    """Macro-F1 over the real classes seen in gold or real predictions (see the module docstring)."""
    if not items:
        raise ValueError("no documents to aggregate")
    predicted = [p.pred if p.covered else None for p in items]
    classes = sorted({p.gold for p in items} | {c for c in predicted if c is not None})
    total = 0.0
    for label in classes:
        tp = sum(1 for p, c in zip(items, predicted, strict=True) if c == label and p.gold == label)
        errors = sum(1 for p, c in zip(items, predicted, strict=True) if (c == label) != (p.gold == label))
        total += 2 * tp / (2 * tp + errors)
    return total / len(classes)


def acc_covered(items: Sequence[Prediction]) -> float:
    """Accuracy on the documents answered with a real label (NaN when there are none)."""
    covered = [p for p in items if p.covered]
    return sum(p.correct for p in covered) / len(covered) if covered else math.nan


__getattr__ = deprecated_names(globals(), {"f1_macro": "macro_f1"})
