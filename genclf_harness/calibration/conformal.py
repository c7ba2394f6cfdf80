"""Split-conformal label sets: every label whose nonconformity is at most a calibrated threshold.

With labelled calibration documents ``(x_i, y_i)``, i = 1..n, a nonconformity score ``E(x, y)``
and ``k = ceil((n + 1)(1 - alpha))``, the threshold ``tau`` is the k-th smallest calibration score
``E(x_i, y_i)`` and the set of a new document is ``C(x) = {y : E(x, y) <= tau}``. If the test
document is exchangeable with the calibration ones, ``P(y in C(x)) >= 1 - alpha`` (Vovk, Gammerman
& Shafer 2005; Angelopoulos & Bates 2021, "A Gentle Introduction to Conformal Prediction").

Scores (``p`` = softmax over classes of the (N, K) label log-likelihoods; labels ranked by
decreasing ``p``, ties by lower class id; ``rho(x, y)`` the mass ranked strictly above ``y``,
``o(x, y)`` its 1-based rank, ``u`` ~ U(0, 1) one draw per document):

- ``"lac"``: ``E = 1 - p_y`` (Sadinle, Lei & Wasserman 2019, "Least Ambiguous Set-Valued
  Classifiers with Bounded Error Levels").
- ``"aps"``: ``E = rho + p_y`` (the sorted mass up to and including ``y``); randomised,
  ``E = rho + u p_y`` (Romano, Sesia & Candès 2020, "Classification with Valid and Adaptive
  Coverage").
- ``"raps"``: the APS score plus ``lam * max(0, o - k_reg)`` (Angelopoulos, Bates, Malik & Jordan
  2021, "Uncertainty Sets for Image Classifiers using Conformal Prediction").

Differences from MAPIE 1.x (``SplitConformalClassifier``), the library the tests compare with:

- Threshold: MAPIE 1.6 takes ``np.quantile(E, ceil((n + 1)(1 - alpha)) / n, method="lower")``,
  the same k-th smallest score as here. MAPIE 1.0-1.5 took ``np.quantile(E, (n + 1)(1 - alpha) / n,
  method="higher")``, the order statistic at 0-based index ``ceil((n + 1)(1 - alpha)(n - 1) / n)``:
  index ``k - 1`` or ``k``, one score higher (e.g. n = 19, alpha = 0.5); ``quantile_rule=
  "mapie_legacy"`` reproduces it. (``"higher"`` at level ``k / n`` would also pick index ``k``
  whenever ``k < n``: the level must be read with ``"lower"`` or ``"inverted_cdf"``.) MAPIE also
  refuses ``n < 1/alpha`` and ``n < 1/(1 - alpha)``; this module refuses only
  ``alpha < 1/(n + 1)``, where the k-th score does not exist.
- Inclusion: MAPIE keeps a label when ``E <= tau + 1e-8``; here ``E <= tau`` exactly.
- APS calibration: MAPIE always randomises the calibration scores (``rho + (1 - U) p_y`` with
  numpy's legacy ``RandomState``), whatever ``include_last_label`` says; here ``randomized``
  chooses for calibration and sets alike. MAPIE's ``include_last_label=True`` set (the smallest
  prefix of ranked labels whose score reaches ``tau``, never empty) is ``include_last=True``;
  its ``include_last_label=False`` set is the default set here plus, always, the top label; its
  ``"randomized"`` set equals the randomised set here for ``u = 1 - U``.
- RAPS: MAPIE tunes ``lam`` and ``k_reg`` on a held-out share of the calibration documents; here
  they are given, and every calibration document goes into the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from genclf_harness.calibration._arrays import (
    FloatArray,
    IntArray,
    as_labels,
    as_scores,
    log_softmax,
)
from genclf_harness.calibration.metrics import _checked

Score = Literal["lac", "aps", "raps"]
QuantileRule = Literal["conformal", "mapie_legacy"]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_RAPS_LAM = 0.01
"""RAPS penalty per rank beyond ``k_reg`` when none is given (the paper's smallest grid value)."""
DEFAULT_RAPS_K_REG = 1
"""RAPS ranks free of penalty when none is given: with few labels only the top one is free."""
_INTEGER_SLACK = 1e-9
"""``(n + 1)(1 - alpha)`` within this above an integer counts as that integer, so a decimal alpha
such as 0.3 is not pushed one order statistic up by its binary rounding."""


def conformal_rank(n: int, alpha: float) -> int:
    """``k = ceil((n + 1)(1 - alpha))``: the 1-based rank of the calibration score taken as threshold.

    Raises ValueError when ``alpha < 1/(n + 1)`` (then ``k > n``: the threshold would be infinite
    and every set would hold every label) or when alpha is not in (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if n < 1:
        raise ValueError(f"conformal calibration needs at least one calibration document, got n={n}")
    k = math.ceil((n + 1) * (1.0 - alpha) - _INTEGER_SLACK)
    if k > n:
        raise ValueError(
            f"alpha={alpha} is below 1/(n+1) = {1.0 / (n + 1):.4g} for n={n} calibration documents: "
            f"the threshold would be infinite (every label in every set); raise alpha to at least "
            f"1/(n+1) or use at least {math.ceil(1.0 / alpha) - 1} calibration documents"
        )
    return max(k, 1)


def conformal_quantile(scores: npt.ArrayLike, alpha: float, *, rule: QuantileRule = "conformal") -> float:
    """The threshold ``tau`` from n calibration nonconformity scores.

    ``rule="conformal"``: the k-th smallest score, ``k = ceil((n + 1)(1 - alpha))`` (the
    ``ceil((n+1)(1-alpha))/n`` empirical quantile, i.e. the inverse of the empirical CDF; MAPIE
    >= 1.6). ``rule="mapie_legacy"``: ``np.quantile(scores, (n + 1)(1 - alpha) / n,
    method="higher")``, MAPIE 1.0-1.5's ``_compute_classification_quantile``, which is sometimes
    the (k+1)-th smallest.
    NaN or infinite scores are refused, naming the first offending row.
    """
    values = as_scores(scores, "nonconformity scores", ndim=1)
    n = values.shape[0]
    k = conformal_rank(n, alpha)
    if rule == "conformal":
        return float(np.partition(values, k - 1)[k - 1])
    if rule == "mapie_legacy":
        return float(np.quantile(values, ((n + 1) * (1 - alpha)) / n, method="higher"))
    raise ValueError(f"unknown quantile rule {rule!r}; expected one of {get_args(QuantileRule)}")


def label_scores(
    logprobs: npt.ArrayLike,
    *,
    score: Score,
    u: npt.ArrayLike | None = None,
    lam: float = 0.0,
    k_reg: int = 0,
) -> FloatArray:
    """The (N, K) nonconformity ``E(x_n, k)`` of every label of every document (formulas above).

    ``u`` is None for the non-randomised scores, else one uniform draw per row (APS and RAPS only).
    """
    _check_score(score)
    probs = np.exp(log_softmax(as_scores(logprobs, "logprobs")))
    if score == "lac":
        if u is not None:
            raise ValueError("the LAC score has no randomised form; pass u=None")
        return 1.0 - probs
    order = np.argsort(-probs, axis=1, kind="stable")
    ranked = np.take_along_axis(probs, order, axis=1)
    if u is None:
        ranked_scores = np.cumsum(ranked, axis=1)
        # The whole mass is 1 exactly: a float sum one ulp above or below would make the last label's
        # membership (and a threshold at 1) depend on rounding, e.g. on which process scored the rows.
        ranked_scores[:, -1] = 1.0
        np.minimum(ranked_scores, 1.0, out=ranked_scores)
    else:
        draws = np.asarray(u, dtype=np.float64)
        if draws.shape != (probs.shape[0],):
            raise ValueError(f"u must hold one draw per row, shape ({probs.shape[0]},), got {draws.shape}")
        above = np.zeros_like(ranked)
        above[:, 1:] = np.cumsum(ranked, axis=1)[:, :-1]
        ranked_scores = above + draws[:, None] * ranked
    if score == "raps":
        ranks = np.arange(1, probs.shape[1] + 1)
        ranked_scores = ranked_scores + lam * np.maximum(0, ranks - k_reg)
    scores = np.empty_like(ranked_scores)
    np.put_along_axis(scores, order, ranked_scores, axis=1)
    return scores


@dataclass(frozen=True)
class ConformalPredictor:
    """A fitted split-conformal set predictor; build it with `fit_conformal`.

    ``sets(logprobs)`` is ``E(x, y) <= threshold`` per label, with the randomised draws (if any)
    taken from ``numpy.random.default_rng([seed, 1])`` (the calibration draws come from
    ``[seed, 0]``, so test and calibration draws are independent and every call is reproducible).
    """

    score: Score
    """"lac", "aps" or "raps"."""
    alpha: float
    """The miscoverage level: sets hold the gold label with probability at least 1 - alpha."""
    n: int
    """How many calibration documents the threshold came from."""
    threshold: float
    """``tau``: a label is in the set when its nonconformity is at most this."""
    randomized: bool = False
    """APS/RAPS only: the score uses ``u p_y`` for the label itself instead of ``p_y``."""
    include_last: bool = False
    """APS/RAPS without randomisation only: also keep the first ranked label whose score exceeds
    ``tau`` (Romano et al.'s non-randomised set; MAPIE's ``include_last_label=True``); sets are then
    never empty and coverage is conservative."""
    lam: float = 0.0
    """RAPS penalty per rank beyond ``k_reg``."""
    k_reg: int = 0
    """RAPS ranks free of penalty."""
    seed: int = 0
    """Seed of the randomised draws (unused without randomisation)."""
    quantile_rule: QuantileRule = "conformal"
    """How the threshold was taken from the calibration scores (see `conformal_quantile`)."""

    def __post_init__(self) -> None:
        _check_score(self.score)
        conformal_rank(self.n, self.alpha)
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, got {self.threshold}")
        if self.score == "lac" and (self.randomized or self.include_last):
            raise ValueError("the LAC score takes neither randomized nor include_last")
        if self.randomized and self.include_last:
            raise ValueError("include_last applies to non-randomised APS/RAPS sets only")
        if self.score != "raps" and (self.lam != 0.0 or self.k_reg != 0):
            raise ValueError(f"lam and k_reg are RAPS parameters; score {self.score!r} takes neither")
        if not (math.isfinite(self.lam) and self.lam >= 0.0):
            raise ValueError(f"lam must be a non-negative number, got {self.lam}")
        if self.k_reg < 0:
            raise ValueError(f"k_reg must be non-negative, got {self.k_reg}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if self.quantile_rule not in get_args(QuantileRule):
            raise ValueError(f"unknown quantile rule {self.quantile_rule!r}; expected one of {get_args(QuantileRule)}")

    def sets(self, logprobs: npt.ArrayLike) -> BoolArray:
        """The (N, K) boolean matrix: entry (n, k) is True when label k is in document n's set."""
        scores = as_scores(logprobs, "logprobs")
        u = _draws(self.seed, 1, scores.shape[0]) if self.randomized else None
        label_nc = label_scores(scores, score=self.score, u=u, lam=self.lam, k_reg=self.k_reg)
        included = label_nc <= self.threshold
        if self.include_last:
            order = np.argsort(label_nc, axis=1, kind="stable")
            ranked = np.take_along_axis(label_nc, order, axis=1)
            keep = np.ones_like(ranked, dtype=bool)
            keep[:, 1:] = ranked[:, :-1] < self.threshold
            ranked_included = np.take_along_axis(included, order, axis=1) | keep
            np.put_along_axis(included, order, ranked_included, axis=1)
        return included

    def manifest(self) -> dict[str, Any]:
        """JSON-ready record of the fit: n, alpha, score, threshold and the score's parameters."""
        params: dict[str, Any] = {"quantile_rule": self.quantile_rule}
        if self.score != "lac":
            params.update(randomized=self.randomized, include_last=self.include_last)
            if self.randomized:
                params["seed"] = self.seed
        if self.score == "raps":
            params.update(lam=self.lam, k_reg=self.k_reg)
        return {"score": self.score, "alpha": self.alpha, "n": self.n, "threshold": self.threshold,
                "params": params}


def fit_conformal(
    cal_logprobs: npt.ArrayLike,
    cal_labels: npt.ArrayLike,
    *,
    score: Score,
    alpha: float,
    randomized: bool = False,
    include_last: bool = False,
    lam: float | None = None,
    k_reg: int | None = None,
    seed: int = 0,
    quantile_rule: QuantileRule = "conformal",
) -> ConformalPredictor:
    """Fit the threshold on labelled calibration documents: ``tau`` from ``E(x_i, y_i)``, i = 1..n.

    ``lam``/``k_reg`` default to `DEFAULT_RAPS_LAM`/`DEFAULT_RAPS_K_REG` for RAPS and must be
    left out otherwise. NaN or infinite log-likelihoods are refused, naming the row.
    """
    _check_score(score)
    scores, gold = _checked(cal_logprobs, cal_labels)
    if score == "raps":
        lam = DEFAULT_RAPS_LAM if lam is None else float(lam)
        k_reg = DEFAULT_RAPS_K_REG if k_reg is None else int(k_reg)
    elif lam is not None or k_reg is not None:
        raise ValueError(f"lam and k_reg are RAPS parameters; score {score!r} takes neither")
    else:
        lam, k_reg = 0.0, 0
    conformal_rank(scores.shape[0], alpha)  # refuse a hopeless alpha before any work
    if randomized and score == "lac":
        raise ValueError("the LAC score has no randomised form")
    u = _draws(seed, 0, scores.shape[0]) if randomized else None
    label_nc = label_scores(scores, score=score, u=u, lam=lam, k_reg=k_reg)
    calibration_nc = label_nc[np.arange(gold.shape[0]), gold]
    return ConformalPredictor(
        score=score, alpha=float(alpha), n=int(gold.shape[0]),
        threshold=conformal_quantile(calibration_nc, alpha, rule=quantile_rule),
        randomized=randomized, include_last=include_last, lam=lam, k_reg=k_reg, seed=seed,
        quantile_rule=quantile_rule,
    )


def conformal_sets(
    cal_logprobs: npt.ArrayLike,
    cal_labels: npt.ArrayLike,
    test_logprobs: npt.ArrayLike,
    *,
    score: Score,
    alpha: float,
    **options: Any,
) -> BoolArray:
    """``fit_conformal(cal_logprobs, cal_labels, ...).sets(test_logprobs)``; ``options`` go to the fit."""
    return fit_conformal(cal_logprobs, cal_labels, score=score, alpha=alpha, **options).sets(test_logprobs)


@dataclass(frozen=True)
class CrossFitSets:
    """Sets for every document, each from a threshold fitted on the other half of the documents."""

    sets: BoolArray
    """(N, K) label sets in the input's document order."""
    folds: IntArray
    """(N,) 0 or 1: document n's set comes from ``predictors[1 - folds[n]]``."""
    predictors: tuple[ConformalPredictor, ConformalPredictor]
    """``predictors[f]`` was fitted on the documents with ``folds == f``."""


def cross_fit_sets(
    logprobs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    score: Score,
    alpha: float,
    seed: int = 0,
    **options: Any,
) -> CrossFitSets:
    """Label sets for labelled documents without calibrating any document's set on itself.

    A seeded random permutation (``numpy.random.default_rng(seed)``) splits the documents into
    halves A and B (sizes ``ceil(N/2)`` and ``floor(N/2)``); a predictor fitted on A gives B's
    sets and one fitted on B gives A's. ``alpha`` must be at least ``1/(|B| + 1)``.
    ``options`` (``randomized``, ``lam`` ...) go to `fit_conformal`, with the same ``seed``.
    """
    scores, gold = _checked(logprobs, labels)
    n = gold.shape[0]
    if n < 2:
        raise ValueError(f"cross-fitting needs at least 2 documents, got {n}")
    permutation = np.random.default_rng(seed).permutation(n)
    folds = np.zeros(n, dtype=np.int64)
    folds[permutation[(n + 1) // 2:]] = 1
    predictors = tuple(
        fit_conformal(scores[folds == f], gold[folds == f], score=score, alpha=alpha, seed=seed, **options)
        for f in (0, 1)
    )
    sets = np.zeros(scores.shape, dtype=bool)
    for f in (0, 1):
        sets[folds == f] = predictors[1 - f].sets(scores[folds == f])
    return CrossFitSets(sets=sets, folds=folds, predictors=(predictors[0], predictors[1]))


@dataclass(frozen=True)
class SetMetrics:
    """Summary of label sets against gold labels."""

    coverage: float
    """Share of documents whose set holds the gold label."""
    mean_size: float
    """Mean number of labels per set."""
    singleton_share: float
    """Share of sets with exactly one label."""
    empty_share: float
    """Share of empty sets."""
    coverage_by_size: dict[int, tuple[int, float]]
    """Set size -> (documents with a set of that size, coverage among them), sizes that occur."""

    def to_dict(self) -> dict[str, Any]:
        return {"coverage": self.coverage, "mean_size": self.mean_size,
                "singleton_share": self.singleton_share, "empty_share": self.empty_share,
                "coverage_by_size": {str(size): [count, cov] for size, (count, cov) in self.coverage_by_size.items()}}


def set_metrics(sets: npt.ArrayLike, labels: npt.ArrayLike) -> SetMetrics:
    """Coverage, size and size-stratified coverage of (N, K) boolean label sets."""
    matrix = np.asarray(sets)
    if matrix.ndim != 2 or matrix.dtype != np.bool_ or 0 in matrix.shape:
        raise ValueError(f"sets must be a non-empty boolean (documents, classes) matrix, got "
                         f"dtype {matrix.dtype} and shape {matrix.shape}")
    gold = as_labels(labels, matrix.shape[0], matrix.shape[1])
    covered = matrix[np.arange(gold.shape[0]), gold]
    sizes = matrix.sum(axis=1)
    by_size = {
        int(size): (int(np.sum(sizes == size)), float(covered[sizes == size].mean()))
        for size in np.unique(sizes)
    }
    return SetMetrics(coverage=float(covered.mean()), mean_size=float(sizes.mean()),
                      singleton_share=float(np.mean(sizes == 1)), empty_share=float(np.mean(sizes == 0)),
                      coverage_by_size=by_size)


def _draws(seed: int, stream: int, size: int) -> FloatArray:
    """``size`` uniforms from stream 0 (calibration) or 1 (test sets) of ``seed``."""
    return np.random.default_rng([seed, stream]).uniform(size=size)


def _check_score(score: str) -> None:
    if score not in get_args(Score):
        raise ValueError(f"unknown conformal score {score!r}; expected one of {get_args(Score)}")
