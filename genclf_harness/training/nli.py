"""``genclf-train nli``: an NLI cross-encoder fine-tuned on a classification data set, Laurer's way.

``genclf-train nli --config configs/nli_sst2_cpu.yaml [--set train.max_steps=64 ...]``

Laurer, van Atteveldt, Casas and Welbers ("Building Efficient Universal Classifiers with Natural
Language Inference", 2024; and "Less Annotating, More Classifying", 2023) turn a labelled data set
into NLI pairs (:func:`nli_pairs`): for every class, its texts paired with the class's hypothesis
are ``entailment``, and an equal-size sample (seeded) of the other classes' texts paired with the
same hypothesis are ``not_entailment``. A cross-encoder with a 2-label head (``entailment`` = 0,
``not_entailment`` = 1, their convention) is trained on the pairs with a plain transformers
``Trainer``; the premise is the row's input fields joined by newlines
(:func:`~genclf_harness.backends.nli.premise_text`) and the hypothesis ``hypothesis_template``
filled with the label word, exactly what ``genclf-nli`` asks at evaluation, so the output folder
evaluates with ``genclf-eval --model genclf-nli --model_args pretrained=<output_dir> --tasks
genclf_<dataset>``. Before and after training the validation rows are scored by
:class:`~genclf_harness.backends.nli.NLIScorer` (``acc``, ``acc_prior``). A checkpoint with another
head (a 3-class MNLI model, or an encoder without one) gets a new 2-label head (recorded in
``base_weights_source``).
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from genclf_harness.backends.nli import DEFAULT_HYPOTHESIS_TEMPLATE, HypothesisTemplateError, check_hypothesis_template
from genclf_harness.training.atp import before_after_line, label_figures
from genclf_harness.training.config import to_dict
from genclf_harness.training.encoder_config import EncoderDataConfig, EncoderEvalConfig, EncoderModelConfig
from genclf_harness.training.recipe_cli import add_resume_argument, load_recipe_config
from genclf_harness.training.trainer_config import TrainerSection

logger = logging.getLogger(__name__)

ENTAILMENT, NOT_ENTAILMENT = 0, 1
ID2LABEL = {ENTAILMENT: "entailment", NOT_ENTAILMENT: "not_entailment"}


@dataclass
class NLIDataConfig(EncoderDataConfig):
    """The data section: a classification data set turned into NLI pairs (no prompt: the input fields)."""

    hypothesis_template: str | None = field(
        default=None,
        metadata={"help": "Each label's hypothesis, with {} for the label word (null: the data set spec's "
                          "hypothesis_template where it has one, else 'This example is {}.', as genclf-nli)."},
    )

    def check(self) -> None:
        if self.strategy != "zero":
            raise ValueError(f"strategy: NLI pairs are built from the input fields and the label words, not a prompt; "
                             f"leave it as 'zero', not {self.strategy!r}")
        if self.hypothesis_template is not None:
            try:
                check_hypothesis_template(self.hypothesis_template)
            except HypothesisTemplateError as err:
                raise ValueError(f"hypothesis_template: {err}") from None
        super().check()

    def template_for(self, spec: Any) -> str:
        """This section's template, else the spec's (once DatasetSpec has the field), else the default."""
        return self.hypothesis_template or getattr(spec, "hypothesis_template", None) or DEFAULT_HYPOTHESIS_TEMPLATE


@dataclass
class NLITrainConfig(TrainerSection):
    """transformers ``TrainingArguments`` fields and the pair length."""

    _trl_config: ClassVar[str] = "transformers.TrainingArguments"
    _not_passed: ClassVar[tuple[str, ...]] = (*TrainerSection._not_passed, "max_length")

    output_dir: str = field(default="runs/nli", metadata={"help": "Checkpoints, the final model, logs and figures."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (AdamW; full fine-tuning)."})
    max_length: int = field(default=256,
                            metadata={"help": "Tokens per pair; the premise is cut, never the hypothesis."})

    def check(self) -> None:
        super().check()
        if self.max_length < 16:
            raise ValueError(f"max_length: must be at least 16 tokens, not {self.max_length}")


@dataclass
class NLIRecipeConfig:
    """``genclf-train nli``: model, data, trainer and evaluation sections."""

    model: EncoderModelConfig = field(default_factory=EncoderModelConfig)
    data: NLIDataConfig = field(default_factory=NLIDataConfig)
    train: NLITrainConfig = field(default_factory=NLITrainConfig)
    eval: EncoderEvalConfig = field(default_factory=EncoderEvalConfig)


# -- pairs and collation -----------------------------------------------------------------------------


def nli_pairs(spec: Any, rows: Sequence[Mapping[str, Any]], *, hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
              label_words: Sequence[str] | None = None, seed: int = 1234) -> list[dict[str, Any]]:
    """Laurer's NLI training set of classification rows, shuffled (seeded).

    Per class ``k``: every row of class ``k`` with hypothesis ``k`` (``entailment``), and
    ``min(n_k, n_other)`` rows drawn without replacement from the other classes, also with hypothesis
    ``k`` (``not_entailment``). Each pair is ``{"premise", "hypothesis", "label", "class", "id"}``.
    """
    from genclf_harness.backends.nli import premise_text

    template = check_hypothesis_template(hypothesis_template)
    words = tuple(label_words or spec.label_words)
    rng = random.Random(seed)
    pairs: list[dict[str, Any]] = []
    for k, word in enumerate(words):
        hypothesis = template.format(word)
        own = [row for row in rows if int(row["label"]) == k]
        other = [row for row in rows if int(row["label"]) != k]
        drawn = rng.sample(other, min(len(own), len(other)))
        for chosen, label in ((own, ENTAILMENT), (drawn, NOT_ENTAILMENT)):
            pairs.extend({"premise": premise_text(spec, row), "hypothesis": hypothesis, "label": label, "class": k,
                          "id": str(row.get("id", ""))} for row in chosen)
    rng.shuffle(pairs)
    return pairs


@dataclass
class NLICollator:
    """Tokenises (premise, hypothesis) pairs as the zero-shot pipeline does (premise cut first)."""

    tokenizer: Any
    max_length: int = 256

    def __call__(self, pairs: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer([p["premise"] for p in pairs], [p["hypothesis"] for p in pairs],
                                 truncation="only_first", max_length=self.max_length, padding=True, return_tensors="pt")
        batch = {k: v for k, v in encoded.items() if k in set(self.tokenizer.model_input_names)}
        batch["labels"] = torch.tensor([int(p["label"]) for p in pairs])
        return batch


def load_nli_model(config: EncoderModelConfig) -> tuple[Any, str]:
    """(a 2-label entailment/not_entailment sequence classifier, its weights_source)."""
    from transformers import AutoModelForSequenceClassification

    from genclf_harness.backends.mlm import describe_weights, resolve_encoder

    model, info = AutoModelForSequenceClassification.from_pretrained(
        resolve_encoder(config.pretrained), num_labels=2, id2label=dict(ID2LABEL),
        label2id={v: k for k, v in ID2LABEL.items()}, ignore_mismatched_sizes=True, output_loading_info=True,
        dtype=getattr(torch, config.dtype), revision=config.revision, trust_remote_code=config.trust_remote_code)
    fresh = sorted({*(info.get("missing_keys") or ()), *(k for k, *_ in info.get("mismatched_keys") or ())})
    return model, describe_weights(model, fresh, head="classification head")


def nli_figures(model: Any, tokenizer: Any, spec: Any, rows: Sequence[Mapping[str, Any]], *, hypothesis_template: str,
                max_length: int, batch_size: int = 32) -> dict[str, Any]:
    """The rows scored by NLIScorer as genclf-nli scores them (label words in the template)."""
    from genclf_harness.backends.nli import NLIScorer, premise_text
    from genclf_harness.backends.protocol import LabelPrompt

    if not rows:
        return {}
    was_training = model.training
    model.eval()
    try:
        scorer = NLIScorer(model, tokenizer, hypothesis_template=hypothesis_template, max_length=max_length,
                           batch_size=batch_size, weights_source="in training")
        results = scorer.score([LabelPrompt(premise_text(spec, row), tuple(spec.label_words)) for row in rows],
                               show_progress=False)
    finally:
        model.train(was_training)
    scores = np.array([r.logprobs for r in results], dtype=np.float64)
    return label_figures(scores, np.array([int(row["label"]) for row in rows]))


# -- the recipe ------------------------------------------------------------------------------------


add_arguments = add_resume_argument


def run(args: argparse.Namespace) -> int:
    config = load_recipe_config(NLIRecipeConfig, args)  # every error before a model loads
    if config is None:
        return 2
    print(before_after_line("nli", train_nli(config, config_path=args.config)))
    return 0


def train_nli(config: NLIRecipeConfig, config_path: str | None = None) -> dict[str, Any]:
    """Pair, measure, train, measure again, save; returns the run record."""
    from transformers import AutoTokenizer, Trainer, TrainingArguments, set_seed

    from genclf_harness.backends.mlm import resolve_encoder
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
    train, data_config = config.train, config.data
    output_dir = Path(train.output_dir)
    resume = train.resume_argument()
    data = load_classifier_data(data_config, chat=False)
    template = data_config.template_for(data.spec)
    pairs = nli_pairs(data.spec, data.train_rows, hypothesis_template=template, seed=data_config.shuffle_seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(config.model.pretrained), revision=config.model.revision,
                                              trust_remote_code=config.model.trust_remote_code)
    set_seed(train.seed)
    model, weights_source = load_nli_model(config.model)
    model.train()
    logger.info("NLI training on %d pairs from %d %s rows: %s; weights: %s", len(pairs), len(data.train_rows),
                data.spec.name, trainable_summary(model), weights_source)
    figures: dict[str, Any] = {"dataset": data.spec.name, "hypothesis_template": template}

    def measure() -> dict[str, Any]:
        return nli_figures(model, tokenizer, data.spec, data.eval_rows, hypothesis_template=template,
                           max_length=train.max_length, batch_size=config.eval.batch_size)

    if config.eval.before:
        figures["before"] = measure()
        logger.info("before training: %s", figures["before"])
    args = TrainingArguments(**{**train.trl_kwargs(), "remove_unused_columns": False})
    trainer = Trainer(model=model, args=args, train_dataset=pairs,
                      data_collator=NLICollator(tokenizer, train.max_length), callbacks=[JsonlLogCallback(output_dir)])
    outcome = trainer.train(resume_from_checkpoint=resume)
    if not save_once(trainer, tokenizer, output_dir):
        return {"recipe": "nli", "train_metrics": dict(outcome.metrics), "world_size": int(trainer.args.world_size),
                "output_dir": str(output_dir), "model": trainer.model, "figures": figures}
    model = trainer.model
    figures["after"] = measure()
    logger.info("after training: %s", figures["after"])
    write_json(output_dir / FIGURES_FILE, figures)
    record = {
        "recipe": "nli", "config": to_dict(config), "config_file": config_path, "pairs": len(pairs),
        "entailment_pairs": sum(p["label"] == ENTAILMENT for p in pairs), "base_weights_source": weights_source,
        "weights_source": f"pretrained: {output_dir} (genclf-train nli)", "world_size": int(trainer.args.world_size),
        "train_metrics": dict(outcome.metrics), "figures": figures, "seconds": round(time.perf_counter() - started, 1),
        "log_history": trainer.state.log_history, "versions": versions(),
    }
    write_json(output_dir / RECORD_FILE, record)
    record["output_dir"] = str(output_dir)
    record["model"] = trainer.model
    return record
