"""Data sets of your own (a folder with meta.json under the data root): specs, errors, tasks, training.

The local data sets here are built in a temporary folder from rows of the real shared data (never
copied into the repository).
"""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from genclf_harness.data import DataError, get_spec, list_local, load_split, spec_from_folder


def _rows(data_dir: Path, name: str, split: str, limit: int | None = None) -> list[dict[str, Any]]:
    with open(data_dir / name / f"{split}.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return rows[:limit]


def _write_set(root: Path, name: str, meta: Any, splits: dict[str, list[dict[str, Any]]]) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta), encoding="utf-8")
    return folder


def _nli(data_dir: Path, root: Path, name: str = "my_nli", meta: Any = None) -> Path:
    """RTE rows with label names instead of indices, and no spec of their own."""
    names = ["entailment", "not_entailment"]
    splits = {split: [{**row, "label": names[row["label"]]} for row in _rows(data_dir, "rte", split, 40)]
              for split in ("train", "validation")}
    return _write_set(root, name, {"labels": names} if meta is None else meta, splits)


def test_spec_defaults_come_from_meta_and_rows(data_dir: Path, tmp_path: Path) -> None:
    _nli(data_dir, tmp_path)
    spec = get_spec("my_nli", tmp_path)
    assert spec.labels == ("entailment", "not_entailment")
    assert spec.label_words == ("entailment", "not entailment")  # "_" read as a space
    assert spec.input_fields == ("premise", "hypothesis")  # the first row's string fields, in order
    assert spec.template == "Premise: {premise}\nHypothesis: {hypothesis}\nAnswer:"
    assert spec.instruction == "Classify each input as {labels}."
    assert (spec.eval_split, spec.train_split, spec.splits) == ("validation", "train", ("train", "validation"))
    assert spec.hub is None and spec.task == "2-way classification"
    rows = load_split("my_nli", "validation", data_dir=tmp_path)
    gold = [row["label"] for row in _rows(data_dir, "rte", "validation", 40)]
    assert [row["label"] for row in rows] == gold  # names mapped back to the same indices
    assert list_local(tmp_path) == ["my_nli"]


def test_meta_keys_override_the_defaults(data_dir: Path, tmp_path: Path) -> None:
    meta = {
        "labels": ["entailment", "not_entailment"], "label_words": ["yes", "no"],
        "input_fields": ["hypothesis", "premise"], "template": "{premise}\nDoes it follow that {hypothesis}?",
        "instruction": "Answer {labels}.", "eval_split": "train", "train_split": "validation",
        "task": "entailment", "definitions": {"entailment": "it follows"},
        "hub": {"path": "someone/nli", "label_map": {"0": 1, "1": 0}},
        "source": "ignored, as are license and name",
    }
    spec = spec_from_folder(_nli(data_dir, tmp_path, meta=meta))
    assert spec.label_words == ("yes", "no") and spec.input_fields == ("hypothesis", "premise")
    assert (spec.eval_split, spec.train_split, spec.task) == ("train", "validation", "entailment")
    assert spec.hub is not None and spec.hub.label_map == {0: 1, 1: 0} and spec.hub.revision == "main"
    assert dict(spec.definitions) == {"entailment": "it follows"}


