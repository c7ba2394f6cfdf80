"""Per-document items and the corpus-level aggregations of genclf classification tasks.

Each document's item keeps its label log-likelihoods, so everything corpus-level (macro-F1, ECE,
and every calibrated metric) is computed in the aggregation, after lm-eval has gathered the items
of every rank. Metric names read ``<metric>[_<method>]``:

- metric: ``acc``, ``f1_macro``, ``ece``, ``brier``, ``nll``, ``majority_share``;
- method: none (raw), ``prior``, ``prior_em``, ``bc``, ``cc``, ``dcpmi``, ``pmi`` (see
  ``genclf_harness.calibration``), or ``oracle`` (offsets chosen with the labels: an upper bound
  for analysis, never a result).

Fitted methods are transductive (fitted on the evaluated documents' scores, no labels) and,
with the suffix ``_ind``, inductive: ``prior_ind``, ``prior_em_ind``, ``bc_ind`` are fitted on the
scores of unlabelled training-split documents that the anchor carries (task metadata
``inductive_docs``) and applied to the evaluated documents.
A YAML names an aggregation as ``!function genclf_harness.harness.metrics.<metric name>``; the
functions are made on demand by the module's ``__getattr__``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from genclf_harness import calibration as cal

logger = logging.getLogger(__name__)

CONTENT_FREE_INPUTS: tuple[str, ...] = ("N/A", "", "[MASK]")
"""The content-free inputs of contextual calibration, put into the task's own prompt."""

ANCHOR_SECTIONS: tuple[tuple[str, int], ...] = (("cc", len(CONTENT_FREE_INPUTS)), ("dcpmi", 1), ("pmi", 1))
"""The extra score rows the anchor document carries, in request order: (section, rows)."""
INDUCTIVE_SECTION = "inductive"
"""The anchor's last section: one row per inductive (training-split) document, any number."""

_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "acc": cal.accuracy,
    "f1_macro": cal.macro_f1,
    "ece": cal.expected_calibration_error,
    "brier": cal.brier_score,
    "nll": cal.negative_log_likelihood,
    "majority_share": lambda logprobs, _gold: cal.majority_share(logprobs),
}
_DOCUMENT_FITTED = ("prior", "prior_em", "bc")
_SIDE_INPUT = {"cc": "content_free_logprobs", "dcpmi": "domain_logprobs", "pmi": "unconditional_logprobs"}
_INDUCTIVE = tuple(f"{method}_ind" for method in _DOCUMENT_FITTED)
METHOD_NAMES: tuple[str, ...] = (*_DOCUMENT_FITTED, *_INDUCTIVE, *_SIDE_INPUT, "oracle")

FITTED: dict[str, dict[str, dict[str, Any]]] = {}
"""task -> method -> the fitted calibration (``to_dict()``), filled by the aggregations, read by
the results manifest."""


class ScoreItem(NamedTuple):
    """One document's result, as lm-eval passes it to the aggregations (picklable for gathering)."""

    doc_id: Any
    gold: int
    lls: tuple[float, ...]
    anchor: dict[str, Any] | None

    @property
    def correct(self) -> float:
        return float(int(np.argmax(self.lls)) == self.gold)


def make_item(doc_id: Any, gold: int, lls: Sequence[float], anchor: dict[str, Any] | None) -> ScoreItem:
    values = tuple(float(x) for x in lls)
    bad = [x for x in values if not math.isfinite(x)]
    if bad:
        raise ValueError(f"document {doc_id!r}: non-finite label log-likelihoods {list(values)}")
    if not 0 <= gold < len(values):
        raise ValueError(f"document {doc_id!r}: gold label {gold} is not one of its {len(values)} choices")
    return ScoreItem(doc_id, gold, values, anchor)


def split_metric_name(name: str) -> tuple[str, str | None]:
    """``"f1_macro_prior_em"`` -> ``("f1_macro", "prior_em")``; ``"acc"`` -> ``("acc", None)``."""
    for metric in sorted(_METRICS, key=len, reverse=True):
        if name == metric:
            return metric, None
        if name.startswith(metric + "_") and name[len(metric) + 1:] in METHOD_NAMES:
            return metric, name[len(metric) + 1:]
    raise AttributeError(
        f"{name!r} is not a genclf metric; metrics are <{'|'.join(_METRICS)}>[_<{'|'.join(METHOD_NAMES)}>]"
    )


