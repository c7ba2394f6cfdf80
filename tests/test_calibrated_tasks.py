"""Calibrated metrics inside lm-eval: anchor requests, aggregations, logged samples, manifest."""

from __future__ import annotations

import json
import math
import re
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
    assert split_metric_name("macro_f1_prior_em") == ("macro_f1", "prior_em")
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
    assert sst2["macro_f1_prior,none"] > sst2["macro_f1,none"] + 0.05
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
    assert sst2["macro_f1_prior_ind,none"] > sst2["macro_f1,none"]

    # Error bars (lm-eval's default --bootstrap_iters): lm-eval's own for acc (a mean), and for the
    # genclf metrics a plain bootstrap over the documents in id order, 1,000 resamples for a
    # raw metric and 100 that each refit the calibration for a calibrated one.
    order = np.argsort([s["doc"]["id"] for s in samples], kind="stable")  # the items' ids
    lls, gold = lls[order], gold[order]
    correct = (lls.argmax(axis=1) == gold).astype(float)
    assert sst2["acc_stderr,none"] == pytest.approx(np.std(correct, ddof=1) / np.sqrt(120), rel=1e-9)
    indices = np.random.default_rng(1234).integers(0, 120, size=(1000, 120))
    raw_f1 = [calibration.macro_f1(calibration.normalize(lls[i]), gold[i]) for i in indices]
    assert sst2["macro_f1_stderr,none"] == pytest.approx(np.std(raw_f1, ddof=1), rel=1e-9)
    refit = [np.mean(calibration.fit("prior", lls[i]).apply(lls[i]).argmax(axis=1) == gold[i]) for i in indices[:100]]
    assert sst2["acc_prior_stderr,none"] == pytest.approx(np.std(refit, ddof=1), rel=1e-9)
    assert all(isinstance(sst2[key], float) for key in sst2 if key.endswith("_stderr,none"))


def _one_and_two_ranks(tmp_path: Path, tasks: str, limit: int, batch: str = "8") -> dict:
    """genclf-eval with one process and with two CPU ranks (gloo); each run's stderr and results."""
    import os
    import subprocess
    import sys

    args = ["--model", "genclf-hf", "--model_args", "pretrained=default,dtype=float32", "--tasks", tasks,
            "--limit", str(limit), "--batch_size", batch, "--log_samples"]
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
    runs = {}
    for name, done in (("one", one), ("two", two)):
        results = json.loads(next((tmp_path / name).rglob("results_*.json")).read_text())
        samples = {path.name.removeprefix("samples_").rsplit("_", 1)[0]: [json.loads(line) for line in
                                                                          path.read_text().splitlines()]
                   for path in (tmp_path / name).rglob("samples_*.jsonl")}
        runs[name] = {"stderr": done.stderr, "results": results, "samples": samples}
    return runs


def _shares(stderr: str) -> dict[int, int]:
    import re

    return {int(rank): int(count) for rank, count in re.findall(r"genclf-hf rank (\d)/2 scored (\d+) documents", stderr)}


CONFORMAL_STDERR = re.compile(r"^(coverage|set_size|singleton|empty)_(lac|aps|raps)(_\w+)?_stderr,")


