"""Per-document results and corpus-level aggregations for genclf classification tasks.

``process_results`` keeps each document's label log-likelihoods, so corpus-level metrics (macro-F1,
and the calibrated metrics) are computed in the aggregation, after lm-eval has gathered every
rank's documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Item = tuple[int, list[float]]


def process_results(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    lls = [float(ll) for ll, _ in results]
    if any(not np.isfinite(ll) for ll in lls):
        raise ValueError(f"document {doc.get('id', '?')!r}: non-finite label log-likelihoods {lls}")
    gold = int(doc["gold"])
    pred = int(np.argmax(lls))
    item: Item = (gold, lls)
    return {"acc": float(pred == gold), "f1_macro": item}


def _unpack(items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    if not items:
        raise ValueError("no documents to aggregate")
    gold = np.array([g for g, _ in items], dtype=np.int64)
    scores = np.array([lls for _, lls in items], dtype=np.float64)
    return gold, scores


def macro_f1(gold: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Mean over all classes of per-class F1 (0 for a class with no true and no predicted document
    is excluded: only classes seen in gold or predictions count, as scikit-learn does)."""
    f1s = []
    for c in range(num_classes):
        tp = int(np.sum((pred == c) & (gold == c)))
        fp = int(np.sum((pred == c) & (gold != c)))
        fn = int(np.sum((pred != c) & (gold == c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def f1_macro(items: Sequence[Item]) -> float:
    gold, scores = _unpack(items)
    return macro_f1(gold, scores.argmax(axis=1), scores.shape[1])
