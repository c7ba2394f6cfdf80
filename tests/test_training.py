"""genclf-train: config checks, reward functions, and few-step SFT/GRPO runs on the real default model.

The slow tests train for a handful of steps on real SST-2 rows: SFT overfits 8 examples (its
loss must fall), its adapter must load in lm-eval's ``peft=`` path with the same scores, a 2-step
run goes through ``genclf-train sft`` with the chat template, and GRPO takes 2 steps from the SFT
adapter with the label reward. Nothing is mocked.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from genclf_harness.prompts import LabelSet
from genclf_harness.training.config import ConfigError, build_config, load_config
from genclf_harness.training.grpo import GRPORecipeConfig
from genclf_harness.training.rewards import FormatReward, LabelMatchReward
from genclf_harness.training.sft import SFTRecipeConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def _write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("sft_*.yaml")))
def test_shipped_sft_configs_load(name: str) -> None:
    config = load_config(SFTRecipeConfig, CONFIGS / name)
    assert config.data.dataset in name


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("grpo_*.yaml")))
def test_shipped_grpo_configs_load(name: str, tmp_path: Path) -> None:
    # Their init_from is the SFT run's output, which exists only after SFT: point it at a folder.
    config = load_config(GRPORecipeConfig, CONFIGS / name, [f"model.init_from={tmp_path}"])
    assert config.train.num_generations >= 2
    with pytest.raises(ConfigError, match="init_from.*not a folder"):
        load_config(GRPORecipeConfig, CONFIGS / name, [f"model.init_from={tmp_path / 'missing'}"])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("train:\n  learnig_rate: 1.0e-4\n", r"unknown key train\.'learnig_rate'.*Did you mean train\.'learning_rate'"),
        ("trainer:\n  seed: 1\n", r"unknown key 'trainer'.*Did you mean 'train'"),
        ("train:\n  learning_rate: fast\n", r"train\.learning_rate: expected a number, got 'fast'"),
        ("train:\n  max_steps: 2.5\n", r"train\.max_steps: expected an integer"),
        ("model:\n  peft: qlora\n", r"model\.peft: expected one of 'lora', 'none', got 'qlora'"),
        ("model:\n  lora_r: 0\n", r"model\.lora_r: must be at least 1"),
        ("model:\n  trust_remote_code: yes please\n", r"model\.trust_remote_code: expected true or false"),
        ("data:\n  dataset: sst3\n", r"data\.dataset: Unknown data set 'sst3'. Did you mean"),
        ("data:\n  strategy: rand3_deff\n", r"data\.strategy: .*unknown token 'deff'"),
        ("data:\n  dataset: agnews\n  eval_split: validation\n", r"data\.eval_split: .*no split 'validation'"),
        ("data:\n  chat_template: maybe\n", r"data\.chat_template: expected true or false, or 'auto', got 'maybe'"),
        ("train:\n  trainer_kwargs:\n    warmup_ratioo: 0.1\n", r"train\.trainer_kwargs\.warmup_ratioo: SFTConfig has no field"),
        ("train: [1, 2]\n", r"section 'train' must be a mapping"),
        ("- just a list\n", r"top level must be a mapping"),
    ],
)
def test_config_errors_name_the_file_and_the_key(tmp_path: Path, text: str, pattern: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as caught:
        load_config(SFTRecipeConfig, path)
    assert str(path) in str(caught.value)


def test_grpo_config_checks_the_group_size(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  per_device_train_batch_size: 12\n  num_generations: 8\n")
    with pytest.raises(ConfigError, match=r"train\.num_generations: .*\(12\) must be a multiple of num_generations \(8\)"):
        load_config(GRPORecipeConfig, path)
    with pytest.raises(ConfigError, match=r"unknown key reward\.'weight'"):
        load_config(GRPORecipeConfig, None, ["reward.weight=1"])


def test_grpo_prompt_selection_rule_and_its_config_checks() -> None:
    from genclf_harness.training.grpo import select_uncertain

    probs = [0.99, 0.5, 0.01, 0.9, 0.2, 0.95, 0.02]
    assert select_uncertain(probs, 0.02, 0.9, None) == [1, 3, 4, 6]  # both ends inclusive, order kept
    assert select_uncertain(probs, 0.02, 0.9, 2) == [1, 3]
    assert select_uncertain(probs, 0.0, 1.0, None) == list(range(7))
    with pytest.raises(ValueError, match="1 gold-label probabilities are NaN"):
        select_uncertain([0.5, float("nan")], 0.0, 1.0, None)
    with pytest.raises(ConfigError, match=r"select\.min_gold_prob, max_gold_prob: need 0 <= min < max <= 1"):
        load_config(GRPORecipeConfig, None, ["select.min_gold_prob=0.9", "select.max_gold_prob=0.5"])
    with pytest.raises(ConfigError, match=r"select\.by"):
        load_config(GRPORecipeConfig, None, ["select.by=hardest"])
    with pytest.raises(ConfigError, match=r"select\.pool_examples: must be at least 1"):
        load_config(GRPORecipeConfig, None, ["select.pool_examples=0"])


def test_grpo_bias_split_separates_a_threshold_shift_from_better_ranking() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("grpo_bias_split", REPO / "scripts" / "grpo_bias_split.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gold = [0, 0, 0, 0, 1, 1, 1, 1]
    sft = [-3.0, -2.0, -1.5, -0.2, -0.1, 0.5, -1.0, 2.0]  # ranks well, answers 1 too rarely: 6 of 8 right
    shifted = [x + 0.15 for x in sft]  # the same ranking, a lower threshold: 7 of 8 right, all of it bias
    split = module.bias_split(sft, shifted, gold)
    assert split["sft_acc"] == 0.75 and split["grpo_acc"] == 0.875 and split["sft_positive_share"] == 0.25
    assert split["bias_points"] == pytest.approx(12.5) and split["rest_points"] == pytest.approx(0.0)
    better = [-3.0, -2.0, -1.5, -0.2, 0.1, 0.5, 0.3, 2.0]  # answers 1 on half, all right; SFT at half: 6 of 8
    split = module.bias_split(sft, better, gold)
    assert split["sft_at_grpo_share_acc"] == 0.75 and split["grpo_acc"] == 1.0
    assert split["bias_points"] == pytest.approx(0.0) and split["rest_points"] == pytest.approx(25.0)
    assert split["sft_best_threshold_acc"] == 0.875  # threshold between -0.2 and -0.1: only -1.0 is wrong
    assert module.bias_split(sft, [1.0] * 8, gold)["sft_at_grpo_share_acc"] == 0.5  # constant answer
    with pytest.raises(ValueError, match="NaN or infinite"):
        module.bias_split(sft, [float("nan")] * 8, gold)


def test_balanced_selection_keeps_equal_counts_per_gold_label_interleaved() -> None:
    from genclf_harness.training.grpo import balance_by_label

    # Rows 0-7 with gold labels; the in-range rows are over-weighted toward label 1 (5 of 7).
    labels = [1, 1, 0, 1, 1, 0, 1, 2]
    names = ["negative", "positive"]
    in_range = [0, 1, 2, 3, 4, 5, 6]
    assert balance_by_label(in_range, labels, names, None) == [2, 0, 5, 1]  # the rarer label caps the other
    assert balance_by_label(in_range, labels, names, 2) == [2, 0]  # limit // K per label
    assert balance_by_label([6, 5, 4, 2], labels, names, None) == [5, 6, 2, 4]  # order within a label kept
    with pytest.raises(ValueError, match=r"no row in the gold-probability range has the gold label 'negative' \(in range: negative 0, positive 3\)"):
        balance_by_label([0, 1, 3], labels, names, None)
    with pytest.raises(ValueError, match="max_train_examples=2 is fewer than one row for each of the 3 labels"):
        balance_by_label([0, 2, 7], labels, ["a", "b", "c"], 2)
    assert balance_by_label([0, 2, 7], [2, 0, 0, 0, 0, 0, 0, 1], ["a", "b", "c"], None) == [2, 7, 0]


def test_bench_train_carries_over_the_stages_it_does_not_rerun(tmp_path: Path) -> None:
    from genclf_harness.cli.bench_train import StageRow, _carry_over

    def row(stage: str, acc: float) -> dict:
        return {"stage": stage, "decoding": "scored", "acc": acc, "f1_macro": acc, "unparseable": None,
                "train_seconds": None, "eval_seconds": 1.0}

    earlier = {"dataset": "sst2", "split": "test", "documents": 3, "strategy": "zero", "chat_template": False,
               "rows": [row("zero-shot", 0.5), row("SFT", 0.9), row("SFT+GRPO", 0.8)],
               "details": {"SFT": {"output_dir": "x"}}}
    path = tmp_path / "bench_train.json"
    path.write_text(json.dumps(earlier))
    test = {"dataset": "sst2", "split": "test", "prompts": [0, 1, 2], "strategy": "zero", "chat": False}
    carried = _carry_over(path, ["grpo"], test)
    assert sorted(carried) == ["SFT", "zero-shot"]
    assert carried["SFT"] == ([StageRow(**row("SFT", 0.9))], {"output_dir": "x"})
    assert _carry_over(path, ["zero", "sft", "grpo"], test) == {}
    assert _carry_over(path, ["grpo"], {**test, "prompts": [0, 1]}) == {}  # other test documents: nothing
    assert _carry_over(tmp_path / "missing.json", ["grpo"], test) == {}


def test_overrides_are_yaml_scalars_and_checked(tmp_path: Path) -> None:
    config = load_config(SFTRecipeConfig, CONFIGS / "sft_sst2_cpu.yaml",
                         ["train.max_steps=7", "train.learning_rate=1e-4", "data.max_train_examples=null",
                          "model.lora_target_modules=[q_proj, v_proj]"])
    assert config.train.max_steps == 7 and config.train.learning_rate == 1e-4
    assert config.data.max_train_examples is None and config.model.lora_target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match=r"train\.max_steps: expected an integer, got 'many'"):
        load_config(SFTRecipeConfig, CONFIGS / "sft_sst2_cpu.yaml", ["train.max_steps=many"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(SFTRecipeConfig, None, ["train.max_steps"])


def test_cli_reports_config_errors_before_loading_a_model(tmp_path: Path, monkeypatch, capsys) -> None:
    from genclf_harness.cli import train
    from genclf_harness.training import modeling

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded despite a bad config")

    monkeypatch.setattr(modeling, "load_base_model", no_model)
    monkeypatch.setattr(modeling, "load_tokenizer", no_model)
    path = _write(tmp_path, "data:\n  dataset: sst2\n  max_train_examples: -5\n")
    assert train.main(["sft", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "data.max_train_examples: must be at least 1" in error
    good = _write(tmp_path, "data:\n  dataset: sst2\n", "good.yaml")
    assert train.main(["grpo", "--config", str(good), "--set", "train.beta=-1"]) == 2
    assert "train.beta: must be non-negative" in capsys.readouterr().err


def test_cli_leaves_a_process_group_it_did_not_join_alone(tmp_path: Path) -> None:
    """genclf-train destroys only the process group its own run joined (under torchrun). A group that
    existed before (an in-process vLLM engine's) stays: destroying it broke every later vLLM engine
    in the process ("not initialized in the world group map"). A subprocess, so this test's group
    never meets the session's engines."""
    import subprocess
    import sys

    path = _write(tmp_path, "data:\n  dataset: sst2\n  max_train_examples: -5\n")
    script = (
        "import torch.distributed as d\n"
        f"d.init_process_group('gloo', init_method='file://{tmp_path}/store', rank=0, world_size=1)\n"
        "from genclf_harness.cli import train\n"
        f"assert train.main(['sft', '--config', {str(path)!r}]) == 2\n"
        "print('still joined:', d.is_initialized())\n"
        "d.destroy_process_group()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "still joined: True" in done.stdout, done.stdout + done.stderr[-2000:]


# -- examples ----------------------------------------------------------------------------------


def test_examples_plain_text_match_the_task_prompt_and_chat_puts_the_label_in_the_assistant_turn() -> None:
    from genclf_harness.training.examples import load_classifier_data

    config = load_config(SFTRecipeConfig, None, ["data.max_train_examples=4", "data.max_eval_examples=3"]).data
    plain = load_classifier_data(config, chat=False)
    example = plain.sft_examples()[0]
    assert example["prompt"].startswith("Classify the sentiment of each movie review as negative or positive.\n\n")
    assert example["prompt"].endswith("\nSentiment:") and example["completion"] in (" negative", " positive")
    chat = load_classifier_data(config, chat=True).sft_examples()[0]
    assert chat["prompt"] == [{"role": "user", "content": example["prompt"]}]
    assert chat["completion"] == [{"role": "assistant", "content": example["completion"].strip()}]
    grpo = plain.grpo_examples()[0]
    assert grpo["prompt"] == example["prompt"] and grpo["label"] in (0, 1) and grpo["id"]
    assert len(plain.train_rows) == 4
    assert [r["id"] for r in plain.eval_rows] == ["sst2-validation-0", "sst2-validation-1", "sst2-validation-2"]


def test_held_out_rows_and_the_grpo_window_never_overlap_training() -> None:
    from genclf_harness.training.examples import load_classifier_data

    base = ["data.dataset=agnews", "data.eval_split=train", "data.max_eval_examples=50"]
    sft = load_classifier_data(load_config(SFTRecipeConfig, None, [*base, "data.max_train_examples=300"]).data, False)
    grpo = load_classifier_data(load_config(SFTRecipeConfig, None, [*base, "data.skip_train_examples=300",
                                                                    "data.max_train_examples=100"]).data, False)
    ids = lambda rows: {r["id"] for r in rows}  # noqa: E731
    assert len(sft.train_rows) == 300 and len(grpo.train_rows) == 100 and len(sft.eval_rows) == 50
    assert ids(sft.eval_rows) == ids(grpo.eval_rows)
    assert not ids(sft.train_rows) & ids(sft.eval_rows)
    assert not ids(grpo.train_rows) & (ids(sft.train_rows) | ids(sft.eval_rows))


# -- rewards -----------------------------------------------------------------------------------

SST2 = ["negative", "positive"]


def test_label_match_reward_cases() -> None:
    reward = LabelMatchReward(SST2)
    completions = [
        "positive",                       # exact
        " Positive.",                     # exact after normalisation
        "The sentiment is positive.",     # in a sentence
        "negative",                       # wrong label
        "I cannot say.",                  # no label
        "positive or negative",           # two labels: ambiguous
        "",                               # empty
        "not negative",                   # only a negated label
    ]
    rewards = reward(["p"] * len(completions), completions, None, label=[1] * len(completions))
    assert rewards == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert reward.__name__ == "label_match"


def test_label_match_reward_options_and_gold_forms() -> None:
    reward = LabelMatchReward(SST2, unparseable=-1.0, gold_key="answer", name="sst2_match")
    rewards = reward(["p"] * 4, ["positive", "negative", "no idea", "Negative"], None,
                     answer=["positive", 0, 0, "negative"], trainer_state=None, log_extra=None, log_metric=None)
    assert rewards == [1.0, 1.0, -1.0, 1.0]
    assert reward.__name__ == "sst2_match"
    with pytest.raises(KeyError, match="remove_unused_columns=False"):
        reward(["p"], ["positive"], None, label=[1])
    with pytest.raises(ValueError, match="not one of"):
        reward(["p"], ["positive"], None, answer=["neutral"])


def test_rewards_read_chat_completions() -> None:
    reward = LabelMatchReward(SST2)
    completions = [[{"role": "assistant", "content": "positive"}], [{"role": "assistant", "content": "negative"}]]
    assert reward([[{"role": "user", "content": "x"}]] * 2, completions, label=[1, 1]) == [1.0, 0.0]


def test_numeric_labels_and_dataset_label_sets() -> None:
    numeric = LabelMatchReward(SST2, label_style="numeric")
    assert numeric.label_set.choices == ("1", "2")
    assert numeric(["p"] * 4, ["2", "1", "**2**", "2 (positive)"], label=[1, 1, 1, 1]) == [1.0, 0.0, 1.0, 1.0]
    agnews = LabelMatchReward.for_dataset("agnews", "zero")
    assert agnews(["p"] * 3, ["Technology", "Science/Technology", "Sports"], label=[3, "Science/Technology", 3]) \
        == [1.0, 1.0, 0.0]
    uncertain = LabelMatchReward.for_dataset("sst2", "unc", uncertain=0.25)
    assert uncertain(["p"] * 2, ["uncertain", "not sure"], label=[0, 0]) == [0.25, 0.25]


def test_format_reward() -> None:
    reward = FormatReward(SST2, parsed=0.5)
    completions = ["positive", " Negative.", "The sentiment is positive.", "positive\n\nReview: more", "hmm"]
    assert reward(["p"] * 5, completions) == [1.0, 1.0, 0.5, 0.5, 0.0]
    assert reward.__name__ == "label_format"


def test_rewards_pickle_round_trip() -> None:
    for reward in (LabelMatchReward(SST2, unparseable=-0.5), FormatReward(label_set=LabelSet.of(
            __import__("genclf_harness.data", fromlist=["get_spec"]).get_spec("trec")))):
        copy = pickle.loads(pickle.dumps(reward))
        assert copy.__name__ == reward.__name__
        completions = ["positive", "what?", "number", "negative"]
        labels = [1, 0, 0, 0]
        assert copy(["p"] * 4, completions, label=labels) == reward(["p"] * 4, completions, label=labels)


def test_reward_construction_errors() -> None:
    with pytest.raises(ValueError, match="needs label_words"):
        LabelMatchReward()
    with pytest.raises(ValueError, match="not distinct"):
        LabelMatchReward(["yes", "yes"])
    with pytest.raises(ValueError, match="outside"):
        LabelMatchReward(SST2)(["p"], ["positive"], label=[2])


# -- training runs on the default model -----------------------------------------------------------


def _sft_config(output_dir: Path, **train: object) -> SFTRecipeConfig:
    return build_config(SFTRecipeConfig, {
        "model": {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0},
        "data": {"dataset": "sst2", "chat_template": False, "max_train_examples": 8, "max_eval_examples": 8},
        "train": {"output_dir": str(output_dir), "per_device_train_batch_size": 8, "learning_rate": 2e-3,
                  "warmup_steps": 0, "lr_scheduler_type": "constant", "logging_steps": 1, "save_steps": 4,
                  "max_length": 128, "bf16": False, **train},
        "eval": {"max_new_tokens": 4},
    }, "<test>")


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, default_model_dir):
    """SFT overfitting 8 SST-2 training rows for 8 steps (LoRA, plain text)."""
    from genclf_harness.training.sft import train_classifier

    output_dir = tmp_path_factory.mktemp("sft")
    return train_classifier(_sft_config(output_dir, max_steps=8))


@pytest.mark.slow
def test_sft_loss_falls_when_overfitting(sft_run) -> None:
    losses = [entry["loss"] for entry in map(json.loads, (sft_run.output_dir / "log.jsonl").read_text().splitlines())
              if "loss" in entry]
    assert len(losses) >= 6
    assert losses[-1] < 0.5 * losses[0], losses
    assert (sft_run.output_dir / "adapter_config.json").is_file()
    assert (sft_run.output_dir / "checkpoint-8").is_dir()
    record = json.loads((sft_run.output_dir / "genclf_train.json").read_text())
    assert record["recipe"] == "sft" and record["config"]["train"]["max_steps"] == 8
    figures = record["figures"]
    assert figures["documents"] == 8 and 0.0 <= figures["scored"]["acc"] <= 1.0
    assert 0.0 <= figures["generative"]["unparseable"] <= 1.0


@pytest.mark.slow
def test_sft_adapter_loads_in_lm_eval_with_peft(sft_run, default_model_dir) -> None:
    """The saved adapter through genclf-hf's ``peft=`` gives the in-memory model's label scores."""
    from genclf_harness.backends.protocol import LabelPrompt
    from genclf_harness.backends.scorer import HFScorer
    from genclf_harness.data import get_spec, load_split
    from genclf_harness.harness.hf_model import GenclfHFLM
    from genclf_harness.prompts import PromptStrategy

    prompter = PromptStrategy.parse("zero").bind(get_spec("sst2"))
    prompts = [prompter.render(doc) for doc in load_split("sst2", "validation")[:3]]
    requests = [LabelPrompt(p.prompt, (" negative", " positive")) for p in prompts]
    in_memory = HFScorer(sft_run.model.eval(), sft_run.tokenizer).score(requests, show_progress=False)

    lm = GenclfHFLM(pretrained="default", peft=str(sft_run.output_dir), batch_size=4, dtype="float32")
    loaded = lm.scorer.score(requests, show_progress=False)
    for got, want in zip(loaded, in_memory, strict=True):
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
    base = HFScorer.from_pretrained("default").score(requests[:1], show_progress=False)[0]
    assert max(abs(a - b) for a, b in zip(base.logprobs, loaded[0].logprobs, strict=True)) > 1e-3


@pytest.mark.slow
def test_sft_cli_chat_template_and_resume(tmp_path: Path, default_model_dir) -> None:
    from genclf_harness.cli import train

    output_dir = tmp_path / "chat"
    common = ["--config", str(CONFIGS / "sft_sst2_cpu.yaml"), "--set", f"train.output_dir={output_dir}",
              "--set", "data.chat_template=true", "--set", "data.max_train_examples=8",
              "--set", "data.max_eval_examples=4", "--set", "train.per_device_train_batch_size=4",
              "--set", "train.save_steps=1", "--set", "train.logging_steps=1", "--set", "eval.max_new_tokens=4"]
    assert train.main(["sft", *common, "--set", "train.max_steps=1"]) == 0
    assert (output_dir / "checkpoint-1").is_dir()
    assert train.main(["sft", *common, "--set", "train.max_steps=2", "--resume"]) == 0
    record = json.loads((output_dir / "genclf_train.json").read_text())
    assert record["chat_template"] is True
    log = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    steps = [entry["step"] for entry in log if "loss" in entry]
    assert steps == [1, 2], steps  # the second run resumed at step 1 rather than starting over
    assert record["figures"]["chat_template"] is True and record["figures"]["documents"] == 4


@pytest.mark.slow
def test_grpo_two_steps_from_the_sft_adapter(sft_run, tmp_path: Path) -> None:
    from genclf_harness.training.grpo import train_classifier

    config = build_config(GRPORecipeConfig, {
        "model": {"init_from": str(sft_run.output_dir)},
        "data": {"dataset": "sst2", "chat_template": False, "skip_train_examples": 8, "max_train_examples": 8,
                 "max_eval_examples": 4},
        "train": {"output_dir": str(tmp_path / "grpo"), "max_steps": 2, "per_device_train_batch_size": 8,
                  "num_generations": 4, "max_completion_length": 4, "logging_steps": 1, "save_steps": 2,
                  "bf16": False, "beta": 0.0},
        "reward": {"format_weight": 0.1},
        "eval": {"max_new_tokens": 4},
        "select": {"by": "gold_prob", "pool_examples": 16, "min_gold_prob": 0.0, "max_gold_prob": 0.97},
    }, "<test>")
    result = train_classifier(config)
    log = [json.loads(line) for line in (result.output_dir / "log.jsonl").read_text().splitlines()]
    steps = [entry for entry in log if "rewards/label_match/mean" in entry]
    assert [entry["step"] for entry in steps] == [1, 2]
    assert all(0.0 <= entry["rewards/label_match/mean"] <= 1.0 for entry in steps)
    assert "rewards/label_format/mean" in steps[0]
    assert (result.output_dir / "adapter_config.json").is_file()
    record = json.loads((result.output_dir / "genclf_train.json").read_text())
    assert record["recipe"] == "grpo" and record["use_vllm"] is False
    assert record["figures"]["documents"] == 4
    # The 16 pooled rows were scored by the SFT adapter; only those below 0.97 gold probability train.
    selection = record["selection"]
    assert selection["pool"] == 16 and selection["above_max"] + selection["in_range"] + selection["below_min"] == 16
    # Balanced by default: as many positive as negative prompts, as many as the rarer label has in range.
    kept = selection["kept_labels"]
    assert kept["negative"] == kept["positive"] == min(4, *selection["in_range_labels"].values()) >= 1
    assert record["prompts"] == selection["kept"] == sum(kept.values())
    assert sum(selection["pool_labels"].values()) == 16
    assert 0.0 <= selection["kept_mean_gold_prob"] <= 0.97


@pytest.mark.slow
def test_training_under_two_ranks_shares_the_batches_and_writes_once(tmp_path: Path, sft_run) -> None:
    """genclf-train sft and grpo under torchrun with two CPU ranks (gloo): both ranks train (SFT
    takes half the steps one process would: 16 rows / (2 per rank x 2 ranks) = 4, not 8), one
    adapter and one record naming world size 2, the evaluation run once, by rank 0."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "genclf_harness.cli.train"]
    common = ["--set", "data.max_eval_examples=8", "--set", "train.logging_steps=1", "--set", "train.save_steps=100",
              "--set", "data.chat_template=false"]
    runs = {
        "sft": ["sft", "--config", str(CONFIGS / "sft_sst2_cpu.yaml"), "--set", "data.max_train_examples=16",
                "--set", "train.per_device_train_batch_size=2", "--set", "train.num_train_epochs=1",
                "--set", "train.max_steps=-1"],
        "grpo": ["grpo", "--config", str(CONFIGS / "grpo_sst2_cpu.yaml"), "--set", f"model.init_from={sft_run.output_dir}",
                 "--set", "select.by=none", "--set", "data.max_train_examples=8", "--set", "train.max_steps=2",
                 "--set", "train.per_device_train_batch_size=8", "--set", "train.num_generations=4",
                 "--set", "train.max_completion_length=4"],
    }
    for name, args in runs.items():
        out = tmp_path / name
        done = subprocess.run([*launch, *args, *common, "--set", f"train.output_dir={out}"], env=env, timeout=900,
                              capture_output=True, text=True)
        log = done.stdout + done.stderr
        assert done.returncode == 0, log[-3000:]
        assert log.count("rank 1 of 2: trained on its share") == 1, log[-3000:]
        assert log.count("Evaluating on 8 sst2 rows") == 1, log[-3000:]  # once, by rank 0
        record = json.loads((out / "genclf_train.json").read_text())
        assert record["world_size"] == 2 and record["figures"]["documents"] == 8
        assert (out / "adapter_model.safetensors").is_file()
        steps = {entry["step"] for entry in record["log_history"] if "loss" in entry}
        assert max(steps) == (4 if name == "sft" else 2), steps
