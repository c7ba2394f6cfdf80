"""The trainer section shared by the SFT and GRPO recipes: TRL config fields exposed with checks.

Each section maps its fields onto a TRL config class (``SFTConfig``/``GRPOConfig``); any other
field of that class can be given under ``trainer_kwargs`` (its keys are checked against the TRL
class when the config loads, which imports TRL but loads no model).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from genclf_harness.training.config import Section

RESUME_AUTO = "auto"


@dataclass
class TrainerSection(Section):
    """Fields every TRL trainer takes (transformers' TrainingArguments)."""

    _trl_config: ClassVar[str] = "trl.SFTConfig"
    _not_passed: ClassVar[tuple[str, ...]] = ("resume_from_checkpoint", "trainer_kwargs", "bf16")

    output_dir: str = field(default="runs/train", metadata={"help": "Checkpoints, the final model, logs and figures."})
    seed: int = field(default=1234, metadata={"help": "Seeds the model initialisation, data order and sampling."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training examples."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; overrides num_train_epochs when > 0."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Examples per device per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (AdamW)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers' scheduler name."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps; below 1, a share of all steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    bf16: bool | Literal["auto"] = field(
        default="auto",
        metadata={"help": "bfloat16 mixed precision; 'auto': on a GPU that supports it, off on CPU."},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    logging_steps: int = field(default=10, metadata={"help": "Log loss and learning rate every N steps."})
    save_steps: int = field(default=100, metadata={"help": "Write a resumable checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most N checkpoints (null: all)."})
    resume_from_checkpoint: bool | str = field(
        default=False,
        metadata={"help": "true: resume from the last checkpoint in output_dir (an error if none); 'auto': resume "
                          "if there is one; a path: that checkpoint; false: start afresh."},
    )
    trainer_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Any other field of the TRL config class, passed through."}
    )

    def check(self) -> None:
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, not {getattr(self, name)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps: must be positive, or -1 for num_train_epochs; not {self.max_steps}")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ValueError(f"num_train_epochs: must be positive, not {self.num_train_epochs}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be positive, not {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: must be non-negative, not {self.warmup_steps}")
        if not self.output_dir:
            raise ValueError("output_dir: must name a folder")
        resume = self.resume_from_checkpoint
        if isinstance(resume, str) and resume != RESUME_AUTO and not os.path.isdir(resume):
            raise ValueError(f"resume_from_checkpoint: {resume!r} is not a checkpoint folder (or use true/'auto')")
        if self.trainer_kwargs:
            self._check_passthrough()

    def _check_passthrough(self) -> None:
        module, _, name = self._trl_config.rpartition(".")
        config_cls = getattr(importlib.import_module(module), name)
        known = {f.name for f in dataclasses.fields(config_cls)}
        ours = {f.name for f in dataclasses.fields(self)}
        for key in self.trainer_kwargs:
            if key in ours:
                raise ValueError(f"trainer_kwargs.{key}: set it as {key} in this section, not in trainer_kwargs")
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"trainer_kwargs.{key}: {name} has no field {key!r}.{hint}")

    def trl_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the TRL config class (without the model-specific ones)."""
        import torch

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self._not_passed}
        cuda = torch.cuda.is_available()
        bf16 = (cuda and torch.cuda.is_bf16_supported()) if self.bf16 == "auto" else bool(self.bf16)
        return {
            **values,
            "bf16": bf16,
            "use_cpu": not cuda,
            "report_to": "none",
            "save_strategy": "steps",
            "logging_first_step": True,
            **self.trainer_kwargs,
        }

    def resume_argument(self) -> bool | str | None:
        """What to pass to ``trainer.train(resume_from_checkpoint=...)``."""
        from transformers.trainer_utils import get_last_checkpoint

        if self.resume_from_checkpoint == RESUME_AUTO:
            last = get_last_checkpoint(self.output_dir) if os.path.isdir(self.output_dir) else None
            return last
        if self.resume_from_checkpoint is True:
            last = get_last_checkpoint(self.output_dir) if os.path.isdir(self.output_dir) else None
            if last is None:
                raise FileNotFoundError(f"resume_from_checkpoint is true, but {self.output_dir} has no checkpoint-* folder")
            return last
        return self.resume_from_checkpoint or None
