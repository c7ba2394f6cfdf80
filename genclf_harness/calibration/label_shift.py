"""Label shift: the class prior of unlabelled documents estimated (EM, BBSE) and adapted to (BCTS + EM)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from genclf_harness.calibration._arrays import (
    FloatArray,
    as_distribution,
    as_scores,
    check_budget,
    log_softmax,
)
from genclf_harness.calibration.core import Calibration, ConvergenceError, FitInfo, as_param


def estimate_prior_em(
    logprobs: npt.ArrayLike,
    *,
    training_prior: npt.ArrayLike | None = None,
    tol: float = 1e-8,
    max_iter: int = 100_000,
    floor: float = 1e-12,
    accelerate: bool = True,
) -> tuple[FloatArray, int]:
    """The class prior of unlabelled documents, by the EM procedure for label shift.

    Source: Saerens, Latinne & Decaestecker (2002), "Adjusting the outputs of a classifier to new
    a priori probabilities: a simple procedure". With ``p_n(k)`` the model's posteriors, which
    assume the training prior ``pi_train``, iterate from ``pi^(0) = pi_train``::

        E: p_n^(s)(k) = [pi^(s)_k / pi_train_k] p_n(k) / sum_j [pi^(s)_j / pi_train_j] p_n(j)
        M: pi^(s+1)_k = (1/N) sum_n p_n^(s)(k)

    until ``max_k |pi^(s+1)_k - pi^(s)_k| <= tol``. Each step raises the log-likelihood
    ``L(pi) = sum_n log sum_k (pi_k / pi_train_k) p_n(k)`` of the documents under the
    re-weighted mixture; the fixed point is its maximiser.

    The training prior: a zero-shot LLM has no training set with class frequencies, so the
    default is uniform, i.e. the label log-likelihoods are read as class-conditional scores
    ``log p(x|k)`` up to a per-document constant. The model's own mean prediction on the SAME
    documents is not a usable choice: it is a fixed point of EM (the first M step returns it),
    so EM would estimate exactly that mean and change nothing. Pass a mean prediction measured
    on another split if that is the reference you want.

    EM is slow (linear, rate near 1) when posteriors are flat, which is common for weak
    zero-shot models; with ``accelerate`` (the default) the same EM map is extrapolated by
    SQUAREM (Varadhan & Roland 2008, "Simple and globally convergent methods for accelerating
    the convergence of any EM algorithm"), which keeps the likelihood from decreasing and
    reaches the same fixed point in far fewer steps.

    Each estimate is floored at ``floor`` (then renormalised) so that a class the documents seem
    not to contain keeps a finite offset.

    Returns:
        The estimated prior (K,) and the number of EM steps evaluated.
    """
    check_budget(tol, max_iter, "tol", "max_iter")
    posteriors = np.exp(log_softmax(as_scores(logprobs, "logprobs")))
    num_classes = posteriors.shape[1]
    reference = (
        np.full(num_classes, 1.0 / num_classes)
        if training_prior is None
        else as_distribution(training_prior, num_classes, "training_prior")
    )
    if not 0.0 < floor < 1.0 / num_classes:
        raise ValueError(f"floor must lie in (0, 1/K) = (0, {1.0 / num_classes:.3g}), got {floor}")
    em = _EMMap(posteriors, reference, floor)
    prior = reference
    while em.steps < max_iter:
        updated, likelihood = em(prior)
        change = float(np.max(np.abs(updated - prior)))
        if change <= tol:
            return updated, em.steps
        prior = _squarem(em, prior, updated, likelihood) if accelerate else updated
    raise ConvergenceError(
        f"EM prior estimation did not converge in {max_iter} steps (last change {change:.3g} "
        f"> tol {tol:.3g}); raise max_iter or tol"
    )


class _EMMap:
    """One Saerens EM step ``pi -> M(E(pi))``, counting the steps taken.

    With ``w = pi / pi_train`` the E step's normaliser is ``z_n = sum_k w_k p_n(k)`` and the M
    step is ``pi'_k = w_k (1/N) sum_n p_n(k) / z_n``: two matrix-vector products per step.
    """

    def __init__(self, posteriors: FloatArray, reference: FloatArray, floor: float) -> None:
        self._posteriors = posteriors
        self._reference = reference
        self.floor = floor
        self.steps = 0

    def __call__(self, prior: FloatArray) -> tuple[FloatArray, float]:
        """The next estimate and the log-likelihood ``L`` at ``prior``."""
        self.steps += 1
        weights = prior / self._reference
        normalisers = self._posteriors @ weights
        updated = weights * (self._posteriors.T @ (1.0 / normalisers)) / normalisers.shape[0]
        updated = np.maximum(updated, self.floor)
        return updated / updated.sum(), float(np.log(normalisers).sum())


def _squarem(em: _EMMap, prior: FloatArray, once: FloatArray, likelihood: float) -> FloatArray:
    """SQUAREM's S3 extrapolation from ``prior`` using ``once = em(prior)`` and ``em(once)``.

    ``r = em(x) - x``, ``v = em(em(x)) - 2 em(x) + x``, ``alpha = -|r|/|v|`` (at most -1), and
    ``x' = x - 2 alpha r + alpha^2 v``, projected onto the floored simplex (classes heading for
    a zero prior overshoot below zero), then stabilised by one more EM step. If the extrapolated
    point has a lower likelihood than ``x``, plain ``em(em(x))`` is used instead.
    """
    twice, _ = em(once)
    r = once - prior
    v = twice - once - r
    v_norm = float(np.linalg.norm(v))
    if v_norm == 0.0:
        return twice
    alpha = min(-float(np.linalg.norm(r)) / v_norm, -1.0)
    if alpha == -1.0:
        return twice
    # Classes heading for a zero prior overshoot below zero: project them onto the floor.
    extrapolated = np.maximum(prior - 2.0 * alpha * r + alpha**2 * v, em.floor)
    extrapolated /= extrapolated.sum()
    stabilised, extrapolated_likelihood = em(extrapolated)
    if extrapolated_likelihood < likelihood:
        return twice
    return stabilised


def _labelled(logprobs: npt.ArrayLike, labels: npt.ArrayLike, what: str) -> tuple[FloatArray, np.ndarray, FloatArray]:
    """(normalised scores, labels, label frequencies) of labelled calibration documents."""
    scores = log_softmax(as_scores(logprobs, what))
    gold = np.asarray(labels)
    if gold.shape != (scores.shape[0],) or not np.issubdtype(gold.dtype, np.integer):
        raise ValueError(f"{what}: need one integer label per row ({scores.shape[0]}), got shape {gold.shape}")
    if gold.size and (gold.min() < 0 or gold.max() >= scores.shape[1]):
        raise ValueError(f"{what}: labels must lie in 0..{scores.shape[1] - 1}")
    counts = np.bincount(gold, minlength=scores.shape[1]).astype(np.float64)
    absent = [int(k) for k in np.flatnonzero(counts == 0)]
    if absent:
        raise ValueError(f"{what}: label(s) {absent} have no labelled document; the source prior needs every label")
    return scores, gold, counts / counts.sum()


def fit_bcts(
    logprobs: npt.ArrayLike, labels: npt.ArrayLike, *, tol: float = 1e-10, max_iter: int = 100
) -> tuple[float, FloatArray, int]:
    """Bias-corrected temperature scaling on labelled documents: ``(T, b, steps)``.

    Source: Alexandari, Kundaje & Shrikumar (2020), "Maximum Likelihood with Bias-Corrected
    Calibration is Hard-To-Beat at Label Shift Adaptation" (BCTS). Calibrated
    ``log q(k|x) = log_softmax(a s(x) + b)_k`` with ``a = 1/T``; ``(a, b)`` minimise the mean
    negative log-likelihood of the labels, a convex problem (multinomial logistic regression on
    the features ``(s_k, e_k)``), solved by Newton's method with a backtracking line search.
    ``b`` is returned centred (its common shift changes nothing).
    """
    scores, gold, _ = _labelled(logprobs, labels, "BCTS documents")
    check_budget(tol, max_iter, "tol", "max_iter")
    n, k = scores.shape
    theta = np.concatenate([[1.0], np.zeros(k)])

    def loss_and_parts(theta: FloatArray) -> tuple[float, FloatArray, FloatArray]:
        logits = theta[0] * scores + theta[1:]
        logq = log_softmax(logits)
        return float(-logq[np.arange(n), gold].mean()), logq, logits

    loss, logq, _ = loss_and_parts(theta)
    for step in range(1, max_iter + 1):
        q = np.exp(logq)
        # features f_nk = (s_nk, e_k): gradient E[f_q] - f_y, Hessian Cov_q(f) averaged over documents
        mean_s = (q * scores).sum(axis=1)
        grad = np.concatenate([[np.mean(mean_s - scores[np.arange(n), gold])], q.mean(axis=0) - np.bincount(gold, minlength=k) / n])
        h_aa = np.mean((q * scores**2).sum(axis=1) - mean_s**2)
        h_ab = (q * scores).mean(axis=0) - (q * mean_s[:, None]).mean(axis=0)
        h_bb = np.diag(q.mean(axis=0)) - (q.T @ q) / n
        hessian = np.block([[np.array([[h_aa]]), h_ab[None, :]], [h_ab[:, None], h_bb]])
        direction = -np.linalg.lstsq(hessian + 1e-12 * np.eye(k + 1), grad, rcond=None)[0]
        size = 1.0
        while size > 1e-10:
            candidate = theta + size * direction
            if candidate[0] > 0:
                new_loss, new_logq, _ = loss_and_parts(candidate)
                if new_loss <= loss + 1e-4 * size * float(grad @ direction):
                    break
            size /= 2
        else:
            return 1.0 / theta[0], theta[1:] - theta[1:].mean(), step
        converged = loss - new_loss <= tol
        theta, loss, logq = candidate, new_loss, new_logq
        if converged:
            return 1.0 / theta[0], theta[1:] - theta[1:].mean(), step
    raise ConvergenceError(f"BCTS did not converge in {max_iter} Newton steps")


def fit_bcts_em(
    logprobs: npt.ArrayLike,
    *,
    labelled_logprobs: npt.ArrayLike,
    labelled_labels: npt.ArrayLike,
    split: str | None = None,
) -> Calibration:
    """Label-shift adaptation by BCTS, then EM: the evaluated documents' prior estimated without their labels.

    Source: Alexandari, Kundaje & Shrikumar (2020). (1) BCTS (:func:`fit_bcts`) on the labelled
    documents makes the model's posteriors calibrated for their label distribution ``pi_s`` (the
    labels' frequencies); (2) the Saerens EM (:func:`estimate_prior_em`) on the evaluated
    documents' BCTS posteriors, started at ``pi_s``, estimates their prior ``pi_t``; (3) the
    posteriors are re-weighted: ``log q(k|x) = log_softmax(s(x)/T + b + log pi_t - log pi_s)``.
    Without (1) EM starts from the model's own bias and moves the predictions towards it.
    """

    temperature, bias, steps = fit_bcts(labelled_logprobs, labelled_labels)
    _, _, source = _labelled(labelled_logprobs, labelled_labels, "BCTS documents")
    scores = log_softmax(as_scores(logprobs, "logprobs"))
    calibrated = log_softmax(scores / temperature + bias)
    target, em_steps = estimate_prior_em(calibrated, training_prior=source)
    return Calibration(
        method="bcts_em",
        offsets=bias + np.log(target) - np.log(source),
        temperature=float(temperature),
        fitted_on=FitInfo(source="documents", num_rows=scores.shape[0], num_classes=scores.shape[1], split=split),
        params={"temperature": float(temperature), "bias": as_param(bias - bias.mean()),
                "source_prior": as_param(source), "estimated_prior": as_param(target),
                "bcts_steps": steps, "em_steps": em_steps,
                "labelled_documents": int(np.asarray(labelled_labels).shape[0])},
    )


def estimate_prior_bbse(
    logprobs: npt.ArrayLike, *, labelled_logprobs: npt.ArrayLike, labelled_labels: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Black-box shift estimation: ``(estimated prior pi_t, importance weights w)``.

    Source: Lipton, Wang & Smola (2018), "Detecting and Correcting for Label Shift with Black Box
    Predictors". With the hard predictions ``ŷ = argmax s``, the joint confusion matrix on the
    labelled documents ``C_ij = P_s(ŷ = i, y = j)`` and the evaluated documents' prediction rates
    ``μ_i = P_t(ŷ = i)``, label shift gives ``μ = C w`` with ``w_j = pi_t(j) / pi_s(j)``; ``w`` is the
    least-squares solution, clipped at 0, and ``pi_t = w ⊙ pi_s`` renormalised.
    """
    lab_scores, gold, source = _labelled(labelled_logprobs, labelled_labels, "BBSE documents")
    scores = as_scores(logprobs, "logprobs")
    k = scores.shape[1]
    if lab_scores.shape[1] != k:
        raise ValueError(f"BBSE: the labelled documents have {lab_scores.shape[1]} classes, the evaluated {k}")
    confusion = np.zeros((k, k))
    np.add.at(confusion, (lab_scores.argmax(axis=1), gold), 1.0)
    confusion /= len(gold)
    rates = np.bincount(scores.argmax(axis=1), minlength=k) / scores.shape[0]
    weights = np.maximum(np.linalg.lstsq(confusion, rates, rcond=None)[0], 0.0)
    if not weights.any():
        raise ValueError("BBSE: the estimated importance weights are all zero (the confusion matrix is degenerate)")
    prior = weights * source
    return prior / prior.sum(), weights
