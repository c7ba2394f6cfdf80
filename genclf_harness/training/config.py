"""Training configs: ``@dataclass`` sections loaded from YAML and checked before any model loads.

A recipe config is a dataclass whose fields are sections (``model``, ``data``, ``train``, ...), each
a dataclass of plain values with a help string per field (TRL style)::

    config = load_config(SFTRecipeConfig, "configs/sft_sst2_cpu.yaml", ["train.max_steps=20"])

Every key is checked against its section (unknown keys get a "did you mean"), every value against
its field's type and its section's own rules (`Section.check`); the first problem raises
`ConfigError` naming the file and the dotted key. Overrides (``--set section.key=value``) are
parsed as YAML scalars, so ``train.learning_rate=1e-4`` and ``data.max_train_examples=null`` work.
Floats written as ``2e-4`` (YAML 1.1 reads them as strings) are accepted for float fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A training config is malformed; the message names the file and the key at fault."""


@dataclass
class Section:
    """Base of config sections: `check` adds cross-field rules after the types are checked."""

    def check(self) -> None:
        """Raise ``ValueError("<field>: <problem>")`` for a bad value (the loader adds file and section)."""


# -- shared sections ---------------------------------------------------------------------------


@dataclass
class ModelConfig(Section):
    """Which model to train and how: LoRA (PEFT) or full fine-tuning."""

    pretrained: str = field(
        default="default",
        metadata={"help": "A hub id or a local folder; 'default' is the embedded SmolLM2-135M-Instruct."},
    )
    revision: str | None = field(default=None, metadata={"help": "The hub revision of `pretrained`."})
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = field(
        default="float32",
        metadata={"help": "The dtype the weights are loaded in (LoRA adapters train in float32 either way). "
                          "Mixed precision is `train.bf16`."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code shipped with a hub checkpoint (off unless you trust it)."}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "transformers' attention implementation (sdpa, eager, flash_attention_2)."}
    )
    peft: Literal["lora", "none"] = field(
        default="lora", metadata={"help": "'lora': train a LoRA adapter; 'none': full fine-tuning."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (the scale is alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "Module names that get LoRA adapters ('all-linear' as the one entry: every linear layer)."},
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "Start from a previous run's output folder: a LoRA adapter (loaded on `pretrained` and "
                          "trained further) or a full model (used instead of `pretrained`); how GRPO starts from "
                          "the SFT output."},
    )

    def check(self) -> None:
        if not self.pretrained:
            raise ValueError("pretrained: must name a model ('default' for the embedded one)")
        from genclf_harness.backends.model_source import pretrained_problem

        problem = pretrained_problem(self.pretrained)
        if problem:
            raise ValueError(f"pretrained: {self.pretrained!r}: {problem}")
        if self.lora_r < 1:
            raise ValueError(f"lora_r: must be at least 1, not {self.lora_r}")
        if self.lora_alpha < 1:
            raise ValueError(f"lora_alpha: must be at least 1, not {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout: must be in [0, 1), not {self.lora_dropout}")
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules: name at least one module")
        if self.init_from is not None and not Path(self.init_from).is_dir():
            raise ValueError(f"init_from: {self.init_from!r} is not a folder (run the SFT stage first?)")


@dataclass
class DataConfig(Section):
    """Which examples: a data set of `genclf_harness.data`, rendered by a GenCLS++ prompt strategy."""

    _generative: ClassVar[bool] = True
    """Whether the recipe reads generated answers (the strategy must then be parseable)."""

    dataset: str = field(default="sst2", metadata={"help": "A data set name: a built-in one (genclf_harness.data.list_specs()) or a "
                                                   "local folder with meta.json under GENCLF_DATA_DIR."})
    strategy: str = field(
        default="zero",
        metadata={"help": "A prompt strategy name (genclf_harness.prompts.PromptStrategy), e.g. zero, def, bal3_def. "
                          "Demonstrations are drawn from the training split."},
    )
    chat_template: bool | Literal["auto"] = field(
        default="auto",
        metadata={"help": "Render examples as chat messages with the model's chat template (conversational "
                          "prompt-completion; the answer is the assistant turn). 'auto': when the tokenizer has one. "
                          "false: plain text, exactly the genclf_<dataset> task's prompt, answer ' <label>'."},
    )
    train_split: str = field(default="train", metadata={"help": "The split to train on."})
    eval_split: str | None = field(
        default="validation",
        metadata={"help": "The split evaluated at the end (null: none). The same name as `train_split` holds out "
                          "the last `max_eval_examples` of the shuffled training rows instead."},
    )
    max_train_examples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows after a seeded shuffle (null: all)."}
    )
    skip_train_examples: int = field(
        default=0,
        metadata={"help": "Skip the first N shuffled training rows (GRPO uses rows SFT did not see)."},
    )
    max_eval_examples: int | None = field(
        default=200, metadata={"help": "Evaluate the first N rows of the evaluation split (null: all)."}
    )
    shuffle_seed: int = field(default=1234, metadata={"help": "Seed of the training-row shuffle."})

    def check(self) -> None:
        from genclf_harness.data import DataError, get_spec
        from genclf_harness.prompts import PromptStrategy

        try:
            spec = get_spec(self.dataset)
        except DataError as err:
            raise ValueError(f"dataset: {err}") from None
        try:
            # Training ends with a generative evaluation and GRPO's reward reads answers: both parse them.
            PromptStrategy.parse(self.strategy).check(spec, generative=self._generative)
        except ValueError as err:
            raise ValueError(f"strategy: {err}") from None
        for name in ("train_split", "eval_split"):
            split = getattr(self, name)
            if split is not None and spec.splits and split not in spec.splits:
                raise ValueError(f"{name}: data set {spec.name!r} has no split {split!r}; "
                                 f"its splits are {', '.join(spec.splits)}")
        for name in ("max_train_examples", "max_eval_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be at least 1 or null, not {value}")
        if self.skip_train_examples < 0:
            raise ValueError(f"skip_train_examples: must be non-negative, not {self.skip_train_examples}")
        if self.eval_split == self.train_split and self.max_eval_examples is None:
            raise ValueError("max_eval_examples: must be set when eval_split is the training split "
                             "(that many shuffled training rows are held out)")


