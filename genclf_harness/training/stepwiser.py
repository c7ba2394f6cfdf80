"""``genclf-train stepwiser``: GRPO of a stepwise generative judge on Monte-Carlo step labels (StepWiser).

``genclf-train stepwiser --config configs/stepwiser_cpu.yaml [--set data.num_problems=16 ...]``

1. **Trajectories**: solutions of training problems of a reasoning task
   (:mod:`genclf_harness.verifiers.genrm.problems`), sampled from the policy (``data.source: sampled``,
   split into steps by ``data.split``) or the reference solutions and a corruption of each
   (``reference``, one step per line).
2. **Labels** (:mod:`genclf_harness.verifiers.stepwise.labels`): ``data.rollouts`` continuations from
   every step prefix give Q estimates; each step is labelled by ``data.rule`` (abs_q, rel_ratio with
   ``gamma``, rel_effective with ``alpha`` and ``n``), the classes are balanced, and the labelled steps
   are written to ``<output_dir>/step_labels.jsonl`` (``data.labels_file`` reuses such a file and
   skips the rollouts).
3. **GRPO** on the judge (the shared plumbing of :mod:`genclf_harness.training.grpo`: its trainer
   section, model loading and records): the prompt is the step-judge prompt asking for reasoning
   and ``Verdict: Yes/No``; the reward (:class:`VerdictMatchReward`) is 1 when the parsed verdict
   matches the label, else 0 (``reward.unparsed`` for no readable verdict).
4. Optionally, **ProcessBench** on a few solutions with the trained judge (``eval.processbench_limit``).

The output folder is a LoRA adapter on the base model: ``StepJudge.from_pretrained(output_dir)``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genclf_harness.training.config import ModelConfig, Section, to_dict
from genclf_harness.training.recipe_cli import add_resume_argument, load_recipe_config
from genclf_harness.training.grpo import GRPOTrainConfig
from genclf_harness.training.rewards import completion_text
from genclf_harness.training.stepwiser_labels import build_labels  # noqa: F401  (the recipe's first stage)

logger = logging.getLogger(__name__)

LABELS_FILE = "step_labels.jsonl"


@dataclass
class StepWiserDataConfig(Section):
    """Where the labelled steps come from: trajectories, Monte-Carlo rollouts, a labelling rule."""

    task: str = field(
        default="gsm8k",
        metadata={"help": "The reasoning task whose training problems are solved and labelled (gsm8k, last_letter, "
                          "word_sorting or a reasoning folder)."},
    )
    labels_file: str | None = field(
        default=None, metadata={"help": "A step_labels.jsonl from an earlier run: train on it, skip the rollouts."}
    )
    step_set: str | None = field(
        default=None,
        metadata={"help": "A step-labelled folder under the data root (processbench, or meta.json kind 'steps'): train "
                          "on its first-wrong-step labels (steps before it right, it wrong, later ones left out), "
                          "skip the rollouts."},
    )
    step_split: str = field(default="train", metadata={"help": "The split of step_set to train on."})
    step_labels: Literal["first_error", "monte_carlo"] = field(
        default="first_error",
        metadata={"help": "With step_set: its own first-wrong-step labels, or Monte-Carlo labels from rollouts of "
                          "its solutions (the gold answer: the row's 'answer', else the same question in data.task; "
                          "num_problems solutions)."},
    )
    num_problems: int = field(default=8, metadata={"help": "Training problems to build trajectories from."})
    problem_seed: int = field(default=0, metadata={"help": "Seed of generated problems (algorithmic tasks)."})
    source: Literal["sampled", "reference"] = field(
        default="sampled",
        metadata={"help": "'sampled': one policy solution per problem (StepWiser); 'reference': the reference solution "
                          "and a corruption of it."},
    )
    split: Literal["lines", "paragraphs"] = field(
        default="lines", metadata={"help": "How a sampled solution is split into steps (chunks)."}
    )
    max_steps_per_solution: int = field(default=8, metadata={"help": "Judge at most the first N steps of a solution."})
    policy: str = field(default="default", metadata={"help": "The policy model that solves and rolls out."})
    policy_dtype: Literal["float32", "bfloat16"] = field(default="float32", metadata={"help": "The policy's dtype."})
    rollouts: int = field(default=4, metadata={"help": "M: continuations per step prefix for the Q estimates."})
    rollout_max_new_tokens: int = field(default=192, metadata={"help": "Tokens per rollout (and per sampled solution)."})
    rollout_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of solutions and rollouts."})
    rule: Literal["abs_q", "rel_ratio", "rel_effective"] = field(
        default="rel_ratio", metadata={"help": "StepWiser's labelling rule (Abs-Q, Rel-Ratio, Rel-Effective)."}
    )
    gamma: float = field(default=0.8, metadata={"help": "Rel-Ratio: positive iff Q_i / Q_{i-1} > gamma."})
    alpha: float = field(default=1.0, metadata={"help": "Rel-Effective: E_i = Q_i + alpha (Q_i - Q_{i-1})."})
    n: int | None = field(default=None, metadata={"help": "Rel-Effective: positive iff E_i > 1/n (null: n = rollouts)."})
    balance: bool = field(default=True, metadata={"help": "Down-sample the larger class to balance the labels."})
    max_examples: int | None = field(default=None, metadata={"help": "Keep at most N labelled steps (null: all)."})
    reasoning: bool = field(default=True, metadata={"help": "The judge reasons before its verdict (else verdict only)."})
    chat_template: bool | Literal["auto"] = field(
        default="auto", metadata={"help": "Conversational prompts with the model's chat template ('auto': if it has one)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of sampling, rollouts and balancing."})

    def check(self) -> None:
        if self.labels_file is not None and not Path(self.labels_file).is_file():
            raise ValueError(f"labels_file: {self.labels_file!r} does not exist")
        if self.labels_file is not None and self.step_set is not None:
            raise ValueError("labels_file and step_set: give one source of labelled steps, not both")
        if self.labels_file is None and (self.step_set is None or self.step_labels == "monte_carlo"):
            from genclf_harness.verifiers.genrm.problems import get_task

            try:
                get_task(self.task)  # the rollouts' task: an unknown one fails before any model work
            except ValueError as err:
                raise ValueError(f"task: {err}") from None
        for name in ("num_problems", "rollouts", "rollout_max_new_tokens", "max_steps_per_solution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, not {getattr(self, name)}")
        if self.rollout_temperature <= 0:
            raise ValueError(f"rollout_temperature: must be positive (rollouts are sampled), not {self.rollout_temperature}")
        if self.gamma <= 0:
            raise ValueError(f"gamma: must be positive, not {self.gamma}")
        if self.n is not None and self.n < 1:
            raise ValueError(f"n: must be at least 1 or null, not {self.n}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples: must be at least 1 or null, not {self.max_examples}")


@dataclass
class StepWiserTrainConfig(GRPOTrainConfig):
    """TRL ``GRPOConfig`` fields; a judge that reasons needs longer completions than a label."""

    output_dir: str = field(default="runs/stepwiser", metadata={"help": "The judge adapter, labels, logs, figures."})
    max_completion_length: int = field(default=128, metadata={"help": "New tokens per judgement (reasoning + verdict)."})


@dataclass
class StepWiserRewardConfig(Section):
    """The verdict-match reward."""

    unparsed: float = field(default=0.0, metadata={"help": "Reward of a judgement with no readable verdict."})


@dataclass
class StepWiserEvalConfig(Section):
    """ProcessBench at the end of training (P(Yes) per step with the trained judge)."""

    processbench_split: str = field(default="gsm8k", metadata={"help": "The split evaluated (any <split>.jsonl there)."})
    processbench_dataset: str = field(
        default="processbench", metadata={"help": "The step-labelled folder evaluated (processbench or your own)."}
    )
    processbench_limit: int = field(default=0, metadata={"help": "Solutions evaluated (0: skip the evaluation)."})
    autocast_bf16: bool = field(default=False, metadata={"help": "Score under bfloat16 autocast."})

    def check(self) -> None:
        if self.processbench_limit < 0:
            raise ValueError(f"processbench_limit: must be >= 0, not {self.processbench_limit}")


@dataclass
class StepWiserRecipeConfig:
    """``genclf-train stepwiser``: model (the judge), data (labels), trainer, reward, evaluation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: StepWiserDataConfig = field(default_factory=StepWiserDataConfig)
    train: StepWiserTrainConfig = field(default_factory=StepWiserTrainConfig)
    reward: StepWiserRewardConfig = field(default_factory=StepWiserRewardConfig)
    eval: StepWiserEvalConfig = field(default_factory=StepWiserEvalConfig)


