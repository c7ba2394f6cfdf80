"""Prior matching to the training split's label distribution (``*_prior_train``), on skewed real data.

SST-2 rows rebuilt as a local data set whose test and training splits are both 80% negative: uniform
prior matching forces a 50/50 prediction mix, matching the training prior does not. Real default
model; the calibrated metric must equal an offline recomputation from the logged log-likelihoods
with the training split's label counts as the target (it would not if the target were skipped).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from genclf_harness import calibration


def _skewed(data_dir: Path, split: str, negative: int, positive: int) -> list[dict]:
    rows = [json.loads(line) for line in (data_dir / "sst2" / f"{split}.jsonl").read_text().splitlines() if line]
    names = ["negative", "positive"]
    neg = [r for r in rows if r["label"] == 0][:negative]
    pos = [r for r in rows if r["label"] == 1][:positive]
    out = neg + pos
    out.sort(key=lambda r: r.get("id", ""))
    return [{"text": r["text"], "label": names[r["label"]]} for r in out]


def _write(root: Path, train: list[dict], test: list[dict]) -> None:
    folder = root / "skewed_sst2"
    folder.mkdir(parents=True)
    for name, rows in (("train", train), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "meta.json").write_text(json.dumps({"labels": ["negative", "positive"]}), encoding="utf-8")


def test_prior_train_matches_the_training_label_distribution(data_dir: Path, tmp_path: Path,
                                                             default_model_dir: Path) -> None:
    from genclf_harness.cli.eval import main as genclf_eval

    root = tmp_path / "data"
    _write(root, _skewed(data_dir, "train", 160, 40), _skewed(data_dir, "test", 48, 12))
    genclf_eval(["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_skewed_sst2",
                 "--metadata", json.dumps({"data_dir": str(root), "inductive_docs": 30}), "--log_samples",
                 "--output_path", str(tmp_path / "out")])
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    task = results["results"]["genclf_skewed_sst2"]
    samples = [json.loads(line) for line in next((tmp_path / "out").rglob("samples_*.jsonl")).read_text().splitlines()]
    lls = np.array([s["genclf"]["label_loglikelihoods"] for s in samples])
    gold = np.array([s["genclf"]["gold"] for s in samples])
    assert len(gold) == 60 and gold.mean() == pytest.approx(0.2)

    target = np.array([0.8, 0.2])
    fitted = calibration.fit("prior", lls, target_prior=target)
    assert task["acc_prior_train,none"] == pytest.approx(np.mean(fitted.apply(lls).argmax(axis=1) == gold))
    probs = np.array([s["genclf"]["probs"]["prior_train"] for s in samples])
    np.testing.assert_allclose(probs.mean(axis=0), target, atol=1e-5)  # the training prior, not 50/50
    uniform = np.array([s["genclf"]["probs"]["prior"] for s in samples])
    np.testing.assert_allclose(uniform.mean(axis=0), [0.5, 0.5], atol=1e-5)
    assert "acc_prior_train_ind,none" in task and "macro_f1_prior_train,none" in task
    fits = results["genclf_manifest"]["tasks"]["genclf_skewed_sst2"]["calibration"]
    assert "training-split label counts [160, 40]" in json.dumps(fits["prior_train"])
    # the recommended column is prior_train here, and says so
    assert task["acc_auto,none"] == task["acc_prior_train,none"]
    assert fits["auto"]["params"]["chosen"] == "prior_train"


def test_a_label_absent_from_the_training_split_leaves_the_metric_out(data_dir: Path, tmp_path: Path,
                                                                        default_model_dir: Path, caplog) -> None:
    from genclf_harness.cli.eval import main as genclf_eval

    root = tmp_path / "data"
    _write(root, _skewed(data_dir, "train", 30, 0), _skewed(data_dir, "test", 6, 2))
    with caplog.at_level(logging.WARNING, logger="genclf_harness"):
        genclf_eval(["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_skewed_sst2",
                     "--metadata", json.dumps({"data_dir": str(root), "inductive_docs": 0}),
                     "--output_path", str(tmp_path / "out")])
    task = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]["genclf_skewed_sst2"]
    assert not any("prior_train" in key for key in task)
    assert "acc_prior,none" in task
    assert task["acc_auto,none"] == task["acc_prior,none"]  # no usable training prior: uniform matching
    assert "'positive' have no row in the training split" in caplog.text


def _shifted(n: int, prior: list[float], seed: int, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a biased, over-confident classifier on documents drawn with the given label prior."""
    rng = np.random.default_rng(seed)
    gold = rng.choice(k, size=n, p=prior)
    scores = rng.normal(size=(n, k))
    scores[np.arange(n), gold] += 2.0
    return 3.0 * scores + np.array([1.5, 0.0, -1.0]), gold


