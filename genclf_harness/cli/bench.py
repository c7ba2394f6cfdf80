"""``genclf-bench``: benchmarks that compare against the stock tools side by side in one run.

Each subcommand lives in its own module (``genclf_harness.cli.bench_<name>``) with two functions,
``add_arguments(parser)`` and ``run(args) -> int``, and is imported only when it is asked for.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from genclf_harness.cli.errors import console_main

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {}


def register_subcommand(name: str, module: str, help_text: str) -> None:
    SUBCOMMANDS[name] = (module, help_text)


def _known() -> None:
    register_subcommand("scoring", "genclf_harness.cli.bench_scoring",
                        "stock hf vs genclf-hf label scoring: speed, tokens, exactness")
    register_subcommand("scoring-vllm", "genclf_harness.cli.bench_scoring_vllm",
                        "stock vllm vs genclf-vllm (and genclf-hf) label scoring: speed, start-up, agreement")
    register_subcommand("calibration", "genclf_harness.cli.bench_calibration",
                        "raw vs calibrated metrics per task and method, from one scoring pass")
    register_subcommand("strategies", "genclf_harness.cli.bench_strategies",
                        "GenCLS++ prompt strategies x decoding: accuracy and macro-F1")
    register_subcommand("train", "genclf_harness.cli.bench_train",
                        "zero-shot (raw, calibrated) -> SFT -> SFT+GRPO accuracy and time per stage")
    register_subcommand("seams", "genclf_harness.cli.bench_seams",
                        "how often lm-eval's context/continuation split crosses a token seam, per task and template")
    register_subcommand("choices", "genclf_harness.cli.bench_choices",
                        "lm-eval's MMLU template over lettered AG News/TREC: raw vs calibrated, CircularEval, speed")
    register_subcommand("bootstrap", "genclf_harness.cli.bench_bootstrap",
                        "lm-eval's bootstrap stderr vs genclf's (vectorised, refitting): seconds and agreement")
    register_subcommand("healing", "genclf_harness.cli.bench_healing",
                        "generation after a prompt cut mid-word or in a space: stock vs token_healing vs aligned")
    register_subcommand("channel", "genclf_harness.cli.bench_channel",
                        "the channel direction (input given label) vs direct scoring: accuracy, calibration, tokens")
    register_subcommand("bon", "genclf_harness.cli.bench_bon",
                        "best-of-N with a trained generative verifier vs first sample, majority, pass@N")
    register_subcommand("scaling", "genclf_harness.cli.bench_scaling",
                        "1 process vs 2 CPU ranks, and a served model (vllm serve) vs in-process vLLM")
    register_subcommand("conformal", "genclf_harness.cli.bench_conformal",
                        "conformal label sets per task, raw and calibrated: coverage, set size, singletons")
    register_subcommand("clm", "genclf_harness.cli.bench_clm",
                        "Conformal Language Modeling over best-of-N pools: held-out loss, set size, samples drawn")
    register_subcommand("encoders", "genclf_harness.cli.bench_encoders",
                        "MiniLM + ATP at its [MASK] slot and the decoder as an NLI judge vs the decoder's label scoring")
    register_subcommand("probes", "genclf_harness.cli.bench_probes",
                        "naive Bayes vs logistic regression on frozen LM/MiniLM features: learning curves beside prompting")
    register_subcommand("tables", "genclf_harness.cli.bench_tables",
                        "tables as tasks (UniPredict): zero-shot, SFT label vs augmented targets, teacher; acc and log-loss")


def build_parser() -> argparse.ArgumentParser:
    _known()
    parser = argparse.ArgumentParser(prog="genclf-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(sub_parser)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            sub_parser.set_defaults(_missing=True)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """The command's work; raises on bad input (``main`` turns that into one line and exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_missing", False):
        parser.error(f"'{args.command}' is not available in this version of genclf-harness")
    return int(importlib.import_module(args._module).run(args) or 0)


main = console_main("genclf-bench", run)
"""The console script: errors this package understands are one line and exit status 2
(``GENCLF_DEBUG=1`` for the traceback)."""


if __name__ == "__main__":
    sys.exit(main())