class VerdictMatchReward:
    """1 when the judgement's parsed verdict equals the step's label (dataset column ``label``), else 0.

    A TRL reward function (picklable, with a ``__name__``); the verdict is read by
    :func:`genclf_harness.verifiers.stepwise.steps.parse_verdict` (``Verdict: Yes/No``), never evaluated.
    """

    def __init__(self, *, gold_key: str = "label", unparsed: float = 0.0, name: str = "verdict_match") -> None:
        self.gold_key = gold_key
        self.unparsed = float(unparsed)
        self.__name__ = name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                 **columns: Any) -> list[float]:
        from genclf_harness.verifiers.stepwise.steps import parse_verdict

        if self.gold_key not in columns:
            raise KeyError(f"{self.__name__}: the dataset has no {self.gold_key!r} column (keep remove_unused_columns=False)")
        golds = columns[self.gold_key]
        if len(golds) != len(completions):
            raise ValueError(f"{self.__name__}: {len(golds)} labels for {len(completions)} completions")
        rewards = []
        for completion, gold in zip(completions, golds):
            if not isinstance(gold, bool):
                raise ValueError(f"{self.__name__}: a step label must be true or false, got {gold!r}")
            verdict = parse_verdict(completion_text(completion))
            rewards.append(self.unparsed if verdict is None else float(verdict == gold))
        return rewards

    def __repr__(self) -> str:
        return f"VerdictMatchReward(gold_key={self.gold_key!r}, unparsed={self.unparsed})"


