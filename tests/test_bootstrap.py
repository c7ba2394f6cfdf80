"""Bootstrap error bars of genclf metrics: seeded, equal to a plain bootstrap, calibration refitted."""

from __future__ import annotations

import numpy as np
import pytest

from genclf_harness import calibration as cal
from genclf_harness.harness import metrics


def items_of(scores: np.ndarray, gold: np.ndarray) -> list[metrics.ScoreItem]:
    return [metrics.ScoreItem(i, int(g), tuple(map(float, row)), None) for i, (g, row) in enumerate(zip(gold, scores))]


def biased_scores(n: int = 300, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, k, n)
    scores = rng.normal(size=(n, k))
    scores[np.arange(n), gold] += 1.5
    scores[:, 0] += 1.0  # a label bias for calibration to remove
    return scores, gold


def test_stderr_equals_a_plain_bootstrap_with_the_same_seed():
    scores, gold = biased_scores()
    rng = np.random.default_rng(1234)
    plain_acc, plain_f1 = [], []
    for _ in range(200):
        sample = rng.integers(0, len(gold), len(gold))
        fitted = cal.fit("bc", scores[sample])
        plain_f1.append(cal.macro_f1(fitted.apply(scores[sample]), gold[sample]))
    rng = np.random.default_rng(1234)
    for _ in range(200):
        sample = rng.integers(0, len(gold), len(gold))
        plain_acc.append(sum(int(np.argmax(scores[i]) == gold[i]) for i in sample) / len(sample))
    items = items_of(scores, gold)
    assert metrics.bootstrap_stderr("acc", items, 200) == pytest.approx(np.std(plain_acc, ddof=1), rel=1e-12)
    assert metrics.bootstrap_stderr("macro_f1_bc", items, 200) == pytest.approx(np.std(plain_f1, ddof=1), rel=1e-12)
    # seeded: the same call gives the same value
    assert metrics.bootstrap_stderr("macro_f1_bc", items, 50) == metrics.bootstrap_stderr("macro_f1_bc", items, 50)


def test_refitting_inside_resamples_counts_the_calibrations_own_variance():
    # Binary, nearly hard scores whose gold label is "above the median": prior matching fitted on
    # all documents puts the threshold at the median and is right on almost every document, so a
    # fit reused on every resample shows almost no variance; refitted, the threshold moves with
    # each resample's median and the error bar shows it.
    rng = np.random.default_rng(3)
    x = rng.normal(size=400)
    gold = (x > np.median(x)).astype(np.int64)
    scores = np.stack([np.zeros_like(x), 40 * x + 25], axis=1)  # heavily biased towards label 1
    items = items_of(scores, gold)
    refit = metrics.bootstrap_stderr("acc_prior", items, 200)
    fixed = cal.fit("prior", scores)
    reused = cal.bootstrap_stderr(lambda i: cal.accuracy(fixed.apply(scores[i]), gold[i]), len(gold), 200)
    assert refit > 2 * reused
    assert cal.accuracy(fixed.apply(scores), gold) > 0.95


def test_inductive_rows_are_resampled_too():
    scores, gold = biased_scores()
    train, _ = biased_scores(seed=5, n=40)
    anchor = {"task": "t", metrics.INDUCTIVE_SECTION: train.tolist()}
    items = items_of(scores, gold)
    items[0] = items[0]._replace(anchor=anchor)
    with_rows = metrics.bootstrap_stderr("acc_prior_ind", items, 100)
    fixed = cal.fit("prior", train)
    without = cal.bootstrap_stderr(lambda i: cal.accuracy(fixed.apply(scores[i]), gold[i]), len(gold), 100)
    assert with_rows > without > 0


def test_paired_difference_is_tighter_than_either_metric():
    scores, gold = biased_scores()
    raw = lambda i: cal.accuracy(cal.normalize(scores[i]), gold[i])  # noqa: E731
    bc = lambda i: cal.accuracy(cal.fit("bc", scores[i]).apply(scores[i]), gold[i])  # noqa: E731
    stderr, low, high = cal.paired_bootstrap(bc, raw, len(gold), 200)
    assert low < bc(np.arange(len(gold))) - raw(np.arange(len(gold))) < high
    assert stderr < cal.bootstrap_stderr(raw, len(gold), 200)


