"""Error bars for every genclf metric: lm-eval's ``<metric>_stderr`` and the paired difference of a
calibrated metric from raw.

lm-eval bootstraps only its own aggregations (it prints ``N/A`` for every ``!function`` one).
:func:`bootstrap_stderr` resamples the documents (seeded, in ``doc_id`` order so one process and
several ranks give the same figure) and, for a calibrated metric, refits the calibration inside
each resample so its own variance counts; :func:`install_stderr_hook` hands it to lm-eval, honouring
``--bootstrap_iters`` (0: none). Conformal set metrics have their own
(:func:`genclf_harness.harness.conformal_metrics.bootstrap_stderr`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from genclf_harness import calibration as cal

logger = logging.getLogger(__name__)

MAX_BOOTSTRAP_ITERS = 1000
"""Resamples for a raw genclf metric's stderr at most (lm-eval's default ``--bootstrap_iters`` is
100,000; a 1,000-resample estimate of a standard error is within about 2% of it)."""
MAX_REFIT_BOOTSTRAP_ITERS = 100
"""Resamples at most for a calibrated metric, each of which refits its calibration (about 10 ms
per prior-matching fit at 10,000 documents x 10 labels): lm-eval caps its own costly corpus
metrics (BLEU, chrF, TER) at 100 the same way. The estimate is then within about 7% of the
standard error."""
PAIRED_LEVEL = 0.95


def bootstrap_stderr(name: str, items: Sequence[Any], iters: int) -> float:
    """Standard error of the metric ``name`` over the items: documents resampled with replacement,
    the calibration refitted in each resample (inductive rows resampled too); seeded.

    Documents are put in ``doc_id`` order first, so the value does not depend on the order in which
    lm-eval gathered them (one process or several ranks give the same error bar). ``items`` are
    `genclf_harness.harness.metrics.ScoreItem`s; that module imports this one at its end, so this one
    reads it at call time (no import circle)."""
    from genclf_harness.harness import conformal_metrics
    from genclf_harness.harness import metrics as m

    if conformal_metrics.split_set_metric_name(name) is not None:
        return conformal_metrics.bootstrap_stderr(name, items, iters)
    metric, method = m.split_metric_name(name)
    compute = m.metric_function(metric)
    scores, gold, anchor = m.arrays(m.by_doc_id(items))
    resamples = cal.resample_indices(len(items), iters)
    if method is None:  # fixed scores
        return float(np.std(_resampled(metric, scores, gold, resamples), ddof=1))
    rows = len(m.inductive_rows(method, anchor)) if method in m.USES_INDUCTIVE else 0
    draw = np.random.default_rng(cal.DEFAULT_SEED + 1)

    def statistic(indices: np.ndarray) -> float:
        inductive = draw.integers(0, rows, rows) if rows else None
        logprobs, _ = m.fit_calibration(scores[indices], method, anchor, gold=gold[indices], inductive=inductive)
        return float(compute(logprobs, gold[indices]))

    values = np.array([statistic(indices) for indices in resamples], dtype=np.float64)
    if anchor is not None and method != "oracle":
        # The same resamples give the raw metric: the paired difference, calibrated minus raw.
        raw = _resampled(metric, scores, gold, resamples)
        delta = float(compute(m.fit_calibration(scores, method, anchor, gold=gold)[0], gold)) - float(
            compute(cal.normalize(scores), gold))
        m.PAIRED.setdefault(anchor["task"], {})[name] = paired_summary(delta, values - raw)
    return float(np.std(values, ddof=1))


def _resampled(metric: str, scores: np.ndarray, gold: np.ndarray, resamples: np.ndarray) -> np.ndarray:
    """The raw metric on every resample: all at once where the calibration layer vectorises it,
    else one resample at a time (HELM's sorted-confidence metrics)."""
    from genclf_harness.harness import metrics as m

    if metric in cal.RESAMPLED_METRICS:
        return cal.resampled_metric(metric, scores, gold, resamples)
    compute = m.metric_function(metric)
    logprobs = cal.normalize(scores)
    return np.array([compute(logprobs[indices], gold[indices]) for indices in resamples], dtype=np.float64)


def paired_summary(delta: float, differences: np.ndarray) -> dict[str, float | int]:
    """A calibrated metric minus raw: the difference on all documents, its paired bootstrap stderr
    and percentile interval (``PAIRED_LEVEL``) over resamples shared by both."""
    tail = (1 - PAIRED_LEVEL) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return {"delta": round(delta, 6), "stderr": round(float(np.std(differences, ddof=1)), 6),
            "low": round(float(low), 6), "high": round(float(high), 6), "level": PAIRED_LEVEL,
            "resamples": int(len(differences))}


def install_stderr_hook() -> None:
    """Let lm-eval report ``<metric>_stderr`` for genclf aggregations (idempotent).

    lm-eval asks ``stderr_for_metric`` for each metric's stderr function; this wraps it so that an
    aggregation carrying ``genclf_stderr`` gets its bootstrap with ``min(--bootstrap_iters,
    genclf_max_iters)`` resamples (``bootstrap_iters=0``: none). A failed bootstrap leaves ``N/A``
    with a logged reason. Groups then pool these like any stderr.
    """
    holder = _stderr_holder()
    if holder is None:
        logger.warning("this lm-eval has no stderr_for_metric: genclf metrics report no bootstrap stderr")
        return
    original = holder.stderr_for_metric
    if getattr(original, "_genclf", False):
        return

    def stderr_for_metric(metric: Any, bootstrap_iters: int) -> Any:
        genclf = getattr(metric, "genclf_stderr", None)
        if genclf is None:
            return original(metric=metric, bootstrap_iters=bootstrap_iters)
        if bootstrap_iters <= 0:
            return None
        iters = max(2, min(int(bootstrap_iters), metric.genclf_max_iters))

        def stderr(items: Sequence[Any]) -> float | str:
            try:
                return genclf(items, iters)
            except (ValueError, FloatingPointError, cal.ConvergenceError) as error:
                logger.warning("%s: no bootstrap stderr (%s)", getattr(metric, "__name__", metric), error)
                return "N/A"

        return stderr

    stderr_for_metric._genclf = True  # type: ignore[attr-defined]
    holder.stderr_for_metric = stderr_for_metric


def _stderr_holder() -> Any:
    """The module lm-eval looks ``stderr_for_metric`` up in: ``evaluator_utils`` (0.4.x), or
    ``lm_eval.api.metrics`` (the v0.5 refactor, whose scorers import it from there at call time)."""
    import importlib

    for name in ("lm_eval.evaluator_utils", "lm_eval.api.metrics"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if callable(getattr(module, "stderr_for_metric", None)):
            return module
    return None