@dataclass
class EvalConfig(Section):
    """The evaluation at the end of training (validation split): scored and generative decoding."""

    scored: bool = field(
        default=True,
        metadata={"help": "Score every label after the prompt with the genclf scorer (perplexity decoding: "
                          "the highest mean log-prob per label token)."},
    )
    generate: bool = field(
        default=True, metadata={"help": "Greedy generation read by the answer parser (unparseable = wrong)."}
    )
    max_new_tokens: int = field(default=8, metadata={"help": "Generation length limit."})
    batch_size: int = field(default=32, metadata={"help": "Documents per generation batch."})
    autocast_bf16: bool = field(
        default=False, metadata={"help": "Evaluate under bfloat16 autocast (faster on CPUs with bf16, less exact)."}
    )

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be at least 1, not {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, not {self.batch_size}")


# -- loading -----------------------------------------------------------------------------------


def load_config(cls: type[C], path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> C:
    """Read ``path`` (YAML; None: defaults only), apply ``key=value`` overrides, check everything."""
    where = str(path) if path is not None else "<defaults>"
    raw: Any = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{where}: no such config file")
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{where}: not valid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: the top level must be a mapping of sections, not {type(raw).__name__}")
    for override in overrides:
        _apply_override(raw, override, where)
    return build_config(cls, raw, where)


def build_config(cls: type[C], raw: Mapping[str, Any], where: str = "<config>") -> C:
    """``cls`` (a dataclass of sections) from a nested mapping, every key and value checked."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    _reject_unknown(raw, known, where, "")
    sections: dict[str, Any] = {}
    for name, spec in known.items():
        section_cls = hints[name]
        value = raw.get(name, {})
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: section {name!r} must be a mapping of keys, not {type(value).__name__}")
        sections[name] = _build_section(section_cls, value, where, name)
    return cls(**sections)


def _build_section(cls: type, raw: Mapping[str, Any], where: str, section: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    _reject_unknown(raw, known, where, f"{section}.")
    values = {}
    for key, value in raw.items():
        try:
            values[key] = coerce(value, hints[key])
        except ValueError as err:
            raise ConfigError(f"{where}: {section}.{key}: {err}") from None
    instance = cls(**values)
    try:
        instance.check()
    except ValueError as err:
        raise ConfigError(f"{where}: {section}.{err}") from None
    return instance


def _reject_unknown(raw: Mapping[str, Any], known: Mapping[str, Any], where: str, prefix: str) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" Did you mean {prefix}{close[0]!r}?" if close else ""
            scope = f"section {prefix[:-1]!r}" if prefix else "a config"
            raise ConfigError(f"{where}: unknown key {prefix}{key!r} in {scope}.{hint} "
                              f"Known: {', '.join(known)}.")


def coerce(value: Any, annotation: Any) -> Any:
    """``value`` checked (and minimally converted) against a type annotation; ValueError if it does not fit."""
    converted = _convert(value, annotation)
    if converted is _MISFIT:
        hint = ""
        if (value is None or isinstance(value, (bool, int, float))) and _convert("text", annotation) == "text":
            hint = (f" (YAML read the value as {type(value).__name__}; quote a string that YAML reads otherwise, "
                    "as in --set 'data.dataset=\"true\"' or dataset: \"true\" in a file)")
        raise ValueError(f"expected {describe(annotation)}, got {value!r}{hint}")
    return converted


def describe(annotation: Any) -> str:
    """``bool | Literal["auto"]`` -> ``"true or false, or 'auto'"``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return ", or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args) if len(args) > 1 else repr(args[0])
    if origin is list:
        plural = {str: "strings", int: "integers", float: "numbers"}
        return f"a list of {plural.get(args[0], describe(args[0]))}" if args else "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             type(None): "null"}
    return names.get(origin or annotation, getattr(annotation, "__name__", str(annotation)))


_MISFIT = object()


def _convert(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            converted = _convert(value, option)
            if converted is not _MISFIT:
                return converted
        return _MISFIT
    if annotation is type(None):
        return None if value is None else _MISFIT
    if origin is Literal:
        return value if any(value == a and type(value) is type(a) for a in args) else _MISFIT
    if annotation is Any:
        return value
    if annotation is bool:
        return value if isinstance(value, bool) else _MISFIT
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISFIT
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return _MISFIT
        return _MISFIT
    if annotation is str:
        return value if isinstance(value, str) else _MISFIT
    if origin is list:
        if isinstance(value, str) or not isinstance(value, Sequence):
            return _MISFIT
        items = [_convert(item, args[0]) if args else item for item in value]
        return _MISFIT if any(item is _MISFIT for item in items) else items
    if origin is dict or annotation is dict:
        return dict(value) if isinstance(value, Mapping) else _MISFIT
    raise TypeError(f"unsupported config annotation {annotation!r}")  # a bug in a section, not in the file


def _apply_override(raw: dict[str, Any], override: str, where: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: --set {override!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data (for the run record written beside the outputs)."""
    return dataclasses.asdict(config)


def field_help(cls: type) -> dict[str, str]:
    """Each field's help string (for docs and ``--help``)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
