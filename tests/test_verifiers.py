"""Generative verifiers on the real default model: Yes/No scoring, generation, CoT, answer
extraction, algorithmic tasks, the training data builder, verifier SFT, the GRPO reward and the
lm-eval tasks."""

from __future__ import annotations

import json
import math
import pickle
import random

import pytest

from genclf_harness.verifiers.genrm import algorithmic
from genclf_harness.verifiers.genrm.answers import answers_match, extract_boxed, extract_final_text, extract_number
from genclf_harness.verifiers.genrm.bon import Candidate, CandidateSet, write_candidates
from genclf_harness.verifiers.genrm.training_data import (
    VerificationExample,
    balance_examples,
    build_genrm_examples,
    synthetic_examples,
    with_reference_rationales,
)
from genclf_harness.verifiers.format import DEFAULT_FORMAT
from genclf_harness.verifiers.genrm.metrics import auroc, balanced_accuracy
from genclf_harness.verifiers.genrm.problems import GSM8K, LAST_LETTER, WORD_SORTING, gsm8k_reference

QUESTION = 'Take the last letters of the words in "river candle" and concatenate them.'
RIGHT = algorithmic.reference_solution("last_letter", ["river", "candle"])
WRONG = RIGHT.replace('"e"', '"c"').replace("re", "rc")


# -- the default model, loaded once ----------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_tokenizer(default_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(default_model_dir), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(default_model_dir))


@pytest.fixture(scope="module")
def genrm(model_and_tokenizer):
    from genclf_harness.backends.generation import HFGenerator
    from genclf_harness.backends.scorer import HFScorer
    from genclf_harness.verifiers.genrm.verifier import GenRM

    model, tokenizer = model_and_tokenizer
    scorer = HFScorer(model, tokenizer)
    return GenRM(scorer, tokenizer=tokenizer, generator=HFGenerator.from_scorer(scorer))


def _manual_yes_no(model, tokenizer, context: str, yes: str, no: str) -> tuple[float, float]:
    """log P(yes), log P(no) of single-token answers from one plain forward pass over the context."""
    import torch

    ids = tokenizer(context)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    yes_ids = tokenizer(context + yes)["input_ids"][len(ids):]
    no_ids = tokenizer(context + no)["input_ids"][len(ids):]
    assert len(yes_ids) == len(no_ids) == 1, "the answers are single tokens after the context"
    return float(logprobs[yes_ids[0]]), float(logprobs[no_ids[0]])