@pytest.mark.parametrize(("meta", "message"), [
    ("{not json", r"meta.json: not valid JSON"),
    ([1, 2], r"meta.json: must be a JSON object, not list"),
    ({"task": "x"}, r"meta.json: has no 'labels'"),
    ({"labels": ["only"]}, r"at least two labels, not 1"),
    ({"labels": ["a", "a"]}, r"'labels' names 'a' twice"),
    ({"labels": ["a", ""]}, r"'labels' must be a list of non-empty strings"),
    ({"labels": ["a_b", "a b"]}, r"'label_words' names 'a b' twice"),
    ({"labels": ["a", "b"], "label_words": ["x"]}, r"'label_words' has 1 words for 2 labels"),
    ({"labels": ["a", "b"], "label_words": ["x", " y"]}, r"'label_words' \[' y'\] begin or end with whitespace"),
    ({"labels": ["a", "b"], "template": "{premise} {claim}"}, r"'template' has placeholders \['claim'\]"),
    ({"labels": ["a", "b"], "template": "{premise"}, r"'template' is not a valid template"),
    ({"labels": ["a", "b"], "instruction": "Say {label}."}, r"'instruction' has placeholders \['label'\]"),
    ({"labels": ["a", "b"], "eval_split": "dev"}, r"'eval_split' is 'dev', which is not one of its splits"),
    ({"labels": ["a", "b"], "input_fields": ["label"]}, r"'input_fields' must not include 'label'"),
    ({"labels": ["a", "b"], "definitions": {"c": "?"}}, r"'definitions' names \['c'\], which are not labels"),
    ({"labels": ["a", "b"], "hub": {"path": "x/y", "split": "t"}}, r"'hub' has unknown keys \['split'\]"),
    ({"labels": ["a", "b"], "hub": {"revision": "main"}}, r"'hub' must be an object with at least a 'path'"),
])
def test_bad_meta_is_named(data_dir: Path, tmp_path: Path, meta: Any, message: str) -> None:
    folder = _nli(data_dir, tmp_path, meta=meta)
    with pytest.raises(DataError, match=message) as err:
        spec_from_folder(folder)
    assert str(folder / "meta.json") in str(err.value)


def test_missing_inputs_and_splits_are_named(tmp_path: Path) -> None:
    _write_set(tmp_path, "numbers", {"labels": ["a", "b"]}, {"test": [{"score": 1, "label": 0}]})
    with pytest.raises(DataError, match=r"first row of .*test.jsonl has no string field besides 'id' and 'label'"):
        get_spec("numbers", tmp_path)
    _write_set(tmp_path, "two", {"labels": ["a", "b"]}, {"alpha": [], "beta": []})
    with pytest.raises(DataError, match=r"no test, validation or dev split among alpha, beta; name one as 'eval_split'"):
        get_spec("two", tmp_path)
    (tmp_path / "nofiles").mkdir()
    (tmp_path / "nofiles" / "meta.json").write_text('{"labels": ["a", "b"]}')
    with pytest.raises(DataError, match=r"holds no <split>.jsonl file"):
        get_spec("nofiles", tmp_path)
    # a split named in meta.json with no file, and no hub copy to fall back on
    _write_set(tmp_path, "partial", {"labels": ["a", "b"], "splits": ["train", "test"]},
               {"test": [{"text": "t", "label": "a"}]})
    with pytest.raises(DataError, match=r"split 'train': no local file .*partial/train.jsonl, and the data set has no hub copy"):
        load_split("partial", "train", data_dir=tmp_path)


