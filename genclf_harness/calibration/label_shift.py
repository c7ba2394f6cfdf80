"""Estimating the class prior of unlabelled documents (label shift), for "prior_em"."""

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
from genclf_harness.calibration.core import ConvergenceError


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
