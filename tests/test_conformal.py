"""Tests of conformal label sets, HELM's calibration metrics, temperature scaling and CLM.

Pure numpy on synthetic scores, no model. MAPIE (the conformal oracle) and scikit-learn (the
Platt oracle) are imported with importorskip.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from genclf_harness.calibration import negative_log_likelihood
from genclf_harness.calibration.clm import (
    CLMConfig,
    CLMProblems,
    binomial_tail_pvalue,
    clm_grid,
    clm_outcomes,
    evaluate_clm,
    fixed_sequence_test,
    ltt_calibrate,
    ltt_pvalues,
    pareto_front,
    pareto_testing,
)
from genclf_harness.calibration.conformal import (
    ConformalPredictor,
    conformal_quantile,
    cross_fit_sets,
    fit_conformal,
    label_scores,
    set_metrics,
)
from genclf_harness.calibration.helm import (
    coverage_accuracy_area,
    equal_mass_ece,
    fit_temperature,
    helm_calibration_metrics,
    platt_scaling,
    selective_accuracy,
)

# ---------------------------------------------------------------- conformal sets


def _synthetic(n: int, k: int, seed: int, sharpness: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Label log-likelihoods of an overconfident model and labels drawn from a softer truth."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 1.5
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in truth])
    return logits * sharpness + 3.0, labels  # +3: unnormalised rows must not matter


VARIANTS = {
    "lac": {"score": "lac"},
    "aps": {"score": "aps"},
    "aps_randomized": {"score": "aps", "randomized": True},
    "raps": {"score": "raps", "lam": 0.05, "k_reg": 1},
    "raps_randomized": {"score": "raps", "lam": 0.05, "k_reg": 1, "randomized": True},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_coverage_is_one_minus_alpha_over_random_splits(variant: str) -> None:
    logprobs, labels = _synthetic(1000, 5, seed=7)
    alpha, n_cal, n_test, splits = 0.1, 500, 500, 200
    rng = np.random.default_rng(11)
    coverages = []
    for split in range(splits):
        order = rng.permutation(1000)
        cal, test = order[:n_cal], order[n_cal:]
        predictor = fit_conformal(logprobs[cal], labels[cal], alpha=alpha, seed=split, **VARIANTS[variant])
        coverages.append(set_metrics(predictor.sets(logprobs[test]), labels[test]).coverage)
    coverages = np.array(coverages)
    # Exact split conformal with continuous scores: E[coverage] = k/(n+1) in [1-alpha, 1-alpha+1/(n+1)].
    assert coverages.mean() >= 1 - alpha - 0.005
    assert coverages.mean() <= 1 - alpha + 1 / (n_cal + 1) + 0.005
    sd = math.sqrt(alpha * (1 - alpha) * (1 / n_cal + 1 / n_test))
    assert np.mean(coverages < 1 - alpha - 3 * sd) <= 0.02


def test_include_last_adds_exactly_the_next_ranked_label() -> None:
    logprobs, labels = _synthetic(400, 6, seed=3)
    plain = fit_conformal(logprobs[:200], labels[:200], score="aps", alpha=0.2)
    with_last = ConformalPredictor("aps", 0.2, plain.n, plain.threshold, include_last=True)
    small, large = plain.sets(logprobs[200:]), with_last.sets(logprobs[200:])
    assert (large >= small).all() and large.any(axis=1).all()
    assert np.array_equal(large.sum(axis=1), np.minimum(small.sum(axis=1) + 1, 6))


def test_threshold_is_the_kth_smallest_score() -> None:
    scores = np.arange(1.0, 11.0)[::-1]  # 10..1, so the order matters
    assert conformal_quantile(scores, 0.2) == 9.0  # k = ceil(11 * 0.8) = 9
    assert conformal_quantile(np.arange(1.0, 10.0), 0.3) == 7.0  # k = ceil(10 * 0.7) = 7, not 8
    assert conformal_quantile(np.arange(1.0, 10.0), 0.1) == 9.0  # alpha = 1/(n+1): the maximum
    # MAPIE <= 1.5 took np.quantile(s, (n+1)(1-alpha)/n, "higher"): one rank higher for n=19, alpha=.5
    assert conformal_quantile(np.arange(1.0, 20.0), 0.5) == 10.0
    assert conformal_quantile(np.arange(1.0, 20.0), 0.5, rule="mapie_legacy") == 11.0


def test_alpha_below_one_over_n_plus_one_is_refused() -> None:
    logprobs, labels = _synthetic(9, 3, seed=1)
    with pytest.raises(ValueError, match=r"alpha=0\.09 .*n=9"):
        fit_conformal(logprobs, labels, score="lac", alpha=0.09)
    fit_conformal(logprobs, labels, score="lac", alpha=0.1)  # exactly 1/(n+1) is allowed
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
        fit_conformal(logprobs, labels, score="aps", alpha=1.0)


def test_nan_and_inf_are_refused_naming_the_row() -> None:
    logprobs, labels = _synthetic(50, 3, seed=2)
    logprobs[17, 2] = np.nan
    with pytest.raises(ValueError, match=r"logprobs\[17, 2\] = nan"):
        fit_conformal(logprobs, labels, score="aps", alpha=0.1)
    with pytest.raises(ValueError, match=r"nonconformity scores\[4\] = inf"):
        conformal_quantile([0.1, 0.2, 0.3, 0.4, np.inf, 0.5, 0.6, 0.7, 0.8, 0.9], 0.2)


def test_bad_parameters_are_refused() -> None:
    logprobs, labels = _synthetic(50, 3, seed=2)
    with pytest.raises(ValueError, match="unknown conformal score 'topk'"):
        fit_conformal(logprobs, labels, score="topk", alpha=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RAPS parameters"):
        fit_conformal(logprobs, labels, score="aps", alpha=0.1, lam=0.1)
    with pytest.raises(ValueError, match="LAC score has no randomised form"):
        fit_conformal(logprobs, labels, score="lac", alpha=0.1, randomized=True)
    with pytest.raises(ValueError, match="include_last applies"):
        fit_conformal(logprobs, labels, score="aps", alpha=0.1, randomized=True, include_last=True)


def test_manifest_and_randomised_sets_are_reproducible() -> None:
    logprobs, labels = _synthetic(300, 4, seed=5)
    predictor = fit_conformal(logprobs, labels, score="raps", alpha=0.1, randomized=True, seed=3)
    manifest = predictor.manifest()
    assert manifest["n"] == 300 and manifest["alpha"] == 0.1 and manifest["score"] == "raps"
    assert manifest["threshold"] == predictor.threshold
    assert manifest["params"] == {"quantile_rule": "conformal", "randomized": True, "include_last": False,
                                  "seed": 3, "lam": 0.01, "k_reg": 1}
    assert np.array_equal(predictor.sets(logprobs), predictor.sets(logprobs))
    other = fit_conformal(logprobs, labels, score="raps", alpha=0.1, randomized=True, seed=4)
    assert not np.array_equal(predictor.sets(logprobs), other.sets(logprobs))


def test_cross_fit_never_calibrates_a_document_on_itself() -> None:
    # Distinct gold probabilities and alpha = 1/(m+1): each half's threshold is its own largest
    # score, so a document is covered iff its score is at most the OTHER half's largest score.
    rng = np.random.default_rng(0)
    n, m = 40, 20
    gold_prob = rng.uniform(0.05, 0.95, size=n)
    logprobs = np.log(np.column_stack([gold_prob, 1 - gold_prob]))
    labels = np.zeros(n, dtype=np.int64)
    result = cross_fit_sets(logprobs, labels, score="lac", alpha=1 / (m + 1), seed=5)
    nonconformity = 1 - gold_prob
    for fold in (0, 1):
        members = result.folds == fold
        assert members.sum() == m and result.predictors[fold].n == m
        assert result.predictors[fold].threshold == pytest.approx(nonconformity[members].max(), abs=1e-12)
        covered = result.sets[members, 0]
        expected = nonconformity[members] <= nonconformity[~members].max() + 1e-12
        assert np.array_equal(covered, expected)
    # The document with the largest score overall is not covered: its own score is not in its threshold.
    worst = int(np.argmax(nonconformity))
    assert not result.sets[worst, 0]
    assert not np.array_equal(result.folds, cross_fit_sets(logprobs, labels, score="lac", alpha=0.05, seed=6).folds)


def test_set_metrics_by_hand() -> None:
    sets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=bool)
    labels = np.array([0, 2, 1, 1, 0])
    metrics = set_metrics(sets, labels)
    assert metrics.coverage == pytest.approx(2 / 5)
    assert metrics.mean_size == pytest.approx(6 / 5)
    assert metrics.singleton_share == pytest.approx(2 / 5) and metrics.empty_share == pytest.approx(1 / 5)
    assert metrics.coverage_by_size == {0: (1, 0.0), 1: (2, 0.5), 2: (2, 0.5)}
    with pytest.raises(ValueError, match="boolean"):
        set_metrics(sets.astype(int), labels)


# ---------------------------------------------------------------- MAPIE as oracle


def _mapie(probs: np.ndarray, labels: np.ndarray, score: object, alpha: float, seed: int = 1):
    pytest.importorskip("mapie")
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Identity(ClassifierMixin, BaseEstimator):
        """The features are the precomputed class probabilities."""

        def __init__(self, n_classes: int = 2) -> None:
            self.n_classes = n_classes

        def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> Identity:
            self.classes_ = np.arange(self.n_classes)
            self.fitted_ = True
            return self

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return np.asarray(x)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.asarray(x).argmax(axis=1)

    estimator = Identity(probs.shape[1]).fit(probs)
    model = SplitConformalClassifier(estimator, confidence_level=1 - alpha, conformity_score=score,
                                     prefit=True, random_state=seed)
    return model.conformalize(probs, labels)


def _probabilities(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, 0.5), size=n)
    labels = np.array([rng.choice(k, p=row) for row in probs])
    return probs, labels


def _mapie_rule() -> str:
    mapie = pytest.importorskip("mapie")
    major, minor = (int(part) for part in mapie.__version__.split(".")[:2])
    return "conformal" if (major, minor) >= (1, 6) else "mapie_legacy"


@pytest.mark.parametrize(("n", "alpha"), [(999, 0.1), (999, 0.05), (300, 0.2), (19, 0.5), (200, 0.3)])
def test_lac_sets_equal_mapie(n: int, alpha: float) -> None:
    probs, labels = _probabilities(n + 500, 6, seed=n)
    cal, test = slice(0, n), slice(n, None)
    model = _mapie(probs[cal], labels[cal], "lac", alpha)
    _, mapie_sets = model.predict_set(probs[test])
    ours = fit_conformal(np.log(probs[cal]), labels[cal], score="lac", alpha=alpha, quantile_rule=_mapie_rule())
    assert ours.threshold == pytest.approx(float(model._mapie_classifier.quantiles_[0]), abs=1e-12)
    assert np.array_equal(ours.sets(np.log(probs[test])), mapie_sets[:, :, 0])


@pytest.mark.parametrize("alpha", [0.1, 0.2, 0.5])
def test_aps_scores_threshold_and_sets_equal_mapie(alpha: float) -> None:
    probs, labels = _probabilities(1500, 6, seed=4)
    cal, test = slice(0, 1000), slice(1000, None)
    model = _mapie(probs[cal], labels[cal], "aps", alpha, seed=1)
    _, last_sets = model.predict_set(probs[test], conformity_score_params={"include_last_label": True})
    threshold = float(model._mapie_classifier.quantiles_[0])
    # MAPIE always randomises APS calibration scores: rho + (1 - U) p_y with U from RandomState(seed).
    u = 1 - np.random.RandomState(1).uniform(size=1000)
    ours = label_scores(np.log(probs[cal]), score="aps", u=u)[np.arange(1000), labels[cal]]
    np.testing.assert_allclose(ours, model.conformity_scores.ravel(), atol=1e-12)
    assert conformal_quantile(model.conformity_scores.ravel(), alpha, rule=_mapie_rule()) == threshold
    with_last = ConformalPredictor("aps", alpha, 1000, threshold, include_last=True)
    assert np.array_equal(with_last.sets(np.log(probs[test])), last_sets[:, :, 0])
    # MAPIE's include_last_label=False is the score-consistent set plus, always, the top label.
    _, plain_sets = model.predict_set(probs[test], conformity_score_params={"include_last_label": False})
    top = np.eye(6, dtype=bool)[probs[test].argmax(axis=1)]
    plain = ConformalPredictor("aps", alpha, 1000, threshold).sets(np.log(probs[test]))
    assert np.array_equal(plain | top, plain_sets[:, :, 0])
    # MAPIE's "randomized" sets: {y : rho + u p_y <= tau} with u = 1 - U, U drawn as above for the test rows.
    _, random_sets = model.predict_set(probs[test], conformity_score_params={"include_last_label": "randomized"})
    u_test = 1 - np.random.RandomState(1).uniform(size=500)
    ours_random = label_scores(np.log(probs[test]), score="aps", u=u_test) <= threshold
    assert np.array_equal(ours_random, random_sets[:, :, 0])


def test_raps_sets_equal_mapie_for_its_tuned_parameters() -> None:
    pytest.importorskip("mapie")
    from mapie.conformity_scores import RAPSConformityScore

    probs, labels = _probabilities(1500, 8, seed=9)
    model = _mapie(probs[:1000], labels[:1000], RAPSConformityScore(size_raps=0.3), 0.1)
    _, mapie_sets = model.predict_set(probs[1000:], conformity_score_params={"include_last_label": True})
    scorer = model._mapie_classifier.conformity_score_function_
    ours = ConformalPredictor("raps", 0.1, 700, float(scorer.quantiles_[0]), include_last=True,
                              lam=float(scorer.lambda_star), k_reg=int(np.ravel(scorer.k_star)[0]))
    assert ours.k_reg < 8  # the penalty is active for some ranks
    assert np.array_equal(ours.sets(np.log(probs[1000:])), mapie_sets[:, :, 0])


# ---------------------------------------------------------------- HELM metrics


def test_equal_mass_ece_by_hand() -> None:
    conf, hits = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 1])
    # 2 bins: {.6, .7} acc 1, conf .65; {.8, .9} acc .5, conf .85 -> .5*.35 + .5*.35
    assert equal_mass_ece(conf, hits, num_bins=2) == pytest.approx(0.35)
    # more bins than points: one point per bin -> mean |c - z|
    assert equal_mass_ece(conf, hits, num_bins=10) == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4)
    assert equal_mass_ece(conf, hits, num_bins=1) == pytest.approx(0.0)
    # uneven groups (array_split: 3 then 2): 3/5*|.6 - 2/3| + 2/5*|.85 - 1|
    conf5, hits5 = np.array([0.5, 0.6, 0.7, 0.8, 0.9]), np.array([0, 1, 1, 1, 1])
    assert equal_mass_ece(conf5, hits5, num_bins=2) == pytest.approx(0.04 + 0.06)
    # a tie across the cut: the edge is 0.7 and every 0.7 joins the lower bin
    ties, tie_hits = np.array([0.7, 0.7, 0.7, 0.9]), np.array([1, 0, 0, 1])
    assert equal_mass_ece(ties, tie_hits, num_bins=2) == pytest.approx(0.75 * (0.7 - 1 / 3) + 0.25 * 0.1)


def test_selective_metrics_by_hand() -> None:
    conf, hits = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 1])
    assert coverage_accuracy_area(conf, hits) == pytest.approx((1 + 0.5 + 2 / 3 + 0.75) / 4)
    assert selective_accuracy(conf, hits) == 1.0  # int(0.1 * 4) = 0: the top document
    # N = 20: HELM's index int(0.1 * 20) = 2 counts the top 3 documents, not 2
    conf20 = np.linspace(0.99, 0.5, 20)
    hits20 = np.array([1, 1, 0] + [1] * 17)
    assert selective_accuracy(conf20, hits20) == pytest.approx(2 / 3)
    # equal confidences keep document order
    assert coverage_accuracy_area([0.5, 0.5], [0, 1]) == pytest.approx((0 + 0.5) / 2)


def test_helm_metrics_from_logprobs_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 1])  # confidences .9 .8 .7 .6, correct 1 0 1 1
    metrics = helm_calibration_metrics(np.log(probs) - 2.0, labels)
    assert metrics["ece_mass10"] == pytest.approx(0.4)
    assert metrics["ece_mass1"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["selective_acc_at_10"] == 1.0
    assert metrics["cov_acc_area"] == pytest.approx((1 + 0.5 + 2 / 3 + 0.75) / 4)
    assert {"ece_platt_mass10", "platt_coef", "platt_intercept"} <= set(metrics)
    all_right = helm_calibration_metrics(np.log(probs[[0, 2, 3]]), labels[[0, 2, 3]])
    assert all_right["ece_platt_mass10"] == 0.0 and "platt_coef" not in all_right
    with pytest.raises(ValueError, match="all are correct"):
        platt_scaling([0.9, 0.7, 0.6], [1, 1, 1])


def test_platt_scaling_matches_sklearn_and_zeroes_one_bin_ece() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.3, 0.99, size=300)
    hits = (rng.uniform(size=300) < conf**2).astype(int)  # overconfident
    fit = platt_scaling(conf, hits)
    x = np.log(conf / (1 - conf))[:, None]
    reference = linear_model.LogisticRegression(C=1e10, tol=1e-12, max_iter=10_000).fit(x, hits)
    assert fit.coef == pytest.approx(float(reference.coef_[0, 0]), rel=1e-5)
    assert fit.intercept == pytest.approx(float(reference.intercept_[0]), rel=1e-5, abs=1e-6)
    # The intercept's first-order condition: recalibrated confidences average to the accuracy.
    assert equal_mass_ece(fit.apply(conf), hits, num_bins=1) == pytest.approx(0.0, abs=1e-9)
    # Separable data still gives a finite fit thanks to HELM's C = 1e10 ridge.
    separable = platt_scaling([0.6, 0.65, 0.7, 0.9, 0.95], [0, 0, 0, 1, 1])
    assert math.isfinite(separable.coef) and separable.coef > 0


# ---------------------------------------------------------------- temperature scaling


@pytest.mark.parametrize("temperature", [3.0, 0.5])
def test_temperature_scaling_recovers_a_known_temperature(temperature: float) -> None:
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(5000, 4)) * 2.0
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.minimum((rng.uniform(size=(5000, 1)) > truth.cumsum(axis=1)).sum(axis=1), 3)
    reported = logits * temperature  # T = 3: overconfident; T = 0.5: underconfident
    calibration = fit_temperature(reported, labels)
    assert calibration.temperature == pytest.approx(temperature, rel=0.06)
    nll = negative_log_likelihood(calibration.apply(reported), labels)
    assert nll == pytest.approx(calibration.params["nll"], abs=1e-9)
    assert nll < calibration.params["nll_before"] - 0.05
    for nudge in (0.98, 1.02):  # a minimum, not just an improvement
        tempered = reported / (calibration.temperature * nudge)
        assert negative_log_likelihood(tempered, labels) > nll


def test_temperature_scaling_without_a_finite_minimum_returns_a_bound() -> None:
    """Chance-level scores: the largest temperature (flat probabilities); every gold label on top:
    the smallest; each says why."""
    from genclf_harness.calibration.helm import TEMPERATURE_BOUNDS

    logprobs = np.log(np.array([[0.2, 0.8], [0.8, 0.2]]))
    flat = fit_temperature(logprobs, np.array([0, 1]))
    assert flat.temperature == TEMPERATURE_BOUNDS[1] and "no better than chance" in flat.params["at_bound"]
    assert np.allclose(np.exp(flat.apply(logprobs)), 0.5, atol=1e-3)
    sharp = fit_temperature(logprobs, np.array([1, 0]))
    assert sharp.temperature == TEMPERATURE_BOUNDS[0] and "top label" in sharp.params["at_bound"]
    assert sharp.params["nll"] < sharp.params["nll_before"]


# ---------------------------------------------------------------- Conformal Language Modeling


def test_binomial_tail_pvalues_equal_the_direct_sum() -> None:
    loss = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 1],
                     [0, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1]])
    epsilon = 0.3
    expected = [sum(math.comb(10, j) * epsilon**j * (1 - epsilon) ** (10 - j) for j in range(k + 1))
                for k in loss.sum(axis=0)]
    np.testing.assert_allclose(ltt_pvalues(loss, epsilon), expected, rtol=1e-12)
    stats = pytest.importorskip("scipy.stats")
    counts = np.arange(0, 201)
    np.testing.assert_allclose(binomial_tail_pvalue(counts, 200, 0.1), stats.binom.cdf(counts, 200, 0.1),
                               rtol=1e-9, atol=1e-300)


def test_pareto_front_and_fixed_sequence_by_hand() -> None:
    risks, costs = [0.1, 0.2, 0.1, 0.3, 0.05], [5.0, 3.0, 4.0, 3.5, 6.0]
    assert pareto_front(risks, costs).tolist() == [4, 2, 1]
    assert fixed_sequence_test([0.01, 0.2, 0.001], [2, 0, 1], delta=0.05).tolist() == [2, 0]
    assert fixed_sequence_test([0.01, 0.2, 0.001], [1, 2, 0], delta=0.05).tolist() == []


def test_pareto_testing_on_a_fixed_loss_matrix() -> None:
    configs = tuple(CLMConfig(0.0, 0.0, stop) for stop in (1.0, 2.0, 3.0))
    # Larger stop thresholds keep more candidates: lower loss, larger sets.
    opt_loss = np.array([[1, 0, 0]] * 3 + [[0, 0, 0]] * 17, dtype=float)
    test_loss = np.array([[1, 1, 0]] * 2 + [[1, 0, 0]] * 2 + [[0, 0, 0]] * 36, dtype=float)
    sizes = np.tile([1, 2, 3], (20, 1))
    from genclf_harness.calibration.clm import CLMOutcomes

    opt = CLMOutcomes(configs, "max", opt_loss, sizes, sizes)
    test = CLMOutcomes(configs, "max", test_loss, np.tile([1, 2, 3], (40, 1)), np.tile([1, 2, 3], (40, 1)))
    result = pareto_testing(opt, test, epsilon=0.2, delta=0.05)
    direct = [sum(math.comb(40, j) * 0.2**j * 0.8 ** (40 - j) for j in range(k + 1)) for k in (4, 2, 0)]
    np.testing.assert_allclose(result.pvalues, direct, rtol=1e-12)
    # Testing order by opt risk: config 1 (0.0, cost 2) then config 0 (0.15, cost 1); config 2 is dominated.
    assert direct[1] <= 0.05 and direct[0] > 0.05
    assert result.valid == (1,) and result.chosen == configs[1]
    assert result.manifest()["chosen"] == {"lambda_sim": 0.0, "lambda_qual": 0.0, "lambda_stop": 2.0}


def test_clm_outcomes_by_hand() -> None:
    problems = CLMProblems(quality=np.array([[0.2, 0.9, 0.8, 0.95, 0.1]]),
                           correct=np.array([[False, False, False, True, False]]),
                           groups=np.array([[0, 1, 1, 2, 0]]))
    cases = [  # (config, set score) -> (loss, size, samples)
        (CLMConfig(0.0, 0.5, math.inf), "max", (0, 2, 5)),  # candidate 2 duplicates kept 1
        (CLMConfig(0.0, 0.5, 0.9), "max", (1, 1, 2)),  # stops once 0.9 is kept
        (CLMConfig(1.0, 0.5, math.inf), "max", (0, 3, 5)),  # duplicates kept
        (CLMConfig(0.0, 0.5, 0.96), "max", (0, 2, 5)),  # never reaches the stop
        (CLMConfig(0.0, 0.5, -math.inf), "max", (1, 1, 2)),  # never stops with an empty set
        (CLMConfig(0.0, 0.0, 1.0), "sum", (1, 2, 2)),  # 0.2 + 0.9 >= 1
        (CLMConfig(0.0, 0.0, 2.0), "sum", (0, 3, 4)),  # 0.2 + 0.9 + 0.95 >= 2
    ]
    for config, set_score, expected in cases:
        report = evaluate_clm(problems, config, set_score=set_score)  # type: ignore[arg-type]
        assert (report.loss, report.mean_size, report.mean_samples) == expected, config


def _reference_algorithm(quality, correct, groups, config, set_score):
    """Quach et al.'s Algorithm 1, one sample at a time."""
    kept: list[int] = []
    drawn = 0
    for k in range(len(quality)):
        drawn = k + 1
        duplicate = any(groups[j] == groups[k] for j in kept)
        if quality[k] >= config.lambda_qual and not (duplicate and 1.0 > config.lambda_sim):
            kept.append(k)
        if kept:
            value = max(quality[kept]) if set_score == "max" else sum(quality[kept])
            if value >= config.lambda_stop:
                break
    return float(not any(correct[kept])), len(kept), drawn


