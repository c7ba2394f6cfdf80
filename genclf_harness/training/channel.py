"""``genclf-train channel``: training a classifier in the channel direction (the input given the label).

``genclf-train channel --config configs/channel_sst2_cpu.yaml [--set train.loss=rank ...]``

Each training row is rendered by a channel strategy (`genclf_harness.prompts.channel`: one context
per label, the input after it) and tokenised with lm-eval's split (the label encoder of
`genclf_harness.backends`), so the model is trained on exactly the requests the
``genclf_<dataset>_channel`` task scores. A batch of documents is one forward pass over all their
(label, input) sequences; the loss (`channel_losses`: ``mle``, ``lul`` = likelihood + unlikelihood,
``rank`` = hinge on the hardest other label) is computed by a transformers ``Trainer`` whose
``compute_loss`` is the only thing changed, so checkpoints, resuming, LoRA (PEFT), accelerate and
logging are the stock ones. The loss terms are logged beside the loss.

Before and after training the validation rows are scored by the genclf scorer as the channel task
scores them (``acc``: summed log-likelihood, as lm-eval's ``acc``; ``acc_prior``: after prior
matching) and the training margin is measured on a fixed sample of training rows (gold label's mean
token log-probability minus the best other label's). Everything goes to ``train.output_dir``: the
adapter (or model) and tokenizer, ``checkpoint-*``, ``log.jsonl``, ``eval_figures.json``,
``genclf_train.json``. Evaluate with ``genclf-eval --model genclf-hf --model_args
pretrained=default,peft=<output_dir> --tasks genclf_<dataset>_channel``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from genclf_harness.prompts import RenderedPrompt
from genclf_harness.training.channel_losses import CHANNEL_LOSSES, channel_loss, training_margin
from genclf_harness.training.config import DataConfig, ModelConfig, Section, to_dict
from genclf_harness.training.recipe_cli import add_resume_argument, load_recipe_config
from genclf_harness.training.trainer_config import TrainerSection

logger = logging.getLogger(__name__)


@dataclass
class ChannelDataConfig(DataConfig):
    """The data section: a channel strategy over a data set (plain text, as the channel tasks)."""

    _generative: ClassVar[bool] = False

    strategy: str = field(
        default="channel",
        metadata={"help": "A channel prompt strategy (its name has the token 'channel', e.g. channel, bal3_channel)."},
    )
    chat_template: bool | Literal["auto"] = field(
        default=False,
        metadata={"help": "Must stay false: the channel tasks score plain-text requests."},
    )

    def check(self) -> None:
        from genclf_harness.prompts import PromptStrategy

        try:
            channel = PromptStrategy.parse(self.strategy).channel
        except ValueError as err:
            raise ValueError(f"strategy: {err}") from None
        if not channel:
            raise ValueError(f"strategy: {self.strategy!r} is not a channel strategy (add the token 'channel', "
                             "e.g. 'channel' or 'bal3_channel')")
        if self.chat_template is True:
            raise ValueError("chat_template: channel training is plain text (the genclf_<name>_channel requests)")
        super().check()


@dataclass
class ChannelTrainConfig(TrainerSection):
    """transformers ``TrainingArguments`` fields, and the channel loss."""

    _trl_config: ClassVar[str] = "transformers.TrainingArguments"
    _not_passed: ClassVar[tuple[str, ...]] = (*TrainerSection._not_passed, "loss", "unlikelihood_weight", "margin",
                                              "max_length")

    output_dir: str = field(default="runs/channel", metadata={"help": "Checkpoints, the final model, logs and figures."})
    loss: Literal["mle", "lul", "rank"] = field(
        default="lul",
        metadata={"help": "mle: likelihood of the input under the gold label; lul: plus unlikelihood under the other "
                          "labels; rank: hinge on the gold label against the hardest other label."},
    )
    unlikelihood_weight: float = field(default=1.0, metadata={"help": "Weight of the unlikelihood term (lul)."})
    margin: float = field(default=1.0, metadata={"help": "Hinge margin in mean token log-probability (rank)."})
    max_length: int = field(
        default=256, metadata={"help": "Tokens per (label context, input) sequence; longer inputs lose their tail."}
    )

    def check(self) -> None:
        super().check()
        if self.loss not in CHANNEL_LOSSES:
            raise ValueError(f"loss: {self.loss!r} is not one of {', '.join(CHANNEL_LOSSES)}")
        if self.unlikelihood_weight < 0:
            raise ValueError(f"unlikelihood_weight: must be non-negative, not {self.unlikelihood_weight}")
        if self.margin <= 0:
            raise ValueError(f"margin: must be positive, not {self.margin}")
        if self.max_length < 8:
            raise ValueError(f"max_length: must be at least 8 tokens, not {self.max_length}")


@dataclass
class ChannelEvalConfig(Section):
    """What is measured before and after training."""

    margin_examples: int = field(
        default=64, metadata={"help": "Training rows (the first of the shuffled window) the training margin is measured on."}
    )

    def check(self) -> None:
        if self.margin_examples < 0:
            raise ValueError(f"margin_examples: must be non-negative, not {self.margin_examples}")


@dataclass
class ChannelRecipeConfig:
    """``genclf-train channel``: model, data, trainer and evaluation sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: ChannelDataConfig = field(default_factory=ChannelDataConfig)
    train: ChannelTrainConfig = field(default_factory=ChannelTrainConfig)
    eval: ChannelEvalConfig = field(default_factory=ChannelEvalConfig)


