"""Step-labelled folders of your own and every ProcessBench split (issue 20, item 2).

The folders are built in tmp_path from real ProcessBench rows (../shared/data): renamed fields,
1-based indices, steps as one string, a new split name. Each must read back as the original rows,
and run in lm-eval with the same figures as the built-in task.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from genclf_harness.data import DataError
from genclf_harness.data.step_sets import list_step_sets, load_step_rows, step_set_spec
from genclf_harness.verifiers.stepwise.steps import load_processbench

DATA = Path(os.environ.get("GENCLF_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _rows(each: int) -> list[dict]:
    """The first ``each`` solutions with an error and the first ``each`` without, interleaved."""
    lines = (DATA / "processbench" / "gsm8k.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    wrong = [r for r in rows if r["first_error_step"] >= 0][:each]
    right = [r for r in rows if r["first_error_step"] == -1][:each]
    return [row for pair in zip(wrong, right) for row in pair]


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _mapped(row: dict, *, as_string: bool) -> dict:
    """A "first wrong step" row of another shape: other field names, 1-based, null for no error."""
    label = row["first_error_step"]
    return {"uid": row["id"], "input": row["problem"],
            "solution": "\n\n".join(row["steps"]) if as_string else row["steps"],
            "mistake_index": None if label == -1 else label + 1}


@pytest.fixture()
def root(tmp_path):
    rows = _rows(20)
    _write(tmp_path / "processbench" / "gsm8k.jsonl", rows)
    _write(tmp_path / "processbench" / "olympiadbench.jsonl", rows)  # a split the code never named
    (tmp_path / "processbench" / "meta.json").write_text('{"name": "processbench"}')
    mapped = tmp_path / "mysteps"
    _write(mapped / "test.jsonl", [_mapped(r, as_string=False) for r in rows])
    _write(mapped / "dev.jsonl", [_mapped(r, as_string=True) for r in rows])
    (mapped / "meta.json").write_text(json.dumps({
        "kind": "steps", "index_base": 1,
        "fields": {"problem": "input", "steps": "solution", "first_error": "mistake_index", "id": "uid"},
        "source": "ProcessBench gsm8k, renamed", "license": "Apache-2.0",
    }))
    _write(tmp_path / "sst2" / "test.jsonl", [{"sentence": "fine", "label": 1}])  # a classification folder
    return tmp_path


def test_renamed_fields_and_new_splits_read_back_as_the_original_rows(root):
    rows = _rows(20)
    original = [e for e in load_processbench("gsm8k") if e.id in {r["id"] for r in rows}]
    assert len(original) == 40 and {e.label for e in original} >= {-1, 0, 1}
    assert sorted(load_processbench("gsm8k", data_dir=root), key=lambda e: e.id) == sorted(original, key=lambda e: e.id)
    original = load_processbench("gsm8k", data_dir=root)
    assert [e.steps for e in load_processbench("olympiadbench", data_dir=root)] == [e.steps for e in original]
    for split in ("test", "dev"):  # dev: the steps as one string, cut at blank lines
        mapped = load_processbench(split, data_dir=root, dataset="mysteps")
        assert [(e.id, e.problem, e.steps, e.label) for e in mapped] == [
            (e.id, e.problem, e.steps, e.label) for e in original]
    assert list_step_sets(root) == ["mysteps", "processbench"]
    assert step_set_spec("processbench", root).splits == ("gsm8k", "olympiadbench")


@pytest.mark.parametrize("row, message", [
    ({"uid": "a", "solution": ["x"], "mistake_index": None}, r"test.jsonl:1: field 'input' \(the problem\)"),
    ({"input": "p", "solution": ["x", 3], "mistake_index": None}, r"test.jsonl:1: field 'solution'\[1\]: a step must"),
    ({"input": "p", "solution": "  ", "mistake_index": None}, r"test.jsonl:1: field 'solution' \(the steps\) is an empty"),
    ({"input": "p", "solution": {"a": 1}, "mistake_index": 1}, r"field 'solution' \(the steps\) must be a list"),
    ({"input": "p", "solution": ["x", "y"], "mistake_index": 3}, r"'mistake_index' is 3, out of range for 2 steps "
                                                                 r"\(steps count from 1: 1..2"),
    ({"input": "p", "solution": ["x"], "mistake_index": 0}, r"'mistake_index' is 0, out of range"),
    ({"input": "p", "solution": ["x"], "mistake_index": "2"}, r"must be an integer step index"),
    ({"input": "p", "solution": ["x"]}, r"no field 'mistake_index'"),
])
def test_bad_rows_name_file_line_and_field(root, row, message):
    _write(root / "mysteps" / "test.jsonl", [row])
    with pytest.raises(DataError, match=message):
        load_step_rows(step_set_spec("mysteps", root), "test")


def test_no_error_value_and_zero_based_default(tmp_path):
    folder = tmp_path / "prm"
    _write(folder / "train.jsonl", [{"problem": "p", "steps": "a\nb\nc", "label": 0},
                                    {"problem": "p", "steps": "a\nb", "label": 2}])
    (folder / "meta.json").write_text('{"kind": "steps", "steps_split": "lines", "index_base": 1, "no_error": 0}')
    rows = load_step_rows(step_set_spec("prm", tmp_path), "train")
    assert [(r.steps, r.label) for r in rows] == [(("a", "b", "c"), -1), (("a", "b"), 1)]


@pytest.mark.parametrize("meta, message", [
    ({"kind": "stepz"}, r"'kind' is 'stepz'"),
    ({"kind": "steps", "splits": ["train_a"]}, r"split 'train_a': a split name is letters"),
    ({"kind": "steps", "splits": ["nosuch"]}, r"split 'nosuch' has no file"),
    ({"kind": "steps", "fields": {"question": "q"}}, r"'fields' has unknown keys \['question'\]"),
    ({"kind": "steps", "index_base": 2}, r"'index_base' is 2"),
    ({"kind": "steps", "steps_split": "sentences"}, r"'steps_split' is 'sentences'"),
])
def test_bad_meta_is_named(root, meta, message):
    (root / "mysteps" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=message):
        step_set_spec("mysteps", root)


def test_a_step_folder_is_no_classification_data_set(root):
    from genclf_harness.data import get_spec

    with pytest.raises(DataError, match=r"holds step-labelled solutions .* genclf_mysteps_<split>"):
        get_spec("mysteps", root)


def test_tasks_are_written_for_every_split_and_the_group(root, tmp_path_factory):
    import yaml

    from genclf_harness.harness.local_tasks import local_task, step_task, unmatched_hint, write_local_tasks

    assert step_task("genclf_processbench", str(root)) == ("processbench", None)
    assert step_task("genclf_processbench_olympiadbench", str(root)) == ("processbench", "olympiadbench")
    assert step_task("genclf_mysteps_dev", str(root)) == ("mysteps", "dev")
    assert step_task("genclf_sst2", str(root)) is None and step_task("genclf_gsm8k_bon", str(root)) is None
    assert local_task("genclf_mysteps", str(root)) is None  # not read as a classification data set
    out = tmp_path_factory.mktemp("tasks")
    written = write_local_tasks(["genclf_processbench", "genclf_mysteps_test"], out, str(root))
    # genclf_processbench_gsm8k is a shipped YAML: listed in the group, not written again
    assert sorted(written) == ["genclf_mysteps_test", "genclf_processbench", "genclf_processbench_olympiadbench"]
    group = yaml.safe_load((out / "genclf_processbench.yaml").read_text())
    assert group["task"] == ["genclf_processbench_gsm8k", "genclf_processbench_olympiadbench"]
    assert {m["metric"]: m["weight_by_size"] for m in group["aggregate_metric_list"]}["step_f1"] is False
    task = (out / "genclf_mysteps_test.yaml").read_text()
    assert "dataset: mysteps\n  split: test\n" in task and "_step_task_template_yaml" in task
    with pytest.raises(DataError, match=r"task genclf_processbench_omnimath: .* has no split 'omnimath'"):
        write_local_tasks(["genclf_processbench_omnimath"], out, str(root))
    assert unmatched_hint(["genclf_mysteps", "genclf_processbench_gsm8k"], str(root)) is None


def test_bad_rows_fail_before_the_model_loads(root):
    from genclf_harness.cli.eval_checks import check_data

    check_data(["genclf_processbench", "genclf_mysteps"], str(root))  # all good
    _write(root / "processbench" / "olympiadbench.jsonl", _rows(2) + [{"problem": "p", "steps": [], "label": -1}])
    with pytest.raises(DataError, match=r"olympiadbench.jsonl:5: field 'steps'"):
        check_data(["genclf_processbench"], str(root))


def test_stepwiser_labels_from_a_step_folder(root):
    from genclf_harness.verifiers.stepwise.labels import steps_from_first_errors

    solutions = load_processbench("test", data_dir=root, dataset="mysteps")[:6]
    steps = steps_from_first_errors(solutions)
    expected = sum(len(s.steps) if s.label == -1 else s.label + 1 for s in solutions)
    assert len(steps) == expected
    for step in steps:
        solution = next(s for s in solutions if s.id == step.id)
        assert step.label is (step.index != solution.label) and step.index <= max(solution.label, len(solution.steps) - 1)
        assert math.isnan(step.q_before)
    assert all(s.index < 2 for s in steps_from_first_errors(solutions, max_steps=2))


@pytest.mark.slow  # a model load and lm-eval over a few solutions (about a minute on 2 cores)
def test_group_and_renamed_folder_give_the_built_in_figures(root, default_model_dir):
    """ProcessBench gsm8k under a new split name and as a field-mapped folder: the same metrics as
    the built-in task, and the group's figures are the unweighted mean of its splits'."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.local_tasks import local_include_path
    from genclf_harness.harness.registry import register
    from genclf_harness.resources import tasks_dir

    rows = _rows(2)
    _write(root / "processbench" / "gsm8k.jsonl", rows)
    _write(root / "processbench" / "olympiadbench.jsonl", rows[1:])  # another split with other figures
    _write(root / "mysteps" / "test.jsonl", [_mapped(r, as_string=False) for r in rows])
    (root / "mysteps" / "dev.jsonl").unlink()
    register()
    tasks = ["genclf_processbench", "genclf_mysteps_test"]
    results = lm_eval.simple_evaluate(
        model="genclf-hf", model_args=f"pretrained={default_model_dir},dtype=float32", tasks=tasks,
        task_manager=TaskManager(include_path=[str(tasks_dir()), *local_include_path(tasks, str(root))],
                                 metadata={"data_dir": str(root)}),
        metadata={"data_dir": str(root), "threshold": 0.9}, device="cpu", batch_size=8,
    )["results"]
    built_in, other, mapped = (results[f"genclf_{t}"] for t in ("processbench_gsm8k", "processbench_olympiadbench",
                                                                 "mysteps_test"))
    for metric in ("acc_erroneous", "acc_correct", "step_f1", "step_f1_oracle"):
        assert mapped[f"{metric},none"] == built_in[f"{metric},none"]
        mean = (built_in[f"{metric},none"] + other[f"{metric},none"]) / 2
        assert results["genclf_processbench"][f"{metric},none"] == pytest.approx(mean)
    assert all(0.0 <= built_in[f"{m},none"] <= 1.0 for m in ("acc_erroneous", "acc_correct", "step_f1", "step_f1_oracle"))