def test_yes_no_score_matches_a_manual_forward_pass(genrm, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    verdicts = genrm.verdicts([QUESTION, QUESTION], [RIGHT, WRONG])
    for verdict, solution in zip(verdicts, [RIGHT, WRONG]):
        # The chat template's assistant turn, then the bare answer token "Yes"/"No".
        context = tokenizer.apply_chat_template(
            [{"role": "user", "content": DEFAULT_FORMAT.user_message(QUESTION, solution)}],
            tokenize=False, add_generation_prompt=True,
        )
        assert context.endswith("assistant\n")
        yes, no = _manual_yes_no(model, tokenizer, context, "Yes", "No")
        expected = math.exp(yes) / (math.exp(yes) + math.exp(no))
        assert verdict.p_yes == pytest.approx(expected, abs=1e-5)
        # The scorer's continuations also carry the marker's newline: the same for both, it cancels.
        assert verdict.yes_logprob - verdict.no_logprob == pytest.approx(yes - no, abs=1e-4)
        assert verdict.yes_logprob < yes


def test_plain_text_mode_reads_yes_after_a_space(genrm, model_and_tokenizer):
    from genclf_harness.verifiers.genrm.verifier import GenRM

    model, tokenizer = model_and_tokenizer
    plain = GenRM(genrm.scorer, tokenizer=tokenizer, chat=False)
    prompt = plain.prompts([QUESTION], [RIGHT])[0]
    assert prompt.context.endswith("Is the answer correct (Yes/No)?")
    assert prompt.continuations == (" Yes", " No")
    yes, no = _manual_yes_no(model, tokenizer, prompt.context, " Yes", " No")
    assert plain.score([QUESTION], [RIGHT])[0] == pytest.approx(1 / (1 + math.exp(no - yes)), abs=1e-5)


def test_score_is_batched_in_order_and_checks_its_input(genrm):
    many = genrm.score([QUESTION] * 3, [RIGHT, WRONG, RIGHT])
    # the same pair twice: the prefix cache (auto on a CPU) computes the second from the first's
    # cached head, equal up to fp32 rounding (the scorer promises 1e-5; 2.4e-6 seen on this machine)
    assert many[0] == pytest.approx(many[2], abs=1e-5)
    assert all(0.0 < p < 1.0 for p in many)
    assert genrm.score([], []) == []
    with pytest.raises(ValueError, match="one question per solution"):
        genrm.score([QUESTION], [RIGHT, WRONG])
    with pytest.raises(TypeError):
        genrm.score(QUESTION, RIGHT)


def test_chain_of_thought_averages_p_yes_over_sampled_rationales(genrm):
    verdicts = genrm.score_cot([QUESTION], [RIGHT], k=2, max_new_tokens=6, temperature=1.0, seed=0)
    verdict = verdicts[0]
    assert len(verdict.rationales) == len(verdict.p_yes_per_rationale) == 2
    assert verdict.p_yes == pytest.approx(sum(verdict.p_yes_per_rationale) / 2)
    again = genrm.score_cot([QUESTION], [RIGHT], k=2, max_new_tokens=6, temperature=1.0, seed=0)[0]
    assert again.rationales == verdict.rationales  # seeded
    prompt = DEFAULT_FORMAT.after_rationale("P", "checked.\n")
    assert prompt.context == "Pchecked.\nIs the answer correct (Yes/No)?" and prompt.continuations == (" Yes", " No")


# -- generation ------------------------------------------------------------------------------------


def test_generator_greedy_matches_transformers_generate(genrm, model_and_tokenizer):
    import torch

    from genclf_harness.backends.generation import chat_prompt

    model, tokenizer = model_and_tokenizer
    prompts = [chat_prompt(tokenizer, "Name a colour."), chat_prompt(tokenizer, QUESTION)]  # different lengths
    ours = genrm.generator.generate(prompts, n=2, max_new_tokens=10, temperature=0)
    for prompt, texts in zip(prompts, ours):
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        expected = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert texts == [expected, expected]


def test_generator_sampling_is_seeded_and_stops(genrm, model_and_tokenizer):
    from genclf_harness.backends.generation import Generator, chat_prompt

    _, tokenizer = model_and_tokenizer
    generator = genrm.generator
    assert isinstance(generator, Generator)
    prompt = [chat_prompt(tokenizer, "Write two sentences about the sea.")]
    first = generator.generate(prompt, n=3, max_new_tokens=12, temperature=1.0, seed=5, stop=["."])
    second = generator.generate(prompt, n=3, max_new_tokens=12, temperature=1.0, seed=5, stop=["."])
    assert first == second and len(first[0]) == 3
    assert all("." not in text for text in first[0])
    with pytest.raises(ValueError, match="temperature"):
        generator.generate(prompt, temperature=-1)


# -- answers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Janet makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("The answer is 1,234,567.", "1234567"),
        ("So he pays $1,000.50 in total.", "1000.5"),
        ("The answer is 18 dollars.", "18"),
        ("It rose 25%.", "25"),
        ("The temperature is -5 degrees.", "-5"),
        ("The temperature is \u221212 degrees.", "-12"),
        ("Therefore the answer is $\\boxed{42}$.", "42"),
        ("\\boxed{\\frac{3}{4}}", "0.75"),
        ("\\boxed{1{,}000}", "1000"),
        ("\\boxed{\\$18 \\text{ dollars}}", "18"),
        ("\\boxed{-7}", "-7"),
        ("First 3 apples, then 4 more: 7 apples.", "7"),
        ("Answer: 3/4", "0.75"),
        ("The answer is 2.50.", "2.5"),
        ("The answer is 1/3", "1/3"),
        ("x = 10, so the answer = 12.", "12"),
        ("#### 5\nThe answer is 6.", "5"),
        ("no number here", None),
        ("", None),
    ],
)
def test_number_extraction(text, expected):
    assert extract_number(text) == expected


