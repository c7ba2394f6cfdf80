"""Input checks and stable log-space primitives shared by the calibration modules.

Every public function converts its inputs here, so a bad matrix fails at the boundary with a
message that names the argument and the first offending entry, not deep inside a solver.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def as_scores(values: npt.ArrayLike, name: str, *, ndim: int = 2) -> FloatArray:
    """``values`` as a finite float64 array of the given rank (2: rows x classes, 1: classes)."""
    array = np.asarray(values)
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if array.ndim != ndim:
        expected = "(rows, classes)" if ndim == 2 else "(classes,)"
        raise ValueError(f"{name} must have shape {expected}, got shape {array.shape}")
    if array.shape[-1] == 0 or (ndim == 2 and array.shape[0] == 0):
        raise ValueError(f"{name} is empty (shape {array.shape})")
    _check_finite(array, name)
    return array


def _check_finite(array: FloatArray, name: str) -> None:
    bad = ~np.isfinite(array)
    if not bad.any():
        return
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    n_nan = int(np.isnan(array).sum())
    n_inf = int(bad.sum()) - n_nan
    where = ", ".join(str(i) for i in first)
    raise ValueError(
        f"{name} must be finite but contains {n_nan} NaN and {n_inf} infinite value(s); "
        f"the first is {name}[{where}] = {array[first]}"
    )


def as_labels(labels: npt.ArrayLike, num_rows: int, num_classes: int) -> IntArray:
    """Gold label ids as an int64 vector of length ``num_rows`` with values in [0, num_classes)."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != num_rows:
        raise ValueError(
            f"labels must have shape ({num_rows},) to match the scores, got {array.shape}"
        )
    if array.dtype.kind == "b" or array.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class ids, got dtype {array.dtype}")
    out_of_range = (array < 0) | (array >= num_classes)
    if out_of_range.any():
        index = int(np.argmax(out_of_range))
        raise ValueError(
            f"labels[{index}] = {array[index]} is not a class id in [0, {num_classes})"
        )
    return array.astype(np.int64, copy=False)


def as_distribution(values: npt.ArrayLike, num_classes: int, name: str) -> FloatArray:
    """A strictly positive probability vector over ``num_classes`` classes, renormalised exactly.

    It must already sum to 1 within 1e-6: a prior that does not is more likely a mistake
    (counts, log-probabilities) than rounding, so it is refused rather than silently rescaled.
    """
    array = as_scores(values, name, ndim=1)
    if array.shape[0] != num_classes:
        raise ValueError(
            f"{name} has {array.shape[0]} entries but the scores have {num_classes} classes"
        )
    if (array <= 0).any():
        index = int(np.argmax(array <= 0))
        raise ValueError(f"{name} must be strictly positive, but {name}[{index}] = {array[index]}")
    total = float(array.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, but it sums to {total!r}")
    return array / total


def logsumexp(values: FloatArray, axis: int) -> FloatArray:
    """log(sum(exp(values))) along ``axis``, computed without overflow or underflow."""
    peak = values.max(axis=axis, keepdims=True)
    summed = np.log(np.exp(values - peak).sum(axis=axis, keepdims=True)) + peak
    return np.squeeze(summed, axis=axis)


def log_softmax(values: FloatArray) -> FloatArray:
    """values - logsumexp(values) over the last axis (classes)."""
    peak = values.max(axis=-1, keepdims=True)
    shifted = values - peak
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def centred(offsets: FloatArray) -> FloatArray:
    """Offsets shifted to mean zero: they are defined only up to a constant, and this pins it."""
    return offsets - offsets.mean()


def check_budget(tol: float, max_iter: int, tol_name: str, max_iter_name: str) -> None:
    """Refuse a tolerance or iteration cap with which an iterative fit could not run."""
    if not tol > 0:
        raise ValueError(f"{tol_name} must be positive, got {tol}")
    if max_iter < 1:
        raise ValueError(f"{max_iter_name} must be at least 1, got {max_iter}")
