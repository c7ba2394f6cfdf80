"""Calibrated metrics inside lm-eval: anchor requests, aggregations, logged samples, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genclf_harness.cli.eval import main as genclf_eval
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
    assert sizes == [2] * 5 + [2 + 2 * extra]
    anchor = max(by_doc.values(), key=len)
    contexts = [inst.arguments[0] for inst in anchor[2:]]
    instruction = "Decide whether each hypothesis follows from its premise: answer True or False.\n\n"
    assert contexts[0] == contexts[1] == instruction + "N/A\nQuestion: N/A True or False?\nAnswer:"
    assert contexts[2] == contexts[3] == instruction + "\nQuestion:  True or False?\nAnswer:"
    assert contexts[6] == instruction + "True or False?\nAnswer:"  # the domain premise
    assert contexts[8] == contexts[9] == ""  # unconditional, as lm-eval's acc_mutual_info
    assert [inst.arguments[1] for inst in anchor[2:4]] == [" True", " False"]
    assert [inst.idx for inst in anchor] == list(range(len(anchor)))
    # a second build (another lm-eval run in the same process) gets its anchor again
    task.build_all_requests(limit=3, rank=0, world_size=1)
    assert len(task.instances) == 3 * 2 + 2 * extra


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


@pytest.mark.slow
def test_data_parallel_ranks_under_accelerate_launch(tmp_path: Path, default_model_dir: Path) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "genclf_harness.cli.eval", "--model", "genclf-hf", "--model_args", "pretrained=default",
           "--tasks", "genclf_cb", "--limit", "12", "--batch_size", "8", "--output_path", str(tmp_path)]
    subprocess.run(cmd, check=True, timeout=900, capture_output=True)
    (results_file,) = tmp_path.rglob("results_*.json")
    cb = json.loads(results_file.read_text())["results"]["genclf_cb"]
    # both ranks' documents were gathered, and the anchor-based methods found their scores
    assert cb["sample_len"] == 12
    for name in ("acc_cc,none", "acc_dcpmi,none", "acc_pmi,none", "acc_prior,none"):
        assert 0.0 <= cb[name] <= 1.0
