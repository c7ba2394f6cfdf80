"""Per-document items and the corpus-level aggregations of genclf classification tasks.

Each document's item keeps its label log-likelihoods, so everything corpus-level (macro-F1, ECE,
and every calibrated metric) is computed in the aggregation, after lm-eval has gathered the items
of every rank. Metric names read ``<metric>[_<method>]``:

- metric: ``acc``, ``macro_f1``, ``ece_width15`` (top-label ECE, 15 equal-width bins), ``brier``,
  ``gold_nll`` (mean negative log-probability of the gold label), ``majority_share``;
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
functions are made on demand by the module's ``__getattr__`` (one object per name). None of these
names is one lm-eval registers or has in an open pull request (``registry.LM_EVAL_METRIC_NAMES``);
the earlier ``f1_macro``, ``ece`` and ``nll`` still resolve, with a deprecation warning, until the
next release.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from genclf_harness import calibration as cal
from genclf_harness.calibration import helm

logger = logging.getLogger(__name__)

CONTENT_FREE_INPUTS: tuple[str, ...] = ("N/A", "", "[MASK]")
"""The content-free inputs of contextual calibration, put into the task's own prompt."""

ANCHOR_SECTIONS: tuple[tuple[str, int], ...] = (("cc", len(CONTENT_FREE_INPUTS)), ("dcpmi", 1), ("pmi", 1))
"""The extra score rows the anchor document carries, in request order: (section, rows)."""
INDUCTIVE_SECTION = "inductive"
"""The anchor's last section: one row per inductive (training-split) document, any number."""

_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "acc": cal.accuracy,
    "macro_f1": cal.macro_f1,
    "ece_width15": cal.expected_calibration_error,
    "brier": cal.brier_score,
    "gold_nll": cal.negative_log_likelihood,
    "majority_share": lambda logprobs, _gold: cal.majority_share(logprobs),
    # HELM's (Liang et al. 2022): equal-mass ECE with 10 bins and with 1 bin, ECE after Platt scaling
    # fitted on the same documents (its coefficients go into the manifest), selective accuracy at 10%
    # coverage, area under the coverage-accuracy curve (genclf_harness.calibration.helm)
    "ece_mass10": lambda logprobs, gold: helm.equal_mass_ece(*helm.confidence_and_correct(logprobs, gold)),
    "ece_mass1": lambda logprobs, gold: helm.equal_mass_ece(*helm.confidence_and_correct(logprobs, gold),
                                                            num_bins=1),
    "ece_platt_mass10": lambda logprobs, gold: helm.helm_calibration_metrics(logprobs, gold)["ece_platt_mass10"],
    "selective_acc_at_10": lambda logprobs, gold: helm.selective_accuracy(*helm.confidence_and_correct(logprobs, gold)),
    "cov_acc_area": lambda logprobs, gold: helm.coverage_accuracy_area(*helm.confidence_and_correct(logprobs, gold)),
}
_DETAILS: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, Any]]] = {
    "ece_platt_mass10": lambda logprobs, gold: {
        key: value for key, value in helm.helm_calibration_metrics(logprobs, gold).items() if key.startswith("platt_")},
}
"""What a metric fitted besides its value, for the manifest (``METRIC_DETAILS``)."""
RENAMED_METRICS: dict[str, str] = {"f1_macro": "macro_f1", "ece": "ece_width15", "nll": "gold_nll"}
"""Earlier metric names (they collide with names lm-eval registers or proposes: ``ece`` in lm-eval
PR #3913 bins otherwise) -> today's; the old ones resolve with a deprecation warning for one release."""
_DOCUMENT_FITTED = ("prior", "prior_em", "bc")
_SIDE_INPUT = {"cc": "content_free_logprobs", "dcpmi": "domain_logprobs", "pmi": "unconditional_logprobs"}
_INDUCTIVE = tuple(f"{method}_ind" for method in _DOCUMENT_FITTED)
TRAIN_PRIOR_METHODS = ("prior_train", "prior_train_ind")
"""Prior matching to the training split's label distribution (known: that split is labelled),
fitted on the evaluated documents or, ``_ind``, on the inductive training documents."""
LABELLED_METHODS = ("bcts_em", "bbse", "ts")
"""Methods fitted with labelled calibration documents (the inductive training documents and their
labels): the label-shift methods, with the evaluated documents' scores, and temperature scaling
(``ts``, Guo et al. 2017: one temperature minimising the training documents' NLL; it changes
confidences, never the ranking)."""
INDUCTIVE_LABELS = "inductive_labels"
"""The anchor's entry with the inductive documents' labels (for the label-shift methods)."""
ANCHOR_METHODS = "methods"
"""The anchor's entry naming the calibrations that apply to the task (absent: all of genclf's)."""
TRAIN_PRIOR_KEY = "train_label_counts"
"""The anchor's entry with the training split's label counts (absent: the methods are left out)."""
USES_INDUCTIVE = (*_INDUCTIVE, "prior_train_ind", *LABELLED_METHODS)
ALL_METHODS: tuple[str, ...] = (*_DOCUMENT_FITTED, *_INDUCTIVE, *TRAIN_PRIOR_METHODS, *LABELLED_METHODS, *_SIDE_INPUT,
                                 "auto")
