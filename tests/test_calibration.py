"""Tests of genclf_harness.calibration: hand-computed cases, solver invariants, bad input.

Pure numpy and fast: no model, no lm-eval.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from genclf_harness.calibration import (
    METHOD_INPUTS,
    METHODS,
    Calibration,
    ConvergenceError,
    accuracy,
    brier_score,
    classification_report,
    estimate_prior_em,
    expected_calibration_error,
    fit,
    fit_batch_calibration,
    fit_contextual_calibration,
    fit_domain_pmi,
    fit_pmi,
    fit_prior_em,
    fit_prior_matching,
    macro_f1,
    majority_share,
    negative_log_likelihood,
    normalize,
    oracle_accuracy,
    oracle_offsets,
)


def _biased_scores(num_docs: int, num_classes: int, seed: int, scale: float = 3.0) -> np.ndarray:
    """Random label log-likelihoods with a per-class bias, like a zero-shot model's word bias."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(num_docs, num_classes)) * scale + rng.normal(size=num_classes) * 2 - 5


def _marginals(calibration: Calibration, scores: np.ndarray) -> np.ndarray:
    return np.exp(calibration.apply(scores)).mean(axis=0)


def _gaussian_label_shift(prior: list[float], num_docs: int, seed: int):
    """Scores log p(x|k) of a known class-conditional model (unit Gaussians), labels drawn from
    ``prior``: the scores are exact posteriors under a uniform training prior."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    labels = rng.choice(len(prior), size=num_docs, p=prior)
    points = means[labels] + rng.normal(size=(num_docs, 2))
    scores = -0.5 * ((points[:, None, :] - means[None]) ** 2).sum(axis=-1)
    return scores, labels


# --- normalize and the Calibration object --------------------------------------------------------


def test_normalize_hand_computed_and_overflow_safe():
    out = normalize([[0.0, math.log(3.0)], [1000.0, 1000.0 + math.log(3.0)]])
    expected = [math.log(0.25), math.log(0.75)]
    np.testing.assert_allclose(out, [expected, expected], atol=1e-12)
    np.testing.assert_allclose(normalize([-2000.0, -2000.0]), [math.log(0.5)] * 2)


@pytest.mark.parametrize(
    ("bad", "message"),
    [(np.nan, r"1 NaN and 0 infinite.*logprobs\[1, 0\] = nan"), (-np.inf, r"0 NaN and 1 infinite")],
)
def test_non_finite_scores_are_refused_with_their_position(bad, message):
    scores = np.zeros((3, 2))
    scores[1, 0] = bad
    for call in (normalize, fit_prior_matching, fit_batch_calibration, fit_prior_em):
        with pytest.raises(ValueError, match=message):
            call(scores)
    with pytest.raises(ValueError, match=message):
        accuracy(scores, [0, 1, 0])
    with pytest.raises(ValueError, match=message):
        fit_prior_matching(np.zeros((3, 2))).apply(scores)


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match=r"shape \(rows, classes\)"):
        fit_prior_matching(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="empty"):
        fit_prior_matching(np.zeros((0, 3)))
    calibration = fit_prior_matching(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="has 2 classes but calibration 'prior' was fitted on 3"):
        calibration.apply(np.zeros((4, 2)))


def test_apply_is_the_same_on_raw_and_normalised_scores_and_fits_other_matrices():
    fit_scores = _biased_scores(200, 4, seed=1)
    test_scores = _biased_scores(50, 4, seed=2)  # inductive: another split, another N
    calibration = fit_prior_matching(fit_scores, split="validation")
    np.testing.assert_allclose(
        calibration.apply(test_scores), calibration.apply(normalize(test_scores)), atol=1e-12
    )
    out = calibration.apply(test_scores)
    assert out.shape == (50, 4)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(calibration.apply(test_scores[0]), out[0], atol=1e-12)
    assert calibration.fitted_on.split == "validation"
    assert calibration.fitted_on.num_rows == 200


def test_calibration_offsets_are_centred_read_only_and_round_trip_through_json():
    calibration = fit_prior_matching(_biased_scores(100, 3, seed=3), target_prior=[0.5, 0.3, 0.2])
    assert abs(calibration.offsets.sum()) < 1e-12
    with pytest.raises(ValueError):
        calibration.offsets[0] = 1.0
    data = json.loads(json.dumps(calibration.to_dict()))
    assert data["method"] == "prior"
    assert data["params"]["target_prior"] == [0.5, 0.3, 0.2]
    assert data["fitted_on"] == {
        "source": "documents",
        "num_rows": 100,
        "num_classes": 3,
        "split": None,
    }
    rebuilt = Calibration.from_dict(data)
    scores = _biased_scores(7, 3, seed=4)
    np.testing.assert_array_equal(rebuilt.apply(scores), calibration.apply(scores))
    assert rebuilt.params["target_prior"] == (0.5, 0.3, 0.2)
    with pytest.raises(ValueError, match="lacks"):
        Calibration.from_dict({"method": "prior"})


# --- prior matching ------------------------------------------------------------------------------


def test_prior_matching_two_documents_hand_computed():
    # Uniform target: with r = exp(b0 - b1), 0.9r/(0.9r+0.1) + 0.6r/(0.6r+0.4) = 1
    # reduces to 0.54 r^2 = 0.04.
    scores = np.log([[0.9, 0.1], [0.6, 0.4]])
    calibration = fit_prior_matching(scores)
    ratio = math.sqrt(0.04 / 0.54)
    half_log_ratio = math.log(ratio) / 2
    np.testing.assert_allclose(calibration.offsets, [half_log_ratio, -half_log_ratio], atol=1e-5)


def test_prior_matching_on_one_document_returns_the_target():
    target = np.array([0.2, 0.5, 0.3])
    scores = np.array([[-1.0, -7.0, -0.5]])
    calibration = fit_prior_matching(scores, target_prior=target)
    np.testing.assert_allclose(np.exp(calibration.apply(scores))[0], target, atol=1e-6)


@pytest.mark.parametrize(("num_classes", "num_docs"), [(2, 50), (5, 400), (300, 2000)])
@pytest.mark.parametrize("target_kind", ["uniform", "skewed"])
def test_prior_matching_marginals_match_the_target(num_classes, num_docs, target_kind):
    scores = _biased_scores(num_docs, num_classes, seed=num_classes)
    raw = np.exp(normalize(scores)).mean(axis=0)
    if target_kind == "uniform":
        target = np.full(num_classes, 1.0 / num_classes)
        calibration = fit_prior_matching(scores)
    else:
        target = np.random.default_rng(0).dirichlet(np.ones(num_classes)) + 0.1 / num_classes
        target /= target.sum()
        calibration = fit_prior_matching(scores, target_prior=target)
    assert np.max(np.abs(raw - target)) > 1e-2  # the raw scores really are off target
    assert np.max(np.abs(_marginals(calibration, scores) - target)) <= 1e-6
    assert calibration.params["max_marginal_error"] <= 1e-6


def test_prior_matching_with_a_class_of_vanishing_probability():
    scores = _biased_scores(500, 5, seed=5)
    scores[:, 2] -= 800.0  # exp(-800) underflows float64
    target = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    calibration = fit_prior_matching(scores, target_prior=target)
    assert np.max(np.abs(_marginals(calibration, scores) - target)) <= 1e-6
    assert calibration.offsets[2] - np.delete(calibration.offsets, 2).mean() > 750


def test_prior_matching_on_near_one_hot_scores():
    scores = _biased_scores(200, 5, seed=6, scale=50.0)
    calibration = fit_prior_matching(scores)
    assert np.max(np.abs(_marginals(calibration, scores) - 0.2)) <= 1e-6


def test_permuting_classes_permutes_the_offsets():
    scores = _biased_scores(300, 5, seed=7)
    target = np.array([0.4, 0.1, 0.2, 0.2, 0.1])
    permutation = np.array([3, 0, 4, 1, 2])
    original = fit_prior_matching(scores, target_prior=target)
    permuted = fit_prior_matching(scores[:, permutation], target_prior=target[permutation])
    np.testing.assert_allclose(permuted.offsets, original.offsets[permutation], atol=1e-5)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ([0.5, 0.6], "must sum to 1"),
        ([1.0, 0.0], r"strictly positive, but target_prior\[1\] = 0.0"),
        ([0.2, 0.3, 0.5], "has 3 entries but the scores have 2 classes"),
        ([np.nan, 0.5], "NaN"),
    ],
)
def test_bad_target_priors_are_refused(target, message):
    with pytest.raises(ValueError, match=message):
        fit_prior_matching(np.zeros((4, 2)), target_prior=target)


def test_non_convergence_raises_a_value_error_naming_the_residual():
    with pytest.raises(ConvergenceError, match=r"did not converge in 1 iterations.*marginal error"):
        fit_prior_matching(_biased_scores(100, 4, seed=8), max_iter=1)
    assert issubclass(ConvergenceError, ValueError)


# --- prior matching with an EM-estimated prior ---------------------------------------------------


def test_em_recovers_a_known_shifted_prior():
    true_prior = [0.7, 0.2, 0.1]
    scores, labels = _gaussian_label_shift(true_prior, 5000, seed=0)
    estimated, steps = estimate_prior_em(scores)
    empirical = np.bincount(labels, minlength=3) / labels.shape[0]
    assert np.max(np.abs(estimated - true_prior)) < 0.02
    assert np.max(np.abs(estimated - empirical)) < 0.02
    assert abs(estimated.sum() - 1.0) < 1e-12
    plain, plain_steps = estimate_prior_em(scores, accelerate=False)
    np.testing.assert_allclose(estimated, plain, atol=1e-6)
    assert steps < plain_steps


def test_prior_em_matches_its_estimate_and_beats_uniform_matching_under_label_shift():
    scores, labels = _gaussian_label_shift([0.7, 0.2, 0.1], 5000, seed=1)
    calibration = fit_prior_em(scores)
    estimated = np.array(calibration.params["estimated_prior"])
    assert np.max(np.abs(_marginals(calibration, scores) - estimated)) <= 1e-6
    assert calibration.params["training_prior"] == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    raw_accuracy = accuracy(scores, labels)
    uniform_accuracy = accuracy(fit_prior_matching(scores).apply(scores), labels)
    em_accuracy = accuracy(calibration.apply(scores), labels)
    assert em_accuracy > raw_accuracy + 0.05
    assert em_accuracy > uniform_accuracy + 0.05


def test_em_with_the_documents_own_mean_prediction_as_training_prior_changes_nothing():
    scores = _biased_scores(400, 3, seed=9)
    mean_prediction = np.exp(normalize(scores)).mean(axis=0)
    estimated, steps = estimate_prior_em(scores, training_prior=mean_prediction)
    np.testing.assert_allclose(estimated, mean_prediction, atol=1e-9)
    assert steps == 1
    calibration = fit_prior_em(scores, training_prior=mean_prediction)
    np.testing.assert_allclose(calibration.offsets, 0.0, atol=1e-6)


# --- batch calibration, contextual calibration, PMI ----------------------------------------------


def test_batch_calibration_hand_computed():
    scores = np.log([[0.6, 0.4], [0.8, 0.2]])
    calibration = fit_batch_calibration(scores)
    assert calibration.params["mean_prediction"] == pytest.approx((0.7, 0.3))
    expected = np.array([0.6 / 0.7, 0.4 / 0.3])
    np.testing.assert_allclose(np.exp(calibration.apply(scores[0])), expected / expected.sum())
    np.testing.assert_allclose(calibration.offsets, -np.log([0.7, 0.3]) + np.log([0.7, 0.3]).mean())


def test_batch_calibration_of_uniform_marginals_changes_nothing():
    scores = np.log([[0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]]) + 3.0
    calibration = fit_batch_calibration(scores)
    np.testing.assert_allclose(calibration.offsets, 0.0, atol=1e-12)
    np.testing.assert_allclose(calibration.apply(scores), normalize(scores), atol=1e-12)


def test_contextual_calibration_hand_computed():
    content_free = np.log([[0.8, 0.2], [0.6, 0.4]]) - 4.0  # unnormalised: rows are normalised
    calibration = fit_contextual_calibration(np.zeros((3, 2)), content_free_logprobs=content_free)
    assert calibration.params["content_free_prior"] == pytest.approx((0.7, 0.3))
    calibrated = np.exp(calibration.apply(np.log([0.6, 0.4])))
    np.testing.assert_allclose(calibrated, [0.391304347826, 0.608695652174], atol=1e-9)
    assert calibration.fitted_on.source == "content_free_inputs"
    assert calibration.fitted_on.num_rows == 2
    one_input = fit_contextual_calibration(
        np.zeros((3, 2)), content_free_logprobs=np.log([0.7, 0.3])
    )
    np.testing.assert_allclose(one_input.offsets, calibration.offsets, atol=1e-12)


def test_pmi_methods_hand_computed_and_equal_to_lm_eval_mutual_info_choice():
    document = np.array([[-1.0, -2.0], [-3.0, -1.0], [-0.2, -0.3]])
    premise = np.array([-0.5, -3.0])
    calibration = fit_domain_pmi(document, domain_logprobs=premise)
    pmi = document - premise  # [[-0.5, 1.0], ...]
    np.testing.assert_allclose(calibration.apply(document), normalize(pmi), atol=1e-12)
    first = np.exp(calibration.apply(document[0]))  # softmax([-0.5, 1.0])
    np.testing.assert_allclose(first, [1 / (1 + math.e**1.5), 1 / (1 + math.e**-1.5)])
    unconditional = np.array([-7.0, -4.0])
    mutual_info = fit_pmi(document, unconditional_logprobs=unconditional[None, :])
    lm_eval_choice = np.argmax(document - unconditional, axis=1)
    np.testing.assert_array_equal(mutual_info.apply(document).argmax(axis=1), lm_eval_choice)
    assert mutual_info.method == "pmi" and calibration.method == "dcpmi"


def test_side_inputs_with_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="content_free_logprobs has 3 classes but logprobs has 2"):
        fit_contextual_calibration(np.zeros((4, 2)), content_free_logprobs=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"domain_logprobs must have shape \(2,\)"):
        fit_domain_pmi(np.zeros((4, 2)), domain_logprobs=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        fit_pmi(np.zeros((4, 2)), unconditional_logprobs=[0.0, np.nan])


# --- registry ------------------------------------------------------------------------------------


def test_registry_names_every_method_and_fit_dispatches():
    assert set(METHODS) == {"prior", "prior_em", "bc", "cc", "dcpmi", "pmi", "bcts_em", "bbse", "ts"}
    assert set(METHOD_INPUTS) == set(METHODS)
    scores = _biased_scores(100, 3, seed=10)
    side_inputs = {
        "content_free_logprobs": _biased_scores(3, 3, seed=11),
        "domain_logprobs": np.array([-1.0, -2.0, -3.0]),
        "unconditional_logprobs": np.array([-4.0, -2.0, -3.0]),
        "labelled_logprobs": _biased_scores(30, 3, seed=12),
        "labelled_labels": np.arange(30) % 3,
    }
    for name in METHODS:
        extra = {key: side_inputs[key] for key in METHOD_INPUTS[name]}
        calibration = fit(name, scores, split="test", **extra)
        assert calibration.method == name
        assert calibration.fitted_on.split == "test"
        json.dumps(calibration.to_dict())
    np.testing.assert_allclose(
        fit("prior", scores, target_prior=[0.5, 0.25, 0.25]).offsets,
        fit_prior_matching(scores, target_prior=[0.5, 0.25, 0.25]).offsets,
    )


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown calibration method 'prio'.*Did you mean 'prior'"):
        fit("prio", np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"'cc' needs .*\['content_free_logprobs'\]"):
        fit("cc", np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"'bc' does not take \['target_prior'\]"):
        fit("bc", np.zeros((2, 2)), target_prior=[0.5, 0.5])


# --- metrics -------------------------------------------------------------------------------------


def _scores_predicting(predictions: list[int], num_classes: int) -> np.ndarray:
    scores = np.zeros((len(predictions), num_classes))
    scores[np.arange(len(predictions)), predictions] = 1.0
    return scores


def test_accuracy_and_majority_share_hand_computed():
    scores = _scores_predicting([0, 0, 1, 0], 3)
    assert accuracy(scores, [0, 1, 1, 2]) == 0.5
    assert majority_share(scores) == 0.75


def test_macro_f1_hand_computed_with_a_class_never_predicted():
    # gold [0,0,1,2], predicted [0,1,1,1]; class 3 is neither gold nor predicted: left out.
    # class 0: TP1 FP0 FN1 -> 2/3; class 1: TP1 FP2 FN0 -> 1/2; class 2 (never predicted): 0.
    scores = _scores_predicting([0, 1, 1, 1], 4)
    assert macro_f1(scores, [0, 0, 1, 2]) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # A class predicted but never gold counts (F1 = 0): gold [0,0], predicted [0,1].
    assert macro_f1(_scores_predicting([0, 1], 3), [0, 0]) == pytest.approx((2 / 3 + 0) / 2)
    assert macro_f1(_scores_predicting([2, 0, 1], 3), [2, 0, 1]) == 1.0


def test_ece_hand_computed():
    # Two documents at confidence 0.9 (one right, one wrong) and two at 0.65 (both right):
    # 0.5 * |0.5 - 0.9| + 0.5 * |1.0 - 0.65| = 0.375.
    scores = np.log([[0.9, 0.1], [0.9, 0.1], [0.65, 0.35], [0.35, 0.65]])
    assert expected_calibration_error(scores, [0, 1, 0, 1]) == pytest.approx(0.375)
    assert expected_calibration_error(scores, [0, 1, 0, 1], num_bins=1) == pytest.approx(
        abs(0.75 - (0.9 + 0.9 + 0.65 + 0.65) / 4)
    )


def test_ece_is_near_zero_when_calibrated_and_not_when_overconfident():
    rng = np.random.default_rng(12)
    probs = rng.dirichlet(np.ones(4), size=20000)
    labels = (rng.random((20000, 1)) > probs.cumsum(axis=1)).sum(axis=1)  # y ~ Categorical(p)
    assert expected_calibration_error(np.log(probs), labels) < 0.015
    assert expected_calibration_error(np.log(probs) * 4.0, labels) > 0.1


def test_brier_and_nll_hand_computed():
    scores = np.log([[0.8, 0.2], [0.5, 0.5]])
    assert brier_score(scores, [0, 1]) == pytest.approx((0.08 + 0.5) / 2)
    expected_nll = -(math.log(0.8) + math.log(0.5)) / 2
    assert negative_log_likelihood(scores, [0, 1]) == pytest.approx(expected_nll)


def test_oracle_finds_the_separating_offset_and_never_loses_accuracy():
    # Every document predicts class 0 raw; an offset of about +2 on class 1 separates them.
    scores = np.array([[0.0, -1.0], [0.0, -0.5], [0.0, -3.0], [0.0, -4.0]])
    labels = [1, 1, 0, 0]
    assert accuracy(scores, labels) == 0.5
    assert oracle_accuracy(scores, labels) == 1.0
    offsets = oracle_offsets(scores, labels)
    assert 1.0 < offsets[1] - offsets[0] < 3.0
    for seed in range(5):
        scores = _biased_scores(300, 6, seed=seed)
        labels = np.random.default_rng(seed).integers(0, 6, size=300)
        assert oracle_accuracy(scores, labels) >= accuracy(scores, labels)
        matched = fit_prior_matching(scores).apply(scores)
        assert oracle_accuracy(scores, labels) >= accuracy(matched, labels)


def test_classification_report_collects_every_metric():
    scores, labels = _gaussian_label_shift([0.5, 0.3, 0.2], 600, seed=2)
    report = classification_report(scores, labels)
    assert report == {
        "acc": accuracy(scores, labels),
        "f1_macro": macro_f1(scores, labels),
        "ece": expected_calibration_error(scores, labels),
        "brier": brier_score(scores, labels),
        "nll": negative_log_likelihood(scores, labels),
        "majority_share": majority_share(scores),
        "oracle_acc": oracle_accuracy(scores, labels),
    }
    assert "oracle_acc" not in classification_report(scores, labels, include_oracle=False)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 3], r"labels\[1\] = 3 is not a class id in \[0, 3\)"),
        ([0.0, 1.0], "must be integer class ids"),
        ([0, 1, 2], r"must have shape \(2,\)"),
    ],
)
def test_bad_labels_are_refused(labels, message):
    with pytest.raises(ValueError, match=message):
        accuracy(np.zeros((2, 3)), labels)
