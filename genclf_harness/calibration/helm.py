"""HELM's calibration metrics, and temperature scaling as a fitted calibration.

Source: Liang et al. (2022), "Holistic Evaluation of Language Models" (HELM), §4.4 and its code:
``compute_calibration_metrics`` in ``helm/benchmark/metrics/basic_metrics.py``, which calls the
``calibration`` package (Kumar, Liang & Ma 2019, "Verified Uncertainty Calibration",
``p-lambda/verified_calibration``). Per document, HELM takes the top-label confidence
``c_n = max_k softmax(s(x_n))_k`` and the correctness ``z_n = [argmax_k s_k(x_n) = y_n]`` (HELM
splits exact ties between gold and non-gold labels fractionally; here numpy's argmax takes the
lowest class id, as everywhere in this package). The metrics, under the names the harness reports:

- ``ece_mass10`` (HELM ``ece_10_bin``): ECE with 10 equal-mass bins, `equal_mass_ece`.
- ``ece_mass1`` (HELM ``ece_1_bin``): one bin, ``|mean(c) - mean(z)|``.
- ``ece_platt_mass10`` (HELM ``platt_ece_10_bin``): ``ece_mass10`` of the Platt-scaled
  confidences, Platt scaling fitted ON THE SAME evaluated documents (HELM does this; it measures
  how well a monotone recalibration could do, not an out-of-sample calibration). When every
  document is right or every one wrong, Platt scaling has no finite fit and HELM reports 0.
- ``selective_acc_at_10`` (HELM ``selective_acc@10``): `selective_accuracy`.
- ``cov_acc_area`` (HELM ``selective_cov_acc_area``): `coverage_accuracy_area`.

Ranking by confidence: HELM sorts with ``np.argsort(-c)`` (numpy's unstable default sort), so
equal confidences come in an unspecified order; here they keep document order (stable sort).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from genclf_harness.calibration._arrays import (
    FloatArray,
    as_scores,
    check_budget,
    log_softmax,
)
from genclf_harness.calibration.core import Calibration, ConvergenceError, FitInfo
from genclf_harness.calibration.metrics import _checked

PLATT_C = 1e10
"""Inverse L2 strength of HELM's Platt fit: scikit-learn ``LogisticRegression(C=1e10)``."""
PLATT_CLIP = 1e-12
"""Confidences are clipped to [1e-12, 1 - 1e-12] before the logit, as in HELM's Platt scaler."""


