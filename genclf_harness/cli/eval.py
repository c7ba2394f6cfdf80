"""``genclf-eval``: lm-eval's command line with this package's models, tasks and manifest.

Same flags and output as ``lm_eval``. On top of it:
- the genclf models (``genclf-hf`` ...) are registered;
- this package's ``tasks/`` folder is on the include path (a user's ``--include_path`` is kept);
- ``pretrained=default`` in ``--model_args`` means the embedded default model (any ``--model``);
- ``--tasks genclf_<name>`` (scored), ``genclf_<name>_gen`` (generated answers), the strategy tasks
  ``genclf_<name>_<strategy>[_gen]`` and the group ``genclf_<name>_strategies`` work for a local data
  set ``<name>`` of your own under ``$GENCLF_DATA_DIR`` (``genclf_harness.data.local``), as for the
  built-in ones: their YAMLs are written into a temporary folder put on the include path for the run
  (``genclf_harness.harness.local_tasks``);
- every results file gets a ``genclf_manifest`` (see ``genclf_harness.harness.manifest``);
- ``--calibrate`` adds genclf's raw and calibrated metrics to every ``multiple_choice`` task of the
  run, stock or your own, its YAML unchanged (``genclf_harness.harness.choice_calibration``), and
  ``--circular`` CircularEval to every lettered one (``genclf_harness.harness.circular_eval``);
- bad arguments are refused before any model work (``genclf_harness.cli.eval_checks``), results are
  written atomically and a failed save is a non-zero exit (``genclf_harness.cli.results_file``),
  and errors this package understands are one line ``genclf-eval: ...`` with exit status 2
  (``GENCLF_DEBUG=1`` for the traceback).

``accelerate launch -m genclf_harness.cli.eval ...`` works the same way.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sys
from collections.abc import Iterator, Sequence

from genclf_harness.cli.errors import UsageError, console_main, set_interrupt_note

_DEFAULT_PRETRAINED = re.compile(r"(^|,)\s*pretrained\s*=\s*default\s*(?=,|$)")


def rewrite_default_model(argv: Sequence[str]) -> list[str]:
    """Replace ``pretrained=default`` in ``--model_args`` by the default model's local folder."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--model_args" and i + 1 < len(out):
            index = i + 1
        elif arg.startswith("--model_args="):
            index = i
        else:
            continue
        value = out[index]
        if _DEFAULT_PRETRAINED.search(value):
            from genclf_harness.backends.default_model import ensure_default_model

            folder = str(ensure_default_model())
            out[index] = _DEFAULT_PRETRAINED.sub(lambda m: f"{m.group(1)}pretrained={folder}", value)
    return out


def install_manifest_hook() -> None:
    """Make lm-eval's ``evaluate`` add the genclf manifest to the results it returns."""
    import lm_eval.evaluator as evaluator

    if getattr(evaluator.evaluate, "_genclf_manifest", False):
        return
    original = evaluator.evaluate

    @functools.wraps(original)
    def evaluate_with_manifest(lm, task_dict, *args, **kwargs):
        try:  # before any scoring
            if CHOICE_FLAGS["--calibrate"]:
                from genclf_harness.harness.choice_calibration import calibrate_choice_tasks

                calibrate_choice_tasks(task_dict)
            if CHOICE_FLAGS["--circular"]:
                from genclf_harness.harness.circular_eval import add_circular

                add_circular(task_dict)
        except ValueError as err:
            raise UsageError(str(err)) from None
        results = original(lm, task_dict, *args, **kwargs)
        if results is not None:
            from genclf_harness.harness.manifest import MANIFEST_KEY, build_manifest
            from genclf_harness.harness.metrics import FITTED, PAIRED, annotate_samples

            for task_samples in (results.get("samples") or {}).values():
                annotate_samples(task_samples)
            manifest = build_manifest(lm, task_dict)
            for task, fits in FITTED.items():
                if task in manifest["tasks"]:
                    manifest["tasks"][task]["calibration"] = fits
            from genclf_harness.harness.choice_calibration import CHOICE_TASKS

            for task, entry in CHOICE_TASKS.items():
                manifest["tasks"].setdefault(task, {})["choice_calibration"] = entry
            for task, fits in FITTED.items():
                if task in CHOICE_TASKS:
                    manifest["tasks"][task]["calibration"] = fits
            for task, paired in PAIRED.items():
                if task in manifest["tasks"]:
                    manifest["tasks"][task]["paired_vs_raw"] = paired
            CHOICE_TASKS.clear()
            FITTED.clear()
            PAIRED.clear()
            results[MANIFEST_KEY] = manifest
        return results

    evaluate_with_manifest._genclf_manifest = True  # type: ignore[attr-defined]
    evaluator.evaluate = evaluate_with_manifest


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirected stream),
    not to the stream that was current when the handler was made."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def show_package_logs() -> None:
    """Print this package's log records (truncated prompts, left-out metrics ...) as lm-eval prints
    its own: lm-eval's ``setup_logging`` gives only the ``lm_eval`` logger a handler."""
    package_logger = logging.getLogger("genclf_harness")
    if package_logger.handlers or logging.getLogger().handlers:
        return  # configured already, here or at the root (records propagate there)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s [%(name)s:%(lineno)d] %(message)s",
                                           datefmt="%Y-%m-%d:%H:%M:%S"))
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.getLogger("lm_eval").getEffectiveLevel())


