"""``genclf-eval``'s checks of lm-eval's parsed arguments, run before any model or data work.

lm-eval 0.4.13 accepts values that fail only after the model has loaded (``--limit 0``,
``--batch_size 0``, a ``dtype`` torch does not have, a model folder that is not one), ignores a
misspelt ``--metadata`` key, and runs a whole evaluation whose results it then cannot save. Each
check here raises :class:`UsageError` with one line naming the value and what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from genclf_harness.cli.errors import UsageError, did_you_mean
from genclf_harness.cli.results_file import check_output_path

GENCLF_METADATA_KEYS: dict[str, str] = {
    "data_dir": "the folder of local data sets (instead of GENCLF_DATA_DIR)",
    "inductive_docs": "training documents scored for the *_ind and label-shift metrics (default 100)",
    "threshold": "ProcessBench: the P(correct) below which a step counts as the first error",
    "candidates": "best-of-N tasks: the JSONL file of sampled candidates",
}
"""Every task-metadata key a genclf task reads (lm-eval also passes the model's ``pretrained``)."""

DTYPES = ("auto", "float16", "bfloat16", "float32", "float64", "half", "float", "double")


def check_arguments(args: Any, tasks: list[str]) -> None:
    """All checks that need nothing but the parsed arguments; the first failure raises."""
    if getattr(args, "output_path", None):
        check_output_path(str(args.output_path))
    _check_limit(getattr(args, "limit", None))
    _check_batch_size(getattr(args, "batch_size", None))
    shots = getattr(args, "num_fewshot", None)
    if shots is not None and int(shots) < 0:
        raise UsageError(f"--num_fewshot {shots}: must be 0 or more")
    _check_metadata(getattr(args, "metadata", None), tasks)
    _check_model_args(getattr(args, "model_args", None))


def _check_limit(limit: Any) -> None:
    if limit is None:
        return
    if float(limit) <= 0:
        raise UsageError(f"--limit {limit}: must be positive (a number of documents per task, or a fraction "
                         "below 1 of each task's documents)")


def _check_batch_size(batch_size: Any) -> None:
    if batch_size is None:
        return
    text = str(batch_size).strip()
    head = text.split(":", 1)[0]
    if head == "auto":
        return
    try:
        value = int(head)
    except ValueError:
        raise UsageError(f"--batch_size {text}: must be a whole number or 'auto' (optionally 'auto:N')") from None
    if value < 1:
        raise UsageError(f"--batch_size {text}: must be 1 or more, or 'auto'")


def _check_metadata(metadata: Any, tasks: list[str]) -> None:
    if not isinstance(metadata, dict) or not tasks or not all(t.startswith("genclf_") for t in tasks):
        return  # other tasks may read keys of their own (e.g. lm-eval's max_seq_lengths)
    known = sorted(GENCLF_METADATA_KEYS)
    for key in metadata:
        if key not in GENCLF_METADATA_KEYS and key != "pretrained":
            raise UsageError(f"--metadata key {key!r} is read by no genclf task{did_you_mean(key, known)} "
                             f"(keys: {', '.join(known)})")
    if "inductive_docs" in metadata:
        value = metadata["inductive_docs"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"--metadata inductive_docs {value!r}: must be a whole number, 0 or more")
    if "data_dir" in metadata and not Path(str(metadata["data_dir"])).expanduser().is_dir():
        raise UsageError(f"--metadata data_dir {metadata['data_dir']!r}: no such folder")


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


def _check_model_args(model_args: Any) -> None:
    values = parse_model_args(model_args)
    dtype = values.get("dtype")
    if dtype is not None and str(dtype) not in DTYPES and not str(dtype).startswith("torch."):
        raise UsageError(f"--model_args dtype={dtype}: not a dtype; use one of {', '.join(DTYPES)}")
    pretrained = values.get("pretrained")
    if pretrained is None or str(pretrained) == "default":
        return
    _check_pretrained(str(pretrained))


def _check_pretrained(pretrained: str) -> None:
    path = Path(pretrained).expanduser()
    looks_local = path.exists() or pretrained.startswith((".", "/", "~")) or pretrained.count("/") > 1
    if path.is_file():
        raise UsageError(f"--model_args pretrained={pretrained}: is a file; give a model folder (with config.json) "
                         "or a hub id")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"--model_args pretrained={pretrained}: the folder has no config.json, so it is not a "
                             "transformers model folder")
        return
    if looks_local:
        raise UsageError(f"--model_args pretrained={pretrained}: no such folder")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(pretrained, "config.json")
        except Exception:  # noqa: BLE001 - a malformed id: let the loader say so
            return
        if not isinstance(cached, str):
            raise UsageError(f"--model_args pretrained={pretrained}: not in the local hub cache, and HF_HUB_OFFLINE=1 "
                             "forbids downloading it (unset it, or give a local model folder)")
