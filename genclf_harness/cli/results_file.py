"""Results files that are never lost: ``--output_path`` checked first, written atomically, failures loud.

lm-eval 0.4.13's ``EvaluationTracker.save_results_aggregated`` / ``save_results_samples`` catch
every exception, log ``Could not save results`` and let the command exit 0, after the whole
evaluation ran. ``genclf-eval`` checks the output path before any model work
(``check_output_path``) and replaces the two methods (``install_safe_save``) with versions that
write to a temporary file in the same folder renamed into place (a crash leaves no half-written
file) and that, on failure, keep the results in a file of the temporary folder and remember the
error, so that the command ends with one line and a non-zero exit (``raise_save_errors``).
Pushing to the Hugging Face hub stays lm-eval's own code.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from genclf_harness.cli.errors import ResultsSaveError, UsageError

SAVE_ERRORS: list[str] = []
"""What could not be saved in this process, one entry per failed file (``raise_save_errors``)."""


def check_output_path(value: str) -> None:
    """Refuse an ``--output_path`` that lm-eval could not write, before any model work.

    lm-eval writes ``<stem>_<date>.json`` beside a path ending in ``.json``, else a folder
    ``<path>/<model>/`` with ``results_<date>.json``: an existing file there, or a parent that is
    a file or cannot be written, would lose the results after the evaluation.
    """
    path = Path(value).expanduser()
    folder = path.parent if path.suffix == ".json" else path
    if path.suffix != ".json" and path.exists() and not path.is_dir():
        raise UsageError(f"--output_path {value}: is an existing file; give a folder (lm-eval writes "
                         "<folder>/<model>/results_<date>.json there) or a name ending in .json")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--output_path {value}: {existing} is a file, so the folder {folder} cannot be made")
    reason = _not_writable(existing)
    if reason:
        raise UsageError(f"--output_path {value}: cannot write in {existing} ({reason})")


def _not_writable(folder: Path) -> str | None:
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:  # os.access does not see read-only file systems, nor what root may not do
        handle, probe = tempfile.mkstemp(prefix=".genclf-write-check-", dir=folder)
    except OSError as err:
        return err.strerror or type(err).__name__
    os.close(handle)
    os.unlink(probe)
    return None


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary sibling renamed into place; nothing left on failure."""
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def _keep_elsewhere(name: str, text: str) -> str | None:
    """Write what could not be saved into the temporary folder; its path, or None if that fails too."""
    try:
        handle, kept = tempfile.mkstemp(prefix="genclf-unsaved-", suffix=f"-{name}")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        return kept
    except OSError:
        return None


def _record_failure(what: str, target: Path | str, err: BaseException, text: str | None, name: str) -> None:
    reason = f"{type(err).__name__}: {err}" if not isinstance(err, OSError) or not err.strerror else err.strerror
    kept = _keep_elsewhere(name, text) if text is not None else None
    SAVE_ERRORS.append(f"could not save the {what} to {target} ({reason})"
                       + (f"; they are kept in {kept}" if kept else ""))


def install_safe_save() -> None:
    """Replace EvaluationTracker's two save methods (once) by the loud, atomic ones below."""
    from lm_eval.loggers.evaluation_tracker import EvaluationTracker

    if getattr(EvaluationTracker.save_results_aggregated, "_genclf_safe", False):
        return
    stock_aggregated = EvaluationTracker.save_results_aggregated
    stock_samples = EvaluationTracker.save_results_samples

    def save_results_aggregated(self: Any, results: dict, samples: dict | None = None) -> None:
        if not self.output_path or (self.api and self.push_results_to_hub):
            return stock_aggregated(self, results, samples)
        _save_aggregated(self, results, samples)

    def save_results_samples(self: Any, task_name: str, samples: dict) -> None:
        if not self.output_path or (self.api and self.push_samples_to_hub):
            return stock_samples(self, task_name, samples)
        _save_samples(self, task_name, samples)

    save_results_aggregated._genclf_safe = True  # type: ignore[attr-defined]
    EvaluationTracker.save_results_aggregated = save_results_aggregated  # type: ignore[method-assign]
    EvaluationTracker.save_results_samples = save_results_samples  # type: ignore[method-assign]


def _save_aggregated(tracker: Any, results: dict, samples: dict | None) -> None:
    """lm-eval's ``save_results_aggregated`` without the hub, atomic and loud."""
    from lm_eval.utils import handle_non_serializable, hash_string

    tracker.general_config_tracker.log_end_time()
    task_hashes = {}
    for task_name, task_samples in (samples or {}).items():
        task_hashes[task_name] = hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"]
                                                     for s in task_samples))
    results.update({"task_hashes": task_hashes})
    results.update(asdict(tracker.general_config_tracker))
    dumped = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
    path = Path(tracker.output_path)
    tracker.date_id = datetime.now().isoformat().replace(":", "-")
    if path.suffix == ".json":
        target = path.with_name(f"{path.stem}_{tracker.date_id}.json")
    else:
        target = path / str(tracker.general_config_tracker.model_name_sanitized) / f"results_{tracker.date_id}.json"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, dumped)
    except Exception as err:  # noqa: BLE001 - remembered and reported as the command's exit
        _record_failure("results", target, err, dumped, target.name)
        return
    import logging

    logging.getLogger("lm_eval.loggers.evaluation_tracker").info("Saved the results to %s", target)


def _save_samples(tracker: Any, task_name: str, samples: Any) -> None:
    """lm-eval's ``save_results_samples`` without the hub: one JSONL file written atomically."""
    from lm_eval.utils import handle_non_serializable, sanitize_list

    path = Path(tracker.output_path)
    path = path.parent if path.suffix == ".json" else path / str(tracker.general_config_tracker.model_name_sanitized)
    target = path / f"samples_{task_name}_{tracker.date_id}.jsonl"
    lines = []
    for sample in samples:
        arguments = {f"gen_args_{i}": {f"arg_{j}": tmp for j, tmp in enumerate(arg)}
                     for i, arg in enumerate(sample["arguments"])}
        sample["resps"] = sanitize_list(sample["resps"])
        sample["filtered_resps"] = sanitize_list(sample["filtered_resps"])
        sample["arguments"] = arguments
        sample["target"] = str(sample["target"])
        lines.append(json.dumps(sample, default=handle_non_serializable, ensure_ascii=False) + "\n")
    text = "".join(lines)
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_atomic(target, text)
    except Exception as err:  # noqa: BLE001 - remembered and reported as the command's exit
        _record_failure(f"samples of {task_name}", target, err, text, target.name)


def raise_save_errors() -> None:
    """Raise ``ResultsSaveError`` naming every file this process could not save (then forget them)."""
    if SAVE_ERRORS:
        message = "; ".join(SAVE_ERRORS)
        SAVE_ERRORS.clear()
        raise ResultsSaveError(message)
