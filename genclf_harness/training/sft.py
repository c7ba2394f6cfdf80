"""``genclf-train sft``: supervised fine-tuning of a generative classifier (the GenCLS++ warm-up).

``genclf-train sft --config configs/sft_sst2_cpu.yaml [--set train.max_steps=20 ...]``

The examples are a data set's training rows rendered by a prompt strategy (`examples`) in TRL's
prompt-completion form, so the loss covers the answer only; TRL's ``SFTTrainer`` trains a LoRA
adapter (``model.peft: lora``) or the whole model (``none``). At the end the validation rows are
evaluated (scored and generative decoding, `evaluation`) and everything is written to
``train.output_dir``: the adapter (or model) with its tokenizer, ``checkpoint-*`` folders to
resume from, ``log.jsonl``, ``train.log``, ``eval_figures.json`` and ``genclf_train.json``.

The adapter evaluates at once::

    genclf-eval --model genclf-hf --model_args pretrained=default,peft=<output_dir> --tasks genclf_sst2

(add ``--apply_chat_template`` when the run used the chat template). `run_sft` is the generic
runner other recipes build on (verifier SFT): any prompt-completion or ``messages`` examples.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from genclf_harness.training.config import DataConfig, EvalConfig, ModelConfig, to_dict
from genclf_harness.training.recipe_cli import add_resume_argument, load_recipe_config
from genclf_harness.training.trainer_config import TrainerSection

logger = logging.getLogger(__name__)

EvalFn = Callable[[Any, Any], Mapping[str, Any]]
"""``eval_fn(model, tokenizer) -> figures``, called on the trained model before it is returned."""


@dataclass
class SFTTrainConfig(TrainerSection):
    """TRL ``SFTConfig`` fields (anything else under ``trainer_kwargs``)."""

    output_dir: str = field(default="runs/sft", metadata={"help": "Checkpoints, the final model, logs and figures."})
    max_length: int | None = field(
        default=512, metadata={"help": "Truncate examples to this many tokens (null: no truncation)."}
    )

    def check(self) -> None:
        super().check()
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length: must be at least 8 tokens or null, not {self.max_length}")


@dataclass
class SFTDataConfig(DataConfig):
    """The data section, plus what the model is taught to answer (`targets`)."""

    targets: Literal["label", "onehot", "augmented"] = field(
        default="label",
        metadata={"help": "label: the gold label word. onehot: UniPredict's answer 'class 0: 1.0; class 1: 0.0.'. "
                          "augmented: UniPredict's target augmentation, 'class 0: 0.83; class 1: 0.17.', the class "
                          "probabilities of a teacher (gradient boosting + isotonic calibration) fitted on the training "
                          "split of a tabular data set. onehot/augmented models are evaluated by reading the answer as "
                          "a distribution (genclf_harness.training.teacher)."},
    )
    teacher_seed: int = field(default=0, metadata={"help": "Seed of the teacher's trees and folds (augmented)."})

    def check(self) -> None:
        super().check()
        if self.targets == "augmented":
            from genclf_harness.data import DataError
            from genclf_harness.data.tabular import tabular_spec_of

            try:
                tspec = tabular_spec_of(self.dataset)
            except DataError as err:
                raise ValueError(f"targets: augmented targets need a tabular data set ({err})") from None
            if self.train_split != tspec.train_split or self.eval_split == self.train_split:
                raise ValueError(f"targets: augmented targets come from a teacher fitted on the training split "
                                 f"{tspec.train_split!r}: train on it (train_split) and evaluate elsewhere (eval_split)")


@dataclass
class SFTRecipeConfig:
    """``genclf-train sft``: model, data, trainer and final evaluation sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    train: SFTTrainConfig = field(default_factory=SFTTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class ModelAndTrainer(Protocol):
    """What `run_sft` needs of a config: a model section and a trainer section."""

    model: ModelConfig
    train: SFTTrainConfig


@dataclass
class TrainResult:
    """A finished run: where it is, what training reported, and the evaluation figures."""

    output_dir: Path
    metrics: dict[str, Any]
    figures: dict[str, Any]
    seconds: float
    model: Any = field(repr=False, default=None)
    tokenizer: Any = field(repr=False, default=None)


def run_sft(
    config: ModelAndTrainer,
    train_examples: Sequence[Mapping[str, Any] | Sequence[Mapping[str, str]]],
    *,
    eval_fn: EvalFn | None = None,
    record: Mapping[str, Any] | None = None,
    recipe: str = "sft",
    model_and_tokenizer: tuple[Any, Any, Any] | None = None,
) -> TrainResult:
    """Fine-tune ``config.model`` on ``train_examples`` with TRL's ``SFTTrainer``.

    Examples are TRL rows: ``{"prompt", "completion"}`` (strings, or chat messages: the loss is
    on the completion only) or ``{"messages": [...]}`` / a bare list of messages (language
    modelling on the whole conversation). The final model (LoRA adapter or full weights) and the
    tokenizer go to ``config.train.output_dir``; ``eval_fn`` figures go to ``eval_figures.json``;
    ``record`` (e.g. the full config) joins the run record ``genclf_train.json`` under ``recipe``.
    ``model_and_tokenizer`` ``(model, tokenizer, peft_config)`` skips loading (tests, notebooks).
    """
    import datasets
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from genclf_harness.training.modeling import load_for_training, trainable_summary
    from genclf_harness.training.records import (
        FIGURES_FILE,
        RECORD_FILE,
        JsonlLogCallback,
        save_once,
        versions,
        write_json,
    )

    started = time.perf_counter()
    train = config.train
    output_dir = Path(train.output_dir)
    rows = [_as_row(example, index) for index, example in enumerate(train_examples)]
    if not rows:
        raise ValueError("run_sft: no training examples")
    resume = train.resume_argument()  # fails now, not after loading, if there is nothing to resume

    set_seed(train.seed)
    model, tokenizer, peft_config = model_and_tokenizer or load_for_training(config.model)
    args = SFTConfig(**train.trl_kwargs())
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[JsonlLogCallback(output_dir)],
    )
    logger.info("SFT on %d examples: %s", len(rows), trainable_summary(trainer.model))
    if resume:
        logger.info("Resuming from %s", resume)
    outcome = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(outcome.metrics)
    if not save_once(trainer, tokenizer, output_dir):
        return TrainResult(output_dir, metrics, {}, time.perf_counter() - started, trainer.model, tokenizer)
    train_seconds = time.perf_counter() - started

    figures: dict[str, Any] = {}
    if eval_fn is not None:
        figures = dict(eval_fn(trainer.model, tokenizer))
        write_json(output_dir / FIGURES_FILE, figures)
    seconds = time.perf_counter() - started
    write_json(output_dir / RECORD_FILE, {
        "recipe": recipe,
        **(dict(record) if record else {"config": _config_dict(config)}),
        "examples": len(rows),
        "world_size": int(trainer.args.world_size),
        "train_metrics": metrics,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(seconds, 1),
        "figures": figures,
        "log_history": trainer.state.log_history,
        "versions": versions(),
    })
    logger.info("Saved %s to %s (%.0f s)", "the adapter" if _is_peft(trainer.model) else "the model", output_dir, seconds)
    return TrainResult(output_dir, metrics, figures, seconds, trainer.model, tokenizer)


