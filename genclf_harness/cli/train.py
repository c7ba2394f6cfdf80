"""``genclf-train``: training of generative classifiers and verifiers on TRL.

``genclf-train <recipe> --config FILE.yaml [--set key=value ...]``. Each recipe lives in its own
module (``genclf_harness.training.<module>``) exposing ``add_arguments(parser)`` (optional) and
``run(args) -> int``; the module is imported only when its recipe is asked for, so the CLI starts
fast and a missing optional dependency only affects its own recipe.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from genclf_harness.cli.errors import console_main

# recipe -> (module, one-line help)
RECIPES: dict[str, tuple[str, str]] = {
    "sft": ("genclf_harness.training.sft", "supervised fine-tuning of a generative classifier (GenCLS++ warm-up)"),
    "grpo": ("genclf_harness.training.grpo", "GRPO with a rule-based label reward (GenCLS++ RL stage)"),
    "genrm": ("genclf_harness.training.genrm", "SFT of a generative verifier (GenRM) on Yes/No verification"),
    "stepwiser": ("genclf_harness.training.stepwiser", "GRPO of a stepwise judge on Monte-Carlo step labels"),
    "channel": ("genclf_harness.training.channel",
                "a classifier in the channel direction: the input given each label (likelihood, unlikelihood, ranking)"),
    "atp": ("genclf_harness.training.atp",
            "Answer Token Prediction: a masked LM trained to answer at its [MASK] slot (It's All in The [MASK])"),
    "nli": ("genclf_harness.training.nli", "an NLI cross-encoder fine-tuned on a data set's entailment pairs (Laurer et al.)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genclf-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="recipe", metavar="RECIPE", required=True)
    for name, (module, help_text) in RECIPES.items():
        recipe = sub.add_parser(name, help=help_text, description=help_text)
        recipe.add_argument("--config", required=True, help="a YAML config (see configs/)")
        recipe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override one config field (repeatable)")
        recipe.set_defaults(_module=module)
        try:
            add_arguments = getattr(importlib.import_module(module), "add_arguments", None)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            recipe.set_defaults(_missing=True)
            continue
        if add_arguments is not None:
            add_arguments(recipe)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """The command's work; raises on bad input (``main`` turns that into one line and exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_missing", False):
        parser.error(f"recipe '{args.recipe}' is not available in this version of genclf-harness")
    joined_before = _in_process_group()
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    finally:
        if not joined_before:
            _leave_process_group()


def _in_process_group() -> bool:
    distributed = sys.modules.get("torch.distributed")
    return bool(distributed is not None and distributed.is_available() and distributed.is_initialized())


def _leave_process_group() -> None:
    """Under torchrun every rank leaves the process group its training joined before exiting; a rank
    that exits with gloo's threads still running aborts ("terminate called without an active
    exception"). A group that existed before the run (an in-process vLLM engine's, a caller's own)
    is not ours to destroy: destroying it breaks every later engine in the process."""
    if _in_process_group():
        import torch.distributed as distributed

        distributed.destroy_process_group()


main = console_main("genclf-train", run)
"""The console script: errors this package understands are one line and exit status 2
(``GENCLF_DEBUG=1`` for the traceback)."""


if __name__ == "__main__":
    sys.exit(main())
