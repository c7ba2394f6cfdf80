"""Loading the model to train: the base (``default`` = the embedded model), a previous run, LoRA.

A run's output folder is one of two things, and `load_for_training` reads both:
- a LoRA adapter (``adapter_config.json``): loaded on its base model and kept trainable, so GRPO
  continues the SFT adapter rather than stacking a second one, and the result is again one
  adapter that lm-eval loads with ``peft=<folder>``;
- a full model (``config.json``): used as the base instead of ``pretrained``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from genclf_harness.training.config import ModelConfig

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def resolve_base(config: ModelConfig) -> str:
    """The base model's path or hub id (``default`` -> the converted embedded model's folder)."""
    from genclf_harness.backends.default_model import resolve_pretrained

    if config.init_from and not is_adapter_folder(config.init_from):
        return config.init_from
    return str(resolve_pretrained(config.pretrained))


def torch_dtype(name: str) -> torch.dtype | str:
    return name if name == "auto" else getattr(torch, name)


def load_tokenizer(config: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    source = config.init_from if config.init_from and (Path(config.init_from) / "tokenizer_config.json").is_file() \
        else resolve_base(config)
    tokenizer = AutoTokenizer.from_pretrained(source, revision=config.revision,
                                              trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(config: ModelConfig) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch_dtype(config.dtype), "trust_remote_code": config.trust_remote_code}
    if config.revision:
        kwargs["revision"] = config.revision
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    return AutoModelForCausalLM.from_pretrained(resolve_base(config), **kwargs)


def load_for_training(config: ModelConfig) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config for the trainer or None).

    With ``init_from`` an adapter, the model comes back as a trainable ``PeftModel`` and no new
    ``peft_config`` is made; otherwise ``peft: lora`` returns a fresh `LoraConfig` for TRL to apply.
    """
    tokenizer = load_tokenizer(config)
    model = load_base_model(config)
    if config.init_from and is_adapter_folder(config.init_from):
        from peft import PeftModel

        _check_adapter_base(config)
        logger.info("Continuing the LoRA adapter of %s", config.init_from)
        model = PeftModel.from_pretrained(model, config.init_from, is_trainable=True)
        return model, tokenizer, None
    return model, tokenizer, lora_config(config) if config.peft == "lora" else None


def lora_config(config: ModelConfig) -> Any:
    from peft import LoraConfig

    targets: Any = config.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _check_adapter_base(config: ModelConfig) -> None:
    """Warn when an adapter was trained on another base than the one configured now."""
    try:
        recorded = json.loads((Path(config.init_from) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        return
    base = resolve_base(config)
    if recorded and Path(str(recorded)).resolve() != Path(base).resolve() and recorded != base:
        logger.warning("The adapter in %s was trained on %s, and is now loaded on %s", config.init_from, recorded, base)


def trainable_summary(model: Any) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%)"


def device_kind() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
