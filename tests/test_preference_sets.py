"""Preference folders of your own (issue 20, item 3): LLMBar rebuilt with other field names, as
HH-RLHF-style chosen/rejected strings and as TRL-style message lists, in tmp_path from the real
LLMBar rows (../shared/data). Each must read back as the original pairs (the prompt split off
exactly), give the built-in tasks' figures in lm-eval, and refuse bad rows by file, line and field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from genclf_harness.data import DataError
from genclf_harness.data.preference_sets import (
    PreferenceDataError,
    load_preference_pairs,
    preference_set_spec,
    split_dialogues,
)

DATA = Path(os.environ.get("GENCLF_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _llmbar(limit: int) -> list[dict]:
    lines = (DATA / "llmbar" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    # rows whose texts are already stripped, so that "split off exactly" is a string equality
    clean = [r for r in rows if all(r[k] == r[k].strip() for k in ("instruction", "output_1", "output_2"))]
    return clean[:limit]


def _write(path: Path, rows: list[dict], meta: dict | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    if meta is not None:
        (path.parent / "meta.json").write_text(json.dumps(meta))


def _better(row: dict) -> tuple[str, str]:
    return (row["output_1"], row["output_2"]) if row["label"] == 1 else (row["output_2"], row["output_1"])


@pytest.fixture()
def root(tmp_path):
    rows = _llmbar(12)
    _write(tmp_path / "llmbar" / "test.jsonl", rows, None)
    _write(tmp_path / "renamed" / "test.jsonl",
           [{"uid": r["id"], "prompt": r["instruction"], "response_a": r["output_1"], "response_b": r["output_2"],
             "winner": "A" if r["label"] == 1 else "B", "category": r["subset"]} for r in rows],
           {"kind": "preference", "label_values": {"A": 1, "B": 2},
            "fields": {"id": "uid", "output_1": "response_a", "output_2": "response_b", "label": "winner",
                       "subset": "category"}})
    _write(tmp_path / "hh" / "test.jsonl",
           [{"chosen": f"\n\nHuman: {r['instruction']}\n\nAssistant: {_better(r)[0]}",
             "rejected": f"\n\nHuman: {r['instruction']}\n\nAssistant: {_better(r)[1]}"} for r in rows],
           {"kind": "preference"})
    _write(tmp_path / "trl" / "train.jsonl",
           [{"chosen": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": _better(r)[0]}],
             "rejected": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": _better(r)[1]}]}
            for r in rows], {"kind": "preference"})
    return tmp_path


def test_other_field_names_read_back_as_llmbar(root):
    original = load_preference_pairs("llmbar", data_dir=root)
    assert len(original) == 12 and {p.label for p in original} == {1, 2}
    renamed = load_preference_pairs("renamed", data_dir=root)
    assert [(p.id, p.instruction, p.output_1, p.output_2, p.label, p.subset) for p in renamed] == [
        (p.id, p.instruction, p.output_1, p.output_2, p.label, p.subset) for p in original]


@pytest.mark.parametrize("folder", ["hh", "trl"])
def test_chosen_rejected_dialogues_split_the_prompt_exactly(root, folder):
    original = load_preference_pairs("llmbar", data_dir=root)
    pairs = load_preference_pairs(folder, data_dir=root)  # trl: its only split, train
    assert [p.label for p in pairs] == [1, 2] * 6  # the chosen reply alternates between the positions
    for pair, source in zip(pairs, original):
        assert pair.instruction == source.instruction
        chosen = pair.output(pair.label)
        rejected = pair.output(3 - pair.label)
        assert (chosen, rejected) == _better({"output_1": source.output_1, "output_2": source.output_2,
                                              "label": source.label})
    if folder == "trl":
        assert pairs[0].prompt_messages == ({"role": "user", "content": original[0].instruction},)


def test_multi_turn_dialogues_keep_the_shared_turns_in_the_prompt():
    head = "\n\nHuman: Name a colour.\n\nAssistant: Blue.\n\nHuman: Another one?"
    instruction, chosen, rejected, _ = split_dialogues(f"{head}\n\nAssistant: Red.", f"{head}\n\nAssistant: Rocks.", "x")
    assert instruction == head.strip() and (chosen, rejected) == ("Red.", "Rocks.")
    # replies that begin alike: the cut is still the last assistant turn both share
    instruction, chosen, rejected, _ = split_dialogues("\n\nHuman: Hi\n\nAssistant: I can help.",
                                                       "\n\nHuman: Hi\n\nAssistant: I cannot.", "x")
    assert (instruction, chosen, rejected) == ("Hi", "I can help.", "I cannot.")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    instruction, chosen, rejected, prompt = split_dialogues(
        messages + [{"role": "assistant", "content": "good"}], messages + [{"role": "assistant", "content": "bad"}], "x")
    assert prompt == tuple(messages) and (chosen, rejected) == ("good", "bad")
    assert instruction == "System: Be brief.\n\nUser: Q1\n\nAssistant: A1\n\nUser: Q2"


@pytest.mark.parametrize("row, message", [
    ({"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}, "share no prompt"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: a\n\nAssistant: x"}, "are identical"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: a\n\nAssistant:  x "}, "replies are identical"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: x"}, r"test.jsonl:1: field 'rejected' is missing"),
    ({"chosen": [{"role": "user", "content": "a"}], "rejected": "a"}, "must both be strings or both lists"),
    ({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}],
      "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "y"}]}, "share no prompt"),
    ({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 3}],
      "rejected": [{"role": "user", "content": "a"}]}, r"chosen\[1\] must be a message"),
    ({"instruction": "i", "output_1": "o", "output_2": "o", "label": 1}, "two outputs are identical"),
    ({"instruction": "i", "output_1": "o", "output_2": "p", "label": "C"}, r"field 'label' is 'C', an unknown label"),
    ({"instruction": "i", "output_1": 4, "output_2": "p", "label": 1}, r"field 'output_1' is not a string"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, message):
    _write(tmp_path / "bad" / "test.jsonl", [row], {"kind": "preference"})
    with pytest.raises(PreferenceDataError, match=message):
        load_preference_pairs("bad", data_dir=tmp_path)


@pytest.mark.parametrize("meta, message", [
    ({"kind": "preference", "fields": {"answer": "a"}}, r"'fields' has unknown keys \['answer'\]"),
    ({"kind": "preference", "label_values": {"A": 3}}, "'label_values' must map"),
    ({"kind": "preference", "eval_split": "holdout"}, "'eval_split' is 'holdout'"),
    ({"kind": "preference", "assistant_marker": " "}, "'assistant_marker' must be"),
])
def test_bad_meta_is_named(root, meta, message):
    (root / "hh" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=message):
        preference_set_spec("hh", root)


def test_tasks_are_written_for_a_preference_folder(root, tmp_path_factory):
    from genclf_harness.cli.eval_checks import check_data
    from genclf_harness.data import get_spec
    from genclf_harness.harness.local_tasks import local_task, preference_task, write_local_tasks

    assert preference_task("genclf_hh", str(root)) == ("hh", "pointwise")
    assert preference_task("genclf_hh_pairwise", str(root)) == ("hh", "pairwise")
    assert preference_task("genclf_llmbar_pairwise", str(root)) == ("llmbar", "pairwise")
    assert preference_task("genclf_hh_zero", str(root)) is None and local_task("genclf_hh", str(root)) is None
    with pytest.raises(DataError, match="holds preference pairs"):
        get_spec("hh", root)
    out = tmp_path_factory.mktemp("tasks")
    written = write_local_tasks(["genclf_hh", "genclf_trl_pairwise", "genclf_llmbar"], out, str(root))
    assert sorted(written) == ["genclf_hh", "genclf_trl_pairwise"]  # genclf_llmbar ships as a YAML
    assert "_preference_pairwise_template_yaml" in (out / "genclf_trl_pairwise.yaml").read_text()
    check_data(["genclf_hh", "genclf_trl_pairwise"], str(root))
    _write(root / "hh" / "test.jsonl", [{"chosen": "a", "rejected": "b"}], None)
    with pytest.raises(PreferenceDataError, match="hh/test.jsonl:1: .*share no prompt"):
        check_data(["genclf_hh_pairwise"], str(root))


def test_labelled_dpo_rows_from_a_folder(root, tmp_path, monkeypatch):
    from genclf_harness.verifiers.pairwise.dpo_pairs import main, prompts_of

    monkeypatch.setenv("GENCLF_DATA_DIR", str(root))
    original = load_preference_pairs("llmbar", data_dir=root)
    assert prompts_of("hh") == list(dict.fromkeys(p.instruction for p in original))
    out = tmp_path / "pairs.jsonl"
    assert main(["--dataset", "trl", "--labelled", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12
    for row, source in zip(rows, original):
        better, worse = _better({"output_1": source.output_1, "output_2": source.output_2, "label": source.label})
        assert row["prompt"] == [{"role": "user", "content": source.instruction}]
        assert row["chosen"] == [{"role": "assistant", "content": better}]
        assert row["rejected"] == [{"role": "assistant", "content": worse}]


@pytest.mark.slow  # a model load and lm-eval over 8 pairs in both forms (about a minute on 2 cores)
def test_a_renamed_folder_gives_the_built_in_figures(root, default_model_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.local_tasks import local_include_path
    from genclf_harness.harness.registry import register
    from genclf_harness.resources import tasks_dir

    register()
    tasks = ["genclf_llmbar", "genclf_llmbar_pairwise", "genclf_renamed", "genclf_renamed_pairwise"]
    results = lm_eval.simple_evaluate(
        model="genclf-hf", model_args=f"pretrained={default_model_dir},dtype=float32", tasks=tasks,
        task_manager=TaskManager(include_path=[str(tasks_dir()), *local_include_path(tasks, str(root))],
                                 metadata={"data_dir": str(root)}),
        metadata={"data_dir": str(root)}, limit=8, device="cpu", batch_size=8,
    )["results"]
    for built_in, mine in (("genclf_llmbar", "genclf_renamed"), ("genclf_llmbar_pairwise", "genclf_renamed_pairwise")):
        figures = {k: v for k, v in results[built_in].items() if k.endswith(",none") and isinstance(v, float)}
        assert figures and all(results[mine][k] == v or (v != v and results[mine][k] != results[mine][k])
                               for k, v in figures.items())
    assert 0.0 <= results["genclf_renamed_pairwise"]["consistency,none"] <= 1.0
