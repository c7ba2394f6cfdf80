"""The data loader on the real shared data, and its errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genclf_harness.data import DataError, get_spec, list_specs, load_split


@pytest.mark.parametrize("name", ["sst2", "sst5", "agnews", "trec", "rte", "cb", "subj"])
def test_every_classification_dataset_loads_with_spec_labels(name: str, data_dir: Path) -> None:
    spec = get_spec(name)
    meta = json.loads((data_dir / name / "meta.json").read_text())
    assert list(spec.labels) == meta["labels"]
    for split in (spec.eval_split, spec.train_split):
        rows = load_split(name, split)
        assert len(rows) == meta["splits"][split]
        assert {row["label"] for row in rows} <= set(range(spec.num_labels))
        assert all(isinstance(row[f], str) for row in rows[:50] for f in spec.input_fields)
    # every class occurs in the training split, so demonstrations can cover them
    assert {row["label"] for row in load_split(name, spec.train_split)} == set(range(spec.num_labels))


def _write(root: Path, name: str, split: str, lines: list[str], labels: list[str] | None = None) -> None:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    if labels is not None:
        (folder / "meta.json").write_text(json.dumps({"labels": labels}))


def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does-not-exist.*does not exist"):
        load_split("sst2", "test", data_dir=tmp_path / "does-not-exist")


def test_unknown_dataset_suggests_close_names() -> None:
    with pytest.raises(DataError, match=r"Unknown data set 'sst3'.*Did you mean .*'sst2'"):
        get_spec("sst3")
    assert "agnews" in list_specs()


def test_unknown_split_is_named() -> None:
    with pytest.raises(DataError, match="no split 'dev'.*train, validation, test"):
        load_split("sst2", "dev")


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path, "sst2", "test", ['{"text": "fine", "label": 1}', '{"text": "broken", "label": 1'])
    with pytest.raises(DataError, match=r"sst2/test.jsonl:2: not valid JSON"):
        load_split("sst2", "test", data_dir=tmp_path)


def test_missing_field_is_named(tmp_path: Path) -> None:
    _write(tmp_path, "rte", "validation", ['{"premise": "p", "label": 0}'])
    with pytest.raises(DataError, match=r"validation.jsonl:1: field 'hypothesis' is missing"):
        load_split("rte", "validation", data_dir=tmp_path)


def test_label_outside_spec_is_named(tmp_path: Path) -> None:
    _write(tmp_path, "sst2", "test", ['{"text": "a", "label": 0}', '{"text": "b", "label": 2}'])
    with pytest.raises(DataError, match=r"test.jsonl:2: label 2 is outside the labels of 'sst2' \(0=negative, 1=positive\)"):
        load_split("sst2", "test", data_dir=tmp_path)
    _write(tmp_path, "sst2", "test", ['{"text": "a", "label": "great"}'])
    with pytest.raises(DataError, match=r"label 'great' is not a label of 'sst2'"):
        load_split("sst2", "test", data_dir=tmp_path)


def test_label_names_are_accepted(tmp_path: Path) -> None:
    _write(tmp_path, "sst2", "test", ['{"text": "a", "label": "positive"}'])
    assert load_split("sst2", "test", data_dir=tmp_path)[0]["label"] == 1


def test_meta_labels_must_match_spec(tmp_path: Path) -> None:
    _write(tmp_path, "sst2", "test", ['{"text": "a", "label": 0}'], labels=["bad", "good"])
    with pytest.raises(DataError, match=r"meta.json: labels \['bad', 'good'\] differ"):
        load_split("sst2", "test", data_dir=tmp_path)


def test_empty_dataset_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, "sst2", "test", [""])
    with pytest.raises(DataError, match="split 'test' is empty"):
        load_split("sst2", "test", data_dir=tmp_path)


def test_neither_source_reachable_names_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "empty-root").mkdir()
    with pytest.raises(DataError) as err:
        load_split("agnews", "test", data_dir=tmp_path / "empty-root")
    message = str(err.value)
    assert "no local file" in message and "agnews/test.jsonl" in message
    assert "fancyzhx/ag_news@main" in message
