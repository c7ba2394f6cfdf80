"""Conformal Language Modeling over a fixed pool of sampled candidates per problem.

Source: Quach, Fisch, Schuster, Yala, Sohn, Jaakkola & Barzilay (2024), "Conformal Language
Modeling" (ICLR). Each problem has N candidates sampled in order, a quality score ``Q_k`` per
candidate, and (for calibration) whether each is correct. A configuration
``lambda = (lambda_sim, lambda_qual, lambda_stop)`` turns the pool into a set (their Algorithm 1)::

    C = {}
    for k = 1..N:                                   # take the next sample
        if Q_k >= lambda_qual and max_{j in C} S(k, j) <= lambda_sim:   C = C + {k}
        if F(C) >= lambda_stop: stop                # F(empty set) = -inf: never stop empty

Similarity comes as group ids (candidates with the same extracted final answer share one):
``S(k, j) = 1`` for the same group, else 0, so ``lambda_sim < 1`` rejects a duplicate of a kept
candidate and ``lambda_sim >= 1`` keeps duplicates. The set score F is ``"max"`` (the highest
kept quality) or ``"sum"`` (the kept qualities' sum; qualities must then be non-negative). The
loss of a problem is ``L = 1`` when no kept candidate is correct.

Calibration is Learn-Then-Test (Angelopoulos, Bates, Candès, Jordan & Lei 2021) with Pareto
Testing (Laufer-Goldshtein, Fisch, Barzilay & Jaakkola 2023): the calibration problems are split
at random into an optimisation part and a testing part. On the first, the configurations that
are Pareto-optimal in (mean loss, mean cost) are ordered by mean loss, lowest first; on the
second, fixed-sequence testing walks that order, rejecting ``H_lambda: R(lambda) > epsilon``
while the p-value is at most ``delta`` and stopping at the first that is not. With ``k`` losses
in ``n`` testing problems the p-value is the exact binomial tail
``p = P(Binom(n, epsilon) <= k)`` (valid for 0/1 losses and tighter than Hoeffding-Bentkus).
With probability at least ``1 - delta`` every rejected (valid) configuration has risk at most
``epsilon``; the one chosen has the smallest mean cost over all calibration problems.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from genclf_harness.calibration._arrays import FloatArray, IntArray, as_scores

SetScore = Literal["max", "sum"]
Cost = Literal["size", "samples"]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class CLMConfig:
    """One configuration ``(lambda_sim, lambda_qual, lambda_stop)``; ``lambda_stop = inf`` never stops early."""

    lambda_sim: float
    lambda_qual: float
    lambda_stop: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.lambda_sim <= 1.0:
            raise ValueError(f"lambda_sim must lie in [0, 1], got {self.lambda_sim}")
        if math.isnan(self.lambda_qual) or math.isnan(self.lambda_stop):
            raise ValueError(f"lambda_qual and lambda_stop must not be NaN, got {self}")

    def to_dict(self) -> dict[str, float]:
        return {"lambda_sim": self.lambda_sim, "lambda_qual": self.lambda_qual, "lambda_stop": self.lambda_stop}


@dataclass(frozen=True, eq=False)
class CLMProblems:
    """P problems with N candidates each, in sampling order: (P, N) arrays."""

    quality: FloatArray
    """Candidate quality scores ``Q``."""
    correct: BoolArray
    """Whether each candidate is correct (admissible)."""
    groups: IntArray
    """Similarity groups: candidates of one problem with the same id are duplicates."""

    def __post_init__(self) -> None:
        quality = as_scores(self.quality, "quality", ndim=2)
        correct, groups = np.asarray(self.correct), np.asarray(self.groups)
        if correct.shape != quality.shape or groups.shape != quality.shape:
            raise ValueError(f"quality, correct and groups must share one (problems, candidates) shape; "
                             f"got {quality.shape}, {correct.shape} and {groups.shape}")
        if correct.dtype != np.bool_:
            raise ValueError(f"correct must be boolean, got dtype {correct.dtype}")
        if groups.dtype.kind not in "iu":
            raise ValueError(f"groups must be integer ids, got dtype {groups.dtype}")
        object.__setattr__(self, "quality", quality)
        object.__setattr__(self, "correct", correct)
        object.__setattr__(self, "groups", groups.astype(np.int64, copy=False))

    @property
    def num_problems(self) -> int:
        return int(self.quality.shape[0])

    def subset(self, indices: npt.ArrayLike) -> CLMProblems:
        rows = np.asarray(indices)
        return CLMProblems(self.quality[rows], self.correct[rows], self.groups[rows])


@dataclass(frozen=True, eq=False)
class CLMOutcomes:
    """Per problem and configuration: loss (0/1), kept set size and samples drawn, each (P, M)."""

    configs: tuple[CLMConfig, ...]
    set_score: SetScore
    loss: FloatArray
    size: IntArray
    samples: IntArray

    def subset(self, indices: npt.ArrayLike) -> CLMOutcomes:
        rows = np.asarray(indices)
        return CLMOutcomes(self.configs, self.set_score, self.loss[rows], self.size[rows], self.samples[rows])

    def cost(self, cost: Cost) -> FloatArray:
        """Mean cost per configuration: ``"size"`` (kept candidates) or ``"samples"`` (drawn)."""
        if cost not in get_args(Cost):
            raise ValueError(f"unknown cost {cost!r}; expected one of {get_args(Cost)}")
        return (self.size if cost == "size" else self.samples).mean(axis=0)


def clm_outcomes(problems: CLMProblems, configs: Sequence[CLMConfig], *, set_score: SetScore = "max") -> CLMOutcomes:
    """Run Algorithm 1 for every problem and configuration (vectorised over both).

    With dedup, candidate k is kept iff ``Q_k >= lambda_qual`` and no earlier candidate of its
    group passed the quality bar (the first of a group to pass is always the one kept), so the kept
    candidates do not depend on ``lambda_stop``; F is non-decreasing along the samples, so the stop
    is the first k with ``F_k >= lambda_stop``, or N.
    """
    if set_score not in get_args(SetScore):
        raise ValueError(f"unknown set score {set_score!r}; expected one of {get_args(SetScore)}")
    if not configs:
        raise ValueError("configs is empty")
    quality, n = problems.quality, problems.quality.shape[1]
    if set_score == "sum" and quality.min() < 0:
        raise ValueError("the 'sum' set score needs non-negative qualities (e.g. probabilities); "
                         f"the smallest is {quality.min()}")
    best_earlier_duplicate = np.full(quality.shape, -np.inf)  # max Q of earlier same-group candidates
    for k in range(1, n):
        same_group = problems.groups[:, :k] == problems.groups[:, k : k + 1]
        best_earlier_duplicate[:, k] = np.where(same_group, quality[:, :k], -np.inf).max(axis=1)
    shape = (problems.num_problems, len(configs))
    loss, size, samples = np.empty(shape), np.empty(shape, dtype=np.int64), np.empty(shape, dtype=np.int64)
    by_filter: dict[tuple[bool, float], list[int]] = {}
    for index, config in enumerate(configs):
        by_filter.setdefault((config.lambda_sim < 1.0, config.lambda_qual), []).append(index)
    for (dedupe, lambda_qual), indices in by_filter.items():
        kept = quality >= lambda_qual
        if dedupe:
            kept &= best_earlier_duplicate < lambda_qual
        kept_count = np.cumsum(kept, axis=1)
        hits = np.cumsum(kept & problems.correct, axis=1)
        if set_score == "max":
            set_value = np.maximum.accumulate(np.where(kept, quality, -np.inf), axis=1)
        else:
            set_value = np.where(kept_count > 0, np.cumsum(np.where(kept, quality, 0.0), axis=1), -np.inf)
        stops = np.array([configs[i].lambda_stop for i in indices])
        going_on = (set_value[:, :, None] < stops[None, None, :]) | (kept_count == 0)[:, :, None]
        before_stop = going_on.sum(axis=1)  # (P, S): samples taken before the stopping one
        last = np.minimum(before_stop, n - 1)
        loss[:, indices] = (np.take_along_axis(hits, last, axis=1) == 0).astype(np.float64)
        size[:, indices] = np.take_along_axis(kept_count, last, axis=1)
        samples[:, indices] = last + 1
    return CLMOutcomes(tuple(configs), set_score, loss, size, samples)


def clm_grid(
    problems: CLMProblems,
    *,
    set_score: SetScore = "max",
    num_quality: int = 10,
    num_stop: int = 10,
    lambda_sims: Sequence[float] = (0.0, 1.0),
) -> tuple[CLMConfig, ...]:
    """A grid from the calibration problems' own scores: ``lambda_qual`` at the 0, ..., 90%
    quantiles of the qualities (``num_quality`` levels), ``lambda_stop`` at the 10, ..., 100%
    quantiles of F over all prefixes (the qualities for "max", their running sums for "sum";
    ``num_stop`` levels) plus ``inf``, for each ``lambda_sim`` (default: dedup on and off)."""
    if num_quality < 1 or num_stop < 1:
        raise ValueError(f"num_quality and num_stop must be at least 1, got {num_quality} and {num_stop}")
    quality = problems.quality
    qual_levels = np.unique(np.quantile(quality, np.linspace(0.0, 0.9, num_quality)))
    values = quality if set_score == "max" else np.cumsum(quality, axis=1)
    stop_levels = np.append(np.unique(np.quantile(values, np.linspace(0.1, 1.0, num_stop))), np.inf)
    return tuple(CLMConfig(float(s), float(q), float(t)) for s in lambda_sims for q in qual_levels for t in stop_levels)


def binomial_tail_pvalue(num_losses: npt.ArrayLike, n: int, epsilon: float) -> FloatArray:
    """``P(Binom(n, epsilon) <= k)`` for each loss count k, from log-gamma: a valid p-value for
    ``H: R > epsilon`` when k is the number of 0/1 losses in n independent problems."""
    if n < 1:
        raise ValueError(f"the binomial test needs at least one problem, got n={n}")
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon}")
    counts = np.asarray(num_losses)
    if counts.dtype.kind not in "iu" or (counts < 0).any() or (counts > n).any():
        raise ValueError(f"loss counts must be integers in [0, {n}], got {counts}")
    j = np.arange(n + 1)
    log_pmf = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in j])
    log_pmf += j * math.log(epsilon) + (n - j) * math.log1p(-epsilon)
    log_cdf = np.logaddexp.accumulate(log_pmf)
    return np.minimum(np.exp(log_cdf[counts]), 1.0)


def ltt_pvalues(loss: npt.ArrayLike, epsilon: float) -> FloatArray:
    """Binomial-tail p-values of every configuration from an (n problems, M configurations) 0/1 loss matrix."""
    matrix = as_scores(loss, "loss", ndim=2)
    if not np.isin(matrix, (0.0, 1.0)).all():
        raise ValueError("losses must be 0 or 1 for the binomial tail p-value")
    return binomial_tail_pvalue(matrix.sum(axis=0).round().astype(np.int64), matrix.shape[0], epsilon)


def pareto_front(risk: npt.ArrayLike, cost: npt.ArrayLike) -> IntArray:
    """Indices of the configurations no other beats in both risk and cost, by increasing risk.

    Exact duplicates in (risk, cost) keep only the first index.
    """
    risks, costs = np.asarray(risk, dtype=np.float64), np.asarray(cost, dtype=np.float64)
    order = np.lexsort((np.arange(risks.shape[0]), costs, risks))
    front, best_cost = [], np.inf
    for index in order:
        if costs[index] < best_cost:
            front.append(int(index))
            best_cost = costs[index]
    return np.array(front, dtype=np.int64)


def fixed_sequence_test(pvalues: npt.ArrayLike, order: npt.ArrayLike, delta: float) -> IntArray:
    """The configurations rejected by fixed-sequence testing at level ``delta``: the longest
    prefix of ``order`` whose p-values are all at most ``delta`` (controls the family-wise error)."""
    p = np.asarray(pvalues, dtype=np.float64)[np.asarray(order, dtype=np.int64)]
    failures = np.flatnonzero(p > delta)
    stop = int(failures[0]) if failures.size else p.shape[0]
    return np.asarray(order, dtype=np.int64)[:stop]


@dataclass(frozen=True)
class CLMCalibration:
    """The outcome of Pareto Testing; ``chosen`` is None when no configuration was certified."""

    chosen: CLMConfig | None
    chosen_index: int | None
    valid: tuple[int, ...]
    """Indices (into ``configs``) certified to have risk <= epsilon, in testing order."""
    pvalues: FloatArray
    """Binomial-tail p-value of every configuration on the testing part."""
    epsilon: float
    delta: float
    set_score: SetScore
    cost: Cost
    num_opt: int
    num_test: int

    def manifest(self) -> dict[str, Any]:
        return {"chosen": None if self.chosen is None else self.chosen.to_dict(),
                "epsilon": self.epsilon, "delta": self.delta, "set_score": self.set_score,
                "cost": self.cost, "num_valid": len(self.valid), "num_opt": self.num_opt,
                "num_test": self.num_test}


def pareto_testing(
    opt: CLMOutcomes, test: CLMOutcomes, *, epsilon: float, delta: float = 0.05, cost: Cost = "size"
) -> CLMCalibration:
    """Pareto Testing on fixed optimisation and testing parts (see the module docstring)."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    if opt.configs != test.configs or opt.set_score != test.set_score:
        raise ValueError("the optimisation and testing outcomes must come from the same configurations and set score")
    pvalues = ltt_pvalues(test.loss, epsilon)
    valid = fixed_sequence_test(pvalues, pareto_front(opt.loss.mean(axis=0), opt.cost(cost)), delta)
    chosen_index: int | None = None
    if valid.size:
        both_cost = (opt.cost(cost) * opt.loss.shape[0] + test.cost(cost) * test.loss.shape[0])
        both_risk = opt.loss.sum(axis=0) + test.loss.sum(axis=0)
        chosen_index = int(valid[np.lexsort((valid, both_risk[valid], both_cost[valid]))[0]])
    return CLMCalibration(
        chosen=None if chosen_index is None else opt.configs[chosen_index], chosen_index=chosen_index,
        valid=tuple(int(i) for i in valid), pvalues=pvalues, epsilon=epsilon, delta=delta,
        set_score=opt.set_score, cost=cost, num_opt=int(opt.loss.shape[0]), num_test=int(test.loss.shape[0]),
    )