@pytest.mark.parametrize("prior", [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.34, 0.33, 0.33]])
def test_label_shift_estimators_recover_a_known_prior(prior):
    labelled, labels = _shifted(1500, [1 / 3] * 3, seed=1)
    scores, gold = _shifted(3000, prior, seed=2)
    bcts = calibration.fit("bcts_em", scores, labelled_logprobs=labelled, labelled_labels=labels)
    bbse, _ = calibration.estimate_prior_bbse(scores, labelled_logprobs=labelled, labelled_labels=labels)
    truth = np.bincount(gold, minlength=3) / len(gold)
    error = np.abs(np.array(bcts.params["estimated_prior"]) - truth).sum()
    assert error < 0.05
    assert np.abs(bbse - truth).sum() < 0.1
    # EM without the bias correction reads the model's own label bias as part of the prior
    em = calibration.fit("prior_em", scores).params["estimated_prior"]
    assert np.abs(np.array(em) - truth).sum() > 2 * error
    raw = calibration.accuracy(calibration.normalize(scores), gold)
    assert calibration.accuracy(bcts.apply(scores), gold) > raw


def test_bcts_recovers_a_known_temperature_and_bias():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(20000, 3)) * 2
    true_bias = np.array([0.6, 0.0, -0.6])
    logits = scores / 0.5 + true_bias  # T = 0.5
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    temperature, bias, _ = calibration.fit_bcts(scores, labels)
    assert temperature == pytest.approx(0.5, rel=0.05)
    np.testing.assert_allclose(bias, true_bias - true_bias.mean(), atol=0.05)


def test_label_shift_bad_input_is_named():
    labelled, labels = _shifted(60, [1 / 3] * 3, seed=1)
    scores, _ = _shifted(60, [0.5, 0.3, 0.2], seed=2)
    with pytest.raises(ValueError, match=r"label\(s\) \[2\] have no labelled document"):
        calibration.fit("bcts_em", scores, labelled_logprobs=labelled, labelled_labels=np.minimum(labels, 1))
    with pytest.raises(ValueError, match="one integer label per row"):
        calibration.fit("bbse", scores, labelled_logprobs=labelled, labelled_labels=labels[:10])
    with pytest.raises(ValueError, match="needs the keyword argument"):
        calibration.fit("bcts_em", scores)


def test_bcts_em_on_real_scores_estimates_the_shifted_prior(data_dir: Path, tmp_path: Path,
                                                            default_model_dir: Path) -> None:
    """Balanced labelled training documents, an 80/20 test set: BCTS+EM's estimate, end to end."""
    from genclf_harness.cli.eval import main as genclf_eval

    root = tmp_path / "data"
    _write(root, _skewed(data_dir, "train", 100, 100), _skewed(data_dir, "test", 80, 20))
    genclf_eval(["--model", "genclf-hf", "--model_args", "pretrained=default,dtype=bfloat16", "--tasks",
                 "genclf_skewed_sst2", "--metadata", json.dumps({"data_dir": str(root), "inductive_docs": 120}),
                 "--log_samples", "--output_path", str(tmp_path / "out")])
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    task = results["results"]["genclf_skewed_sst2"]
    samples = [json.loads(line) for line in next((tmp_path / "out").rglob("samples_*.jsonl")).read_text().splitlines()]
    lls = np.array([s["genclf"]["label_loglikelihoods"] for s in samples])
    gold = np.array([s["genclf"]["gold"] for s in samples])
    anchor = next(s["genclf"]["anchor_scores"] for s in samples if "anchor_scores" in s["genclf"])
    rows, labels = np.array(anchor["inductive"]), np.array(anchor["inductive_labels"])
    assert len(labels) == 120 and 0.3 < labels.mean() < 0.7
    fitted = calibration.fit("bcts_em", lls, labelled_logprobs=rows, labelled_labels=labels)
    assert task["acc_bcts_em,none"] == pytest.approx(np.mean(fitted.apply(lls).argmax(axis=1) == gold))
    estimated = np.array(fitted.params["estimated_prior"])
    recorded = results["genclf_manifest"]["tasks"]["genclf_skewed_sst2"]["calibration"]["bcts_em"]
    np.testing.assert_allclose(recorded["params"]["estimated_prior"], estimated)
    # The default model separates SST-2 weakly (AUC about 0.64 here), so the likelihood of the prior is
    # flat and its maximum lies at the boundary; it still moves from the labelled documents' 50/50
    # towards the truth (80/20), where plain EM estimates the model's own bias.
    assert estimated[0] > 0.6 and estimated.sum() == pytest.approx(1.0)
    assert isinstance(task["acc_bcts_em_stderr,none"], float)


