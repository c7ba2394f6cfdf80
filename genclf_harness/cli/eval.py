"""``genclf-eval``: lm-eval's command line with this package's models, tasks and manifest.

Same flags and output as ``lm_eval``; it imports :mod:`genclf_harness.plugin` (models, metric
names, ``pretrained=default`` in every form lm-eval takes model arguments, genclf's task folder
and local data sets' tasks on the include path, checks before any model work, the results
manifest, atomic results files) and runs lm-eval's own command line. Where lm-eval loads plugins
itself (after 0.4.13), ``lm_eval run --plugins genclf_harness.plugin ...`` does the same; this
command is then a thin alias that also:

- takes ``--calibrate`` (genclf's raw and calibrated metrics for every ``multiple_choice`` task of
  the run, its YAML unchanged: ``genclf_harness.harness.choice_calibration``) and ``--circular``
  (CircularEval for every lettered one: ``genclf_harness.harness.circular_eval``);
- makes bad input one line ``genclf-eval: ...`` with exit status 2 (``GENCLF_DEBUG=1`` for the
  traceback), a results file that could not be written a non-zero exit, and Ctrl-C a note that
  no results were written.

``accelerate launch -m genclf_harness.cli.eval ...`` and ``torchrun ... -m genclf_harness.cli.eval``
work the same way.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence

from genclf_harness.cli.errors import UsageError, console_main, set_interrupt_note


def take_choice_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` without genclf-eval's own flags, remembering which were given."""
    from genclf_harness.plugin import CHOICE_FLAGS

    for flag in CHOICE_FLAGS:
        CHOICE_FLAGS[flag] = flag in argv
    return [arg for arg in argv if arg not in CHOICE_FLAGS]


LM_EVAL_USAGE_ERRORS = ("Invalid JSON:", "Tasks not found:", "No tasks specified", "Need to specify task",
                        "Config file not found", "Invalid YAML in", "YAML root must be a mapping")
"""How lm-eval's own messages for bad command-line input begin (it raises them as ValueError,
traceback and all); their text is kept, as one line."""


@contextlib.contextmanager
def _lm_eval_usage_errors(argv: Sequence[str] = ()) -> Iterator[None]:
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as err:
        if not str(err).startswith(LM_EVAL_USAGE_ERRORS):
            raise
        flag = next((argv[i - 1] for i in range(1, len(argv)) if argv[i - 1].startswith("--")
                     and argv[i] and argv[i] in str(err)), None) if str(err).startswith("Invalid JSON") else None
        raise UsageError(f"{flag}: {err}" if flag else str(err)) from err


def run(argv: Sequence[str] | None = None) -> int:
    """The command's work; raises on bad input (``main`` turns that into one line and exit 2)."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from genclf_harness.cli.results_file import raise_save_errors

    setup_logging()
    import genclf_harness.plugin  # noqa: F401 - installs every hook, once

    args_in = take_choice_flags(list(sys.argv[1:] if argv is None else argv))
    # HarnessCLI reads sys.argv itself (it inserts the legacy "run" subcommand there).
    sys.argv = [sys.argv[0] if sys.argv else "genclf-eval", *args_in]
    parser = HarnessCLI()
    with _lm_eval_usage_errors(sys.argv[1:]):
        args = parser.parse_args()
    set_interrupt_note(lambda: "no results were written (lm-eval writes them when every task is done); run the "
                               "command again")
    with _lm_eval_usage_errors():
        parser.execute(args)  # the plugin's configuration hook checks and completes the run before any model work
    raise_save_errors()  # a results file that could not be written is a failed run, not exit 0
    return 0


main = console_main("genclf-eval", run)
"""The console script: ``run``, with bad input as one line ``genclf-eval: ...`` and exit status 2."""


if __name__ == "__main__":
    sys.exit(main())
