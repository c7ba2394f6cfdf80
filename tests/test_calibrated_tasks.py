"""Calibrated metrics inside lm-eval: anchor requests, aggregations, logged samples, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genclf_harness import calibration
from genclf_harness.cli.eval import main as genclf_eval
from genclf_harness.harness.classification_task import DEFAULT_INDUCTIVE_DOCS
from genclf_harness.harness.metrics import CONTENT_FREE_INPUTS, split_metric_name


def _task(name: str):
    from lm_eval.tasks import TaskManager

    from genclf_harness.resources import tasks_dir

    return TaskManager(include_path=str(tasks_dir()), include_defaults=False).load([name])["tasks"][name]


def test_metric_names_parse() -> None:
    assert split_metric_name("acc") == ("acc", None)
    assert split_metric_name("f1_macro_prior_em") == ("f1_macro", "prior_em")
    assert split_metric_name("majority_share_dcpmi") == ("majority_share", "dcpmi")
    with pytest.raises(AttributeError, match="not a genclf metric"):
        split_metric_name("acc_platt")


def test_anchor_requests_are_built_once_per_task_with_the_task_prompt() -> None:
    task = _task("genclf_rte")
    task.build_all_requests(limit=6, rank=0, world_size=1)
    by_doc: dict[int, list] = {}
    for instance in task.instances:
        by_doc.setdefault(instance.doc_id, []).append(instance)
    sizes = sorted(len(v) for v in by_doc.values())
    extra = len(CONTENT_FREE_INPUTS) + 2  # content-free inputs, the domain premise, the empty context
    inductive = DEFAULT_INDUCTIVE_DOCS  # training documents for the *_ind metrics
    assert sizes == [2] * 5 + [2 + 2 * (extra + inductive)]
    anchor = max(by_doc.values(), key=len)
    contexts = [inst.arguments[0] for inst in anchor[2:]]
    instruction = "Decide whether each hypothesis follows from its premise: answer True or False.\n\n"
    assert contexts[0] == contexts[1] == instruction + "N/A\nQuestion: N/A True or False?\nAnswer:"
    assert contexts[2] == contexts[3] == instruction + "\nQuestion:  True or False?\nAnswer:"
    assert contexts[6] == instruction + "True or False?\nAnswer:"  # the domain premise
    assert contexts[8] == contexts[9] == ""  # unconditional, as lm-eval's acc_mutual_info
    assert [inst.arguments[1] for inst in anchor[2:4]] == [" True", " False"]
    assert [inst.idx for inst in anchor] == list(range(len(anchor)))
    # then the queries of a seeded sample of training documents, in the same frame, each label after each
    train = task.training_docs()
    train_queries = {task.doc_to_text(doc) for doc in train}
    tested = {task.doc_to_text(doc) for doc in task.eval_docs}
    inductive_contexts = contexts[2 * extra::2]
    assert len(set(inductive_contexts)) == inductive
    for context in inductive_contexts:
        assert context.startswith(instruction)
        assert context[len(instruction):] in train_queries and context[len(instruction):] not in tested
    assert [inst.arguments[0] for inst in anchor[2 + 2 * extra:]][1::2] == inductive_contexts
    # a second build (another lm-eval run in the same process) gets its anchor again
    task.build_all_requests(limit=3, rank=0, world_size=1)
    assert len(task.instances) == 3 * 2 + 2 * (extra + inductive)


def test_without_inductive_documents_the_ind_metrics_are_left_out() -> None:
    task = _task("genclf_rte")
    task.config.metadata = {**(task.config.metadata or {}), "inductive_docs": 0}
    task.build_all_requests(limit=2, rank=0, world_size=1)
    extra = len(CONTENT_FREE_INPUTS) + 2
    assert len(task.instances) == 2 * 2 + 2 * extra  # nothing scored for them
    doc = task.eval_docs[0]
    names = set(task.process_results(doc, [(-1.0, False), (-2.0, False)]))
    assert "acc_prior" in names and "acc_bc" in names
    assert not {name for name in names if name.endswith("_ind")}
    task.config.metadata["inductive_docs"] = "many"
    with pytest.raises(ValueError, match="whole number"):
        task.build_all_requests(limit=2, rank=0, world_size=1)


def test_calibration_lifts_macro_f1_on_a_biased_task(tmp_path: Path) -> None:
    genclf_eval(["--model", "hf", "--model_args", "pretrained=default", "--tasks", "genclf_sst2",
                 "--limit", "120", "--batch_size", "32", "--log_samples", "--output_path", str(tmp_path)])
    (results_file,) = tmp_path.rglob("results_*.json")
    results = json.loads(results_file.read_text())
    sst2 = results["results"]["genclf_sst2"]
    # The default model calls most reviews one thing; prior matching evens out the predictions.
    assert sst2["majority_share,none"] > 0.75
    assert sst2["majority_share_prior,none"] < 0.65
    assert sst2["f1_macro_prior,none"] > sst2["f1_macro,none"] + 0.05
    fits = results["genclf_manifest"]["tasks"]["genclf_sst2"]["calibration"]
    assert set(fits) >= {"prior", "prior_em", "bc", "cc", "dcpmi", "pmi"}
    assert fits["prior"]["params"]["max_marginal_error"] < 1e-6

    (samples_file,) = tmp_path.rglob("samples_genclf_sst2_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 120
    probs = np.array([s["genclf"]["probs"]["prior"] for s in samples])
    # prior matching makes the mean predicted probability of each class uniform
    np.testing.assert_allclose(probs.mean(axis=0), [0.5, 0.5], atol=1e-5)
    gold = np.array([s["genclf"]["gold"] for s in samples])
    assert np.mean(probs.argmax(axis=1) == gold) == pytest.approx(sst2["acc_prior,none"])
    lls = np.array([s["genclf"]["label_loglikelihoods"] for s in samples])
    assert np.mean(lls.argmax(axis=1) == gold) == pytest.approx(sst2["acc,none"])
    assert "acc_prior" not in samples[0]  # one copy of the scores per sample, not one per metric

    # Inductive: fitted on the anchor's training-split documents, applied to the evaluated ones.
    anchor = next(s["genclf"]["anchor_scores"] for s in samples if "anchor_scores" in s["genclf"])
    train_scores = np.array(anchor["inductive"])
    assert train_scores.shape == (DEFAULT_INDUCTIVE_DOCS, 2)
    fitted = calibration.fit("prior", train_scores)
    assert np.mean(fitted.apply(lls).argmax(axis=1) == gold) == pytest.approx(sst2["acc_prior_ind,none"])
    assert fits["prior_ind"]["fitted_on"]["num_rows"] == DEFAULT_INDUCTIVE_DOCS
    np.testing.assert_allclose(np.array(samples[0]["genclf"]["probs"]["prior_ind"]),
                               np.exp(fitted.apply(lls[:1]))[0], atol=1e-6)
    # fitted on other documents, the offsets still remove most of the label bias
    assert sst2["f1_macro_prior_ind,none"] > sst2["f1_macro,none"]

    # Error bars (lm-eval's default --bootstrap_iters): lm-eval's own for acc (a mean), and for the
    # genclf metrics a plain bootstrap over the documents in id order, 1,000 resamples for a
    # raw metric and 100 that each refit the calibration for a calibrated one.
    order = np.argsort([s["doc"]["id"] for s in samples], kind="stable")  # the items' ids
    lls, gold = lls[order], gold[order]
    correct = (lls.argmax(axis=1) == gold).astype(float)
    assert sst2["acc_stderr,none"] == pytest.approx(np.std(correct, ddof=1) / np.sqrt(120), rel=1e-9)
    indices = np.random.default_rng(1234).integers(0, 120, size=(1000, 120))
    raw_f1 = [calibration.macro_f1(calibration.normalize(lls[i]), gold[i]) for i in indices]
    assert sst2["f1_macro_stderr,none"] == pytest.approx(np.std(raw_f1, ddof=1), rel=1e-9)
    refit = [np.mean(calibration.fit("prior", lls[i]).apply(lls[i]).argmax(axis=1) == gold[i]) for i in indices[:100]]
    assert sst2["acc_prior_stderr,none"] == pytest.approx(np.std(refit, ddof=1), rel=1e-9)
    assert all(isinstance(sst2[key], float) for key in sst2 if key.endswith("_stderr,none"))


@pytest.mark.slow
def test_data_parallel_ranks_share_the_work_and_give_one_process_results(tmp_path: Path,
                                                                        default_model_dir: Path) -> None:
    """Two CPU ranks (gloo) each score only their share of the documents, and the gathered results
    (every calibrated metric and its stderr, every document's label log-likelihoods, fp32) equal
    one process's. (The anchor's extra contexts are scored once per rank.)"""
    import os
    import re
    import subprocess
    import sys

    args = ["--model", "genclf-hf", "--model_args", "pretrained=default,dtype=float32", "--tasks", "genclf_cb",
            "--limit", "12", "--batch_size", "8", "--log_samples"]
    # accelerate launch --cpu starts ONE process whatever --num_processes says; torchrun starts two,
    # and ACCELERATE_USE_CPU makes accelerate's state MULTI_CPU (gloo)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "genclf_harness.cli.eval"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    two = subprocess.run([*launch, *args, "--output_path", str(tmp_path / "two")], timeout=900,
                         capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "genclf_harness.cli.eval", *args, "--output_path", str(tmp_path / "one")],
                         timeout=900, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]

    shares = {int(rank): int(count) for rank, count in
              re.findall(r"genclf-hf rank (\d)/2 scored (\d+) documents", two.stderr)}
    assert shares == {0: 6, 1: 6}, two.stderr[-3000:]  # each rank its half of the 12 documents
    runs = {}
    for name in ("one", "two"):
        results = json.loads(next((tmp_path / name).rglob("results_*.json")).read_text())
        samples = [json.loads(line) for line in next((tmp_path / name).rglob("samples_genclf_cb_*.jsonl"))
                   .read_text().splitlines()]
        runs[name] = (results, {s["doc"]["id"]: s["genclf"]["label_loglikelihoods"] for s in samples})
    (one_results, one_lls), (two_results, two_lls) = runs["one"], runs["two"]
    assert two_results["genclf_manifest"]["model"]["world_size"] == 2
    assert one_results["genclf_manifest"]["model"].get("world_size", 1) == 1
    assert sorted(two_lls) == sorted(one_lls) and len(one_lls) == 12
    for doc_id, values in one_lls.items():
        np.testing.assert_allclose(two_lls[doc_id], values, atol=1e-4)
    one_cb, two_cb = one_results["results"]["genclf_cb"], two_results["results"]["genclf_cb"]
    assert two_cb["sample_len"] == 12
    for key, value in one_cb.items():
        if isinstance(value, float):
            assert two_cb[key] == pytest.approx(value, abs=1e-6), key
