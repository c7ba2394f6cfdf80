"""Pairwise preference on the real default model and the real LLMBar data: the pointwise (IPO) and
pairwise judges against manual forward passes, the position-swap mapping and consistency on
hand-made scores, the lm-eval tasks against the Python judges, and DPO pairs accepted by TRL."""

from __future__ import annotations

import json
import math

import pytest

from genclf_harness.verifiers.pairwise.judge import (
    IPO_FORMAT,
    PAIRWISE_FORMAT,
    PairwiseJudge,
    PointwiseJudge,
    PreferenceDataError,
    PreferencePair,
    decide_pairwise,
    decide_pointwise,
    load_llmbar,
    pairwise_report,
    parse_pair,
    pointwise_report,
    read_pairs,
)


@pytest.fixture(scope="module")
def model_and_tokenizer(default_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(default_model_dir), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(default_model_dir))


@pytest.fixture(scope="module")
def scorer(model_and_tokenizer):
    from genclf_harness.backends.scorer import HFScorer

    model, tokenizer = model_and_tokenizer
    return HFScorer(model, tokenizer)


@pytest.fixture(scope="module")
def llmbar(data_dir):
    return load_llmbar("test", data_dir=str(data_dir))


def _short_pairs(pairs, count):
    """The shortest pairs, natural and adversarial both, so forward passes stay cheap."""
    ranked = sorted(pairs, key=lambda p: len(p.instruction) + len(p.output_1) + len(p.output_2))
    natural = [p for p in ranked if p.subset == "natural"][: count // 2]
    adversarial = [p for p in ranked if p.subset.startswith("adversarial")][: count - len(natural)]
    return natural + adversarial


def _manual_logprobs(model, tokenizer, context: str, answers: tuple[str, str]) -> tuple[float, float]:
    """log P(answer) of two single-token answers after the context, from one plain forward pass."""
    import torch

    ids = tokenizer(context)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
    out = []
    for answer in answers:
        answer_ids = tokenizer(context + answer)["input_ids"][len(ids):]
        assert len(answer_ids) == 1, f"{answer!r} is one token after the assistant marker"
        out.append(float(logprobs[answer_ids[0]]))
    return out[0], out[1]


def _chat(tokenizer, user: str) -> str:
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered.endswith("assistant\n")
    return rendered


# -- data ----------------------------------------------------------------------------------------


def test_llmbar_is_read_whole_with_labels_and_subsets(llmbar):
    assert len(llmbar) == 419
    assert {p.label for p in llmbar} == {1, 2}
    assert {p.group for p in llmbar} == {"natural", "adversarial"}
    assert sum(p.subset == "natural" for p in llmbar) == 100
    assert llmbar[0].id == "llmbar-test-0"


def test_bad_preference_data_gets_clear_errors(tmp_path):
    good = {"id": "a", "instruction": "Say hi.", "output_1": "hi", "output_2": "bye", "label": 1}
    assert parse_pair({**good, "label": "output_2"}, "x").label == 2
    with pytest.raises(PreferenceDataError, match="line 7.*'label'.*3, an unknown label"):
        parse_pair({**good, "label": 3}, "line 7")
    with pytest.raises(PreferenceDataError, match="'label' is missing"):
        parse_pair({k: v for k, v in good.items() if k != "label"}, "x")
    with pytest.raises(PreferenceDataError, match="'output_2' is missing"):
        parse_pair({k: v for k, v in good.items() if k != "output_2"}, "x")
    with pytest.raises(PreferenceDataError, match="'instruction' is not a string"):
        parse_pair({**good, "instruction": 5}, "x")
    with pytest.raises(PreferenceDataError, match="label True"):
        PreferencePair("a", "i", "o1", "o2", True)  # type: ignore[arg-type]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(PreferenceDataError, match="empty.jsonl: no preference pairs"):
        read_pairs(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(PreferenceDataError, match="broken.jsonl:2: not valid JSON"):
        read_pairs(broken)


# -- decisions on hand-made scores ------------------------------------------------------------


def test_pointwise_decision_prefers_higher_log_odds_and_counts_ties():
    win = decide_pointwise("a", "natural", 1, 0.5, -0.2)
    loss = decide_pointwise("b", "adversarial_neighbor", 1, -1.0, 0.3)
    tie = decide_pointwise("c", "adversarial_gptout", 2, 0.25, 0.25)
    near = decide_pointwise("d", "natural", 2, 0.30, 0.25, tie_tolerance=0.1)
    assert (win.choice, loss.choice, tie.choice, near.choice) == (1, 2, 0, 0)
    assert (win.score, loss.score, tie.score) == (1.0, 0.0, 0.5)
    assert win.p_yes_1 == pytest.approx(1 / (1 + math.exp(-0.5)))
    report = pointwise_report([win, loss, tie, near])
    assert report["acc"] == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert report["ties"] == pytest.approx(0.5)
    assert report["acc_natural"] == pytest.approx(0.75) and report["pairs_natural"] == 2
    assert report["acc_adversarial"] == pytest.approx(0.25) and report["pairs_adversarial"] == 2
    assert report["acc_adversarial_neighbor"] == 0.0
    with pytest.raises(ValueError, match="tie_tolerance"):
        decide_pointwise("e", "natural", 1, 0.0, 0.0, tie_tolerance=-1)
    with pytest.raises(ValueError, match="no comparisons"):
        pointwise_report([])


def test_swapped_order_is_mapped_back_to_the_outputs():
    # Original order: "1" (= output_1) favoured by 2 nats. Swapped order: output_2 is shown first;
    # "1" favoured by 1 nat there means output_2 is preferred.
    c = decide_pairwise("a", "natural", 1, original=(-0.5, -2.5), swapped=(-1.0, -2.0))
    assert c.choice_original == 1 and c.choice_swapped == 2
    assert c.p_1_original == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert c.p_1_swapped == pytest.approx(1 - 1 / (1 + math.exp(-1.0)))
    assert c.p_1_averaged == pytest.approx((c.p_1_original + c.p_1_swapped) / 2)
    assert c.choice_averaged == 1  # 0.881 and 0.269 average to 0.575 for output_1
    assert not c.consistent and c.first_position_picks == 2
    # "2" favoured in the swapped order means output_1 (shown second there): consistent.
    d = decide_pairwise("b", "natural", 2, original=(-3.0, -1.0), swapped=(-0.1, -4.0))
    assert d.choice_original == 2 and d.choice_swapped == 2 and d.consistent and d.choice_averaged == 2
    assert d.first_position_picks == 1
    # Exactly opposite preferences average to a tie (half a point), and a tie is never consistent.
    e = decide_pairwise("c", "adversarial_manual", 1, original=(-1.0, -2.0), swapped=(-1.0, -2.0))
    assert e.choice_averaged == 0 and not e.consistent
    f = decide_pairwise("d", "adversarial_manual", 1, original=(-1.0, -1.0), swapped=(-2.0, -1.0))
    assert f.choice_original == 0 and f.choice_swapped == 1 and not f.consistent


def test_pairwise_report_on_hand_made_cases():
    always_first = [
        decide_pairwise(str(i), "natural", label, original=(-0.1, -3.0), swapped=(-0.1, -3.0))
        for i, label in enumerate([1, 2, 1, 2])
    ]
    report = pairwise_report(always_first)
    # A judge that always says "1" is right whenever the shown-first output is the better one.
    assert report["acc_original"] == 0.5 and report["acc_swapped"] == 0.5
    assert report["consistency"] == 0.0 and report["prefers_first"] == 1.0
    assert report["acc_averaged"] == 0.5  # every pair averages to a tie
    content_judge = [
        decide_pairwise("a", "natural", 1, original=(-0.2, -2.0), swapped=(-2.0, -0.2)),
        decide_pairwise("b", "adversarial_gptinst", 2, original=(-0.2, -2.0), swapped=(-0.4, -0.5)),
    ]
    report = pairwise_report(content_judge)
    assert report["consistency"] == 0.5  # pair b: output_1 first, then output_2
    assert report["acc_original"] == 0.5 and report["acc_swapped"] == 1.0
    assert report["acc_averaged"] == 0.5  # pair b averages to output_1 (wrong)
    assert report["acc_averaged_natural"] == 1.0 and report["acc_averaged_adversarial"] == 0.0
    assert report["consistency_natural"] == 1.0 and report["pairs_adversarial_gptinst"] == 1


# -- the judges against manual forward passes (fp32) -------------------------------------------


def test_pointwise_judge_matches_a_manual_forward_pass(scorer, model_and_tokenizer, llmbar):
    model, tokenizer = model_and_tokenizer
    judge = PointwiseJudge(scorer)
    pairs = _short_pairs(llmbar, 2)
    comparisons = judge.compare(pairs)
    verdicts = judge.verdicts([p.instruction for p in pairs for _ in (1, 2)],
                              [p.output(w) for p in pairs for w in (1, 2)])
    for pair, comparison, index in zip(pairs, comparisons, (0, 2)):
        for which, log_odds in ((1, comparison.log_odds_1), (2, comparison.log_odds_2)):
            user = IPO_FORMAT.user_message(pair.instruction, pair.output(which))
            assert user.startswith("Instruction: ") and user.endswith("(Yes/No)?")
            yes, no = _manual_logprobs(model, tokenizer, _chat(tokenizer, user), ("Yes", "No"))
            assert log_odds == pytest.approx(yes - no, abs=1e-4)
            verdict = verdicts[index + which - 1]
            assert verdict.p_yes == pytest.approx(1 / (1 + math.exp(no - yes)), abs=1e-5)
        manual_choice = 1 if comparison.log_odds_1 > comparison.log_odds_2 else 2
        assert comparison.choice == manual_choice and comparison.label == pair.label


def test_pairwise_judge_matches_manual_forward_passes_in_both_orders(scorer, model_and_tokenizer, llmbar):
    model, tokenizer = model_and_tokenizer
    judge = PairwiseJudge(scorer)
    pairs = _short_pairs(llmbar, 2)
    for pair, comparison in zip(pairs, judge.compare(pairs)):
        original = _manual_logprobs(
            model, tokenizer, _chat(tokenizer, PAIRWISE_FORMAT.user_message(pair.instruction, pair.output_1, pair.output_2)),
            ("1", "2"))
        swapped = _manual_logprobs(
            model, tokenizer, _chat(tokenizer, PAIRWISE_FORMAT.user_message(pair.instruction, pair.output_2, pair.output_1)),
            ("1", "2"))
        assert comparison.p_1_original == pytest.approx(1 / (1 + math.exp(original[1] - original[0])), abs=1e-5)
        # Swapped: P(output_1 better) = P("2") normalised, since output_1 is shown second.
        assert comparison.p_1_swapped == pytest.approx(1 / (1 + math.exp(swapped[0] - swapped[1])), abs=1e-5)
        assert comparison.choice_original == (1 if original[0] > original[1] else 2)
        assert comparison.choice_swapped == (2 if swapped[0] > swapped[1] else 1)
    prompt = judge.prompt(pairs[0], swapped=True)
    assert prompt.continuations == ("1", "2")
    assert prompt.context.index(pairs[0].output_2.strip()) < prompt.context.index(pairs[0].output_1.strip())


def test_plain_text_judges_read_answers_after_a_space(scorer, model_and_tokenizer, llmbar):
    _, tokenizer = model_and_tokenizer
    pair = _short_pairs(llmbar, 2)[0]
    plain = PairwiseJudge(scorer, chat=False).prompt(pair)
    assert plain.continuations == (" 1", " 2") and plain.context.endswith("better, 1 or 2?")
    assert "<|im_start|>" not in plain.context
    pointwise = PointwiseJudge(scorer, chat=False).prompts([pair.instruction], [pair.output_1])[0]
    assert pointwise.continuations == (" Yes", " No")
    with pytest.raises(TypeError, match="PreferencePair"):
        PairwiseJudge(scorer).compare([{"instruction": "x"}])  # type: ignore[list-item]


# -- the lm-eval tasks -----------------------------------------------------------------------------


def test_lm_eval_tasks_run_and_agree_with_the_python_judges(scorer, default_model_dir, llmbar):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from genclf_harness.resources import tasks_dir
    from genclf_harness.harness.verifier_tasks import pairwise as pairwise_tasks

    # Three short pairs (natural and adversarial): their two documents each, like --limit 6 but cheaper.
    pairs = sorted(_short_pairs(llmbar, 3), key=llmbar.index)
    documents = [2 * llmbar.index(p) + slot for p in pairs for slot in (0, 1)]
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={default_model_dir},dtype=float32",
        tasks=["genclf_llmbar", "genclf_llmbar_pairwise"],
        task_manager=TaskManager(include_path=str(tasks_dir())),
        apply_chat_template=True,
        samples={"genclf_llmbar": documents, "genclf_llmbar_pairwise": documents},
        log_samples=True,
        device="cpu",
        batch_size=4,
    )
    pointwise = PointwiseJudge(scorer).compare(pairs)
    pairwise = PairwiseJudge(scorer).compare(pairs)

    samples = sorted(results["samples"]["genclf_llmbar"], key=lambda s: s["doc_id"])
    assert [(s["doc"]["pair_id"], s["doc"]["slot"]) for s in samples] == [(p.id, w) for p in pairs for w in (1, 2)]
    items = [pairwise_tasks.process_pointwise(s["doc"], [r[0] for r in s["resps"]])["acc"] for s in samples]
    from_lm_eval = pairwise_tasks.pointwise_comparisons(items)
    for ours, theirs in zip(pointwise, from_lm_eval, strict=True):
        assert theirs.id == ours.id and theirs.choice == ours.choice
        assert theirs.log_odds_1 == pytest.approx(ours.log_odds_1, abs=1e-3)
        assert theirs.log_odds_2 == pytest.approx(ours.log_odds_2, abs=1e-3)
    metrics = results["results"]["genclf_llmbar"]
    report = pointwise_report(pointwise)
    for name in ("acc", "ties", "acc_natural", "acc_adversarial"):
        assert metrics[f"{name},none"] == pytest.approx(report[name]), name

    samples = sorted(results["samples"]["genclf_llmbar_pairwise"], key=lambda s: s["doc_id"])
    assert [s["doc"]["slot"] for s in samples] == [0, 1] * 3
    items = [pairwise_tasks.process_pairwise(s["doc"], [r[0] for r in s["resps"]])["consistency"] for s in samples]
    from_lm_eval = pairwise_tasks.pairwise_comparisons(items)
    for ours, theirs in zip(pairwise, from_lm_eval, strict=True):
        assert theirs.p_1_original == pytest.approx(ours.p_1_original, abs=1e-3)
        assert theirs.p_1_swapped == pytest.approx(ours.p_1_swapped, abs=1e-3)
    metrics = results["results"]["genclf_llmbar_pairwise"]
    report = pairwise_report(pairwise)
    for name in ("acc_original", "acc_swapped", "acc_averaged", "consistency", "prefers_first",
                 "acc_averaged_natural", "acc_averaged_adversarial"):
        assert metrics[f"{name},none"] == pytest.approx(report[name]), name
    # The gold index of each document points at the better output as it is shown.
    for sample, pair in zip(samples, [p for p in pairs for _ in (0, 1)]):
        shown_first = pair.output_1 if sample["doc"]["slot"] == 0 else pair.output_2
        assert (sample["doc"]["gold"] == 0) == (shown_first == pair.output(pair.label))


def test_task_aggregations_leave_out_incomplete_pairs():
    from genclf_harness.harness.verifier_tasks import pairwise as pairwise_tasks

    doc = {"pair_id": "p", "subset": "natural", "label": 1, "slot": 1}
    lone = pairwise_tasks.process_pointwise(doc, [(-0.1, True), (-2.0, False)])["acc"]
    assert pairwise_tasks.pointwise_comparisons([lone]) == []
    assert math.isnan(pairwise_tasks.acc([lone]))


# -- DPO pairs from the model's own samples --------------------------------------------------------


def test_dpo_pairs_are_seeded_ranked_and_accepted_by_trl(tmp_path, scorer, model_and_tokenizer, default_model_dir):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from genclf_harness.backends.generation import HFGenerator
    from genclf_harness.verifiers.pairwise.dpo_pairs import DPOBuildSettings, build_dpo_pairs, write_jsonl

    model, tokenizer = model_and_tokenizer
    prompts = ["Name a fruit that is yellow.", "Give one word that rhymes with cat.", "What is 2 + 3?"]
    judge = PointwiseJudge(scorer)
    settings = DPOBuildSettings(n=4, max_new_tokens=12, temperature=1.0, seed=7)
    rows, stats = build_dpo_pairs(prompts, HFGenerator.from_scorer(scorer), judge, settings)
    again, _ = build_dpo_pairs(prompts, HFGenerator.from_scorer(scorer), judge, settings)
    assert rows == again, "the same seed gives the same pairs"
    assert stats.prompts == 3 and stats.pairs == len(rows) >= 2
    assert stats.pairs + stats.skipped_margin + stats.skipped_identical == 3
    for row in rows:
        assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert row["score_chosen"] > row["score_rejected"]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        # The scores are the judge's own P("Yes") of the texts.
        chosen, rejected = judge.score([row["prompt"][0]["content"]] * 2,
                                       [row["chosen"][0]["content"], row["rejected"][0]["content"]])
        assert (chosen, rejected) == pytest.approx((row["score_chosen"], row["score_rejected"]), abs=1e-4)  # batch padding: fp32 rounding

    # A margin above every pair's leaves nothing.
    strict, strict_stats = build_dpo_pairs(prompts, HFGenerator.from_scorer(scorer), judge,
                                           DPOBuildSettings(n=4, max_new_tokens=12, temperature=1.0, seed=7,
                                                            min_margin=max(stats.margins) + 1e-9))
    assert strict == [] and strict_stats.skipped_margin == stats.pairs

    path = write_jsonl(tmp_path / "dpo" / "pairs.jsonl", rows)
    assert not list(path.parent.glob(".*.tmp"))
    loaded = [json.loads(line) for line in path.read_text().splitlines()]
    assert loaded == rows

    # TRL: the rows are conversational, render with the chat template, and DPOTrainer tokenises them.
    assert all(is_conversational(row) for row in loaded)
    rendered = maybe_apply_chat_template(loaded[0], tokenizer)
    assert rendered["prompt"].endswith("<|im_start|>assistant\n")
    assert rendered["chosen"].startswith(loaded[0]["chosen"][0]["content"])
    config = DPOConfig(output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False, per_device_train_batch_size=2,
                       max_steps=1, report_to=[], logging_steps=1, save_strategy="no", max_length=128)
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(str(default_model_dir))
    trainer = DPOTrainer(model=policy, args=config, train_dataset=Dataset.from_list(loaded),
                         processing_class=tokenizer)
    first = trainer.train_dataset[0]
    assert tokenizer.decode(first["chosen_ids"]).startswith(loaded[0]["chosen"][0]["content"])
    assert tokenizer.decode(first["prompt_ids"]).endswith("<|im_start|>assistant\n")
    output = trainer.train()
    assert math.isfinite(output.training_loss)


def test_dpo_builder_checks_its_input(tmp_path, scorer):
    from genclf_harness.backends.generation import HFGenerator
    from genclf_harness.verifiers.pairwise.dpo_pairs import DPOBuildSettings, build_dpo_pairs, read_prompts

    with pytest.raises(ValueError, match="n must be at least 2"):
        DPOBuildSettings(n=1)
    with pytest.raises(ValueError, match="min_margin"):
        DPOBuildSettings(min_margin=1.5)
    with pytest.raises(ValueError, match="no prompts"):
        build_dpo_pairs([], HFGenerator.from_scorer(scorer), PointwiseJudge(scorer))
    with pytest.raises(ValueError, match="prompt #1 must be a non-empty string"):
        build_dpo_pairs(["ok", "  "], HFGenerator.from_scorer(scorer), PointwiseJudge(scorer))
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"text": "no prompt field"}) + "\n")
    with pytest.raises(ValueError, match="prompts.jsonl:2: field 'prompt' is missing"):
        read_prompts(bad)
    assert read_prompts(bad, limit=1) == ["fine"]