def test_answers_are_compared_by_value_and_never_evaluated():
    assert answers_match("18.00", "18") and answers_match("0.75", "3/4") and answers_match("-0.5", "-1/2")
    assert not answers_match("18", "-18") and not answers_match(None, "1")
    assert answers_match("EG", "eg") and not answers_match("2+2", "4")
    assert extract_number("The answer is __import__('os').system('true')") is None
    assert extract_boxed("a \\boxed{x^{2}} b") == "x^{2}"
    assert extract_final_text('Concatenating gives "eg". The answer is "eg".') == "eg"
    assert extract_final_text("The answer is: apple, banana, cherry.") == "apple banana cherry"


def test_gsm8k_reference_and_corruption(data_dir):
    problems = GSM8K.problems("test", 5)
    assert problems[0].answer == "18" and problems[0].solution.endswith("The answer is 18.")
    assert "<<" not in problems[0].solution
    assert gsm8k_reference("a <<1+1=2>>2\n#### 2") == "a 2\nThe answer is 2."
    rng = random.Random(0)
    for problem in problems:
        assert GSM8K.is_correct(problem.solution, problem.answer)
        wrong = GSM8K.corrupt(problem, rng)
        assert wrong is not None and not GSM8K.is_correct(wrong, problem.answer)


# -- algorithmic tasks -----------------------------------------------------------------------------


