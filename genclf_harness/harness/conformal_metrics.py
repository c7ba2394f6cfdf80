"""Conformal label sets as genclf task metrics: ``<metric>_<score>[_<method>]``.

- metric: ``coverage`` (share of documents whose set holds the gold label), ``set_size`` (mean
  labels per set), ``singleton`` and ``empty`` (shares of one-label and empty sets);
- score: ``lac``, ``aps``, ``raps`` (:mod:`genclf_harness.calibration.conformal`, where the formulas
  and sources are);
- method: none (the raw label distribution) or any calibration of the task (``auto``, ``prior`` ...):
  the sets are built on the calibrated scores, the calibration documents calibrated the same way.

Which labelled documents calibrate the sets (never the evaluated ones themselves): the task's
training split, that is the inductive documents the anchor carries with their labels (task
metadata ``inductive_docs``, default 100) where the task has such a split; otherwise, or with task
metadata ``conformal_calibration: cross_fit``, a seeded cross-fit over the evaluated documents
(halves calibrate each other). The miscoverage level is task metadata ``conformal_alpha`` (default
0.1); a level below ``1/(n+1)`` for the ``n`` calibration documents leaves the metric out (NaN) with
the reason logged. Each set's calibration (n, alpha, score, threshold, where the documents came
from, coverage per set size) goes into the manifest (``CONFORMAL``); the logged samples carry each
document's raw sets.

The training split's documents give the guarantee for documents distributed like them: under label
shift (a test set skewed otherwise) the coverage can fall below ``1 - alpha``, which is what the
cross-fit variant (exchangeable with the evaluated documents by construction) is there to show.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from genclf_harness import calibration as cal
from genclf_harness.calibration.conformal import cross_fit_sets, fit_conformal, set_metrics

logger = logging.getLogger(__name__)

SCORES: tuple[str, ...] = ("lac", "aps", "raps")
SET_METRICS: tuple[str, ...] = ("coverage", "set_size", "singleton", "empty")
DEFAULT_ALPHA = 0.1
ALPHA_KEY = "conformal_alpha"
"""Task metadata (and anchor entry): the miscoverage level alpha of the conformal sets."""
SOURCE_KEY = "conformal_calibration"
"""Task metadata (and anchor entry): ``train`` (default) or ``cross_fit``."""
SOURCES = ("train", "cross_fit")
CROSS_FIT_SEED = 0

CONFORMAL: dict[str, dict[str, dict[str, Any]]] = {}
"""task -> metric name -> the sets' calibration, filled by the aggregations, read by the manifest."""


def split_set_metric_name(name: str) -> tuple[str, str, str | None] | None:
    """``"coverage_lac"`` -> ``("coverage", "lac", None)``, ``"set_size_aps_auto"`` ->
    ``("set_size", "aps", "auto")``; ``None`` for any other name."""
    from genclf_harness.harness.metrics import METHOD_NAMES

    for metric in SET_METRICS:
        for score in SCORES:
            stem = f"{metric}_{score}"
            if name == stem:
                return metric, score, None
            if name.startswith(stem + "_") and name[len(stem) + 1:] in METHOD_NAMES:
                return metric, score, name[len(stem) + 1:]
    return None


