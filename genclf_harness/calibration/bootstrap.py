"""Bootstrap standard errors of corpus-level metrics, with the calibration refitted in each resample.

A calibrated metric depends on the documents twice: through the scores it is computed on and
through the calibration fitted on them (prior matching, batch calibration ... are fitted on the
evaluated documents). Resampling the documents and refitting inside each resample counts both;
reusing one fit for every resample would count only the first and understate the error.

For ``B`` resamples ``I_b`` of the ``N`` document indices drawn with replacement (numpy's PCG64
seeded with ``seed``), the standard error is the sample standard deviation (``ddof=1``) of
``statistic(I_b)`` over ``b`` (Efron & Tibshirani 1993, ch. 6). ``statistic`` receives the index
array and does its own refit, so any method and metric fit this one routine.

:func:`paired_bootstrap` gives the interval of a difference (calibrated minus raw) over the same
resamples, which is far tighter than two separate intervals because both metrics move together.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DEFAULT_SEED = 1234
"""lm-eval's bootstrap seed."""


def resample_indices(n: int, iters: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(iters, n) document indices drawn with replacement."""
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 documents, got {n}")
    if iters < 2:
        raise ValueError(f"a bootstrap needs at least 2 resamples, got {iters}")
    return np.random.default_rng(seed).integers(0, n, size=(iters, n))


def bootstrap_values(statistic: Callable[[np.ndarray], float], n: int, iters: int,
                     seed: int = DEFAULT_SEED) -> np.ndarray:
    """``statistic`` on each of ``iters`` resamples of ``n`` documents."""
    return np.array([statistic(indices) for indices in resample_indices(n, iters, seed)], dtype=np.float64)


def bootstrap_stderr(statistic: Callable[[np.ndarray], float], n: int, iters: int,
                     seed: int = DEFAULT_SEED) -> float:
    """Standard error of ``statistic`` over ``n`` documents from ``iters`` seeded resamples."""
    return float(np.std(bootstrap_values(statistic, n, iters, seed), ddof=1))


def mean_stderr(values: np.ndarray, iters: int, seed: int = DEFAULT_SEED) -> float:
    """Bootstrap standard error of a per-document mean (accuracy of fixed predictions), vectorised:
    the same resamples as :func:`bootstrap_stderr` gives with ``statistic = values[I].mean()``."""
    values = np.asarray(values, dtype=np.float64)
    indices = resample_indices(len(values), iters, seed)
    return float(np.std(values[indices].mean(axis=1), ddof=1))


def paired_bootstrap(
    first: Callable[[np.ndarray], float],
    second: Callable[[np.ndarray], float],
    n: int,
    iters: int,
    *,
    level: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float, float]:
    """(stderr, low, high) of ``first − second`` over the same resamples (percentile interval)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    indices = resample_indices(n, iters, seed)
    differences = np.array([first(i) - second(i) for i in indices], dtype=np.float64)
    tail = (1 - level) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return float(np.std(differences, ddof=1)), float(low), float(high)