def test_auto_never_reads_the_evaluated_labels():
    from genclf_harness.harness import metrics

    scores, gold = _shifted(200, [0.6, 0.3, 0.1], seed=7)
    for anchor in ({"task": "t", metrics.TRAIN_PRIOR_KEY: [60, 30, 10]}, {"task": "t"}):
        runs = []
        for labels in (gold, np.random.default_rng(0).permutation(gold), np.zeros_like(gold)):
            items = [metrics.ScoreItem(i, int(g), tuple(row), anchor if i == 0 else None)
                     for i, (g, row) in enumerate(zip(labels, scores))]
            logprobs, _ = metrics.calibrated_logprobs(items, "auto")
            runs.append((metrics.FITTED["t"]["auto"]["params"]["chosen"], logprobs.argmax(axis=1)))
        assert len({chosen for chosen, _ in runs}) == 1
        for _, predictions in runs[1:]:
            np.testing.assert_array_equal(predictions, runs[0][1])
    assert runs[0][0] == "prior"
    metrics.FITTED.clear()


def test_bench_shift_subsamples_to_the_prior_and_keeps_the_anchor():
    from genclf_harness.cli.bench_calibration import prior_errors, shifted
    from genclf_harness.harness import metrics

    labelled, labels = _shifted(300, [1 / 3] * 3, seed=1)
    scores, gold = _shifted(900, [1 / 3] * 3, seed=2)
    anchor = {"task": "t", metrics.INDUCTIVE_SECTION: labelled.tolist(), metrics.INDUCTIVE_LABELS: labels.tolist(),
              metrics.TRAIN_PRIOR_KEY: [100, 100, 100]}
    items = [metrics.ScoreItem(i, int(g), tuple(row), anchor if i == 5 else None)
             for i, (g, row) in enumerate(zip(gold, scores))]
    kept = shifted(items, [60, 30, 10])
    shares = np.bincount([item.gold for item in kept], minlength=3) / len(kept)
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1], atol=0.01)
    assert sum(item.anchor is not None for item in kept) == 1 and shifted(items, [60, 30, 10]) == kept
    errors = prior_errors(kept)
    assert errors["bcts_em"]["l1"] < 0.1 and errors["true_prior"] == pytest.approx([0.6, 0.3, 0.1], abs=0.01)
    # the oracle (an upper bound that reads the labels) runs through the same path
    oracle, _ = metrics.calibrated_logprobs(kept, "oracle")
    assert calibration.accuracy(oracle, np.array([item.gold for item in kept])) >= \
        calibration.accuracy(calibration.normalize(np.array([item.lls for item in kept])), np.array([item.gold for item in kept]))
    metrics.FITTED.clear()


def test_bench_inductive_docs_reach_the_tasks(default_model_dir: Path) -> None:
    """genclf-bench calibration/conformal/channel pass --inductive-docs as task metadata; lm-eval
    0.4.13 drops simple_evaluate's metadata when a task manager is given, so the benches ran on the
    task default (100) whatever was asked, until run_tasks gave the manager the metadata itself."""
    import argparse

    import genclf_harness.plugin  # noqa: F401  the manifest hook folds the logged samples, as after any genclf-eval run
    from genclf_harness.cli.bench_calibration import score_tasks
    from genclf_harness.harness import metrics

    args = argparse.Namespace(model="genclf-hf", model_args="pretrained=default,dtype=float32", tasks="genclf_sst2",
                              num_fewshot=0, limit=2, batch_size="8", device="cpu", apply_chat_template=False,
                              metadata={"inductive_docs": 7})
    items = score_tasks(args)["genclf_sst2"]
    anchors = [item.anchor for item in items if item.anchor]
    assert len(items) == 2 and len(anchors) == 1
    assert len(anchors[0][metrics.INDUCTIVE_SECTION]) == 7 and len(anchors[0][metrics.INDUCTIVE_LABELS]) == 7


def test_logged_samples_give_their_items_back_folded_or_not() -> None:
    """The benches read a run's ScoreItems from its logged samples; once the plugin's manifest hook is
    installed (any genclf-eval run in the process) lm-eval's samples carry them folded into a
    ``genclf`` field instead (CI failed on that: the bench found no ScoreItem)."""
    import copy

    from genclf_harness.harness import metrics

    scores, gold = _shifted(12, [0.5, 0.25, 0.25], seed=3)
    anchor = {"task": "t", metrics.INDUCTIVE_SECTION: scores[:4].tolist(), metrics.INDUCTIVE_LABELS: [0, 1, 2, 0]}
    items = [metrics.make_item(f"doc-{i}", int(g), row, anchor if i == 0 else None)
             for i, (g, row) in enumerate(zip(gold, scores))]
    raw = [{"doc_id": i, "doc": {"id": item.doc_id}, "acc": item, "f1_macro": item} for i, item in enumerate(items)]
    folded = copy.deepcopy(raw)
    metrics.annotate_samples(folded)
    assert not any(isinstance(v, metrics.ScoreItem) for sample in folded for v in sample.values())
    assert metrics.sample_items(raw) == items
    assert metrics.sample_items(folded) == items
    with pytest.raises(ValueError, match="sample #1 .*no genclf label scores"):
        metrics.sample_items([raw[0], {"doc_id": 5, "doc": {}, "acc": 1.0}])