def _same_metrics(one: dict, two: dict) -> None:
    """Every float of one run's task results in the other's (NaN where NaN), to 1e-6.

    Except the bootstrap stderr of a conformal set metric, which only has to be a finite positive
    number in both: set membership is a step function of the scores (a label is in when its
    nonconformity is at most the threshold), fp32 scores of the same document differ by up to 1e-5
    between batch compositions (one process against two ranks), and on a dozen documents a resample
    whose threshold falls between two nearly equal scores flips a membership (seen on CB, whose APS
    scores crowd at 0.9943 within 1e-7: set_size_aps_stderr 0.245 against 0.181). The set metrics
    themselves, and every continuous metric's stderr, agree to 1e-6."""
    for key, value in one.items():
        if isinstance(value, float):
            if math.isnan(value):
                assert math.isnan(two[key]), key
            elif CONFORMAL_STDERR.match(key):
                assert math.isfinite(two[key]) and (two[key] > 0) == (value > 0), key
            else:
                assert two[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_data_parallel_ranks_share_the_work_and_give_one_process_results(tmp_path: Path,
                                                                        default_model_dir: Path) -> None:
    """Two CPU ranks (gloo) each score only their share of the documents, and the gathered results
    (every calibrated metric and its stderr, every document's label log-likelihoods, fp32) equal
    one process's. (The anchor's extra contexts are scored once per rank.)"""
    runs = _one_and_two_ranks(tmp_path, "genclf_cb", 12)
    assert _shares(runs["two"]["stderr"]) == {0: 6, 1: 6}, runs["two"]["stderr"][-3000:]  # each rank its half
    lls = {name: {s["doc"]["id"]: s["genclf"]["label_loglikelihoods"] for s in run["samples"]["genclf_cb"]}
           for name, run in runs.items()}
    one_results, two_results = runs["one"]["results"], runs["two"]["results"]
    assert two_results["genclf_manifest"]["model"]["world_size"] == 2
    assert one_results["genclf_manifest"]["model"].get("world_size", 1) == 1
    assert sorted(lls["two"]) == sorted(lls["one"]) and len(lls["one"]) == 12
    for doc_id, values in lls["one"].items():
        np.testing.assert_allclose(lls["two"][doc_id], values, atol=1e-4)
    assert two_results["results"]["genclf_cb"]["sample_len"] == 12
    _same_metrics(one_results["results"]["genclf_cb"], two_results["results"]["genclf_cb"])


@pytest.mark.slow
def test_data_parallel_stepwise_and_pairwise_tasks_equal_one_process(tmp_path: Path, default_model_dir: Path) -> None:
    """The corpus-level verifier tasks (ProcessBench's F1 over solutions, LLMBar's positional
    consistency over both orders) under two ranks: each rank scored its half of the documents and
    the gathered metrics are one process's."""
    tasks = ["genclf_processbench_gsm8k", "genclf_llmbar_pairwise"]
    runs = _one_and_two_ranks(tmp_path, ",".join(tasks), 6, batch="4")
    assert _shares(runs["two"]["stderr"]) == {0: 6, 1: 6}, runs["two"]["stderr"][-3000:]  # 3 + 3 of each task
    for task in tasks:
        one, two = (runs[name]["results"]["results"][task] for name in ("one", "two"))
        assert len(runs["two"]["samples"][task]) == len(runs["one"]["samples"][task]) == 6
        _same_metrics(one, two)
        assert any(isinstance(v, float) and not math.isnan(v) for k, v in one.items() if "stderr" not in k)


@pytest.mark.slow
def test_ranks_that_disagree_on_the_tasks_stop_before_scoring(tmp_path: Path) -> None:
    """Two CPU ranks given different --tasks (rank 0 SST-2, rank 1 CB): lm-eval would wait for ever
    at its gather; genclf-eval stops both ranks before any scoring, with one line naming both lists,
    and writes no results."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ranks.py"
    script.write_text(
        "import os, sys\n"
        "from genclf_harness.cli.eval import main\n"
        "task = 'genclf_sst2' if os.environ['RANK'] == '0' else 'genclf_cb'\n"
        f"sys.exit(main(['--model', 'genclf-hf', '--model_args', 'pretrained=default,dtype=float32', '--tasks', task,"
        f" '--limit', '4', '--output_path', {str(tmp_path / 'out')!r}]))\n")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                          timeout=600, capture_output=True, text=True, env=env)
    assert done.returncode != 0
    assert "genclf-eval: the ranks disagree on the tasks to evaluate: rank 0 has genclf_sst2, rank 1 has genclf_cb" \
        in done.stderr, done.stderr[-3000:]
    assert not re.search(r"genclf-hf rank \d/2 scored", done.stderr)  # neither rank scored anything
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("results_*.json"))
