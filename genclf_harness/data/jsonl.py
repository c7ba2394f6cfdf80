"""Reading JSONL files line by line, with errors that name the file and line."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

_BOM = b"\xef\xbb\xbf"


def iter_jsonl(path: str | os.PathLike[str], error: type[Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """``(line number, row)`` for every non-blank line of a JSONL file (lines count from 1).

    A line that is not valid JSON, or not UTF-8 (named with the byte's column), raises ``error``
    naming ``<path>:<line>``; what the row must hold is for the caller to check and report the same
    way (``not_finite`` finds a NaN or infinity, which Python's JSON reader accepts).
    """
    with open(path, "rb") as handle:  # bytes: a bad byte is reported with its line, not as a bare decode error
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and raw.startswith(_BOM):  # a leading BOM (Notepad, Excel) is not data
                raw = raw[len(_BOM):]
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise error(f"{where}: not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                            "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{where}: not valid JSON ({err.msg})") from None
            yield line_no, row


def not_finite(value: Any) -> bool:
    """Whether ``value`` is a float NaN or infinity (``NaN``/``Infinity`` in a JSON line)."""
    return isinstance(value, float) and not math.isfinite(value)