# -- examples --------------------------------------------------------------------------------------


def encode_documents(tokenizer: Any, prompts: Sequence[RenderedPrompt], max_length: int) -> list[dict[str, Any]]:
    """Per document: each label's token sequence (context ids + input ids, lm-eval's split), where
    the input starts in it, and the gold index. An input longer than ``max_length`` allows loses its
    tail; a context that leaves no room for 8 input tokens loses its head (both counted and logged)."""
    from genclf_harness.backends.label_encoding import LabelEncoder
    from genclf_harness.backends.protocol import LabelPrompt

    encoder = LabelEncoder(tokenizer)
    flat = [LabelPrompt(context, (prompt.continuation,)) for prompt in prompts for context in prompt.contexts]
    pairs = encoder.encode(flat)
    documents, cut, at = [], 0, 0
    for prompt in prompts:
        sequences, starts = [], []
        for _ in prompt.contexts:
            (context, continuation), = pairs[at]
            at += 1
            room = max(max_length - len(context), min(8, len(continuation)))
            if len(continuation) > room or len(context) + room > max_length:
                cut += 1
            continuation = continuation[:room]
            context = context[max(0, len(context) + len(continuation) - max_length):]
            sequences.append(list(context) + list(continuation))
            starts.append(len(context))
        documents.append({"sequences": sequences, "starts": starts, "gold": prompt.gold})
    if cut:
        logger.warning("%d of %d (label, input) sequences were longer than max_length %d and were cut",
                       cut, at, max_length)
    return documents


