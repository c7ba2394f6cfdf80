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
``inductive_docs``) and applied to the evaluated documents. ``prior_train`` and
``prior_train_ind`` match the training split's label distribution instead of a uniform one (the
anchor carries that split's label counts; a label with no training row leaves them out).
``bcts_em`` and ``bbse`` estimate the evaluated documents' label prior without their labels, from
the inductive documents and their labels (the calibration's label-shift methods). ``auto`` is the
method the project recommends for the task (:func:`auto_method`); the manifest says which and why.
A YAML names an aggregation as ``!function genclf_harness.harness.metrics.<metric name>``; the
functions are made on demand by the module's ``__getattr__``.
"""

from __future__ import annotations

import functools
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
TRAIN_PRIOR_METHODS = ("prior_train", "prior_train_ind")
"""Prior matching to the training split's label distribution (known: that split is labelled),
fitted on the evaluated documents or, ``_ind``, on the inductive training documents."""
LABELLED_METHODS = ("bcts_em", "bbse")
"""Label-shift methods fitted with labelled calibration documents (the inductive training documents
and their labels) and the evaluated documents' scores."""
INDUCTIVE_LABELS = "inductive_labels"
"""The anchor's entry with the inductive documents' labels (for the label-shift methods)."""
ANCHOR_METHODS = "methods"
"""The anchor's entry naming the calibrations that apply to the task (absent: all of genclf's)."""
TRAIN_PRIOR_KEY = "train_label_counts"
"""The anchor's entry with the training split's label counts (absent: the methods are left out)."""
_USES_INDUCTIVE = (*_INDUCTIVE, "prior_train_ind", *LABELLED_METHODS)
ALL_METHODS: tuple[str, ...] = (*_DOCUMENT_FITTED, *_INDUCTIVE, *TRAIN_PRIOR_METHODS, *LABELLED_METHODS, *_SIDE_INPUT,
                                 "auto")
"""Every calibration a genclf classification task reports (an anchor without ``ANCHOR_METHODS`` has all)."""
METHOD_NAMES: tuple[str, ...] = (*ALL_METHODS, "oracle")

FITTED: dict[str, dict[str, dict[str, Any]]] = {}
"""task -> method -> the fitted calibration (``to_dict()``), filled by the aggregations, read by
the results manifest."""
PAIRED: dict[str, dict[str, dict[str, Any]]] = {}
"""task -> calibrated metric -> its difference from the raw metric with a paired bootstrap interval
(:func:`paired_summary`), filled by the stderr bootstrap, read by the results manifest."""


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


def metric_function(metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """``metric`` (``acc``, ``f1_macro`` ...) of (log-probabilities, gold labels)."""
    return _METRICS[metric]


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
    scores, gold, anchor = _arrays(items)
    logprobs, fitted = _calibrate(scores, method, anchor, gold=gold)
    if fitted is not None and anchor is not None:
        FITTED.setdefault(anchor["task"], {})[method] = fitted.to_dict()  # type: ignore[index]
    return logprobs, gold


def _arrays(items: Sequence[ScoreItem]) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    if not items:
        raise ValueError("no documents to aggregate")
    gold = np.array([item.gold for item in items], dtype=np.int64)
    scores = np.array([item.lls for item in items], dtype=np.float64)
    return scores, gold, next((item.anchor for item in items if item.anchor), None)


def _inductive_rows(method: str, anchor: dict[str, Any] | None) -> np.ndarray:
    rows = (anchor or {}).get(INDUCTIVE_SECTION) or []
    if not rows:
        raise ValueError(
            f"calibration {method!r} needs inductive documents: give the task metadata inductive_docs > 0 "
            "(e.g. --metadata '{\"inductive_docs\": 100}') and a training split other than the evaluated one"
        )
    return np.asarray(rows, dtype=np.float64)


def auto_method(anchor: dict[str, Any] | None) -> tuple[str, str]:
    """The method the ``*_auto`` metrics use for a task, and why; never reads the evaluated labels.

    The rule: with a labelled training split (its label counts in the anchor), prior matching to
    that split's label distribution (``prior_train``): it equals uniform matching where the labels
    are balanced and keeps a skewed set's skew where they are not; without one, uniform prior
    matching (``prior``), the best method on average over the seven balanced built-in tasks.
    """
    if (anchor or {}).get(TRAIN_PRIOR_KEY):
        return "prior_train", "the task has a labelled training split: match its label distribution"
    return "prior", "no labelled training split apart from the evaluated one: match a uniform prior"


def _calibrate(scores: np.ndarray, method: str | None, anchor: dict[str, Any] | None, *,
               gold: np.ndarray | None = None, inductive: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
    """(calibrated log-probs, the fitted calibration or ``None``) of a score matrix under ``method``.

    ``inductive`` picks rows of the anchor's inductive documents (and labels) by index (a
    bootstrap resamples them); ``gold`` is needed by ``oracle`` only.
    """
    if method == "auto":
        chosen, reason = auto_method(anchor)
        logprobs, fitted = _calibrate(scores, chosen, anchor, gold=gold, inductive=inductive)
        auto = cal.Calibration(method="auto", offsets=fitted.offsets, fitted_on=fitted.fitted_on,
                               temperature=fitted.temperature,
                               params={**fitted.params, "chosen": chosen, "reason": reason})
        return logprobs, auto
    if method in _USES_INDUCTIVE:
        every = _inductive_rows(method, anchor)
        picked = np.arange(len(every)) if inductive is None else inductive
        rows = every[picked]
    if method in LABELLED_METHODS:
        labels = np.asarray((anchor or {}).get(INDUCTIVE_LABELS) or [], dtype=np.int64)
        if labels.shape != (len(every),):
            raise ValueError(f"calibration {method!r} needs the inductive documents' labels, and the anchor has "
                             f"{labels.size} for {len(every)} documents")
        fitted = cal.fit(method, scores, labelled_logprobs=rows, labelled_labels=labels[picked],
                         split=f"evaluated documents; labelled: {len(rows)} training documents")
        return fitted.apply(scores), fitted
    if method is None:
        return cal.normalize(scores), None
    if method == "oracle":
        if gold is None:
            raise ValueError("the oracle calibration needs the gold labels")
        return cal.normalize(scores + cal.oracle_offsets(scores, gold)), None
    if method in TRAIN_PRIOR_METHODS:
        counts = np.asarray((anchor or {}).get(TRAIN_PRIOR_KEY) or [], dtype=np.float64)
        if counts.size != scores.shape[1] or (counts <= 0).any():
            raise ValueError(f"calibration {method!r} needs the training split's label counts, one positive count "
                             f"per label; got {counts.tolist()}")
        if method == "prior_train":
            rows, where = scores, "evaluated documents"
        else:
            where = f"inductive: {len(rows)} training documents"
        fitted = cal.fit("prior", rows, target_prior=counts / counts.sum(),
                         split=f"{where}; target: training-split label counts {counts.astype(int).tolist()}")
    elif method in _DOCUMENT_FITTED:
        fitted = cal.fit(method, scores, split="evaluated documents")
    elif method in _INDUCTIVE:
        fitted = cal.fit(method.removesuffix("_ind"), rows, split=f"inductive: {len(rows)} training documents")
    else:
        if anchor is None or anchor.get(method) is None:
            raise ValueError(f"calibration {method!r} needs the anchor document's extra scores, and no item has them")
        fitted = cal.fit(method, scores, **{_SIDE_INPUT[method]: np.asarray(anchor[method], dtype=np.float64)})
    return fitted.apply(scores), fitted


MAX_BOOTSTRAP_ITERS = 1000
"""Resamples for a raw genclf metric's stderr at most (lm-eval's default ``--bootstrap_iters`` is
100,000; a 1,000-resample estimate of a standard error is within about 2% of it)."""
MAX_REFIT_BOOTSTRAP_ITERS = 100
"""Resamples at most for a calibrated metric, each of which refits its calibration (about 10 ms
per prior-matching fit at 10,000 documents x 10 labels): lm-eval caps its own costly corpus
metrics (BLEU, chrF, TER) at 100 the same way. The estimate is then within about 7% of the
standard error."""


def bootstrap_stderr(name: str, items: Sequence[ScoreItem], iters: int) -> float:
    """Standard error of the metric ``name`` over the items: documents resampled with replacement,
    the calibration refitted in each resample (inductive rows resampled too); seeded.

    Documents are put in ``doc_id`` order first, so the value does not depend on the order in which
    lm-eval gathered them (one process or several ranks give the same error bar)."""
    metric, method = split_metric_name(name)
    compute = _METRICS[metric]
    scores, gold, anchor = _arrays(_by_doc_id(items))
    if method is None:  # fixed scores: every resample at once
        return float(np.std(cal.resampled_metric(metric, scores, gold, cal.resample_indices(len(items), iters)),
                            ddof=1))
    rows = len(_inductive_rows(method, anchor)) if method in _USES_INDUCTIVE else 0
    draw = np.random.default_rng(cal.DEFAULT_SEED + 1)

    def statistic(indices: np.ndarray) -> float:
        inductive = draw.integers(0, rows, rows) if rows else None
        logprobs, _ = _calibrate(scores[indices], method, anchor, gold=gold[indices], inductive=inductive)
        return float(compute(logprobs, gold[indices]))

    resamples = cal.resample_indices(len(items), iters)
    values = np.array([statistic(indices) for indices in resamples], dtype=np.float64)
    if anchor is not None and method != "oracle":
        # The same resamples give the raw metric: the paired difference, calibrated minus raw.
        raw = cal.resampled_metric(metric, scores, gold, resamples)
        delta = float(compute(_calibrate(scores, method, anchor, gold=gold)[0], gold)) - float(
            compute(cal.normalize(scores), gold))
        PAIRED.setdefault(anchor["task"], {})[name] = paired_summary(delta, values - raw)
    return float(np.std(values, ddof=1))


PAIRED_LEVEL = 0.95


def paired_summary(delta: float, differences: np.ndarray) -> dict[str, float | int]:
    """A calibrated metric minus raw: the difference on all documents, its paired bootstrap stderr
    and percentile interval (``PAIRED_LEVEL``) over resamples shared by both."""
    tail = (1 - PAIRED_LEVEL) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return {"delta": round(delta, 6), "stderr": round(float(np.std(differences, ddof=1)), 6),
            "low": round(float(low), 6), "high": round(float(high), 6), "level": PAIRED_LEVEL,
            "resamples": int(len(differences))}


def _by_doc_id(items: Sequence[ScoreItem]) -> list[ScoreItem]:
    try:
        return sorted(items, key=lambda item: item.doc_id)
    except TypeError:  # ids of mixed types
        return sorted(items, key=lambda item: str(item.doc_id))


def _aggregation(name: str) -> Callable[[Sequence[ScoreItem]], float]:
    metric, method = split_metric_name(name)
    compute = _METRICS[metric]

    def aggregate(items: Sequence[ScoreItem]) -> float:
        logprobs, gold = calibrated_logprobs(items, method)
        return float(compute(logprobs, gold))

    aggregate.__name__ = aggregate.__qualname__ = name
    aggregate.__doc__ = f"{metric} of the {'raw' if method is None else method + '-calibrated'} label distribution."
    aggregate.genclf_stderr = functools.partial(bootstrap_stderr, name)  # type: ignore[attr-defined]
    aggregate.genclf_max_iters = MAX_BOOTSTRAP_ITERS if method is None else MAX_REFIT_BOOTSTRAP_ITERS  # type: ignore[attr-defined]
    return aggregate


def install_stderr_hook() -> None:
    """Let lm-eval report ``<metric>_stderr`` for genclf aggregations (idempotent).

    lm-eval bootstraps only its own aggregations and prints ``N/A`` for every other one. Its
    ``stderr_for_metric`` is asked for each metric's stderr function; this wraps it so that an
    aggregation carrying ``genclf_stderr`` gets :func:`bootstrap_stderr` with
    ``min(--bootstrap_iters, MAX_BOOTSTRAP_ITERS)`` resamples, ``MAX_REFIT_BOOTSTRAP_ITERS`` for a
    calibrated metric (``bootstrap_iters=0``: none). A
    failed bootstrap leaves ``N/A`` with a logged reason. Groups then pool these like any stderr.
    """
    import lm_eval.evaluator_utils as evaluator_utils

    original = evaluator_utils.stderr_for_metric
    if getattr(original, "_genclf", False):
        return

    def stderr_for_metric(metric: Any, bootstrap_iters: int) -> Any:
        genclf = getattr(metric, "genclf_stderr", None)
        if genclf is None:
            return original(metric=metric, bootstrap_iters=bootstrap_iters)
        if bootstrap_iters <= 0:
            return None
        iters = max(2, min(int(bootstrap_iters), metric.genclf_max_iters))

        def stderr(items: Sequence[ScoreItem]) -> float | str:
            try:
                return genclf(items, iters)
            except (ValueError, FloatingPointError, cal.ConvergenceError) as error:
                logger.warning("%s: no bootstrap stderr (%s)", getattr(metric, "__name__", metric), error)
                return "N/A"

        return stderr

    stderr_for_metric._genclf = True  # type: ignore[attr-defined]
    evaluator_utils.stderr_for_metric = stderr_for_metric


def __getattr__(name: str) -> Callable[[Sequence[ScoreItem]], float]:
    if name.startswith("__"):
        raise AttributeError(name)
    return _aggregation(name)


# lm-eval imports this module when it reads a genclf task's YAML (``!function ...metrics.acc``),
# under genclf-eval and plain lm_eval alike: the stderr hook is in place before any aggregation.
install_stderr_hook()


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
    anchor = next((item.anchor for item in items if item.anchor), None) or {}
    methods = anchor.get(ANCHOR_METHODS) or ALL_METHODS
    for method in (None, *methods):
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
