"""``genclf-eval --calibrate``: any lm-eval multiple-choice task gets genclf's calibrated metrics,
its YAML unchanged. The tasks here are lm-eval's own MMLU template (``include:``d from the
installed lm-eval) pointed at a lettered AG News written from ../shared/data, and a TREC task
with the options as text in a per-document order (some documents with one option fewer), both in
a group; the default model scores them."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from genclf_harness import calibration as cal

LIMIT = 24
DEV = 32


def _rows(path: Path, count: int) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(count), handle)]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def choice_tasks(tmp_path_factory, data_dir: Path) -> Path:
    import lm_eval

    folder = tmp_path_factory.mktemp("choice_tasks")
    rng = random.Random(0)
    agnews = json.loads((data_dir / "agnews" / "meta.json").read_text())["labels"]
    for split, source, count in (("test", "test", LIMIT), ("dev", "train", DEV)):
        rows = []
        for row in _rows(data_dir / "agnews" / f"{source}.jsonl", count):
            options = agnews[:]
            rng.shuffle(options)  # the gold letter moves from document to document
            rows.append({"question": row["text"], "choices": options, "answer": options.index(agnews[row["label"]])})
        _write(folder / f"agnews_{split}.jsonl", rows)
    trec = json.loads((data_dir / "trec" / "meta.json").read_text())["labels"]
    rows = []
    for index, row in enumerate(_rows(data_dir / "trec" / "test.jsonl", LIMIT)):
        options = trec[:]
        rng.shuffle(options)
        if index % 3 == 0:  # one wrong option fewer: documents with 5 and 6 choices
            options.remove(next(o for o in options if o != trec[row["label"]]))
        rows.append({"question": row["text"], "choices": options, "answer": options.index(trec[row["label"]])})
    _write(folder / "trec_test.jsonl", rows)
    template = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    (folder / "lettered_agnews.yaml").write_text(
        f"include: {template}\ntask: lettered_agnews\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'agnews_test.jsonl'}\n    dev: {folder / 'agnews_dev.jsonl'}\n"
        "description: \"The following are multiple choice questions about the topic of news stories.\\n\\n\"\n")
    # The same dev documents as an evaluated task: the anchor's split rows must equal these scores.
    (folder / "lettered_agnews_dev.yaml").write_text(
        f"include: {template}\ntask: lettered_agnews_dev\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'agnews_dev.jsonl'}\n    dev: {folder / 'agnews_dev.jsonl'}\n"
        "description: \"The following are multiple choice questions about the topic of news stories.\\n\\n\"\n")
    (folder / "trec_options.yaml").write_text(
        "task: trec_options\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'trec_test.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nType:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\nmetadata:\n  version: 1.0\n")
    (folder / "mc_group.yaml").write_text("group: mc_group\ntask:\n  - lettered_agnews\n  - trec_options\n"
                                         "  - lettered_agnews_dev\n"
                                         "metadata:\n  version: 1.0\n")
    return folder


def _run(folder: Path, out: Path, model: str, calibrate: bool) -> tuple[dict, dict[str, list[dict]]]:
    from genclf_harness.cli.eval import main

    argv = ["--model", model, "--model_args", "pretrained=default,dtype=float32", "--tasks", "mc_group",
            "--include_path", str(folder), "--limit", str(DEV), "--log_samples", "--output_path", str(out),
            "--batch_size", "8", *(["--calibrate", "--circular"] if calibrate else [])]
    assert main(argv) == 0
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = {}
    for task in ("lettered_agnews", "trec_options", "lettered_agnews_dev"):
        path = next(p for p in out.rglob(f"samples_{task}_*.jsonl")  # not samples_<task>_dev_...
                    if re.fullmatch(rf"samples_{task}_\d{{4}}-.*\.jsonl", p.name))
        samples[task] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return results, samples


@pytest.fixture(scope="module")
def runs(choice_tasks: Path, tmp_path_factory, default_model_dir: Path):
    out = tmp_path_factory.mktemp("choice_runs")
    calibrated = _run(choice_tasks, out / "genclf", "genclf-hf", calibrate=True)
    stock = _run(choice_tasks, out / "stock", "hf", calibrate=False)
    return calibrated, stock


def test_every_subtask_gets_calibrated_metrics_beside_its_own(runs) -> None:
    (results, _), (stock, _) = runs
    for task in ("lettered_agnews", "trec_options"):
        ours, theirs = results["results"][task], stock["results"][task]
        assert ours["acc,none"] == theirs["acc,none"]  # the task's own metric is lm-eval's, untouched
        for metric in ("macro_f1", "ece_width15", "acc_prior", "acc_bc", "macro_f1_prior", "majority_share_prior",
                       "acc_auto"):
            assert isinstance(ours[f"{metric},none"], float), (task, metric)
        assert "acc_prior,none" not in theirs  # nothing is added without --calibrate
    assert results["results"]["trec_options"]["acc_norm,none"] == stock["results"]["trec_options"]["acc_norm,none"]
    manifest = results["genclf_manifest"]["tasks"]
    assert manifest["lettered_agnews"]["choice_calibration"]["classes"] == "choices"
    assert manifest["lettered_agnews"]["choice_calibration"]["choices"] == ["A", "B", "C", "D"]
    trec = manifest["trec_options"]["choice_calibration"]
    assert trec["classes"] == "positions" and trec["choice_counts"] == {"5": LIMIT // 3, "6": LIMIT - LIMIT // 3}
    assert "cc" in trec["left_out"] and "pmi" in trec["left_out"]
    assert "acc_prior_ind,none" not in results["results"]["trec_options"]  # no split, and two choice counts
    agnews = manifest["lettered_agnews"]["choice_calibration"]
    assert agnews["split"] == "few-shot split 'dev'" and agnews["inductive_docs"] == DEV
    assert agnews["auto"] == "prior_train" and sum(agnews["split_label_counts"]) == DEV


def test_genclf_hf_log_likelihoods_equal_stock_hf(runs) -> None:
    (_, samples), (_, stock) = runs
    for task in samples:
        ours = {s["doc_id"]: s["genclf"]["label_loglikelihoods"] for s in samples[task]}
        theirs = {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in stock[task]}
        assert ours.keys() == theirs.keys() and len(ours) == (DEV if task == "lettered_agnews_dev" else LIMIT)
        for doc_id in ours:
            np.testing.assert_allclose(ours[doc_id], theirs[doc_id], atol=1e-4)


def test_calibrated_metrics_equal_an_offline_recomputation(runs) -> None:
    """From the logged log-likelihoods alone: prior matching and batch calibration refitted here
    give the reported values (documents with 5 and 6 choices are fitted apart)."""
    (results, samples), _ = runs
    agnews = samples["lettered_agnews"]
    scores = np.array([s["genclf"]["label_loglikelihoods"] for s in agnews])
    gold = np.array([s["genclf"]["gold"] for s in agnews])
    reported = results["results"]["lettered_agnews"]
    raw_share = cal.majority_share(scores)
    for method in ("prior", "bc"):
        fitted = cal.fit(method, scores).apply(scores)
        assert reported[f"acc_{method},none"] == pytest.approx(cal.accuracy(fitted, gold), abs=1e-9)
        assert reported[f"macro_f1_{method},none"] == pytest.approx(cal.macro_f1(fitted, gold), abs=1e-9)
    assert reported["majority_share,none"] == pytest.approx(raw_share)
    assert reported["majority_share_prior,none"] <= raw_share  # prior matching spreads the letters
    # the split-based methods, from the anchor's rows: the dev documents prompted and scored as the
    # evaluated ones are (equal to the same documents evaluated as a task of their own)
    anchor = next(s["genclf"]["anchor_scores"] for s in agnews if s["genclf"].get("anchor_scores"))
    rows = np.array(anchor["inductive"])
    dev = samples["lettered_agnews_dev"]
    dev_scores = np.array([s["genclf"]["label_loglikelihoods"] for s in sorted(dev, key=lambda s: s["doc_id"])])
    np.testing.assert_allclose(rows, dev_scores, atol=1e-4)
    counts = np.bincount([s["genclf"]["gold"] for s in dev], minlength=4)
    assert anchor["train_label_counts"] == counts.tolist()
    prior_ind = cal.fit("prior", rows).apply(scores)
    assert reported["acc_prior_ind,none"] == pytest.approx(cal.accuracy(prior_ind, gold), abs=1e-9)
    prior_train = cal.fit("prior", scores, target_prior=counts / counts.sum()).apply(scores)
    assert reported["acc_prior_train,none"] == pytest.approx(cal.accuracy(prior_train, gold), abs=1e-9)
    assert reported["acc_auto,none"] == reported["acc_prior_train,none"]
    # pmi: every document has the letters A-D, each scored once after an empty context
    unconditional = np.array(anchor["pmi"][0])
    assert reported["acc_pmi,none"] == pytest.approx(cal.accuracy(scores - unconditional, gold), abs=1e-9)
    assert isinstance(reported["acc_bcts_em,none"], float) == (len(set(counts.nonzero()[0])) == 4)
    trec = samples["trec_options"]
    correct = []
    for count in (5, 6):
        group = [s for s in trec if len(s["genclf"]["label_loglikelihoods"]) == count]
        group_scores = np.array([s["genclf"]["label_loglikelihoods"] for s in group])
        predicted = cal.fit("prior", group_scores).apply(group_scores).argmax(axis=1)
        correct += list(predicted == np.array([s["genclf"]["gold"] for s in group]))
    assert results["results"]["trec_options"]["acc_prior,none"] == pytest.approx(np.mean(correct), abs=1e-9)


def test_circular_eval_rotates_the_options_and_leaves_the_tasks_own_metrics(runs) -> None:
    """--circular asks each lettered document under every rotation of its options (prompted as the
    document is); acc_circular and order_changes follow from the logged log-likelihoods, and a task
    whose prompt does not list its options is left out with the reason."""
    (results, samples), (stock, _) = runs
    ours = results["results"]["lettered_agnews"]
    assert ours["acc,none"] == stock["results"]["lettered_agnews"]["acc,none"]  # 12 more requests per document
    right, changed = [], []
    for sample in samples["lettered_agnews"]:
        lls = [float(r[0][0]) for r in sample["resps"]]
        rows = [lls[:4]] + [lls[len(lls) - 12 + 4 * i: len(lls) - 8 + 4 * i] for i in range(3)]
        gold = sample["doc"]["answer"]
        picks = [int(np.argmax(row)) for row in rows]
        right.append(all(p == (gold - shift) % 4 for shift, p in enumerate(picks)))
        changed.append(len({(p + shift) % 4 for shift, p in enumerate(picks)}) > 1)
        prompts = [v["arg_0"] for v in sample["arguments"].values()]
        options = sample["doc"]["choices"]
        assert f"A. {options[1]}\nB. {options[2]}" in prompts[-12]  # the first rotation's prompt
        assert f"A. {options[2]}\nB. {options[3]}" in prompts[-8]
    assert ours["acc_circular,none"] == pytest.approx(np.mean(right))
    assert ours["order_changes,none"] == pytest.approx(np.mean(changed))
    assert ours["acc_circular,none"] <= ours["acc,none"]
    manifest = results["genclf_manifest"]["tasks"]
    assert manifest["lettered_agnews"]["choice_calibration"]["circular"]["options_field"] == "choices"
    assert manifest["trec_options"]["choice_calibration"]["circular"].startswith("left out: ")


def test_a_run_without_multiple_choice_tasks_is_refused_before_scoring(capsys, default_model_dir: Path) -> None:
    from genclf_harness.cli.eval import main

    assert main(["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_sst2_gen",
                 "--limit", "2", "--calibrate"]) == 2
    assert "no multiple-choice task to calibrate" in capsys.readouterr().err


def test_documents_with_one_choice_are_refused_before_scoring(choice_tasks: Path, capsys,
                                                              default_model_dir: Path) -> None:
    from genclf_harness.cli.eval import main

    folder = choice_tasks.parent / "one_choice_tasks"
    folder.mkdir(exist_ok=True)
    (folder / "one_choice.yaml").write_text(
        "task: one_choice\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {choice_tasks / 'agnews_test.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices[:1]}}\"\ndoc_to_target: 0\nmetric_list:\n  - metric: acc\n")
    assert main(["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "one_choice",
                 "--include_path", str(folder), "--limit", "2", "--calibrate"]) == 2
    assert "task one_choice's first document has 1 choice(s)" in capsys.readouterr().err


def test_stock_hf_gets_the_calibrated_metrics_too(choice_tasks: Path, tmp_path: Path, default_model_dir: Path) -> None:
    from genclf_harness.cli.eval import main

    assert main(["--model", "hf", "--model_args", "pretrained=default,dtype=float32", "--tasks", "lettered_agnews",
                 "--include_path", str(choice_tasks), "--limit", "6", "--output_path", str(tmp_path),
                 "--calibrate"]) == 0
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())["results"]["lettered_agnews"]
    assert {"acc,none", "acc_prior,none", "acc_pmi,none", "acc_prior_train,none"} <= set(results)
