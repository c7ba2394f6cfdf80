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
    assert metrics.bootstrap_stderr("f1_macro_bc", items, 200) == pytest.approx(np.std(plain_f1, ddof=1), rel=1e-12)
    # seeded: the same call gives the same value
    assert metrics.bootstrap_stderr("f1_macro_bc", items, 50) == metrics.bootstrap_stderr("f1_macro_bc", items, 50)


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