"""Every calibration a genclf classification task reports (an anchor without ``ANCHOR_METHODS`` has all)."""
METHOD_NAMES: tuple[str, ...] = (*ALL_METHODS, "oracle")

FITTED: dict[str, dict[str, dict[str, Any]]] = {}
"""task -> method -> the fitted calibration (``to_dict()``), filled by the aggregations, read by
the results manifest."""
METRIC_DETAILS: dict[str, dict[str, dict[str, Any]]] = {}
"""task -> metric name -> what the metric fitted besides its value (Platt coefficients), for the
manifest."""
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


def sample_items(samples: Sequence[dict[str, Any]]) -> list[ScoreItem]:
    """The ScoreItems of a genclf task's logged samples (``simple_evaluate(log_samples=True)``),
    whether lm-eval left them as they are or genclf's manifest hook has already folded them into each
    sample's ``genclf`` field (:func:`annotate_samples`: it does once the plugin is installed in the
    process, e.g. after a ``genclf-eval`` run)."""
    items = []
    for index, sample in enumerate(samples):
        item = next((v for v in sample.values() if isinstance(v, ScoreItem)), None)
        folded = sample.get("genclf")
        if item is None and isinstance(folded, dict) and "label_loglikelihoods" in folded:
            doc = sample.get("doc")
            item = make_item(doc.get("id") if isinstance(doc, dict) else None, int(folded["gold"]),
                             folded["label_loglikelihoods"], folded.get("anchor_scores"))
        if item is None:
            raise ValueError(f"logged sample #{index} (doc_id {sample.get('doc_id')!r}) has no genclf label scores: "
                             "not a genclf classification task")
        items.append(item)
    return items