def collate(documents: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """A batch: ``input_ids``/``attention_mask`` ``(B*K, L)``, ``target_mask`` over the shifted
    targets (the input's tokens), ``gold`` ``(B,)`` and ``labels_per_doc``."""
    labels = {len(doc["sequences"]) for doc in documents}
    if len(labels) != 1:
        raise ValueError(f"documents with different label counts in one batch: {sorted(labels)}")
    sequences = [seq for doc in documents for seq in doc["sequences"]]
    starts = [start for doc in documents for start in doc["starts"]]
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    target_mask = torch.zeros((len(sequences), width - 1), dtype=torch.bool)
    for row, (seq, start) in enumerate(zip(sequences, starts, strict=True)):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        target_mask[row, start - 1: len(seq) - 1] = True  # position j predicts token j + 1
    return {"input_ids": input_ids, "attention_mask": attention, "target_mask": target_mask,
            "gold": torch.tensor([doc["gold"] for doc in documents]), "labels_per_doc": torch.tensor(labels.pop())}


def token_logprobs(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities of the input's tokens, their mask), both ``(B, K, L-1)``, in float32; the
    log-softmax runs over the input's positions only (the contexts' are not needed)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    mask = batch["target_mask"]
    targets = batch["input_ids"][:, 1:][mask]
    picked = torch.log_softmax(logits[mask].float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    logprobs = torch.zeros(mask.shape, dtype=picked.dtype, device=picked.device).masked_scatter(mask, picked)
    k = int(batch["labels_per_doc"])
    shape = (-1, k, mask.shape[-1])
    return logprobs.reshape(shape), mask.reshape(shape)


def make_trainer_class() -> type:
    """transformers' ``Trainer`` with the channel loss (made on demand: transformers loads lazily)."""
    from transformers import Trainer

    class ChannelTrainer(Trainer):
        def __init__(self, *args: Any, channel: ChannelTrainConfig, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.channel = channel
            self._terms: dict[str, list[float]] = {}

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            logprobs, mask = token_logprobs(model, inputs)
            loss, terms = channel_loss(logprobs, mask, inputs["gold"], loss=self.channel.loss,
                                       unlikelihood_weight=self.channel.unlikelihood_weight, margin=self.channel.margin)
            for name, value in terms.items():
                self._terms.setdefault(name, []).append(float(value))
            return (loss, {"logprobs": logprobs}) if return_outputs else loss

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs:
                for name, values in self._terms.items():
                    logs[f"loss_{name}"] = round(float(np.mean(values)), 6)
                self._terms = {}
            super().log(logs, *args, **kwargs)

    return ChannelTrainer


# -- evaluation ------------------------------------------------------------------------------------


def channel_scores(model: Any, tokenizer: Any, prompts: Sequence[RenderedPrompt],
                   show_progress: bool = False) -> dict[str, np.ndarray]:
    """(N, K) scores of the input under each label's context, as the channel task scores them:
    ``sum`` (log-likelihood) and ``mean_token``."""
    from genclf_harness.backends.protocol import LabelPrompt
    from genclf_harness.backends.scorer import HFScorer

    scorer = HFScorer(model, tokenizer)
    flat = [LabelPrompt(context, (prompt.continuation,)) for prompt in prompts for context in prompt.contexts]
    results = scorer.score(flat, show_progress=show_progress)
    k = len(prompts[0].contexts) if prompts else 0
    total = np.array([r.continuations[0].logprob for r in results], dtype=np.float64).reshape(-1, k)
    mean = np.array([r.continuations[0].mean_logprob for r in results], dtype=np.float64).reshape(-1, k)
    return {"sum": total, "mean_token": mean}


def channel_figures(model: Any, tokenizer: Any, eval_prompts: Sequence[RenderedPrompt],
                    margin_prompts: Sequence[RenderedPrompt]) -> dict[str, Any]:
    """Accuracy (raw and prior-matched) on the evaluation prompts, margin on the training sample."""
    from genclf_harness import calibration as cal

    was_training = model.training
    model.eval()
    figures: dict[str, Any] = {}
    try:
        with torch.no_grad():
            if eval_prompts:
                scores = channel_scores(model, tokenizer, eval_prompts)["sum"]
                gold = np.array([p.gold for p in eval_prompts])
                prior = cal.fit("prior", scores).apply(scores)
                figures.update({"documents": len(eval_prompts),
                                "acc": float(np.mean(scores.argmax(1) == gold)),
                                "acc_prior": float(np.mean(prior.argmax(1) == gold)),
                                "f1_macro": float(cal.macro_f1(cal.normalize(scores), gold))})
            if margin_prompts:
                means = channel_scores(model, tokenizer, margin_prompts)["mean_token"]
                gold_t = torch.tensor([p.gold for p in margin_prompts])
                margins = training_margin(torch.from_numpy(means), gold_t)
                figures["train_margin"] = float(margins.mean())
                figures["train_acc_mean_token"] = float(np.mean(means.argmax(1) == gold_t.numpy()))
    finally:
        model.train(was_training)
    return figures


# -- the recipe ------------------------------------------------------------------------------------


add_arguments = add_resume_argument


def run(args: argparse.Namespace) -> int:
    config = load_recipe_config(ChannelRecipeConfig, args)  # every error before a model loads
    if config is None:
        return 2
    result = train_channel(config, config_path=args.config)
    before, after = result["figures"]["before"], result["figures"]["after"]
    print(f"channel ({config.train.loss}): acc {before.get('acc', float('nan')):.3f} -> {after.get('acc', float('nan')):.3f}, "
          f"training margin {before.get('train_margin', float('nan')):+.3f} -> {after.get('train_margin', float('nan')):+.3f}"
          f"; saved to {result['output_dir']}")
    return 0


def train_channel(config: ChannelRecipeConfig, config_path: str | None = None,
                  model_and_tokenizer: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """Render, encode, measure, train, measure again, save; returns the run record."""
    from transformers import TrainingArguments, set_seed

    from genclf_harness.training.examples import load_classifier_data
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
    resume = train.resume_argument()
    data = load_classifier_data(config.data, chat=False)
    train_prompts = data.render(data.train_rows)
    eval_prompts = data.render(data.eval_rows)
    margin_prompts = train_prompts[: config.eval.margin_examples]
    set_seed(train.seed)
    model, tokenizer, peft_config = model_and_tokenizer or load_for_training(config.model)
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    documents = encode_documents(tokenizer, train_prompts, train.max_length)
    logger.info("channel training on %d %s rows (%d labels each), loss %s: %s", len(documents), data.spec.name,
                len(data.label_set.choices), train.loss, trainable_summary(model))
    before = channel_figures(model, tokenizer, eval_prompts, margin_prompts)
    logger.info("before training: %s", before)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    args = TrainingArguments(**{**train.trl_kwargs(), "remove_unused_columns": False})  # keep the documents' keys
    trainer = make_trainer_class()(
        model=model, args=args, train_dataset=documents, data_collator=lambda docs: collate(docs, pad_id),
        channel=train, callbacks=[JsonlLogCallback(output_dir)],
    )
    outcome = trainer.train(resume_from_checkpoint=resume)
    if not save_once(trainer, tokenizer, output_dir):
        return {"recipe": "channel", "train_metrics": dict(outcome.metrics), "world_size": int(trainer.args.world_size),
                "output_dir": str(output_dir), "model": trainer.model}
    after = channel_figures(trainer.model, tokenizer, eval_prompts, margin_prompts)
    logger.info("after training: %s", after)
    figures = {"dataset": data.spec.name, "strategy": data.prompter.strategy.name, "loss": train.loss,
               "before": before, "after": after}
    write_json(output_dir / FIGURES_FILE, figures)
    record = {
        "recipe": "channel", "config": to_dict(config), "config_file": config_path,
        "examples": len(documents), "world_size": int(trainer.args.world_size), "train_metrics": dict(outcome.metrics),
        "figures": figures,
        "tokens_per_step_document": int(np.mean([sum(len(s) for s in d["sequences"]) for d in documents])),
        "seconds": round(time.perf_counter() - started, 1), "log_history": trainer.state.log_history,
        "versions": versions(),
    }
    write_json(output_dir / RECORD_FILE, record)
    record["output_dir"] = str(output_dir)
    record["model"] = trainer.model
    return record
