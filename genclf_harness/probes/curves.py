"""Learning curves of the two probes, and their log-posteriors through genclf's metrics.

As Zheng et al. (2023, ``main_train_offline.py``): for each training-set size ``m`` and repeat,
``m`` training rows are drawn at random (drawn again while a class is missing, so every class has
a row), the features are min-max scaled with a scaler fitted on those rows
(`genclf_harness.probes.logistic.MinMaxScaled`), each probe is fitted and scored on the whole test
split. ``full`` is the whole training split (one repeat: every repeat would draw the same rows).

Each fit's (N, K) test log-posteriors go through `genclf_harness.calibration`: accuracy, macro-F1,
ECE (15 equal-width bins), NLL, accuracy after prior matching (``fit("prior", ...)``: transductive,
no labels) and split-conformal LAC sets (`genclf_harness.calibration.conformal`) at ``alpha = 0.1``
cross-fitted on the test rows (coverage and mean set size; left out below 22 test rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from genclf_harness.probes.logistic import LogisticProbe, MinMaxScaled
from genclf_harness.probes.naive_bayes import PooledGaussianNB

PROBES = ("nb", "lr")
CONFORMAL_ALPHA = 0.1
_MAX_DRAWS = 1000


@dataclass(frozen=True)
class CurvePoint:
    """One probe fitted on one draw of ``size`` training rows, measured on the test rows."""

    probe: str
    size: int
    repeat: int
    acc: float
    macro_f1: float
    ece: float
    nll: float
    acc_prior: float
    coverage: float | None = None
    mean_set_size: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_probe(name: str, num_classes: int) -> MinMaxScaled:
    """``nb`` (`PooledGaussianNB`) or ``lr`` (`LogisticProbe`), on min-max scaled features."""
    if name == "nb":
        return MinMaxScaled(PooledGaussianNB(num_classes))
    if name == "lr":
        return MinMaxScaled(LogisticProbe(num_classes))
    raise ValueError(f"unknown probe {name!r}; known: {', '.join(PROBES)}")


def parse_sizes(text: str, train_rows: int) -> list[int]:
    """``"20,50,full"`` -> ``[20, 50, train_rows]``; sizes beyond the training split are left out."""
    sizes = []
    for token in (t.strip() for t in text.split(",") if t.strip()):
        size = train_rows if token == "full" else int(token)
        if size < 1:
            raise ValueError(f"sizes: {token!r} is not a positive size")
        if size <= train_rows:
            sizes.append(size)
    return sorted(set(sizes))


def draw_subset(labels: np.ndarray, size: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` row indices without replacement in which every class occurs."""
    if size < num_classes:
        raise ValueError(f"{size} rows cannot hold all {num_classes} classes")
    if size >= labels.shape[0]:
        return np.arange(labels.shape[0])
    for _ in range(_MAX_DRAWS):
        chosen = rng.choice(labels.shape[0], size=size, replace=False)
        if np.unique(labels[chosen]).shape[0] == num_classes:
            return np.sort(chosen)
    raise ValueError(f"no draw of {size} rows held every class in {_MAX_DRAWS} tries")


def probe_metrics(log_posteriors: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict[str, float | None]:
    """genclf's metrics of (N, K) log-posteriors (module doc)."""
    from genclf_harness import calibration as cal
    from genclf_harness.calibration import conformal

    prior = cal.fit("prior", log_posteriors).apply(log_posteriors)
    figures: dict[str, float | None] = {
        "acc": cal.accuracy(log_posteriors, labels), "macro_f1": cal.macro_f1(log_posteriors, labels),
        "ece": cal.expected_calibration_error(log_posteriors, labels),
        "nll": cal.negative_log_likelihood(log_posteriors, labels), "acc_prior": cal.accuracy(prior, labels),
        "coverage": None, "mean_set_size": None,
    }
    if labels.shape[0] >= 2 * (int(np.ceil(1 / CONFORMAL_ALPHA)) + 1):
        sets = conformal.cross_fit_sets(log_posteriors, labels, score="lac", alpha=CONFORMAL_ALPHA, seed=seed)
        summary = conformal.set_metrics(sets.sets, labels)
        figures.update(coverage=summary.coverage, mean_set_size=summary.mean_size)
    return figures


def learning_curve(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, num_classes: int,
                   sizes: Sequence[int], *, repeats: int = 5, seed: int = 0,
                   probes: Sequence[str] = PROBES) -> list[CurvePoint]:
    """Every probe at every size, ``repeats`` draws each (seeded by ``[seed, size, repeat]``)."""
    train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    points = []
    for size in sizes:
        for repeat in range(1 if size >= train_y.shape[0] else repeats):
            chosen = draw_subset(train_y, size, num_classes, np.random.default_rng([seed, size, repeat]))
            for name in probes:
                probe = make_probe(name, num_classes).fit(train_x[chosen], train_y[chosen])
                figures = probe_metrics(probe.log_posteriors(test_x), test_y, seed=seed)
                points.append(CurvePoint(name, size, repeat, **figures))  # type: ignore[arg-type]
    return points


def summarize(points: Sequence[CurvePoint], metric: str = "acc") -> dict[tuple[str, int], tuple[float, float, int]]:
    """``{(probe, size): (mean, standard deviation, repeats)}`` of ``metric``."""
    groups: dict[tuple[str, int], list[float]] = {}
    for point in points:
        groups.setdefault((point.probe, point.size), []).append(float(getattr(point, metric)))
    return {key: (float(np.mean(v)), float(np.std(v)), len(v)) for key, v in groups.items()}


def crossing_point(summary: dict[tuple[str, int], tuple[float, float, int]]) -> tuple[int | None, str]:
    """The smallest size from which logistic regression's mean accuracy is at least naive Bayes'
    (at that size and every larger one), and a note: NB ahead then crossed, LR never catches up,
    or LR ahead from the smallest size."""
    sizes = sorted({size for _, size in summary})
    both = [s for s in sizes if ("nb", s) in summary and ("lr", s) in summary]
    if not both:
        return None, "no size with both probes"
    lr_ahead = [summary["lr", s][0] >= summary["nb", s][0] for s in both]
    if all(lr_ahead):
        return None, "LR at least as accurate from the smallest size"
    if not lr_ahead[-1]:
        return None, "NB ahead at the largest size"
    last_behind = max(i for i, ahead in enumerate(lr_ahead) if not ahead)
    return both[last_behind + 1], "NB ahead below, LR from here on"
