"""A recipe's command line: ``--resume``/``--overwrite``, the output-folder and checkpoint checks,
and the config it trains with, every error found before any data or model loads.

``genclf-train <recipe>`` calls ``load_recipe_config``: the config file and ``--set`` overrides
(``genclf_harness.training.config``), then the output folder (a finished run is refused unless
``--overwrite`` or ``--resume``), then ``--resume`` having a checkpoint; then the run's log file is
set up and Ctrl-C is told what to say (``interrupted_note``: the last checkpoint and ``--resume``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from genclf_harness.training.config import ConfigError, load_config

C = TypeVar("C")


def add_resume_argument(parser: Any) -> None:
    """``--resume`` and ``--overwrite`` for a recipe's ``genclf-train`` subcommand (every recipe
    saves checkpoints and refuses to write over a finished run)."""
    parser.add_argument("--resume", action="store_true",
                        help="resume from the last checkpoint in train.output_dir (train.resume_from_checkpoint=true)")
    parser.add_argument("--overwrite", action="store_true",
                        help="train into a train.output_dir that holds a finished run, replacing it")


FINISHED_RUN_FILES = ("genclf_train.json", "adapter_config.json", "model.safetensors")
"""What a finished run leaves in its output folder: its training record, a saved adapter or model."""
RUN_LOG_FILES = ("genclf_train.json", "log.jsonl", "train.log")
"""A run's own records, removed by ``--overwrite`` so that two runs' logs never mix."""


def check_output_folder(output_dir: str, *, resume: bool, overwrite: bool) -> str | None:
    """Why training into ``output_dir`` would lose a finished run (None when it would not).

    With ``--overwrite`` the old run's records are removed first; a resumed run keeps them.
    """
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        return f"train.output_dir {output_dir} is a file, not a folder"
    found = [name for name in FINISHED_RUN_FILES if (folder / name).is_file()]
    if not found or resume:
        return None
    if not overwrite:
        return (f"train.output_dir {output_dir} holds a finished run ({', '.join(found)}); pass --overwrite to "
                "replace it, --resume to continue it, or set train.output_dir to a new folder")
    for name in RUN_LOG_FILES:
        (folder / name).unlink(missing_ok=True)
    return None


def load_recipe_config(cls: type[C], args: Any) -> C | None:
    """The recipe's config from ``genclf-train`` arguments (``--config``, ``--set``, ``--resume``).

    Every config error is printed (naming the recipe) before any model loads, and None is returned so
    the caller exits with status 2; on success the recipe's log file in ``train.output_dir`` is set up.
    """
    import sys

    overrides = list(args.set) + (["train.resume_from_checkpoint=true"] if getattr(args, "resume", False) else [])
    try:
        config = load_config(cls, args.config, overrides)
    except ConfigError as err:
        print(f"genclf-train {args.recipe}: {err}", file=sys.stderr)
        return None
    problem = check_output_folder(config.train.output_dir, resume=bool(getattr(args, "resume", False)) or  # type: ignore[attr-defined]
                                  bool(config.train.resume_from_checkpoint),  # type: ignore[attr-defined]
                                  overwrite=bool(getattr(args, "overwrite", False)))
    if problem:
        print(f"genclf-train {args.recipe}: {problem}", file=sys.stderr)
        return None
    if config.train.resume_from_checkpoint is True:  # type: ignore[attr-defined]
        try:  # before the data and the model load: there must be a checkpoint to resume from
            config.train.resume_argument()  # type: ignore[attr-defined]
        except (FileNotFoundError, ValueError) as err:
            print(f"genclf-train {args.recipe}: {err}; train without --resume to start afresh", file=sys.stderr)
            return None
    from genclf_harness.cli.errors import set_interrupt_note
    from genclf_harness.training.records import setup_logging  # imports transformers: only once the config is good

    setup_logging(config.train.output_dir)  # type: ignore[attr-defined]
    set_interrupt_note(lambda: interrupted_note(config.train.output_dir))  # type: ignore[attr-defined]
    return config


def interrupted_note(output_dir: str) -> str:
    """What an interrupted training run kept in ``output_dir`` and how to go on (Ctrl-C's one line)."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    if last is None:
        return (f"no checkpoint was written to {output_dir} yet (one every train.save_steps steps), so there "
                "is nothing to resume; run the command again to start afresh")
    return f"kept {last}; run the same command with --resume to continue from it"
