"""The shared representation: normalisation over classes and the fitted `Calibration`.

Every method here is a per-class additive offset on log-scores: calibrated
``log q(k|x) = log_softmax(s(x) + b)_k``, where ``s(x)`` is the (K,) row of label log-likelihoods
for document ``x`` and ``b`` the (K,) offsets. Adding a constant to ``b`` changes nothing after the
softmax, so offsets are stored centred (mean zero). Because normalising a row only subtracts a
constant from it, ``apply`` gives the same result on raw log-likelihoods and on normalised
log-probabilities.

Fitting and applying are separate steps, which gives both uses:
- transductive: ``fit_*(test_scores).apply(test_scores)`` (the evaluated set, unlabelled);
- inductive: ``fit_*(validation_scores).apply(test_scores)`` (another split's unlabelled scores).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from genclf_harness.calibration._arrays import FloatArray, as_scores, centred, log_softmax

ParamValue = float | int | str | bool | None | tuple[float, ...]
"""A method parameter or fit diagnostic; all are JSON-serialisable (tuples become lists)."""

FitSource = Literal["documents", "content_free_inputs", "domain_premise", "unconditional"]


class ConvergenceError(ValueError):
    """An iterative fit stopped at its iteration cap before reaching its tolerance."""


def normalize(logprobs: npt.ArrayLike) -> FloatArray:
    """Log-probabilities over classes: ``log p(k|x) = s_k(x) - logsumexp_j s_j(x)``.

    ``logprobs`` has shape (N, K) (or (K,) for one document); the result has the same shape and
    each row's exponentials sum to 1. Computed with the max subtracted first, so rows of very
    negative log-likelihoods (long label continuations) lose no precision.
    """
    array = np.asarray(logprobs)
    scores = as_scores(array, "logprobs", ndim=2 if array.ndim != 1 else 1)
    return log_softmax(scores)


@dataclass(frozen=True)
class FitInfo:
    """What a calibration was fitted on, for reproducibility manifests."""

    source: FitSource
    """The kind of scores the offsets were computed from: unlabelled ``documents`` (prior, prior_em,
    bc), ``content_free_inputs`` (cc), the ``domain_premise`` (dcpmi) or the labels'
    ``unconditional`` likelihoods (pmi)."""
    num_rows: int
    """How many score rows went into the fit (documents, content-free inputs, or 1)."""
    num_classes: int
    """K, the number of classes."""
    split: str | None = None
    """The caller's name for the data fitted on (e.g. ``"test"`` when transductive,
    ``"validation"`` when inductive); None when not given."""

    def __post_init__(self) -> None:
        if self.source not in get_args(FitSource):
            raise ValueError(
                f"unknown fit source {self.source!r}; expected one of {get_args(FitSource)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "num_rows": self.num_rows,
            "num_classes": self.num_classes,
            "split": self.split,
        }


@dataclass(frozen=True, eq=False)
class Calibration:
    """A fitted calibration: per-class log-offsets ``b`` applied as ``log_softmax(s / T + b)``.

    Build one with a ``fit_*`` function or `genclf_harness.calibration.fit`; ``offsets`` is a
    read-only (K,) array with mean zero; ``temperature`` ``T`` is 1 for every method but the
    label-shift ones, which start from bias-corrected temperature scaling.
    """

    method: str
    """The registry name of the method ("prior", "prior_em", "bc", "cc", "dcpmi", "pmi")."""
    offsets: FloatArray
    """(K,) additive log-offsets, centred to mean zero."""
    fitted_on: FitInfo
    """What the offsets were fitted on."""
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    """Method parameters (e.g. the target prior) and fit diagnostics (iterations, residual)."""
    temperature: float = 1.0
    """``T`` > 0: the normalised scores are divided by it before the offsets are added."""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"calibration {self.method!r}: temperature must be a positive number, "
                             f"got {self.temperature}")
        offsets = as_scores(self.offsets, f"offsets of calibration {self.method!r}", ndim=1)
        if offsets.shape[0] != self.fitted_on.num_classes:
            raise ValueError(
                f"calibration {self.method!r} has {offsets.shape[0]} offsets but was fitted on "
                f"{self.fitted_on.num_classes} classes"
            )
        offsets = centred(offsets)
        offsets.flags.writeable = False
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "params", dict(self.params))

    @property
    def num_classes(self) -> int:
        return int(self.offsets.shape[0])

    def apply(self, logprobs: npt.ArrayLike) -> FloatArray:
        """Calibrated log-probabilities ``log_softmax(logprobs + offsets)``, shaped as the input.

        ``logprobs`` is (N, K) (or (K,)), raw label log-likelihoods or already normalised: the
        result is the same. It may be the matrix the calibration was fitted on (transductive) or
        any other with the same K classes in the same order (inductive).
        """
        array = np.asarray(logprobs)
        scores = as_scores(array, "logprobs", ndim=2 if array.ndim != 1 else 1)
        if scores.shape[-1] != self.num_classes:
            raise ValueError(
                f"logprobs has {scores.shape[-1]} classes but calibration {self.method!r} "
                f"was fitted on {self.num_classes}"
            )
        if self.temperature != 1.0:
            scores = log_softmax(scores) / self.temperature
        return log_softmax(scores + self.offsets)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description from which `from_dict` rebuilds an equal calibration."""
        return {
            "method": self.method,
            "offsets": [float(x) for x in self.offsets],
            "temperature": float(self.temperature),
            "fitted_on": self.fitted_on.to_dict(),
            "params": {key: _jsonable(value) for key, value in self.params.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """The inverse of `to_dict` (lists in ``params`` come back as tuples)."""
        missing = {"method", "offsets", "fitted_on"} - set(data)
        if missing:
            raise ValueError(f"calibration dict lacks the field(s) {sorted(missing)}")
        params = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in dict(data.get("params", {})).items()
        }
        return cls(
            method=str(data["method"]),
            offsets=np.asarray(data["offsets"], dtype=np.float64),
            fitted_on=FitInfo(**data["fitted_on"]),
            params=params,
            temperature=float(data.get("temperature", 1.0)),
        )


def _jsonable(value: ParamValue) -> float | int | str | bool | None | list[float]:
    return list(value) if isinstance(value, tuple) else value


def as_param(vector: FloatArray) -> tuple[float, ...]:
    """A float vector as an immutable, JSON-ready parameter value."""
    return tuple(float(x) for x in vector)