def test_algorithmic_problems_are_seeded_and_splits_disjoint():
    train = algorithmic.make_problems("last_letter", "train", 300, seed=1)
    test = algorithmic.make_problems("last_letter", "test", 100, seed=1)
    assert train == algorithmic.make_problems("last_letter", "train", 300, seed=1)
    assert train != algorithmic.make_problems("last_letter", "train", 300, seed=2)
    assert not {p.words for p in train} & {p.words for p in test}
    assert not {p.words for p in algorithmic.make_problems("last_letter", "train", 300, seed=2)} & {p.words for p in test}
    assert all(1 <= len(p.words) <= 2 and len(set(p.words)) == len(p.words) for p in train)
    assert {len(p.words) for p in train} == {1, 2}
    assert test[0].answer == "".join(w[-1] for w in test[0].words)
    with pytest.raises(ValueError, match="split"):
        algorithmic.make_problems("last_letter", "validation", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("task", [LAST_LETTER, WORD_SORTING])
def test_algorithmic_checkers_are_exact(task):
    rng = random.Random(0)
    for problem in task.problems("train", 40, seed=0):
        assert task.is_correct(problem.solution, problem.answer)
        assert task.is_correct(f"blah. The answer is {problem.answer.upper()}.", problem.answer)
        assert not task.is_correct("I do not know.", problem.answer)
        for _ in range(3):
            assert not task.is_correct(task.corrupt(problem, rng), problem.answer)
    words = ["zebra", "apple", "mango"]
    assert algorithmic.gold_answer("word_sorting", words) == "apple mango zebra"
    assert algorithmic.extract_answer("word_sorting", "The answer is: Apple, mango, zebra.") == "apple mango zebra"
    assert algorithmic.extract_answer("last_letter", 'The answer is "a e".') == "ae"


def test_demonstrations_are_not_problems():
    vocabulary = set(algorithmic.VOCABULARY)
    for task in (LAST_LETTER, WORD_SORTING):
        for question, solution in task.demonstrations:
            from genclf_harness.verifiers.genrm.problems import words_of

            assert not set(words_of(task.name, question)) & vocabulary
            assert task.is_correct(solution, algorithmic.gold_answer(task.name, words_of(task.name, question)))


# -- training data ---------------------------------------------------------------------------------


def test_data_builder_balances_and_mixes_generation():
    examples = [VerificationExample("q", f"s{i}", i < 3) for i in range(10)]  # 3 yes, 7 no
    balanced = balance_examples(examples, "downsample", seed=0)
    assert sum(e.correct for e in balanced) == sum(not e.correct for e in balanced) == 3
    up = balance_examples(examples, "upsample", seed=0)
    assert sum(e.correct for e in up) == sum(not e.correct for e in up) == 7
    with pytest.raises(ValueError, match="cannot balance"):
        balance_examples(examples[3:], "downsample")

    built = build_genrm_examples(examples, generation=[("q1", "sol1"), ("q2", "sol2")], generation_weight=0.5,
                                 task=LAST_LETTER, seed=0)
    assert built.counts["yes"] == built.counts["no"] == 3 and built.counts["generation"] == 3
    verdicts = [r["completion"][0]["content"] for r in built.rows if r["completion"][0]["content"] in ("Yes", "No")]
    assert sorted(verdicts) == ["No"] * 3 + ["Yes"] * 3
    assert len(built.rows) == 9
    row = next(r for r in built.rows if r["completion"][0]["content"] == "Yes")
    assert row["prompt"][0]["content"].endswith("Is the answer correct (Yes/No)?")
    plain = build_genrm_examples(examples, chat=False, seed=0)
    assert {r["completion"] for r in plain.rows} == {" Yes", " No"}


def test_synthetic_examples_are_labelled_exactly():
    problems = LAST_LETTER.problems("train", 30, seed=0)
    examples = synthetic_examples(LAST_LETTER, problems, positives=1, negatives=2, seed=0)
    assert sum(e.correct for e in examples) == 30 and sum(not e.correct for e in examples) == 60
    gold = {p.question: p.answer for p in problems}
    for e in examples:
        assert LAST_LETTER.is_correct(e.solution, gold[e.question]) == e.correct


def test_reference_rationales_re_solve_and_state_the_checked_answer(data_dir):
    wrong = VerificationExample(QUESTION, WRONG, False, "corruption")
    rambling = VerificationExample(QUESTION, "I do not know.", False)
    unknown = VerificationExample("What is the capital of Peru?", "Lima. The answer is lima.", True)
    examples, left_out = with_reference_rationales(LAST_LETTER, [wrong, rambling, unknown])
    assert left_out == 1 and [e.solution for e in examples] == [WRONG, "I do not know."]
    assert examples[0].rationale == f"Solving it again: {RIGHT}\nThe solution's answer is rc."
    assert examples[1].rationale.endswith("\nThe solution gives no final answer.")
    # GSM8K's reference is the data set's solution of the same question, in the generator's format.
    problem = GSM8K.problems("train", 1)[0]
    assert GSM8K.reference_solution(problem.question) == problem.solution
    assert GSM8K.reference_solution("Not a GSM8K question?") is None


def test_cot_training_text_is_what_cot_scoring_reads(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    [example], _ = with_reference_rationales(LAST_LETTER, [VerificationExample(QUESTION, WRONG, False)])
    row = DEFAULT_FORMAT.training_example(QUESTION, WRONG, False, chat=True, rationale=example.rationale)
    trained = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    scored = DEFAULT_FORMAT.after_rationale(DEFAULT_FORMAT.cot_prompt(tokenizer, QUESTION, WRONG, chat=True),
                                            example.rationale)
    assert trained.startswith(scored.context + scored.continuations[1])  # ... (Yes/No)? No
    plain = DEFAULT_FORMAT.training_example(QUESTION, WRONG, True, chat=False, rationale=example.rationale)
    scored = DEFAULT_FORMAT.after_rationale(DEFAULT_FORMAT.cot_prompt(tokenizer, QUESTION, WRONG, chat=False),
                                            example.rationale)
    assert plain["prompt"] + plain["completion"] == scored.context + scored.continuations[0]


def test_auroc_and_balanced_accuracy():
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert math.isnan(auroc([0.3], [True]))
    assert balanced_accuracy([0.9, 0.4, 0.2, 0.1], [True, True, False, False]) == 0.75


# -- verifier training -----------------------------------------------------------------------------


def test_a_few_steps_of_verifier_training(tmp_path, default_model_dir):
    from genclf_harness.resources import configs_dir
    from genclf_harness.training.config import load_config
    from genclf_harness.training.genrm import GenRMRecipeConfig, train_genrm
    from genclf_harness.verifiers.genrm.verifier import GenRM

    sampled = CandidateSet("s1", QUESTION, "re", [Candidate(RIGHT, "re", True), Candidate(WRONG, "rc", False)])
    candidates = tmp_path / "train_candidates.jsonl"
    write_candidates(candidates, [sampled])
    config = load_config(GenRMRecipeConfig, configs_dir() / "genrm_last_letter_cpu.yaml", [
        f"train.output_dir={tmp_path / 'verifier'}", "train.max_steps=2", "train.per_device_train_batch_size=4",
        "train.logging_steps=1", f"data.candidates=[{candidates}]", "data.num_problems=6",
        "data.generation_weight=0.5", "eval.num_problems=3",
    ])
    result = train_genrm(config)
    record = json.loads((tmp_path / "verifier" / "genclf_train.json").read_text())
    counts = record["example_counts"]
    assert counts["yes"] == counts["no"] == 7 and counts["generation"] == 7 and counts["from_sample"] >= 1
    assert record["examples"] == 21
    assert (tmp_path / "verifier" / "adapter_config.json").is_file()
    figures = result.figures["synthetic"]
    assert figures["pairs"] == 6 and 0.0 <= figures["auroc"] <= 1.0
    verifier = GenRM.from_pretrained(str(tmp_path / "verifier"))
    assert all(0.0 < p < 1.0 for p in verifier.score([QUESTION, QUESTION], [RIGHT, WRONG]))


def test_a_few_steps_of_chain_of_thought_verifier_training(tmp_path, default_model_dir):
    from genclf_harness.resources import configs_dir
    from genclf_harness.training.config import load_config
    from genclf_harness.training.genrm import GenRMRecipeConfig, train_genrm
    from genclf_harness.verifiers.genrm.verifier import GenRM

    config = load_config(GenRMRecipeConfig, configs_dir() / "genrm_last_letter_cpu.yaml", [
        f"train.output_dir={tmp_path / 'verifier'}", "train.max_steps=1", "train.per_device_train_batch_size=4",
        "data.num_problems=4", "data.rationale=reference", "data.generation_weight=0", "eval.num_problems=2",
        "eval.cot_max_new_tokens=12",
    ])
    result = train_genrm(config)
    record = json.loads((tmp_path / "verifier" / "genclf_train.json").read_text())
    assert record["example_counts"]["with_rationale"] == record["examples"] == 8
    assert record["verification"] == {"mode": "cot", "rationale": "reference", "samples": 1, "temperature": 0.0,
                                      "max_new_tokens": 12}
    assert result.figures["verification"] == "cot x1" and result.figures["synthetic"]["pairs"] == 4
    verifier = GenRM.from_pretrained(str(tmp_path / "verifier"))
    assert (verifier.cot, verifier.cot_temperature, verifier.cot_max_new_tokens) == (1, 0.0, 12)
    verdicts = verifier.score_cot([QUESTION, QUESTION], [RIGHT, WRONG], k=1, temperature=0.0, max_new_tokens=12)
    assert verifier.verify([QUESTION, QUESTION], [RIGHT, WRONG]) == pytest.approx([v.p_yes for v in verdicts])
    assert all(len(v.rationales) == 1 and v.rationales[0] for v in verdicts)
    direct = GenRM.from_pretrained(str(tmp_path / "verifier"), cot=0)
    assert direct.verify([QUESTION], [RIGHT]) == pytest.approx(direct.score([QUESTION], [RIGHT]))


def test_training_config_errors_name_the_key(tmp_path):
    from genclf_harness.resources import configs_dir
    from genclf_harness.training.config import ConfigError, load_config
    from genclf_harness.training.genrm import GenRMRecipeConfig

    path = configs_dir() / "genrm_last_letter_cpu.yaml"
    with pytest.raises(ConfigError, match="data.task"):
        load_config(GenRMRecipeConfig, path, ["data.task=sudoku"])
    with pytest.raises(ConfigError, match="candidates"):
        load_config(GenRMRecipeConfig, path, [f"data.candidates=[{tmp_path / 'none.jsonl'}]"])
    with pytest.raises(ConfigError, match="generaton_weight"):
        load_config(GenRMRecipeConfig, path, ["data.generaton_weight=1"])
    with pytest.raises(ConfigError, match="rationale"):
        load_config(GenRMRecipeConfig, path, ["data.rationale=gemini"])
    with pytest.raises(ConfigError, match="cot_samples"):
        load_config(GenRMRecipeConfig, path, ["eval.cot_samples=0"])


# -- the GRPO reward -------------------------------------------------------------------------------


def test_genrm_reward_scores_pickles_and_reads_questions(genrm):
    from genclf_harness.training.genrm_reward import GenRMReward

    reward = GenRMReward(genrm, transform="probability")
    values = reward([QUESTION, QUESTION], [RIGHT, [{"role": "assistant", "content": WRONG}]])
    assert values == pytest.approx(genrm.score([QUESTION, QUESTION], [RIGHT, WRONG]))
    conversational = [[{"role": "user", "content": "ignored"}], [{"role": "user", "content": "ignored"}]]
    assert reward(conversational, [RIGHT, WRONG], question=[QUESTION, QUESTION]) == pytest.approx(values)
    logits = GenRMReward(genrm, transform="logit")([QUESTION], [RIGHT])
    # scored alone vs in a batch of two: fp32 rounding of other batch shapes (1.2e-5 in log-odds here)
    assert logits[0] == pytest.approx(math.log(values[0] / (1 - values[0])), abs=1e-4)

    lazy = GenRMReward("default", name="verifier")
    assert lazy.__name__ == "verifier" and lazy._verifier is None
    clone = pickle.loads(pickle.dumps(lazy))
    assert clone.verifier_source == "default" and clone._verifier is None
    with pytest.raises(ValueError, match="prompts"):
        reward([QUESTION], [RIGHT, WRONG])


def test_genrm_reward_inside_a_two_step_grpo_run(tmp_path, genrm, default_model_dir):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from genclf_harness.training.genrm_reward import GenRMReward

    calls: list[int] = []

    class Counting(GenRMReward):
        def __call__(self, prompts, completions, completion_ids=None, **columns):
            calls.append(len(completions))
            assert columns["question"] == [QUESTION] * len(completions)
            return super().__call__(prompts, completions, completion_ids, **columns)

    reward = Counting(genrm)
    dataset = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": QUESTION}], "question": QUESTION}] * 4)
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir))
    policy = AutoModelForCausalLM.from_pretrained(str(default_model_dir), dtype=torch.float32)
    config = GRPOConfig(
        output_dir=str(tmp_path / "grpo"), max_steps=2, per_device_train_batch_size=2, num_generations=2,
        max_completion_length=8, learning_rate=1e-5, beta=0.0, remove_unused_columns=False, use_cpu=True,
        bf16=False, gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to="none", seed=0,
    )
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=config, train_dataset=dataset,
                          processing_class=tokenizer)
    trainer.train()
    assert calls and all(count == 2 for count in calls)
    logged = [entry["rewards/genrm/mean"] for entry in trainer.state.log_history if "rewards/genrm/mean" in entry]
    assert len(logged) == 2 and all(0.0 <= value <= 1.0 for value in logged)