def judge_rows(steps: Sequence[Any], chat: bool, tokenizer: Any, reasoning: bool = True) -> list[dict[str, Any]]:
    """GRPO rows: the step-judge prompt asking for a verdict, and the label column the reward reads."""
    from genclf_harness.verifiers.stepwise.steps import DEFAULT_STEP_FORMAT

    ask = DEFAULT_STEP_FORMAT.reasoning_instruction if reasoning else DEFAULT_STEP_FORMAT.verdict_instruction
    rows = []
    for step in steps:
        user = DEFAULT_STEP_FORMAT.user_message(step.problem, step.steps, step.index, ask=ask)
        prompt: Any = [{"role": "user", "content": user}] if chat else user + "\n"
        rows.append({"prompt": prompt, "label": bool(step.label), "step_index": step.index, "id": step.id})
    return rows


# -- the recipe -----------------------------------------------------------------------------------


def train_stepwiser(config: StepWiserRecipeConfig, config_path: str | None = None) -> dict[str, Any]:
    """Labels, GRPO, optional ProcessBench; returns the run record (also written to the output folder)."""
    import datasets
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from genclf_harness.training.examples import uses_chat
    from genclf_harness.training.modeling import load_for_training, load_tokenizer, trainable_summary
    from genclf_harness.training.records import RECORD_FILE, JsonlLogCallback, save_once, versions, write_json
    from genclf_harness.verifiers.stepwise.labels import write_labels

    started = time.perf_counter()
    output_dir = Path(config.train.output_dir)
    set_seed(config.train.seed)
    steps, counts = build_labels(config.data)
    write_labels(output_dir / LABELS_FILE, steps)
    labels_seconds = time.perf_counter() - started
    logger.info("Step labels (%s): %s", config.data.rule, counts)

    tokenizer = load_tokenizer(config.model)
    chat = uses_chat(config.data.chat_template, tokenizer)
    rows = judge_rows(steps, chat, tokenizer, config.data.reasoning)
    model, tokenizer, peft_config = load_for_training(config.model)
    reward = VerdictMatchReward(unparsed=config.reward.unparsed)
    args = GRPOConfig(**config.train.trl_kwargs(), remove_unused_columns=False)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args,
                          train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                          peft_config=peft_config, callbacks=[JsonlLogCallback(output_dir)])
    logger.info("StepWiser GRPO: %s; %d labelled steps", trainable_summary(trainer.model), len(rows))
    outcome = trainer.train(resume_from_checkpoint=config.train.resume_argument())
    if not save_once(trainer, tokenizer, output_dir):
        return {"recipe": "stepwiser", "train_metrics": dict(outcome.metrics), "world_size": int(trainer.args.world_size)}
    train_seconds = time.perf_counter() - started - labels_seconds

    figures: dict[str, Any] = {}
    if config.eval.processbench_limit:
        figures = evaluate_processbench(trainer.model, tokenizer, config.eval.processbench_split,
                                        config.eval.processbench_limit, chat=chat,
                                        dataset=config.eval.processbench_dataset,
                                        autocast_bf16=config.eval.autocast_bf16)
    record = {
        "recipe": "stepwiser",
        "config": to_dict(config),
        "config_file": config_path,
        "chat_template": chat,
        "label_counts": counts,
        "examples": len(rows),
        "world_size": int(trainer.args.world_size),
        "train_metrics": dict(outcome.metrics),
        "labels_seconds": round(labels_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "figures": figures,
        "log_history": trainer.state.log_history,
        "versions": versions(),
    }
    write_json(output_dir / RECORD_FILE, record)
    logger.info("Saved the judge to %s (%.0f s)", output_dir, record["seconds"])
    return record


def evaluate_processbench(model: Any, tokenizer: Any, split: str, limit: int, *, chat: bool,
                          autocast_bf16: bool = False, dataset: str = "processbench") -> dict[str, Any]:
    """ProcessBench figures of a judge model (P(Yes) per step, threshold 0.5) on the first ``limit`` solutions."""
    import torch

    from genclf_harness.backends.scorer import HFScorer
    from genclf_harness.verifiers.stepwise.judge import StepJudge
    from genclf_harness.verifiers.stepwise.steps import load_processbench, processbench_scores

    model.eval()
    examples = load_processbench(split, limit=limit, dataset=dataset)
    scorer = HFScorer(model, tokenizer, autocast_dtype=torch.bfloat16 if autocast_bf16 else None)
    judge = StepJudge(scorer, tokenizer=tokenizer, chat=chat)
    judged = judge.judge([e.problem for e in examples], [list(e.steps) for e in examples])
    scores = processbench_scores([j.first_error for j in judged], [e.label for e in examples])
    return {"processbench": split, "dataset": dataset, "solutions": len(examples), **scores.as_dict()}


add_arguments = add_resume_argument


def run(args: argparse.Namespace) -> int:
    config = load_recipe_config(StepWiserRecipeConfig, args)  # every error before a model loads
    if config is None:
        return 2
    record = train_stepwiser(config, config_path=args.config)
    rewards = [e["reward"] for e in record["log_history"] if "reward" in e]
    print(f"saved to {config.train.output_dir}: {record['examples']} labelled steps {record['label_counts']}; "
          f"mean reward first/last log {rewards[0] if rewards else float('nan'):.3f}/"
          f"{rewards[-1] if rewards else float('nan'):.3f}; {record['seconds']} s"
          + (f"; ProcessBench {record['figures']}" if record["figures"] else ""))
    return 0
