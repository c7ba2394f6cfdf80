"""Prior matching (Liusie et al. 2023), to a given prior or to one estimated by EM.

Both fit offsets ``b`` on unlabelled documents so that the calibrated class marginals equal a
target prior ``t``::

    m_k(b) = (1/N) sum_n softmax(s_n + b)_k = t_k      for every class k.

The solution is the minimiser of the convex function
``F(b) = (1/N) sum_n logsumexp(s_n + b) - t.b`` (gradient ``m(b) - t``, Hessian
``diag(m) - P^T P / N`` with ``P`` the (N, K) calibrated probabilities). For finite scores and a
strictly positive target it exists and is unique up to a constant.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from genclf_harness.calibration._arrays import (
    FloatArray,
    as_distribution,
    as_scores,
    centred,
    check_budget,
    logsumexp,
)
from genclf_harness.calibration.core import Calibration, ConvergenceError, FitInfo, as_param
from genclf_harness.calibration.label_shift import estimate_prior_bbse, estimate_prior_em

DEFAULT_TOLERANCE = 1e-6
_NEWTON_ZONE = 0.5
"""Newton steps are tried once every |log m_k - log t_k| is below this; further out the
multiplicative update is both safer and exact for classes of negligible probability."""
_NEWTON_HALVINGS = 10
"""A Newton step damped further than 2^-10 is outside its quadratic region: fall back."""
_MAX_DOUBLINGS = 40
_TINY = 1e-200


class _PriorSolution(NamedTuple):
    offsets: FloatArray
    iterations: int
    max_error: float


def fit_prior_matching(
    logprobs: npt.ArrayLike,
    *,
    target_prior: npt.ArrayLike | None = None,
    tol: float = DEFAULT_TOLERANCE,
    max_iter: int = 1000,
    split: str | None = None,
) -> Calibration:
    """Prior matching: offsets that make the mean calibrated prediction equal ``target_prior``.

    Source: Liusie, Manakul & Gales (2023), "Mitigating Word Bias in Zero-shot Prompt-based
    Classifiers". Zero-shot label words carry a prior of their own (word bias); reweighting the
    class probabilities, ``q_n(k) ∝ p_n(k) exp(b_k)``, until the predicted marginals are uniform
    removes it without labels.

    Solved as ``m(b) = t`` (module docstring) to ``max_k |m_k - t_k| <= tol``: first the
    multiplicative fixed point ``b_k += log t_k - log m_k`` (Sinkhorn / iterative proportional
    fitting on the document-by-class matrix; lengthened while F keeps decreasing, see
    `_multiplicative_step`), then, once every marginal is within a factor e^0.5 of its target,
    Newton steps ``H d = t - m`` with a backtracking line search on ``||m - t||``, which converge
    quadratically. Marginals too small for float64 are computed in log space, so a class whose
    label is e^-800 less likely than the others still converges (in one step).

    Args:
        logprobs: (N, K) label log-likelihoods of the unlabelled documents to fit on.
        target_prior: (K,) strictly positive prior summing to 1; uniform by default.
        tol: the largest allowed absolute difference between a calibrated marginal and its target.
        max_iter: the cap on solver iterations; reaching it raises `ConvergenceError`.
        split: a name for the data fitted on, recorded in ``fitted_on``.

    Returns:
        A "prior" `Calibration` whose params hold ``target_prior``, ``iterations`` and
        ``max_marginal_error``.
    """
    scores = as_scores(logprobs, "logprobs")
    num_classes = scores.shape[1]
    target = (
        np.full(num_classes, 1.0 / num_classes)
        if target_prior is None
        else as_distribution(target_prior, num_classes, "target_prior")
    )
    solution = _solve_prior_offsets(scores, target, tol=tol, max_iter=max_iter)
    return Calibration(
        method="prior",
        offsets=solution.offsets,
        fitted_on=FitInfo("documents", scores.shape[0], num_classes, split),
        params={
            "target_prior": as_param(target),
            "tol": tol,
            "iterations": solution.iterations,
            "max_marginal_error": solution.max_error,
        },
    )


def fit_prior_em(
    logprobs: npt.ArrayLike,
    *,
    training_prior: npt.ArrayLike | None = None,
    em_tol: float = 1e-8,
    em_max_iter: int = 100_000,
    tol: float = DEFAULT_TOLERANCE,
    max_iter: int = 1000,
    split: str | None = None,
) -> Calibration:
    """Prior matching towards a prior estimated from the same unlabelled documents by EM.

    Plain prior matching assumes the evaluated classes are balanced; this variant first estimates
    their prior ``pi`` with `estimate_prior_em` (Saerens et al. 2002; uniform training prior by
    default, see there) and then matches it (Liusie et al. 2023) as `fit_prior_matching` does,
    to ``max_k |m_k - pi_k| <= tol``. At EM's fixed point the offsets
    ``log pi - log pi_train`` already match ``pi``, so the matching step starts there and mostly
    confirms the tolerance.

    Returns:
        A "prior_em" `Calibration`; params hold ``estimated_prior``, ``training_prior``,
        ``em_iterations``, ``iterations`` and ``max_marginal_error``.
    """
    scores = as_scores(logprobs, "logprobs")
    num_classes = scores.shape[1]
    reference = (
        np.full(num_classes, 1.0 / num_classes)
        if training_prior is None
        else as_distribution(training_prior, num_classes, "training_prior")
    )
    estimated, em_iterations = estimate_prior_em(
        scores, training_prior=reference, tol=em_tol, max_iter=em_max_iter
    )
    solution = _solve_prior_offsets(
        scores,
        estimated,
        tol=tol,
        max_iter=max_iter,
        initial=np.log(estimated) - np.log(reference),
    )
    return Calibration(
        method="prior_em",
        offsets=solution.offsets,
        fitted_on=FitInfo("documents", scores.shape[0], num_classes, split),
        params={
            "estimated_prior": as_param(estimated),
            "training_prior": as_param(reference),
            "em_iterations": em_iterations,
            "tol": tol,
            "iterations": solution.iterations,
            "max_marginal_error": solution.max_error,
        },
    )


def fit_bbse(
    logprobs: npt.ArrayLike,
    *,
    labelled_logprobs: npt.ArrayLike,
    labelled_labels: npt.ArrayLike,
    tol: float = DEFAULT_TOLERANCE,
    max_iter: int = 1000,
    split: str | None = None,
) -> Calibration:
    """Prior matching towards the prior that black-box shift estimation gives (the baseline of BCTS+EM).

    `estimate_prior_bbse` (Lipton, Wang & Smola 2018) estimates the evaluated documents' prior from
    the model's confusion matrix on labelled documents and its prediction rates on the evaluated
    ones; the offsets then match that prior as `fit_prior_matching` does (Liusie et al. 2023).
    """
    scores = as_scores(logprobs, "logprobs")
    estimated, weights = estimate_prior_bbse(scores, labelled_logprobs=labelled_logprobs,
                                             labelled_labels=labelled_labels)
    floored = np.maximum(estimated, 1e-6)
    floored /= floored.sum()
    solution = _solve_prior_offsets(scores, floored, tol=tol, max_iter=max_iter)
    return Calibration(
        method="bbse",
        offsets=solution.offsets,
        fitted_on=FitInfo("documents", scores.shape[0], scores.shape[1], split),
        params={"estimated_prior": as_param(estimated), "importance_weights": as_param(weights),
                "labelled_documents": int(np.asarray(labelled_labels).shape[0]),
                "iterations": solution.iterations, "max_marginal_error": solution.max_error},
    )


def _solve_prior_offsets(
    scores: FloatArray,
    target: FloatArray,
    *,
    tol: float,
    max_iter: int,
    initial: FloatArray | None = None,
) -> _PriorSolution:
    """Centred ``b`` with ``max_k |m_k(b) - target_k| <= tol`` (see `fit_prior_matching`)."""
    check_budget(tol, max_iter, "tol", "max_iter")
    log_target = np.log(target)
    offsets = centred(np.zeros_like(target) if initial is None else initial.astype(np.float64))
    state = _Marginals.at(scores, offsets)
    for iteration in range(max_iter + 1):
        error = float(np.max(np.abs(state.marginals - target)))
        if error <= tol:
            return _PriorSolution(offsets, iteration, error)
        if iteration == max_iter:
            break
        gap = log_target - state.log_marginals
        step = None
        if float(np.max(np.abs(gap))) < _NEWTON_ZONE:
            step = _newton_step(scores, offsets, state, target)
        if step is None:
            step = _multiplicative_step(scores, offsets, gap, target)
        offsets, state = step
    raise ConvergenceError(
        f"prior matching did not converge in {max_iter} iterations: the largest marginal error "
        f"is {error:.3g} > tol {tol:.3g}. This happens when label scores differ by hundreds of "
        "nats between classes, so the marginals move in steps; raise max_iter or tol"
    )


class _Marginals(NamedTuple):
    probs: FloatArray  # (N, K) calibrated probabilities softmax(s + b)
    marginals: FloatArray  # (K,) their mean over documents
    log_marginals: FloatArray

    @classmethod
    def at(cls, scores: FloatArray, offsets: FloatArray) -> _Marginals:
        shifted = scores + offsets
        shifted -= shifted.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        row_sums = probs.sum(axis=1, keepdims=True)
        probs /= row_sums
        marginals = probs.mean(axis=0)
        with np.errstate(divide="ignore"):
            log_marginals = np.log(marginals)
        # A class whose probabilities all underflow still needs its exact log-marginal: it is
        # what moves its offset up by hundreds in one multiplicative step.
        faint = marginals < _TINY
        if faint.any():
            log_probs = shifted[:, faint] - np.log(row_sums)
            log_marginals[faint] = logsumexp(log_probs, axis=0) - math.log(scores.shape[0])
        return cls(probs, marginals, log_marginals)


def _multiplicative_step(
    scores: FloatArray, offsets: FloatArray, gap: FloatArray, target: FloatArray
) -> tuple[FloatArray, _Marginals]:
    """The update ``b += alpha (log t - log m)`` with ``alpha = 1, 2, 4, ...`` kept doubling while
    the convex objective F still decreases along it.

    ``alpha = 1`` is the classic fixed point, which always lowers F (it is the exact minimisation
    over the column potentials in the dual of the scaling problem). On sharp, near one-hot score
    matrices the marginals form plateaus in ``b`` where that step stays small for hundreds of
    iterations; doubling crosses a plateau in a logarithmic number of steps. The sign of
    ``F'(alpha) = (m(b + alpha d) - t) . d`` (F is convex along the line) says when to stop.
    """
    best = centred(offsets + gap)
    best_state = _Marginals.at(scores, best)
    for _ in range(_MAX_DOUBLINGS):
        if float(np.dot(best_state.marginals - target, gap)) >= 0.0:
            break  # F stopped decreasing along the line: the minimum is behind us
        candidate = centred(offsets + 2.0 * (best - offsets))
        candidate_state = _Marginals.at(scores, candidate)
        if float(np.dot(candidate_state.marginals - target, gap)) > 0.0:
            break  # the minimum lies between the two; keep the nearer, safe point
        best, best_state = candidate, candidate_state
    return best, best_state


def _newton_step(
    scores: FloatArray, offsets: FloatArray, state: _Marginals, target: FloatArray
) -> tuple[FloatArray, _Marginals] | None:
    """One damped Newton step on ``m(b) = t``, or None when it makes no progress.

    ``H = diag(m) - P^T P / N`` is singular along the all-ones vector (the free constant), so the
    system is solved in the scaled form ``(S H S + u u^T) y = S r``, ``d = S y``, with
    ``S = diag(m)^-1/2`` and ``u = sqrt(m)`` (the scaled null vector; ``r = t - m`` sums to 0).
    The scaling keeps rare classes as well conditioned as common ones.
    """
    marginals = state.marginals
    if float(marginals.min()) < _TINY:
        return None
    probs = state.probs
    hessian = np.diag(marginals) - probs.T @ probs / scores.shape[0]
    scale = 1.0 / np.sqrt(marginals)
    root = np.sqrt(marginals)
    system = hessian * np.outer(scale, scale) + np.outer(root, root)
    residual = target - marginals
    try:
        direction = scale * np.linalg.solve(system, scale * residual)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(direction)):
        return None
    norm = float(np.linalg.norm(residual))
    step = 1.0
    for _ in range(_NEWTON_HALVINGS):
        candidate = centred(offsets + step * direction)
        trial = _Marginals.at(scores, candidate)
        if float(np.linalg.norm(target - trial.marginals)) <= (1.0 - 1e-4 * step) * norm:
            return candidate, trial
        step /= 2.0
    return None