def test_stepwiser_data_section_reads_a_step_folder(root, monkeypatch):
    from genclf_harness.training.stepwiser import StepWiserDataConfig, build_labels

    monkeypatch.setenv("GENCLF_DATA_DIR", str(root))
    data = StepWiserDataConfig(step_set="mysteps", step_split="dev", max_steps_per_solution=3, balance=True)
    steps, counts = build_labels(data)
    assert counts["solutions"] == 40 and counts["step_set"] == "mysteps"
    assert counts["positive"] > counts["labelled"] - counts["positive"] > 0  # more right steps than wrong ones
    assert counts["balanced"] == len(steps) == 2 * (counts["labelled"] - counts["positive"])
    with pytest.raises(ValueError, match="give one source"):
        StepWiserDataConfig(step_set="mysteps", labels_file=str(root / "mysteps" / "dev.jsonl")).check()


@pytest.mark.slow  # rollouts with the real policy (1 solution, 2 steps, 2 continuations of 16 tokens)
def test_monte_carlo_labels_of_a_step_folders_solutions():
    """ProcessBench GSM8K solutions rolled out by the policy; their gold answers are GSM8K's (same questions)."""
    from genclf_harness.training.stepwiser import StepWiserDataConfig, build_labels

    data = StepWiserDataConfig(step_set="processbench", step_split="gsm8k", step_labels="monte_carlo", task="gsm8k",
                               num_problems=1, rollouts=2, rollout_max_new_tokens=16, max_steps_per_solution=2,
                               balance=False)
    steps, counts = build_labels(data)
    solution = load_processbench("gsm8k", limit=1)[0]
    assert counts["trajectories"] == 1 and counts["without_answer"] == 0
    assert [s.index for s in steps] == [0, 1]  # Q_0..Q_2 label both judged steps
    assert all(s.steps == solution.steps[:2] and s.problem == solution.problem for s in steps)
    assert all(q in (0.0, 0.5, 1.0) for s in steps for q in (s.q_before, s.q_after))  # 2 rollouts each, not NaN