def metric_function(metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """``metric`` (``acc``, ``macro_f1`` ...) of (log-probabilities, gold labels)."""
    return _METRICS[metric]


def split_metric_name(name: str) -> tuple[str, str | None]:
    """``"macro_f1_prior_em"`` -> ``("macro_f1", "prior_em")``; ``"acc"`` -> ``("acc", None)``;
    a conformal set metric ``"coverage_lac_auto"`` -> ``("coverage_lac", "auto")``.
    An earlier name (``"f1_macro_prior_em"``) gives today's parts, with a deprecation warning."""
    current = renamed_metric(name, RENAMED_METRICS)
    if current != name:
        return split_metric_name(current)
    from genclf_harness.harness.conformal_metrics import split_set_metric_name

    set_metric = split_set_metric_name(name)
    if set_metric is not None:
        return f"{set_metric[0]}_{set_metric[1]}", set_metric[2]
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
    scores, gold, anchor = arrays(items)
    logprobs, fitted = fit_calibration(scores, method, anchor, gold=gold)
    if fitted is not None and anchor is not None:
        FITTED.setdefault(anchor["task"], {})[method] = fitted.to_dict()  # type: ignore[index]
    return logprobs, gold


def arrays(items: Sequence[ScoreItem]) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    if not items:
        raise ValueError("no documents to aggregate")
    gold = np.array([item.gold for item in items], dtype=np.int64)
    scores = np.array([item.lls for item in items], dtype=np.float64)
    return scores, gold, next((item.anchor for item in items if item.anchor), None)


def inductive_rows(method: str, anchor: dict[str, Any] | None) -> np.ndarray:
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


def fit_calibration(scores: np.ndarray, method: str | None, anchor: dict[str, Any] | None, *,
               gold: np.ndarray | None = None, inductive: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
    """(calibrated log-probs, the fitted calibration or ``None``) of a score matrix under ``method``.

    ``inductive`` picks rows of the anchor's inductive documents (and labels) by index (a
    bootstrap resamples them); ``gold`` is needed by ``oracle`` only.
    """
    if method == "auto":
        chosen, reason = auto_method(anchor)
        logprobs, fitted = fit_calibration(scores, chosen, anchor, gold=gold, inductive=inductive)
        auto = cal.Calibration(method="auto", offsets=fitted.offsets, fitted_on=fitted.fitted_on,
                               temperature=fitted.temperature,
                               params={**fitted.params, "chosen": chosen, "reason": reason})
        return logprobs, auto
    if method in USES_INDUCTIVE:
        every = inductive_rows(method, anchor)
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


def by_doc_id(items: Sequence[ScoreItem]) -> list[ScoreItem]:
    try:
        return sorted(items, key=lambda item: item.doc_id)
    except TypeError:  # ids of mixed types
        return sorted(items, key=lambda item: str(item.doc_id))


_WARNED: set[str] = set()


def renamed_metric(name: str, renamed: dict[str, str]) -> str:
    """Today's name for ``name`` under ``renamed`` (old -> new, matched whole or before a
    ``_<method>`` suffix), warning once per old name that it goes in the next release."""
    for old, new in sorted(renamed.items(), key=lambda pair: len(pair[0]), reverse=True):
        if name == old or (name.startswith(old + "_") and name[len(old) + 1:] in METHOD_NAMES):
            current = new + name[len(old):]
            if name not in _WARNED:
                _WARNED.add(name)
                logger.warning("genclf metric '%s' is now '%s' (the old name clashes with lm-eval's metric names "
                               "and goes in the next release)", name, current)
            return current
    return name


def deprecated_names(namespace: dict[str, Any], renamed: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that gives, for each earlier name in ``renamed``, today's object of
    ``namespace`` (a module's ``globals()``), with :func:`renamed_metric`'s deprecation warning."""

    def __getattr__(name: str) -> Any:
        if name in renamed:
            return namespace[renamed_metric(name, renamed)]
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    return __getattr__


@functools.cache
def _aggregation(name: str) -> Callable[[Sequence[ScoreItem]], float]:
    from genclf_harness.harness import conformal_metrics

    if conformal_metrics.split_set_metric_name(name) is not None:
        return conformal_metrics.aggregation(name)
    metric, method = split_metric_name(name)
    compute = _METRICS[metric]
    details = _DETAILS.get(metric)

    def aggregate(items: Sequence[ScoreItem]) -> float:
        try:
            logprobs, gold = calibrated_logprobs(items, method)
        except (ValueError, cal.ConvergenceError) as err:
            # a calibration these scores cannot support (temperature scaling on scores no better
            # than chance, a prior fit that does not converge ...): this metric is left out, the
            # run and its other metrics are not
            logger.warning("%s left out: %s", name, err)
            return math.nan
        anchor = arrays(items)[2]
        if details is not None and anchor is not None:
            METRIC_DETAILS.setdefault(anchor["task"], {})[name] = details(logprobs, gold)
        return float(compute(logprobs, gold))

    aggregate.__name__ = aggregate.__qualname__ = name
    aggregate.__doc__ = f"{metric} of the {'raw' if method is None else method + '-calibrated'} label distribution."
    aggregate.genclf_stderr = functools.partial(bootstrap_stderr, name)  # type: ignore[attr-defined]
    aggregate.genclf_max_iters = (  # type: ignore[attr-defined]
        MAX_BOOTSTRAP_ITERS if method is None and metric in cal.RESAMPLED_METRICS else MAX_REFIT_BOOTSTRAP_ITERS)
    return aggregate


def __getattr__(name: str) -> Callable[[Sequence[ScoreItem]], float]:
    if name.startswith("__"):
        raise AttributeError(name)
    return _aggregation(name)


# lm-eval imports this module when it reads a genclf task's YAML (``!function ...metrics.acc``),
# under genclf-eval and plain lm_eval alike: the stderr hook is in place before any aggregation.
from genclf_harness.harness.metric_bootstrap import (  # noqa: E402 - it needs the names above
    MAX_BOOTSTRAP_ITERS,
    MAX_REFIT_BOOTSTRAP_ITERS,
    bootstrap_stderr,
    install_stderr_hook,
)

install_stderr_hook()


def annotate_samples(samples: list[dict[str, Any]]) -> None:
    """Make a genclf task's logged samples (``--log_samples``) refittable offline.

    lm-eval logs every metric's item with each sample, so each would carry the same label scores
    once per metric; this replaces those copies by one ``genclf`` field: the label
    log-likelihoods, the gold label, the raw and calibrated label probabilities, and its raw
    conformal label sets (label indices, per score).
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
    from genclf_harness.harness.conformal_metrics import document_sets

    sets = document_sets(items)  # each document's raw conformal label sets, per score
    for index, (sample, item) in enumerate(zip(samples, items, strict=True)):
        for key in [k for k, v in sample.items() if isinstance(v, ScoreItem)]:
            del sample[key]
        sample["genclf"] = {
            "label_loglikelihoods": list(item.lls),
            "gold": item.gold,
            "probs": {name: [round(float(p), 8) for p in probs[index]] for name, probs in probabilities.items()},
        }
        if sets:
            sample["genclf"]["sets"] = {score: rows[index] for score, rows in sets.items()}
        if item.anchor:
            sample["genclf"]["anchor_scores"] = item.anchor
