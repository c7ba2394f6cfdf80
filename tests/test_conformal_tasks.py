"""Conformal label sets, HELM's calibration metrics and temperature scaling as genclf task metrics:
the aggregations on hand-made items, and the real default model on AG News through lm-eval.

The coverage guarantee is checked on real scores: AG News test documents scored by the default
model, prior-matched, split-conformal sets calibrated on the training split's documents must cover
the gold label at least 1 - alpha - 0.05 of the time for alpha 0.1 and 0.2.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from genclf_harness import calibration as cal
from genclf_harness.harness import conformal_metrics as cm
from genclf_harness.harness import metrics


def _items(n: int = 120, k: int = 3, *, seed: int = 0, train: int = 60, alpha: float | None = None,
           source: str | None = None) -> list[metrics.ScoreItem]:
    """Documents whose scores favour the gold label with noise, the first carrying an anchor with
    labelled training rows drawn the same way (so split conformal is valid for them)."""
    rng = np.random.default_rng(seed)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        gold = rng.integers(0, k, count)
        scores = rng.normal(0.0, 1.0, (count, k))
        scores[np.arange(count), gold] += 1.5
        return scores, gold

    scores, gold = draw(n)
    rows, labels = draw(train)
    anchor = {"task": "t", metrics.INDUCTIVE_SECTION: rows.tolist(), metrics.INDUCTIVE_LABELS: labels.tolist(),
              metrics.TRAIN_PRIOR_KEY: np.bincount(labels, minlength=k).tolist()}
    if alpha is not None:
        anchor[cm.ALPHA_KEY] = alpha
    if source is not None:
        anchor[cm.SOURCE_KEY] = source
    return [metrics.make_item(i, int(gold[i]), scores[i].tolist(), anchor if i == 0 else None) for i in range(n)]


def test_set_metric_names_parse_and_resolve() -> None:
    assert cm.split_set_metric_name("coverage_lac") == ("coverage", "lac", None)
    assert cm.split_set_metric_name("set_size_raps_auto") == ("set_size", "raps", "auto")
    assert cm.split_set_metric_name("coverage_lacx") is None
    assert metrics.split_metric_name("singleton_aps_prior") == ("singleton_aps", "prior")
    assert metrics.coverage_lac is metrics.coverage_lac  # one object per name (the registry relies on it)


def test_split_conformal_sets_use_the_training_rows_and_their_threshold() -> None:
    """The raw LAC sets equal the calibration layer's on the training rows; the manifest records n,
    alpha, score and threshold, and coverage by set size."""
    items = _items(alpha=0.2)
    scores, gold, anchor = metrics.arrays(items)
    rows = np.asarray(anchor[metrics.INDUCTIVE_SECTION])
    labels = np.asarray(anchor[metrics.INDUCTIVE_LABELS])
    expected = cal.conformal.fit_conformal(cal.normalize(rows), labels, score="lac", alpha=0.2)
    cm.CONFORMAL.clear()
    coverage = metrics.coverage_lac(items)
    sets = expected.sets(cal.normalize(scores))
    assert coverage == pytest.approx(float(sets[np.arange(len(gold)), gold].mean()))
    assert metrics.set_size_lac(items) == pytest.approx(float(sets.sum(axis=1).mean()))
    record = cm.CONFORMAL["t"]["coverage_lac"]
    assert (record["n"], record["alpha"], record["score"]) == (60, 0.2, "lac")
    assert record["threshold"] == pytest.approx(expected.threshold)
    assert "training split" in record["calibration_documents"]
    assert sum(count for count, _ in record["coverage_by_size"].values()) == len(gold)


def test_cross_fit_when_asked_and_never_calibrates_a_document_on_itself() -> None:
    items = _items(source="cross_fit", alpha=0.1)
    scores, gold, _ = metrics.arrays(items)
    crossed = cal.conformal.cross_fit_sets(cal.normalize(scores), gold, score="aps", alpha=0.1,
                                           seed=cm.CROSS_FIT_SEED)
    assert metrics.coverage_aps(items) == pytest.approx(float(crossed.sets[np.arange(len(gold)), gold].mean()))
    assert "cross-fit" in cm.CONFORMAL["t"]["coverage_aps"]["calibration_documents"]


def test_sets_after_a_calibration_calibrate_the_training_rows_the_same_way() -> None:
    """coverage_lac_prior: the prior-matching offsets fitted on the evaluated documents are applied to
    the training rows too before the threshold is taken (a calibration skipped on either side gives
    another set size here)."""
    items = _items(alpha=0.2)
    scores, gold, anchor = metrics.arrays(items)
    fitted = cal.fit("prior", scores)
    rows = np.asarray(anchor[metrics.INDUCTIVE_SECTION])
    predictor = cal.conformal.fit_conformal(fitted.apply(rows), np.asarray(anchor[metrics.INDUCTIVE_LABELS]),
                                            score="lac", alpha=0.2)
    sets = predictor.sets(fitted.apply(scores))
    assert metrics.set_size_lac_prior(items) == pytest.approx(float(sets.sum(axis=1).mean()))
    unadjusted = cal.conformal.fit_conformal(cal.normalize(rows), np.asarray(anchor[metrics.INDUCTIVE_LABELS]),
                                             score="lac", alpha=0.2).sets(fitted.apply(scores))
    assert not np.array_equal(unadjusted, sets)


def test_alpha_below_one_over_n_plus_one_leaves_the_metric_out(caplog) -> None:
    items = _items(train=5, alpha=0.1)  # 1/(5+1) > 0.1
    caplog.set_level(logging.WARNING, logger="genclf_harness")
    assert math.isnan(metrics.coverage_raps(items))
    assert "coverage_raps left out" in caplog.text and "alpha" in caplog.text


def test_helm_metrics_and_temperature_scaling_as_task_metrics() -> None:
    from genclf_harness.calibration import helm

    items = _items()
    scores, gold, anchor = metrics.arrays(items)
    helm_values = helm.helm_calibration_metrics(scores, gold)
    for name in ("ece_mass10", "ece_mass1", "ece_platt_mass10", "selective_acc_at_10", "cov_acc_area"):
        assert getattr(metrics, name)(items) == pytest.approx(helm_values[name])
    fitted = helm.fit_temperature(np.asarray(anchor[metrics.INDUCTIVE_SECTION]),
                                  np.asarray(anchor[metrics.INDUCTIVE_LABELS]))
    tempered = fitted.apply(scores)
    assert metrics.ece_mass10_ts(items) == pytest.approx(helm.equal_mass_ece(*helm.confidence_and_correct(
        tempered, gold), num_bins=10))
    assert metrics.acc_ts(items) == metrics.acc(items)  # a temperature never changes the ranking
    assert metrics.FITTED["t"]["ts"]["temperature"] == pytest.approx(fitted.temperature)


def test_bootstrap_stderr_of_set_and_helm_metrics_is_seeded_and_positive() -> None:
    items = _items()
    first = metrics.bootstrap_stderr("coverage_lac_auto", items, 30)
    assert first > 0 and first == metrics.bootstrap_stderr("coverage_lac_auto", items, 30)
    assert metrics.bootstrap_stderr("ece_mass10", items, 30) > 0


def test_logged_samples_carry_each_documents_sets() -> None:
    items = _items(alpha=0.2)
    samples = [{"coverage_lac": item, "doc_id": i} for i, item in enumerate(items)]
    metrics.annotate_samples(samples)
    scores, gold, anchor = metrics.arrays(items)
    predictor = cal.conformal.fit_conformal(cal.normalize(np.asarray(anchor[metrics.INDUCTIVE_SECTION])),
                                            np.asarray(anchor[metrics.INDUCTIVE_LABELS]), score="lac", alpha=0.2)
    sets = predictor.sets(cal.normalize(scores))
    assert [s["genclf"]["sets"]["lac"] for s in samples] == [np.flatnonzero(row).tolist() for row in sets]


@pytest.mark.slow
def test_real_scores_cover_at_the_promised_rate(tmp_path, default_model_dir) -> None:
    """The default model on 400 AG News test documents through lm-eval (genclf-hf, fp32): the
    prior-matched LAC and APS sets calibrated on the training split (inductive_docs 200) cover the
    gold label at least 1 - alpha - 0.05 for alpha 0.1 and 0.2, and the sets are larger at 0.1."""
    import json

    from genclf_harness.cli.eval import main as genclf_eval

    coverage = {}
    for alpha in (0.1, 0.2):
        out = tmp_path / f"alpha{alpha}"
        assert genclf_eval(["--model", "genclf-hf", "--model_args", "pretrained=default,dtype=float32",
                            "--tasks", "genclf_agnews", "--limit", "400", "--batch_size", "16", "--output_path",
                            str(out), "--metadata",
                            json.dumps({"inductive_docs": 200, "conformal_alpha": alpha})]) == 0
        results = json.loads(next(out.rglob("results_*.json")).read_text())
        task = results["results"]["genclf_agnews"]
        coverage[alpha] = task
        manifest = results["genclf_manifest"]["tasks"]["genclf_agnews"]["conformal"]
        assert manifest["coverage_lac"]["alpha"] == alpha and manifest["coverage_lac"]["n"] == 200
        for score in ("lac", "aps"):
            assert task[f"coverage_{score}_auto,none"] >= 1 - alpha - 0.05, (score, alpha, task)
    assert coverage[0.1]["set_size_lac_auto,none"] > coverage[0.2]["set_size_lac_auto,none"]


def test_temperature_scaling_at_chance_flattens_instead_of_failing_the_run(caplog) -> None:
    """Scores that rank the gold label no better than chance (a weak model on a small training
    sample) have no finite best temperature: the largest is returned, said so, and the _ts metrics
    are numbers, not a crashed evaluation."""
    from genclf_harness.calibration import helm

    rng = np.random.default_rng(3)
    rows = rng.normal(size=(40, 2))
    labels = (rows[:, 0] > rows[:, 1]).astype(int)  # the lower score is always gold: worse than chance
    fitted = helm.fit_temperature(rows, labels)
    assert fitted.temperature == helm.TEMPERATURE_BOUNDS[1] and "no better than chance" in fitted.params["at_bound"]
    items = _items()
    anchor = metrics.arrays(items)[2]
    anchor[metrics.INDUCTIVE_SECTION], anchor[metrics.INDUCTIVE_LABELS] = rows.tolist(), labels.tolist()
    anchor[metrics.TRAIN_PRIOR_KEY] = [20, 20]
    two_way = [metrics.make_item(i, int(item.gold % 2), list(item.lls[:2]), item.anchor) for i, item in enumerate(items)]
    assert math.isfinite(metrics.ece_mass10_ts(two_way))
