"""Gaussian naive Bayes with one diagonal variance shared by all classes: a linear classifier.

Source: Zheng, Wu, Bao, Cao, Li & Zhu (ICML 2023), "Revisiting Discriminative vs. Generative
Classifiers: Theory and Implications", the naive Bayes of their analysis and code
(github.com/ML-GSAI/Revisiting-Dis-vs-Gen-Classifiers, ``models/gaussnb.py``). With classes
``k = 1..K``, ``n_k`` training rows of class ``k`` out of ``N``:

- class means ``mu_k = (1/n_k) sum_{i: y_i=k} x_i`` and the prior ``pi_k = n_k / N``;
- the pooled diagonal variance ``s2_j = sum_k pi_k var_kj + eps``, where ``var_kj`` is the
  (biased, ``ddof=0``) variance of feature ``j`` within class ``k``, i.e.
  ``s2_j = (1/N) sum_i (x_ij - mu_{y_i j})^2 + eps`` (``eps = 1e-9`` as theirs);
- the rule ``argmax_k log pi_k - (1/2) sum_j (x_j - mu_kj)^2 / s2_j``, which is linear in ``x``:
  ``w_k = mu_k / s2``, ``b_k = log pi_k - (1/2) sum_j mu_kj^2 / s2_j`` (the ``x^2`` term is the same
  for every class), and ``log p(k | x) = log_softmax_k(w_k . x + b_k)``.

This is not scikit-learn's ``GaussianNB``, whose variances are per class (a quadratic rule).
`partial_fit` streams: the per-class counts, means and sums of squared deviations ``M2`` are
merged batch by batch (Chan, Golub & LeVeque 1979:
``M2 = M2_a + M2_b + delta^2 n_a n_b / n``), so any split of the rows gives the one-shot fit.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

VAR_SMOOTHING = 1e-9


class PooledGaussianNB:
    """Naive Bayes of Zheng et al. (2023): class means, one shared diagonal variance (module doc)."""

    def __init__(self, num_classes: int, *, var_smoothing: float = VAR_SMOOTHING) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, not {num_classes}")
        if var_smoothing < 0:
            raise ValueError(f"var_smoothing must be non-negative, not {var_smoothing}")
        self.num_classes = num_classes
        self.var_smoothing = var_smoothing
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.means: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def fit(self, features: npt.ArrayLike, labels: npt.ArrayLike) -> PooledGaussianNB:
        """Fit from scratch on all rows at once."""
        self.counts = np.zeros(self.num_classes, dtype=np.int64)
        self.means = self.m2 = None
        return self.partial_fit(features, labels)

    def partial_fit(self, features: npt.ArrayLike, labels: npt.ArrayLike) -> PooledGaussianNB:
        """Add a batch of rows (a batch may lack some classes)."""
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"features must be (N, d) and labels (N,), got {x.shape} and {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes or not np.all(y == np.round(y))):
            raise ValueError(f"labels must be integers in [0, {self.num_classes})")
        if self.means is None:
            self.means = np.zeros((self.num_classes, x.shape[1]))
            self.m2 = np.zeros((self.num_classes, x.shape[1]))
        elif x.shape[1] != self.means.shape[1]:
            raise ValueError(f"features have {x.shape[1]} dimensions, the fit so far {self.means.shape[1]}")
        assert self.m2 is not None
        for k in np.unique(y).astype(int):
            batch = x[y == k]
            n_b = batch.shape[0]
            mean_b = batch.mean(axis=0)
            m2_b = ((batch - mean_b) ** 2).sum(axis=0)
            n_a = int(self.counts[k])
            n = n_a + n_b
            delta = mean_b - self.means[k]
            self.means[k] = self.means[k] + delta * (n_b / n)
            self.m2[k] = self.m2[k] + m2_b + delta**2 * (n_a * n_b / n)
            self.counts[k] = n
        return self

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self.means is None or self.m2 is None:
            raise ValueError("the naive Bayes is not fitted")
        absent = np.flatnonzero(self.counts == 0)
        if absent.size:
            raise ValueError(f"class(es) {absent.tolist()} have no training row; every class needs one")
        return self.means, self.m2

    @property
    def prior(self) -> np.ndarray:
        """``pi_k = n_k / N``."""
        return self.counts / self.counts.sum()

    @property
    def variance(self) -> np.ndarray:
        """The pooled diagonal variance ``s2`` (d,): within-class sum of squares / N, plus eps."""
        _, m2 = self._fitted()
        return m2.sum(axis=0) / self.counts.sum() + self.var_smoothing

    @property
    def coef_(self) -> np.ndarray:
        """(K, d) ``w_k = mu_k / s2``."""
        means, _ = self._fitted()
        return means / self.variance

    @property
    def intercept_(self) -> np.ndarray:
        """(K,) ``b_k = log pi_k - (1/2) sum_j mu_kj^2 / s2_j``."""
        means, _ = self._fitted()
        return np.log(self.prior) - 0.5 * np.sum(means**2 / self.variance, axis=1)

    def decision_function(self, features: npt.ArrayLike) -> np.ndarray:
        """(N, K) ``w_k . x + b_k``: the log joint up to a term shared by all classes."""
        x = np.asarray(features, dtype=np.float64)
        return x @ self.coef_.T + self.intercept_

    def log_posteriors(self, features: npt.ArrayLike) -> np.ndarray:
        """(N, K) ``log p(k | x)``."""
        scores = self.decision_function(features)
        top = scores.max(axis=1, keepdims=True)
        return scores - top - np.log(np.exp(scores - top).sum(axis=1, keepdims=True))

    def predict(self, features: npt.ArrayLike) -> np.ndarray:
        return self.decision_function(features).argmax(axis=1)