def confidence_and_correct(logprobs: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """``(c, z)``: top-label softmax confidence and 0/1 correctness of the argmax, per document."""
    scores, gold = _checked(logprobs, labels)
    log_probs = log_softmax(scores)
    return np.exp(log_probs.max(axis=1)), (log_probs.argmax(axis=1) == gold).astype(np.float64)


def equal_mass_ece(confidence: npt.ArrayLike, correct: npt.ArrayLike, *, num_bins: int = 10) -> float:
    """ECE with equal-mass bins, exactly as ``calibration.get_ece_em`` (HELM's ``ece_10_bin``).

    Bins (``get_equal_bins``): sort the N confidences, cut them into ``B = min(num_bins, N)``
    consecutive groups with ``np.array_split`` (the first ``N mod B`` groups one longer), and put
    an edge halfway between the last value of each group and the first of the next; the last edge
    is 1.0 and repeated edges merge (ties across a cut). Document n falls in bin
    ``b = #{edges < c_n}`` (``np.searchsorted``, left: a value on an edge joins the lower bin).
    Then ``ECE = sum_b |B_b|/N * |mean_{n in B_b} c_n - mean_{n in B_b} z_n|``. With one bin this
    is ``|mean(c) - mean(z)|`` (``ece_mass1``, HELM's ``ece_1_bin``).
    """
    conf, hits = _confidence_pairs(confidence, correct)
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, got {num_bins}")
    groups = np.array_split(np.sort(conf), min(num_bins, conf.shape[0]))
    cuts = [(left[-1] + right[0]) / 2.0 for left, right in pairwise(groups)]
    edges = np.unique(np.array(cuts + [1.0]))
    bins = np.searchsorted(edges, conf)
    counts = np.bincount(bins, minlength=edges.shape[0])
    gaps = np.bincount(bins, weights=conf - hits, minlength=edges.shape[0])
    # sum_b |B_b|/N * |mean gap in b| = sum_b |sum of gaps in b| / N
    return float(np.abs(gaps[counts > 0]).sum() / conf.shape[0])


def selective_accuracy(confidence: npt.ArrayLike, correct: npt.ArrayLike, *, coverage: float = 0.1) -> float:
    """Accuracy of the most confident documents (HELM's ``selective_acc@10`` at coverage 0.1).

    With ``a_k`` the accuracy of the k most confident documents, HELM reports
    ``a_{m+1}``, ``m = int(coverage * N)`` (its 0-based index ``int(0.1 * N)`` into the running
    accuracies), so the top ``floor(0.1 N) + 1`` documents count, slightly more than 10%.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
    running = _running_accuracy(confidence, correct)
    return float(running[min(int(coverage * running.shape[0]), running.shape[0] - 1)])


def coverage_accuracy_area(confidence: npt.ArrayLike, correct: npt.ArrayLike) -> float:
    """Area under the coverage-accuracy curve: ``(1/N) sum_{k=1..N} a_k`` (HELM's ``selective_cov_acc_area``),
    with ``a_k`` the accuracy of the k most confident documents."""
    return float(_running_accuracy(confidence, correct).mean())


@dataclass(frozen=True)
class PlattFit:
    """Platt scaling ``P(correct | c) = sigmoid(coef * logit(c) + intercept)``."""

    coef: float
    intercept: float
    iterations: int
    """Newton steps taken."""
    converged: bool = True
    """False when the step budget ran out first (nearly separable data: the coefficient keeps
    growing); the last iterate is kept, as scikit-learn's solver keeps it for HELM."""

    def apply(self, confidence: npt.ArrayLike) -> FloatArray:
        """Recalibrated confidences ``sigmoid(coef * logit(clip(c)) + intercept)``."""
        conf = as_scores(confidence, "confidence", ndim=1)
        return 1.0 / (1.0 + np.exp(-(self.coef * _logit(conf) + self.intercept)))


def platt_scaling(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, *, tol: float = 1e-10, max_iter: int = 100
) -> PlattFit:
    """Platt (1999) scaling as HELM fits it: a 1-D logistic regression of correctness on ``logit(c)``.

    HELM (``calibration.get_platt_scaler``) fits scikit-learn's ``LogisticRegression(C=1e10)`` on
    ``x_n = logit(clip(c_n, 1e-12, 1 - 1e-12))``: it minimises
    ``sum_n [log(1 + exp(a x_n + b)) - z_n (a x_n + b)] + a^2 / (2C)`` (intercept unpenalised).
    The same objective is minimised here by Newton's method with a backtracking line search (IRLS),
    until the gradient's largest entry is at most ``tol * N`` or ``max_iter`` steps (then the last
    iterate, ``converged=False``, as scikit-learn returns its last iterate with a warning); the tiny
    ridge keeps ``a`` finite when the confidences separate right from wrong. Raises ValueError if every ``z_n`` is equal (then
    ``b`` has no finite optimum; HELM skips the fit and reports ECE 0).
    """
    conf, hits = _confidence_pairs(confidence, correct)
    check_budget(tol, max_iter, "tol", "max_iter")
    if hits.min() == hits.max():
        raise ValueError("Platt scaling needs both correct and incorrect documents; all are "
                         + ("correct" if hits[0] == 1.0 else "incorrect"))
    design = np.column_stack([_logit(conf), np.ones_like(conf)])
    ridge = np.array([1.0 / PLATT_C, 0.0])
    mean_hit = hits.mean()
    theta = np.array([0.0, np.log(mean_hit / (1.0 - mean_hit))])

    def objective(theta: FloatArray) -> float:
        z = design @ theta
        return float(np.sum(np.logaddexp(0.0, z) - hits * z) + 0.5 * ridge[0] * theta[0] ** 2)

    loss = objective(theta)
    for step in range(1, max_iter + 1):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        grad = design.T @ (p - hits) + ridge * theta
        if np.max(np.abs(grad)) <= tol * conf.shape[0]:
            return PlattFit(coef=float(theta[0]), intercept=float(theta[1]), iterations=step - 1)
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design + np.diag(ridge)
        direction = -np.linalg.solve(hessian, grad)
        size = 1.0
        while True:
            candidate = theta + size * direction
            new_loss = objective(candidate)
            if new_loss <= loss + 1e-4 * size * float(grad @ direction) or size < 1e-12:
                break
            size /= 2.0
        theta, loss = candidate, new_loss
    return PlattFit(coef=float(theta[0]), intercept=float(theta[1]), iterations=max_iter, converged=False)


def helm_calibration_metrics(logprobs: npt.ArrayLike, labels: npt.ArrayLike) -> dict[str, float]:
    """Every HELM calibration metric of (N, K) label log-likelihoods and gold labels.

    Keys: ``ece_mass10``, ``ece_mass1``, ``ece_platt_mass10``, ``selective_acc_at_10``,
    ``cov_acc_area`` and, when Platt scaling could be fitted, ``platt_coef`` and
    ``platt_intercept``. The Platt fit uses these same documents (HELM's choice).
    """
    conf, hits = confidence_and_correct(logprobs, labels)
    metrics = {
        "ece_mass10": equal_mass_ece(conf, hits, num_bins=10),
        "ece_mass1": equal_mass_ece(conf, hits, num_bins=1),
        "selective_acc_at_10": selective_accuracy(conf, hits, coverage=0.1),
        "cov_acc_area": coverage_accuracy_area(conf, hits),
    }
    if hits.min() == hits.max():
        metrics["ece_platt_mass10"] = 0.0
    else:
        platt = platt_scaling(conf, hits)
        metrics["ece_platt_mass10"] = equal_mass_ece(platt.apply(conf), hits, num_bins=10)
        metrics["platt_coef"] = platt.coef
        metrics["platt_intercept"] = platt.intercept
        metrics["platt_converged"] = float(platt.converged)
    return metrics


TEMPERATURE_BOUNDS = (1e-3, 1e3)
"""The temperatures returned where the NLL has no finite minimum (see `fit_temperature`)."""


def fit_temperature(
    logprobs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    split: str | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> Calibration:
    """Temperature scaling fitted on labelled documents; ``apply`` gives ``log_softmax(log p / T)``.

    Source: Guo et al. (2017), "On Calibration of Modern Neural Networks". ``T > 0`` minimises
    ``NLL(T) = -(1/N) sum_n log softmax(log p(x_n) / T)_{y_n}``. In ``beta = 1/T`` the NLL is
    convex (``NLL'(beta) = mean_n(E_q[l_n] - l_{n,y_n})``, ``NLL'' = mean_n Var_q(l_n) >= 0``, with
    ``l_n`` the normalised log-probabilities and ``q`` the tempered softmax), so Newton's method
    on ``beta`` with a backtracking line search finds the minimum; it stops when a step lowers the
    NLL by at most ``tol``. Where the NLL has no finite minimum the nearer of ``TEMPERATURE_BOUNDS``
    is returned, with the reason in ``params["at_bound"]``: at ``beta <= 0`` (the scores rank the
    gold label no better than chance: the largest temperature, near-uniform probabilities) and at
    ``beta = inf`` (every gold label is its document's strict top label: the smallest).
    ``params`` hold ``nll`` (fitted), ``nll_before`` (at T = 1) and ``steps``; ``temperature`` is T.
    """
    scores, gold = _checked(logprobs, labels)
    check_budget(tol, max_iter, "tol", "max_iter")
    base = log_softmax(scores)
    rows = np.arange(gold.shape[0])
    gold_scores = base[rows, gold]

    def nll(beta: float) -> float:
        return float(-np.mean(log_softmax(beta * base)[rows, gold]))

    fit_info = FitInfo(source="documents", num_rows=scores.shape[0], num_classes=scores.shape[1], split=split)

    def at_bound(temperature: float, why: str) -> Calibration:
        return Calibration(method="ts", offsets=np.zeros(scores.shape[1]), temperature=temperature,
                           fitted_on=fit_info, params={"temperature": temperature, "nll": nll(1.0 / temperature),
                                                       "nll_before": nll(1.0), "steps": 0, "at_bound": why})

    # NLL'(beta) at beta -> 0+ (uniform q): if not negative, the convex NLL's minimum is at beta <= 0:
    # the scores rank the gold label no better than chance, and the best temperature flattens them.
    if float(np.mean(base.mean(axis=1) - gold_scores)) >= 0.0:
        return at_bound(TEMPERATURE_BOUNDS[1], "the scores rank the gold label no better than chance")
    others = np.where(np.arange(base.shape[1]) == gold[:, None], -np.inf, base)
    if bool(np.all(gold_scores > others.max(axis=1))):
        return at_bound(TEMPERATURE_BOUNDS[0], "every gold label is its document's top label")
    beta, loss = 1.0, nll(1.0)
    nll_before = loss
    for step in range(1, max_iter + 1):
        q = np.exp(log_softmax(beta * base))
        mean_l = (q * base).sum(axis=1)
        grad = float(np.mean(mean_l - gold_scores))
        curvature = float(np.mean((q * base**2).sum(axis=1) - mean_l**2))
        if grad == 0.0 or curvature <= 0.0:
            break
        direction, size = -grad / curvature, 1.0
        while size >= 1e-12:
            candidate = beta + size * direction
            if candidate > 0 and (new_loss := nll(candidate)) <= loss + 1e-4 * size * grad * direction:
                break
            size /= 2.0
        else:
            break  # no step lowers the NLL: at the minimum to rounding
        beta, improvement, loss = candidate, loss - new_loss, new_loss
        if improvement <= tol:
            break
    else:
        raise ConvergenceError(f"temperature scaling did not converge in {max_iter} Newton steps")
    return Calibration(
        method="ts",
        offsets=np.zeros(scores.shape[1]),
        temperature=1.0 / beta,
        fitted_on=FitInfo(source="documents", num_rows=scores.shape[0], num_classes=scores.shape[1], split=split),
        params={"temperature": 1.0 / beta, "nll": loss, "nll_before": nll_before, "steps": step},
    )


def _confidence_pairs(confidence: npt.ArrayLike, correct: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    conf = as_scores(confidence, "confidence", ndim=1)
    if conf.min() < 0.0 or conf.max() > 1.0:
        index = int(np.argmax((conf < 0.0) | (conf > 1.0)))
        raise ValueError(f"confidence must lie in [0, 1], but confidence[{index}] = {conf[index]}")
    hits = np.asarray(correct)
    if hits.shape != conf.shape:
        raise ValueError(f"correct must have shape {conf.shape} to match confidence, got {hits.shape}")
    hits = hits.astype(np.float64)
    if not np.isin(hits, (0.0, 1.0)).all():
        index = int(np.argmax(~np.isin(hits, (0.0, 1.0))))
        raise ValueError(f"correct must be 0/1 or boolean, but correct[{index}] = {hits[index]}")
    return conf, hits


def _running_accuracy(confidence: npt.ArrayLike, correct: npt.ArrayLike) -> FloatArray:
    """``a_k`` for k = 1..N: accuracy of the k most confident documents (ties in document order)."""
    conf, hits = _confidence_pairs(confidence, correct)
    order = np.argsort(-conf, kind="stable")
    return np.cumsum(hits[order]) / np.arange(1, conf.shape[0] + 1)


def _logit(conf: FloatArray) -> FloatArray:
    clipped = np.clip(conf, PLATT_CLIP, 1.0 - PLATT_CLIP)
    return np.log(clipped / (1.0 - clipped))
