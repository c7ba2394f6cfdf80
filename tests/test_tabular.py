"""Tables as classification data sets (UniPredict): serialisation, binning, the teacher, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genclf_harness.data import DataError, get_spec, load_split
from genclf_harness.prompts.tabular import (
    distribution_answer,
    format_value,
    label_block,
    onehot_answer,
    parse_distribution,
    serialize_row,
    unipredict_prompt,
)

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["age", "blood_pressure", "smoker", "visits"]
ROW = [52.3456, 120.0, "yes", 3]
SERIALISED = "age is 52.35; blood pressure is 120.0; smoker is yes; visits is 3."
FULL = ("Below is the description of a dataset, an object profile from the dataset and a target description. "
        "Predict the target by the given information of the object.\n"
        "# Dataset description: Patients of a clinic.\n"
        "# Object description: age is 52.35; blood pressure is 120.0; smoker is yes; visits is 3.\n"
        "\n"
        "# You should return the probability of each class by: \n"
        'class 0: xxx; class 1: xxx; where class 0 stands for "no"; class 1 stands for "yes".\n'
        "\n"
        "# Answer: \n")
LIGHT = ("Below is a dataset. Predict the target by the given information of the object.\n"
         "# Object description: age is 52.35; blood pressure is 120.0; smoker is yes; visits is 3.\n"
         "\n"
         "# You should return the probability of each class by: \n"
         'class 0: xxx; class 1: xxx; where class 0 stands for "no"; class 1 stands for "yes".\n'
         "\n"
         "# Answer: \n")


def _table(folder: Path, meta: dict[str, Any], splits: dict[str, list[list[Any]]], header: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps({"kind": "tabular", **meta}), encoding="utf-8")
    for split, rows in splits.items():
        with open(folder / f"{split}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return folder


@pytest.fixture
def clinic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rows = [[52.3456, 120.0, "yes", 3, "yes"], [40.1, 110.5, "no", 1, "no"], [61, 135.25, "yes", 7, "yes"]]
    _table(tmp_path / "clinic", {"target": "outcome", "description": "Patients of a clinic."},
           {"train": rows, "test": rows[:1]}, [*COLUMNS, "outcome"])
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path))
    return tmp_path


def test_rows_serialise_byte_for_byte_as_unipredict() -> None:
    assert serialize_row(COLUMNS, ROW) == SERIALISED
    assert label_block(["no", "yes"]) == 'class 0: xxx; class 1: xxx; where class 0 stands for "no"; class 1 stands for "yes".'
    assert unipredict_prompt(SERIALISED, ["no", "yes"], "Patients of a clinic.") == FULL
    assert unipredict_prompt(SERIALISED, ["no", "yes"], form="light") == LIGHT
    # numpy's rounding (as pandas' round: 2.675 -> 2.68 where Python's round gives 2.67), Python's printing
    assert [format_value(v) for v in (2.675, 0.125, 1e-5, -0.004, 1234567.891, 7, True)] == [
        "2.68", "0.12", "0.0", "-0.0", "1234567.89", "7", "True"]
    assert serialize_row(["x_1"], [0.123456], decimals=4) == "x 1 is 0.1235."
    assert distribution_answer([0.834, 0.166]) == "class 0: 0.83; class 1: 0.17."
    assert onehot_answer(1, 3) == "class 0: 0.0; class 1: 1.0; class 2: 0.0."


def test_a_tabular_folder_is_a_classification_data_set(clinic: Path) -> None:
    from genclf_harness.prompts import ClassificationPrompt

    spec = get_spec("clinic")
    assert spec.labels == ("no", "yes") and spec.input_fields == ("row",) and spec.splits == ("test", "train")
    rows = load_split("clinic", "train")
    assert rows[0] == {"id": "clinic-train-0", "row": SERIALISED, "label": 1}
    assert rows[2]["row"] == "age is 61.0; blood pressure is 135.25; smoker is yes; visits is 7."  # a float column
    prompt = ClassificationPrompt.render(spec, rows[0])
    genclf = f"{prompt.instruction}\n\n{prompt.query} {prompt.choices[prompt.gold]}"
    # UniPredict's prompt in genclf's frame: a blank line after the description, " yes" after the cue
    assert genclf == FULL.replace("\n# Object", "\n\n# Object").removesuffix(" \n") + " yes"
    meta = json.loads((clinic / "clinic" / "meta.json").read_text())
    (clinic / "clinic" / "meta.json").write_text(json.dumps({**meta, "prompt": "light"}))
    light = ClassificationPrompt.render(get_spec("clinic"), rows[0])
    assert f"{light.instruction}\n{light.query}" == LIGHT.removesuffix(" \n")


def test_quartile_edges_come_from_the_training_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = [[float(i), float(i)] for i in range(1, 21)]  # 20 distinct values: more than max_classes
    test = [[0.0, v] for v in (5.75, 5.76, 10.5, 15.25, 15.26, -3.0, 1000.0)]
    _table(tmp_path / "sales", {"target": "y"}, {"train": train, "test": test}, ["x", "y"])
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path))
    from genclf_harness.data.tabular import tabular_spec_of

    tspec = tabular_spec_of("sales")
    assert tspec.bin_edges == (5.75, 10.5, 15.25)  # numpy's (and pandas') linear quartiles of 1..20
    assert tspec.labels == ("<5.75", "5.75 - 10.5", "10.5 - 15.2", ">15.2")  # names: 3 significant digits
    assert "binned at the training quartiles 5.75, 10.5, 15.25" in get_spec("sales").task
    assert [r["label"] for r in load_split("sales", "test")] == [0, 1, 1, 2, 3, 0, 3]  # closed on the right
    assert [r["label"] for r in load_split("sales", "train")][:7] == [0] * 5 + [1] * 2
    _table(tmp_path / "sales", {"target": "y"}, {"test": [[0.0, 1e6]] * 3 + [[0.0, -1e6]] * 3}, ["x", "y"])
    assert tabular_spec_of("sales").bin_edges == (5.75, 10.5, 15.25)  # other test rows, the same edges
    wide = [[0.0, 1234.5678 * i] for i in range(1, 21)]
    _table(tmp_path / "wide", {"target": "y"}, {"train": wide, "test": wide[:2]}, ["x", "y"])
    assert tabular_spec_of("wide").labels[0] == "<7100.0"  # UniPredict prints edges to 3 significant digits


@pytest.mark.parametrize(("meta", "header", "rows", "message"), [
    ({"target": "outcome"}, ["a", "y"], [[1, "p"], [2, "q"]], r"train.csv: has no target column 'outcome'"),
    ({"target": "y"}, ["a", "y"], [[1, "p"], [2, "p"]], r"train.csv: the target column 'y' is constant \('p'"),
    ({"target": "y"}, ["a", "y"], [[1, "p"], [2, "q"], ["abc", "p"]],
     r"train.csv:4: column 'a' \(column 1\) holds 'abc', a string, where .*train.csv:2 holds a number"),
    ({"target": "y"}, ["a", "b", "y"], [[1, 2, "p"], [2, "", "q"]], r"train.csv:3: column 'b' \(column 2\) is empty"),
    ({"target": "y", "labels": ["p", "q"]}, ["a", "y"], [[1, "p"], [2, "r"]], r"train.csv:3: target 'r' is not one"),
    ({"target": "y", "splits": ["train", "test"]}, ["a", "y"], [[1, "p"], [2, "q"]],
     r"meta.json: split 'test' has no file .*test.csv \(or .jsonl\)"),
])
def test_bad_tables_are_named_before_any_model_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meta: dict,
                                                    header: list[str], rows: list[list[Any]], message: str) -> None:
    _table(tmp_path / "bad", meta, {"train": rows}, header)
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=message):
        get_spec("bad")


def test_a_missing_file_and_a_jsonl_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "meta.json").write_text('{"kind": "tabular", "target": "y"}')
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"holds no <split>.csv or <split>.jsonl file"):
        get_spec("empty")
    lines = [{"x": 1, "s": "a", "y": True}, {"x": 2.5, "s": "b", "y": False}, {"x": 3, "s": 4, "y": True}]
    (tmp_path / "empty" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    with pytest.raises(DataError, match=r"train.jsonl:3: column 's' \(column 2\) holds 4, a number"):
        get_spec("empty")
    lines[2]["s"] = "c"
    (tmp_path / "empty" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    assert [r["row"] for r in load_split("empty", "train")] == ["x is 1.0; s is a.", "x is 2.5; s is b.", "x is 3.0; s is c."]
    assert get_spec("empty").labels == ("False", "True")


def test_a_prompt_longer_than_the_context_names_the_longest_row(clinic: Path, tokenizer) -> None:
    from genclf_harness.prompts.tabular import check_context_length

    rows = [[50, 120.0, "no", 1, "no"], [40, 110.0, "yes, twenty cigarettes a day since 1990", 2, "yes"], [61, 1.0, "no", 3, "no"]]
    _table(clinic / "smokers", {"target": "outcome"}, {"train": rows, "test": rows[:1]}, [*COLUMNS, "outcome"])
    longest = check_context_length("smokers", tokenizer, 10_000)
    assert longest == len(tokenizer(_zero_shot_prompt("smokers", 1))["input_ids"])
    with pytest.raises(DataError, match=rf"smokers/train.csv:3: row 'smokers-train-1' makes a prompt of {longest} "
                                        r"tokens, longer than the model's context of 50"):
        check_context_length("smokers", tokenizer, 50)


def _zero_shot_prompt(dataset: str, index: int) -> str:
    from genclf_harness.prompts import ClassificationPrompt

    prompt = ClassificationPrompt.render(get_spec(dataset), load_split(dataset, "train")[index])
    return f"{prompt.instruction}\n\n{prompt.query} {max(prompt.choices, key=len)}"


def test_sklearn_table_loads_in_lm_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.local_tasks import write_local_tasks
    from genclf_harness.resources import tasks_dir

    subprocess.run([sys.executable, str(REPO / "scripts" / "sklearn_tables.py"), "--out", str(tmp_path / "data"),
                    "breast_cancer"], check=True, capture_output=True)
    # its own name: lm-eval's loading names the data root, which the rest of the process then keeps for it
    (tmp_path / "data" / "breast_cancer").rename(tmp_path / "data" / "wdbc")
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "data"))
    spec = get_spec("wdbc")
    assert spec.labels == ("malignant", "benign") and len(load_split("wdbc", "train")) == 455
    assert len(load_split("wdbc", "test")) == 114
    out = tmp_path / "yamls"
    out.mkdir()
    assert write_local_tasks(["genclf_wdbc", "genclf_wdbc_gen"], out) == ["genclf_wdbc", "genclf_wdbc_gen"]
    tasks = TaskManager(include_path=[str(tasks_dir()), str(out)], include_defaults=False).load(
        ["genclf_wdbc", "genclf_wdbc_gen"])["tasks"]
    task = tasks["genclf_wdbc"]
    doc = task.test_docs()[0]
    assert task.doc_to_text(doc).startswith("# Object description: mean radius is ")
    assert task.doc_to_text(doc).endswith('class 1 stands for "benign".\n\n# Answer:')
    assert "# Dataset description: Breast cancer Wisconsin (diagnostic) dataset." in doc["instruction"]
    assert "    mean radius: mean of distances from center to points on the perimeter" in doc["instruction"]
    assert task.doc_to_choice(doc) == ["malignant", "benign"]


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tables")
    subprocess.run([sys.executable, str(REPO / "scripts" / "sklearn_tables.py"), "--out", str(root), "breast_cancer",
                    "iris"], check=True, capture_output=True)
    return root


def test_the_teacher_never_sees_test_rows(cancer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.calibration import CalibratedClassifierCV

    from genclf_harness.data.tabular import read_split
    from genclf_harness.training.teacher import TrainingTable, distribution_targets, fit_teacher

    monkeypatch.setenv("GENCLF_DATA_DIR", str(cancer))
    training = TrainingTable.load("breast_cancer")
    with pytest.raises(TypeError, match="TrainingTable"):
        fit_teacher(read_split("breast_cancer", "test"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="training split only"):
        TrainingTable(training.spec, read_split("breast_cancer", "test"))
    seen: list[np.ndarray] = []
    original = CalibratedClassifierCV.fit
    monkeypatch.setattr(CalibratedClassifierCV, "fit", lambda self, x, y, **kw: seen.append(x) or original(self, x, y, **kw))
    teacher = fit_teacher(training)
    assert len(seen) == 1 and np.array_equal(seen[0], teacher.encode(read_split("breast_cancer", "train")))
    test = read_split("breast_cancer", "test")
    assert np.mean(teacher.predict_proba(test).argmax(axis=1) == np.array(test.labels)) > 0.9
    rows = load_split("breast_cancer", "train")[:40]
    before = distribution_targets("augmented", "breast_cancer", rows)
    assert all(answer.startswith("class 0: ") for answer in before.values())
    # poison the test split: other values, flipped labels, more rows; the targets stay the same
    lines = (cancer / "breast_cancer" / "test.csv").read_text().splitlines()
    poisoned = [lines[0]] + [",".join(["999.5"] * 30 + ["benign" if "malignant" in line else "malignant"])
                             for line in lines[1:] * 2]
    (cancer / "breast_cancer" / "test.csv").write_text("\n".join(poisoned) + "\n")
    assert read_split("breast_cancer", "test").values[0][0] == 999.5
    assert distribution_targets("augmented", "breast_cancer", rows) == before


def test_distribution_answers_read_back() -> None:
    parsed = parse_distribution("class 0: 0.83; class 1: 0.17.", 2)
    assert parsed.status == "parsed" and parsed.index == 0 and parsed.probabilities == pytest.approx((0.83, 0.17))
    assert parse_distribution("class 1: 0.6; class 0: 0.2", 2).probabilities == pytest.approx((0.25, 0.75))
    for text, status in (("class 0: 0.5", "missing_class"), ("class 0: 0.5; class 0: 0.5", "repeated_class"),
                         ("class 0: 0.5; class 2: 0.5", "unknown_class"), ("benign", "empty"),
                         ("class 0: 0.0; class 1: 0.0.", "zero_mass")):
        assert parse_distribution(text, 2) == type(parsed)(None, status)


def test_sft_targets_option(cancer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genclf_harness.training.config import ConfigError, build_config
    from genclf_harness.training.examples import load_classifier_data
    from genclf_harness.training.sft import SFTRecipeConfig

    monkeypatch.setenv("GENCLF_DATA_DIR", str(cancer))
    data = {"dataset": "breast_cancer", "eval_split": "test", "max_train_examples": 5}
    default = build_config(SFTRecipeConfig, {"data": data})
    assert default.data.targets == "label"
    classifier = load_classifier_data(default.data, chat=False)
    plain = classifier.sft_examples()
    assert [e["completion"] for e in plain] == [" " + classifier.spec.label_words[r["label"]] for r in classifier.train_rows]
    from genclf_harness.training.teacher import distribution_targets

    answers = distribution_targets("augmented", "breast_cancer", classifier.train_rows)
    augmented = classifier.sft_examples(answers=answers)
    assert [e["prompt"] for e in augmented] == [e["prompt"] for e in plain]
    assert all(e["completion"].startswith(" class 0: ") and e["completion"].endswith(".") for e in augmented)
    assert build_config(SFTRecipeConfig, {"data": {**data, "targets": "augmented"}}).data.targets == "augmented"
    with pytest.raises(ConfigError, match=r"data.targets: augmented targets need a tabular data set"):
        build_config(SFTRecipeConfig, {"data": {"dataset": "sst2", "targets": "augmented"}})
    with pytest.raises(ConfigError, match=r"data.targets: expected one of"):
        build_config(SFTRecipeConfig, {"data": {**data, "targets": "soft"}})


def test_a_distribution_model_is_read_both_ways(cancer: Path, monkeypatch: pytest.MonkeyPatch, model, tokenizer) -> None:
    from genclf_harness.prompts import PromptStrategy
    from genclf_harness.training.teacher import evaluate_distribution_model

    monkeypatch.setenv("GENCLF_DATA_DIR", str(cancer))
    spec = get_spec("iris")  # short prompts: the real model reads two of them
    prompts = [PromptStrategy().bind(spec).render(row) for row in load_split("iris", "test")[:1]]
    figures = evaluate_distribution_model(model, tokenizer, prompts, 3, chat=False, max_new_tokens=8,
                                          show_progress=False)
    assert figures["documents"] == 1 and 0.0 <= figures["scored"]["acc"] <= 1.0
    assert figures["scored"]["log_loss"] > 0 and figures["scored"]["unparseable"] == 0.0
    generative = figures["generative"]  # the untrained model answers no distribution: unparseable, counted
    assert sum(generative["statuses"].values()) == 1 and len(generative["answer_examples"]) == 1
    assert generative["unparseable"] == 1.0 and generative["acc"] == 0.0
    assert generative["log_loss"] == pytest.approx(np.log(3))  # the uniform distribution stands in
