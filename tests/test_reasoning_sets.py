"""Reasoning folders of your own (issue 20, item 1): GSM8K rebuilt in tmp_path with other field
names from the real rows (../shared/data) must be the built-in gsm8k task exactly (problems,
prompt, answers, corruptions, reference solutions), give the same verifier figures in lm-eval and
the same best-of-N candidates; the other answer rules read what they should; bad rows are named.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from genclf_harness.data import DataError
from genclf_harness.verifiers.genrm.problems import GSM8K, get_task

DATA = Path(os.environ.get("GENCLF_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _write(folder: Path, split: str, rows: list[dict], meta: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reasoning")
    for split, limit in (("train", 50), ("test", 60)):
        rows = [json.loads(line) for line in (DATA / "gsm8k" / f"{split}.jsonl").read_text().splitlines()[:limit]]
        _write(root / "mymath", split, [{"qid": r["id"], "problem_text": r["question"], "worked": r["solution"],
                                         "final": r["answer"]} for r in rows])
        # no answer field at all: a number rule reads it from the solution's #### line
        _write(root / "noanswers", split, [{"id": r["id"], "question": r["question"], "solution": r["solution"]}
                                            for r in rows])
    (root / "mymath" / "meta.json").write_text(json.dumps({
        "kind": "reasoning", "answer_type": "number",
        "fields": {"id": "qid", "question": "problem_text", "solution": "worked", "answer": "final"}}))
    (root / "noanswers" / "meta.json").write_text('{"kind": "reasoning"}')
    return root


def _gsm8k(split: str, count: int):
    return GSM8K.problems(split, count)


def test_gsm8k_as_a_folder_is_the_built_in_task(root):
    for name in ("mymath", "noanswers"):
        task = get_task(name, str(root))
        assert task.problems("test") == _gsm8k("test", 60) and task.problems("train") == _gsm8k("train", 50)
        assert task.demonstrations == GSM8K.demonstrations  # the first training solution is GSM8K's own demo
        assert task.instruction == GSM8K.instruction
        for index, problem in enumerate(task.problems("test")):
            assert task.corrupt(problem, random.Random(index)) == GSM8K.corrupt(problem, random.Random(index))
            assert task.solve(problem.question) == problem.solution
            assert task.is_correct(problem.solution, problem.answer)
        assert task.extract("so 3 + 4 = 7.\nThe answer is 7.") == "7"


def test_other_answer_rules(tmp_path):
    _write(tmp_path / "capitals", "test", [
        {"question": "Capital of France?", "answer": "Paris", "solution": "France's capital is Paris.\nThe answer is Paris."},
        {"question": "Capital of Peru?", "answer": " lima. "}], {"kind": "reasoning", "answer_type": "text"})
    task = get_task("capitals", str(tmp_path))
    first, second = task.problems("test")
    assert (first.answer, second.answer) == ("paris", "lima")
    assert task.is_correct("Hmm. The answer is \"Lima\".", second.answer) and not task.is_correct("It is Lima.", "lima")
    assert task.corrupt is None  # no synthetic negative for free text
    with pytest.raises(DataError, match="has no training split"):
        task.problems("train", 1)

    _write(tmp_path / "mcq", "test", [
        {"question": "2+2? A) 3 B) 4", "answer": "B", "solution": "2+2 is 4, option B.\nThe answer is B."},
        {"question": "Sky? A) blue B) red", "answer": "a"}], {"kind": "reasoning", "answer_type": "choices",
                                                             "choices": ["A", "B", "C", "D"]})
    task = get_task("mcq", str(tmp_path))
    first, _ = task.problems("test")
    assert first.answer == "b" and task.extract("I think (B) is right") == "b"
    assert task.extract("The answer is c.") == "c" and task.extract("\\boxed{D}") == "d"
    wrong = task.corrupt(first, random.Random(0))
    assert wrong.startswith("2+2 is 4, option B.\nThe answer is ") and not task.is_correct(wrong, first.answer)
    assert "X one of A, B, C, D" in task.instruction

    _write(tmp_path / "codes", "test", [{"question": "Code?", "answer": "XK-7"}],
           {"kind": "reasoning", "answer_type": "regex", "answer_pattern": r"CODE\[(\w+-\d+)\]",
            "instruction": "Find the code and write it as CODE[...]."})
    task = get_task("codes", str(tmp_path))
    assert task.is_correct("maybe CODE[AB-1] no, CODE[xk-7]", task.problems("test")[0].answer)
    assert task.instruction == "Find the code and write it as CODE[...].\n\n"


@pytest.mark.parametrize("rows, meta, message", [
    ([{"question": "q"}], {"kind": "reasoning"}, r"test.jsonl:1: field 'answer' \(the gold answer\) is missing"),
    ([{"question": "q", "answer": "many"}], {"kind": "reasoning"},
     r"test.jsonl:1: field 'answer' is 'many', which the 'number' rule cannot read"),
    ([{"question": "q", "answer": "E"}], {"kind": "reasoning", "answer_type": "choices", "choices": ["A", "B"]},
     r"field 'answer' is 'E', not one of the choices"),
    ([{"question": "", "answer": 1}], {"kind": "reasoning"}, r"field 'question' \(the question\) must be"),
    ([{"question": "q", "answer": [1]}], {"kind": "reasoning"}, r"must be a string or a number"),
    ([{"question": "q", "answer": 1, "solution": 5}], {"kind": "reasoning"}, r"field 'solution' \(the reference"),
    ([{"question": "q", "answer": "x"}], {"kind": "reasoning", "answer_type": "regex"}, r"'answer_pattern' .* is missing"),
    ([{"question": "q", "answer": "x"}], {"kind": "reasoning", "answer_type": "regex", "answer_pattern": "(a"},
     r"not a valid regular expression"),
    ([{"question": "q", "answer": "x"}], {"kind": "reasoning", "answer_type": "choices", "choices": ["A"]},
     r"list at least two choices"),
    ([{"question": "q", "answer": "x"}], {"kind": "reasoning", "answer_type": "numbers"}, r"'answer_type' is 'numbers'"),
])
def test_bad_reasoning_data_is_named(tmp_path, rows, meta, message):
    _write(tmp_path / "bad", "test", rows, meta)
    with pytest.raises(DataError, match=message):
        get_task("bad", str(tmp_path))


def test_tasks_configs_and_checks_see_a_reasoning_folder(root, monkeypatch, tmp_path):
    from genclf_harness.cli.eval_checks import check_data
    from genclf_harness.data import get_spec
    from genclf_harness.harness.local_tasks import local_task, reasoning_task, write_local_tasks
    from genclf_harness.resources import configs_dir
    from genclf_harness.training.config import load_config
    from genclf_harness.training.genrm import GenRMRecipeConfig

    assert reasoning_task("genclf_mymath_verify", str(root)) == ("mymath", "verify")
    assert reasoning_task("genclf_mymath_bon", str(root)) == ("mymath", "bon")
    assert reasoning_task("genclf_mymath", str(root)) is None and local_task("genclf_mymath_bon", str(root)) is None
    with pytest.raises(DataError, match="holds reasoning problems"):
        get_spec("mymath", root)
    written = write_local_tasks(["genclf_mymath_verify", "genclf_mymath_bon", "genclf_gsm8k_bon"], tmp_path, str(root))
    assert sorted(written) == ["genclf_mymath_bon", "genclf_mymath_verify"]
    assert "task: mymath" in (tmp_path / "genclf_mymath_verify.yaml").read_text()
    check_data(["genclf_mymath_verify"], str(root))
    monkeypatch.setenv("GENCLF_DATA_DIR", str(root))
    config = load_config(GenRMRecipeConfig, configs_dir() / "genrm_gsm8k_cpu.yaml", ["data.task=mymath"])
    assert config.data.task == "mymath"
    with pytest.raises(Exception, match="unknown reasoning task 'nomath'.*mymath"):
        load_config(GenRMRecipeConfig, configs_dir() / "genrm_gsm8k_cpu.yaml", ["data.task=nomath"])


def test_verify_fallback_documents_are_gsm8ks(root):
    from genclf_harness.harness.verifier_tasks.genrm import load_verify_candidates

    built_in = load_verify_candidates(num_problems=20)["test"].to_list()
    mine = load_verify_candidates(num_problems=20, task="mymath", data_dir=str(root))["test"].to_list()
    assert len(built_in) == len(mine) > 20
    assert [(r["query"], r["gold"], r["answer"]) for r in mine] == [(r["query"], r["gold"], r["answer"]) for r in built_in]


@pytest.mark.slow  # samples 2 problems x 2 solutions with the real model for both tasks, then lm-eval verifies
def test_best_of_n_candidates_and_verifier_figures_match_gsm8k(root, default_model_dir, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from genclf_harness.backends.generation import HFGenerator, SamplingSettings
    from genclf_harness.harness.local_tasks import local_include_path
    from genclf_harness.harness.registry import register
    from genclf_harness.resources import tasks_dir
    from genclf_harness.verifiers.genrm.bon import sample_candidates

    generator = HFGenerator.from_pretrained(str(default_model_dir), dtype="float32")
    settings = SamplingSettings(n=2, max_new_tokens=24, temperature=1.0, seed=3)
    sets = {}
    for name, task in (("gsm8k", GSM8K), ("mymath", get_task("mymath", str(root)))):
        sets[name] = sample_candidates(generator, task, task.problems("test", 2), tmp_path / f"{name}.jsonl", settings,
                                       show_progress=False)
    assert [[(c.text, c.answer, c.correct) for c in s.candidates] for s in sets["gsm8k"]] == [
        [(c.text, c.answer, c.correct) for c in s.candidates] for s in sets["mymath"]]

    register()
    tasks = ["genclf_gsm8k_verify", "genclf_mymath_verify"]
    results = lm_eval.simple_evaluate(
        model="genclf-hf", model_args=f"pretrained={default_model_dir},dtype=float32", tasks=tasks,
        task_manager=TaskManager(include_path=[str(tasks_dir()), *local_include_path(tasks, str(root))],
                                 metadata={"data_dir": str(root), "num_problems": 3}),
        device="cpu", batch_size=8,
    )["results"]
    for metric in ("acc,none", "acc_balanced,none", "auroc,none"):
        assert results["genclf_mymath_verify"][metric] == results["genclf_gsm8k_verify"][metric]
