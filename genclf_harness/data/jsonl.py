"""Reading JSONL files line by line, with errors that name the file and line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any


def iter_jsonl(path: str | os.PathLike[str], error: type[Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """``(line number, row)`` for every non-blank line of a JSONL file (lines count from 1).

    A line that is not valid JSON raises ``error`` naming ``<path>:<line>``; what the row must hold is
    for the caller to check and report the same way.
    """
    with open(path, encoding="utf-8-sig") as handle:  # a leading BOM (Notepad, Excel) is not data
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{where}: not valid JSON ({err.msg})") from None
            yield line_no, row
