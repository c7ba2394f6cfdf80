"""``--model_args`` checked against what the model accepts, before the model loads.

lm-eval hands ``--model_args`` to the model class, which passes what it does not name on to the
loader: HFLM to ``from_pretrained`` (then to the model config, then to the model's ``__init__``),
vLLM models to vLLM's ``EngineArgs``. A misspelt key fails only there, after lm-eval has set up,
as ``LlamaForCausalLM.__init__() got an unexpected keyword argument``. Here each key is looked up
in what the chain accepts:

- the ``__init__`` parameters of the model class and of its bases, as long as each passes its
  ``**kwargs`` on;
- HFLM models: the keyword arguments ``from_pretrained`` reads (its signature and the
  ``kwargs.pop("...")`` calls in its source, so a new transformers release is followed) and the
  attributes of the model's config (read from the local folder or the hub cache, not downloaded);
  when the config cannot be read without a download the keys are not checked;
- vLLM models: the fields of ``EngineArgs`` (when vLLM is installed).

Other models (a user's own) are not checked: we cannot know what they accept.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from genclf_harness.backends.model_source import cached_config, pretrained_problem
from genclf_harness.cli.errors import UsageError, did_you_mean, format_choices

DTYPES = ("auto", "float16", "bfloat16", "float32", "float64", "half", "float", "double")
_RETIRED = re.compile(r"""for name in \[([^\]]*)\]:\s*\n\s*_?\s*=?\s*kwargs\.pop\(name""")
_POPPED = re.compile(r"""kwargs\.(?:pop|get)\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")


def parse_model_args(model_args: Any) -> dict[str, Any]:
    """``--model_args`` as lm-eval parses it: a dict, a JSON object, or ``k=v,k=v``."""
    if isinstance(model_args, dict):
        return dict(model_args)
    text = str(model_args or "").strip()
    if text.startswith("{"):
        try:
            return dict(json.loads(text))
        except (json.JSONDecodeError, TypeError, ValueError):
            raise UsageError(f"--model_args {text!r}: not a valid JSON object") from None
    pairs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--model_args: {item!r} is not key=value")
        pairs[key.strip()] = value.strip()
    return pairs


def check_model_args(model: str | None, model_args: Any) -> None:
    """Every check of ``--model_args`` for ``--model model``; the first failure raises ``UsageError``."""
    if model:
        check_model_name(model)
    values = parse_model_args(model_args)
    dtype = values.get("dtype")
    if dtype is not None and str(dtype) not in DTYPES and not str(dtype).startswith("torch."):
        raise UsageError(f"--model_args dtype={dtype}: not a dtype; use one of {', '.join(DTYPES)}")
    pretrained = values.get("pretrained")
    if pretrained is not None and str(pretrained) != "default":
        check_pretrained(str(pretrained))
    if model and values:
        _check_keys(model, values)
        _check_flags(model, values)


def check_model_name(model: str) -> None:
    """``--model`` names a registered lm-eval model (lm-eval's own message lists all 40 in a traceback)."""
    try:
        from lm_eval.api.registry import model_registry

        names = sorted(model_registry)
    except Exception:  # noqa: BLE001 - another lm-eval: its get_model says so itself
        return
    if names and model not in names:
        raise UsageError(f"--model {model}: no such lm-eval model{did_you_mean(model, names)} "
                         f"(models: {format_choices(names, 60)})")


def check_pretrained(pretrained: str) -> None:
    """A ``pretrained`` that is neither a model folder nor a hub id this run can load."""
    problem = pretrained_problem(pretrained)
    if problem:
        raise UsageError(f"--model_args pretrained={pretrained}: {problem}")


def unknown_keys(model: str, values: dict[str, Any]) -> tuple[list[str], set[str]] | None:
    """The ``--model_args`` keys ``--model model`` would refuse, and the keys its class names
    itself; None when that cannot be known (a model of the user's own, a config not at hand)."""
    try:
        from lm_eval.api.registry import get_model

        cls = get_model(model)
    except Exception:  # noqa: BLE001 - an unknown model: lm-eval says so itself
        return None
    if not isinstance(cls, type):
        return None
    from lm_eval.models.huggingface import HFLM

    own, open_ended = _init_parameters(cls, stop_at=HFLM)
    rest = [key for key in values if key not in own]
    if not open_ended or not rest:
        return rest, own
    if issubclass(cls, HFLM):  # HFLM passes what it does not name to _create_model, then from_pretrained
        rest = [key for key in rest if key not in _popped([HFLM._create_model])]
        left = _left_by_from_pretrained(values.get("pretrained"), {key: values[key] for key in rest})
    elif "vllm" in model.lower() or "vllm" in cls.__module__.lower():
        engine = _vllm_engine_keys()
        left = None if engine is None else [key for key in rest if key not in engine]
    else:
        left = None
    return None if left is None else (left, own)


def _check_keys(model: str, values: dict[str, Any]) -> None:
    if str(values.get("pretrained")) == "default":
        from genclf_harness.backends.default_model import ensure_default_model

        values = {**values, "pretrained": str(ensure_default_model())}
    found = unknown_keys(model, values)
    if not found or not found[0]:
        return
    unknown, own = found
    key = unknown[0]
    known = sorted(own | _suggestions(model, values.get("pretrained")))
    raise UsageError(f"--model_args {key}={values[key]}: --model {model} takes no {key!r}, nor does the model "
                     f"loader or its config{did_you_mean(key, known)} (its own keys: "
                     f"{format_choices(sorted(own), 20)})")


_SWITCHES = ("trust_remote_code",)
"""Switches checked whatever the model: a string such as ``maybe`` would be truthy and turn them on."""


def _check_flags(model: str, values: dict[str, Any]) -> None:
    """Every true/false parameter of the model class (and ``trust_remote_code``) given as true/false."""
    try:
        from lm_eval.api.registry import get_model

        cls = get_model(model)
    except Exception:  # noqa: BLE001 - unknown models are named by check_model_name
        return
    flags = set(_SWITCHES)
    for klass in getattr(cls, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        flags.update(p.name for p in inspect.signature(init).parameters.values()
                     if isinstance(p.default, bool) or str(p.annotation).replace(" ", "") in ("bool", "bool|None"))
    for key in sorted(flags & set(values)):
        value = _lm_eval_value(values[key])
        if not isinstance(value, bool) and value not in (0, 1, None):
            raise UsageError(f"--model_args {key}={values[key]}: must be true or false")


def _suggestions(model: str, pretrained: Any) -> set[str]:
    """Known loader keys to suggest from: vLLM's engine arguments, or from_pretrained's and the config's."""
    if "vllm" in model.lower():
        return _vllm_engine_keys() or set()
    from transformers import PreTrainedModel

    keys = _popped([PreTrainedModel.from_pretrained])
    config = Path(str(pretrained)).expanduser() / "config.json"
    try:
        keys |= set(json.loads(config.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    return keys


def _init_parameters(cls: type, stop_at: type | None = None) -> tuple[set[str], bool]:
    """Named ``__init__`` parameters of ``cls`` and of the bases its ``**kwargs`` may reach (up to
    ``stop_at``, which passes them elsewhere); and whether ``cls`` takes ``**kwargs`` at all (passed
    on to a base or to a loader: which one is for the caller to know)."""
    keys: set[str] = set()
    open_ended: bool | None = None
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = inspect.signature(init).parameters.values()
        keys.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self")
        takes_more = any(p.kind is p.VAR_KEYWORD for p in params)
        open_ended = takes_more if open_ended is None else open_ended
        if not takes_more or klass is stop_at:
            break
    return keys, bool(open_ended)


def _popped(functions: Iterable[Any]) -> set[str]:
    keys: set[str] = set()
    for function in functions:
        try:
            keys.update(p for p in inspect.signature(function).parameters if p not in ("self", "cls", "kwargs"))
            keys.update(_POPPED.findall(inspect.getsource(function)))
        except (OSError, TypeError, ValueError):
            continue
    return keys


def _left_by_from_pretrained(pretrained: Any, extra: dict[str, Any]) -> list[str] | None:
    """The keys of ``extra`` that neither ``from_pretrained`` reads nor the model's config takes, so
    the model's ``__init__`` would get them and fail; None when the config is not at hand."""
    if not extra:
        return []
    folder = Path(str(pretrained)).expanduser() if pretrained is not None else None
    if folder is None or not (folder / "config.json").is_file():
        cached = cached_config(str(pretrained)) if pretrained is not None else None
        if cached is None:
            return None  # not read without a download: leave it to the loader
        folder = Path(cached).parent
    from transformers import AutoConfig, PreTrainedModel

    loader = PreTrainedModel.from_pretrained
    read = _popped([loader])
    try:
        retired = _RETIRED.search(inspect.getsource(loader))
    except (OSError, TypeError):
        retired = None
    if retired is not None:  # "Not used anymore -- remove them from the kwargs" (popped in a loop)
        read |= set(re.findall(r"""["']([A-Za-z_][A-Za-z0-9_]*)["']""", retired.group(1)))
    rest = {key: _lm_eval_value(value) for key, value in extra.items() if key not in read}
    if not rest:
        return []
    try:
        _, unused = AutoConfig.from_pretrained(str(folder), return_unused_kwargs=True, trust_remote_code=False, **rest)
    except Exception:  # noqa: BLE001 - a config we cannot read offline, or values it refuses: the loader says so
        return None
    return [key for key in extra if key in unused]


def _lm_eval_value(value: Any) -> Any:
    """A ``k=v`` value as lm-eval passes it (``True``, numbers ... converted)."""
    if not isinstance(value, str):
        return value
    try:
        from lm_eval.utils import handle_arg_string

        return handle_arg_string(value)
    except Exception:  # noqa: BLE001 - an older lm-eval: the text as it is
        return value


def _vllm_engine_keys() -> set[str] | None:
    try:
        from vllm.engine.arg_utils import EngineArgs
    except Exception:  # noqa: BLE001 - vLLM missing or broken: its own loader will say so
        return None
    return {f.name for f in dataclasses.fields(EngineArgs)}
