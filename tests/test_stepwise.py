"""Stepwise judges, ProcessBench, StepWiser labels and training, chunk-reset search.

The judge runs the real default model on real ProcessBench solutions; the Monte-Carlo labelling
rules are checked on fixed rollouts (a policy that returns given continuations: the rules, not
the model, are under test there); chunk-reset search uses the real judge.
"""

from __future__ import annotations

import json
import math

import pytest

from genclf_harness.verifiers.stepwise.labels import (
    LabelledStep,
    QEstimate,
    Trajectory,
    balance,
    estimate_q,
    label_steps,
    labelled_steps,
    read_labels,
    write_labels,
)
from genclf_harness.verifiers.stepwise.steps import (
    DEFAULT_STEP_FORMAT,
    best_threshold_scores,
    first_error,
    load_processbench,
    parse_verdict,
    processbench_scores,
    split_steps,
)

# -- splitting, prompt, verdicts --------------------------------------------------------------------


def test_split_steps_by_lines_and_paragraphs():
    text = "First, add 2 and 3.\nThat is 5.\n\n  Then double it: 10. \n\n\nThe answer is 10."
    assert split_steps(text, "paragraphs") == ["First, add 2 and 3.\nThat is 5.", "Then double it: 10.",
                                               "The answer is 10."]
    assert split_steps(text, "lines") == ["First, add 2 and 3.", "That is 5.", "Then double it: 10.",
                                          "The answer is 10."]
    assert split_steps("one step only") == ["one step only"]
    with pytest.raises(ValueError, match="empty"):
        split_steps(" \n\n ")
    with pytest.raises(ValueError, match="split rule"):
        split_steps("a", "sentences")  # type: ignore[arg-type]


def test_step_prompt_shows_only_earlier_steps_and_rejects_bad_indices():
    steps = ["a = 2", "b = a + 1 = 3", "The answer is 3."]
    first = DEFAULT_STEP_FORMAT.user_message("Find b.", steps, 0)
    assert "Earlier steps:\n(none)" in first and "Step 1: a = 2" in first and "b = a" not in first
    third = DEFAULT_STEP_FORMAT.user_message("Find b.", steps, 2)
    assert "Step 1: a = 2\nStep 2: b = a + 1 = 3\n\nNew step:\nStep 3: The answer is 3." in third
    assert third.endswith("Is the new step correct (Yes/No)?")
    for bad in (3, -1, True):
        with pytest.raises(IndexError, match="out of range"):
            DEFAULT_STEP_FORMAT.user_message("Find b.", steps, bad)
    with pytest.raises(ValueError, match="no steps"):
        DEFAULT_STEP_FORMAT.user_message("Find b.", [], 0)
    with pytest.raises(ValueError, match=r"steps\[1\]"):
        DEFAULT_STEP_FORMAT.user_message("Find b.", ["ok", "  "], 0)


