"""Classification metrics on (N, K) score matrices and gold label ids.

Each metric takes label log-likelihoods (raw or already calibrated) and first normalises them
over classes, so ``metric(calibration.apply(s), y)`` and ``metric(s + offsets, y)`` agree.
Predictions are ``argmax_k``; on exact ties the lowest class id wins (numpy's argmax).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from genclf_harness.calibration._arrays import (
    FloatArray,
    IntArray,
    as_labels,
    as_scores,
    log_softmax,
)
from genclf_harness.calibration.oracle import oracle_accuracy

ECE_BINS = 15


def accuracy(logprobs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """The share of documents whose highest-scoring class is the gold label."""
    scores, gold = _checked(logprobs, labels)
    return float(np.mean(scores.argmax(axis=1) == gold))


def macro_f1(logprobs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Macro-averaged F1 over the classes that occur in the gold labels or the predictions.

    Per class c: ``F1_c = 2 TP / (2 TP + FP + FN)``; a class that is gold somewhere but never
    predicted has F1 = 0. A class that is neither gold nor predicted anywhere is left out of the
    mean (its F1 is 0/0), which is scikit-learn's ``f1_score(average="macro", zero_division=0)``
    and thus lm-eval's ``f1`` metric, so the numbers compare with theirs.
    """
    scores, gold = _checked(logprobs, labels)
    return _macro_f1_of(scores.argmax(axis=1), gold)


def expected_calibration_error(
    logprobs: npt.ArrayLike, labels: npt.ArrayLike, *, num_bins: int = ECE_BINS
) -> float:
    """Expected calibration error of the top prediction, with equal-width confidence bins.

    Source: Guo et al. (2017), "On Calibration of Modern Neural Networks" (after Naeini et al.
    2015). With confidence ``c_n = max_k p(k|x_n)`` and bins ``B_b = {n : (b-1)/B < c_n <= b/B}``::

        ECE = sum_b |B_b| / N * | acc(B_b) - mean_{n in B_b} c_n |
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, got {num_bins}")
    scores, gold = _checked(logprobs, labels)
    probs = np.exp(log_softmax(scores))
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(np.float64)
    inner_edges = np.linspace(0.0, 1.0, num_bins + 1)[1:-1]
    bins = np.digitize(confidence, inner_edges, right=True)
    counts = np.bincount(bins, minlength=num_bins)
    gaps = np.bincount(bins, weights=correct - confidence, minlength=num_bins)
    # |sum of (correct - confidence)| per bin / N equals |B_b|/N * |acc(B_b) - conf(B_b)|.
    return float(np.abs(gaps[counts > 0]).sum() / scores.shape[0])


def brier_score(logprobs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Multi-class Brier score: ``(1/N) sum_n sum_k (p(k|x_n) - [y_n = k])^2``, in [0, 2].

    Source: Brier (1950), "Verification of forecasts expressed in terms of probability" (the
    original sums over classes; some libraries divide by K, this does not).
    """
    scores, gold = _checked(logprobs, labels)
    probs = np.exp(log_softmax(scores))
    probs[np.arange(gold.shape[0]), gold] -= 1.0
    return float(np.mean(np.sum(probs**2, axis=1)))


def negative_log_likelihood(logprobs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean negative log-probability of the gold label: ``-(1/N) sum_n log p(y_n|x_n)`` (nats)."""
    scores, gold = _checked(logprobs, labels)
    log_probs = log_softmax(scores)
    return float(-np.mean(log_probs[np.arange(gold.shape[0]), gold]))


def majority_share(logprobs: npt.ArrayLike) -> float:
    """The share of documents given the most often predicted class (1/K when balanced, 1 when
    the classifier always answers the same label); it needs no gold labels."""
    scores = as_scores(logprobs, "logprobs")
    counts = np.bincount(scores.argmax(axis=1), minlength=scores.shape[1])
    return float(counts.max() / scores.shape[0])


def classification_report(
    logprobs: npt.ArrayLike, labels: npt.ArrayLike, *, include_oracle: bool = True
) -> dict[str, float]:
    """Every metric of this module at once, under the names the harness reports them by.

    Keys: ``acc``, ``f1_macro``, ``ece``, ``brier``, ``nll``, ``majority_share`` and, unless
    ``include_oracle`` is False, ``oracle_acc`` (label-informed, for analysis only; see
    `oracle_accuracy`).
    """
    scores, gold = _checked(logprobs, labels)
    report = {
        "acc": accuracy(scores, gold),
        "f1_macro": macro_f1(scores, gold),
        "ece": expected_calibration_error(scores, gold),
        "brier": brier_score(scores, gold),
        "nll": negative_log_likelihood(scores, gold),
        "majority_share": majority_share(scores),
    }
    if include_oracle:
        report["oracle_acc"] = oracle_accuracy(scores, gold)
    return report


def _checked(logprobs: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, IntArray]:
    scores = as_scores(logprobs, "logprobs")
    return scores, as_labels(labels, scores.shape[0], scores.shape[1])


def _macro_f1_of(predictions: IntArray, gold: IntArray) -> float:
    classes = np.union1d(predictions, gold)
    f1_sum = 0.0
    for label in classes:
        predicted = predictions == label
        actual = gold == label
        true_positives = int(np.sum(predicted & actual))
        errors = int(np.sum(predicted ^ actual))  # FP + FN
        f1_sum += 2 * true_positives / (2 * true_positives + errors)
    return f1_sum / classes.shape[0]