def ltt_calibrate(
    outcomes: CLMOutcomes,
    *,
    epsilon: float,
    delta: float = 0.05,
    cost: Cost = "size",
    opt_fraction: float = 0.5,
    seed: int = 0,
) -> CLMCalibration:
    """Pareto Testing after a seeded random split (``numpy.random.default_rng(seed)``) of the
    calibration problems: ``round(opt_fraction * P)`` for optimisation, the rest for testing."""
    num = outcomes.loss.shape[0]
    num_opt = round(opt_fraction * num)
    if not 1 <= num_opt < num:
        raise ValueError(f"opt_fraction={opt_fraction} leaves no problems for one part of {num}")
    permutation = np.random.default_rng(seed).permutation(num)
    return pareto_testing(outcomes.subset(permutation[:num_opt]), outcomes.subset(permutation[num_opt:]),
                          epsilon=epsilon, delta=delta, cost=cost)


def calibrate_clm(
    problems: CLMProblems,
    configs: Sequence[CLMConfig] | None = None,
    *,
    epsilon: float,
    delta: float = 0.05,
    set_score: SetScore = "max",
    cost: Cost = "size",
    opt_fraction: float = 0.5,
    seed: int = 0,
) -> CLMCalibration:
    """`ltt_calibrate` on the outcomes of ``configs`` (default `clm_grid` of these problems)."""
    grid = clm_grid(problems, set_score=set_score) if configs is None else tuple(configs)
    return ltt_calibrate(clm_outcomes(problems, grid, set_score=set_score), epsilon=epsilon, delta=delta,
                         cost=cost, opt_fraction=opt_fraction, seed=seed)


@dataclass(frozen=True)
class CLMReport:
    """One configuration on held-out problems."""

    loss: float
    """Share of problems with no correct kept candidate."""
    mean_size: float
    mean_samples: float
    num_problems: int

    def to_dict(self) -> dict[str, float | int]:
        return {"loss": self.loss, "mean_size": self.mean_size, "mean_samples": self.mean_samples,
                "num_problems": self.num_problems}


def evaluate_clm(problems: CLMProblems, config: CLMConfig, *, set_score: SetScore = "max") -> CLMReport:
    """Loss, mean set size and mean samples drawn of ``config`` on (held-out) problems."""
    outcome = clm_outcomes(problems, [config], set_score=set_score)
    return CLMReport(loss=float(outcome.loss.mean()), mean_size=float(outcome.size.mean()),
                     mean_samples=float(outcome.samples.mean()), num_problems=problems.num_problems)