# -- the lm-eval tasks -----------------------------------------------------------------------------


def test_bon_task_functions_on_hand_made_results(tmp_path, monkeypatch):
    from genclf_harness.harness.verifier_tasks import genrm as tasks

    sets = [
        CandidateSet("a", "Q1", "1", [Candidate("t", "2", False), Candidate("t", "1", True), Candidate("t", "1", True)]),
        CandidateSet("b", "Q2", "5", [Candidate("t", "5", True), Candidate("t", "6", False), Candidate("t", "6", False)]),
    ]
    path = tmp_path / "c.jsonl"
    write_candidates(path, sets)
    monkeypatch.setenv(tasks.CANDIDATES_ENV, str(path))
    docs = list(tasks.load_bon_candidates()["test"])
    assert len(docs) == 6 and docs[1]["gold"] == 0 and docs[0]["gold"] == 1
    assert docs[0]["query"] == DEFAULT_FORMAT.user_message("Q1", "t")
    p_yes = [0.1, 0.9, 0.8, 0.7, 0.2, 0.3]
    items = []
    for doc, p in zip(docs, p_yes):
        margin = math.log(p / (1 - p))
        result = tasks.process_bon(doc, [(margin - 1.0, False), (-1.0, False)])
        assert set(result) == set(tasks.BON_METRICS)
        assert result["best_of_n"].p_yes == pytest.approx(p)
        assert tasks.process_verify(doc, [(margin - 1.0, False), (-1.0, False)])["acc"] == float((p > 0.5) == doc["correct"])
        items.append(result["best_of_n"])
    random.Random(0).shuffle(items)  # gathering across ranks may reorder documents
    assert tasks.first_sample(items) == 0.5 and tasks.majority(items) == 0.5
    assert tasks.best_of_n(items) == 1.0 and tasks.weighted_vote(items) == 1.0 and tasks.pass_at_n(items) == 1.0
    assert tasks.auroc(items) == 1.0
    monkeypatch.delenv(tasks.CANDIDATES_ENV)
    with pytest.raises(ValueError, match="candidates file"):
        tasks.load_bon_candidates()


