"""The one log handler this package installs: it writes to whatever ``sys.stderr`` is when a record
is emitted (a test's capture, a redirected stream), never to a stream that has since been closed."""

from __future__ import annotations

import logging
import sys


class CurrentStderrHandler(logging.StreamHandler):
    """A ``StreamHandler`` bound to ``sys.stderr`` late, at each record, not when it was made."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass
