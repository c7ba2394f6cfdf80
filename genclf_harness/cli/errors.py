"""One clear line and exit status 2 for bad input, shared by every console script.

``console_main("genclf-eval", run)`` wraps a command's ``run(argv) -> int``. An error the package
understands (its own ``DataError``, ``LabelEncodingError``, ``ConfigError`` ..., any ``ValueError``
raised by this package's checks, a missing path, an output that cannot be written) becomes
``<command>: <message>`` on stderr with exit status 2; anything else (lm-eval's own errors, which
we cannot improve) passes through unchanged, traceback and all. ``GENCLF_DEBUG=1`` or
``--verbosity DEBUG`` shows the full traceback of every error. Ctrl-C is one line too (exit 130),
saying what was kept (``set_interrupt_note``: training names its checkpoints and ``--resume``).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

DEBUG_ENV = "GENCLF_DEBUG"
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


class UsageError(ValueError):
    """A command-line value that this package's own checks refuse (before any model work)."""


class ResultsSaveError(OSError):
    """The results of a finished evaluation could not be written where they were asked for."""


_interrupt_note: Callable[[], str] | None = None


def set_interrupt_note(note: Callable[[], str] | None) -> None:
    """What to say on Ctrl-C: ``note()`` is called then (e.g. to name the last checkpoint)."""
    global _interrupt_note
    _interrupt_note = note


def debug_requested(argv: Sequence[str]) -> bool:
    if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return True
    args = list(argv)
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--verbosity=") else (
            args[i + 1] if arg == "--verbosity" and i + 1 < len(args) else None)
        if value is not None and value.strip().upper() == "DEBUG":
            return True
    return False


def _known_error_types() -> tuple[type[BaseException], ...]:
    from genclf_harness.data.specs import DataError

    types: list[type[BaseException]] = [DataError, UsageError, ResultsSaveError]
    for module, name in (("genclf_harness.training.config", "ConfigError"),
                         ("genclf_harness.backends.label_encoding", "LabelEncodingError"),
                         ("genclf_harness.backends.default_model", "DefaultModelError"),
                         ("genclf_harness.report", "ReportError"),
                         ("genclf_harness.backends.served", "ServedModelError"),
                         ("genclf_harness.verifiers.pairwise.judge", "PreferenceDataError")):
        found = sys.modules.get(module)  # only what was imported can have been raised
        if found is not None and isinstance(getattr(found, name, None), type):
            types.append(getattr(found, name))
    return tuple(types)


def _raised_by_us(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is in this package (our own check)."""
    tb = err.__traceback__
    if tb is None:
        return False
    last = traceback.extract_tb(tb)[-1]
    return str(Path(last.filename).resolve()).startswith(_PACKAGE_ROOT)


def understood(err: BaseException) -> bool:
    """Whether ``err`` is bad input this package can state in one line."""
    if isinstance(err, _known_error_types()):
        return True
    if isinstance(err, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return err.filename is not None  # a path that is not there or not ours to write
    if isinstance(err, OSError) and err.filename is not None:
        return True  # an output that cannot be written (disk full, read-only ...)
    if isinstance(err, (ValueError, TypeError)):
        return _raised_by_us(err)
    return False


def one_line(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}" if not isinstance(err, ResultsSaveError) else text
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    return " ".join(text.split()) or type(err).__name__


def console_main(command: str, run: Callable[[list[str]], int | None]) -> Callable[[Sequence[str] | None], int]:
    """``main(argv=None) -> exit status`` for a console script whose work is ``run(argv)``."""

    @functools.wraps(run)
    def main(argv: Sequence[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        debug = debug_requested(args)
        try:
            return int(run(args) or 0)
        except KeyboardInterrupt:
            if debug:
                raise
            note = ""
            if _interrupt_note is not None:
                try:
                    note = _interrupt_note()
                except Exception:  # noqa: BLE001 - the note is a courtesy; never hide the interrupt
                    note = ""
            print(f"{command}: interrupted{'; ' + note if note else ''}", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        except Exception as err:  # noqa: BLE001 - sorted into ours (one line) and not ours (re-raised)
            if debug or not understood(err):
                raise
            print(f"{command}: {one_line(err)}", file=sys.stderr, flush=True)
            return EXIT_BAD_INPUT

    return main


def format_choices(values: Sequence[str], limit: int = 40) -> str:
    shown = list(values)[:limit]
    more = len(values) - len(shown)
    return ", ".join(shown) + (f" (and {more} more)" if more > 0 else "")


def did_you_mean(value: str, choices: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(value, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""