def test_an_unknown_label_in_a_row_names_file_and_line(data_dir: Path, tmp_path: Path) -> None:
    folder = _nli(data_dir, tmp_path)
    with open(folder / "validation.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"premise": "p", "hypothesis": "h", "label": "neutral"}) + "\n")
    with pytest.raises(DataError, match=r"validation.jsonl:41: label 'neutral' is not a label of 'my_nli'"):
        load_split("my_nli", "validation", data_dir=tmp_path)


def test_unknown_name_lists_local_sets_and_says_how_to_add_one(data_dir: Path, tmp_path: Path) -> None:
    _nli(data_dir, tmp_path)
    with pytest.raises(DataError) as err:
        get_spec("my_nil", tmp_path)
    message = str(err.value)
    assert "Did you mean 'my_nli'?" in message and "local data sets: my_nli" in message
    assert f"a folder my_nil/ under the data root ({tmp_path})" in message
    for bad_name in ("../rte", ".hidden"):
        with pytest.raises(DataError, match="Unknown data set"):
            get_spec(bad_name, tmp_path)


def _sst2_copy(data_dir: Path, root: Path) -> None:
    """The built-in SST-2 again, as a local data set described by meta.json alone."""
    sst2 = get_spec("sst2")
    folder = root / "my_sst2"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        shutil.copy(data_dir / "sst2" / f"{split}.jsonl", folder / f"{split}.jsonl")
    (folder / "meta.json").write_text(json.dumps({
        "labels": list(sst2.labels), "template": sst2.template, "instruction": sst2.instruction}))
    (root / "sst2").symlink_to(data_dir / "sst2")


def test_local_task_scores_exactly_as_the_builtin_one(data_dir: Path, tmp_path: Path, default_model_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``--tasks genclf_my_sst2`` (a YAML written by genclf-eval), a user's three-line YAML and the
    built-in ``genclf_sst2`` see the same rows and prompts, so every document scores the same."""
    from genclf_harness.cli.eval import main as genclf_eval

    root = tmp_path / "data"
    _sst2_copy(data_dir, root)
    monkeypatch.setenv("GENCLF_DATA_DIR", str(root))
    own = tmp_path / "own_tasks"
    own.mkdir()
    (own / "mine.yaml").write_text(
        "task: mine\nclass: !function genclf_harness.harness.classification_task.GenclfClassificationTask\n"
        "dataset_kwargs:\n  dataset: my_sst2\n")
    genclf_eval(["--model", "genclf-hf", "--model_args", "pretrained=default,dtype=float32",
                 "--tasks", "genclf_sst2,genclf_my_sst2,mine", "--include_path", str(own),
                 "--num_fewshot", "2", "--limit", "12", "--batch_size", "8", "--log_samples",
                 "--output_path", str(tmp_path / "out")])
    results_file = next((tmp_path / "out").rglob("results_*.json"))
    results = json.loads(results_file.read_text())
    lls = {}
    for task in ("genclf_sst2", "genclf_my_sst2", "mine"):
        assert results["results"][task]["sample_len"] == 12
        samples = [json.loads(line) for line in next((tmp_path / "out").rglob(f"samples_{task}_*.jsonl")).open()]
        lls[task] = [[float(r[0][0]) for r in s["resps"]] for s in sorted(samples, key=lambda s: s["doc_id"])]
    assert lls["genclf_my_sst2"] == lls["genclf_sst2"] == lls["mine"]
    assert results["results"]["mine"]["acc_prior,none"] == results["results"]["genclf_sst2"]["acc_prior,none"]
    manifest = results["genclf_manifest"]["tasks"]["genclf_my_sst2"]
    assert manifest["dataset"] == "my_sst2" and manifest["prompt"]["template"] == "Review: {text}\nSentiment:"
    assert manifest["label_token_ids"] == results["genclf_manifest"]["tasks"]["genclf_sst2"]["label_token_ids"]
    assert not list(own.glob("genclf_*")), "genclf-eval writes its local task YAMLs elsewhere"


def _task_manager(tmp_path: Path, yaml_text: str):
    from lm_eval.tasks import TaskManager

    from genclf_harness.resources import tasks_dir

    own = tmp_path / "own_tasks"
    own.mkdir(exist_ok=True)
    (own / "task.yaml").write_text(yaml_text)
    return TaskManager(include_path=[str(tasks_dir()), str(own)], include_defaults=False)


def test_without_a_training_split_demonstrations_never_show_the_document(data_dir: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows(data_dir, "trec", "test", 30)
    _write_set(tmp_path / "data", "questions", {"labels": list(get_spec("trec").labels)}, {"test": rows})
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "data"))
    manager = _task_manager(tmp_path, "task: q\nclass: !function genclf_harness.harness.classification_task."
                                      "GenclfClassificationTask\ndataset_kwargs:\n  dataset: questions\n")
    task = manager.load(["q"])["tasks"]["q"]
    assert (task.config.test_split, task.config.training_split, task.config.fewshot_split) == ("test", "test", "test")
    task.set_fewshot_seed(1234)
    docs = list(task.test_docs())
    for doc in docs[:10]:
        context = task.fewshot_context(doc, num_fewshot=4)
        assert context.count("Text: ") == 5
        assert context.count(f"Text: {doc['text']}\n") == 1  # the query only, never a demonstration
    assert "q" in task.config.task and not task._inductive_docs()  # inductive calibration left out


def test_task_config_errors_name_the_task(tmp_path: Path) -> None:
    from genclf_harness.harness.classification_task import complete_config

    with pytest.raises(ValueError, match=r"task 'x': dataset_kwargs must name the data set"):
        complete_config({"task": "x"})
    with pytest.raises(ValueError, match=r"task 'x': training_split 'dev' is not a split of data set 'sst2'"):
        complete_config({"task": "x", "dataset_kwargs": {"dataset": "sst2"}, "training_split": "dev"})
    config, spec = complete_config({"task": "x", "dataset_kwargs": {"dataset": "rte"}, "metadata": {"a": 1}})
    assert (config["test_split"], config["training_split"]) == ("validation", "train") and spec.name == "rte"
    assert config["metadata"] == {"version": 1.0, "a": 1} and config["output_type"] == "multiple_choice"


def test_genclf_eval_writes_tasks_only_for_local_sets(data_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.local_tasks import local_task, write_local_tasks
    from genclf_harness.resources import tasks_dir

    _nli(data_dir, tmp_path / "data")
    _nli(data_dir, tmp_path / "data", name="my")  # a data set whose name is a prefix of the other's
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "data"))
    assert local_task("genclf_my_nli") == ("my_nli", local_task("genclf_my")[1], "ppl")
    assert local_task("genclf_my_nli_def_gen")[0::2] == ("my_nli", "gen")
    assert local_task("genclf_my_nli_bal3")[1].name == "bal3"
    assert local_task("genclf_my_unc")[0] == "my" and local_task("genclf_my_unc")[1].uncertainty
    for other in ("genclf_sst2", "genclf_sst2_def", "hellaswag", "genclf_nothing", "genclf_my_nli_nonsense"):
        assert local_task(other) is None
    out = tmp_path / "yamls"
    out.mkdir()
    names = ["genclf_sst2", "genclf_my_nli", "genclf_my_nli_gen", "genclf_my_nli_sim3", "hellaswag", "genclf_my_nli"]
    assert write_local_tasks(names, out) == ["genclf_my_nli", "genclf_my_nli_gen", "genclf_my_nli_sim3"]
    assert sorted(p.stem for p in out.iterdir()) == ["genclf_my_nli", "genclf_my_nli_gen", "genclf_my_nli_sim3"]
    written = write_local_tasks(["genclf_my_strategies"], out)
    # 9 strategies x 2 decodings + the group, less the two 'def' tasks: 'my' has no label definitions
    assert written[-1] == "genclf_my_strategies" and len(written) == 17 and "genclf_my_def" not in written
    manager = TaskManager(include_path=[str(tasks_dir()), str(out)], include_defaults=False)
    loaded = manager.load(["genclf_my_nli_sim3", "genclf_my_strategies"])["tasks"]
    sim3 = loaded["genclf_my_nli_sim3"]
    doc = sim3.test_docs()[0]
    assert doc["strategy"] == "sim3" and doc["prompt"].count("Hypothesis: ") == 4  # 3 demonstrations + the input
    assert sorted(name for name in loaded if "nli" not in name) == sorted(written[:-1])


def test_training_reads_a_local_set(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genclf_harness.training.config import DataConfig
    from genclf_harness.training.examples import load_classifier_data

    _nli(data_dir, tmp_path / "data")
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "data"))
    config = DataConfig(dataset="my_nli", strategy="zero", chat_template=False, max_train_examples=8)
    config.check()
    data = load_classifier_data(config, chat=False)
    example = data.sft_examples()[0]
    assert example["prompt"].endswith("\nAnswer:")
    assert example["completion"] in (" entailment", " not entailment")
    assert len(data.train_rows) == 8 and len(data.eval_rows) == 40
    with pytest.raises(ValueError, match="train_split: data set 'my_nli' has no split 'test'"):
        DataConfig(dataset="my_nli", train_split="test").check()


def test_metadata_data_dir_points_genclf_eval_at_another_root(data_dir: Path, tmp_path: Path,
                                                              default_model_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``--metadata '{"data_dir": ...}'`` with GENCLF_DATA_DIR elsewhere: the tasks are written, the
    rows read, and the generated answers parsed against the data set found there."""
    import genclf_harness.data.local as local
    from genclf_harness.cli.eval import main as genclf_eval

    monkeypatch.setattr(local, "_FOUND_ELSEWHERE", {})
    root = tmp_path / "elsewhere"
    _nli(data_dir, root)
    assert "my_nli" not in list_local()  # not under GENCLF_DATA_DIR
    genclf_eval(["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_my_nli,genclf_my_nli_gen",
                 "--limit", "3", "--metadata", json.dumps({"data_dir": str(root)}), "--output_path", str(tmp_path / "out")])
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert results["results"]["genclf_my_nli"]["sample_len"] == 3
    assert results["results"]["genclf_my_nli_gen"]["sample_len"] == 3
    assert 0.0 <= results["results"]["genclf_my_nli_gen"]["unparseable,none"] <= 1.0
    assert results["genclf_manifest"]["tasks"]["genclf_my_nli"]["label_words"] == ["entailment", "not entailment"]


def test_files_as_other_tools_write_them(data_dir: Path, tmp_path: Path) -> None:
    """A UTF-8 BOM (Notepad, Excel), whole-number float labels, labels in another Unicode form, and a
    stray .jsonl beside the splits."""
    rows = _rows(data_dir, "sst2", "test", 6)
    folder = tmp_path / "reviews"
    folder.mkdir()
    labels = ["tr\u00e8s n\u00e9gatif", "positif"]  # NFC in the rows
    lines = [json.dumps({"text": r["text"], "label": labels[r["label"]] if i % 2 else float(r["label"])},
                        ensure_ascii=False) for i, r in enumerate(rows)]
    (folder / "test.jsonl").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    (folder / "notes.jsonl").write_text("", encoding="utf-8")
    nfd = [unicodedata.normalize("NFD", label) for label in labels]
    (folder / "meta.json").write_text("\ufeff" + json.dumps({"labels": nfd}, ensure_ascii=False), encoding="utf-8")
    spec = get_spec("reviews", tmp_path)
    assert spec.splits == ("test",) and spec.labels == tuple(labels)  # notes.jsonl is no split
    assert [row["label"] for row in load_split("reviews", "test", data_dir=tmp_path)] == [r["label"] for r in rows]
    (folder / "test.jsonl").write_text(json.dumps({"text": "x", "label": 0.5}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test.jsonl:1: label 0.5 must be a label's index or its name"):
        load_split("reviews", "test", data_dir=tmp_path)


def test_answer_cue_keeps_literal_braces(data_dir: Path, tmp_path: Path) -> None:
    from genclf_harness.prompts.channel import answer_cue as _answer_cue

    meta = {"labels": ["entailment", "not_entailment"], "template": "{premise}\n{hypothesis}\nAnswer {{yes/no}}:"}
    assert _answer_cue(spec_from_folder(_nli(data_dir, tmp_path, meta=meta))) == "Answer {yes/no}:"
    assert _answer_cue(get_spec("rte")) == "True or False?\nAnswer:"


def test_a_local_folder_never_takes_a_builtin_task_name(data_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from genclf_harness.harness.local_tasks import local_task

    _nli(data_dir, tmp_path, name="sst2_bal3")
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path))
    assert local_task("genclf_sst2_bal3") is None  # the built-in strategy task of SST-2
    with pytest.raises(DataError, match=r"its task genclf_sst2_bal3 is a built-in task"):
        local_task("genclf_sst2_bal3_sim3")  # the folder's other tasks are refused, not half its own


def test_strategy_demonstrations_without_a_training_split(data_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from genclf_harness.harness.local_tasks import write_local_tasks

    root = tmp_path / "data"
    _write_set(root, "questions", {"labels": list(get_spec("trec").labels)}, {"test": _rows(data_dir, "trec", "test", 30)})
    monkeypatch.setenv("GENCLF_DATA_DIR", str(root))
    out = tmp_path / "yamls"
    out.mkdir()
    write_local_tasks(["genclf_questions_bal3"], out)
    from lm_eval.tasks import TaskManager

    from genclf_harness.resources import tasks_dir

    task = TaskManager(include_path=[str(tasks_dir()), str(out)], include_defaults=False).load(
        ["genclf_questions_bal3"])["tasks"]["genclf_questions_bal3"]
    for doc in list(task.test_docs())[:10]:
        assert doc["prompt"].count("Text: ") == 4  # three demonstrations drawn from the other rows, then the input
        assert doc["prompt"].count(f"Text: {doc['text']}\n") == 1
        assert len(doc["demonstration_ids"]) == 3 and doc["id"] not in doc["demonstration_ids"]


@pytest.mark.parametrize(("labels", "strategy", "message"), [
    (["0", "1"], "num_gen", r"answer '1' would name two labels"),
    (["Positive", "positive"], "gen", r"would name two labels"),
    (["sure", "unsure"], "unc_gen", r"would name two labels"),
    (["\U0001F44E", "\U0001F44D"], "gen", r"has no letter or digit"),
])
def test_unreadable_answers_fail_before_any_model_work(data_dir: Path, tmp_path: Path, labels: list[str],
                                                       strategy: str, message: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.local_tasks import write_local_tasks
    from genclf_harness.resources import tasks_dir
    from genclf_harness.training.config import DataConfig

    rows = [{"text": r["text"], "label": r["label"]} for r in _rows(data_dir, "sst2", "test", 10)]
    _write_set(tmp_path / "data", "odd", {"labels": labels}, {"train": rows, "test": rows})
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "yamls"
    out.mkdir()
    task = f"genclf_odd_{strategy}"
    assert write_local_tasks([task], out) == [task]
    with pytest.raises(ValueError, match=rf"on data set 'odd': generated answers could not be read as labels: .*{message}"):
        TaskManager(include_path=[str(tasks_dir()), str(out)], include_defaults=False).load([task])
    with pytest.raises(ValueError, match=rf"strategy: .*{message}"):
        DataConfig(dataset="odd", strategy=strategy.removesuffix("gen").rstrip("_") or "zero", eval_split="test").check()
    # scored, the same labels are fine: nothing has to be read back
    assert write_local_tasks(["genclf_odd"], out) == ["genclf_odd"]


def test_numbers_in_input_fields_are_text(data_dir: Path, tmp_path: Path) -> None:
    rows = [{"text": r["text"], "stars": 1 + 4 * r["label"], "label": r["label"]} for r in _rows(data_dir, "sst2", "test", 4)]
    _write_set(tmp_path, "rated", {"labels": ["negative", "positive"], "input_fields": ["text", "stars"]}, {"test": rows})
    loaded = load_split("rated", "test", data_dir=tmp_path)
    assert [row["stars"] for row in loaded] == [str(r["stars"]) for r in rows]
    rows[1]["stars"] = True
    _write_set(tmp_path, "rated", {"labels": ["negative", "positive"], "input_fields": ["text", "stars"]}, {"test": rows})
    with pytest.raises(DataError, match=r"test.jsonl:2: field 'stars' is not a string \(bool\)"):
        load_split("rated", "test", data_dir=tmp_path)


def test_unmatched_genclf_names_get_a_hint(data_dir: Path, tmp_path: Path) -> None:
    from genclf_harness.harness.local_tasks import unmatched_hint

    _nli(data_dir, tmp_path)
    assert unmatched_hint(["genclf_sst2", "genclf_my_nli_bal3_gen", "hellaswag"], str(tmp_path)) is None
    hint = unmatched_hint(["genclf_my_nil", "genclf_sst2"], str(tmp_path))
    assert hint.startswith("genclf_my_nil: no built-in genclf task, and no local data set")
    assert f"({tmp_path}; local data sets: my_nli)" in hint and "did you mean genclf_my_nli" in hint


@pytest.mark.parametrize("name", ["true", "null", "1.0", "No"])
def test_names_yaml_would_misread_stay_strings(name: str, data_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.local_tasks import write_local_tasks
    from genclf_harness.resources import tasks_dir

    _nli(data_dir, tmp_path / "data", name=name)
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "yamls"
    out.mkdir()
    tasks = [f"genclf_{name}", f"genclf_{name}_bal3_gen"]
    assert write_local_tasks(tasks, out) == tasks
    loaded = TaskManager(include_path=[str(tasks_dir()), str(out)], include_defaults=False).load(tasks)["tasks"]
    for task in tasks:
        assert loaded[task].config.dataset_kwargs["dataset"] == name
        assert len(loaded[task].test_docs()) == 40


def test_a_local_name_that_makes_a_builtin_task_name_is_refused(data_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder cb_unc: genclf_cb_unc is the built-in CB task with the unc strategy, so the folder's
    other tasks (genclf_cb_unc_bal3 ...) would belong to another data set than its plain task."""
    from genclf_harness.harness.local_tasks import local_task

    _nli(data_dir, tmp_path, name="cb_unc")
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path))
    assert local_task("genclf_cb_unc") is None  # the built-in task
    for name in ("genclf_cb_unc_bal3", "genclf_cb_unc_strategies"):
        with pytest.raises(DataError, match=r"local data set 'cb_unc' .*its task genclf_cb_unc is a built-in task"):
            local_task(name)


def test_an_explicit_data_dir_wins_for_the_whole_run(data_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The same name under GENCLF_DATA_DIR and under an explicit data_dir: once the explicit one is
    read, lookups without a data_dir (answer parsing, rewards) get the same folder and rows."""
    import genclf_harness.data.local as local

    monkeypatch.setattr(local, "_FOUND_ELSEWHERE", {})
    names = ["entailment", "not_entailment"]
    _nli(data_dir, tmp_path / "env", meta={"labels": names, "label_words": ["yes", "no"]})
    _nli(data_dir, tmp_path / "explicit", meta={"labels": names, "label_words": ["true", "false"]})
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "env"))
    assert get_spec("my_nli").label_words == ("yes", "no")
    explicit = get_spec("my_nli", str(tmp_path / "explicit"))
    assert explicit.label_words == ("true", "false") and explicit.folder == str((tmp_path / "explicit" / "my_nli").resolve())
    assert get_spec("my_nli") == explicit
    (tmp_path / "env" / "my_nli" / "validation.jsonl").write_text("")  # rows come from the explicit folder
    assert len(load_split("my_nli", "validation")) == 40


def test_predict_only_and_too_many_shots(data_dir: Path, tmp_path: Path, default_model_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--predict_only logs one score per label (no calibration anchors, which lm-eval's own
    process_results cannot read); more shots than the few-shot split holds is an error naming it."""
    from genclf_harness.cli.eval import main as genclf_eval

    genclf_eval(["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_sst2",
                 "--limit", "3", "--predict_only", "--log_samples", "--output_path", str(tmp_path / "out")])
    samples = [json.loads(line) for line in next((tmp_path / "out").rglob("samples_genclf_sst2_*.jsonl")).open()]
    assert len(samples) == 3 and all(len(s["resps"]) == 2 for s in samples)

    rows = _rows(data_dir, "sst2", "test", 6)
    _write_set(tmp_path / "data", "tiny", {"labels": ["negative", "positive"]}, {"train": rows[:2], "test": rows[2:]})
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "data"))
    from genclf_harness.cli.eval import run  # raises, where main prints one line and returns 2

    with pytest.raises(DataError, match=r"genclf_tiny: --num_fewshot 5 needs 5 demonstrations, and the few-shot "
                                        r"split 'train' of data set 'tiny' has 2 to draw from"):
        run(["--model", "genclf-hf", "--model_args", "pretrained=default", "--tasks", "genclf_tiny",
                     "--num_fewshot", "5", "--limit", "2"])


def test_grpo_balance_names_a_label_absent_from_the_pool_before_scoring(data_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from genclf_harness.training.config import load_config
    from genclf_harness.training.examples import load_classifier_data
    from genclf_harness.training.grpo import GRPORecipeConfig, _select_rows

    names = ["negative", "neutral", "positive"]
    train = [{"text": r["text"], "label": names[2 * r["label"]]} for r in _rows(data_dir, "sst2", "train", 30)]
    _write_set(tmp_path / "data", "three", {"labels": names}, {"train": train, "test": train[:5]})
    monkeypatch.setenv("GENCLF_DATA_DIR", str(tmp_path / "data"))
    config = load_config(GRPORecipeConfig, None, ["data.dataset=three", "data.eval_split=test", "data.chat_template=false"])
    data = load_classifier_data(config.data, chat=False)
    with pytest.raises(ValueError, match=r"the 30 pooled training rows have no row with the gold label 'neutral'"):
        _select_rows(config, data, model=None, tokenizer=None)  # raised before the model is needed


def test_a_name_yaml_reads_as_another_type_gets_a_quoting_hint() -> None:
    from genclf_harness.training.config import ConfigError, load_config
    from genclf_harness.training.sft import SFTRecipeConfig

    with pytest.raises(ConfigError, match=r"data.dataset: expected a string, got True \(YAML read the value as bool; "
                                          r"quote a string"):
        load_config(SFTRecipeConfig, None, ["data.dataset=true"])