def _synthetic_problems(num: int, seed: int, n: int = 20) -> CLMProblems:
    rng = np.random.default_rng(seed)
    p_correct = rng.uniform(0.0, 0.9, size=(num, 1))
    correct = rng.uniform(size=(num, n)) < p_correct
    quality = 1 / (1 + np.exp(-(1.5 * (2 * correct - 1) + rng.normal(size=(num, n)))))
    groups = np.where(correct, 0, rng.integers(1, 5, size=(num, n)))
    return CLMProblems(quality, correct, groups)


@pytest.mark.parametrize("set_score", ["max", "sum"])
def test_vectorised_outcomes_equal_the_sequential_algorithm(set_score: str) -> None:
    problems = _synthetic_problems(60, seed=1, n=8)
    configs = clm_grid(problems, set_score=set_score, num_quality=4, num_stop=4)  # type: ignore[arg-type]
    outcomes = clm_outcomes(problems, configs, set_score=set_score)  # type: ignore[arg-type]
    for p in range(problems.num_problems):
        for m, config in enumerate(configs):
            expected = _reference_algorithm(problems.quality[p], problems.correct[p], problems.groups[p], config, set_score)
            assert (outcomes.loss[p, m], outcomes.size[p, m], outcomes.samples[p, m]) == expected