def _requested_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    if not tasks:
        return []
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    return [name.strip() for item in items for name in str(item).split(",") if name.strip()]


CHOICE_FLAGS = {"--calibrate": False, "--circular": False}
"""genclf-eval's own flags (unknown to lm-eval) for arbitrary multiple-choice tasks: ``--calibrate``
adds genclf's calibrated metrics (``genclf_harness.harness.choice_calibration``), ``--circular``
CircularEval over option rotations (``genclf_harness.harness.circular_eval``)."""


def take_choice_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` without genclf-eval's own flags, remembering which were given."""
    for flag in CHOICE_FLAGS:
        CHOICE_FLAGS[flag] = flag in argv
    return [arg for arg in argv if arg not in CHOICE_FLAGS]


LM_EVAL_USAGE_ERRORS = ("Invalid JSON:", "Tasks not found:", "No tasks specified")
"""How lm-eval's own messages for bad command-line input begin (it raises them as ValueError,
traceback and all); their text is kept, as one line."""


@contextlib.contextmanager
def _lm_eval_usage_errors(argv: Sequence[str] = ()) -> Iterator[None]:
    try:
        yield
    except ValueError as err:
        if not str(err).startswith(LM_EVAL_USAGE_ERRORS):
            raise
        flag = next((argv[i - 1] for i in range(1, len(argv)) if argv[i - 1].startswith("--")
                     and argv[i] and argv[i] in str(err)), None) if str(err).startswith("Invalid JSON") else None
        raise UsageError(f"{flag}: {err}" if flag else str(err)) from err


def run(argv: Sequence[str] | None = None) -> int:
    """The command's work; raises on bad input (``main`` turns that into one line and exit 2)."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from genclf_harness.cli.eval_checks import check_arguments
    from genclf_harness.harness.local_tasks import local_include_path, unmatched_hint
    from genclf_harness.cli.results_file import install_safe_save, raise_save_errors
    from genclf_harness.harness.registry import register
    from genclf_harness.resources import tasks_dir

    register()
    install_manifest_hook()
    setup_logging()
    show_package_logs()
    args_in = take_choice_flags(list(sys.argv[1:] if argv is None else argv))
    # HarnessCLI reads sys.argv itself (it inserts the legacy "run" subcommand there).
    sys.argv = [sys.argv[0] if sys.argv else "genclf-eval", *rewrite_default_model(args_in)]
    parser = HarnessCLI()
    with _lm_eval_usage_errors(sys.argv[1:]):
        args = parser.parse_args()
    requested = _requested_tasks(getattr(args, "tasks", None))
    check_arguments(args, requested)  # before any model or data work
    set_interrupt_note(lambda: "no results were written (lm-eval writes them when every task is done); run the "
                               "command again")
    install_safe_save()
    if hasattr(args, "include_path"):
        user_paths = [p for p in (args.include_path or "").split(",") if p] if isinstance(
            args.include_path, str
        ) else list(args.include_path or [])
        args.include_path = [str(tasks_dir()), *user_paths]
        metadata = getattr(args, "metadata", None)
        data_dir = metadata.get("data_dir") if isinstance(metadata, dict) else None
        args.include_path.extend(local_include_path(requested, data_dir))
        hint = None if user_paths else unmatched_hint(requested, data_dir)
        if hint:  # lm-eval will say "Tasks not found"; this says where genclf looked
            logging.getLogger("genclf_harness").warning("genclf-eval: %s", hint)
    with _lm_eval_usage_errors():
        parser.execute(args)
    raise_save_errors()  # a results file that could not be written is a failed run, not exit 0
    return 0


main = console_main("genclf-eval", run)
"""The console script: ``run``, with bad input as one line ``genclf-eval: ...`` and exit status 2."""


if __name__ == "__main__":
    sys.exit(main())