def test_verify_task_runs_in_lm_eval_and_matches_genrm(genrm, default_model_dir, data_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from genclf_harness.resources import tasks_dir

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={default_model_dir},dtype=float32",
        tasks=["genclf_gsm8k_verify"],
        # simple_evaluate hands `metadata` only to a TaskManager it builds itself; the CLI passes it on.
        task_manager=TaskManager(include_path=str(tasks_dir()), metadata={"num_problems": 2}),
        apply_chat_template=True,
        log_samples=True,
        device="cpu",
        batch_size=4,
    )
    metrics = results["results"]["genclf_gsm8k_verify"]
    assert 0.0 <= metrics["acc,none"] <= 1.0 and 0.0 <= metrics["auroc,none"] <= 1.0
    samples = results["samples"]["genclf_gsm8k_verify"]
    assert len(samples) == 4
    ours = genrm.score([s["doc"]["question"] for s in samples], [s["doc"]["solution"] for s in samples])
    for sample, p in zip(samples, ours):
        (yes, _), (no, _) = [r[0] if isinstance(r[0], (list, tuple)) else r for r in sample["resps"]]
        lm_eval_p_yes = 1 / (1 + math.exp(float(no) - float(yes)))
        # lm-eval's hf backend: the same prompt and split; its log-softmax runs in the model dtype.
        assert lm_eval_p_yes == pytest.approx(p, abs=1e-3)