def test_ltt_controls_the_held_out_loss_over_random_splits() -> None:
    problems = _synthetic_problems(3000, seed=4)
    outcomes = clm_outcomes(problems, clm_grid(problems, num_quality=20, num_stop=20))
    # Some configurations have a true loss just above epsilon (0.162-0.164 on these problems).
    epsilon, delta, splits, n_cal = 0.16, 0.05, 100, 600
    rng = np.random.default_rng(5)
    violations, naive_violations, samples, chosen = 0, 0, [], 0
    for split in range(splits):
        order = rng.permutation(problems.num_problems)
        cal, test = outcomes.subset(order[:n_cal]), outcomes.subset(order[n_cal:])
        result = ltt_calibrate(cal, epsilon=epsilon, delta=delta, seed=split)
        if result.chosen_index is not None:
            chosen += 1
            violations += test.loss[:, result.chosen_index].mean() > epsilon
            samples.append(test.samples[:, result.chosen_index].mean())
        # Without the test: the cheapest configuration whose calibration loss is <= epsilon.
        ok = np.flatnonzero(cal.loss.mean(axis=0) <= epsilon)
        naive = ok[np.argmin(cal.cost("size")[ok])]
        naive_violations += test.loss[:, naive].mean() > epsilon
    assert chosen >= 0.9 * splits
    assert violations / splits <= delta + 3 * math.sqrt(delta * (1 - delta) / splits)
    assert naive_violations / splits > 0.2  # the check above has teeth
    assert np.mean(samples) < 20  # and the chosen sets stop early
