"""Strategy tasks end to end: the generated YAMLs, the loader, the strategy metrics, and a real-model
sweep (genclf-bench strategies) on a small slice of SST-2."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

# lm-eval looks each template metric name up in HF evaluate before its own registry; offline, the
# lookups otherwise wait on the network (set before lm-eval imports evaluate).
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")

from genclf_harness.data import get_spec, list_specs  # noqa: E402
from genclf_harness.harness.tasks import load_classification, strategy_task_name  # noqa: E402
from genclf_harness.prompts import CHANNEL_STRATEGIES, SWEEP_STRATEGIES, ClassificationPrompt, PromptStrategy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STRATEGY_TASKS = REPO / "genclf_harness" / "tasks" / "strategies"


def _generator():
    spec = importlib.util.spec_from_file_location("make_strategy_tasks", REPO / "scripts" / "make_strategy_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    from genclf_harness.resources import tasks_dir

    return TaskManager(include_path=str(tasks_dir()), include_defaults=False)


# ---------------------------------------------------------------- task files


def test_generated_task_files_are_up_to_date() -> None:
    assert _generator().main(["--check"]) == 0, "run: python scripts/make_strategy_tasks.py"


def test_task_names() -> None:
    assert strategy_task_name("sst2", "zero") == "genclf_sst2"
    assert strategy_task_name("sst2", "zero", "gen") == "genclf_sst2_gen"
    assert strategy_task_name("agnews", {"icl": "similar", "k": 3}, "gen") == "genclf_agnews_sim3_gen"
    assert strategy_task_name("rte", "def_unc") == "genclf_rte_def_unc"


def test_every_strategy_yaml_names_its_task_and_strategy() -> None:
    from lm_eval.tasks._yaml_loader import load_yaml

    seen = set()
    for path in sorted(STRATEGY_TASKS.glob("*/genclf_*.yaml")):
        config = load_yaml(path, resolve_func=False)
        if "group" in config:
            assert config["group"] == f"genclf_{path.parent.name}_strategies"
            continue
        kwargs = config["dataset_kwargs"]
        decoding = "gen" if config["output_type"] == "generate_until" else "ppl"
        assert config["task"] == path.stem == strategy_task_name(kwargs["dataset"], kwargs["strategy"], decoding)
        channel = PromptStrategy.parse(kwargs["strategy"]).channel
        # a channel task is lm-eval's multiple-input form: the gold index as its text, one context per label
        assert config["doc_to_text"] == ("gold" if channel else "prompt")
        assert config["num_fewshot"] == 0 and config["description"] == ""
        assert config["test_split"] == get_spec(kwargs["dataset"]).eval_split
        seen.add(config["task"])
    expected = {strategy_task_name(d, s, dec) for d in list_specs() for s in SWEEP_STRATEGIES for dec in ("ppl", "gen")}
    expected |= {strategy_task_name(d, s) for d in list_specs() for s in CHANNEL_STRATEGIES}
    assert seen == expected - {f"genclf_{d}" for d in list_specs()}


def test_strategy_tasks_load_and_render_as_the_strategy(task_manager) -> None:
    names = ["genclf_sst2_sim3", "genclf_sst2_unc", "genclf_sst2_num_gen", "genclf_sst2_unc_gen", "genclf_rte_def"]
    tasks = task_manager.load(names)["tasks"]
    for name in names:
        task = tasks[name]
        doc = task.test_docs()[0]
        strategy = PromptStrategy.parse(doc["strategy"])
        spec = get_spec(doc["dataset"])
        pool = load_split_rows(spec.name, spec.train_split)
        rendered = strategy.bind(spec, pool).render({k: doc[k] for k in (*spec.input_fields, "id", "label")})
        assert task.fewshot_context(doc, num_fewshot=0) == rendered.prompt
        if task.config.output_type == "multiple_choice":
            assert task.doc_to_choice(doc) == list(rendered.choices)
            assert task.doc_to_target(doc) == rendered.gold
        else:
            assert task.config.generation_kwargs["do_sample"] is False
            assert task.doc_to_target(doc) == rendered.target
    # uncertainty and generative tasks replace the calibrated template class by the plain one
    assert type(tasks["genclf_sst2_unc"]).__name__ == "StrategyTask"
    assert type(tasks["genclf_sst2_sim3"]).__name__ != "StrategyTask"


def test_chat_template_gets_one_user_message(task_manager) -> None:
    task = task_manager.load(["genclf_sst2_def_gen"])["tasks"]["genclf_sst2_def_gen"]
    doc = task.test_docs()[0]
    seen = []

    def chat_template(messages, add_generation_prompt=True):
        seen.append(messages)
        return "rendered"

    task.fewshot_context(doc, num_fewshot=0, apply_chat_template=True, chat_template=chat_template)
    assert seen == [[{"role": "user", "content": doc["prompt"]}]]


def test_zero_strategy_equals_the_default_task(task_manager) -> None:
    default = task_manager.load(["genclf_agnews"])["tasks"]["genclf_agnews"]
    zero = load_classification("agnews", strategy="zero")["test"]
    for i in range(5):
        assert default.fewshot_context(default.test_docs()[i], num_fewshot=0) == zero[i]["prompt"]


def load_split_rows(name: str, split: str) -> list[dict]:
    from genclf_harness.data import load_split

    return load_split(name, split)


# ---------------------------------------------------------------- loader


def test_loader_rows_with_a_strategy() -> None:
    data = load_classification("sst2", strategy={"icl": "balanced", "k": 2, "label_style": "numeric"})
    row = data["test"][0]
    assert row["strategy"] == "bal2_num" and row["dataset"] == "sst2"
    assert row["choices"] == ["1", "2"] and row["target"] == row["choices"][row["gold"]]
    assert row["prompt"].count("\nSentiment: ") == 2 and row["prompt"].endswith(row["input"])
    assert len(row["demonstration_ids"]) == 2
    train_row = data["train"][0]
    assert train_row["demonstration_ids"] == [] and train_row["choices"] == ["1", "2"]


def test_loader_without_a_strategy_is_unchanged() -> None:
    data = load_classification("trec")
    row = data["test"][0]
    spec = get_spec("trec")
    plain = ClassificationPrompt.render(spec, {k: row[k] for k in ("id", "text", "label")})
    assert (row["instruction"], row["query"], row["choices"], row["gold"]) == (
        plain.instruction, plain.query, list(plain.choices), plain.gold)
    assert "prompt" not in row


# ---------------------------------------------------------------- strategy metrics


def _doc(strategy: str, gold: int = 1) -> dict:
    rendered = PromptStrategy.parse(strategy).bind(get_spec("sst2")).render({"id": "d", "text": "x", "label": gold})
    return {"id": "d", "dataset": "sst2", "strategy": strategy, "choices": list(rendered.choices), "gold": gold}


def test_uncertain_scored_metrics() -> None:
    from genclf_harness.harness.strategy_metrics import acc_covered, macro_f1, process_results_uncertain

    doc = _doc("unc")
    sure = process_results_uncertain(doc, [(-3.0, False), (-1.0, True), (-2.0, False)])
    unsure = process_results_uncertain(doc, [(-3.0, False), (-2.0, False), (-1.0, True)])
    wrong = process_results_uncertain({**doc, "gold": 0}, [(-3.0, False), (-1.0, True), (-2.0, False)])
    assert (sure["acc"], sure["coverage"], sure["acc_forced"]) == (1.0, 1.0, 1.0)
    assert (unsure["acc"], unsure["coverage"], unsure["acc_forced"]) == (0.0, 0.0, 1.0)
    items = [sure["acc_covered"], unsure["acc_covered"], wrong["acc_covered"]]
    assert acc_covered(items) == 0.5  # 1 right of 2 covered
    assert math.isnan(acc_covered([unsure["acc_covered"]]))
    # gold 1,1,0; predictions 1, uncertain, 1: class 1 F1 = 2/(2+2)=0.5, class 0 F1 = 0
    assert macro_f1(items) == pytest.approx(0.25)


def test_generative_metrics_count_unparseable() -> None:
    from genclf_harness.harness.strategy_metrics import (
        macro_f1,
        process_results_generative,
        process_results_generative_uncertain,
    )

    doc = _doc("zero")
    right = process_results_generative(doc, [" The review is positive."])
    unreadable = process_results_generative(doc, [" I think it's great"])
    assert (right["acc"], right["unparseable"]) == (1.0, 0.0)
    assert (unreadable["acc"], unreadable["unparseable"]) == (0.0, 1.0)
    assert macro_f1([right["macro_f1"], unreadable["macro_f1"]]) == pytest.approx(2 / 3)
    numeric = process_results_generative(_doc("num"), ["2"])
    assert numeric["acc"] == 1.0
    unsure = process_results_generative_uncertain(_doc("unc"), ["uncertain"])
    assert (unsure["acc"], unsure["coverage"], unsure["unparseable"]) == (0.0, 0.0, 0.0)


def test_generative_metrics_reject_a_mismatched_label_set() -> None:
    from genclf_harness.harness.strategy_metrics import process_results_generative

    with pytest.raises(ValueError, match="differ"):
        process_results_generative({**_doc("zero"), "choices": ["bad", "good"]}, ["good"])


# ---------------------------------------------------------------- real model


def test_bench_strategies_on_real_model(tmp_path: Path, default_model_dir: Path, capsys) -> None:
    from genclf_harness.cli.bench import main

    output = tmp_path / "sweep.json"
    assert main(["strategies", "--dataset", "sst2", "--limit", "6", "--strategies", "zero,sim3,unc,num",
                 "--batch_size", "8", "--model_args", "pretrained=default,dtype=float32",
                 "--output", str(output)]) == 0
    table = capsys.readouterr().out
    assert "| strategy | decoding | acc | macro-F1 |" in table
    payload = json.loads(output.read_text())
    assert payload["dataset"] == "sst2" and payload["generation_chat_template"] is True
    rows = {(r["strategy"], r["decoding"]): r for r in payload["rows"]}
    assert set(rows) == {(s, d) for s in ("zero", "sim3", "unc", "num") for d in ("ppl-sum", "ppl-mean", "gen")}
    for (strategy, decoding), row in rows.items():
        assert row["documents"] == 6
        assert 0.0 <= row["acc"] <= 1.0 and 0.0 <= row["f1_macro"] <= 1.0
        assert (row["unparseable"] is not None) == (decoding == "gen")
        assert (row["coverage"] is not None) == (strategy == "unc")
        if payload["prior_matching"] and decoding != "gen":
            assert 0.0 <= row["acc_prior"] <= 1.0
    # single-token labels: the mean per token is the sum, so the decisions agree
    assert rows["zero", "ppl-sum"]["acc"] == rows["zero", "ppl-mean"]["acc"]


def test_bench_output_is_written_per_task_and_resumable(tmp_path: Path) -> None:
    from genclf_harness.cli.bench_strategies import StrategyResult, _resumed_rows, _write, format_table

    header = {"dataset": "sst2", "split": "test", "limit": 3, "model": "hf", "model_args": "pretrained=x",
              "generation_chat_template": True, "prior_matching": True}
    row = StrategyResult("sim3", "gen", "genclf_sst2_sim3_gen", 3, 0.5, 0.4, None, None, 1 / 3, 2.0, ("meh",))
    path = tmp_path / "out.json"
    _write(str(path), header, [row], complete=False)
    assert json.loads(path.read_text())["complete"] is False
    assert _resumed_rows(str(path), header) == [row]
    from genclf_harness.cli.errors import UsageError

    with pytest.raises(UsageError, match="limit"):
        _resumed_rows(str(path), {**header, "limit": 4})
    assert "| sim3 | gen | 0.500 | 0.400 |  |  | 0.333 | 2 |" in format_table(header, [row])


def test_manifest_of_a_strategy_task_names_its_answers_and_instruction() -> None:
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.manifest import task_manifest
    from genclf_harness.resources import tasks_dir

    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False)
    loaded = manager.load(["genclf_sst2_num_gen", "genclf_sst2_bal3", "genclf_sst2"])["tasks"]
    numeric = task_manifest(loaded["genclf_sst2_num_gen"], tokenizer=None)
    assert numeric["label_words"] == ["1", "2"] and numeric["strategy"] == {"name": "num", "demonstrations": "zero", "k": 0,
                                                                              "direction": "direct"}
    assert numeric["prompt"]["instruction"] == loaded["genclf_sst2_num_gen"].test_docs()[0]["instruction"]
    assert "1 means negative." in numeric["prompt"]["instruction"]
    balanced = task_manifest(loaded["genclf_sst2_bal3"], tokenizer=None)
    assert balanced["strategy"] == {"name": "bal3", "demonstrations": "balanced", "k": 3, "direction": "direct"}
    plain = task_manifest(loaded["genclf_sst2"], tokenizer=None)
    assert "strategy" not in plain and plain["label_words"] == ["negative", "positive"]
