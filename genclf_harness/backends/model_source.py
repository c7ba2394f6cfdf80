"""Whether a ``pretrained`` value names a model this run can load, found before loading it.

A model folder must hold a ``config.json``; a hub id must be in the local cache when
``HF_HUB_OFFLINE=1``. ``genclf-eval`` (``--model_args pretrained=...``) and ``genclf-train``
(``model.pretrained``) ask :func:`pretrained_problem` and put its answer in their one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path

from genclf_harness.backends.default_model import is_default


def pretrained_problem(pretrained: str) -> str | None:
    """What is wrong with ``pretrained`` (a phrase to follow its name), or None when it may load."""
    if is_default(pretrained):
        return None
    from genclf_harness.backends.mlm import MINILM_ALIAS, minilm_dir

    if pretrained == MINILM_ALIAS:  # the packaged MiniLM encoder (genclf-mlm, genclf-nli, genclf-train atp)
        try:
            minilm_dir()
        except ValueError as err:
            return str(err)
        return None
    path = Path(pretrained).expanduser()
    looks_local = path.exists() or pretrained.startswith((".", "/", "~")) or pretrained.count("/") > 1
    if path.is_file():
        return "is a file; give a model folder (with config.json) or a hub id"
    if path.is_dir():
        if not (path / "config.json").is_file():
            return "the folder has no config.json, so it is not a transformers model folder"
        return None
    if looks_local:
        return "no such folder"
    alias = _near_alias(pretrained)
    if alias is not None:
        return ("is not a model folder, and genclf-harness knows two aliases: 'default' (the embedded "
                f"SmolLM2-135M-Instruct) and 'minilm' (the packaged MiniLM-L6 encoder); did you mean pretrained={alias}?")
    if hub_offline() and cached_config(pretrained) is None:
        return ("not in the local hub cache, and HF_HUB_OFFLINE=1 forbids downloading it (unset it, or give a "
                "local model folder)")
    return None


def _near_alias(pretrained: str) -> str | None:
    """The alias ``pretrained`` looks like a misspelling of (``Default``, ``defualt``, ``MiniLM``)."""
    import difflib

    from genclf_harness.backends.default_model import DEFAULT_MODEL_ALIAS
    from genclf_harness.backends.mlm import MINILM_ALIAS

    aliases = [DEFAULT_MODEL_ALIAS, MINILM_ALIAS]
    if "/" in pretrained or pretrained in aliases:
        return None
    close = difflib.get_close_matches(pretrained.lower(), aliases, n=1, cutoff=0.75)
    return close[0] if close else None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cached_config(repo_id: str) -> str | None:
    """The cached ``config.json`` of a hub id, or None (not cached, or not a valid id)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id: the loader will say so
        return None
    return cached if isinstance(cached, str) else None