def test_the_lm_eval_hook_gives_genclf_aggregations_a_stderr_and_honours_zero():
    import lm_eval.evaluator_utils as evaluator_utils

    metrics.install_stderr_hook()
    metrics.install_stderr_hook()  # idempotent
    scores, gold = biased_scores(n=60)
    items = items_of(scores, gold)
    aggregate = getattr(metrics, "acc_prior")
    stderr_fn = evaluator_utils.stderr_for_metric(metric=aggregate, bootstrap_iters=100000)
    assert stderr_fn(items) == pytest.approx(metrics.bootstrap_stderr("acc_prior", items, 100))
    assert evaluator_utils.stderr_for_metric(metric=aggregate, bootstrap_iters=0) is None
    from lm_eval.api.metrics import mean
    assert evaluator_utils.stderr_for_metric(metric=mean, bootstrap_iters=10) is not None  # lm-eval's own kept
    with pytest.raises(ValueError, match="at least 2 documents"):
        cal.bootstrap_stderr(lambda i: 0.0, 1, 10)


def test_the_stderr_bootstrap_records_calibrated_minus_raw_for_the_manifest_and_report(tmp_path):
    """The calibrated metric's own resamples give its paired difference from raw: equal to
    cal.paired_bootstrap on the same seed, reported by genclf-report from the manifest."""
    import json

    from genclf_harness.report import write_report

    scores, gold = biased_scores(n=1000)
    items = items_of(scores, gold)
    items[0] = items[0]._replace(anchor={"task": "t"})
    metrics.PAIRED.clear()
    metrics.bootstrap_stderr("acc_bc", items, 200)
    entry = metrics.PAIRED["t"]["acc_bc"]
    raw = lambda i: cal.accuracy(cal.normalize(scores[i]), gold[i])  # noqa: E731
    bc = lambda i: cal.accuracy(cal.fit("bc", scores[i]).apply(scores[i]), gold[i])  # noqa: E731
    stderr, low, high = cal.paired_bootstrap(bc, raw, len(gold), 200)
    every = np.arange(len(gold))
    assert entry["delta"] == pytest.approx(bc(every) - raw(every), abs=1e-6)
    assert entry["delta"] > 0.03  # the label bias built in: calibration helps here
    assert (entry["stderr"], entry["low"], entry["high"]) == pytest.approx((stderr, low, high), abs=1e-6)
    assert entry["low"] > 0  # a gain this size is more than noise
    results = {"results": {"t": {"acc,none": raw(every), "acc_stderr,none": 0.02, "acc_bc,none": bc(every),
                                 "acc_bc_stderr,none": 0.02, "sample_len": len(gold)}},
               "genclf_manifest": {"tasks": {"t": {"paired_vs_raw": metrics.PAIRED.pop("t")}}}}
    (tmp_path / "results_x.json").write_text(json.dumps(results))
    text = write_report(tmp_path).read_text()
    assert f"| bc | {bc(every):.3f} ± 0.020 |" in text
    assert f"| bc | {entry['delta']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}] |" in text


@pytest.mark.parametrize("metric", ["acc", "macro_f1", "ece_width15", "brier", "gold_nll", "majority_share"])
def test_the_vectorised_bootstrap_equals_one_resample_at_a_time(metric):
    """Raw metrics are bootstrapped all resamples at once (multiplicity rows); the values equal the
    metric computed on each resample in turn, including resamples that miss a class."""
    scores, gold = biased_scores(n=40, k=4, seed=2)
    indices = cal.resample_indices(len(gold), 300, seed=7)
    compute = {"acc": cal.accuracy, "macro_f1": cal.macro_f1, "ece_width15": cal.expected_calibration_error,
               "brier": cal.brier_score, "gold_nll": cal.negative_log_likelihood,
               "majority_share": lambda s, _g: cal.majority_share(s)}[metric]
    slow = np.array([compute(scores[i], gold[i]) for i in indices])
    fast = cal.resampled_metric(metric, scores, gold, indices)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    assert np.std(slow) > 0  # the resamples differ
