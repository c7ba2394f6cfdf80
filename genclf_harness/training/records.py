"""What a training run leaves beside its model: a JSONL log as it goes, and a record at the end.

``<output_dir>/log.jsonl``: one line per trainer log (step, loss, learning rate, rewards ...),
appended as training runs, so a crashed or resumed run keeps its history.
``<output_dir>/genclf_train.json``: the recipe, the full config, library versions, the training
metrics and the evaluation figures; written last, atomically (a run without it did not finish).

Under ``torchrun`` / ``accelerate launch`` every rank trains on its share of the batches (DDP);
:func:`save_once` saves the model once and tells the recipes that only rank 0 evaluates and
writes the record, which names the world size.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from genclf_harness.logs import CurrentStderrHandler

RECORD_FILE = "genclf_train.json"
LOG_FILE = "log.jsonl"
FIGURES_FILE = "eval_figures.json"


logger = logging.getLogger(__name__)


def save_once(trainer: Any, tokenizer: Any, output_dir: str | os.PathLike[str]) -> bool:
    """Save the trained model and its tokenizer (one copy, by rank 0), and say whether this
    process goes on to evaluate and write the run record: ``True`` on rank 0 (or alone),
    ``False`` on the other ranks of a distributed run, which have done their share."""
    trainer.save_model(str(output_dir))  # transformers writes on the main process only
    if not trainer.is_world_process_zero():
        logger.info("rank %d of %d: trained on its share; rank 0 saves, evaluates and writes the record",
                    trainer.args.process_index, trainer.args.world_size)
        return False
    tokenizer.save_pretrained(str(output_dir))
    return True


class JsonlLogCallback(TrainerCallback):
    """Appends every trainer log (main process only) to ``<output_dir>/log.jsonl``."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.path = Path(output_dir) / LOG_FILE

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"step": state.global_step, "epoch": state.epoch, **logs}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, default=_jsonable) + "\n")


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write JSON atomically (a temporary sibling renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=2, default=_jsonable)
            out.write("\n")
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("genclf-harness", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def setup_logging(output_dir: str | os.PathLike[str] | None = None) -> None:
    """INFO logs of genclf to stderr (and to ``<output_dir>/train.log``); transformers' own stay at WARNING."""
    root = logging.getLogger("genclf_harness")
    root.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not any(getattr(h, "_genclf", False) for h in root.handlers):
        stream = CurrentStderrHandler()  # a stream bound now may be closed (a capture) by the next record
        stream.setFormatter(formatter)
        stream._genclf = True  # type: ignore[attr-defined]
        root.addHandler(stream)
    if output_dir is not None:
        log_path = Path(output_dir) / "train.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if not any(getattr(h, "baseFilename", None) == str(log_path.resolve()) for h in root.handlers):
            file_handler = logging.FileHandler(log_path, encoding="utf-8")
            file_handler.setFormatter(formatter)
            root.addHandler(file_handler)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
