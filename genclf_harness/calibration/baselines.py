"""The closed-form calibration baselines: batch calibration, contextual calibration, and PMI.

Each is an offset vector ``b`` subtracting an estimate of the prompt's bias towards each label,
``log q(k|x) = log_softmax(s(x) + b)_k``; they differ in where the bias estimate comes from.
All fit functions take the documents' (N, K) score matrix first, so the registry can call every
method alike; the methods that fit on side inputs use it only to check the number of classes.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from genclf_harness.calibration._arrays import FloatArray, as_scores, log_softmax, logsumexp
from genclf_harness.calibration.core import Calibration, FitInfo, FitSource, as_param


def fit_batch_calibration(logprobs: npt.ArrayLike, *, split: str | None = None) -> Calibration:
    """Batch calibration: divide each class probability by its mean over the batch.

    Source: Zhou et al. (2024), "Batch Calibration: Rethinking Calibration for In-Context
    Learning and Prompt Engineering". The contextual bias is estimated as the mean prediction
    over the N unlabelled documents, ``pbar_k = (1/N) sum_n p(k|x_n)``, and removed:
    ``q(k|x) ∝ p(k|x) / pbar_k``, i.e. offsets ``b = -log pbar``.

    Unlike prior matching this is one step, so the calibrated marginals are only approximately
    uniform; if they already are uniform the offsets are zero.

    Returns:
        A "bc" `Calibration`; params hold ``mean_prediction`` (``pbar``).
    """
    scores = as_scores(logprobs, "logprobs")
    log_mean = _log_mean_prediction(scores)
    return Calibration(
        method="bc",
        offsets=-log_mean,
        fitted_on=FitInfo("documents", scores.shape[0], scores.shape[1], split),
        params={"mean_prediction": as_param(np.exp(log_mean))},
    )


def fit_contextual_calibration(
    logprobs: npt.ArrayLike,
    *,
    content_free_logprobs: npt.ArrayLike,
    split: str | None = None,
) -> Calibration:
    """Contextual calibration from content-free inputs.

    Source: Zhao et al. (2021), "Calibrate Before Use: Improving Few-Shot Performance of
    Language Models". Content-free inputs ("N/A", "", "[MASK]") are put into the task's own
    prompt in place of the document; with ``p_cf`` the mean of their normalised label
    probabilities (then renormalised), the diagonal correction ``W = diag(p_cf)^-1``, ``b = 0``
    gives ``q(k|x) ∝ p(k|x) / p_cf,k``, i.e. offsets ``-log p_cf``. The paper writes
    ``softmax(W p)``, its released code takes ``argmax(W p)``; renormalising ``W p`` as here has
    the same argmax as both and keeps probabilities that are a proper distribution over labels.

    Args:
        logprobs: (N, K) scores of the documents; used only to check K.
        content_free_logprobs: (M, K) (or (K,) for one input) label log-likelihoods of the
            content-free inputs.

    Returns:
        A "cc" `Calibration` fitted on the content-free inputs; params hold
        ``content_free_prior`` (``p_cf``).
    """
    num_classes = as_scores(logprobs, "logprobs").shape[1]
    content_free = np.asarray(content_free_logprobs)
    if content_free.ndim == 1:
        content_free = content_free[None, :]
    content_free = _side_scores(content_free, "content_free_logprobs", num_classes)
    log_prior = _log_mean_prediction(content_free)
    return Calibration(
        method="cc",
        offsets=-log_prior,
        fitted_on=FitInfo("content_free_inputs", content_free.shape[0], num_classes, split),
        params={"content_free_prior": as_param(np.exp(log_prior))},
    )


def fit_domain_pmi(
    logprobs: npt.ArrayLike,
    *,
    domain_logprobs: npt.ArrayLike,
    split: str | None = None,
) -> Calibration:
    """Domain-conditional PMI: score each label by how much the document raises its likelihood.

    Source: Holtzman et al. (2021), "Surface Form Competition: Why the Highest Probability Answer
    Isn't Always Right". ``PMI_DC(x, k) = log p(k|prompt(x)) - log p(k|domain premise)``, where
    the domain premise is the prompt's answer cue with no input (e.g. "Sentiment:"), so the
    label's prior plausibility after that cue is divided out. Offsets ``-domain_logprobs``; the
    calibrated distribution is ``softmax(PMI_DC)`` over labels.

    Args:
        logprobs: (N, K) scores of the documents; used only to check K.
        domain_logprobs: (K,) label log-likelihoods after the domain premise (raw or
            normalised: a constant shift changes nothing).

    Returns:
        A "dcpmi" `Calibration`; params hold ``domain_prior`` (the normalised premise scores).
    """
    return _pmi_like("dcpmi", "domain_premise", logprobs, domain_logprobs, "domain_logprobs", split)


def fit_pmi(
    logprobs: npt.ArrayLike,
    *,
    unconditional_logprobs: npt.ArrayLike,
    split: str | None = None,
) -> Calibration:
    """Unconditional PMI, as lm-eval's ``acc_mutual_info``.

    ``PMI(x, k) = log p(k|prompt(x)) - log p(k)``, with ``log p(k)`` the label continuation's
    log-likelihood with no context at all (lm-eval scores it after an empty context). Offsets
    ``-unconditional_logprobs``; the argmax equals lm-eval's ``acc_mutual_info`` choice.
    The conditional-vs-domain distinction is from Holtzman et al. (2021), "Surface Form
    Competition".

    Args:
        logprobs: (N, K) scores of the documents; used only to check K.
        unconditional_logprobs: (K,) unconditional label log-likelihoods.

    Returns:
        A "pmi" `Calibration`; params hold ``unconditional_prior`` (the normalised scores).
    """
    return _pmi_like(
        "pmi", "unconditional", logprobs, unconditional_logprobs, "unconditional_logprobs", split
    )


def _pmi_like(
    method: str,
    source: FitSource,
    logprobs: npt.ArrayLike,
    reference: npt.ArrayLike,
    reference_name: str,
    split: str | None,
) -> Calibration:
    num_classes = as_scores(logprobs, "logprobs").shape[1]
    reference_array = np.asarray(reference)
    if reference_array.ndim == 2 and reference_array.shape[0] == 1:
        reference_array = reference_array[0]
    if reference_array.ndim != 1:
        raise ValueError(
            f"{reference_name} must have shape ({num_classes},): one score per label for the "
            f"single {source.replace('_', ' ')} context, got shape {reference_array.shape}"
        )
    scores = _side_scores(reference_array[None, :], reference_name, num_classes)[0]
    prior_name = "domain_prior" if method == "dcpmi" else "unconditional_prior"
    return Calibration(
        method=method,
        offsets=-scores,
        fitted_on=FitInfo(source, 1, num_classes, split),
        params={prior_name: as_param(np.exp(log_softmax(scores)))},
    )


def _side_scores(values: npt.ArrayLike, name: str, num_classes: int) -> FloatArray:
    scores = as_scores(values, name)
    if scores.shape[1] != num_classes:
        raise ValueError(
            f"{name} has {scores.shape[1]} classes but logprobs has {num_classes}; "
            "both must score the same labels in the same order"
        )
    return scores


def _log_mean_prediction(scores: FloatArray) -> FloatArray:
    """log((1/N) sum_n p(k|x_n)) per class, computed in log space."""
    return logsumexp(log_softmax(scores), axis=0) - math.log(scores.shape[0])