def _as_row(example: Any, index: int) -> dict[str, Any]:
    if isinstance(example, Mapping):
        if ("prompt" in example and "completion" in example) or "messages" in example:
            return dict(example)
        raise ValueError(f"training example #{index} has keys {sorted(example)}; expected prompt and completion, "
                         "or messages")
    if isinstance(example, Sequence) and not isinstance(example, str):
        return {"messages": list(example)}
    raise ValueError(f"training example #{index} is a {type(example).__name__}, not a mapping or a list of messages")


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def _config_dict(config: Any) -> dict[str, Any]:
    try:
        return to_dict(config)
    except TypeError:
        return {}


# -- the classifier recipe ----------------------------------------------------------------------


def classifier_eval_fn(data: Any, eval_config: EvalConfig) -> EvalFn | None:
    """Evaluation of a classifier on ``data.eval_rows`` (None when there are none)."""
    from genclf_harness.training.evaluation import evaluate_classifier

    if not data.eval_rows or not (eval_config.scored or eval_config.generate):
        return None
    prompts = data.render(data.eval_rows)

    def evaluate(model: Any, tokenizer: Any) -> dict[str, Any]:
        logger.info("Evaluating on %d %s rows", len(prompts), data.spec.name)
        figures = evaluate_classifier(
            model, tokenizer, prompts, data.label_set, chat=data.chat,
            scored=eval_config.scored, generate=eval_config.generate,
            max_new_tokens=eval_config.max_new_tokens, batch_size=eval_config.batch_size,
            autocast_bf16=eval_config.autocast_bf16,
        )
        logger.info("Evaluation: %s", summarize(figures))
        return {"dataset": data.spec.name, "strategy": data.prompter.strategy.name, **figures}

    return evaluate


def summarize(figures: Mapping[str, Any]) -> str:
    parts = [f"{figures.get('documents', 0)} documents"]
    if "scored" in figures:
        parts.append(f"scored acc {figures['scored']['acc']:.3f}")
    if "generative" in figures:
        gen = figures["generative"]
        parts.append(f"generative acc {gen['acc']:.3f} (unparseable {gen['unparseable']:.3f})")
    return ", ".join(parts)


add_arguments = add_resume_argument


def run(args: argparse.Namespace) -> int:
    config = load_recipe_config(SFTRecipeConfig, args)  # every error before a model loads
    if config is None:
        return 2
    result = train_classifier(config, config_path=args.config)
    print(summarize(result.figures) if result.figures else f"saved to {result.output_dir}")
    return 0


def train_classifier(config: SFTRecipeConfig, config_path: str | None = None) -> TrainResult:
    """The ``sft`` recipe on a loaded config: render the examples, train, evaluate, record."""
    from genclf_harness.training.examples import load_classifier_data, uses_chat
    from genclf_harness.training.modeling import load_tokenizer

    chat = uses_chat(config.data.chat_template, load_tokenizer(config.model))
    data = load_classifier_data(config.data, chat)
    logger.info("%s, strategy %s, %s: %d training rows, %d evaluation rows", data.spec.name,
                data.prompter.strategy.name, "chat template" if chat else "plain text",
                len(data.train_rows), len(data.eval_rows))
    targets = getattr(config.data, "targets", "label")
    if targets == "label":
        examples, eval_fn = data.sft_examples(), classifier_eval_fn(data, config.eval)
    else:  # UniPredict's distribution answers (genclf_harness.training.teacher)
        from genclf_harness.training.teacher import distribution_eval_fn, distribution_targets

        answers = distribution_targets(targets, data.spec.name, data.train_rows,
                                       seed=getattr(config.data, "teacher_seed", 0))
        examples, eval_fn = data.sft_examples(answers=answers), distribution_eval_fn(data, config.eval)
    return run_sft(
        config,
        examples,
        eval_fn=eval_fn,
        record={"config": to_dict(config), "config_file": config_path, "chat_template": chat},
    )
