"""Multinomial logistic regression on frozen features, and min-max scaling, as Zheng et al. (2023).

Source: their ``main_train_offline.py`` (``--model lr_bgfs --C 1 --minmax``): scikit-learn's
``LogisticRegression`` with L2 penalty ``C = 1``, the L-BFGS solver and ``max_iter=1000``, on
features scaled to [0, 1] per dimension by a ``MinMaxScaler`` fitted on the training rows only
(the test rows use the training minimum and range); both of their probes (``lr_bgfs`` and
``nb_diag``) ran on the scaled features. scikit-learn fits two classes as one binary logistic
regression and more as one softmax (its default, and theirs).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class Probe(Protocol):
    """A classifier on (N, d) features with labels ``0 .. K-1``."""

    num_classes: int

    def fit(self, features: npt.ArrayLike, labels: npt.ArrayLike) -> Any: ...

    def log_posteriors(self, features: npt.ArrayLike) -> np.ndarray: ...


class LogisticProbe:
    """``LogisticRegression(C=1, solver="lbfgs", max_iter=1000)`` with (N, K) log-posteriors."""

    def __init__(self, num_classes: int, *, C: float = 1.0, max_iter: int = 1000) -> None:
        from sklearn.linear_model import LogisticRegression

        self.num_classes = num_classes
        self.model = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter)

    def fit(self, features: npt.ArrayLike, labels: npt.ArrayLike) -> LogisticProbe:
        y = np.asarray(labels)
        absent = sorted(set(range(self.num_classes)) - set(y.tolist()))
        if absent:
            raise ValueError(f"class(es) {absent} have no training row; every class needs one")
        self.model.fit(np.asarray(features, dtype=np.float64), y)
        return self

    def log_posteriors(self, features: npt.ArrayLike) -> np.ndarray:
        """(N, K) ``log p(k | x)``, columns in class order."""
        out = np.empty((np.asarray(features).shape[0], self.num_classes))
        out[:, self.model.classes_] = self.model.predict_log_proba(np.asarray(features, dtype=np.float64))
        return out

    def predict(self, features: npt.ArrayLike) -> np.ndarray:
        return self.log_posteriors(features).argmax(axis=1)


class MinMaxScaled:
    """A probe on features min-max scaled with the scaler fitted on its training features."""

    def __init__(self, probe: Any) -> None:
        from sklearn.preprocessing import MinMaxScaler

        self.probe = probe
        self.num_classes = probe.num_classes
        self.scaler = MinMaxScaler()

    def fit(self, features: npt.ArrayLike, labels: npt.ArrayLike) -> MinMaxScaled:
        self.probe.fit(self.scaler.fit_transform(np.asarray(features, dtype=np.float64)), labels)
        return self

    def log_posteriors(self, features: npt.ArrayLike) -> np.ndarray:
        return self.probe.log_posteriors(self.scaler.transform(np.asarray(features, dtype=np.float64)))

    def predict(self, features: npt.ArrayLike) -> np.ndarray:
        return self.log_posteriors(features).argmax(axis=1)