@pytest.mark.parametrize(("text", "verdict"), [
    ("The step adds correctly.\nVerdict: Yes", True),
    ("Verdict: yes ... on reflection the sum is off. Verdict: **No**", False),
    ("It is wrong. \\boxed{Negative}", False),
    ("\\boxed{\\text{Correct}}", True),
    ("Yes, the arithmetic holds.", True),
    ("no.", False),
    ("I cannot tell whether the step is right.", None),
    ("", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) is verdict


# -- first error and the ProcessBench metric ------------------------------------------------------------


def test_first_error_threshold_and_nan():
    assert first_error([0.9, 0.6, 0.2, 0.1]) == 2
    assert first_error([0.9, 0.6, 0.7]) == -1
    assert first_error([0.9, 0.6, 0.7], threshold=0.65) == 1
    assert first_error([0.5, 0.1]) == 1  # exactly at the threshold is not a rejection
    assert first_error([]) == -1
    with pytest.raises(ValueError, match="step 1: P\\(Yes\\) is NaN"):
        first_error([0.9, math.nan])
    with pytest.raises(ValueError, match="threshold"):
        first_error([0.9], threshold=1.5)


def test_processbench_metric_matches_the_published_definition():
    # Three erroneous solutions (labels 2, 0, 3) and two correct ones (-1).
    labels = [-1, -1, 2, 0, 3]
    predicted = [-1, 1, 2, 1, -1]
    scores = processbench_scores(predicted, labels)
    # erroneous: index 2 found exactly; 1 != 0 (too late) and -1 != 3 (missed) both count as wrong
    assert scores.acc_erroneous == pytest.approx(1 / 3)
    assert scores.acc_correct == pytest.approx(1 / 2)
    assert scores.f1 == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert (scores.num_erroneous, scores.num_correct) == (3, 2)
    # flagging an error too early is as wrong as missing it
    assert processbench_scores([1], [2]).acc_erroneous == 0.0
    assert processbench_scores([-1, -1], [-1, 4]).f1 == 0.0  # all-"correct" predictor: 0 on errors
    assert math.isnan(processbench_scores([0], [0]).acc_correct)
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        processbench_scores([0, 1], [0])


def test_oracle_threshold_finds_the_best_cut():
    step_scores = [(0.3, 0.2), (0.1, 0.5), (0.4, 0.45)]  # labels: step 1 wrong, step 0 wrong, all right
    labels = [1, 0, -1]
    threshold, scores = best_threshold_scores(step_scores, labels)
    assert scores.f1 == 1.0 and 0.2 < threshold <= 0.3
    assert processbench_scores([first_error(s) for s in step_scores], labels).f1 == 0.0  # 0.5 flags step 0 always


def test_processbench_data_and_errors(tmp_path):
    gsm8k = load_processbench("gsm8k")
    assert len(gsm8k) == 400
    assert all(-1 <= e.label < len(e.steps) for e in gsm8k)
    assert 0 < sum(e.label == -1 for e in gsm8k) < 400
    assert len(load_processbench("math", limit=7)) == 7
    with pytest.raises(ValueError, match="has no split 'olympiad'.*splits: gsm8k, math"):
        load_processbench("olympiad")
    with pytest.raises(ValueError, match="processbench.*is not a folder"):
        load_processbench("gsm8k", data_dir=tmp_path)
    (tmp_path / "processbench").mkdir()
    (tmp_path / "processbench" / "gsm8k.jsonl").write_text(
        json.dumps({"id": "x", "problem": "p", "steps": ["a", "b"], "first_error_step": 2}) + "\n")
    with pytest.raises(ValueError, match="gsm8k.jsonl:1: field 'first_error_step' is 2, out of range for 2 steps"):
        load_processbench("gsm8k", data_dir=tmp_path)


def test_processbench_task_functions():
    from genclf_harness.harness.verifier_tasks import stepwise as pb

    doc = {"id": "s", "num_steps": 3, "label": 1, "threshold": 0.5}
    # (log P(Yes), log P(No)) per step: P(Yes) = 0.73, 0.27, 0.5
    results = [(-1.0, False), (-2.0, False), (-2.0, False), (-1.0, False), (-1.5, False), (-1.5, False)]
    item = pb.process_solution(doc, results)["step_f1"]
    assert item.predicted == 1 and item.p_yes[0] == pytest.approx(1 / (1 + math.exp(-1)))
    assert pb.acc_erroneous([item]) == 1.0 and math.isnan(pb.acc_correct([item]))
    with pytest.raises(ValueError, match="4 results for 3 steps"):
        pb.process_solution(doc, results[:4])
    with pytest.raises(ValueError, match="not numbers"):
        pb.process_solution(doc, [(math.nan, False)] + results[1:])


# -- the judge on the real model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judge(default_model_dir):
    from genclf_harness.verifiers.stepwise.judge import StepJudge

    return StepJudge.from_pretrained(str(default_model_dir))


def _manual_p_yes(model, tokenizer, context: str) -> float:
    """P(Yes) normalised over Yes/No by plain forward passes over context + answer."""
    import torch

    def logprob(answer: str) -> float:
        ctx_ids = tokenizer(context.rstrip("\n"), add_special_tokens=False)["input_ids"]
        ids = tokenizer(context + answer, add_special_tokens=False)["input_ids"]
        assert ids[: len(ctx_ids)] == ctx_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        logps = torch.log_softmax(logits, dim=-1)
        return sum(float(logps[pos - 1, ids[pos]]) for pos in range(len(ctx_ids), len(ids)))

    margin = logprob("Yes") - logprob("No")
    return 1 / (1 + math.exp(-margin))


def test_judge_p_yes_matches_manual_forward_passes(judge):
    example = load_processbench("gsm8k", limit=1)[0]
    steps = list(example.steps[:3])
    judged = judge.judge([example.problem], [steps])[0]
    assert len(judged.scores) == 3
    model = judge.scorer.model
    for index, value in enumerate(judged.scores):
        context = judge.render(judge.user_message(example.problem, steps, index))
        assert context.endswith("<|im_start|>assistant\n")
        assert value == pytest.approx(_manual_p_yes(model, judge.tokenizer, context), abs=1e-4)
    assert judged.first_error == first_error(judged.scores)
    # batching several solutions gives each its own scores, in order
    both = judge.judge([example.problem, example.problem], [steps[:1], steps])
    assert both[0].scores[0] == pytest.approx(judged.scores[0], abs=1e-5)
    assert both[1].scores == pytest.approx(judged.scores, abs=1e-5)
    with pytest.raises(ValueError, match="2 problems but 1 solutions"):
        judge.judge(["a", "b"], [steps])


def test_generated_verdicts_are_parsed_per_step(judge):
    example = load_processbench("gsm8k", limit=1)[0]
    out = judge.judge_generated([example.problem], [list(example.steps[:2])], reasoning=False, max_new_tokens=12)[0]
    assert len(out.texts) == len(out.verdicts) == len(out.scores) == 2
    for text, verdict, score in zip(out.texts, out.verdicts, out.scores):
        assert verdict is parse_verdict(text)
        assert score == (0.5 if verdict is None else float(verdict))
    assert out.first_error == first_error(out.scores)


@pytest.mark.slow  # minutes on a loaded 2-core CPU (model load, lm-eval / GRPO)
def test_processbench_task_runs_in_lm_eval_and_matches_the_judge(judge, default_model_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.registry import register
    from genclf_harness.resources import tasks_dir

    register()
    results = lm_eval.simple_evaluate(
        model="genclf-hf",
        model_args=f"pretrained={default_model_dir},dtype=float32",
        tasks=["genclf_processbench_gsm8k"],
        task_manager=TaskManager(include_path=str(tasks_dir())),
        apply_chat_template=True,
        log_samples=True,
        limit=1,
        device="cpu",
        batch_size=4,
    )
    metrics = results["results"]["genclf_processbench_gsm8k"]
    sample = results["samples"]["genclf_processbench_gsm8k"][0]
    doc = sample["doc"]
    assert len(sample["resps"]) == 2 * doc["num_steps"]  # one Yes/No pair per step of the one solution
    ours = judge.judge([doc["problem"]], [doc["steps"]])[0]
    item = sample["step_f1"]
    lm_eval_scores = item[3] if isinstance(item, (list, tuple)) else item["p_yes"]
    assert list(lm_eval_scores) == pytest.approx(list(ours.scores), abs=1e-4)
    expected = processbench_scores([ours.first_error], [doc["label"]])
    assert metrics["acc_erroneous,none"] == expected.acc_erroneous


# -- Monte-Carlo labels ----------------------------------------------------------------------------------------


def test_labelling_rules_on_fixed_q():
    q = [0.5, 0.5, 0.25, 0.0, 0.0, 0.75]
    assert label_steps(q, "abs_q") == [True, True, False, False, True]
    # ratios: 1.0, 0.5, 0.0, 0/0 (zero before: positive iff Q_i > 0), 0.75/0
    assert label_steps(q, "rel_ratio", gamma=0.8) == [True, False, False, False, True]
    assert label_steps(q, "rel_ratio", gamma=0.4) == [True, True, False, False, True]
    # effective: Q_i + α(Q_i − Q_{i−1}) > 1/n with α = 1, n = 4: 0.5, 0.0, −0.25, 0.0, 1.5
    assert label_steps(q, "rel_effective", alpha=1.0, n=4) == [True, False, False, False, True]
    assert label_steps(q, "rel_effective", alpha=0.0, n=8) == [True, True, False, False, True]
    with pytest.raises(ValueError, match="needs n"):
        label_steps(q, "rel_effective")
    with pytest.raises(ValueError, match="Q_1 = 1.5"):
        label_steps([0.5, 1.5], "abs_q")
    with pytest.raises(ValueError, match="unknown labelling rule"):
        label_steps(q, "abs")  # type: ignore[arg-type]


class FixedRollouts:
    """A policy whose continuations are given per prefix length (the labelling is under test)."""

    def __init__(self, by_prefix: dict[int, list[str]]) -> None:
        self.by_prefix = by_prefix
        self.prompts: list[str] = []

    def generate(self, prompts, *, n=1, **kwargs):
        self.prompts.extend(prompts)
        return [list(self.by_prefix[prompt.count("\n") - 1][:n]) for prompt in prompts]


def test_q_estimates_and_labels_from_fixed_rollouts():
    from genclf_harness.verifiers.genrm.problems import GSM8K

    steps = ("She buys 3 packs of 4 pens: 3 * 4 = 12 pens.", "She gives away 5: 12 - 5 = 8 pens.",
             "The answer is 8.")
    trajectory = Trajectory("Pens?", steps, "7", "PROMPT\n", id="t")
    policy = FixedRollouts({
        0: ["3*4 = 12, 12 - 5 = 7. The answer is 7.", "The answer is 7.", "The answer is 12.", "The answer is 6."],
        1: ["12 - 5 = 7. The answer is 7.", "The answer is 8.", "The answer is 8.", "The answer is 8."],
        2: ["The answer is 8."] * 4,
    })
    [estimate] = estimate_q(policy, [trajectory], GSM8K.is_correct, rollouts=4)
    assert estimate.q == (0.5, 0.25, 0.0, 0.0) and estimate.successes == (2, 1, 0, 0)
    assert policy.prompts[2] == "PROMPT\n" + steps[0] + "\n" + steps[1] + "\n"  # the prefix as written
    labelled = labelled_steps([trajectory], [estimate], "rel_ratio", gamma=0.4)
    assert [s.label for s in labelled] == [True, False, False]
    assert [(s.index, s.q_before, s.q_after) for s in labelled] == [(0, 0.5, 0.25), (1, 0.25, 0.0), (2, 0.0, 0.0)]
    assert [s.label for s in labelled_steps([trajectory], [estimate], "abs_q")] == [True, False, False]
    with pytest.raises(ValueError, match="3 steps need 4 Q values"):
        labelled_steps([trajectory], [QEstimate((0.5, 0.5), (2, 2), 4)])


def test_balance_and_label_files(tmp_path):
    steps = [LabelledStep(f"s{i}", "p", ("a", "b"), i % 2, i < 5, 0.5, 0.5) for i in range(7)]
    balanced = balance(steps, seed=1)
    assert sum(s.label for s in balanced) == sum(not s.label for s in balanced) == 2
    assert [s.id for s in balanced] == sorted((s.id for s in balanced), key=lambda x: int(x[1:]))
    assert balance(steps[:3]) == []  # one class only
    path = tmp_path / "labels.jsonl"
    write_labels(path, balanced)
    assert read_labels(path) == balanced
    path.write_text(json.dumps({"problem": "p", "steps": ["a"], "index": 1, "label": True}) + "\n")
    with pytest.raises(ValueError, match="labels.jsonl:1: index 1 is not a step"):
        read_labels(path)


# -- chunk-reset search ----------------------------------------------------------------------------------


class ScriptedPolicy:
    """Returns the next of a fixed list of continuations at each call (search logic under test)."""

    def __init__(self, continuations: list[str]) -> None:
        self.continuations = list(continuations)
        self.calls = 0

    def generate(self, prompts, *, n=1, **kwargs):
        out = []
        for _ in prompts:
            out.append([self.continuations[min(self.calls, len(self.continuations) - 1)]])
            self.calls += 1
        return out


def test_chunk_reset_search_resamples_rejected_chunks(judge):
    from genclf_harness.verifiers.stepwise.judge import StepJudge, chunk_reset_search, split_chunk

    assert split_chunk("\nA = 2.\n\nB = 3.") == ("A = 2.", False)
    assert split_chunk("The answer is 5.\n") == ("The answer is 5.", True)
    problem = "Tom has 2 apples and buys 3 more. How many apples does he have?"
    drafts = ["Tom starts with 2 apples.\n\nmore", "He has 2 + 3 = 6 apples.\n\nmore", "2 + 3 = 5.\n\nx",
              "The answer is 5."]
    # Threshold 1.0: every chunk is rejected, so each is drawn 1 + max_resets times and the best kept.
    strict = StepJudge(judge.scorer, tokenizer=judge.tokenizer, threshold=1.0)
    policy = ScriptedPolicy(drafts)
    [result] = chunk_reset_search(policy, strict, [problem], ["PROMPT"], max_chunks=2, max_resets=2)
    assert result.attempts == [3, 3] and result.rejected == 6 and policy.calls == 6
    assert result.chunks[1] == "The answer is 5." and result.finished  # that chunk had no blank line after it
    first_round = strict.step_scores([problem] * 3, [[d.split("\n\n")[0]] for d in drafts[:3]])
    assert result.scores[0] == pytest.approx(max(s[0] for s in first_round), abs=1e-5)
    # Threshold 0: everything is accepted at once; the search ends at the chunk with no blank line after it.
    lenient = StepJudge(judge.scorer, tokenizer=judge.tokenizer, threshold=0.0)
    [result] = chunk_reset_search(ScriptedPolicy(drafts), lenient, [problem], ["PROMPT"], max_chunks=10)
    assert result.finished and result.attempts == [1, 1, 1, 1] and result.rejected == 0
    assert result.text.endswith("The answer is 5.")


@pytest.mark.slow  # sampling and judging on a loaded 2-core CPU takes minutes
def test_chunk_reset_search_with_the_real_policy(judge):
    from genclf_harness.backends.generation import HFGenerator
    from genclf_harness.verifiers.genrm.problems import GSM8K
    from genclf_harness.verifiers.stepwise.judge import chunk_reset_search

    policy = HFGenerator.from_scorer(judge.scorer)
    problem = "Tom has 2 apples and buys 3 more. How many apples does he have?"
    [result] = chunk_reset_search(policy, judge, [problem], [GSM8K.prompt(judge.tokenizer, problem)],
                                  max_chunks=2, max_resets=1, chunk_tokens=24, seed=3)
    assert 1 <= len(result.chunks) <= 2 and all(1 <= a <= 2 for a in result.attempts)
    for score, attempts in zip(result.scores, result.attempts):
        assert (score >= judge.threshold) or attempts == 2  # kept below threshold only after all resets


# -- StepWiser training -------------------------------------------------------------------------------------


def test_stepwiser_configs_load_and_reward():
    from genclf_harness.resources import configs_dir
    from genclf_harness.training.config import ConfigError, load_config
    from genclf_harness.training.stepwiser import StepWiserRecipeConfig, VerdictMatchReward

    for name in ("stepwiser_cpu.yaml", "stepwiser_gpu.yaml"):
        config = load_config(StepWiserRecipeConfig, configs_dir() / name)
        assert config.train.num_generations >= 2 and config.data.rollouts >= 1
    with pytest.raises(ConfigError, match="data.rule"):
        load_config(StepWiserRecipeConfig, configs_dir() / "stepwiser_cpu.yaml", ["data.rule=abs"])
    reward = VerdictMatchReward(unparsed=-0.5)
    completions = ["fine. Verdict: Yes", [{"role": "assistant", "content": "Verdict: No"}], "hmm"]
    assert reward(["p"] * 3, completions, label=[True, True, False]) == [1.0, 0.0, -0.5]
    with pytest.raises(KeyError, match="label"):
        reward(["p"], ["Verdict: Yes"])


@pytest.mark.slow  # minutes on a loaded 2-core CPU (model load, lm-eval / GRPO)
def test_a_few_steps_of_stepwiser_training(tmp_path, default_model_dir):
    """Labels from real ProcessBench solutions (steps before the first error: positive; the first
    error: negative), then two GRPO steps with the verdict-match reward on the real model."""
    from genclf_harness.resources import configs_dir
    from genclf_harness.training.config import load_config
    from genclf_harness.training.stepwiser import StepWiserRecipeConfig, train_stepwiser

    steps = []
    for example in load_processbench("gsm8k", limit=12):
        if example.label > 0:
            short = example.steps[: example.label + 1]
            steps.append(LabelledStep(example.id, example.problem, short, example.label - 1, True, math.nan, math.nan))
            steps.append(LabelledStep(example.id, example.problem, short, example.label, False, math.nan, math.nan))
    labels = tmp_path / "labels.jsonl"
    write_labels(labels, steps[:4])
    out = tmp_path / "judge"
    config = load_config(StepWiserRecipeConfig, configs_dir() / "stepwiser_cpu.yaml", [
        f"data.labels_file={labels}", f"train.output_dir={out}", "train.max_steps=2", "train.num_generations=2",
        "train.per_device_train_batch_size=4", "train.max_completion_length=12", "train.logging_steps=1",
        "eval.processbench_limit=0",
    ])
    record = train_stepwiser(config)
    assert (out / "adapter_config.json").is_file() and len(read_labels(out / "step_labels.jsonl")) == 4
    assert record["label_counts"]["positive"] == 2 and record["examples"] == 4
    rewards = [e["reward"] for e in record["log_history"] if "reward" in e]
    assert rewards and all(0.0 <= r <= 1.0 for r in rewards)