def calibrated_logprobs(items: Sequence[ScoreItem], method: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated log-probabilities (N, K), gold labels (N,)) for the items under ``method``."""
    if not items:
        raise ValueError("no documents to aggregate")
    gold = np.array([item.gold for item in items], dtype=np.int64)
    scores = np.array([item.lls for item in items], dtype=np.float64)
    if method is None:
        return cal.normalize(scores), gold
    if method == "oracle":
        offsets = cal.oracle_offsets(scores, gold)
        return cal.normalize(scores + offsets), gold
    if method in _DOCUMENT_FITTED:
        fitted = cal.fit(method, scores, split="evaluated documents")
    elif method in _INDUCTIVE:
        anchor = next((item.anchor for item in items if item.anchor), None)
        rows = (anchor or {}).get(INDUCTIVE_SECTION) or []
        if not rows:
            raise ValueError(
                f"calibration {method!r} needs inductive documents: give the task metadata inductive_docs > 0 "
                "(e.g. --metadata '{\"inductive_docs\": 100}') and a training split other than the evaluated one"
            )
        fitted = cal.fit(method.removesuffix("_ind"), np.asarray(rows, dtype=np.float64),
                         split=f"inductive: {len(rows)} training documents")
    else:
        anchor = next((item.anchor for item in items if item.anchor), None)
        if anchor is None:
            raise ValueError(f"calibration {method!r} needs the anchor document's extra scores, and no item has them")
        fitted = cal.fit(method, scores, **{_SIDE_INPUT[method]: np.asarray(anchor[method], dtype=np.float64)})
    task = next((item.anchor["task"] for item in items if item.anchor), None)
    if task is not None:
        FITTED.setdefault(task, {})[method] = fitted.to_dict()
    return fitted.apply(scores), gold


def _aggregation(name: str) -> Callable[[Sequence[ScoreItem]], float]:
    metric, method = split_metric_name(name)
    compute = _METRICS[metric]

    def aggregate(items: Sequence[ScoreItem]) -> float:
        logprobs, gold = calibrated_logprobs(items, method)
        return float(compute(logprobs, gold))

    aggregate.__name__ = aggregate.__qualname__ = name
    aggregate.__doc__ = f"{metric} of the {'raw' if method is None else method + '-calibrated'} label distribution."
    return aggregate


def __getattr__(name: str) -> Callable[[Sequence[ScoreItem]], float]:
    if name.startswith("__"):
        raise AttributeError(name)
    return _aggregation(name)


def annotate_samples(samples: list[dict[str, Any]]) -> None:
    """Make a genclf task's logged samples (``--log_samples``) refittable offline.

    lm-eval logs every metric's item with each sample, so each would carry the same label scores
    once per metric; this replaces those copies by one ``genclf`` field: the label
    log-likelihoods, the gold label, and the raw and calibrated label probabilities.
    """
    items = [next((v for v in sample.values() if isinstance(v, ScoreItem)), None) for sample in samples]
    if not items or any(item is None for item in items):
        return
    probabilities: dict[str, np.ndarray] = {}
    for method in (None, *_DOCUMENT_FITTED, *_INDUCTIVE, *_SIDE_INPUT):
        try:
            logprobs, _ = calibrated_logprobs(items, method)
        except ValueError as err:  # e.g. no anchor scores: leave that method out, say why
            logger.warning("logged samples: no %s probabilities (%s)", method, err)
            continue
        probabilities[method or "raw"] = np.exp(logprobs)
    for index, (sample, item) in enumerate(zip(samples, items, strict=True)):
        for key in [k for k, v in sample.items() if isinstance(v, ScoreItem)]:
            del sample[key]
        sample["genclf"] = {
            "label_loglikelihoods": list(item.lls),
            "gold": item.gold,
            "probs": {name: [round(float(p), 8) for p in probs[index]] for name, probs in probabilities.items()},
        }
        if item.anchor:
            sample["genclf"]["anchor_scores"] = item.anchor
