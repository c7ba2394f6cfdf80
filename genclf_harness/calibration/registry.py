"""The method registry: short names to fit functions, and `fit` to call one by name."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy.typing as npt

from genclf_harness.calibration.baselines import (
    fit_batch_calibration,
    fit_contextual_calibration,
    fit_domain_pmi,
    fit_pmi,
)
from genclf_harness.calibration.core import Calibration
from genclf_harness.calibration.helm import fit_temperature
from genclf_harness.calibration.label_shift import fit_bcts_em
from genclf_harness.calibration.prior_matching import fit_bbse, fit_prior_em, fit_prior_matching

def _fit_temperature_scaling(logprobs: npt.ArrayLike, *, labelled_logprobs: npt.ArrayLike,
                             labelled_labels: npt.ArrayLike, split: str | None = None) -> Calibration:
    """Temperature scaling (Guo et al. 2017) fitted on labelled calibration documents; the evaluated
    documents' scores (``logprobs``) are not used: one temperature only rescales confidences."""
    return fit_temperature(labelled_logprobs, labelled_labels, split=split)


FitFunction = Callable[..., Calibration]
"""``fit_fn(logprobs, **extra) -> Calibration`` with ``logprobs`` the (N, K) document scores."""

METHODS: Mapping[str, FitFunction] = MappingProxyType(
    {
        "prior": fit_prior_matching,
        "prior_em": fit_prior_em,
        "bc": fit_batch_calibration,
        "cc": fit_contextual_calibration,
        "dcpmi": fit_domain_pmi,
        "pmi": fit_pmi,
        "bcts_em": fit_bcts_em,
        "bbse": fit_bbse,
        "ts": _fit_temperature_scaling,
    }
)
"""Every calibration method by its short name (the suffix of its metric names, e.g. ``acc_bc``)."""

METHOD_INPUTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "prior": (),
        "prior_em": (),
        "bc": (),
        "cc": ("content_free_logprobs",),
        "dcpmi": ("domain_logprobs",),
        "pmi": ("unconditional_logprobs",),
        "bcts_em": ("labelled_logprobs", "labelled_labels"),
        "bbse": ("labelled_logprobs", "labelled_labels"),
        "ts": ("labelled_logprobs", "labelled_labels"),
    }
)
"""The side inputs each method needs besides the document scores, as keyword names of `fit`."""


def fit(method: str, logprobs: npt.ArrayLike, **extra: Any) -> Calibration:
    """Fit the calibration method named ``method`` on the (N, K) document scores ``logprobs``.

    ``extra`` holds the method's side inputs (`METHOD_INPUTS`) and options (e.g.
    ``target_prior=`` for "prior", ``split=`` for all). The result applies to any score matrix
    over the same classes: ``fit(m, test).apply(test)`` is transductive,
    ``fit(m, validation).apply(test)`` inductive.
    """
    fit_function = _lookup(method)
    missing = [name for name in METHOD_INPUTS[method] if name not in extra]
    if missing:
        raise ValueError(f"calibration method {method!r} needs the keyword argument(s) {missing}")
    accepted = [
        name
        for name, parameter in inspect.signature(fit_function).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unexpected = sorted(set(extra) - set(accepted))
    if unexpected:
        raise ValueError(
            f"calibration method {method!r} does not take {unexpected}; it accepts {accepted}"
        )
    return fit_function(logprobs, **extra)


def _lookup(method: str) -> FitFunction:
    try:
        return METHODS[method]
    except KeyError:
        close = difflib.get_close_matches(method, list(METHODS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown calibration method {method!r}; known: {sorted(METHODS)}.{hint}"
        ) from None