def label_sets(scores: np.ndarray, gold: np.ndarray, anchor: dict[str, Any] | None, score: str,
               method: str | None, *, inductive: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """(sets (N, K) bool, the sets' calibration) of documents with label scores ``scores`` and gold
    labels ``gold`` (read by the cross-fit only): conformal sets with ``score`` on the
    ``method``-calibrated scores. ``inductive`` picks the labelled training rows by index (a
    bootstrap resamples them). A calibration fitted on the training rows (``*_ind``, ``ts``) sees
    the same rows as the conformal threshold. Raises ValueError when alpha is too small for the
    calibration documents there are."""
    from genclf_harness.harness.metrics import INDUCTIVE_LABELS, INDUCTIVE_SECTION, fit_calibration

    logprobs, fitted = fit_calibration(scores, method, anchor, gold=gold, inductive=inductive)
    options = anchor or {}
    alpha = float(options.get(ALPHA_KEY, DEFAULT_ALPHA))
    rows = np.asarray(options.get(INDUCTIVE_SECTION) or np.zeros((0, scores.shape[1])), dtype=np.float64)
    labels = np.asarray(options.get(INDUCTIVE_LABELS) or [], dtype=np.int64)
    if options.get(SOURCE_KEY, "train") == "train" and len(rows) and labels.shape == (len(rows),):
        picked = np.arange(len(rows)) if inductive is None else inductive
        calibration_rows = fitted.apply(rows[picked]) if fitted is not None else cal.normalize(rows[picked])
        predictor = fit_conformal(calibration_rows, labels[picked], score=score, alpha=alpha)  # type: ignore[arg-type]
        info = {"calibration_documents": "training split (the inductive documents)", **predictor.manifest()}
        return predictor.sets(logprobs), info
    crossed = cross_fit_sets(logprobs, gold, score=score, alpha=alpha, seed=CROSS_FIT_SEED)  # type: ignore[arg-type]
    halves = [predictor.manifest() for predictor in crossed.predictors]
    info = {"calibration_documents": "cross-fit over the evaluated documents (each half calibrates the other)",
            "score": score, "alpha": alpha, "n": [half["n"] for half in halves],
            "threshold": [half["threshold"] for half in halves], "seed": CROSS_FIT_SEED}
    return crossed.sets, info


_SUMMARY: dict[str, Callable[[Any], float]] = {
    "coverage": lambda m: m.coverage,
    "set_size": lambda m: m.mean_size,
    "singleton": lambda m: m.singleton_share,
    "empty": lambda m: m.empty_share,
}


@functools.cache
def aggregation(name: str) -> Callable[[Sequence[Any]], float]:
    """The aggregation of a set metric (see the module docstring), with its bootstrap stderr."""
    parsed = split_set_metric_name(name)
    if parsed is None:
        raise AttributeError(f"{name!r} is not a conformal set metric")
    metric, score, method = parsed

    def aggregate(items: Sequence[Any]) -> float:
        from genclf_harness.harness.metrics import arrays

        scores, gold, anchor = arrays(items)
        try:
            sets, info = label_sets(scores, gold, anchor, score, method)
        except ValueError as err:  # alpha below 1/(n+1), a calibration that cannot be fitted ...
            logger.warning("%s left out: %s", name, err)
            return math.nan
        summary = set_metrics(sets, gold)
        if anchor is not None:
            CONFORMAL.setdefault(anchor["task"], {})[name] = {
                **info, "coverage_by_size": summary.to_dict()["coverage_by_size"]}
        return float(_SUMMARY[metric](summary))

    aggregate.__name__ = aggregate.__qualname__ = name
    aggregate.__module__ = "genclf_harness.harness.metrics"
    aggregate.__doc__ = f"{metric} of {score} conformal label sets on the {method or 'raw'} scores."
    aggregate.genclf_stderr = functools.partial(bootstrap_stderr, name)  # type: ignore[attr-defined]
    from genclf_harness.harness.metric_bootstrap import MAX_REFIT_BOOTSTRAP_ITERS

    aggregate.genclf_max_iters = MAX_REFIT_BOOTSTRAP_ITERS  # type: ignore[attr-defined]
    return aggregate


def bootstrap_stderr(name: str, items: Sequence[Any], iters: int) -> float:
    """Standard error of a set metric: documents (and the labelled training rows) resampled with
    replacement, the calibration and the conformal threshold refitted in each resample; seeded."""
    from genclf_harness.harness.metrics import INDUCTIVE_SECTION, arrays, by_doc_id

    parsed = split_set_metric_name(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a conformal set metric")
    metric, score, method = parsed
    scores, gold, anchor = arrays(by_doc_id(items))
    rows = len((anchor or {}).get(INDUCTIVE_SECTION) or [])
    draw = np.random.default_rng(cal.DEFAULT_SEED + 2)
    values = []
    for indices in cal.resample_indices(len(gold), iters):
        inductive = draw.integers(0, rows, rows) if rows else None
        sets, _ = label_sets(scores[indices], gold[indices], anchor, score, method, inductive=inductive)
        values.append(_SUMMARY[metric](set_metrics(sets, gold[indices])))
    return float(np.std(np.asarray(values, dtype=np.float64), ddof=1))


def document_sets(items: Sequence[Any]) -> dict[str, list[list[int]]]:
    """Each document's raw set (label indices) for each score, for the logged samples; a score
    whose sets cannot be built (alpha too small ...) is left out."""
    from genclf_harness.harness.metrics import arrays

    try:
        scores, gold, anchor = arrays(items)
    except ValueError as err:  # documents with different numbers of choices: no one set of labels
        logger.warning("logged samples: no conformal sets (%s)", err)
        return {}
    out = {}
    for score in SCORES:
        try:
            sets, _ = label_sets(scores, gold, anchor, score, None)
        except ValueError as err:
            logger.warning("logged samples: no %s sets (%s)", score, err)
            continue
        out[score] = [np.flatnonzero(row).tolist() for row in sets]
    return out
